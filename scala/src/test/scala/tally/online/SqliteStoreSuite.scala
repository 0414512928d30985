package tally.online

import java.nio.file.{Files, Path, Paths}
import java.sql.{Connection, DriverManager}
import java.util.concurrent.{Callable, Executors, TimeUnit}

import scala.util.Using

class SqliteStoreSuite extends OnlineStoreContract {
  private var dir: Path = _
  private var current: Path = _
  private var n = 0

  override def beforeAll(): Unit = dir = Files.createTempDirectory("tally-sqlite-")
  override def afterAll(): Unit = RedisServer.delete(dir)

  protected def emptyStore(): OnlineStore = { n += 1; current = dir.resolve(s"store-$n").resolve("tally.db"); SqliteStore(current) }
  protected def reopen(): OnlineStore = SqliteStore(current)

  /** A connection of another client of the same file (another process, in real life). */
  private def raw(): Connection = DriverManager.getConnection("jdbc:sqlite:" + current)

  private def count(c: Connection): Int = Using.resource(c.createStatement().executeQuery("SELECT count(*) FROM tiles"))(rs => { rs.next(); rs.getInt(1) })

  storeTest("the file is in WAL mode, so readers and the writer do not block each other") { _ =>
    Using.resource(raw()) { c =>
      assertEquals(Using.resource(c.createStatement().executeQuery("PRAGMA journal_mode"))(rs => { rs.next(); rs.getString(1) }), "wal")
    }
  }

  storeTest("an open reader does not block a write, and keeps its snapshot until it ends") { store =>
    store.write(Seq(tile(card1, 0)))
    Using.resource(raw()) { reader =>
      reader.setAutoCommit(false)
      assertEquals(count(reader), 1) // the read transaction now holds a snapshot
      val started = System.nanoTime()
      store.write(Seq(tile(card2, 0), tile(card1, Hour)))
      assert(System.nanoTime() - started < 2000L * 1000000L, "the write waited for the reader") // busy timeout is 10 s
      assertEquals(count(reader), 1)
      reader.commit()
      assertEquals(count(reader), 3)
    }
  }

  storeTest("a reader during a write is not blocked, and sees the write whole once it commits") { store =>
    store.write(Seq(tile(card1, 0, payload = "before", stamp = 1)))
    val keys = (0 until 200).map(i => EntityKey.of(s"new_card_$i"))
    val pool = Executors.newSingleThreadExecutor()
    Using.resource(raw()) { writer =>
      // Another writer's transaction, left open: new tiles for 200 keys and a new card_1 tile.
      writer.createStatement().execute("BEGIN IMMEDIATE")
      Using.resource(writer.prepareStatement(
        "INSERT OR REPLACE INTO tiles (view, version, key, length, start, stamp, payload) VALUES ('card_velocity', 1, ?, ?, 0, 2, ?)")) { s =>
        (card1 +: keys).foreach { k => s.setBytes(1, k.bytes); s.setLong(2, Hour); s.setBytes(3, "during".getBytes); s.addBatch() }
        s.executeBatch()
      }
      val read = pool.submit(new Callable[Map[EntityKey, Seq[Tile]]] {
        def call(): Map[EntityKey, Seq[Tile]] = store.read("card_velocity", 1, card1 +: keys, 0, Hour)
      })
      val during = read.get(2, TimeUnit.SECONDS) // blocked readers would time out here
      assertEquals(during(card1).map(text), Seq("before"))
      assertEquals(keys.flatMap(during).toList, Nil)
      writer.createStatement().execute("COMMIT")
    }
    pool.shutdown()
    val after = store.read("card_velocity", 1, card1 +: keys, 0, Hour)
    assertEquals((card1 +: keys).map(k => after(k).map(text)), (card1 +: keys).map(_ => Seq("during")))
  }

  storeTest("a reader sees a whole write call or none of it") { store =>
    readWhileWriting(store, (0 until 300).map(i => EntityKey.of(s"card_$i")), batches = 30, readers = 1) { got =>
      val stamps = got.values.flatten.map(_.stamp).toSet
      assert(stamps.size <= 1, s"one read saw several write calls: $stamps")
    }
  }

  storeTest("a write reaches the database file beside the writer, from its own checkpoint, not inside the commit") { store =>
    store.write(Seq(tile(card1, 0), tile(card2, 0)))
    // The main file alone, as a copy: it holds the tiles only once a checkpoint copied them from the WAL. A write this
    // small never filled SQLite's automatic checkpoint (1000 pages), so only the store's checkpointer copies it.
    val copy = dir.resolve(s"copy-$n.db")
    def copied(): Int = {
      Files.copy(current, copy, java.nio.file.StandardCopyOption.REPLACE_EXISTING)
      Files.deleteIfExists(Paths.get(s"$copy-wal"))
      try Using.resource(DriverManager.getConnection("jdbc:sqlite:" + copy))(count)
      catch { case _: java.sql.SQLException => 0 }  // not even the layout yet
    }
    val deadline = System.nanoTime() + 10L * 1000000000L
    while (copied() < 2 && System.nanoTime() < deadline) Thread.sleep(50)
    assertEquals(copied(), 2)
  }

  storeTest("a file with a newer layout is refused, naming the file") { store =>
    store.close()
    Using.resource(raw())(_.createStatement().execute("PRAGMA user_version = 99"))
    val e = intercept[OnlineStoreException](SqliteStore(current))
    assert(e.getMessage.contains(current.toString) && e.getMessage.contains("layout version 99"), e.getMessage)
  }

  test("a file that is not SQLite is refused, naming the file") {
    val bad = dir.resolve("not-sqlite.db")
    Files.write(bad, ("this is not a database" * 100).getBytes)
    val e = intercept[OnlineStoreException](SqliteStore(bad))
    assert(e.getMessage.contains(bad.toString), e.getMessage)
  }

  test("the default file is <warehouse>/online/tally.db, created with its folder") {
    val path = SqliteStore.defaultPath(dir.resolve("warehouse"))
    assertEquals(path, dir.resolve(Paths.get("warehouse", "online", "tally.db")))
    SqliteStore(path).close()
    assert(Files.isRegularFile(path))
  }
}

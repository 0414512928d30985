package tally.online

import java.nio.ByteBuffer
import java.nio.charset.StandardCharsets.UTF_8
import java.time.LocalDate
import java.util.concurrent.{Callable, Executors, TimeUnit}

import tally.online.EntityKey._

/** What every online store promises (OnlineStore's doc), run against each implementation on a real service. */
abstract class OnlineStoreContract extends munit.FunSuite {
  /** A new store holding nothing. */
  protected def emptyStore(): OnlineStore

  /** The store last returned by [[emptyStore]], opened again after it was closed (same file, same server). */
  protected def reopen(): OnlineStore

  protected def storeTest(name: String)(body: OnlineStore => Any): Unit = test(name) {
    val store = emptyStore()
    try body(store) finally store.close()
  }

  protected val Hour = 3600L * 1000000L
  protected val Day = 24 * Hour
  protected val card1: EntityKey = EntityKey.of("card_1")
  protected val card2: EntityKey = EntityKey.of("card_2")

  protected def tile(key: EntityKey, start: Long, length: Long = Hour, payload: String = "ir", stamp: Long = 1L,
                     view: String = "card_velocity", version: Int = 1): Tile =
    Tile(view, version, key, start, length, payload.getBytes(UTF_8), stamp)

  protected def text(t: Tile): String = new String(t.payload, UTF_8)

  storeTest("round trip: tiles come back as written, with their stamps") { store =>
    val tiles = Seq(tile(card1, 0, payload = "a", stamp = 7), tile(card1, Hour, payload = "b", stamp = 8), tile(card2, 0, payload = "c"))
    assertEquals(store.write(tiles), 3)
    val got = store.read("card_velocity", 1, Seq(card1, card2), 0, Day)
    assertEquals(got(card1), tiles.take(2))
    assertEquals(got(card2), tiles.drop(2))
  }

  storeTest("get returns exactly the tiles at the addresses asked for, those that exist, for every key asked") { store =>
    val a = tile(card1, 0, Hour, "a", stamp = 3)
    val b = tile(card1, 0, Day, "b")
    val c = tile(card1, 2 * Hour, Hour, "c")
    val other = tile(card1, 0, Hour, "other view", view = "merchant_risk")
    val offGrid = tile(card1, Hour / 2, Hour, "inside the run's range, not on its grid")
    store.write(Seq(a, b, c, offGrid, tile(card2, Hour, Hour, "d"), other))
    val Seq(got, risk) = store.get(Seq(
      TileRequest("card_velocity", 1, Map(card1 -> Seq(TileRun(Hour, 0L, 2 * Hour), TileRun.of(Day, 0L), TileRun.of(Hour, 5 * Hour)),
        card2 -> Seq(TileRun.of(Hour, 0L)), EntityKey.of("card_3") -> Seq(TileRun.of(Hour, 0L)))),
      TileRequest("merchant_risk", 1, Map(card1 -> Seq(TileRun.of(Hour, 0L))))))
    assertEquals(got(card1), Seq(a, b, c), "existing tiles only, sorted by (start, length), each once, with their stamps")
    assertEquals(got(card2), Nil, "card_2's tile at 1h was not asked for")
    assertEquals(got(EntityKey.of("card_3")), Nil)
    assertEquals(risk(card1), Seq(other), "requests are per view")
    assertEquals(store.get(Nil), Nil)
    val overlap = intercept[IllegalArgumentException](store.get(Seq(
      TileRequest("card_velocity", 1, Map(card1 -> Seq(TileRun(Hour, 0L, 2 * Hour), TileRun.of(Hour, Hour)))))))
    assert(overlap.getMessage.contains("overlap"), overlap.getMessage)
  }

  storeTest("get answers a call of more runs than one statement binds, every key and tile") { store =>
    val keys = (0 until 3000).map(i => EntityKey.of(s"card_$i"))
    store.write(keys.zipWithIndex.map { case (k, i) => tile(k, (i % 5) * Hour, Hour, s"t$i") })
    val got = store.get(Seq(TileRequest("card_velocity", 1, keys.map(k => k -> Seq(TileRun(Hour, 0L, 2 * Hour), TileRun.of(Hour, 4 * Hour))).toMap))).head
    assertEquals(got.size, keys.size)
    keys.zipWithIndex.foreach { case (k, i) =>
      assertEquals(got(k).map(text), if (i % 5 == 3) Nil else Seq(s"t$i"), k.encoded)
    }
  }

  storeTest("at answers each address asked for, in order: the tile there with its stamp, or None") { store =>
    val a = tile(card1, 0, Hour, "a", stamp = 3)
    val b = tile(card1, 0, Day, "b")
    val c = tile(card2, Hour, Hour, "c", stamp = 9)
    store.write(Seq(a, b, c, tile(card1, Hour / 2, Hour, "off the asked start"), tile(card1, 0, Hour, "v2", version = 2),
      tile(card1, 0, Hour, "other view", view = "merchant_risk")))
    val asked = IndexedSeq((card2, Hour, Hour), (card1, Hour, 0L), (EntityKey.of("card_3"), Hour, 0L), (card1, Day, 0L),
      (card1, Hour, Hour), (card1, 2 * Hour, 0L), (card2, Hour, Hour))
    assertEquals(store.at("card_velocity", 1, asked), IndexedSeq(Some(c), Some(a), None, Some(b), None, None, Some(c)),
      "exact addresses only (not a tile starting inside, not another length), each answered, repeats too")
    assertEquals(store.at("card_velocity", 2, IndexedSeq((card1, Hour, 0L))).map(_.map(text)), IndexedSeq(Some("v2")))
    assertEquals(store.at("merchant_risk", 1, IndexedSeq((card1, Hour, 0L), (card2, Hour, Hour))).map(_.map(text)),
      IndexedSeq(Some("other view"), None), "views are apart")
    assertEquals(store.at("card_velocity", 1, IndexedSeq.empty), IndexedSeq.empty)
  }

  storeTest("at answers more addresses than one statement binds, in the order asked, whatever the keys' order") { store =>
    val keys = (0 until 2500).map(i => EntityKey.of(s"card_$i"))
    store.write(keys.zipWithIndex.flatMap { case (k, i) => Seq(tile(k, 0, Hour, s"h$i"), tile(k, 0, Day, s"d$i", stamp = i.toLong)) })
    val asked = new scala.util.Random(7).shuffle(keys.zipWithIndex.flatMap { case (k, i) =>
      Seq((k, Hour, 0L, Some(s"h$i")), (k, Day, 0L, Some(s"d$i")), (k, Hour, Hour, None))
    })
    val got = store.at("card_velocity", 1, asked.map { case (k, l, s, _) => (k, l, s) }.toIndexedSeq)
    assertEquals(got.map(_.map(text)), asked.map(_._4).toIndexedSeq)
    assert(got.flatten.forall(t => t.lengthUs == Hour && t.stamp == 1L || t.stamp == text(t).drop(1).toLong), "stamps")
  }

  storeTest("a read holds the tiles overlapping [from, to): one ending at from or starting at to is out") { store =>
    store.write(Seq(tile(card1, 10 * Hour, Hour)))
    def hit(from: Long, to: Long) = store.read("card_velocity", 1, Seq(card1), from, to)(card1).nonEmpty
    assert(!hit(9 * Hour, 10 * Hour), "a span ending where the tile starts")
    assert(hit(9 * Hour, 10 * Hour + 1), "a span ending a µs into the tile")
    assert(hit(10 * Hour, 10 * Hour + 1), "the tile's first µs")
    assert(hit(11 * Hour - 1, 11 * Hour), "the tile's last µs")
    assert(!hit(11 * Hour, 12 * Hour), "a span starting where the tile ends")
    assert(hit(0, Long.MaxValue), "a span holding the tile")
    assert(hit(10 * Hour + 5, 10 * Hour + 6), "a span inside the tile")
    assert(!hit(10 * Hour + 5, 10 * Hour + 5), "an empty span")
  }

  storeTest("times before 1970 and at the ends of the range are tiles like any other") { store =>
    val old = tile(card1, -30 * Day, Day, "1940s")
    val last = tile(card1, Long.MaxValue - Hour, Hour, "the end")
    store.write(Seq(old, last))
    assertEquals(store.read("card_velocity", 1, Seq(card1), Long.MinValue, Long.MaxValue)(card1), Seq(old, last))
    assertEquals(store.read("card_velocity", 1, Seq(card1), -30 * Day, -29 * Day)(card1), Seq(old))
  }

  storeTest("tiles of several lengths come back sorted by start, then length") { store =>
    val coarse = tile(card1, 0, Day, "day")
    val fine = (0 until 3).map(i => tile(card1, 23 * Hour - i * Hour, Hour, s"h$i"))
    val sameStart = tile(card1, 0, Hour, "hour at 0")
    store.write(fine ++ Seq(coarse, sameStart))
    val got = store.read("card_velocity", 1, Seq(card1), 0, 2 * Day)(card1)
    assertEquals(got.map(text), Seq("hour at 0", "day", "h2", "h1", "h0"))
  }

  storeTest("every key asked for is in the answer; one without tiles has none") { store =>
    store.write(Seq(tile(card1, 0)))
    val got = store.read("card_velocity", 1, Seq(card1, card2, card2), 0, Day)
    assertEquals(got.keySet, Set(card1, card2))
    assertEquals(got(card2), Nil)
    assertEquals(store.read(Nil), Nil)
  }

  storeTest("views, versions and keys are apart: a key's tiles in another view or version are not read") { store =>
    store.write(Seq(tile(card1, 0, payload = "v1"), tile(card1, 0, payload = "v2", version = 2),
      tile(card1, 0, payload = "other", view = "merchant_risk"), tile(card2, 0, payload = "card2")))
    assertEquals(store.read("card_velocity", 1, Seq(card1), 0, Day)(card1).map(text), Seq("v1"))
    assertEquals(store.read("card_velocity", 2, Seq(card1), 0, Day)(card1).map(text), Seq("v2"))
    assertEquals(store.read("merchant_risk", 1, Seq(card1), 0, Day)(card1).map(text), Seq("other"))
    assertEquals(store.read("card_velocity", 3, Seq(card1), 0, Day)(card1), Nil)
  }

  storeTest("one read answers several views and versions, each query in order") { store =>
    store.write(Seq(tile(card1, 0, payload = "cv"), tile(card2, 0, payload = "mr", view = "merchant_risk"),
      tile(card1, Day, payload = "late")))
    val got = store.read(Seq(
      TileQuery("merchant_risk", 1, Seq(card2), 0, Day),
      TileQuery("card_velocity", 1, Seq(card1, card2), 0, Day),
      TileQuery("card_velocity", 1, Seq(card1), Day, 2 * Day)))
    assertEquals(got.map(_.map { case (k, ts) => k -> ts.map(text) }), Seq(
      Map(card2 -> Seq("mr")), Map(card1 -> Seq("cv"), card2 -> Nil), Map(card1 -> Seq("late"))))
  }

  storeTest("composite, integer and every other key type address their own tiles") { store =>
    val keys = Seq(
      EntityKey.of("42"), EntityKey.of(42L), EntityKey.of(42.0), EntityKey.of(BigDecimal("42")), EntityKey.of(true),
      EntityKey.of("a,b", 1L), EntityKey.of("a", "b,i1"), EntityKey.of("a", "b", 1L),
      EntityKey.of("{tag}:x", "ü 名前"), EntityKey.of(Array[Byte](0, -1, 42)), EntityKey.of(LocalDate.of(2024, 2, 29)),
      EntityKey(Timestamp(1700000000123456L)), EntityKey.of(-7L, "x"), EntityKey.of("%2C"), EntityKey.of(""))
    assertEquals(keys.distinct.size, keys.size, "the keys must be distinct for this test to mean anything")
    store.write(keys.zipWithIndex.map { case (k, i) => tile(k, 0, payload = s"key $i") })
    val got = store.read("card_velocity", 1, keys, 0, Day)
    keys.zipWithIndex.foreach { case (k, i) => assertEquals(got(k).map(text), Seq(s"key $i"), k.toString) }
    // A key rebuilt from its parts (as the fetcher does) finds the same tiles.
    val rebuilt = keys.map(k => EntityKey(k.parts: _*))
    assertEquals(store.read("card_velocity", 1, rebuilt, 0, Day).map { case (k, ts) => k -> ts.map(text) }.toMap,
      got.map { case (k, ts) => k -> ts.map(text) })
  }

  storeTest("a tile written again with another stamp replaces the stored one") { store =>
    assertEquals(store.write(Seq(tile(card1, 0, payload = "first", stamp = 1))), 1)
    assertEquals(store.write(Seq(tile(card1, 0, payload = "second", stamp = 2))), 1)
    assertEquals(store.read("card_velocity", 1, Seq(card1), 0, Day)(card1), Seq(tile(card1, 0, payload = "second", stamp = 2)))
    // Another stamp, even a lower one, is another pass: the stamp rule compares for equality, not order.
    assertEquals(store.write(Seq(tile(card1, 0, payload = "third", stamp = 1))), 1)
    assertEquals(store.read("card_velocity", 1, Seq(card1), 0, Day)(card1).map(text), Seq("third"))
  }

  storeTest("a tile written again with its own stamp is left as it is") { store =>
    store.write(Seq(tile(card1, 0, payload = "applied", stamp = 5)))
    assertEquals(store.write(Seq(tile(card1, 0, payload = "again", stamp = 5), tile(card2, 0, stamp = 5))), 1)
    assertEquals(store.read("card_velocity", 1, Seq(card1), 0, Day)(card1), Seq(tile(card1, 0, payload = "applied", stamp = 5)))
  }

  storeTest("stamps make a replayed micro-batch exactly-once per tile") { store =>
    // Payloads are counts; a micro-batch folds its events into the stored counts (read, add, write).
    def count(t: Tile) = ByteBuffer.wrap(t.payload).getLong
    def counted(k: EntityKey, n: Long, stamp: Long) =
      Tile("card_velocity", 1, k, 0, Hour, ByteBuffer.allocate(8).putLong(n).array, stamp)
    val keys = (0 until 20).map(i => EntityKey.of(s"card_$i"))
    def fold(batch: Long, events: Map[EntityKey, Long], writeOnly: Int = Int.MaxValue, checkStamps: Boolean = true): Int = {
      val stored = store.read("card_velocity", 1, events.keys.toSeq, 0, Hour)
      val folded = events.toSeq.sortBy(_._1.encoded).flatMap { case (k, n) =>
        val old = stored(k).headOption
        // A careful writer skips what its earlier attempt applied; the store refuses it anyway for one that doesn't.
        if (checkStamps && old.exists(_.stamp == batch)) None else Some(counted(k, old.map(count).getOrElse(0L) + n, batch))
      }
      store.write(folded.take(writeOnly))
    }
    fold(1, keys.map(_ -> 1L).toMap)
    // Batch 2 dies after writing 7 of its 20 tiles, then is replayed whole, once by a careful writer and once by one
    // that folds everything again: the tiles its first attempt wrote must not count twice.
    assertEquals(fold(2, keys.map(_ -> 10L).toMap, writeOnly = 7), 7)
    assertEquals(fold(2, keys.map(_ -> 10L).toMap, checkStamps = false), 13)
    assertEquals(fold(2, keys.map(_ -> 10L).toMap), 0)
    store.recordBatch("card_velocity:1:charges", 2)
    val got = store.read("card_velocity", 1, keys, 0, Hour)
    assertEquals(keys.map(k => got(k).map(count)), keys.map(_ => Seq(11L)))
    assertEquals(keys.map(k => got(k).map(_.stamp)), keys.map(_ => Seq(2L)))
    assertEquals(store.lastBatch("card_velocity:1:charges"), Some(2L))
  }

  storeTest("many keys in one write and one read") { store =>
    val keys = (0 until 2500).map(i => EntityKey.of(s"card_$i", i.toLong))
    val tiles = keys.flatMap(k => Seq(tile(k, 0, payload = k.encoded), tile(k, Hour, Day, payload = k.encoded + "/day")))
    assertEquals(store.write(tiles), tiles.size)
    val got = store.read("card_velocity", 1, keys, 0, 2 * Day)
    assertEquals(got.size, keys.size)
    keys.foreach(k => assertEquals(got(k).map(text), Seq(k.encoded, k.encoded + "/day")))
  }

  storeTest("empty and large payloads keep every byte") { store =>
    val big = Array.tabulate[Byte](1 << 20)(i => (i * 31 + 7).toByte)
    val tiles = Seq(Tile("card_velocity", 1, card1, 0, Hour, Array.emptyByteArray, 1), Tile("card_velocity", 1, card1, Hour, Hour, big, 1))
    store.write(tiles)
    assertEquals(store.read("card_velocity", 1, Seq(card1), 0, Day)(card1), tiles)
  }

  storeTest("a write holding two tiles at one address is refused and writes nothing") { store =>
    val e = intercept[IllegalArgumentException](store.write(Seq(tile(card2, 0), tile(card1, 0, payload = "x"), tile(card1, 0, payload = "y"))))
    assert(e.getMessage.contains("card_velocity") && e.getMessage.contains(card1.encoded), e.getMessage)
    assertEquals(store.read("card_velocity", 1, Seq(card1, card2), 0, Day).values.flatten.toSeq, Nil)
  }

  storeTest("a batch close holding two tiles at one address is refused and writes nothing") { store =>
    val e = intercept[IllegalArgumentException](store.closeBatch(Seq(tile(card1, 0), tile(card2, 0), tile(card1, Hour),
      tile(card1, 0, payload = "y")), "card_velocity", 1, Some(Hour), "s", 3))
    assert(e.getMessage.contains("card_velocity") && e.getMessage.contains(card1.encoded), e.getMessage)
    assertEquals(store.read("card_velocity", 1, Seq(card1, card2), 0, Day).values.flatten.toSeq, Nil)
    assertEquals((store.watermark("card_velocity", 1), store.lastBatch("s")), (None, None))
  }

  storeTest("watermarks only rise, and each view version has its own") { store =>
    assertEquals(store.watermark("card_velocity", 1), None)
    store.advanceWatermark("card_velocity", 1, 10 * Hour)
    store.advanceWatermark("card_velocity", 1, 5 * Hour)
    assertEquals(store.watermark("card_velocity", 1), Some(10 * Hour))
    store.advanceWatermark("card_velocity", 1, 1700000000123456L)
    assertEquals(store.watermark("card_velocity", 1), Some(1700000000123456L))
    store.advanceWatermark("card_velocity", 2, -Day)
    assertEquals(store.watermark("card_velocity", 2), Some(-Day))
    assertEquals(store.watermark("merchant_risk", 1), None)
    intercept[IllegalArgumentException](store.advanceWatermark("card_velocity", 1, Long.MaxValue))
  }

  storeTest("a stream's last batch is the last one recorded") { store =>
    assertEquals(store.lastBatch("s1"), None)
    store.recordBatch("s1", 3); store.recordBatch("s2", 9)
    assertEquals(store.lastBatch("s1"), Some(3L))
    store.recordBatch("s1", 0) // a stream started again from scratch
    assertEquals((store.lastBatch("s1"), store.lastBatch("s2")), (Some(0L), Some(9L)))
  }

  storeTest("closing a batch writes its tiles, raises the watermark and records the batch; a bad batch writes nothing") { store =>
    assertEquals(store.closeBatch(Seq(tile(card1, 0, stamp = 7), tile(card1, Hour, stamp = 7)), "card_velocity", 1,
      Some(2 * Hour), "s", 7), 2)
    assertEquals((store.watermark("card_velocity", 1), store.lastBatch("s")), (Some(2 * Hour), Some(7L)))
    assertEquals(store.closeBatch(Seq(tile(card1, 0, stamp = 7)), "card_velocity", 1, None, "s", 7), 0, "replayed: refused")
    intercept[IllegalArgumentException](store.closeBatch(Seq(tile(card1, 0, stamp = 8), tile(card1, 0, stamp = 8)),
      "card_velocity", 1, Some(3 * Hour), "s", 8))
    assertEquals((store.watermark("card_velocity", 1), store.lastBatch("s")), (Some(2 * Hour), Some(7L)))
  }

  storeTest("the tiles carrying a stamp are those one pass left: across keys, in their view version only") { store =>
    val keys = (0 until 30).map(i => EntityKey.of(s"card_$i"))
    store.write(keys.flatMap(k => Seq(tile(k, 0, stamp = 7), tile(k, Hour, stamp = 8), tile(k, 0, Day, stamp = 7))))
    store.write(Seq(tile(card1, 0, version = 2, stamp = 7), tile(card1, 0, view = "merchant_risk", stamp = 7)))
    store.write(Seq(tile(card2, 0, payload = "refolded", stamp = 9)))  // a later pass replaced one of 7's tiles
    val found = store.stamped("card_velocity", 1, 7).sortBy(t => (t.key.encoded, t.lengthUs, t.startUs))
    val expected = keys.flatMap(k => Seq(tile(k, 0, stamp = 7), tile(k, 0, Day, stamp = 7))).filterNot(t => t.key == card2 && t.lengthUs == Hour)
    assertEquals(found.map(t => (t.key, t.startUs, t.lengthUs, text(t), t.stamp)),
      expected.sortBy(t => (t.key.encoded, t.lengthUs, t.startUs)).map(t => (t.key, t.startUs, t.lengthUs, text(t), t.stamp)))
    assertEquals(store.stamped("card_velocity", 1, 6), Nil)
  }

  storeTest("prune removes the view version's tiles that end at or before the time, and nothing else") { store =>
    val keys = (0 until 30).map(i => EntityKey.of(s"card_$i"))
    store.write(keys.flatMap(k => Seq(tile(k, 0), tile(k, Hour), tile(k, 0, Day), tile(k, 0, version = 2))))
    store.write(Seq(tile(card1, 0, view = "merchant_risk")))
    assertEquals(store.prune("card_velocity", 1, 2 * Hour - 1), 30L) // the tiles [0, 1h); [1h, 2h) ends later
    val left = store.read("card_velocity", 1, keys, Long.MinValue, Long.MaxValue)
    keys.foreach(k => assertEquals(left(k).map(t => (t.startUs, t.lengthUs)), Seq((0L, Day), (Hour, Hour))))
    assertEquals(store.prune("card_velocity", 1, Day), 60L)
    assertEquals(store.read("card_velocity", 1, keys, Long.MinValue, Long.MaxValue).values.flatten.toSeq, Nil)
    assertEquals(store.read("card_velocity", 2, keys, 0, Day).values.map(_.size).sum, 30)
    assertEquals(store.read("merchant_risk", 1, Seq(card1), 0, Day)(card1).size, 1)
    assertEquals(store.prune("card_velocity", 1, Day), 0L)
  }

  test("what was written is there after the store is reopened") {
    val first = emptyStore()
    val tiles = Seq(tile(card1, 0, payload = "kept", stamp = 3), tile(card2, Hour, Day, payload = "too"))
    try {
      first.write(tiles); first.advanceWatermark("card_velocity", 1, 2 * Hour); first.recordBatch("s", 4)
    } finally first.close()
    val again = reopen()
    try {
      val got = again.read("card_velocity", 1, Seq(card1, card2), 0, 2 * Day)
      assertEquals((got(card1), got(card2)), (tiles.take(1), tiles.drop(1)))
      assertEquals((again.watermark("card_velocity", 1), again.lastBatch("s")), (Some(2 * Hour), Some(4L)))
      assertEquals(again.write(tiles.take(1)), 0, "the stamps are kept too")
    } finally again.close()
  }

  /** Write call b (1 to `batches`) puts payload "b<b>" with stamp b into every key's tile at 0, on one thread, while
    * `readers` threads read all keys until the writes are done, passing each answer to `check`. */
  protected def readWhileWriting(store: OnlineStore, keys: Seq[EntityKey], batches: Int, readers: Int)
                                (check: Map[EntityKey, Seq[Tile]] => Unit): Unit = {
    val pool = Executors.newFixedThreadPool(readers + 1)
    try {
      val writer = pool.submit(new Callable[Unit] {
        def call(): Unit = (1 to batches).foreach(b => store.write(keys.map(k => tile(k, 0, payload = s"b$b", stamp = b))))
      })
      val reads = (0 until readers).map(_ => pool.submit(new Callable[Unit] {
        def call(): Unit = do check(store.read("card_velocity", 1, keys, 0, Hour)) while (!writer.isDone)
      }))
      writer.get(60, TimeUnit.SECONDS)
      reads.foreach(_.get(60, TimeUnit.SECONDS))
      assertEquals(store.read("card_velocity", 1, keys, 0, Hour).values.flatten.map(text).toSet, Set(s"b$batches"))
    } finally pool.shutdownNow()
  }

  storeTest("readers on several threads while a writer writes see every tile whole") { store =>
    // A payload that does not match its stamp would be half a tile. (Whether one read sees one write call whole
    // across keys is the store's own matter: SQLite does, Redis per key only.)
    readWhileWriting(store, (0 until 50).map(i => EntityKey.of(s"card_$i")), batches = 40, readers = 3) { got =>
      got.values.flatten.foreach(t => assertEquals(text(t), s"b${t.stamp}"))
    }
  }
}

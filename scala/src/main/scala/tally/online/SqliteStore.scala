package tally.online

import java.nio.file.{Files, Path}
import java.sql.{Connection, PreparedStatement, SQLException}
import java.util.concurrent.{ConcurrentLinkedQueue, Executors, RejectedExecutionException, TimeUnit}
import java.util.concurrent.atomic.AtomicBoolean

import org.sqlite.SQLiteConfig

import scala.collection.mutable
import scala.util.Using

/** The embedded online store: one SQLite file (by default `<warehouse>/online/tally.db`), nothing to start.
  *
  * Layout (schema version 1, in `PRAGMA user_version`):
  * {{{
  *   tiles(view, version, key BLOB, length, start, stamp, payload BLOB)  PRIMARY KEY (view, version, key, length, start)
  *   watermarks(view, version, event_us)                                  PRIMARY KEY (view, version)
  *   stream_batches(stream, batch_id)                                     PRIMARY KEY (stream)
  * }}}
  * all `WITHOUT ROWID`, so a tile is stored in its primary-key b-tree and one key's tiles sit together: a read is a
  * seek on (view, version, key) and a short scan. `key` is [[EntityKey.bytes]].
  *
  * Concurrency: WAL journal, so readers never block the writer nor the writer readers; a reader sees a snapshot
  * of whole write calls. One writer connection (a lock serializes this process's writers; another process's
  * writer waits up to the busy timeout); reader connections are pooled, one per concurrent reader.
  * Writes open `BEGIN IMMEDIATE` themselves (the connection stays in auto-commit between calls: the driver's own
  * transaction mode would open the next transaction eagerly and hold the write lock while idle).
  * `synchronous=NORMAL`: a power loss may drop the last calls but never corrupts; every writer can redo them
  * (a stream replays its last batch, `tally materialize` re-runs). The WAL is copied into the file after each write
  * on a thread of its own ([[Checkpointer]]), not inside the write's commit. */
final class SqliteStore private (val path: Path, busyTimeoutMs: Int) extends OnlineStore {
  import SqliteStore._

  private val url = "jdbc:sqlite:" + path.toAbsolutePath
  private val writer = new Writer(connect())
  private val checkpointer = new Checkpointer
  private val readers = new ConcurrentLinkedQueue[Reader]()
  @volatile private var closed = false

  private def connect(): Connection = {
    val config = new SQLiteConfig()
    config.setJournalMode(SQLiteConfig.JournalMode.WAL)
    config.setSynchronous(SQLiteConfig.SynchronousMode.NORMAL)
    config.setBusyTimeout(busyTimeoutMs)
    // Reads map the file instead of copying each b-tree page out of the OS cache (SQLite clamps the size to its
    // compiled maximum), and keep more pages per connection: a request seeks a few hundred tiles.
    config.setPragma(SQLiteConfig.Pragma.MMAP_SIZE, MmapBytes.toString)
    config.setCacheSize(-CachePagesKiB)
    try config.createConnection(url)
    catch { case e: SQLException => throw new OnlineStoreException(s"cannot open the SQLite online store $path: ${e.getMessage}", e) }
  }

  protected def writeTiles(tiles: Seq[Tile]): Int = { val rows = tileRows(tiles); writer.transaction(upsert(_, rows)) }

  /** One transaction: tiles, watermark and batch record commit together or not at all. */
  override def closeBatch(tiles: Seq[Tile], view: String, version: Int, watermarkUs: Option[Long], stream: String,
                          batchId: Long): Int = {
    Names.checkStream(stream)
    Names.checkView(view, version); watermarkUs.foreach(checkWatermark(view, version, _))
    // Sorted once, which also finds two tiles at one address (neighbours then), before anything is written: a
    // stream batch's close binds some 20,000-50,000 tiles, and a hash set of their addresses cost as much as the sort.
    val rows = tileRows(tiles)
    var i = 1
    while (i < rows.length) {
      require(RowOrder.compare(rows(i - 1), rows(i)) != 0, {
        val t = rows(i).of
        s"view '${t.view}' v${t.version} key ${t.key.encoded}: two tiles at [${t.startUs}, +${t.lengthUs}) in one write; " +
          "fold them into one before writing"
      })
      i += 1
    }
    writer.transaction { w =>
      val applied = if (rows.isEmpty) 0 else upsert(w, rows)
      watermarkUs.foreach(w.raise(view, version, _))
      w.record(stream, batchId)
      applied
    }
  }

  /** Tiles as rows in primary-key order: consecutive upserts then land on the same or the next b-tree page (a stream
    * batch's tiles come key by key in the batch's order, each key's ladder levels apart). */
  private def tileRows(tiles: Seq[Tile]): Array[Row[Tile]] = {
    val bytes = new KeyBytes
    inKeyOrder(tiles.iterator.map(t => Row(t.view, t.version, bytes(t.key), t.lengthUs, t.startUs, t)))
  }

  private def upsert(w: Writer, rows: Array[Row[Tile]]): Int = {
    val s = w.upsert
    rows.foreach { r =>
      val t = r.of
      s.setString(1, t.view); s.setInt(2, t.version); s.setBytes(3, r.key); s.setLong(4, t.lengthUs)
      s.setLong(5, t.startUs); s.setLong(6, t.stamp); s.setBytes(7, t.payload)
      s.addBatch()
    }
    s.executeBatch().count(_ > 0)
  }

  protected def readTiles(queries: Seq[TileQuery]): Seq[Map[EntityKey, Seq[Tile]]] = withReader { r =>
    // One read transaction: every key of every query sees the same snapshot (no half of a concurrent write).
    r.snapshot(queries.map(q => q.keys.map(key => key -> (if (q.fromUs < q.toUs) tilesOf(r, q, key) else Nil)).toMap))
  }

  protected def getTiles(requests: Seq[TileRequest]): Seq[Map[EntityKey, Seq[Tile]]] = withReader { r =>
    // One statement per call (one JDBC round trip; a statement is its own snapshot): the runs are bound as rows of
    // a VALUES list (slot, view, version, key, length, first, last) joined on the primary key. CROSS JOIN keeps the
    // runs the outer loop (SQLite's rule), so each is one seek and a short range, never a scan of a key's tiles.
    // Calls over SQLite's bound-parameter limit take several statements in one read transaction.
    val slots = requests.indices.flatMap(n => requests(n).runs.keys.map(n -> _))
    val runs = slots.indices.flatMap { i => val (n, key) = slots(i); requests(n).runs(key).map(i -> _) }
    val found = Array.fill(slots.size)(mutable.ArrayBuffer.empty[Tile])
    def select(chunk: Seq[(Int, TileRun)]): Unit = {
      val s = r.tileRuns(chunk.size)
      var p = 1
      chunk.foreach { case (i, run) =>
        val (n, key) = slots(i)
        s.setInt(p, i); s.setString(p + 1, requests(n).view); s.setInt(p + 2, requests(n).version)
        s.setBytes(p + 3, key.bytes); s.setLong(p + 4, run.lengthUs); s.setLong(p + 5, run.firstUs); s.setLong(p + 6, run.lastUs)
        p += 7
      }
      Using.resource(s.executeQuery()) { rs =>
        while (rs.next()) {
          val i = rs.getInt(1)
          val (n, key) = slots(i)
          found(i) += Tile(requests(n).view, requests(n).version, key, rs.getLong(3), rs.getLong(2), rs.getBytes(5), rs.getLong(4))
        }
      }
    }
    if (runs.size <= MaxRunsPerStatement) { if (runs.nonEmpty) select(runs) }
    else r.snapshot(runs.grouped(MaxRunsPerStatement).foreach(select))
    val byRequest = slots.indices.groupBy(i => slots(i)._1)
    requests.indices.map(n => byRequest.getOrElse(n, Nil).map(i => slots(i)._2 -> OnlineStore.ordered(found(i).toSeq)).toMap)
  }

  protected def tilesAt(view: String, version: Int, addresses: IndexedSeq[(EntityKey, Long, Long)]): Array[Tile] = withReader { r =>
    // As getTiles, the addresses are rows of a VALUES list (slot, key, length, start) joined on the primary key, one
    // seek each; up to AtPerStatement per statement, in one read transaction. A statement's row count is a power of
    // two (the last rows repeat the last address), so a handful of shapes serve every call.
    val found = new Array[Tile](addresses.length)
    val bytes = new KeyBytes
    val rows = inKeyOrder(addresses.indices.iterator.map { i =>
      val (key, length, start) = addresses(i); Row(view, version, bytes(key), length, start, i)
    })
    def select(from: Int): Unit = {
      val left = rows.length - from
      val n = if (left >= AtPerStatement) AtPerStatement else Integer.highestOneBit(2 * left - 1)
      val s = r.tilesAt(n)
      var p = 1
      var i = from
      while (i < from + n) {
        val row = rows(math.min(i, rows.length - 1))
        s.setInt(p, row.of); s.setBytes(p + 1, row.key); s.setLong(p + 2, row.length)
        s.setLong(p + 3, row.start)
        p += 4; i += 1
      }
      s.setString(p, view); s.setInt(p + 1, version)
      Using.resource(s.executeQuery()) { rs =>
        while (rs.next()) {
          val slot = rs.getInt(1)
          val (key, length, start) = addresses(slot)
          found(slot) = Tile(view, version, key, start, length, rs.getBytes(3), rs.getLong(2))
        }
      }
    }
    if (addresses.length <= AtPerStatement) select(0)
    else r.snapshot((0 until addresses.length by AtPerStatement).foreach(select))
    found
  }

  private def tilesOf(r: Reader, q: TileQuery, key: EntityKey): Seq[Tile] = {
    val s = r.tiles
    s.setString(1, q.view); s.setInt(2, q.version); s.setBytes(3, key.bytes); s.setLong(4, q.toUs); s.setLong(5, q.fromUs)
    Using.resource(s.executeQuery()) { rs =>
      val out = mutable.ArrayBuffer.empty[Tile]
      while (rs.next()) out += Tile(q.view, q.version, key, rs.getLong(2), rs.getLong(1), rs.getBytes(4), rs.getLong(3))
      out.toSeq
    }
  }

  def watermark(view: String, version: Int): Option[Long] = withReader { r =>
    r.watermark.setString(1, view); r.watermark.setInt(2, version)
    Using.resource(r.watermark.executeQuery())(rs => if (rs.next()) Some(rs.getLong(1)) else None)
  }

  protected def raiseWatermark(view: String, version: Int, eventUs: Long): Unit =
    writer.transaction(_.raise(view, version, eventUs))

  def lastBatch(stream: String): Option[Long] = withReader { r =>
    r.batch.setString(1, stream)
    Using.resource(r.batch.executeQuery())(rs => if (rs.next()) Some(rs.getLong(1)) else None)
  }

  protected def setBatch(stream: String, batchId: Long): Unit = writer.transaction(_.record(stream, batchId))

  protected def pruneTiles(view: String, version: Int, beforeUs: Long): Long = writer.transaction { w =>
    w.prune.setString(1, view); w.prune.setInt(2, version); w.prune.setLong(3, beforeUs)
    w.prune.executeUpdate().toLong
  }

  protected def stampedTiles(view: String, version: Int, stamp: Long): Seq[Tile] = withReader { r =>
    Using.resource(r.conn.prepareStatement(SelectStamped)) { s =>
      s.setString(1, view); s.setInt(2, version); s.setLong(3, stamp)
      Using.resource(s.executeQuery()) { rs =>
        val out = mutable.ArrayBuffer.empty[Tile]
        while (rs.next()) out += Tile(view, version, EntityKey.fromBytes(rs.getBytes(1)), rs.getLong(3), rs.getLong(2), rs.getBytes(4), stamp)
        out.toSeq
      }
    }
  }

  def close(): Unit = {
    closed = true
    checkpointer.close()
    writer.synchronized(writer.conn.close())
    drainReaders()
  }

  private def withReader[A](f: Reader => A): A = {
    check()
    val r = Option(readers.poll()).getOrElse(new Reader(connect()))
    try f(r)
    finally {
      readers.offer(r)
      if (closed) drainReaders() // close() may have drained the pool while this reader was out
    }
  }

  private def drainReaders(): Unit = Iterator.continually(readers.poll()).takeWhile(_ != null).foreach(_.conn.close())

  private def check(): Unit = if (closed) throw new IllegalStateException(s"the SQLite online store $path is closed")

  /** The one connection that writes, with its prepared statements; `transaction` serializes callers. Its commits
    * leave the WAL's pages to the [[Checkpointer]]. */
  private final class Writer(val conn: Connection) {
    migrate(conn, path)
    Using.resource(conn.createStatement())(_.execute("PRAGMA wal_autocheckpoint = 0"))
    val upsert: PreparedStatement = conn.prepareStatement(UpsertTile)
    val watermark: PreparedStatement = conn.prepareStatement(RaiseWatermark)
    val batch: PreparedStatement = conn.prepareStatement(SetBatch)
    val prune: PreparedStatement = conn.prepareStatement(PruneTiles)

    def raise(view: String, version: Int, eventUs: Long): Unit = {
      watermark.setString(1, view); watermark.setInt(2, version); watermark.setLong(3, eventUs); watermark.executeUpdate()
    }
    def record(stream: String, batchId: Long): Unit = { batch.setString(1, stream); batch.setLong(2, batchId); batch.executeUpdate() }

    def transaction[A](f: Writer => A): A = synchronized {
      check()
      Using.resource(conn.createStatement()) { st =>
        st.execute("BEGIN IMMEDIATE")
        try { val a = f(this); st.execute("COMMIT"); checkpointer.soon(); a }
        catch {
          case e: Throwable =>
            try { upsert.clearBatch(); st.execute("ROLLBACK") } catch { case r: SQLException => e.addSuppressed(r) }
            throw e
        }
      }
    }
  }

  /** Copies the WAL's committed pages into the database file after each write, on a thread and a connection of its
    * own. Why: SQLite's automatic checkpoint runs inside the commit that leaves the WAL over 1000 pages, and a stream
    * batch's close writes tens of thousands of tiles (tens of MB of pages): the copy and its fsyncs were part of
    * every close, so of every batch's freshness. PASSIVE: it never waits for the writer or a reader; what it cannot
    * copy yet (pages a reader's snapshot still needs), the next one does, and every commit is in the WAL meanwhile.
    * One checkpoint runs at a time and at most one more is queued: writes during a checkpoint queue one more. */
  private final class Checkpointer {
    private val conn = connect()
    private val queued = new AtomicBoolean(false)
    private val thread = Executors.newSingleThreadExecutor { r =>
      val t = new Thread(r, "tally-sqlite-checkpoint"); t.setDaemon(true); t
    }

    def soon(): Unit = if (queued.compareAndSet(false, true)) {
      try thread.execute { () =>
        queued.set(false)
        // A failure (another process checkpointing the file) leaves the pages in the WAL for the next one.
        try Using.resource(conn.createStatement())(_.execute("PRAGMA wal_checkpoint(PASSIVE)"))
        catch { case _: SQLException => () }
      } catch { case _: RejectedExecutionException => () }  // closing: the writer's close copies the rest
    }

    /** Waits for the checkpoint running, if any. */
    def close(): Unit = {
      thread.shutdown()
      thread.awaitTermination(1, TimeUnit.MINUTES)
      conn.close()
    }
  }

  /** A pooled reading connection; `snapshot` holds one read transaction over several statements. */
  private final class Reader(val conn: Connection) {
    val tiles: PreparedStatement = conn.prepareStatement(SelectTiles)
    // The statement reading n runs, prepared once per n (a service sees a few dozen shapes), least recently used out.
    private val byRuns = new java.util.LinkedHashMap[Int, PreparedStatement](16, 0.75f, true) {
      override def removeEldestEntry(e: java.util.Map.Entry[Int, PreparedStatement]): Boolean =
        (size > MaxShapes) && { e.getValue.close(); true }
    }
    def tileRuns(n: Int): PreparedStatement = {
      var s = byRuns.get(n)
      if (s == null) { s = conn.prepareStatement(selectRuns(n)); byRuns.put(n, s) }
      s
    }
    // The statement reading n addresses, n a power of two up to AtPerStatement: a dozen shapes at most.
    private val byAddresses = mutable.Map.empty[Int, PreparedStatement]
    def tilesAt(n: Int): PreparedStatement = byAddresses.getOrElseUpdate(n, conn.prepareStatement(selectAt(n)))
    val watermark: PreparedStatement = conn.prepareStatement(SelectWatermark)
    val batch: PreparedStatement = conn.prepareStatement(SelectBatch)

    def snapshot[A](f: => A): A = Using.resource(conn.createStatement()) { st =>
      st.execute("BEGIN")
      try f finally st.execute("COMMIT")
    }
  }
}

object SqliteStore {
  /** Opens (creating if needed) the store at `path`; its folder is created too. */
  def apply(path: Path, busyTimeoutMs: Int = 10000): SqliteStore = {
    Option(path.toAbsolutePath.getParent).foreach(Files.createDirectories(_))
    new SqliteStore(path, busyTimeoutMs)
  }

  /** Where the store lives in a warehouse unless configured otherwise: `<warehouse>/online/tally.db`. */
  def defaultPath(warehouse: Path): Path = warehouse.resolve("online").resolve("tally.db")

  private val MmapBytes = 8L << 30
  private val CachePagesKiB = 64 * 1024

  /** The layout this code reads and writes; a file with a newer one is refused rather than misread. */
  val SchemaVersion = 1

  private val Schema = Seq(
    """CREATE TABLE IF NOT EXISTS tiles (
      |  view TEXT NOT NULL, version INTEGER NOT NULL, key BLOB NOT NULL, length INTEGER NOT NULL,
      |  start INTEGER NOT NULL, stamp INTEGER NOT NULL, payload BLOB NOT NULL,
      |  PRIMARY KEY (view, version, key, length, start)) WITHOUT ROWID""".stripMargin,
    """CREATE TABLE IF NOT EXISTS watermarks (
      |  view TEXT NOT NULL, version INTEGER NOT NULL, event_us INTEGER NOT NULL,
      |  PRIMARY KEY (view, version)) WITHOUT ROWID""".stripMargin,
    """CREATE TABLE IF NOT EXISTS stream_batches (
      |  stream TEXT NOT NULL PRIMARY KEY, batch_id INTEGER NOT NULL) WITHOUT ROWID""".stripMargin,
    s"PRAGMA user_version = $SchemaVersion")

  // The stamp rule: the update applies unless the stored tile already carries the incoming stamp.
  private val UpsertTile =
    """INSERT INTO tiles (view, version, key, length, start, stamp, payload) VALUES (?, ?, ?, ?, ?, ?, ?)
      |ON CONFLICT (view, version, key, length, start) DO UPDATE SET stamp = excluded.stamp, payload = excluded.payload
      |WHERE tiles.stamp <> excluded.stamp""".stripMargin
  private val SelectTiles =
    """SELECT length, start, stamp, payload FROM tiles
      |WHERE view = ? AND version = ? AND key = ? AND start < ? AND start + length > ?
      |ORDER BY start, length""".stripMargin
  // Runs per statement are bounded by SQLite's 32766 bound parameters (7 each); larger calls are split.
  private[online] val MaxRunsPerStatement = 4000
  private val MaxShapes = 64
  private def selectRuns(n: Int): String =
    Iterator.fill(n)("(?,?,?,?,?,?,?)").mkString(
      "WITH r(slot, view, version, key, length, first, last) AS (VALUES ", ",",
      """)
        |SELECT r.slot, t.length, t.start, t.stamp, t.payload FROM r CROSS JOIN tiles AS t
        |ON t.view = r.view AND t.version = r.version AND t.key = r.key AND t.length = r.length
        |  AND t.start BETWEEN r.first AND r.last
        |WHERE (t.start - r.first) % t.length = 0""".stripMargin)
  /** A row to bind, with its key's bytes (computed once) and what it stands for (a tile, a slot). */
  private final case class Row[A](view: String, version: Int, key: Array[Byte], length: Long, start: Long, of: A)

  /** Rows sorted as the tiles' primary key sorts them: view (identifiers, so UTF-16 order is byte order), version,
    * key bytes (unsigned, as SQLite compares BLOBs), length, start. A stream batch's rows come nearly sorted (key by
    * key), so the sort (TimSort) is about one comparison a row, and rows of one key share one byte array
    * ([[KeyBytes]]), which the comparison recognizes before comparing bytes. */
  private def inKeyOrder[A](rows: Iterator[Row[A]]): Array[Row[A]] = {
    val a = rows.toArray[Row[_]]
    java.util.Arrays.sort(a, RowOrder)
    a.asInstanceOf[Array[Row[A]]]
  }
  private val RowOrder: java.util.Comparator[Row[_]] = (a, b) => {
    var c = if (a.view eq b.view) 0 else a.view.compareTo(b.view)
    if (c == 0) c = Integer.compare(a.version, b.version)
    if (c == 0 && (a.key ne b.key)) c = java.util.Arrays.compareUnsigned(a.key, b.key)
    if (c == 0) c = java.lang.Long.compare(a.length, b.length)
    if (c == 0) c = java.lang.Long.compare(a.start, b.start)
    c
  }

  /** An entity key's bytes, encoded once for a run of rows of that key (a batch's tiles and addresses come key by
    * key), so those rows share one array. */
  private final class KeyBytes {
    private var last: EntityKey = null
    private var bytes: Array[Byte] = null
    def apply(key: EntityKey): Array[Byte] = {
      if (!(key eq last) && (last == null || key != last)) { last = key; bytes = key.bytes }
      bytes
    }
  }

  // Addresses per statement (4 bound parameters each, within SQLite's 32766), a power of two.
  private[online] val AtPerStatement = 4096
  private def selectAt(n: Int): String =
    Iterator.fill(n)("(?,?,?,?)").mkString("WITH a(slot, key, length, start) AS (VALUES ", ",",
      """)
        |SELECT a.slot, t.stamp, t.payload FROM a CROSS JOIN tiles AS t
        |ON t.view = ? AND t.version = ? AND t.key = a.key AND t.length = a.length AND t.start = a.start""".stripMargin)
  private val RaiseWatermark =
    """INSERT INTO watermarks (view, version, event_us) VALUES (?, ?, ?)
      |ON CONFLICT (view, version) DO UPDATE SET event_us = max(event_us, excluded.event_us)""".stripMargin
  private val SelectWatermark = "SELECT event_us FROM watermarks WHERE view = ? AND version = ?"
  private val SetBatch =
    "INSERT INTO stream_batches (stream, batch_id) VALUES (?, ?) ON CONFLICT (stream) DO UPDATE SET batch_id = excluded.batch_id"
  private val SelectBatch = "SELECT batch_id FROM stream_batches WHERE stream = ?"
  private val SelectStamped = "SELECT key, length, start, payload FROM tiles WHERE view = ? AND version = ? AND stamp = ?"
  private val PruneTiles = "DELETE FROM tiles WHERE view = ? AND version = ? AND start + length <= ?"

  /** Creates the layout in a new file, accepts the current one, refuses a newer one or a file that is not SQLite. */
  private def migrate(conn: Connection, path: Path): Unit =
    try Using.resource(conn.createStatement()) { st =>
      st.execute("BEGIN IMMEDIATE")
      val found = Using.resource(st.executeQuery("PRAGMA user_version"))(rs => { rs.next(); rs.getInt(1) })
      if (found > SchemaVersion) {
        st.execute("ROLLBACK")
        throw new OnlineStoreException(s"the SQLite online store $path has layout version $found, newer than this " +
          s"tally's $SchemaVersion: upgrade tally, or point the online store at another file")
      }
      Schema.foreach(st.execute)
      st.execute("COMMIT")
    } catch {
      case e: OnlineStoreException => conn.close(); throw e
      case e: SQLException =>
        conn.close()
        throw new OnlineStoreException(s"cannot use $path as the SQLite online store: ${e.getMessage} (is it an " +
          "SQLite file written by tally? move it away, or configure another online store path)", e)
    }
}

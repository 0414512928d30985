package tally.spark

import java.util.concurrent.{ConcurrentHashMap, Executors}

import scala.concurrent.{Await, ExecutionContext, Future}
import scala.concurrent.duration.Duration

import org.apache.spark.sql.{DataFrame, Row, SparkSession}
import org.apache.spark.sql.delta.{DeltaHistoryManager, DeltaLog, Snapshot}
import org.apache.spark.sql.execution.SQLExecution
import org.apache.spark.sql.delta.util.FileNames
import org.apache.spark.sql.functions._
import org.apache.spark.sql.types._

import tally.bridge.ViewSpec
import tally.online.{EntityKey, OnlineStore, Tile, TileFold, TileQuery}
import tally.window.Ladder

/** `tally stream`: one micro-batch of a view's source folded into the online store's tiles, exactly once. The
  * Structured Streaming query itself (Delta source, trigger, checkpoint) is set up on the Python side, whose
  * `foreachBatch` hands each batch here with Spark's batch id; this object knows nothing of streams, so a suite can
  * drive it with plain DataFrames.
  *
  * 0. The source's contract (`streaming.fold_batch`): its row checks arrive as boolean columns of the batch
  *    (`flags`), counted in step 3's one read of the batch; a batch with a failing row stops there, nothing written.
  * 1. A batch both the store and the Delta tile table record as written (`lastBatch(stream) >= batchId`, and the
  *    table's newest commit tagged by `stream` holds batchId or a later one, [[tableBatch]]) is skipped: Spark
  *    replays the last batch after a restart when the crash came after our writes but before its checkpoint's
  *    commit.
  * 2. The horizon: tiles are complete from `floorUs` on (where the bootstrap `materialize` wrote every ladder level)
  *    and requests at or after the watermark need nothing before `floor(watermark - reach, 30 days)`. Events older
  *    than the later of the two are counted as late and skipped: folding them would create fine tiles beside a
  *    lifetime window's coarse ones. The next batch `tally materialize` heals them.
  * 3. The batch's events become tiles with [[TileRows]], the builder `materialize` uses, stamped `stampBase + batchId`:
  *    on the driver from the collected rows for a batch up to [[LocalBuildBytes]], else through a shuffle by key.
  * 4. The stored tiles at the batch tiles' addresses are read (one call, [[OnlineStore.at]]) and each batch tile is
  *    folded into the stored one at its address ([[TileFold]]). A stored tile already carrying the batch's stamp
  *    holds the batch (an earlier attempt wrote it): it is not written again, and it is what the tile table gets for that
  *    address, so the table's rows are the batch's folds whichever attempt computed them. Where an earlier attempt
  *    may have raised the watermark (the store records the batch, or its watermark is at or past the batch's newest
  *    event), tiles are built from the bootstrap's floor, not the horizon: a raised watermark can move the horizon
  *    past events the first attempt folded, and their stamped tiles must still reach the table.
  * 5. The store closes the batch ([[OnlineStore.closeBatch]]: tiles, watermark, batch record; one transaction on
  *    SQLite); fetches see it from then on, and the batch ends. Its tiles then go to the view's Delta tile table in
  *    one commit whose commit info names the stream and the batch (`userMetadata`, [[commitTag]]; a batch the table
  *    already holds is not appended again), on another thread, beside the next batch: the Delta commit is off the
  *    freshness path and off the batch's length. The next batch waits for it before its own close, so the table is
  *    at most one batch behind the store, and the tiles stamped with that batch are still in the store as it left
  *    them. A crash between the close and the commit leaves the batch in the store only: Spark replays it (1 does
  *    not skip, 4 finds the store's tiles stamped, the commit completes the table) or, when Spark had committed it,
  *    [[catchUp]] rewrites it from the store's tiles carrying its stamp, before the stream's first batch and before
  *    any close not preceded by its predecessor's commit in this process. [[flush]] waits for the last commit when
  *    a stream stops. Where the store cannot close in one transaction (Redis), a crash before its record replays the
  *    batch under the same id and stamp: tiles already written are found in 4 (and refused by the store's stamp
  *    rule), the rest are folded once. See docs/streaming.md.
  */
object StreamJob {
  /** `phasesMs`: where the batch's time went (build: read the batch, build and collect its tiles; fold: read the
    * stored tiles and fold; wait: for the previous batch's tile-table commit, if still running; close: the store's
    * close; tile_table: the previous batch's Delta commit, which ran beside this batch), for `bench/streaming.py`. */
  final case class Result(batchId: Long, skipped: Boolean, events: Long, late: Long, tiles: Long, applied: Long,
                          newestUs: Option[Long], horizonUs: Long, phasesMs: Seq[(String, Long)] = Nil,
                          failing: Seq[Long] = Nil)

  /** Micro-batches whose rows Spark estimates at up to this many bytes (from the batch's files, so about their
    * compressed size) build their tiles on the driver (step 3). At 20,000 events/s a batch of ~32,000 payments is
    * about 0.5 MB of Parquet; 8 MB is some hundreds of thousands of events, tens of MB of rows on the driver. */
  val LocalBuildBytes: BigInt = BigInt(8L << 20)

  /** A batch's events (rows), those before the horizon (`late`), the newest at or after it, the newest of all, and per
    * contract flag the rows it marks as failing. */
  private final case class Counts(events: Long, late: Long, newest: Option[Long], last: Option[Long], failing: Seq[Long])

  private object Counts {
    /** One aggregate over `rows` (prepared rows, carrying the boolean `flags`). */
    def apply(rows: DataFrame, horizon: Long, flags: Seq[String]): Counts = {
      val c = rows.agg(count(lit(1)), (sum(when(col("__t") < lit(horizon), 1L).otherwise(0L)) +:
        max(when(col("__t") >= lit(horizon), col("__t"))) +: max(col("__t")) +:
        flags.map(f => sum(when(col(s"`$f`"), 1L).otherwise(0L)))): _*).head()
      def opt(i: Int) = if (c.isNullAt(i)) None else Some(c.getLong(i))
      Counts(c.getLong(0), opt(1).getOrElse(0L), opt(2), opt(3), flags.indices.map(i => opt(4 + i).getOrElse(0L)))
    }

    /** The same over rows collected on the driver, whose time (`__t`) is column `t` and whose flags end each row. */
    def apply(rows: Array[Row], t: Int, horizon: Long, flags: Int): Counts = {
      val times = rows.iterator.filterNot(_.isNullAt(t)).map(_.getLong(t)).toArray
      val onTime = times.filter(_ >= horizon)
      val failing = Array.fill(flags)(0L)
      rows.foreach { r =>
        val first = r.length - flags
        var i = 0
        while (i < flags) { if (!r.isNullAt(first + i) && r.getBoolean(first + i)) failing(i) += 1; i += 1 }
      }
      Counts(rows.length.toLong, (times.length - onTime.length).toLong, onTime.maxOption, times.maxOption, failing.toSeq)
    }
  }

  /** The Delta tile table's rows: each tile a batch wrote, as the store holds it after the batch (the fold of the
    * stored tile and the batch's), with the batch's stamp and id. The latest row per (key, length_us, start_us)
    * is the tile's current state; see docs/streaming.md for rebuilding a store from it. */
  val TileTableSchema: StructType = StructType(Seq(
    StructField("key", StringType, nullable = false), StructField("length_us", LongType, nullable = false),
    StructField("start_us", LongType, nullable = false), StructField("payload", BinaryType, nullable = false),
    StructField("stamp", LongType, nullable = false), StructField("batch_id", LongType, nullable = false)))

  /** Table properties of a new tile table. A checkpoint every 100 commits, not Delta's 10: a checkpoint rebuilds
    * the table's whole state (several Spark jobs, 1-4 s on the 2-core benchmark machine) inside the commit that
    * triggers it, so at one batch a second the default put it on every tenth batch. Readers replay at most 100
    * small commit files instead of 10. */
  val TileTableProperties: Map[String, String] = Map("delta.checkpointInterval" -> "100")

  /** The commit info (`userMetadata`) of the tile table's commit of `batchId` of `stream`. The batch is recorded
    * here, in the commit that adds its rows, rather than as Delta's idempotent-write transaction (`txnAppId`,
    * `txnVersion`): Delta (4.4) looks that up from a full reconstruction of the table's state, three Spark jobs
    * before every commit, which made the commit about four times slower (bench/README.md). */
  def commitTag(stream: String, batchId: Long): String = s"$stream batch $batchId"

  /** Appends one batch's folded tiles to the tile table of `log` in one Delta commit tagged with the batch
    * ([[commitTag]]), from `snapshot`: the one the caller checked the batch against, so one log update serves both
    * (the stream is the table's only writer); version -1 creates the table. Written on the driver, no Spark job
    * ([[TileTableCommit]]). The caller skips batches the table already holds ([[tableBatch]]). */
  def writeTileTable(spark: SparkSession, log: DeltaLog, snapshot: Snapshot, tiles: Seq[Tile], stream: String,
                     batchId: Long): Unit =
    TileTableCommit.append(spark, log, snapshot, tiles, batchId, commitTag(stream, batchId))

  /** The tile table at `path` as of now: its log (cached by Delta) and newest snapshot, one log update. */
  private def tableNow(spark: SparkSession, path: String): (DeltaLog, Snapshot) = {
    val log = DeltaLog.forTable(spark, path)
    (log, log.update())
  }

  /** The last batch of `stream` the tile table holds: read from the commit files of `snapshot` newest first, on the
    * driver (no Spark job; usually one file, the newest), up to the newest commit of `stream`. The stream is the
    * table's only writer besides maintenance (OPTIMIZE, VACUUM: untagged commits, passed over); streams of one view
    * version follow one another (a new one starts from a deleted checkpoint folder), so a commit of another stream
    * means this one has none after it. A table whose commits carry no tag at all was written before the tag, when
    * the batch was Delta's transaction version of the stream: that is read instead. */
  def tableBatch(log: DeltaLog, snapshot: Snapshot, stream: String): Option[Long] = {
    val conf = log.newDeltaHadoopConf()
    val fs = log.logPath.getFileSystem(conf)
    val mine = s"$stream batch "
    var version = snapshot.version
    while (version >= 0) {
      val file = FileNames.unsafeDeltaFile(log.logPath, version)
      if (!fs.exists(file)) version = -1  // the log's older commits are cleaned up
      else {
        DeltaHistoryManager.getCommitInfoOpt(log.store, file, conf).flatMap(_.userMetadata) match {
          case Some(tag) if tag.startsWith(mine) => return tag.drop(mine.length).toLongOption
          case Some(tag) if tag.matches(".* batch [0-9]+") => return None  // another stream's: this one's end
          case _ => version -= 1
        }
      }
    }
    if (snapshot.version < 0) None else snapshot.transactions.get(stream).map(_.asInstanceOf[Long])
  }

  /** [[tableBatch]] of the tile table at `path` as of now. */
  def tableBatch(spark: SparkSession, path: String, stream: String): Option[Long] = {
    val (log, snapshot) = tableNow(spark, path)
    tableBatch(log, snapshot, stream)
  }

  /** Whether the tile table at `path` holds batch `batchId` (or a later one) of `stream`. */
  def tableHas(spark: SparkSession, path: String, stream: String, batchId: Long): Boolean =
    tableBatch(spark, path, stream).exists(_ >= batchId)

  /** Commits one batch's tiles to the tile table unless it holds the batch already (a crash after an earlier
    * attempt's commit). One log update serves the check and the append. Returns the milliseconds it took. */
  private def commitTiles(spark: SparkSession, path: String, tiles: Seq[Tile], stream: String, batchId: Long): Long = {
    val start = System.nanoTime()
    val (log, snapshot) = tableNow(spark, path)
    if (!tableBatch(log, snapshot, stream).exists(_ >= batchId))
      writeTileTable(spark, log, snapshot, tiles, stream, batchId)
    (System.nanoTime() - start) / 1000000
  }

  /** A batch's tile-table commit, running after the store's close, beside the next batch (step 5). */
  private final case class Pending(stream: String, batchId: Long, commit: Future[Long])

  /** The commit in flight per tile table (a stream has one table, and one batch of it runs at a time). */
  private val pending = new ConcurrentHashMap[String, Pending]()

  /** Threads of the deferred commits. Their Spark jobs must not carry the stream thread's local properties, which a
    * new thread inherits: a query's stop cancels its job group, and a commit is not part of any batch's job. */
  private lazy val committer: ExecutionContext = ExecutionContext.fromExecutorService(Executors.newCachedThreadPool { r =>
    val t = new Thread(r, "tally-tile-table-commit"); t.setDaemon(true); t
  })

  private def commitLater(spark: SparkSession, path: String, tiles: Seq[Tile], stream: String, batchId: Long): Unit = {
    val commit = Future {
      val sc = spark.sparkContext
      sc.clearJobGroup(); sc.clearJobTags()
      Seq(SQLExecution.EXECUTION_ID_KEY, SQLExecution.EXECUTION_ROOT_ID_KEY).foreach(sc.setLocalProperty(_, null))
      commitTiles(spark, path, tiles, stream, batchId)
    }(committer)
    pending.put(path, Pending(stream, batchId, commit))
  }

  /** Waits for the commit in flight to `path`, if any (raising its failure); returns it with its milliseconds. */
  private def settle(path: String): Option[(Pending, Long)] =
    Option(pending.remove(path)).map(p => p -> Await.result(p.commit, Duration.Inf))

  /** Waits for the commit in flight to the tile table at `path`, if any, raising its failure. Why: a stream that
    * stops (Ctrl-C, `--until-idle`) leaves its table whole. A process that dies first leaves its last batch to
    * [[catchUp]]. */
  def flush(path: String): Unit = settle(path)

  /** Makes the tile table hold the last batch the store records for `stream`, rewriting it from the store when a
    * crash lost its deferred commit; returns that batch's id if it was rewritten. The store's tiles carrying the
    * batch's stamp are the table's rows of the batch: every row of a batch carries its stamp, the store holds every
    * one of them after the close (the stamp rule), and no later batch has closed (a batch closes only once the one
    * before is in the table, step 5). Run before a stream's first batch and before a close not preceded by its
    * predecessor's commit in this process. */
  def catchUp(spark: SparkSession, store: OnlineStore, view: String, version: Int, path: String, stream: String,
              stampBase: Long): Option[Long] = {
    settle(path)
    store.lastBatch(stream).filterNot { last =>
      val (log, snapshot) = tableNow(spark, path)
      tableBatch(log, snapshot, stream).exists(_ >= last) || {
        writeTileTable(spark, log, snapshot, store.stamped(view, version, stampBase + last), stream, last)
        false
      }
    }
  }

  /** A batch's tiles by key, then length and start: the order of the stores' keys (SQLite's primary key, for keys
    * of UTF-8 up to U+FFFF), so the read of the stored tiles and the close, which each sort their rows that way,
    * find them sorted (one comparison a row instead of a sort of 20,000-50,000 rows, twice). The builder hands out
    * each key's tiles together, in the order keys first appear in the batch: the key runs are sorted by key (one
    * comparison of keys per run, not per tile), and the few tiles of a run by length and start. Any order is
    * correct; this one is cheaper downstream. */
  private def inKeyOrder(tiles: Vector[Tile]): IndexedSeq[Tile] = {
    val runs = scala.collection.mutable.ArrayBuffer.empty[(Int, Int)]  // [from, until) of one key's tiles
    var from = 0
    while (from < tiles.length) {
      var until = from + 1
      while (until < tiles.length && tiles(until).key == tiles(from).key) until += 1
      runs += from -> until
      from = until
    }
    val byTile: Ordering[Tile] = (a, b) => {
      val c = java.lang.Long.compare(a.lengthUs, b.lengthUs)
      if (c != 0) c else java.lang.Long.compare(a.startUs, b.startUs)
    }
    runs.sortBy(r => tiles(r._1).key.encoded).iterator.flatMap { case (f, u) => tiles.slice(f, u).sorted(byTile) }.toVector
  }

  /** One micro-batch, steps 1-5. `flags`: boolean columns of `batch`, each true for the rows failing one check of the
    * source's contract (`streaming.check_batch`), counted in the same read as the batch's events: if any row fails,
    * the batch stops there, nothing written, and `failing` (per flag, the rows) says so; the caller raises.
    * `localBuildBytes`: the batch size (Spark's estimate) up to which step 3 runs on the driver; a suite lowers it to
    * compare the two builds. */
  def foldBatch(batch: DataFrame, spec: ViewSpec, store: OnlineStore, tileTable: String, stream: String, batchId: Long,
                stampBase: Long, floorUs: Long, partitions: Int, flags: Seq[String] = Nil,
                localBuildBytes: BigInt = LocalBuildBytes): Result = {
    val (view, version) = (spec.view, spec.version)
    val spark = batch.sparkSession
    val reach = spec.boundedReachUs.getOrElse(0L)
    val last = store.lastBatch(stream)
    val recorded = last.exists(_ >= batchId)
    val watermark = store.watermark(view, version)
    val horizon = math.max(floorUs, watermark.fold(Long.MinValue)(w => Ladder.floor(w - reach, Ladder.Longest)))
    // The previous batch's commit runs beside this batch up to its close; a replay settles it first (it reads the table).
    val prior = if (recorded) settle(tileTable) else None
    if (recorded && tableHas(spark, tileTable, stream, batchId))
      return Result(batchId, skipped = true, 0, 0, 0, 0, None, horizon)

    val phases = Seq.newBuilder[(String, Long)]
    var mark = System.nanoTime()
    def lap(phase: String): Unit = { val now = System.nanoTime(); phases += phase -> (now - mark) / 1000000; mark = now }
    val stamp = stampBase + batchId
    val prepared = TileRows.prepare(batch, spec, carry = flags)
    // A small batch (by the size Spark estimates from its files) is collected once, one job, then counted and built on
    // the driver: for ~30,000 events, caching the rows for an aggregate and a shuffle by key cost far more in
    // scheduling than in work (bench/README.md). A larger one is cached, counted by one aggregate and built through
    // a shuffle. Either way the same sweep ([[TileRows]]) builds the tiles.
    val collected = if (prepared.rows.queryExecution.optimizedPlan.stats.sizeInBytes <= localBuildBytes)
      Some(prepared.rows.collect()) else None
    val rows = if (collected.isEmpty) prepared.rows.cache() else prepared.rows
    try {
      val t = spec.keys.size  // where `prepare` puts __t
      val counts = collected.fold(Counts(rows, horizon, flags))(Counts(_, t, horizon, flags.size))
      val (events, late, newest) = (counts.events, counts.late, counts.newest)
      if (counts.failing.exists(_ > 0))  // step 0, the contract: nothing of this batch is written
        return Result(batchId, skipped = false, events, late, 0, 0, newest, horizon, failing = counts.failing)
      // Tiles below the horizon are built only where the store may hold some of this batch already under a raised
      // watermark: a batch it recorded but the table did not, or one whose close died after raising the watermark
      // (Redis: tiles, watermark, then the record), which the watermark at or past the batch's newest event allows.
      // Then the horizon may have moved past events the first attempt folded (its 30-day floor crossed); their tiles
      // carry the batch's stamp, and from the bootstrap's floor every such tile is found.
      val replayed = recorded || counts.last.exists(n => watermark.exists(_ >= n))
      val from = if (replayed) floorUs else horizon
      val layout = prepared.layout
      val eventCount = batch.sparkSession.sparkContext.longAccumulator(s"tally stream $view batch $batchId events")
      val fresh = Vector.newBuilder[Tile]
      var (lastKey, entity) = ("", null: EntityKey)
      val chunks = collected match {
        case Some(all) =>
          TileRows.buildLocal(prepared, all.filter(r => r.isNullAt(t) || r.getLong(t) >= from), layout, stamp,
            Long.MinValue, eventCount)
        case None =>
          // As many tile tasks as the batch has input partitions (up to `partitions`), not a shuffle's worth of mostly
          // empty ones, which would put seconds of scheduling on every batch's latency.
          val tasks = math.max(1, math.min(partitions, batch.rdd.getNumPartitions))
          TileRows.build(prepared, rows.where(col("__t") >= lit(from) || col("__t").isNull), layout, tasks, stamp,
            Long.MinValue, eventCount).collect().iterator
      }
      chunks.foreach(TileRows.unpack(_) { (key, start, length, payload) =>
        if (key != lastKey) { lastKey = key; entity = EntityKey.decode(key) }
        fresh += Tile(view, version, entity, start, length, payload, stamp)
      })
      val tiles = inKeyOrder(fresh.result())
      lap("build")
      // (tile as the batch leaves it, whether to write it to the store)
      val stored = store.at(view, version, tiles.map(t => (t.key, t.lengthUs, t.startUs)))
      val folded = tiles.indices.map { i =>
        TileFold.fold(layout, stored(i), tiles(i)).fold(stored(i).get -> false)(_ -> true)
      }.filter { case (t, write) =>
        // A stored tile with the batch's stamp: the table's row, not written again. A tile to write: only a batch the
        // store has not recorded, and on time (below the horizon it is late; its events were not folded before).
        !write || (!recorded && t.endUs > horizon)
      }
      lap("fold")
      // This close may replace tiles of the store's last batch, so that batch must be in the table first: the commit
      // in flight (this process's previous batch), or, without one (a first batch), whatever the table holds.
      val committed = prior.orElse(settle(tileTable))
      if (!last.forall(l => committed.exists { case (p, _) => p.stream == stream && p.batchId == l }))
        catchUp(spark, store, view, version, tileTable, stream, stampBase)
      committed.foreach { case (_, ms) => phases += "tile_table" -> ms }
      lap("wait")
      val applied = store.closeBatch(folded.collect { case (t, true) => t }, view, version, newest, stream, batchId)
      lap("close")
      // Unrecorded by the store before this close, the batch may still be in the table (a crash after the commit of
      // an attempt that ran both at once, before this order): the commit checks.
      commitLater(spark, tileTable, folded.map(_._1), stream, batchId)
      Result(batchId, skipped = false, events, late, tiles.size.toLong, applied.toLong, newest, horizon, phases.result())
    } finally if (collected.isEmpty) rows.unpersist()
  }
}

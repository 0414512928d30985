package tally.spark

import java.nio.file.Files

import scala.util.Random

import org.apache.spark.sql.DataFrame
import org.apache.spark.sql.delta.DeltaLog

import tally.bridge.{Bridge, Spec}
import tally.online.{RedisServer, SqliteStore, Tile}
import tally.window.Ladder

/** One stream micro-batch through [[StreamJob.foldBatch]] on plain DataFrames: a small batch's tiles built on the
  * driver equal the shuffle's, in the store and in the Delta tile table; the table written on the driver is an
  * ordinary Delta table (read back by Spark, its properties, schema, commit tags and file statistics); a replayed
  * batch is skipped and commits nothing; a batch whose contract flags rows is counted and written nowhere, on both
  * builds. */
class StreamJobSuite extends munit.FunSuite {
  override val munitTimeout = scala.concurrent.duration.Duration(5, "min")
  private lazy val spark = LocalSpark.session
  private val M = 60L * 1000000L
  private val T0 = 1709251200000000L // 2024-03-01 00:00 UTC
  private val StampBase = 1L << 40

  private val specJson =
    s"""{"spec_version": ${Bridge.SpecVersion}, "view": "cards", "version": 2, "entity": {"keys": ["card"]},
       |"source": {"timestamp": "created", "available_at": "known"}, "ttl_us": ${3L * 1440 * M}, "features": [
       |{"name": "n_1h", "function": "count", "window": {"length_us": ${60 * M}, "delay_us": 0, "closed": "left", "hop_us": $M}, "default": 0},
       |{"name": "amount_24h", "function": "sum", "column": "amount", "window": {"length_us": ${1440 * M}, "delay_us": 0, "closed": "right", "hop_us": ${60 * M}}},
       |{"name": "distinct_merchants", "function": "approx_distinct", "column": "merchant", "window": {"length_us": ${1440 * M}, "delay_us": 0, "closed": "left", "hop_us": ${60 * M}}},
       |{"name": "n_all", "function": "count", "window": {"length_us": null, "delay_us": 0, "closed": "left"}}
       |]}""".stripMargin

  /** `n` events of 7 cards over two hours from `at`, with ties in time and events known later or never, read from
    * Parquet files at `dir` as a stream reads its Delta source's (a local relation would be collected without a job). */
  private def events(seed: Int, n: Int, at: Long, dir: java.nio.file.Path): DataFrame = {
    val r = new Random(seed)
    val rows = (0 until n).map { _ =>
      val ts = at + r.nextLong(120 * M) / 1000000L * 1000000L  // whole seconds: ties
      val known = if (r.nextInt(4) == 0) "NULL" else s"timestamp_micros(${ts + r.nextLong(90 * M)})"
      s"('c${r.nextInt(7)}', timestamp_micros($ts), $known, CAST(${r.nextInt(100000) / 100.0} AS DOUBLE), 'm${r.nextInt(30)}')"
    }
    val path = dir.resolve(s"batch$seed").toString
    if (!Files.exists(dir.resolve(s"batch$seed")))
      spark.sql(rows.mkString("SELECT * FROM VALUES ", ", ", " AS t(card, created, known, amount, merchant)"))
        .repartition(2).write.parquet(path)
    spark.read.parquet(path)
  }

  private def content(tiles: Seq[Tile]): Set[(String, Long, Long, Seq[Byte], Long)] =
    tiles.map(t => (t.key.encoded, t.startUs, t.lengthUs, t.payload.toSeq, t.stamp)).toSet

  private def jobs(group: String)(f: => StreamJob.Result): (StreamJob.Result, Int) = {
    val sc = spark.sparkContext
    sc.setJobGroup(group, group)
    try { val r = f; r -> sc.statusTracker.getJobIdsForGroup(group).length } finally sc.clearJobGroup()
  }

  test("a small batch built on the driver (one job) writes the shuffle's tiles to the store and the tile table; a replay is skipped") {
    val spec = Spec.parse(specJson)
    val dir = Files.createTempDirectory("tally-stream-job-")
    val (local, shuffled) = (SqliteStore(dir.resolve("local.db")), SqliteStore(dir.resolve("shuffled.db")))
    val (tableL, tableS) = (dir.resolve("tiles_local").toString, dir.resolve("tiles_shuffled").toString)
    val floor = Ladder.floor(T0, Ladder.Longest)
    try {
      for (batchId <- 0 until 3) {
        val batch = events(batchId, 1500, T0 + batchId * 60 * M, dir)
        val (l, lJobs) = jobs(s"local-$batchId")(
          StreamJob.foldBatch(batch, spec, local, tableL, "s", batchId, StampBase, floor, 4))
        val (s, sJobs) = jobs(s"shuffled-$batchId")(
          StreamJob.foldBatch(batch, spec, shuffled, tableS, "s", batchId, StampBase, floor, 4, localBuildBytes = -1))
        assertEquals(lJobs, 1, "a small batch is read once, by one job")
        assert(sJobs >= 2, s"the shuffled build ran $sJobs job(s)")
        assertEquals(l.copy(phasesMs = Nil), s.copy(phasesMs = Nil))
        assert(!l.skipped && l.events == 1500 && l.tiles > 100, l)
        val stamp = StampBase + batchId
        assertEquals(content(local.stamped("cards", 2, stamp)), content(shuffled.stamped("cards", 2, stamp)))
      }
      StreamJob.flush(tableL); StreamJob.flush(tableS)

      // The tile table, read by Spark: per batch, the store's tiles carrying its stamp (the last batch's are all still
      // there), one row each; the same rows whichever build made them.
      def rows(path: String) = spark.read.format("delta").load(path).collect().map { r =>
        (r.getString(0), r.getLong(2), r.getLong(1), r.getAs[Array[Byte]](3).toSeq, r.getLong(4), r.getLong(5))
      }.toSet
      val (fromL, fromS) = (rows(tableL), rows(tableS))
      assertEquals(fromL, fromS)
      assertEquals(fromL.filter(_._6 == 2L).map(r => (r._1, r._2, r._3, r._4, r._5)),
        content(local.stamped("cards", 2, StampBase + 2)))
      assertEquals(fromL.map(_._6), Set(0L, 1L, 2L))

      val log = DeltaLog.forTable(spark, tableL)
      val snapshot = log.update()
      assertEquals(snapshot.version, 2L, "one commit per batch")
      assertEquals(snapshot.metadata.configuration.get("delta.checkpointInterval"), Some("100"))
      assertEquals(snapshot.metadata.schema.map(f => f.name -> f.dataType), StreamJob.TileTableSchema.map(f => f.name -> f.dataType))
      assertEquals(StreamJob.tableBatch(spark, tableL, "s"), Some(2L))
      val files = snapshot.allFiles.collect()
      assertEquals(files.length, 3)
      assertEquals(files.map(f => """"numRecords":(\d+)""".r.findFirstMatchIn(f.stats).get.group(1).toLong).sum,
        fromL.size.toLong, "the files' statistics count the rows")
      assertEquals(spark.read.format("delta").load(tableL).where("batch_id = 1").count(), fromL.count(_._6 == 1L).toLong)

      // A replay of the last batch, which the store and the table hold: skipped, nothing committed.
      val again = StreamJob.foldBatch(events(2, 1500, T0 + 120 * M, dir), spec, local, tableL, "s", 2, StampBase, floor, 4)
      assert(again.skipped, again)
      StreamJob.flush(tableL)
      assertEquals(log.update().version, 2L)
    } finally { local.close(); shuffled.close(); RedisServer.delete(dir) }
  }

  test("a batch with rows its contract flags writes nothing, built on the driver or through the shuffle") {
    val spec = Spec.parse(specJson)
    val dir = Files.createTempDirectory("tally-stream-flags-")
    val store = SqliteStore(dir.resolve("tally.db"))
    val floor = Ladder.floor(T0, Ladder.Longest)
    try {
      val batch = events(5, 400, T0, dir).selectExpr("*", "amount > 900 AS __bad", "false AS __fine")
      val bad = batch.where("__bad").count()
      assert(bad > 0 && bad < 400, bad)
      for ((bytes, i) <- Seq(StreamJob.LocalBuildBytes, BigInt(-1)).zipWithIndex) {
        val table = dir.resolve(s"tiles$i").toString
        val r = StreamJob.foldBatch(batch, spec, store, table, "s", 0, StampBase, floor, 4, flags = Seq("__bad", "__fine"),
          localBuildBytes = bytes)
        StreamJob.flush(table)
        assertEquals((r.failing, r.events, r.tiles, r.applied), (Seq(bad, 0L), 400L, 0L, 0L))
        assertEquals(store.lastBatch("s"), None, "the store records nothing")
        assert(store.stamped("cards", 2, StampBase).isEmpty, "the store holds no tile of the batch")
        assert(!Files.exists(dir.resolve(s"tiles$i")), "no tile table")
      }
    } finally { store.close(); RedisServer.delete(dir) }
  }
}

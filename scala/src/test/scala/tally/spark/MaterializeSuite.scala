package tally.spark

import java.nio.file.Files

import scala.util.Random

import tally.bridge.{Bridge, Spec}
import tally.online.{EntityKey, FetchRow, Fetcher, RedisServer, SqliteStore}

/** The Spark tile job end to end: tiles built from a DataFrame and loaded into a real SQLite file give, through the
  * fetcher, the values the offline job (TemporalJob) gives for a spine of the same (key, at); a second run writes
  * the same tiles; the default start loads what requests at the newest event need. */
class MaterializeSuite extends munit.FunSuite {
  override val munitTimeout = scala.concurrent.duration.Duration(5, "min")
  private lazy val spark = LocalSpark.session
  private val M = 60L * 1000000L
  private val T0 = 1709251200000000L // 2024-03-01 00:00 UTC

  private val specJson =
    s"""{"spec_version": ${Bridge.SpecVersion}, "view": "cards", "version": 3, "entity": {"keys": ["card", "day"]},
       |"source": {"timestamp": "created", "available_at": "known"}, "ttl_us": ${40L * 60 * M}, "features": [
       |{"name": "n_1h", "function": "count", "window": {"length_us": ${60 * M}, "delay_us": 0, "closed": "left", "hop_us": $M}, "default": 0},
       |{"name": "amount_24h", "function": "sum", "column": "amount", "window": {"length_us": ${1440 * M}, "delay_us": 0, "closed": "right", "hop_us": ${60 * M}}},
       |{"name": "max_fee_2h", "function": "max", "column": "fee", "window": {"length_us": ${120 * M}, "delay_us": ${5 * M}, "closed": "left", "hop_us": ${5 * M}}},
       |{"name": "last_at", "function": "last", "column": "seen", "window": {"length_us": null, "delay_us": 0, "closed": "left"}},
       |{"name": "mean_amount_3d", "function": "mean", "column": "amount", "window": {"length_us": ${4320 * M}, "delay_us": 0, "closed": "left", "hop_us": ${1440 * M}}},
       |{"name": "distinct_merchants", "function": "approx_distinct", "column": "merchant", "window": {"length_us": ${1440 * M}, "delay_us": 0, "closed": "left", "hop_us": ${60 * M}}}
       |]}""".stripMargin

  test("tiles built by Spark, fetched, equal the offline job's training rows; a re-run writes the same tiles") {
    val r = new Random(11)
    val events = (0 until 3000).map { _ =>
      val ts = T0 + r.nextLong(3L * 1440 * M)
      val known = if (r.nextInt(4) == 0) "NULL" else s"timestamp_micros(${ts + r.nextLong(90 * M)})"
      s"('c${r.nextInt(6)}', DATE'2024-03-0${1 + r.nextInt(2)}', timestamp_micros($ts), $known, " +
        s"CAST(${r.nextInt(100000) / 100.0} AS DOUBLE), CAST(${r.nextInt(500)} AS DECIMAL(9,2)), 'm${r.nextInt(30)}', timestamp_micros(${ts - r.nextInt(1000)}))"
    }
    val source = spark.sql(events.mkString("SELECT * FROM VALUES ", ", ",
      " AS t(card, day, created, known, amount, fee, merchant, seen)"))
    source.cache()
    val spec = Spec.parse(specJson)
    val dir = Files.createTempDirectory("tally-materialize-")
    val store = SqliteStore(dir.resolve("tally.db"))
    try {
      val first = MaterializeJob.run(source, spec, specJson, store, Long.MinValue, 1L, 4)
      assertEquals(first.events, 3000L, "the view has a lifetime window: the default start loads everything")
      assertEquals(first.keys, 12L)
      assertEquals(first.applied, first.tiles)
      val again = MaterializeJob.run(source, spec, specJson, store, Long.MinValue, 1L, 4)
      assertEquals((again.tiles, again.applied), (first.tiles, 0L), "the same run id again applies nothing")
      val rerun = MaterializeJob.run(source, spec, specJson, store, Long.MinValue, 2L, 4)
      assertEquals((rerun.tiles, rerun.applied), (first.tiles, first.tiles), "a new run id rewrites the same tiles")

      // A spine of random (card, day, at): the offline job's rows against the fetcher's.
      val queries = (0 until 800).map(_ => (s"c${r.nextInt(6)}", 1 + r.nextInt(2), T0 - 60 * M + r.nextLong(4L * 1440 * M)))
      val compared = assertParity(source, spec, first.view, store, queries)
      assert(compared > 2000, s"only $compared non-null values compared")
    } finally { store.close(); source.unpersist(); RedisServer.delete(dir) }
  }

  /** Fetches (card, day of March 2024, at) for each query and compares every feature with the offline job's row
    * for the same spine row; returns how many non-null values were compared. */
  private def assertParity(source: org.apache.spark.sql.DataFrame, spec: tally.bridge.ViewSpec, view: tally.online.OnlineView,
                           store: SqliteStore, queries: Seq[(String, Int, Long)]): Int = {
    val spine = spark.sql(queries.map { case (c, d, t) => s"('$c', DATE'2024-03-0$d', timestamp_micros($t))" }
      .mkString("SELECT * FROM VALUES ", ", ", " AS s(card, day, at)"))
    val names = spec.features.map(_.name)
    val offline = TemporalJob.run(spine, source, spec, "at", "f_", 4).collect().map { row =>
      (row.getAs[String]("card"), row.getAs[java.sql.Date]("day").toLocalDate.getDayOfMonth, row.getAs[java.sql.Timestamp]("at")) ->
        names.map(n => row.getAs[Any](s"f_$n"))
    }
    val fetcher = new Fetcher(store, Seq(view))
    val got = fetcher.fetch(Seq(spec.view), offline.toIndexedSeq.map { case ((c, d, at), _) =>
      FetchRow(Map("card" -> c, "day" -> java.time.LocalDate.of(2024, 3, d)),
        Math.addExact(Math.multiplyExact(at.toInstant.getEpochSecond, 1000000L), at.toInstant.getNano / 1000L))
    })
    assertEquals(got.refs, names.map(s"${spec.view}:" + _).toIndexedSeq)
    var compared = 0
    offline.indices.foreach { i =>
      names.indices.foreach { f =>
        val (want, have) = (offline(i)._2(f), got.rows(i)(f))
        val same = (want, have) match {
          case (a: java.lang.Double, b: java.lang.Double) => math.abs(a - b) <= 1e-9 * math.max(1.0, math.abs(a))
          case (a: java.sql.Timestamp, b: java.lang.Long) => // the kernel's timestamp is microseconds
            Math.addExact(Math.multiplyExact(a.toInstant.getEpochSecond, 1000000L), a.toInstant.getNano / 1000L) == b.longValue
          case (a: java.math.BigDecimal, b: java.math.BigDecimal) => a.compareTo(b) == 0
          case (a, b) => a == b
        }
        assert(same, s"${offline(i)._1} ${names(f)}: offline $want, online $have")
        if (want != null) compared += 1
      }
    }
    compared
  }

  test("a lifetime window takes the history beyond the bounded windows' reach as 30-day tiles only, and still fetches the offline values") {
    val D = 1440 * M
    val r = new Random(5)
    val newest = T0 + 120 * D
    val events = (0 until 1500).map { i =>
      val ts = if (i == 0) newest else T0 + r.nextLong(120 * D)
      s"('c${r.nextInt(3)}', DATE'2024-03-01', timestamp_micros($ts), CAST(NULL AS TIMESTAMP), " +
        s"CAST(${r.nextInt(1000)} AS DOUBLE), CAST(1 AS DECIMAL(9,2)), 'm${r.nextInt(40)}', timestamp_micros($ts))"
    }
    val source = spark.sql(events.mkString("SELECT * FROM VALUES ", ", ", " AS t(card, day, created, known, amount, fee, merchant, seen)"))
    source.cache()
    val json = specJson.replace(s""""ttl_us": ${40L * 60 * M}, """, "")
      .replace("""{"name": "distinct_merchants", "function": "approx_distinct", "column": "merchant", "window": {"length_us": """ +
        s"""${1440 * M}, "delay_us": 0, "closed": "left", "hop_us": ${60 * M}}}""",
        """{"name": "distinct_merchants", "function": "approx_distinct", "column": "merchant", "window": {"length_us": null, "delay_us": 0, "closed": "left"}},""" +
        """{"name": "total", "function": "sum", "column": "amount", "window": {"length_us": null, "delay_us": 0, "closed": "right"}}""")
    val spec = Spec.parse(json)
    assert(spec.features.exists(_.name == "total") && spec.ttlUs.isEmpty, json)
    val dir = Files.createTempDirectory("tally-materialize-")
    val store = SqliteStore(dir.resolve("tally.db"))
    try {
      val result = MaterializeJob.run(source, spec, json, store, Long.MinValue, 1L, 3)
      val from = Math.floorDiv(newest - spec.boundedReachUs.get, 30 * D) * 30 * D
      assertEquals(result.fromUs, from)
      assertEquals(result.events, 1500L, "every event counts, the older ones in 30-day tiles")
      Seq("c0", "c1", "c2").foreach { c =>
        val tiles = store.read("cards", 3, Seq(EntityKey.of(c, java.time.LocalDate.of(2024, 3, 1))), Long.MinValue, Long.MaxValue).values.head
        assert(tiles.filter(_.startUs < from).forall(_.lengthUs == 30 * D), s"$c: a tile finer than 30 days before $from")
        assert(tiles.exists(t => t.startUs < from) && tiles.exists(t => t.startUs >= from && t.lengthUs < 30 * D), c)
      }
      // Requests at and after the newest event time, and a few days before it: the bounded windows are loaded.
      val queries = (0 until 300).map(_ => (s"c${r.nextInt(3)}", 1, newest - 2 * D + r.nextLong(3 * D)))
      assert(assertParity(source, spec, result.view, store, queries) > 1500)
    } finally { store.close(); source.unpersist(); RedisServer.delete(dir) }
  }

  test("an event with a null key fails the run with a message naming the view and key, and leaves no job running") {
    val rows = (0 until 400).map(i => s"(${if (i == 399) "NULL" else s"'c${i % 40}'"}, DATE'2024-03-01', timestamp_micros(${T0 + i * M}), " +
      "CAST(NULL AS TIMESTAMP), 1.0D, CAST(1 AS DECIMAL(9,2)), 'm', timestamp_micros(0))")
    val source = spark.sql(rows.mkString("SELECT * FROM VALUES ", ", ", " AS t(card, day, created, known, amount, fee, merchant, seen)"))
    val spec = Spec.parse(specJson)
    val dir = Files.createTempDirectory("tally-materialize-")
    val store = SqliteStore(dir.resolve("tally.db"))
    try {
      val e = intercept[Exception](MaterializeJob.run(source, spec, specJson, store, Long.MinValue, 1L, 4))
      val messages = Iterator.iterate[Throwable](e)(_.getCause).takeWhile(_ != null).map(_.getMessage).mkString(" / ")
      assert(messages.contains("view 'cards': an event has a null key 'card'"), messages)
      val tracker = spark.sparkContext.statusTracker
      val deadline = System.nanoTime() + 20L * 1000000000L
      while (tracker.getActiveJobIds().nonEmpty && System.nanoTime() < deadline) Thread.sleep(50)
      assertEquals(tracker.getActiveJobIds().toSeq, Nil, "the partitions computed ahead were cancelled")
      assertEquals(store.watermark("cards", 3), None, "a failed run raises no watermark")
    } finally { store.close(); RedisServer.delete(dir) }
  }

  test("the default start loads what requests at the newest event need, rounded down to whole 30-day tiles") {
    val hour = 60 * M
    val json = specJson.replace(""""length_us": null""", s""""length_us": ${2 * hour}, "hop_us": ${5 * M}""")
    val spec = Spec.parse(json)
    val newest = T0 + 200L * 1440 * M
    val source = spark.sql(s"SELECT 'c1' AS card, DATE'2024-03-01' AS day, timestamp_micros(t) AS created, " +
      s"CAST(NULL AS TIMESTAMP) AS known, 1.0D AS amount, CAST(1 AS DECIMAL(9,2)) AS fee, 'm' AS merchant, " +
      s"timestamp_micros(t) AS seen FROM VALUES ($T0), (${newest - 100L * 1440 * M}), ($newest) AS v(t)")
    val dir = Files.createTempDirectory("tally-materialize-")
    val store = SqliteStore(dir.resolve("tally.db"))
    try {
      val result = MaterializeJob.run(source, spec, json, store, Long.MinValue, 1L, 2)
      val reach = 4320 * M + 1440 * M // the 3-day mean with its 1-day hop: the longest reach
      assertEquals(result.fromUs, Math.floorDiv(newest - reach, 30L * 1440 * M) * 30L * 1440 * M)
      assertEquals(result.events, 1L, "only the newest event is within reach")
      assertEquals(result.watermarkUs, Some(newest))
      assertEquals(store.watermark("cards", 3), Some(newest))
      val older = MaterializeJob.run(source, spec, json, store, T0, 3L, 2)
      assertEquals(older.events, 3L, "--start loads older tiles too")
      assertEquals(store.read("cards", 3, Seq(EntityKey.of("c1", java.time.LocalDate.of(2024, 3, 1))), T0, T0 + 1)
        .values.head.map(_.lengthUs).sorted, Seq(M, 5 * M, 60 * M, 1440 * M, 30L * 1440 * M))
    } finally { store.close(); RedisServer.delete(dir) }
  }
}

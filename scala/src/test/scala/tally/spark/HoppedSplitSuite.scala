package tally.spark

import tally.bridge.{Bridge, Spec}
import tally.window.Window

/** Hopped windows through the Spark job, with a hot key swept in time buckets: a bucket's queries need the events
  * back to floor_hop(t-d-w), up to one hop more than the window, so the events copied into the next bucket must
  * cover the hop too. */
class HoppedSplitSuite extends munit.FunSuite {
  override val munitTimeout = scala.concurrent.duration.Duration(5, "min")
  private val Minute = 60L * 1000000L
  private lazy val spark = LocalSpark.session

  test("a hot key split into buckets gives the brute-force features of a hopped window (the overlap includes the hop)") {
    val (length, hop) = (60 * Minute, 7 * Minute) // a hop that divides neither the window nor the buckets
    val start = 1709251200000000L                 // 2024-03-01 00:00 UTC
    // Card "hot": one charge a minute for two days; a few other cards: one charge an hour.
    val rows = (0 until 2880).map(i => ("hot", start + i * Minute + (i % 3) * 1000L)) ++
      (0 until 48).flatMap(h => Seq("c1", "c2").map(c => (c, start + h * 60 * Minute + 17)))
    val source = spark.sql(rows.map { case (c, t) => s"('$c', timestamp_micros($t))" }
      .mkString("SELECT * FROM VALUES ", ", ", " AS t(card, created)"))
    val spec = Spec.parse(
      s"""{"spec_version": ${Bridge.SpecVersion}, "view": "hopped", "version": 1, "entity": {"keys": ["card"]},
         |"source": {"timestamp": "created"}, "features": [
         |{"name": "n_1h", "function": "count", "window": {"length_us": $length, "delay_us": 0, "closed": "left", "hop_us": $hop}}]}""".stripMargin)
    val expected = rows.map { case (c, t) =>
      (c, t) -> rows.count { case (c2, ts) => c2 == c && Window.floorHop(t - length, hop) <= ts && ts < t }.toLong
    }.toMap
    for (mode <- Seq("off", "always")) {
      spark.conf.set(HotKeys.ModeConf, mode); spark.conf.set(HotKeys.SampleConf, "1.0")
      try {
        if (mode == "always") assertEquals(TemporalJob.hotKeys(source, spec, 4).map(_.values), Seq(Seq("hot")))
        val got = TemporalJob.run(source, source, spec, "created", "f_", 4)
          .selectExpr("card", "unix_micros(created)", "f_n_1h").collect()
          .map(r => (r.getString(0), r.getLong(1)) -> r.getLong(2)).toMap
        assertEquals(got.size, rows.size, s"split $mode: one row per spine row")
        val wrong = expected.filter { case (k, n) => got(k) != n }.toSeq.sortBy(_._1._2)
        assert(wrong.isEmpty, s"split $mode: ${wrong.size} rows differ from brute force, e.g. " +
          wrong.take(3).map { case (k, n) => s"$k: got ${got(k)}, expected $n" }.mkString("; "))
      } finally { spark.conf.unset(HotKeys.ModeConf); spark.conf.unset(HotKeys.SampleConf) }
    }
  }
}

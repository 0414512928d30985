package tally.spark

import java.time.{Instant, LocalDate, ZoneOffset}
import java.time.format.DateTimeFormatter
import java.util.TimeZone

import org.apache.spark.sql.DataFrame

import tally.agg.{Aggregators, VType}
import tally.bridge.{Bridge, FeatureSpec, ViewSpec}

/** UTC everywhere (DESIGN.md, "Time semantics"): the same inputs give the same features whatever the JVM's default
  * zone and whatever `spark.sql.session.timeZone` say. A `date` column means 00:00 UTC of its day; a
  * `timestamp_ntz` is its wall time read as UTC; a `timestamp` is its instant.
  *
  * Every case runs with the JVM's default zone west of UTC (New York, on its spring-forward day, so an NTZ wall
  * time of 02:30 does not exist there), east (Tokyo) and at a half-hour offset (Kolkata), each with the session
  * zone unset (it then follows the JVM's) and set to a third zone (St John's, -2:30 that day). Inputs are built
  * only from zone-free literals; the expected values come from a brute force over UTC microseconds. */
class UtcSuite extends munit.FunSuite {
  private val Hour = 3600L * 1000000L
  private val Day = 24 * Hour
  private val SessionZone = "spark.sql.session.timeZone"
  private val jvmZones = Seq("America/New_York", "Asia/Tokyo", "Asia/Kolkata")
  private val sessionZones = Seq(None, Some("America/St_Johns"))
  private lazy val spark = LocalSpark.session
  override val munitTimeout = scala.concurrent.duration.Duration(5, "min") // a few dozen small Spark jobs per test

  // The session starts in the JVM's own zone. No hot-key sampling job before each sweep (the hot-key test turns
  // the split on).
  override def beforeAll(): Unit = spark.conf.set(HotKeys.ModeConf, "off")
  override def afterAll(): Unit = spark.conf.unset(HotKeys.ModeConf)

  /** Runs `body` once per (JVM zone, session zone), restoring both after. */
  private def inEveryZone(body: String => Unit): Unit =
    for (jvm <- jvmZones; session <- sessionZones) {
      val saved = TimeZone.getDefault
      TimeZone.setDefault(TimeZone.getTimeZone(jvm))
      session.foreach(spark.conf.set(SessionZone, _))
      try body(s"JVM zone $jvm, session zone ${session.getOrElse("unset")}")
      finally { spark.conf.unset(SessionZone); TimeZone.setDefault(saved) }
    }

  // ---- zone-free inputs ----

  private def at(text: String): Instant = Instant.parse(text)
  private def micros(i: Instant): Long = Math.addExact(Math.multiplyExact(i.getEpochSecond, 1000000L), i.getNano / 1000L)
  private def day(i: Instant): LocalDate = LocalDate.ofInstant(i, ZoneOffset.UTC)
  private def midnight(i: Instant): Long = day(i).toEpochDay * Day
  private val wall = DateTimeFormatter.ofPattern("yyyy-MM-dd HH:mm:ss.SSSSSS").withZone(ZoneOffset.UTC)
  /** SQL literals of one instant that no zone setting changes. */
  private def tsSql(i: Instant) = s"timestamp_micros(${micros(i)})"
  private def ntzSql(i: Instant) = s"TIMESTAMP_NTZ '${wall.format(i)}'"
  private def dateSql(i: Instant) = s"DATE '${day(i)}'"

  final case class Ev(at: Instant, amount: Long, known: Option[Instant])
  // Around the midnight of 2024-03-10 UTC and New York's DST gap (02:00-03:00 local = 07:00-08:00 UTC).
  private val events = Seq(
    Ev(at("2024-03-09T23:30:00Z"), 1L, None),
    Ev(at("2024-03-10T00:00:00Z"), 10L, None),
    Ev(at("2024-03-10T02:30:00Z"), 100L, Some(at("2024-03-10T05:00:00Z"))), // its label is known at 05:00 UTC
    Ev(at("2024-03-10T07:30:00.000001Z"), 1000L, None),
    Ev(at("2024-03-11T00:00:00Z"), 10000L, None))
  private val queries = Seq("2024-03-10T00:00:00Z", "2024-03-10T02:30:00Z", "2024-03-10T05:00:00Z",
    "2024-03-10T07:30:00.000001Z", "2024-03-10T23:59:59.999999Z", "2024-03-11T00:00:00Z", "2024-03-12T00:00:00Z").map(at)
  private val batch = at("2024-03-10T07:30:00Z") // a timestamp-typed key shared by the events of 2024-03-10

  private def source(): DataFrame = spark.sql(events.map { e =>
    val b = if (day(e.at) == day(batch)) batch else e.at
    s"('c1', ${tsSql(e.at)}, ${ntzSql(e.at)}, ${dateSql(e.at)}, ${e.amount}L, " +
      s"${e.known.map(ntzSql).getOrElse("CAST(NULL AS TIMESTAMP_NTZ)")}, ${tsSql(b)})"
  }.mkString("SELECT * FROM VALUES ", ", ", " AS t(card, ts, ts_ntz, day, amount, known, batch)"))

  private def spine(): DataFrame = spark.sql(queries.zipWithIndex.map { case (q, i) =>
    s"('c1', $i, ${tsSql(q)}, ${ntzSql(q)}, ${dateSql(q)})"
  }.mkString("SELECT * FROM VALUES ", ", ", " AS s(card, qid, at_ts, at_ntz, at_day)"))

  // ---- the temporal job ----

  private def feature(name: String, function: String, column: Option[String], length: Option[Long], closed: String = "left") =
    FeatureSpec(name, function, column, length, 0L, closed, 0L, Map.empty, None)
  private def view(time: String) = ViewSpec("utc", 1, Seq("card"), time, Some("known"), None, Seq(
    feature("n_1h", "count", None, Some(Hour)),
    feature("n_1h_right", "count", None, Some(Hour), closed = "right"),
    feature("n_1d", "count", None, Some(Day)),
    feature("sum_life", "sum", Some("amount"), None),
    feature("last_amount", "last", Some("amount"), None),
    feature("since", "time_since_last", None, None)))

  /** The features by brute force, over UTC microseconds. */
  private def expected(eventTime: Instant => Long, t: Long): Seq[Any] = {
    val evs = events.map(e => (eventTime(e.at), e.amount, e.known.map(micros).getOrElse(Long.MinValue)))
    def left(w: Long) = evs.filter { case (ts, _, avail) => ts >= t - w && ts < t && avail < t }
    val right1h = evs.filter { case (ts, _, avail) => ts > t - Hour && ts <= t && avail <= t }
    val life = evs.filter { case (ts, _, avail) => ts < t && avail < t }
    Seq(left(Hour).size.toLong, right1h.size.toLong, left(Day).size.toLong, life.map(_._2).sum,
      if (life.isEmpty) null else life.maxBy(e => (e._1, e._2))._2,
      if (life.isEmpty) null else (t - life.map(_._1).max).toDouble / 1e6)
  }

  private val timeOf: Map[String, Instant => Long] =
    Map("ts" -> micros, "ts_ntz" -> micros, "day" -> midnight, "at_ts" -> micros, "at_ntz" -> micros, "at_day" -> midnight)

  test("the sweep reads timestamp, timestamp_ntz and date columns as UTC, whatever the JVM's and the session's zone") {
    val combos = Seq("ts" -> "at_ntz", "ts_ntz" -> "at_day", "day" -> "at_ts")
    inEveryZone { zones =>
      for ((sourceTime, spineTime) <- combos) {
        val out = TemporalJob.run(spine(), source(), view(sourceTime), spineTime, "f_", 2)
        val got = out.select("qid", "f_n_1h", "f_n_1h_right", "f_n_1d", "f_sum_life", "f_last_amount", "f_since")
          .collect().map(r => r.getInt(0) -> r.toSeq.tail).toMap
        for ((q, i) <- queries.zipWithIndex) {
          val want = expected(timeOf(sourceTime), timeOf(spineTime)(q))
          assertEquals(got(i), want, s"$zones; source time '$sourceTime', spine time '$spineTime', query at $q")
        }
      }
    }
  }

  test("the as-of join reads date, timestamp and timestamp_ntz times as UTC, whatever the zones") {
    val rows = Seq(at("2024-03-09T00:00:00Z") -> 1L, at("2024-03-10T00:00:00Z") -> 2L, at("2024-03-10T02:30:00Z") -> 3L,
      at("2024-03-10T07:30:00.000001Z") -> 4L)
    inEveryZone { zones =>
      val right = spark.sql(rows.map { case (t, v) => s"('c1', ${tsSql(t)}, ${ntzSql(t)}, ${v}L)" }
        .mkString("SELECT * FROM VALUES ", ", ", " AS r(card, t_ts, t_ntz, v)"))
      for ((spineTime, rightTime) <- Seq("at_ts" -> "t_ntz", "at_day" -> "t_ts", "at_ntz" -> "t_ts")) {
        val got = AsOfJob.run(spine(), spineTime, right, rightTime, Seq("card"), Seq("v"), "f_", 0L, 2)
          .select("qid", "f_v").collect().map(r => r.getInt(0) -> r.get(1)).toMap
        for ((q, i) <- queries.zipWithIndex) {
          val t = timeOf(spineTime)(q)
          val want: Any = rows.filter(r => micros(r._1) <= t).lastOption.map(_._2).getOrElse(null)
          assertEquals(got(i), want, s"$zones; spine time '$spineTime', right time '$rightTime', query at $q")
        }
      }
    }
  }

  test("tally_* SQL functions read timestamp_ntz event times as UTC, whatever the zones") {
    val last = events.last
    val asOf = at("2024-03-12T00:00:00Z")
    inEveryZone { zones =>
      source().createOrReplaceTempView("utc_source")
      val r = spark.sql(s"""SELECT tally_last(amount, ts_ntz), tally_time_since_last(ts_ntz, ${tsSql(asOf)}),
        unix_micros(tally_max(ts_ntz)), unix_micros(tally_max(ts)) FROM utc_source GROUP BY card""").collect().head
      assertEquals(r.toSeq, Seq[Any](last.amount, (micros(asOf) - micros(last.at)).toDouble / 1e6, micros(last.at), micros(last.at)), zones)
    }
  }

  test("hot keys of date and timestamp type are named the same whatever the zones, and the split answers right") {
    def spec(key: String) =
      s"""{"spec_version": ${Bridge.SpecVersion}, "view": "utc", "version": 1, "entity": {"keys": ["$key"]},
         |"source": {"timestamp": "ts"}, "features": [{"name": "n", "function": "count", "window": {"length_us": ${3 * Hour}}}]}""".stripMargin
    def keysOf(json: String) = "\"key\":\\[[^\\]]*\\]".r.findAllIn(json).toList
    inEveryZone { zones =>
      spark.conf.set(HotKeys.ModeConf, "always"); spark.conf.set(HotKeys.SampleConf, "1.0")
      try {
        assertEquals(keysOf(Bridge.hotKeys(source(), spec("day"), 4)), List("\"key\":[\"2024-03-10\"]"), zones)
        assertEquals(keysOf(Bridge.hotKeys(source(), spec("batch"), 4)), List("\"key\":[\"2024-03-10T07:30:00Z\"]"), zones)
        // Swept in buckets, the charge at 02:30 still sees the one at 00:00 (copied into its bucket).
        val n = TemporalJob.run(source(), source(), tally.bridge.Spec.parse(spec("day")), "ts", "f_", 4)
          .where("amount = 100").select("f_n").collect().head.getLong(0)
        assertEquals(n, 1L, zones)
      } finally { spark.conf.set(HotKeys.ModeConf, "off"); spark.conf.unset(HotKeys.SampleConf) }
    }
  }

  test("kernels are zone-free: top_k names timestamps in UTC, time_since_last counts microseconds") {
    inEveryZone { zones =>
      val top = Aggregators.build("top_k", VType.Timestamp, Map("k" -> 2))
      val s = events.foldLeft(top.zero())((s, e) => top.update(s, micros(e.at), micros(e.at)))
      assertEquals(top.finish(s, 0L).asInstanceOf[Seq[Seq[Any]]].map(_.head),
        Seq("2024-03-09T23:30:00Z", "2024-03-10T00:00:00Z"), zones)
    }
  }
}

package tally.online

import java.nio.file.{Files, Path}

import scala.util.Random

import tally.agg.{Aggregators, Catalogue, VType}
import tally.bridge.{FeatureSpec, ViewSpec}
import tally.window.{Feature, Ladder, Sweep, Window}

/** The parity contract at its source: tiles built by [[TileBuilder]], stored in a real SQLite file and merged by
  * the [[Fetcher]] give, for every (function, input type) the registry allows, the values the offline sweep gives
  * for the same (key, at) — over hopped windows whose hops are on the ladder or not, exact windows, delays,
  * closed="right", lifetime windows, a ttl, and `available_at` — at random microseconds, event times and hop
  * boundaries. Sketches are sized to stay exact (as in SweepOracleSuite); doubles may differ by rounding only, since
  * the sweep adds and removes while the fetcher merges tiles: the largest relative difference is reported. */
class FetchParitySuite extends munit.FunSuite {
  override val munitTimeout = scala.concurrent.duration.Duration(5, "min")
  private var dir: Path = _
  override def beforeAll(): Unit = dir = Files.createTempDirectory("tally-parity-")
  override def afterAll(): Unit = RedisServer.delete(dir)

  val M: Long = 60L * 1000000L
  val H: Long = 60L * M
  val D: Long = 24L * H
  val T0: Long = 1709251200L * 1000000L // 2024-03-01 00:00 UTC
  val windows: Seq[(Window, String)] = Seq(
    Window(H, 0L, rightClosed = false, hop = M) -> "1h hop 1m",
    Window(26 * H, 10 * M, rightClosed = false, hop = H) -> "26h delay 10m hop 1h",
    Window(2 * D, 0L, rightClosed = true, hop = D) -> "2d right hop 1d",
    Window(90 * M, 0L, rightClosed = false, hop = 90L * 1000000L) -> "90m hop 90s",
    Window(30 * M + 7, 3L, rightClosed = true) -> "exact 30m+7us delay 3us right",
    Window(Window.Lifetime, 0L, rightClosed = false) -> "lifetime")

  val pairs: Seq[(String, VType)] =
    for (fn <- Aggregators.functions; vt <- VType.scalars if Aggregators.takes(fn, vt)) yield (fn, vt)
  val overrides: Map[String, Map[String, Any]] = Map(
    "approx_distinct" -> Map("lg_k" -> 14), "approx_percentile" -> Map("k" -> 2000), "top_k" -> Map("k" -> 40),
    "decayed_sum" -> Map("half_life_us" -> 3 * H), "decayed_count" -> Map("half_life_us" -> 3 * H))
  /** Past the exact regimes: HLL in HLL mode from 12 distinct values, quantiles in buckets from 9 values. */
  val small: Map[String, Map[String, Any]] = Map(
    "approx_distinct" -> Map("lg_k" -> 4), "approx_percentile" -> Map("k" -> 8), "top_k" -> Map("k" -> 1))
  def params(fn: String, sizes: Map[String, Map[String, Any]] = overrides): Map[String, Any] =
    Catalogue.cases.find(_.function == fn).map(_.params).getOrElse(Map.empty) ++ overrides.getOrElse(fn, Map.empty) ++
      sizes.getOrElse(fn, Map.empty)
  def gen(vt: VType): Random => AnyRef = Catalogue.scalar(vt)
  def typeName(vt: VType): String = vt match { case VType.Decimal(p, s) => s"decimal($p,$s)"; case t => TypeNames.name(t) }

  /** 0 for equal values; for doubles (also inside arrays), their difference relative to the larger magnitude, or to
    * 1.0 below it: the sweep's compensated running sums keep an absolute error of about eps times the largest value
    * that passed through the window, so a window whose values cancel to ~0 may read -3e-11 or 0.0 offline and
    * 0.0 or 1e-300 online (the fresh merge is the more exact one). Anything else that differs: infinity. */
  def diff(a: Any, b: Any): Double = (a, b) match {
    case (null, null) => 0.0
    case (x: java.lang.Double, y: java.lang.Double) =>
      if (x.equals(y) || (x.isNaN && y.isNaN)) 0.0
      else if (x.isInfinite || y.isInfinite) Double.PositiveInfinity
      else math.abs(x - y) / math.max(1.0, math.max(math.abs(x), math.abs(y)))
    case (x: Seq[_], y: Seq[_]) if x.length == y.length => x.zip(y).map { case (p, q) => diff(p, q) }.foldLeft(0.0)(math.max)
    case (x: java.math.BigDecimal, y: java.math.BigDecimal) => if (x == y) 0.0 else Double.PositiveInfinity
    case (x, y) => if (x == y) 0.0 else Double.PositiveInfinity
  }

  var worst = 0.0
  var viewN = 0

  def check(fn: String, vt: VType, withAvail: Boolean, ttl: Option[Long], seed: Long, store: OnlineStore,
      sizes: Map[String, Map[String, Any]] = overrides, grid: Long = M): Int = {
    viewN += 1
    val view = s"parity_$viewN"
    val r = new Random(seed)
    val featSpecs = windows.zipWithIndex.map { case ((w, _), i) =>
      FeatureSpec(s"f$i", fn, Some("v"), if (w.lifetime) None else Some(w.length), w.delay, if (w.rightClosed) "right" else "left",
        w.hop, params(fn, sizes), if (fn == "count" && i == 0) Some(-1L) else None)
    }
    val spec = ViewSpec(view, 1, Seq("k"), "ts", if (withAvail) Some("avail") else None, ttl, featSpecs)
    val specJson = s"""{"spec_version":1,"view":"$view","version":1,"entity":{"keys":["k"]},"source":{"timestamp":"ts"${
      if (withAvail) ""","available_at":"avail"""" else ""}},"ttl_us":${ttl.getOrElse("null")},"features":[${
      featSpecs.map { f => s"""{"name":"${f.name}","function":"$fn","column":"v","window":{"length_us":${f.lengthUs.getOrElse("null")},"delay_us":${f.delayUs},"closed":"${f.closed}"${
        if (f.hopUs > 0) s""","hop_us":${f.hopUs}""" else ""}},"params":${jsonOf(params(fn, sizes))},"default":${f.default.getOrElse("null")}}""" }.mkString(",")}]}"""
    val online = OnlineView(tally.bridge.Spec.parse(specJson), specJson, Map("k" -> "string"), Map("v" -> typeName(vt)),
      firstUs = Some(T0)) // every event is at or after T0: where lifetime windows start
    assertEquals(online.spec, spec)
    val layout = online.layout
    val agg = layout.kernels.head._1
    val features = windows.zipWithIndex.map { case ((w, _), i) => Feature(s"f$i", agg, 0, w, online.defaults(i)) }.toIndexedSeq
    val builder = new TileBuilder(layout, view, 1, stamp = 1L)
    val fetcher = new Fetcher(store, Seq(online))
    var compared = 0
    for (key <- Seq("a", "b{,}")) {
      // Events over three days, bursty (ties on a coarse grid), some values null, availability late by up to 5 h.
      val events = (0 until 250).map { _ =>
        val ts = T0 + (if (r.nextInt(4) == 0) r.nextLong(3 * D) / grid * grid else r.nextLong(3 * D))
        val avail = if (!withAvail || r.nextInt(5) == 0) Long.MinValue else ts + (if (r.nextBoolean()) 0L else r.nextLong(5 * H))
        (ts, avail, Array[Any](if (r.nextInt(12) == 0) null else gen(vt)(r)))
      }.sortBy(_._1)
      builder.key(EntityKey.of(key))
      // Spark fixes no order among equal times: the tiles see the ties in another order than the sweep.
      r.shuffle(events).sortBy(_._1).foreach { case (ts, a, v) => builder.event(ts, a, v) }
      builder.finish()
      store.write(builder.tiles())
      val queries = ((0 until 150).map(_ => T0 - H + r.nextLong(4 * D)) ++ events.take(20).map(_._1) ++
        r.shuffle(events.map(_._2).filter(_ != Long.MinValue)).take(20) ++ // at an availability: strict or not
        (0 until 10).map(_ => T0 + r.nextLong(3 * D) / M * M) ++ (0 until 10).map(_ => T0 + r.nextLong(3) * D)).sorted
      // The offline sweep: events before queries at equal times.
      val sweep = new Sweep(view, features, ttl, withAvail)
      sweep.reset(key)
      val expected = new Array[Array[Any]](queries.length)
      val sumSq = new Array[Double](queries.length) // of every value the sweep has seen by then: its error scale
      var e = 0
      var sq = 0.0
      queries.zipWithIndex.foreach { case (t, qi) =>
        while (e < events.length && events(e)._1 <= t) {
          sweep.event(events(e)._1, events(e)._2, events(e)._3)
          events(e)._3(0) match { case n: java.lang.Number => sq += n.doubleValue * n.doubleValue
            case b: java.lang.Boolean => if (b) sq += 1.0; case _ => }
          e += 1
        }
        val out = new Array[Any](features.length); sweep.query(t, out); expected(qi) = out; sumSq(qi) = sq
      }
      val got = fetcher.fetch(Seq(view), queries.map(t => FetchRow(Map("k" -> key), t)))
      queries.indices.foreach { qi =>
        features.indices.foreach { f =>
          // Variance and stddev: the sweep's running Welford state carries an absolute error of about
          // eps * sum(x^2) once large values have passed (Moments.scala; SweepOracleSuite allows the same).
          val (a, b) = (expected(qi)(f), got.rows(qi)(f))
          val d = (a, b) match {
            case (x: java.lang.Double, y: java.lang.Double) if fn.startsWith("variance") || fn.startsWith("stddev") =>
              val slack = if (fn.startsWith("variance")) 1e-12 * sumSq(qi) else math.sqrt(1e-12 * sumSq(qi))
              if (math.abs(x - y) <= slack) 0.0 else diff(x, y)
            case _ => diff(a, b)
          }
          worst = math.max(worst, d)
          assert(d <= 1e-9, s"$fn($vt) ${windows(f)._2}${if (withAvail) " available_at" else ""}${ttl.fold("")(_ => " ttl")}, key $key, " +
            s"at ${queries(qi)}: offline ${show(expected(qi)(f))}, online ${show(got.rows(qi)(f))}")
          compared += 1
        }
      }
    }
    compared
  }

  def show(v: Any): String = v match { case s: Seq[_] => s.map(show).mkString("[", ", ", "]"); case null => "null"; case x => s"$x (${x.getClass.getSimpleName})" }
  def jsonOf(p: Map[String, Any]): String = p.map {
    case (k, v: Seq[_]) => s""""$k":${v.mkString("[", ",", "]")}"""
    case (k, v)         => s""""$k":$v"""
  }.mkString("{", ",", "}")

  test("fetched values equal the offline sweep for every function, window shape, ttl and available_at") {
    val store = SqliteStore(dir.resolve("tally.db"))
    try {
      var n = 0
      pairs.zipWithIndex.foreach { case ((fn, vt), i) =>
        n += check(fn, vt, withAvail = false, ttl = None, seed = i, store)
        n += check(fn, vt, withAvail = true, ttl = if (i % 2 == 0) Some(6 * H) else None, seed = 1000 + i, store)
      }
      println(f"FetchParitySuite: $n%d values compared over ${pairs.size}%d (function, type) pairs; largest relative difference $worst%.3g")
      assert(n > pairs.size * 2 * 2 * 150)
    } finally store.close()
  }

  test("sketches past their exact regimes: the same estimates online and offline") {
    val store = SqliteStore(dir.resolve("sketches.db"))
    try {
      var n = 0
      for (((fn, vt), i) <- pairs.filter(p => small.contains(p._1)).zipWithIndex) {
        // many ties: a quarter of the events on 72 hour marks
        n += check(fn, vt, withAvail = false, ttl = None, seed = 500 + i, store, small, grid = H)
        n += check(fn, vt, withAvail = true, ttl = None, seed = 1500 + i, store, small, grid = H)
      }
      println(s"FetchParitySuite: $n sketch values compared past the exact regimes")
    } finally store.close()
  }

  test("the ladder cuts a span into contiguous, aligned pieces, few for long windows") {
    val r = new Random(7)
    (0 until 2000).foreach { _ =>
      val from = T0 + r.nextLong(60 * D) - 30 * D
      val to = from + (if (r.nextBoolean()) r.nextLong(40 * D) else r.nextLong(2 * H))
      val pieces = Ladder.cut(from, to)
      var pos = from
      pieces.foreach {
        case Ladder.Whole(s, l) => assertEquals(s, pos); assertEquals(Math.floorMod(s, l), 0L); pos = s + l
        case Ladder.Events(s, lo, hi) =>
          assertEquals(lo, pos); assertEquals(Math.floorMod(s, Ladder.RawUs), 0L); assert(lo >= s && hi <= s + Ladder.RawUs && lo < hi); pos = hi
      }
      assertEquals(pos, math.max(from, to))
    }
    // A 30-day window with a 1-day hop, ending anywhere: at most 30 day tiles, 23 hour tiles, 11 five-minute tiles and
    // 5 raw minutes.
    (0 until 500).foreach { _ =>
      val end = T0 + r.nextLong(10 * D)
      val pieces = Ladder.cut(Ladder.floor(end - 30 * D, D), end)
      assert(pieces.count(_.isInstanceOf[Ladder.Whole]) <= 30 + 23 + 11, pieces)
      assert(pieces.count(_.isInstanceOf[Ladder.Events]) <= 5, pieces)
    }
  }
}

package tally.window

import scala.collection.mutable
import scala.util.{Failure, Random, Try}

import tally.agg.{Aggregator, Aggregators, Catalogue, Num, VType}

/** The sweep against a brute-force oracle on seeded random cases, for every (function, input type) the registry
  * allows.
  *
  * [[NaiveEngine]] restates DESIGN.md's time semantics as written (not the sweep's enter/exit form) and folds
  * each query's window from zero, in time order. Cases mix hot keys, ties (a coarse time grid, queries at event
  * times, hop boundaries on event times), every window shape (exact and hopped, with hops that divide the length
  * or not), `available_at`, ttl, null values and defaults.
  *
  * Coverage cannot silently shrink: the pairs come from the registry (`Aggregators.functions` x `VType.scalars`,
  * kept where `Aggregators.takes`), a pair that does not build fails the suite by name, and every pair must have
  * been compared, with non-empty results, over exact, hopped and lifetime windows, with and without
  * `available_at`.
  */
class SweepOracleSuite extends munit.FunSuite {
  override val munitTimeout = scala.concurrent.duration.Duration(5, "min") // ~20 s alone; far more on a busy machine
  val pairs: Seq[(String, VType)] =
    for (fn <- Aggregators.functions; vt <- VType.scalars if Aggregators.takes(fn, vt)) yield (fn, vt)

  /** Parameters: the law suite's ([[Catalogue]]), with sketches sized to stay exact here (a window holds at most
    * ~450 events), so that no result depends on the order of updates, and decayed half-lives on these cases' time
    * scale (microseconds). */
  val overrides: Map[String, Map[String, Any]] = Map(
    "approx_distinct" -> Map("lg_k" -> 14),     // set mode (exact, order-free) up to 1536 distinct values
    "approx_percentile" -> Map("k" -> 2000),    // no compaction below ~2000 values
    "top_k" -> Map("k" -> 40),                  // 1024 map slots: exact counts below 768 distinct items
    "decayed_sum" -> Map("half_life_us" -> 100L),
    "decayed_count" -> Map("half_life_us" -> 100L))
  def params(fn: String): Map[String, Any] =
    Catalogue.cases.find(_.function == fn).map(_.params).getOrElse(Map.empty) ++ overrides.getOrElse(fn, Map.empty)

  /** How far the sweep may be from a fresh fold of the window, for a result of function `fn` whose window values
    * have sum of squares `sumSq`: relative, plus absolute. Sums are compensated (1e-9 relative). Variance and
    * stddev take values out of a running Welford state, whose m2 then carries an absolute error of about
    * eps * n * max(x^2) (see Moments.scala): ~1e-8 relative on these heavy-tailed values, and all of the result on
    * a near-constant window, where stddev's square root magnifies it to ~sqrt(eps * sumSq). */
  def allowed(fn: String, sumSq: Double): (Double, Double) = fn match {
    case "variance" | "variance_pop" => (1e-6, 1e-12 * sumSq)
    case "stddev" | "stddev_pop"     => (1e-6, math.sqrt(1e-12 * sumSq))
    case _                           => (1e-9, 0.0)
  }

  private def label(fn: String, vt: VType) = s"$fn($vt)"
  private lazy val built: Seq[(String, VType, Try[Aggregator[AnyRef]])] =
    pairs.map { case (fn, vt) => (fn, vt, Try(Aggregators.build(fn, vt, params(fn)))) }

  test("the oracle covers every registered function, on every input type it takes, and each builds") {
    val noCase = Aggregators.functions.filterNot(fn => Catalogue.cases.exists(_.function == fn))
    assert(noCase.isEmpty, s"registered functions with no Catalogue case (no laws, no parameters): ${noCase.mkString(", ")}")
    val noType = Aggregators.functions.filterNot(fn => pairs.exists(_._1 == fn))
    assert(noType.isEmpty, s"registered functions that take none of VType.scalars: ${noType.mkString(", ")}")
    val broken = built.collect { case (fn, vt, Failure(e)) => s"${label(fn, vt)}: ${e.getMessage}" }
    assert(broken.isEmpty, s"pairs Aggregators.takes allows that do not build: ${broken.mkString("; ")}")
  }

  /** Brute force: every query scans every event of its key. */
  object NaiveEngine {
    final case class Ev(ts: Long, avail: Long, values: Array[Any])

    /** DESIGN.md's lines, as written: visible (avail < t, or <= t right-closed), before the end (ts < t-d, or
      * <= t-d), after the start (t-d-w <= ts, or < right-closed; floor_hop(t-d-w) <= ts for a hopped window,
      * either way; none for a lifetime window). */
    def inside(e: Ev, w: Window, t: Long): Boolean = {
      val end = t - w.delay
      val visible = if (w.rightClosed) e.avail <= t else e.avail < t
      val beforeEnd = if (w.rightClosed) e.ts <= end else e.ts < end
      val afterStart = w.lifetime || {
        val start = end - w.length
        if (w.hop > 0) Math.floorDiv(start, w.hop) * w.hop <= e.ts
        else if (w.rightClosed) start < e.ts else start <= e.ts
      }
      visible && beforeEnd && afterStart
    }

    /** Each feature's value at t, and the sum of squares of the numeric values it folded (for tolerances). */
    def query(events: Seq[Ev], features: IndexedSeq[Feature], ttl: Option[Long], t: Long): IndexedSeq[(Any, Double)] = {
      val alive = ttl.forall(l => events.exists(e => inside(e, Window(l, 0L, rightClosed = false), t)))
      features.map { f =>
        if (!alive) (null, 0.0)
        else {
          var s = f.agg.zero()
          var sumSq = 0.0
          for (e <- events if inside(e, f.window, t)) {
            val v = if (f.column < 0) java.lang.Boolean.TRUE else e.values(f.column)
            if (v != null) {
              s = f.agg.update(s, v, e.ts)
              v match { case _: java.lang.Number | _: java.lang.Boolean => sumSq += math.pow(Num.double(v), 2); case _ => }
            }
          }
          val r = f.agg.finish(s, t)
          (if (r == null) f.default else r, sumSq)
        }
      }
    }
  }

  // ---- random cases ----

  private val Grid = 10L // coarse time grid: ties between events, queries and window edges are frequent
  private val PerCase = 10 // aggregators per case, taken round-robin so that every pair is in ~40 cases

  private def randomWindow(r: Random): Window = {
    val length = if (r.nextInt(4) == 0) Window.Lifetime
      else if (r.nextBoolean()) Grid * (1 + r.nextInt(3)) else Grid * (20 + r.nextInt(60))
    val delay = if (r.nextBoolean()) 0L else Grid * r.nextInt(5) + (if (r.nextInt(4) == 0) 3L else 0L)
    // Hops on the grid (boundaries tie with events) or off it, dividing the length or not, up to past it.
    val hop = if (length == Window.Lifetime || r.nextInt(3) > 0) 0L
      else Seq(1L, 7L, Grid, 2 * Grid, 3 * Grid, 13 * Grid, length / 2 max 1L, length, length + 3)(r.nextInt(9))
    Window(length, delay, rightClosed = r.nextBoolean(), hop)
  }

  private val strings = Vector("", "a", "ab", "B", "é", "z", "\uD83D\uDE00", "card-17", "card-3")
  private def value(r: Random, vt: VType): Any =
    if (r.nextInt(5) == 0) null
    else vt match {
      case VType.Long          => java.lang.Long.valueOf(r.nextInt(2001) - 500L)
      case VType.Double        => java.lang.Double.valueOf(math.exp(r.nextGaussian() * 2) * (if (r.nextInt(8) == 0) -1 else 1))
      case VType.Decimal(_, s) => java.math.BigDecimal.valueOf(r.nextInt(200001) - 50000L, s)
      case VType.String        => strings(r.nextInt(strings.length))
      case VType.Boolean       => java.lang.Boolean.valueOf(r.nextBoolean())
      case VType.Timestamp     => java.lang.Long.valueOf(1700000000000000L + r.nextInt(1000) * 1000000L)
      case other               => fail(s"no generator for $other")
    }

  private def default(r: Random, t: VType): Any =
    if (r.nextBoolean()) null
    else t match {
      case VType.Long | VType.Timestamp => java.lang.Long.valueOf(-7L)
      case VType.Double                 => java.lang.Double.valueOf(-7.5)
      case VType.Decimal(_, s)          => java.math.BigDecimal.valueOf(-7L).setScale(s)
      case VType.String                 => "none"
      case VType.Boolean                => java.lang.Boolean.FALSE
      case _                            => null
    }

  private def same(a: Any, b: Any, tol: (Double, Double)): Boolean = (a, b) match {
    case (x: java.lang.Double, y: java.lang.Double) =>
      x.equals(y) || math.abs(x - y) <= tol._1 * math.max(1.0, math.max(math.abs(x), math.abs(y))) + tol._2
    case (x: java.math.BigDecimal, y: java.math.BigDecimal) => x.compareTo(y) == 0
    case (x: Seq[_], y: Seq[_]) => x.length == y.length && x.zip(y).forall { case (p, q) => same(p, q, tol) }
    case _ => a == b
  }

  /** Per pair label and window kind ("sliding"/"lifetime", "+avail"): queries compared, and those with a result. */
  private val compared = mutable.Map.empty[(String, String), Int].withDefaultValue(0)
  private val nonEmpty = mutable.Map.empty[(String, String), Int].withDefaultValue(0)

  /** One seeded case; returns the number of queries compared. */
  private def runCase(seed: Long): Int = {
    // java.util.Random's first draws barely differ between consecutive seeds: mix the seed first.
    val r = new Random(seed * 0x9E3779B97F4A7C15L + 0x632BE59BD9B4E019L)
    val withAvail = r.nextBoolean()
    val ttl = if (r.nextInt(3) == 0) Some(Grid * (1 + r.nextInt(30))) else None
    val windows = Seq.fill(1 + r.nextInt(4))(randomWindow(r)).distinct
    val columns = VType.scalars.toIndexedSeq
    val aggs = (0 until PerCase).map(j => built(((seed * PerCase + j) % built.length).toInt))
    val features = (for {
      (w, wi) <- windows.zipWithIndex
      ((fn, vt, agg), ai) <- aggs.zipWithIndex if r.nextInt(3) > 0
      // count, time_since_last and decayed_count never read the value: over no column they take every event.
      column = if (!Aggregators.takes(fn, VType.ArrayOf(VType.Long)) || r.nextBoolean()) columns.indexOf(vt) else -1
    } yield Feature(s"f${wi}_$ai@${label(fn, vt)}", agg.get, column, w, default(r, agg.get.outputType))).toIndexedSeq
    def pairOf(f: Feature) = f.name.split("@")(1)
    val fns = features.map(f => pairOf(f).takeWhile(_ != '('))
    val kind = features.map { f =>
      (if (f.window.lifetime) "lifetime" else if (f.window.hop > 0) "hopped" else "sliding") + (if (withAvail) "+avail" else "")
    }
    val sweep = new Sweep("oracle", features, ttl, withAvail)
    val out = new Array[Any](features.length)

    val nKeys = 1 + r.nextInt(5)
    val nEvents = 20 + r.nextInt(400)
    var queries = 0
    for (k <- 0 until nKeys) {
      // Key 0 is hot: most events land there.
      val n = if (k == 0) nEvents else 1 + r.nextInt(1 + nEvents / 10)
      val span = Grid * (5 + r.nextInt(60))
      val evTimes = Seq.fill(n)(Grid * r.nextInt((span / Grid).toInt))
      val qTimes = evTimes.filter(_ => r.nextBoolean()) ++ Seq.fill(n / 2)(r.nextInt(span.toInt + 3 * Grid.toInt).toLong - Grid)
      // At equal times, events come before queries (TemporalJob sorts by (key, time, kind)).
      val stream = (evTimes.map(t => (t, 0)) ++ qTimes.map(t => (t, 1))).sorted
      val seen = mutable.ArrayBuffer.empty[NaiveEngine.Ev]
      sweep.reset(s"k$k")
      for ((t, isQuery) <- stream) {
        if (isQuery == 0) {
          val avail = if (!withAvail || r.nextInt(3) == 0) Long.MinValue else t + r.nextInt(12 * Grid.toInt) - 4 * Grid
          val values = columns.map(value(r, _)).toArray[Any]
          sweep.event(t, avail, values)
          seen += NaiveEngine.Ev(t, avail, values)
        } else {
          sweep.query(t, out)
          val naive = NaiveEngine.query(seen.toSeq, features, ttl, t)
          val expected = naive.map(_._1)
          for (i <- features.indices) {
            if (!same(out(i), expected(i), allowed(fns(i), naive(i)._2)))
              fail(s"seed $seed, key k$k, t=$t, feature ${features(i).name} (${features(i).window}, " +
                s"column ${features(i).column}, avail=$withAvail, ttl=$ttl): sweep ${out(i)}, naive ${expected(i)}")
            val at = (pairOf(features(i)), kind(i))
            compared(at) += 1
            if (expected(i) != null && expected(i) != features(i).default) nonEmpty(at) += 1
          }
          queries += 1
        }
      }
    }
    queries
  }

  test("sweep equals the brute-force engine on 400 seeded random cases, for every pair and window kind") {
    val queries = (1L to 400L).map(runCase).sum
    assert(queries > 10000, s"only $queries queries compared")
    val kinds = Seq("sliding", "hopped", "lifetime").flatMap(k => Seq(k, k + "+avail"))
    val thin = for ((fn, vt) <- pairs; k <- kinds if nonEmpty((label(fn, vt), k)) < 10)
      yield s"${label(fn, vt)} over $k windows: ${compared((label(fn, vt), k))} queries, ${nonEmpty((label(fn, vt), k))} with a result"
    assert(thin.isEmpty, s"pairs the random cases barely compared (under 10 non-empty results):\n${thin.mkString("\n")}")
  }

  // ---- unboxed paths ----

  /** Values with the edges of the numeric kernels' arithmetic: nulls, NaN, infinities, signed zeros, ties. */
  private def edgyValue(r: Random, vt: VType): Any =
    if (r.nextInt(6) == 0) null
    else vt match {
      case VType.Double =>
        val special = Vector(Double.NaN, Double.PositiveInfinity, Double.NegativeInfinity, 0.0, -0.0, 1e300, -1e300, 42.0)
        java.lang.Double.valueOf(if (r.nextInt(10) == 0) special(r.nextInt(special.length))
                                 else math.exp(r.nextGaussian() * 3) * (if (r.nextInt(4) == 0) -1 else 1))
      case VType.Long => java.lang.Long.valueOf(if (r.nextInt(5) == 0) 7L else r.nextInt(2001) - 1000L)
      case other      => value(r, other)
    }

  test("the unboxed paths (count, sums, moments, numeric min and max) equal the generic path, bit for bit") {
    val numeric = Seq(VType.Long, VType.Double, VType.Timestamp, VType.Boolean, VType.Decimal(18, 2))
    val fns = Seq("count", "sum", "mean", "variance", "stddev_pop", "min", "max")
    val columns = numeric.toIndexedSeq
    var specialised = 0
    var queries = 0
    for (seed <- 1L to 120L) {
      val r = new Random(seed * 0x9E3779B97F4A7C15L + 0x2545F4914F6CDD1DL)
      val withAvail = r.nextInt(3) == 0
      val ttl = if (r.nextInt(4) == 0) Some(Grid * (1 + r.nextInt(30))) else None
      val windows = Seq.fill(1 + r.nextInt(4))(randomWindow(r)).distinct
      val features = (for {
        (w, wi) <- windows.zipWithIndex
        fn <- fns
        (vt, ci) <- columns.zipWithIndex if Aggregators.takes(fn, vt) && r.nextInt(3) == 0
        column = if (fn == "count" && r.nextBoolean()) -1 else ci
      } yield Feature(s"$fn($vt)@$wi", Aggregators.build(fn, vt), column, w, null)).toIndexedSeq
      specialised += features.count(f => Sweep.pathOf(f, withAvail) != Sweep.Generic)
      val fast = new Sweep("unboxed", features, ttl, withAvail)
      val slow = new Sweep("generic", features, ttl, withAvail, specialise = false)
      val (a, b) = (new Array[Any](features.length), new Array[Any](features.length))
      for (k <- 0 until 1 + r.nextInt(4)) {
        // Key 0 is hot: thousands of events, so that buffers and deques grow, compact and wrap.
        val n = if (k == 0) 200 + r.nextInt(3000) else 1 + r.nextInt(60)
        val span = Grid * (5 + r.nextInt(400))
        val evTimes = Seq.fill(n)(Grid * r.nextInt((span / Grid).toInt))
        val qTimes = evTimes.filter(_ => r.nextInt(3) == 0) ++ Seq.fill(n / 3)(r.nextInt(span.toInt + 3 * Grid.toInt).toLong - Grid)
        fast.reset(s"k$k"); slow.reset(s"k$k")
        for ((t, isQuery) <- (evTimes.map(t => (t, 0)) ++ qTimes.map(t => (t, 1))).sorted) {
          if (isQuery == 0) {
            val avail = if (!withAvail || r.nextInt(3) == 0) Long.MinValue else t + r.nextInt(12 * Grid.toInt) - 4 * Grid
            val values = columns.map(edgyValue(r, _)).toArray[Any]
            fast.event(t, avail, values); slow.event(t, avail, values)
          } else {
            fast.query(t, a); slow.query(t, b)
            for (i <- features.indices if !java.util.Objects.equals(a(i), b(i)))
              fail(s"seed $seed, key k$k, t=$t, feature ${features(i).name} (${features(i).window}, column " +
                s"${features(i).column}, avail=$withAvail, ttl=$ttl): unboxed ${a(i)}, generic ${b(i)}")
            queries += 1
          }
        }
      }
    }
    assert(specialised > 500 && queries > 20000, s"only $specialised specialised features, $queries queries compared")
  }

  // ---- invariants ----

  private def velocity(window: Window) =
    IndexedSeq(Feature("n", Aggregators.build("count", VType.Long), -1, window, null))

  test("times going backwards within a key raise an error naming the view and key") {
    val sweep = new Sweep("card_velocity", velocity(Window(100L, 0L, rightClosed = false)), None, withAvailability = false)
    sweep.reset("card-42")
    sweep.event(50L, Long.MinValue, Array.empty)
    val e1 = intercept[IllegalArgumentException](sweep.event(40L, Long.MinValue, Array.empty))
    assert(e1.getMessage.contains("card_velocity") && e1.getMessage.contains("card-42"), e1.getMessage)
    sweep.reset("card-43")
    sweep.query(50L, new Array[Any](1))
    val e2 = intercept[IllegalArgumentException](sweep.query(49L, new Array[Any](1)))
    assert(e2.getMessage.contains("card_velocity") && e2.getMessage.contains("card-43"), e2.getMessage)
  }
}

package tally.agg

import java.math.{BigDecimal => JDecimal}
import scala.util.Random

/** One table of every aggregator under test, each with a value generator and a brute-force oracle over plain
  * Scala collections. The law and oracle suites iterate over it: a new aggregator is one line here. */
object Catalogue {
  type Ev = (AnyRef, Long) // (value, ts in microseconds); value may be null (the caller skips it)

  final case class Case(
      function: String,
      input: VType,
      gen: Random => AnyRef,
      oracle: (Seq[Ev], Long) => Any,
      params: Map[String, Any] = Map.empty,
      tol: Double = 0.0) { // relative tolerance for doubles; 0 = exact
    lazy val agg: Aggregator[AnyRef] = Aggregators.build(function, input, params)
    override def toString = s"$function($input${if (params.isEmpty) "" else params.mkString(", ", ", ", "")})"
  }

  // ---- generators: ordinary values mixed with duplicates and the extremes of each type ----
  private def pick[A](r: Random, xs: Seq[A]): A = xs(r.nextInt(xs.length))
  val smallLong: Random => AnyRef = r => java.lang.Long.valueOf(r.nextInt(2000000) - 1000000L)
  val anyLong: Random => AnyRef = r =>
    if (r.nextInt(10) == 0) java.lang.Long.valueOf(pick(r, Seq(Long.MaxValue, Long.MinValue, 0L, -1L))) else smallLong(r)
  val finiteDouble: Random => AnyRef = r =>
    java.lang.Double.valueOf(if (r.nextInt(10) == 0) pick(r, Seq(0.0, -0.0, 1e-300, 1e6)) else r.nextGaussian() * 1000 + 50)
  val anyDouble: Random => AnyRef = r =>
    if (r.nextInt(8) == 0) java.lang.Double.valueOf(pick(r, Seq(Double.NaN, Double.PositiveInfinity, Double.NegativeInfinity,
      Double.MaxValue, -Double.MaxValue, Double.MinPositiveValue, -0.0, 0.0)))
    else finiteDouble(r)
  val nanInfDouble: Random => AnyRef = r =>
    if (r.nextInt(30) == 0) java.lang.Double.valueOf(pick(r, Seq(Double.NaN, Double.PositiveInfinity, Double.NegativeInfinity)))
    else finiteDouble(r)
  val decimal2: Random => AnyRef = r => JDecimal.valueOf(r.nextLong() % 100000000L, 2)
  val strings: Random => AnyRef = r => pick(r, Seq("", "a", "ab", "B", "é", "z", "\uD83D\uDE00", "\uFFFD", "card-17", "card-3"))
  val fewLongs: Random => AnyRef = r => java.lang.Long.valueOf(r.nextInt(12).toLong)

  /** One generator per scalar input type: what the tile suites (fetch parity, stream folds) feed every kernel. */
  def scalar(vt: VType): Random => AnyRef = vt match {
    case VType.Long | VType.Timestamp => smallLong
    case VType.Double                 => finiteDouble
    case _: VType.Decimal             => decimal2
    case VType.String                 => strings
    case VType.Boolean                => r => java.lang.Boolean.valueOf(r.nextBoolean())
    case other                        => sys.error(s"no generator for $other")
  }

  // ---- oracle helpers, deliberately independent of Values ----
  def dbl(v: AnyRef): Double = v match { case d: JDecimal => d.doubleValue; case n: java.lang.Number => n.doubleValue }
  def cmp(a: AnyRef, b: AnyRef): Int = (a, b) match {
    case (x: java.lang.Long, y: java.lang.Long)     => x.compareTo(y)
    case (x: java.lang.Double, y: java.lang.Double) => java.lang.Double.compare(x, y) // Spark: NaN largest
    case (x: JDecimal, y: JDecimal)                 => x.compareTo(y)
    case (x: String, y: String) =>
      val (p, q) = (x.codePoints.toArray, y.codePoints.toArray)
      p.zip(q).collectFirst { case (i, j) if i != j => Integer.compare(i, j) }.getOrElse(Integer.compare(p.length, q.length))
  }
  private val byTimeThenValue: Ordering[Ev] = (a, b) => if (a._2 != b._2) a._2.compare(b._2) else cmp(a._1, b._1)
  private val byValue: Ordering[AnyRef] = (a, b) => cmp(a, b)
  private def orNull[A](xs: Seq[Ev])(f: => A): Any = if (xs.isEmpty) null else f
  private def moment(xs: Seq[Ev], sample: Boolean, root: Boolean): Any = {
    val v = xs.map(e => dbl(e._1)); val n = v.length
    if (n == 0 || (sample && n < 2)) null
    else if (v.exists(x => x.isNaN || x.isInfinite)) Double.NaN
    else { val m = v.sum / n; val s = v.map(x => (x - m) * (x - m)).sum / (if (sample) n - 1 else n); if (root) math.sqrt(s) else s }
  }
  private def ieeeMean(v: Seq[Double]): Double = {
    val fin = v.filter(x => !x.isNaN && !x.isInfinite)
    val inf = v.filter(_.isInfinite).distinct
    if (v.exists(_.isNaN) || inf.length > 1) Double.NaN else if (inf.nonEmpty) inf.head else fin.sum / fin.length
  }
  private def show(v: AnyRef): String = v match { case d: JDecimal => d.toPlainString; case x => x.toString }
  private def topK(k: Int)(xs: Seq[Ev], asOf: Long): Any = orNull(xs) {
    xs.groupBy(e => show(e._1)).toVector.map { case (i, es) => (i, es.length.toLong) }
      .sortBy { case (i, c) => (-c, i) }.take(k).map { case (i, c) => Vector[Any](i, c) }
  }
  private def decayed(h: Long, counting: Boolean)(xs: Seq[Ev], asOf: Long): Any =
    xs.map(e => (if (counting) 1.0 else dbl(e._1)) * math.pow(2.0, -(asOf - e._2).toDouble / h)).sum
  private def quantiles(qs: Seq[Double])(xs: Seq[Ev], asOf: Long): Any = {
    val v = xs.map(e => dbl(e._1)).filterNot(_.isNaN).sorted
    if (v.isEmpty) null else qs.map(q => v(math.max(0, math.ceil(q * v.length).toInt - 1))).toVector
  }

  val H: Long = 3600L * 1000000L
  val cases: Seq[Case] = Seq(
    Case("count", VType.String, strings, (xs, _) => xs.length.toLong),
    Case("sum", VType.Long, smallLong, (xs, _) => xs.map(e => e._1.asInstanceOf[java.lang.Long].longValue).sum),
    Case("sum", VType.Double, finiteDouble, (xs, _) => xs.map(e => dbl(e._1)).sum, tol = 1e-9),
    Case("sum", VType.Decimal(12, 2), decimal2, (xs, _) => xs.map(_._1.asInstanceOf[JDecimal]).foldLeft(JDecimal.valueOf(0, 2))(_ add _)),
    Case("mean", VType.Double, nanInfDouble, (xs, _) => orNull(xs)(ieeeMean(xs.map(e => dbl(e._1)))), tol = 1e-9),
    Case("mean", VType.Long, smallLong, (xs, _) => orNull(xs)(xs.map(e => dbl(e._1)).sum / xs.length), tol = 1e-9),
    Case("variance", VType.Double, finiteDouble, (xs, _) => moment(xs, sample = true, root = false), tol = 1e-7),
    Case("variance_pop", VType.Double, nanInfDouble, (xs, _) => moment(xs, sample = false, root = false), tol = 1e-7),
    Case("stddev", VType.Long, smallLong, (xs, _) => moment(xs, sample = true, root = true), tol = 1e-7),
    Case("stddev_pop", VType.Decimal(12, 2), decimal2, (xs, _) => moment(xs, sample = false, root = true), tol = 1e-7),
    Case("min", VType.Long, anyLong, (xs, _) => orNull(xs)(xs.map(_._1).min(byValue))),
    Case("max", VType.Double, anyDouble, (xs, _) => orNull(xs)(xs.map(_._1).max(byValue))),
    Case("min", VType.Double, anyDouble, (xs, _) => orNull(xs)(xs.map(_._1).min(byValue))),
    Case("min", VType.String, strings, (xs, _) => orNull(xs)(xs.map(_._1).min(byValue))),
    Case("max", VType.Decimal(12, 2), decimal2, (xs, _) => orNull(xs)(xs.map(_._1).max(byValue))),
    Case("first", VType.String, strings, (xs, _) => orNull(xs)(xs.min(byTimeThenValue)._1)),
    Case("last", VType.Double, anyDouble, (xs, _) => orNull(xs)(xs.max(byTimeThenValue)._1)),
    Case("last", VType.Long, anyLong, (xs, _) => orNull(xs)(xs.max(byTimeThenValue)._1)),
    Case("last_k", VType.String, strings, (xs, _) => orNull(xs)(xs.sorted(byTimeThenValue.reverse).take(3).map(_._1).toVector),
      Map("k" -> 3)),
    Case("last_k", VType.Decimal(12, 2), decimal2, (xs, _) => orNull(xs)(xs.sorted(byTimeThenValue.reverse).take(1).map(_._1).toVector),
      Map("k" -> BigDecimal(1))),
    Case("time_since_last", VType.Timestamp, smallLong, (xs, asOf) => orNull(xs)((asOf - xs.map(_._2).max) / 1e6)),
    Case("approx_distinct", VType.String, strings, (xs, _) => orNull(xs)(xs.map(_._1).distinct.length.toLong)),
    Case("approx_distinct", VType.Long, anyLong, (xs, _) => orNull(xs)(xs.map(_._1).distinct.length.toLong),
      Map("lg_k" -> 10L), tol = 0.1), // 3 standard errors at lg_k 10
    Case("approx_percentile", VType.Double, anyDouble, quantiles(Seq(0.0, 0.25, 0.5, 0.9, 1.0)),
      Map("quantiles" -> Seq(0.0, 0.25, 0.5, 0.9, 1.0))),
    Case("approx_percentile", VType.Decimal(12, 2), decimal2, quantiles(Seq(0.5)),
      Map("quantiles" -> Seq(BigDecimal("0.5")), "k" -> 300.0)),
    Case("top_k", VType.String, strings, topK(3), Map("k" -> 3)),
    Case("top_k", VType.Long, fewLongs, topK(5)),
    Case("decayed_sum", VType.Double, finiteDouble, decayed(H, counting = false), Map("half_life_us" -> H), tol = 1e-9),
    Case("decayed_sum", VType.Long, smallLong, decayed(24 * H, counting = false), Map("half_life_us" -> 24 * H), tol = 1e-9),
    Case("decayed_count", VType.Timestamp, smallLong, decayed(H / 2, counting = true), Map("half_life_us" -> H / 2), tol = 1e-9))

  // ---- comparison: NaN equals NaN, doubles within `tol` relative, sequences element-wise ----
  def close(expected: Any, actual: Any, tol: Double): Boolean = (expected, actual) match {
    case (null, null) => true
    case (e: Double, a: Double) =>
      (e.isNaN && a.isNaN) || e == a || (tol > 0 && math.abs(e - a) <= tol * math.max(1.0, math.max(math.abs(e), math.abs(a))))
    case (e: Long, a: Long) => e == a || (tol > 0 && math.abs(e - a) <= math.max(1.0, tol * e))
    case (e: Seq[_], a: Seq[_]) => e.length == a.length && e.zip(a).forall { case (x, y) => close(x, y, tol) }
    case (e: JDecimal, a: JDecimal) => e == a // scale included
    case (e, a) => e == a
  }
}

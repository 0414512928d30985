package tally.agg

/** The catalogue: builds an aggregator from its function name, input type and parameters. Adding an aggregation
  * means one file with its IR and aggregator, its name in `functions`, its input types in `takes`, and one case
  * in `build`.
  *
  * Parameters (snake_case keys; numbers may be Int, Long, Double or BigDecimal, see [[Params]]):
  *  - last_k: `k` (required, >= 1)
  *  - approx_distinct: `lg_k` (default 12, 4..21)
  *  - approx_percentile: `quantiles` (required, a non-empty Seq of numbers in [0, 1]), `k` (default 200),
  *    `relative_error` (default 0.01)
  *  - top_k: `k` (default 5)
  *  - decayed_sum, decayed_count: `half_life_us` (required, microseconds > 0)
  *
  * Input types: `VType.Long` (all integer types), `Double` (float too), `Decimal`, `String`, `Boolean`,
  * `Timestamp` ([[VType.scalars]]). Which a function takes is [[takes]]; anything else is refused with a message
  * naming the function and the type. */
object Aggregators {
  /** Every function name tally knows, for validation messages on both sides of the crossing. */
  val functions: Seq[String] = Seq(
    "count", "sum", "mean", "min", "max", "variance", "variance_pop", "stddev", "stddev_pop",
    "first", "last", "last_k", "time_since_last", "approx_distinct", "approx_percentile", "top_k",
    "decayed_sum", "decayed_count")

  /** Functions whose aggregator is [[Invertible]] whatever the input type (for planning without building). */
  val invertible: Set[String] =
    Set("count", "sum", "mean", "variance", "variance_pop", "stddev", "stddev_pop", "decayed_sum", "decayed_count")

  /** Does `function` take values of type `input`? The one statement of it: `build` refuses every other pair, and
    * the oracle suite compares the sweep with brute force on every pair it allows. */
  def takes(function: String, input: VType): Boolean = function match {
    case "count" | "time_since_last" | "decayed_count" => true // the value is never read
    case "sum" | "approx_percentile" | "decayed_sum"   => numeric(input)
    case m if Moment.all.exists(_.name == m)           => numeric(input)
    case "min" | "max" | "first" | "last" | "last_k" | "approx_distinct" | "top_k" => ordered(input)
    case _                                             => false
  }

  private def numeric(t: VType): Boolean = VType.isNumeric(t)
  private def ordered(t: VType): Boolean = t match {
    case VType.Long | VType.Double | VType.String | VType.Boolean | VType.Timestamp | _: VType.Decimal => true
    case _ => false
  }

  def build(function: String, input: VType, params: Map[String, Any] = Map.empty): Aggregator[AnyRef] = {
    if (!functions.contains(function))
      throw new IllegalArgumentException(s"unknown aggregation '$function'; known: ${functions.mkString(", ")}")
    if (!takes(function, input))
      throw new IllegalArgumentException(s"aggregation '$function' does not take values of type $input")
    val p = Params(function, params)
    val agg: Aggregator[_] = (function, input) match {
      case ("count", _)                       => Count
      case ("sum", VType.Double)              => DoubleSum
      case ("sum", VType.Decimal(_, s))       => DecimalSum(s)
      case ("sum", _)                         => LongSum // long or boolean
      case (m, _) if Moment.all.exists(_.name == m) => Moments(Moment.all.find(_.name == m).get)
      case ("min" | "max", t)                 => Extreme(t, isMax = function == "max")
      case ("first" | "last", t)              => Timed(t, isLast = function == "last")
      case ("last_k", t)                      => LastK(t, p.int("k", throw new IllegalArgumentException(
                                                   "aggregation 'last_k': parameter 'k' is required"), min = 1, max = 100000))
      case ("time_since_last", _)             => TimeSinceLast
      case ("approx_distinct", t)             => ApproxDistinct(t, p.int("lg_k", 12, min = 4, max = 21))
      case ("approx_percentile", _)           => ApproxPercentile(p.int("k", 200, min = 8, max = 65535),
                                                   p.doubles("quantiles", 0.0, 1.0),
                                                   p.double("relative_error", Quantiles.DefaultRelativeError, 1e-3, 0.1))
      case ("top_k", t)                       => TopK(t, p.int("k", 5, min = 1, max = 10000))
      case ("decayed_sum", _)                 => Decayed(halfLife(p), counting = false)
      case ("decayed_count", _)               => Decayed(halfLife(p), counting = true)
      case (f, t) => throw new IllegalStateException(s"Aggregators.takes allows '$f' on $t, but build has no kernel for it")
    }
    agg.asInstanceOf[Aggregator[AnyRef]]
  }

  private def halfLife(p: Params): Long =
    p.long("half_life_us", throw new IllegalArgumentException(
      s"aggregation '${p.function}': parameter 'half_life_us' is required (microseconds)"), min = 1)
}

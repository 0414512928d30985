package tally.agg

/** The catalogue: builds an aggregator from its function name, input type and parameters. Adding an aggregation
  * means one file with its IR and aggregator, and one case here. */
object Aggregators {
  /** Every function name tally knows, for validation messages on both sides of the crossing. */
  val functions: Seq[String] = Seq("count", "sum")

  def build(function: String, input: VType, params: Map[String, Any] = Map.empty): Aggregator[AnyRef] = {
    val agg: Aggregator[_] = (function, input) match {
      case ("count", _)                    => Count
      case ("sum", VType.Long | VType.Boolean) => LongSum
      case ("sum", VType.Double)           => DoubleSum
      case ("sum", VType.Decimal(_, s))    => DecimalSum(s)
      case (f, t) if functions.contains(f) =>
        throw new IllegalArgumentException(s"aggregation '$f' does not take values of type $t")
      case (f, _) =>
        throw new IllegalArgumentException(s"unknown aggregation '$f'; known: ${functions.mkString(", ")}")
    }
    agg.asInstanceOf[Aggregator[AnyRef]]
  }
}

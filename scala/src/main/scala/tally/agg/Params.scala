package tally.agg

/** Reads aggregation parameters. They come from JSON specs or SQL literals, so a number may arrive as Int,
  * Long, Double or BigDecimal; an integral parameter must hold an integral value. Errors name the function and
  * the parameter. */
final case class Params(function: String, values: Map[String, Any]) {
  private def bad(key: String, why: String) =
    new IllegalArgumentException(s"aggregation '$function': parameter '$key' $why")

  private def number(key: String, v: Any): BigDecimal = v match {
    case i: Int                   => BigDecimal(i)
    case l: Long                  => BigDecimal(l)
    case d: Double                => if (d.isNaN || d.isInfinite) throw bad(key, s"must be finite, got $d") else BigDecimal(d)
    case f: Float                 => BigDecimal(f.toDouble)
    case s: Short                 => BigDecimal(s.toInt)
    case b: Byte                  => BigDecimal(b.toInt)
    case d: BigDecimal            => d
    case d: java.math.BigDecimal  => BigDecimal(d)
    case other                    => throw bad(key, s"must be a number, got ${if (other == null) "null" else other.getClass.getSimpleName + " " + other}")
  }

  def long(key: String, default: => Long, min: Long = Long.MinValue, max: Long = Long.MaxValue): Long =
    values.get(key) match {
      case None => default
      case Some(v) =>
        val n = number(key, v)
        if (!n.isWhole) throw bad(key, s"must be an integer, got $n")
        if (n < min || n > max) throw bad(key, s"must be between $min and $max, got $n")
        n.toLong
    }

  def int(key: String, default: => Int, min: Int = Int.MinValue, max: Int = Int.MaxValue): Int =
    long(key, default.toLong, min.toLong, max.toLong).toInt

  def double(key: String, default: => Double, min: Double, max: Double): Double =
    values.get(key) match {
      case None => default
      case Some(v) =>
        val d = number(key, v).toDouble
        if (d < min || d > max) throw bad(key, s"must be between $min and $max, got $d")
        d
    }

  def required(key: String): Any = values.getOrElse(key, throw bad(key, "is required"))

  def doubles(key: String, min: Double, max: Double): Vector[Double] = {
    val xs: Seq[Any] = required(key) match {
      case a: Array[_]    => a.toSeq
      case i: Iterable[_] => i.toSeq
      case other          => throw bad(key, s"must be a list of numbers, got $other")
    }
    if (xs.isEmpty) throw bad(key, "must not be empty")
    xs.map(x => number(key, x).toDouble).toVector.map { d =>
      if (d < min || d > max) throw bad(key, s"values must be between $min and $max, got $d") else d
    }
  }
}

/** Durations as users write them ('90s', '30m', '1h', '7d', or plain microseconds), in microseconds. */
object Durations {
  private val Unit = Map("us" -> 1L, "ms" -> 1000L, "s" -> 1000000L, "m" -> 60000000L, "h" -> 3600000000L,
    "d" -> 86400000000L, "w" -> 604800000000L)
  private val Pattern = """\s*(\d+)\s*(us|ms|s|m|h|d|w)?\s*""".r

  def micros(text: String): Long = text match {
    case Pattern(n, u) => Math.multiplyExact(n.toLong, Unit(Option(u).getOrElse("us")))
    case _ => throw new IllegalArgumentException(
        s"cannot read duration '$text': write a whole number and a unit (us, ms, s, m, h, d, w), e.g. '90s', '7d'")
  }
}

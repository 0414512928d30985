package tally.agg

import java.math.{BigDecimal => JDecimal}

/** What kernels need to know about a value of a given [[VType]]: its canonical boxed form, a total order, a
  * stable binary form and a display string. Kept in one place so that min/max, first/last ties, last_k and
  * top_k agree on every type.
  *
  * Canonical boxed forms: Long and Timestamp as java.lang.Long (ints widen), Double as java.lang.Double
  * (floats widen), Decimal as java.math.BigDecimal, String as String, Boolean as java.lang.Boolean.
  * Arrays are `Seq[Any]`, structs are `Seq[Any]` of their fields in declared order.
  */
object Values {
  /** Widens a boxed JVM value to the canonical form of `t` (Int to Long, Float to Double, ...). */
  def normalize(t: VType, v: Any): AnyRef = t match {
    case VType.Long | VType.Timestamp => java.lang.Long.valueOf(Num.long(v))
    case VType.Double                 => java.lang.Double.valueOf(Num.double(v))
    case _: VType.Decimal             => Num.decimal(v)
    case VType.String                 => v.toString
    case VType.Boolean                => v.asInstanceOf[java.lang.Boolean]
    case other                        => throw new IllegalArgumentException(s"no scalar values of type $other")
  }

  /** A JSON default (Long, Double, String, Boolean) as a kernel value of type `t`: the offline sweep and the online
    * fetcher fill an empty window with the same value. */
  def coerce(v: Any, t: VType): Any = (v, t) match {
    case (null, _)                                  => null
    case (n: java.lang.Number, VType.Long)          => n.longValue
    case (n: java.lang.Number, VType.Double)        => n.doubleValue
    case (n: java.lang.Number, VType.Decimal(_, s)) => new JDecimal(n.toString).setScale(s, java.math.RoundingMode.HALF_UP)
    case (other, _)                                 => other
  }

  /** A total order per type, the one Spark uses: doubles by `java.lang.Double.compare` (NaN above +Infinity,
    * -0.0 below 0.0), strings by Unicode code point (= Spark's UTF-8 byte order), false < true. */
  def ordering(t: VType): Ordering[AnyRef] = t match {
    case VType.Long | VType.Timestamp => (a, b) => java.lang.Long.compare(Num.long(a), Num.long(b))
    case VType.Double                 => (a, b) => java.lang.Double.compare(Num.double(a), Num.double(b))
    case _: VType.Decimal             => (a, b) => a.asInstanceOf[JDecimal].compareTo(b.asInstanceOf[JDecimal])
    case VType.String                 => (a, b) => compareCodePoints(a.asInstanceOf[String], b.asInstanceOf[String])
    case VType.Boolean                => (a, b) => java.lang.Boolean.compare(a.asInstanceOf[java.lang.Boolean], b.asInstanceOf[java.lang.Boolean])
    case other                        => throw new IllegalArgumentException(s"values of type $other have no order")
  }

  private def compareCodePoints(a: String, b: String): Int = {
    var i = 0; var j = 0
    while (i < a.length && j < b.length) {
      val ca = a.codePointAt(i); val cb = b.codePointAt(j)
      if (ca != cb) return Integer.compare(ca, cb)
      i += Character.charCount(ca); j += Character.charCount(cb)
    }
    Integer.compare(a.length - i, b.length - j)
  }

  /** The item string top_k reports (and groups by). */
  def show(t: VType, v: AnyRef): String = t match {
    case _: VType.Decimal => v.asInstanceOf[JDecimal].toPlainString
    case VType.Timestamp  => java.time.Instant.EPOCH.plusNanos(Num.long(v) * 1000L).toString
    case _                => v.toString
  }

  // Binary form: a type tag byte, then the payload, so a value read back as the wrong type fails loudly.
  private def tag(t: VType): Byte = t match {
    case VType.Long => 1; case VType.Double => 2; case _: VType.Decimal => 3; case VType.String => 4
    case VType.Boolean => 5; case VType.Timestamp => 6
    case other => throw new IllegalArgumentException(s"cannot encode values of type $other")
  }

  def write(w: Codec.Writer, t: VType, v: AnyRef): Codec.Writer = {
    w.int(tag(t))
    t match {
      case VType.Long | VType.Timestamp => w.long(Num.long(v))
      case VType.Double                 => w.double(Num.double(v))
      case _: VType.Decimal             => w.decimal(v.asInstanceOf[JDecimal])
      case VType.String                 => w.string(v.asInstanceOf[String])
      case _                            => w.bool(v.asInstanceOf[java.lang.Boolean])
    }
  }

  def read(r: Codec.Reader, t: VType): AnyRef = {
    val got = r.int()
    require(got == tag(t), s"IR holds values with type tag $got, expected ${tag(t)} ($t)")
    t match {
      case VType.Long | VType.Timestamp => java.lang.Long.valueOf(r.long())
      case VType.Double                 => java.lang.Double.valueOf(r.double())
      case _: VType.Decimal             => r.decimal()
      case VType.String                 => r.string()
      case _                            => java.lang.Boolean.valueOf(r.bool())
    }
  }

  /** Passes over one value [[write]] wrote, reading no more of it than its length: for a reader after what follows. */
  def skip(r: Codec.Reader, t: VType): Unit = {
    val got = r.int()
    require(got == tag(t), s"IR holds values with type tag $got, expected ${tag(t)} ($t)")
    t match {
      case VType.Long | VType.Timestamp | VType.Double => r.skip(8)
      case _: VType.Decimal                            => if (r.int() != -1) r.skip(r.int())
      case VType.String                                => r.skip(r.int())
      case _                                           => r.skip(1)
    }
  }
}

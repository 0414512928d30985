package tally.spark

import org.apache.spark.sql.Row
import org.apache.spark.sql.types._

import tally.agg.VType

/** Catalyst types <-> the kernels' own type names, and kernel results -> Spark's external row values. */
object Types {
  def toVType(t: DataType): Option[VType] = t match {
    case LongType | IntegerType | ShortType | ByteType => Some(VType.Long)
    case DoubleType | FloatType                        => Some(VType.Double)
    case d: DecimalType                                => Some(VType.Decimal(d.precision, d.scale))
    case StringType                                    => Some(VType.String)
    case BooleanType                                   => Some(VType.Boolean)
    case TimestampType | TimestampNTZType              => Some(VType.Timestamp)
    case _                                             => None
  }

  /** The Spark type values of `t` are carried in, before the kernels see them (ints widen to long). */
  def carrier(t: DataType): DataType = t match {
    case IntegerType | ShortType | ByteType => LongType
    case FloatType                          => DoubleType
    case other                              => other
  }

  def toSpark(t: VType): DataType = t match {
    case VType.Long             => LongType
    case VType.Double           => DoubleType
    case VType.String           => StringType
    case VType.Boolean          => BooleanType
    case VType.Timestamp        => TimestampType
    case VType.Decimal(p, s)    => DecimalType(p, s)
    case VType.ArrayOf(e)       => ArrayType(toSpark(e), containsNull = true)
    case VType.StructOf(fields) => StructType(fields.map { case (n, ft) => StructField(n, toSpark(ft), nullable = true) })
  }

  /** A kernel result as the external value Spark's Row encoder expects for `t`. */
  def toExternal(v: Any, t: VType): Any = (v, t) match {
    case (null, _)                                => null
    case (l: Long, VType.Timestamp)               => java.time.Instant.EPOCH.plusNanos(l * 1000L)
    case (n: java.lang.Number, VType.Long)        => n.longValue
    case (n: java.lang.Number, VType.Double)      => n.doubleValue
    case (d: scala.math.BigDecimal, _: VType.Decimal) => d.bigDecimal
    case (s: Iterable[_], VType.ArrayOf(e))       => s.map(toExternal(_, e)).toSeq
    case (a: Array[_], VType.ArrayOf(e))          => a.toSeq.map(toExternal(_, e))
    case (p: Product, VType.StructOf(fields))     => Row.fromSeq(p.productIterator.zip(fields.iterator).map { case (x, (_, ft)) => toExternal(x, ft) }.toSeq)
    case (s: Seq[_], VType.StructOf(fields))      => Row.fromSeq(s.zip(fields).map { case (x, (_, ft)) => toExternal(x, ft) })
    case (other, _)                               => other
  }

  /** A JSON default (Long, Double, String, Boolean) as a value of `t`. */
  def coerce(v: Any, t: VType): Any = (v, t) match {
    case (null, _)                              => null
    case (n: java.lang.Number, VType.Long)      => n.longValue
    case (n: java.lang.Number, VType.Double)    => n.doubleValue
    case (n: java.lang.Number, VType.Decimal(_, s)) => new java.math.BigDecimal(n.toString).setScale(s, java.math.RoundingMode.HALF_UP)
    case (other, _)                             => other
  }
}

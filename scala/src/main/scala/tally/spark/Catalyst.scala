package tally.spark

import org.apache.spark.sql.catalyst.InternalRow
import org.apache.spark.sql.catalyst.util.GenericArrayData
import org.apache.spark.sql.types._
import org.apache.spark.unsafe.types.UTF8String

import tally.agg.VType

/** Maps between Catalyst's types and values and the kernels' pure [[VType]]s and boxed JVM values. */
object Catalyst {
  /** The kernel type of a column, or None when kernels cannot read it. Integer types widen to long, float to
    * double; timestamps are epoch microseconds, UTC: a timestamp_ntz's wall time is read as UTC (its internal value
    * already is), so results of type timestamp name the instant that reading gives. */
  def vtype(t: DataType): Option[VType] = t match {
    case ByteType | ShortType | IntegerType | LongType => Some(VType.Long)
    case FloatType | DoubleType                        => Some(VType.Double)
    case d: DecimalType                                => Some(VType.Decimal(d.precision, d.scale))
    case _: StringType                                 => Some(VType.String)
    case BooleanType                                   => Some(VType.Boolean)
    case TimestampType | TimestampNTZType              => Some(VType.Timestamp)
    case _                                             => None
  }

  def dataType(t: VType): DataType = t match {
    case VType.Long             => LongType
    case VType.Double           => DoubleType
    case VType.String           => StringType
    case VType.Timestamp        => TimestampType
    case VType.Boolean          => BooleanType
    case VType.Decimal(p, s)    => DecimalType(p, s)
    case VType.ArrayOf(e)       => ArrayType(dataType(e), containsNull = false)
    case VType.StructOf(fields) => StructType(fields.map { case (n, f) => StructField(n, dataType(f), nullable = false) })
  }

  /** Catalyst's internal value of a column of type `t` to the boxed value kernels take. */
  def toKernel(t: DataType): Any => Any = t match {
    case _: DecimalType => v => v.asInstanceOf[Decimal].toJavaBigDecimal
    case _: StringType  => v => v.toString // UTF8String
    case _              => identity
  }

  /** A kernel result to Catalyst's internal value of `dataType(t)`. */
  def toCatalyst(t: VType): Any => Any = t match {
    case VType.String        => v => if (v == null) null else UTF8String.fromString(v.asInstanceOf[String])
    case VType.Decimal(p, s) => v => if (v == null) null else Decimal(v.asInstanceOf[java.math.BigDecimal], p, s)
    case VType.ArrayOf(e) =>
      val elem = toCatalyst(e)
      v => if (v == null) null else new GenericArrayData(v.asInstanceOf[Seq[Any]].map(elem).toArray)
    case VType.StructOf(fields) =>
      val convs = fields.map { case (_, f) => toCatalyst(f) }
      v => if (v == null) null else InternalRow.fromSeq(v.asInstanceOf[Seq[Any]].zip(convs).map { case (x, c) => c(x) })
    case _ => identity
  }

  /** The Spark type a column's values travel in before kernels see them (integers widen to long, float to double),
    * so that a kernel gets one boxed type per VType. */
  def carrier(t: DataType): DataType = t match {
    case IntegerType | ShortType | ByteType => LongType
    case FloatType                          => DoubleType
    case other                              => other
  }
}

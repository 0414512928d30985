package tally.spark

import scala.reflect.ClassTag

import org.apache.spark.sql.{Encoder, Encoders, SparkSession, functions}
import org.apache.spark.sql.catalyst.encoders.{AgnosticEncoders, Codec => SparkCodec}
import org.apache.spark.sql.expressions.{Aggregator => SparkAggregator}

import tally.agg.{Aggregator, Aggregators, VType}

/** Holds a kernel IR between Spark's update and merge calls; Spark serializes it with the kernel's own codec. */
final class IRBox(var ir: AnyRef)

/** The buffer encoder: a kernel IR crosses Spark's shuffle in the kernel's own stable binary encoding. */
final class IRCodec(kernel: Aggregator[AnyRef]) extends SparkCodec[IRBox, Array[Byte]] {
  def encode(in: IRBox): Array[Byte] = kernel.encode(in.ir)
  def decode(out: Array[Byte]): IRBox = new IRBox(kernel.decode(out))
}

object IRBox {
  def encoder(kernel: Aggregator[AnyRef]): Encoder[IRBox] =
    AgnosticEncoders.TransformingEncoder[IRBox, Array[Byte]](
      implicitly[ClassTag[IRBox]], AgnosticEncoders.BinaryEncoder, () => new IRCodec(kernel))
}

/** A tally kernel as a typed Spark Aggregator: the adapter only boxes values and delegates. */
final class KernelUdaf(kernel: Aggregator[AnyRef]) extends SparkAggregator[java.lang.Double, IRBox, java.lang.Double] {
  def zero: IRBox = new IRBox(kernel.zero())
  def reduce(b: IRBox, v: java.lang.Double): IRBox = { if (v != null) b.ir = kernel.update(b.ir, v, 0L); b }
  def merge(a: IRBox, b: IRBox): IRBox = { a.ir = kernel.merge(a.ir, b.ir); a }
  def finish(b: IRBox): java.lang.Double = kernel.finish(b.ir, 0L) match {
    case null => null
    case d: java.lang.Double => d
    case n: java.lang.Number => n.doubleValue
  }
  def bufferEncoder: Encoder[IRBox] = IRBox.encoder(kernel)
  def outputEncoder: Encoder[java.lang.Double] = Encoders.DOUBLE
}

/** Registers every tally SQL function (`tally_<name>`) in a session. */
object Functions {
  def register(spark: SparkSession): Unit = {
    spark.udf.register("tally_sum", functions.udaf(new KernelUdaf(Aggregators.build("sum", VType.Double)), Encoders.DOUBLE))
  }
}

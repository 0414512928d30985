package tally.spark

import org.apache.spark.sql.catalyst.InternalRow
import org.apache.spark.sql.catalyst.expressions.Expression
import org.apache.spark.sql.catalyst.expressions.aggregate.TypedImperativeAggregate
import org.apache.spark.sql.types.DataType

import tally.agg.{Aggregator, Aggregators, VType}

/** A tally kernel as a Catalyst aggregate. The aggregation buffer is the kernel's IR object itself and crosses
  * the shuffle in the kernel's stable encoding (serialize = encode), so Spark adds no copy or row format of its
  * own. A `TypedImperativeAggregate` rather than a typed `Aggregator` + `functions.udaf` because the input type
  * picks the kernel (a sum of bigint stays bigint, of decimal(12,2) gives decimal(38,2)), which a fixed encoder
  * per name cannot express.
  *
  * `children` holds only the row inputs: the value (at `valueIdx`), the event time (`tsIdx`) and the foldable
  * as-of time (`asOfIdx`); -1 means absent. Constant parameters were read into `params` by [[Functions]].
  * Rows whose value or event time is null are skipped, so an all-null group is an empty one. Without a value
  * input (time_since_last, decayed_count) the kernel receives the event time as the value. */
case class KernelAggregate(
    function: String,
    inputType: VType,
    params: Map[String, Any],
    children: Seq[Expression],
    valueIdx: Int,
    tsIdx: Int,
    asOfIdx: Int,
    mutableAggBufferOffset: Int = 0,
    inputAggBufferOffset: Int = 0)
    extends TypedImperativeAggregate[AnyRef] {

  @transient private lazy val kernel: Aggregator[AnyRef] = Aggregators.build(function, inputType, params)
  @transient private lazy val in: Any => Any =
    if (valueIdx >= 0) Catalyst.toKernel(children(valueIdx).dataType) else identity
  @transient private lazy val out: Any => Any = Catalyst.toCatalyst(kernel.outputType)

  override def prettyName: String = s"tally_$function"
  override def nullable: Boolean = true
  override def dataType: DataType = Catalyst.dataType(kernel.outputType)

  override def createAggregationBuffer(): AnyRef = kernel.zero()

  override def update(buffer: AnyRef, row: InternalRow): AnyRef = {
    var ts = 0L
    if (tsIdx >= 0) {
      val t = children(tsIdx).eval(row)
      if (t == null) return buffer
      ts = t.asInstanceOf[Long]
    }
    if (valueIdx >= 0) {
      val v = children(valueIdx).eval(row)
      if (v == null) buffer else kernel.update(buffer, in(v), ts)
    } else kernel.update(buffer, java.lang.Long.valueOf(ts), ts)
  }

  override def merge(buffer: AnyRef, input: AnyRef): AnyRef = kernel.merge(buffer, input)

  override def eval(buffer: AnyRef): Any = {
    val asOf: Any = if (asOfIdx >= 0) children(asOfIdx).eval(null) else 0L
    if (asOf == null) null else out(kernel.finish(buffer, asOf.asInstanceOf[Long]))
  }

  override def serialize(buffer: AnyRef): Array[Byte] = kernel.encode(buffer)
  override def deserialize(bytes: Array[Byte]): AnyRef = kernel.decode(bytes)

  override def withNewMutableAggBufferOffset(n: Int): KernelAggregate = copy(mutableAggBufferOffset = n)
  override def withNewInputAggBufferOffset(n: Int): KernelAggregate = copy(inputAggBufferOffset = n)
  override protected def withNewChildrenInternal(newChildren: IndexedSeq[Expression]): KernelAggregate =
    copy(children = newChildren)
}

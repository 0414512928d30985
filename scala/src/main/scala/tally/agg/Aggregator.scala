package tally.agg

/** The one contract every tally aggregation follows. Pure Scala: nothing here knows about Spark.
  *
  * An aggregator folds values into an intermediate representation (IR, the state `S`) and turns the IR into
  * a result. Why each method exists:
  *  - `zero` gives a fresh empty IR; the sweep engine and Spark's partial aggregation each start from one.
  *  - `update` folds one non-null value observed at `ts` (epoch microseconds, UTC). It may mutate `s` in place
  *    and returns the IR to keep: the engine calls it millions of times and must not allocate per event.
  *  - `merge` combines two IRs built from disjoint inputs (Spark partial aggregates, two-stacks windows).
  *    It may mutate and return `a`; `b` is left untouched.
  *  - `copy` exists because update and merge mutate: the two-stacks window keeps suffix aggregates that must not
  *    change when the back stack is updated.
  *  - `finish` turns the IR into the result as of `asOf` (time-decayed and time-since aggregations need it).
  *    An empty IR finishes to `empty` (null, or 0 for counts and sums).
  *  - `encode`/`decode` give a stable binary form, format byte first (see [[Codec]]), so IRs can be stored and
  *    read back by a newer tally.
  *
  * Values arrive as boxed JVM values of the declared input type (java.lang.Long, Double, java.math.BigDecimal,
  * String); nulls never reach `update` (callers skip them, so an all-null window behaves like an empty one).
  * Results are boxed the same way; an `ArrayOf` result is a `Seq[Any]`, a `StructOf` result a `Seq[Any]` of
  * its fields in declared order (see [[Values]]). The catalogue of kernels, their parameters and input types
  * is [[Aggregators]]; which ones are invertible is `Aggregators.invertible`.
  */
trait Aggregator[S] extends Serializable {
  def zero(): S
  def update(s: S, value: Any, ts: Long): S
  def merge(a: S, b: S): S
  def copy(s: S): S
  def finish(s: S, asOf: Long): Any
  def encode(s: S): Array[Byte]
  def decode(bytes: Array[Byte]): S
  /** The result's type, for schemas on the other side of the crossing. */
  def outputType: VType
  /** Whether the result depends only on the multiset of values folded in, not on the order of updates and merges.
    * Every kernel but top_k past its exact regime is; the sweep folds the others along the tile ladder, as the
    * fetcher does ([[tally.window.LadderFold]]), so training rows and served values still agree to the bit. */
  def orderFree: Boolean = true
}

/** An aggregator whose updates can be taken back: the sweep engine adds an event when it enters a window and
  * removes it when it leaves, O(1) each, instead of re-merging. `remove(update(s, v, t), v, t) == s`. */
trait Invertible[S] extends Aggregator[S] {
  def remove(s: S, value: Any, ts: Long): S
}

/** How an [[Unboxed]] aggregator reads a value without its box: `AsLong` as [[Num.long]] reads it, `AsDouble` as
  * [[Num.double]] does (the double's raw bits in a long), `Unread` not at all (only whether it is null). */
sealed trait Unboxing {
  /** A non-null boxed value as the bits `updateBits` takes. */
  def bits(value: Any): Long
}
object Unboxing {
  case object AsLong extends Unboxing { def bits(value: Any): Long = Num.long(value) }
  case object AsDouble extends Unboxing { def bits(value: Any): Long = java.lang.Double.doubleToRawLongBits(Num.double(value)) }
  case object Unread extends Unboxing { def bits(value: Any): Long = 0L }
}

/** An invertible aggregator that also takes its values unboxed, so that the sweep can keep a sliding window's
  * events in primitive columns ([[tally.window.EventBuffer]]) instead of reading a boxed value back from each
  * old event as it leaves (a cache miss per event and window on the benchmark). The boxed methods are defined
  * through these, so the two paths are one arithmetic: `update(s, v, ts) == updateBits(s, unboxing.bits(v), ts)`,
  * and the same for `remove`. */
trait Unboxed[S] extends Invertible[S] {
  def unboxing: Unboxing
  def updateBits(s: S, bits: Long, ts: Long): S
  def removeBits(s: S, bits: Long, ts: Long): S
  final def update(s: S, value: Any, ts: Long): S = updateBits(s, unboxing.bits(value), ts)
  final def remove(s: S, value: Any, ts: Long): S = removeBits(s, unboxing.bits(value), ts)
}

/** The value types tally computes with, named without Spark so that kernels stay pure. The Spark layer maps
  * them to Catalyst types. */
sealed trait VType
object VType {
  case object Long extends VType
  case object Double extends VType
  case object String extends VType
  case object Timestamp extends VType // epoch microseconds, UTC
  case object Boolean extends VType
  final case class Decimal(precision: Int, scale: Int) extends VType
  final case class ArrayOf(element: VType) extends VType
  final case class StructOf(fields: Seq[(String, VType)]) extends VType

  /** One type of each scalar kind a column can hold (this decimal stands for every precision and scale): what
    * the oracle suites feed every kernel. Keep in step with the cases above. */
  val scalars: Seq[VType] = Seq(Long, Double, Decimal(18, 2), String, Boolean, Timestamp)

  def isNumeric(t: VType): Boolean = t match {
    case Long | Double | Boolean | _: Decimal => true
    case _                                     => false
  }
}

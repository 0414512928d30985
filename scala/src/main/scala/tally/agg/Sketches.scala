package tally.agg

import org.apache.datasketches.common.ArrayOfStringsSerDe
import org.apache.datasketches.frequencies.{ErrorType, ItemsSketch}
import org.apache.datasketches.hll.{Union => HllUnion}
import org.apache.datasketches.memory.Memory

/** Sketches from Apache DataSketches (the version Spark bundles, so the JAR stays thin). None is invertible: over a
  * sliding window the sweep keeps them on a two-stacks queue and merges; over a lifetime window it folds each
  * event once. Each IR's encoding is the format byte, the sketch parameters, then the sketch's own stable
  * serialized form. `copy` goes through that form: it is rare
  * (two-stacks flips), and DataSketches has no cheaper deep copy for every kind. */

/** approx_distinct: HyperLogLog (HLL_8 registers), `lg_k` in [4, 21]. Relative standard error
  * 1.04 / sqrt(2^lg_k) (1.6 % at the default 12); small sets are counted exactly (list and set modes).
  * Values are hashed by type: longs and timestamps as longs, doubles by DataSketches' canonical double
  * (-0.0 == 0.0, one NaN), decimals by their plain string without trailing zeros (so 1.10 == 1.1), strings
  * by their UTF-8 bytes (the empty string counts as a value). Empty gives null. */
final class HllIR(val union: HllUnion)

final case class ApproxDistinct(input: VType, lgK: Int) extends Aggregator[HllIR] {
  require(lgK >= 4 && lgK <= 21, s"aggregation 'approx_distinct': parameter 'lg_k' must be between 4 and 21, got $lgK")
  private val Format: Byte = 0x0a
  def zero() = new HllIR(new HllUnion(lgK))
  def update(s: HllIR, value: Any, ts: Long): HllIR = {
    input match {
      case VType.Long | VType.Timestamp | VType.Boolean => s.union.update(Num.long(value))
      case VType.Double                                 => s.union.update(Num.double(value))
      case _: VType.Decimal => s.union.update(Num.decimal(value).stripTrailingZeros.toPlainString)
      case _ =>
        val str = value.toString
        // DataSketches skips empty strings; count "" as a long whose bytes (0xFF * 8) no UTF-8 string has.
        if (str.isEmpty) s.union.update(-1L) else s.union.update(str)
    }
    s
  }
  def merge(a: HllIR, b: HllIR): HllIR = { if (!b.union.isEmpty) a.union.update(b.union.getResult); a }
  def copy(s: HllIR) = decode(encode(s))
  /** The composite estimate, never HIP: HIP accumulates along the order of updates, while the registers (and, below
    * them, the coupon lists) are one function of the set of values, so this estimate is the same whichever order
    * and merge tree built the IR (the sweep folding events, the fetcher merging tiles; SketchOrderSuite). */
  def finish(s: HllIR, asOf: Long): Any =
    if (s.union.isEmpty) null else java.lang.Long.valueOf(math.round(s.union.getCompositeEstimate))
  def encode(s: HllIR): Array[Byte] = Codec.writer(Format, 64).int(lgK).bytes(s.union.toCompactByteArray).result()
  def decode(bytes: Array[Byte]): HllIR = {
    val r = Codec.reader(bytes, Format, "approx_distinct")
    val stored = r.int()
    require(stored == lgK, s"approx_distinct IR was built with lg_k=$stored, this aggregator has lg_k=$lgK")
    val s = new HllIR(HllUnion.heapify(r.bytes())); r.done(); s
  }
  val outputType: VType = VType.Long
}

/** top_k: the k most frequent items (as strings, see [[Values.show]]) with their counts, most frequent first,
  * ties by item. A DataSketches frequent-items sketch with a map of `TopK.mapSize(k)` slots: while a group has
  * fewer than 3/4 of that many distinct items the counts are exact; beyond, counts are estimates with error at
  * most 3.5 * n / mapSize and no true heavy hitter is missed. Empty gives null. */
final case class TopK(input: VType, k: Int) extends Aggregator[ItemsSketch[String]] {
  require(k >= 1 && k <= 10000, s"aggregation 'top_k': parameter 'k' must be between 1 and 10000, got $k")
  private val Format: Byte = 0x0c
  private val mapSize = TopK.mapSize(k)
  def zero() = new ItemsSketch[String](mapSize)
  def update(s: ItemsSketch[String], value: Any, ts: Long): ItemsSketch[String] = {
    s.update(Values.show(input, Values.normalize(input, value))); s
  }
  def merge(a: ItemsSketch[String], b: ItemsSketch[String]): ItemsSketch[String] = { if (!b.isEmpty) a.merge(b); a }
  def copy(s: ItemsSketch[String]) = decode(encode(s))
  def finish(s: ItemsSketch[String], asOf: Long): Any =
    if (s.isEmpty) null
    else s.getFrequentItems(ErrorType.NO_FALSE_NEGATIVES).toVector
      .sortBy(r => (-r.getEstimate, r.getItem))
      .take(k)
      .map(r => Vector[Any](r.getItem, java.lang.Long.valueOf(r.getEstimate)))
  def encode(s: ItemsSketch[String]): Array[Byte] =
    Codec.writer(Format, 64).int(k).bytes(s.toByteArray(TopK.serde)).result()
  def decode(bytes: Array[Byte]): ItemsSketch[String] = {
    val r = Codec.reader(bytes, Format, "top_k")
    val stored = r.int()
    require(stored == k, s"top_k IR was built with k=$stored, this aggregator has k=$k")
    val s = ItemsSketch.getInstance(Memory.wrap(r.bytes()), TopK.serde); r.done(); s
  }
  val outputType: VType = VType.ArrayOf(VType.StructOf(Seq("item" -> VType.String, "count" -> VType.Long)))
  /** Below 3/4 of its map the counts are exact and any order gives them; past it, purges depend on the order. */
  override def orderFree: Boolean = false
}

object TopK {
  private val serde = new ArrayOfStringsSerDe()
  /** Map slots: a power of two with room for 16 candidates per reported item (at least 64). */
  def mapSize(k: Int): Int = Integer.highestOneBit(math.max(64, 16 * k) * 2 - 1)
}

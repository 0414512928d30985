package tally.agg

/** Min and max over any ordered type (long, double, decimal, string, boolean, timestamp); the result keeps the
  * input type. Not invertible: over a sliding window the sweep keeps longs, timestamps and doubles on a monotonic
  * deque of unboxed values ([[tally.window.MonotonicDeque]], in this order) and the other types on a two-stacks
  * queue (amortized O(1) merges per event); under `available_at` it folds the window afresh; over a lifetime
  * window it folds each event once.
  *
  * Order is Spark's (see [[Values.ordering]]): NaN is larger than every other double, so max of a set with a
  * NaN is NaN and min ignores it unless every value is NaN; -0.0 sorts below 0.0. Empty gives null. */
final class ExtremeIR(var value: AnyRef) // null while empty

final case class Extreme(input: VType, isMax: Boolean) extends Aggregator[ExtremeIR] {
  private val Format: Byte = 0x06
  private val ord = Values.ordering(input)
  private def better(v: AnyRef, than: AnyRef): Boolean = {
    val c = ord.compare(v, than)
    if (isMax) c > 0 else c < 0
  }

  def zero() = new ExtremeIR(null)
  def update(s: ExtremeIR, value: Any, ts: Long): ExtremeIR = {
    val v = Values.normalize(input, value)
    if (s.value == null || better(v, s.value)) s.value = v
    s
  }
  def merge(a: ExtremeIR, b: ExtremeIR): ExtremeIR = {
    if (b.value != null && (a.value == null || better(b.value, a.value))) a.value = b.value
    a
  }
  def copy(s: ExtremeIR) = new ExtremeIR(s.value)
  def finish(s: ExtremeIR, asOf: Long): Any = s.value

  def encode(s: ExtremeIR): Array[Byte] = {
    val w = Codec.writer(Format).bool(s.value != null)
    (if (s.value != null) Values.write(w, input, s.value) else w).result()
  }
  def decode(bytes: Array[Byte]): ExtremeIR = {
    val r = Codec.reader(bytes, Format, if (isMax) "max" else "min")
    val s = new ExtremeIR(if (r.bool()) Values.read(r, input) else null); r.done(); s
  }
  val outputType: VType = input
}

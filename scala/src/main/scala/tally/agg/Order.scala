package tally.agg

import scala.collection.mutable.ArrayBuffer

/** Aggregations over event time: first, last, last_k and time_since_last.
  *
  * Tie rule (events with equal ts): events are ordered by (ts, value), with values in the type's total order
  * ([[Values.ordering]]). `last` is the greatest (ts, value), `first` the least; `last_k` keeps the k greatest.
  * This makes the result independent of arrival order, so merge is commutative and associative, and Spark's
  * non-deterministic row order cannot change a feature. */
final class TimedIR(var ts: Long, var value: AnyRef) // value null while empty

final case class Timed(input: VType, isLast: Boolean) extends Aggregator[TimedIR] {
  private val Format: Byte = 0x07
  private val ord = Values.ordering(input)
  // Is (ts, v) preferred over the state's (s.ts, s.value)?
  private def wins(ts: Long, v: AnyRef, s: TimedIR): Boolean = s.value == null || {
    val c = if (ts != s.ts) java.lang.Long.compare(ts, s.ts) else ord.compare(v, s.value)
    if (isLast) c > 0 else c < 0
  }

  def zero() = new TimedIR(0L, null)
  def update(s: TimedIR, value: Any, ts: Long): TimedIR = {
    val v = Values.normalize(input, value)
    if (wins(ts, v, s)) { s.ts = ts; s.value = v }
    s
  }
  def merge(a: TimedIR, b: TimedIR): TimedIR = {
    if (b.value != null && wins(b.ts, b.value, a)) { a.ts = b.ts; a.value = b.value }
    a
  }
  def copy(s: TimedIR) = new TimedIR(s.ts, s.value)
  def finish(s: TimedIR, asOf: Long): Any = s.value
  def encode(s: TimedIR): Array[Byte] = {
    val w = Codec.writer(Format).bool(s.value != null).long(s.ts)
    (if (s.value != null) Values.write(w, input, s.value) else w).result()
  }
  def decode(bytes: Array[Byte]): TimedIR = {
    val r = Codec.reader(bytes, Format, if (isLast) "last" else "first")
    val present = r.bool()
    val s = new TimedIR(r.long(), if (present) Values.read(r, input) else null); r.done(); s
  }
  val outputType: VType = input
}

/** The k most recent events, newest first (ties as above), as parallel arrays sorted descending. */
final class LastKIR(val ts: ArrayBuffer[Long], val values: ArrayBuffer[AnyRef])

final case class LastK(input: VType, k: Int) extends Aggregator[LastKIR] {
  require(k >= 1, s"aggregation 'last_k': parameter 'k' must be at least 1, got $k")
  private val Format: Byte = 0x08
  private val ord = Values.ordering(input)
  private def cmp(t1: Long, v1: AnyRef, t2: Long, v2: AnyRef): Int =
    if (t1 != t2) java.lang.Long.compare(t1, t2) else ord.compare(v1, v2)

  def zero() = new LastKIR(new ArrayBuffer[Long](k), new ArrayBuffer[AnyRef](k))

  def update(s: LastKIR, value: Any, ts: Long): LastKIR = insert(s, ts, Values.normalize(input, value))

  // k is small (tens): a linear scan from the oldest end beats any heap and keeps the arrays sorted.
  private def insert(s: LastKIR, ts: Long, v: AnyRef): LastKIR = {
    val n = s.ts.length
    if (n == k && cmp(ts, v, s.ts(n - 1), s.values(n - 1)) <= 0) return s
    var i = n
    while (i > 0 && cmp(ts, v, s.ts(i - 1), s.values(i - 1)) > 0) i -= 1
    s.ts.insert(i, ts); s.values.insert(i, v)
    if (s.ts.length > k) { s.ts.remove(k); s.values.remove(k) }
    s
  }

  def merge(a: LastKIR, b: LastKIR): LastKIR = {
    var i = 0
    while (i < b.ts.length) { insert(a, b.ts(i), b.values(i)); i += 1 }
    a
  }
  def copy(s: LastKIR) = new LastKIR(s.ts.clone(), s.values.clone())
  def finish(s: LastKIR, asOf: Long): Any = if (s.ts.isEmpty) null else s.values.toVector

  def encode(s: LastKIR): Array[Byte] = {
    val w = Codec.writer(Format).int(k).int(s.ts.length)
    for (i <- s.ts.indices) Values.write(w.long(s.ts(i)), input, s.values(i))
    w.result()
  }
  def decode(bytes: Array[Byte]): LastKIR = {
    val r = Codec.reader(bytes, Format, "last_k")
    val storedK = r.int()
    require(storedK == k, s"last_k IR was built with k=$storedK, this aggregator has k=$k")
    val s = zero()
    for (_ <- 0 until r.int()) { s.ts += r.long(); s.values += Values.read(r, input) }
    r.done(); s
  }
  val outputType: VType = VType.ArrayOf(input)
}

/** Seconds from the latest event to `asOf` (a double; negative if the latest event is after asOf). Only the
  * event time matters, the value is ignored. Empty gives null. */
final class LatestIR(var ts: Long) // Long.MinValue while empty

object TimeSinceLast extends Aggregator[LatestIR] {
  private val Format: Byte = 0x09
  private val Empty = Long.MinValue
  def zero() = new LatestIR(Empty)
  def update(s: LatestIR, value: Any, ts: Long): LatestIR = { if (ts > s.ts) s.ts = ts; s }
  def merge(a: LatestIR, b: LatestIR): LatestIR = { if (b.ts > a.ts) a.ts = b.ts; a }
  def copy(s: LatestIR) = new LatestIR(s.ts)
  def finish(s: LatestIR, asOf: Long): Any = if (s.ts == Empty) null else (asOf - s.ts).toDouble / 1e6
  def encode(s: LatestIR): Array[Byte] = Codec.writer(Format).long(s.ts).result()
  def decode(bytes: Array[Byte]): LatestIR = {
    val r = Codec.reader(bytes, Format, "time_since_last"); val s = new LatestIR(r.long()); r.done(); s
  }
  val outputType: VType = VType.Double
}

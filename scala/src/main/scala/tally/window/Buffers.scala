package tally.window

import tally.agg.{Aggregator, Unboxing}

/** The events of one key still needed by some window, addressed by a running index (0 = the key's first event).
  * Backed by growable arrays; `dropBefore` forgets old events and reuses the space.
  *
  * Besides each event's boxed values (kept only when `keepValues`: some window folds them generically), the buffer
  * keeps primitive columns, one per (value column, [[Unboxing]]) in `unboxed`: the value's bits and whether it is
  * null, read by the sweep's unboxed paths. Those arrays are contiguous, so expiring old events from a sliding
  * window reads memory in order instead of chasing two pointers per event and window. */
final class EventBuffer(unboxed: IndexedSeq[(Int, Unboxing)] = IndexedSeq.empty, keepValues: Boolean = true) {
  private val columns: Array[Int] = unboxed.map(_._1).toArray
  private val unboxings: Array[Unboxing] = unboxed.map(_._2).toArray
  private var tss = new Array[Long](64)
  private var avails = new Array[Long](64)
  private var vals = new Array[Array[Any]](if (keepValues) 64 else 0)
  private var bitss = Array.fill(columns.length)(new Array[Long](64))
  private var nulls = Array.fill(columns.length)(new Array[Boolean](64))
  private var base = 0L  // index of slot `head`
  private var head = 0   // first live slot
  private var size = 0   // live slots

  // Only live slots hold references (dropBefore nulls the rest): filling the whole array here cost every key
  // the capacity the hottest key once needed — quadratic on skewed data.
  def clear(): Unit = {
    if (keepValues) java.util.Arrays.fill(vals.asInstanceOf[Array[AnyRef]], head, head + size, null)
    base = 0L; head = 0; size = 0
  }
  def end: Long = base + size
  def length: Int = size

  def append(ts: Long, avail: Long, values: Array[Any]): Unit = {
    if (head + size == tss.length) grow()
    val slot = head + size
    tss(slot) = ts; avails(slot) = avail
    if (keepValues) vals(slot) = values
    var c = 0
    while (c < columns.length) {
      val v = values(columns(c))
      if (v == null) nulls(c)(slot) = true
      else { nulls(c)(slot) = false; bitss(c)(slot) = unboxings(c).bits(v) }
      c += 1
    }
    size += 1
  }

  @inline private def slot(idx: Long): Int = {
    val s = idx - base
    if (s < 0 || s >= size) throw new IndexOutOfBoundsException(s"event $idx is not buffered (have $base..${end - 1})")
    head + s.toInt
  }
  def ts(idx: Long): Long = tss(slot(idx))
  def avail(idx: Long): Long = avails(slot(idx))
  def values(idx: Long): Array[Any] = {
    if (!keepValues) throw new IllegalStateException("this buffer keeps no boxed values (every window reads them unboxed)")
    vals(slot(idx))
  }
  /** Primitive column c (an index into `unboxed`) of event idx: null or not, and its bits. */
  def isNull(c: Int, idx: Long): Boolean = nulls(c)(slot(idx))
  def bits(c: Int, idx: Long): Long = bitss(c)(slot(idx))

  def dropBefore(idx: Long): Unit = {
    val n = math.min(math.max(idx - base, 0L), size.toLong).toInt
    if (keepValues) { var i = head; while (i < head + n) { vals(i) = null; i += 1 } }
    head += n; size -= n; base += n
    if (size == 0) head = 0
  }

  /** Compacts to the front when at least half is dead space; doubles otherwise. */
  private def grow(): Unit = {
    val cap = if (size * 2 <= tss.length) tss.length else tss.length * 2
    def moved[A](from: Array[A], to: Array[A]): Array[A] = { System.arraycopy(from, head, to, 0, size); to }
    tss = moved(tss, new Array[Long](cap)); avails = moved(avails, new Array[Long](cap))
    if (keepValues) vals = moved(vals, new Array[Array[Any]](cap))
    bitss = bitss.map(moved(_, new Array[Long](cap))); nulls = nulls.map(moved(_, new Array[Boolean](cap)))
    head = 0
  }
}

/** The maximum (or minimum) of a sliding window of longs or doubles whose values leave in the order they entered:
  * a monotonic deque of (value bits, event index), O(1) amortized per event, nothing boxed. A pushed value drops
  * every value behind it that it beats or ties (a newer equal value outlives them); the front is the window's
  * extreme. Order is [[tally.agg.Extreme]]'s for the input type: `Long.compare`, or `Double.compare` on doubles
  * (NaN above +Infinity, -0.0 below 0.0), so the result equals the generic fold's. */
final class MonotonicDeque(isMax: Boolean, doubles: Boolean) {
  private var bitss = new Array[Long](16)
  private var idxs = new Array[Long](16)
  private var head = 0 // ring buffer: live entries at head .. head + n - 1 (mod capacity)
  private var n = 0
  def size: Int = n
  def clear(): Unit = { head = 0; n = 0 }

  private def compare(a: Long, b: Long): Int =
    if (doubles) java.lang.Double.compare(java.lang.Double.longBitsToDouble(a), java.lang.Double.longBitsToDouble(b))
    else java.lang.Long.compare(a, b)
  @inline private def at(i: Int): Int = (head + i) & (bitss.length - 1)

  /** The value of event `idx` (indices increase) enters. */
  def push(bits: Long, idx: Long): Unit = {
    while (n > 0 && { val c = compare(bits, bitss(at(n - 1))); if (isMax) c >= 0 else c <= 0 }) n -= 1
    if (n == bitss.length) {
      val b = new Array[Long](n * 2); val x = new Array[Long](n * 2)
      var i = 0
      while (i < n) { b(i) = bitss(at(i)); x(i) = idxs(at(i)); i += 1 }
      bitss = b; idxs = x; head = 0
    }
    bitss(at(n)) = bits; idxs(at(n)) = idx; n += 1
  }

  /** Every event up to `idx` has left. */
  def expireThrough(idx: Long): Unit =
    while (n > 0 && idxs(head) <= idx) { head = (head + 1) & (bitss.length - 1); n -= 1 }

  /** The extreme, boxed as the generic fold boxes it, or null when empty. */
  def finish: Any =
    if (n == 0) null
    else if (doubles) java.lang.Double.valueOf(java.lang.Double.longBitsToDouble(bitss(head)))
    else java.lang.Long.valueOf(bitss(head))
}

/** A binary min-heap of (key, index) pairs of longs, without boxing, each with an optional payload (the event's
  * values, for a window that keeps waiting events itself). Ties pop the smaller index first. */
final class LongMinHeap {
  private var keys = new Array[Long](16)
  private var idxs = new Array[Long](16)
  private var payloads = new Array[Array[Any]](16)
  private var n = 0
  def isEmpty: Boolean = n == 0
  def size: Int = n
  def clear(): Unit = { java.util.Arrays.fill(payloads.asInstanceOf[Array[AnyRef]], 0, n, null); n = 0 }
  def minKey: Long = keys(0)
  def minIndex: Long = idxs(0)
  def minPayload: Array[Any] = payloads(0)
  private def less(i: Int, j: Int): Boolean = keys(i) < keys(j) || (keys(i) == keys(j) && idxs(i) < idxs(j))
  private def swap(i: Int, j: Int): Unit = {
    val k = keys(i); keys(i) = keys(j); keys(j) = k
    val x = idxs(i); idxs(i) = idxs(j); idxs(j) = x
    val p = payloads(i); payloads(i) = payloads(j); payloads(j) = p
  }
  def push(key: Long, index: Long, payload: Array[Any] = null): Unit = {
    if (n == keys.length) {
      keys = java.util.Arrays.copyOf(keys, n * 2); idxs = java.util.Arrays.copyOf(idxs, n * 2)
      payloads = java.util.Arrays.copyOf(payloads, n * 2)
    }
    keys(n) = key; idxs(n) = index; payloads(n) = payload
    var i = n; n += 1
    while (i > 0 && less(i, (i - 1) / 2)) { swap(i, (i - 1) / 2); i = (i - 1) / 2 }
  }
  def pop(): Unit = {
    n -= 1; keys(0) = keys(n); idxs(0) = idxs(n); payloads(0) = payloads(n); payloads(n) = null
    var i = 0
    var done = false
    while (!done) {
      val l = 2 * i + 1; val r = l + 1
      var m = i
      if (l < n && less(l, m)) m = l
      if (r < n && less(r, m)) m = r
      if (m == i) done = true else { swap(i, m); i = m }
    }
  }
}

/** A FIFO window over a non-invertible aggregator in amortized O(1) merges per event (the "two stacks" queue).
  *
  * New values fold into one running IR (`back`). When the oldest value must leave and `front` is empty, the
  * back values move to `front` as suffix aggregates, newest to oldest, so that front's top aggregates
  * exactly the values still inside; popping is then dropping that top. The window's value is
  * merge(front top, back). `copy` is needed because update mutates the IR it is given.
  */
final class TwoStacks(agg: Aggregator[AnyRef]) {
  private val backValues = new java.util.ArrayDeque[Any]()
  private val backTimes = new java.util.ArrayDeque[java.lang.Long]()
  private var back: AnyRef = agg.zero()
  private val front = new java.util.ArrayDeque[AnyRef]() // top = aggregate of every value in front

  def clear(): Unit = { backValues.clear(); backTimes.clear(); back = agg.zero(); front.clear() }
  /** Values held (the back stack's, and one suffix aggregate per front value). */
  def size: Int = backValues.size + front.size

  def push(value: Any, ts: Long): Unit = {
    backValues.addLast(value); backTimes.addLast(ts)
    back = agg.update(back, value, ts)
  }

  def pop(): Unit = {
    if (front.isEmpty) {
      var acc = agg.zero()
      while (!backValues.isEmpty) {
        acc = agg.update(agg.copy(acc), backValues.pollLast(), backTimes.pollLast())
        front.push(acc)
      }
      back = agg.zero()
    }
    front.pop()
  }

  def finish(t: Long): Any =
    if (front.isEmpty) agg.finish(back, t)
    else if (backValues.isEmpty) agg.finish(front.peek(), t)
    else agg.finish(agg.merge(agg.copy(front.peek()), back), t)
}

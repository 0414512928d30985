package tally.window

import tally.agg.Aggregator

/** The events of one key still needed by some window, addressed by a running index (0 = the key's first event).
  * Backed by growable arrays; `dropBefore` forgets old events and reuses the space. */
final class EventBuffer {
  private var tss = new Array[Long](64)
  private var avails = new Array[Long](64)
  private var vals = new Array[Array[Any]](64)
  private var base = 0L  // index of slot `head`
  private var head = 0   // first live slot
  private var size = 0   // live slots

  // Only live slots hold references (dropBefore nulls the rest): filling the whole array here cost every key
  // the capacity the hottest key once needed — quadratic on skewed data.
  def clear(): Unit = {
    java.util.Arrays.fill(vals.asInstanceOf[Array[AnyRef]], head, head + size, null)
    base = 0L; head = 0; size = 0
  }
  def end: Long = base + size
  def length: Int = size

  def append(ts: Long, avail: Long, values: Array[Any]): Unit = {
    if (head + size == tss.length) grow()
    val slot = head + size
    tss(slot) = ts; avails(slot) = avail; vals(slot) = values; size += 1
  }

  @inline private def slot(idx: Long): Int = {
    val s = idx - base
    if (s < 0 || s >= size) throw new IndexOutOfBoundsException(s"event $idx is not buffered (have $base..${end - 1})")
    head + s.toInt
  }
  def ts(idx: Long): Long = tss(slot(idx))
  def avail(idx: Long): Long = avails(slot(idx))
  def values(idx: Long): Array[Any] = vals(slot(idx))

  def dropBefore(idx: Long): Unit = {
    val n = math.min(math.max(idx - base, 0L), size.toLong).toInt
    var i = head
    while (i < head + n) { vals(i) = null; i += 1 }
    head += n; size -= n; base += n
    if (size == 0) head = 0
  }

  /** Compacts to the front when at least half is dead space; doubles otherwise. */
  private def grow(): Unit = {
    val cap = if (size * 2 <= tss.length) tss.length else tss.length * 2
    val t = new Array[Long](cap); val a = new Array[Long](cap); val v = new Array[Array[Any]](cap)
    System.arraycopy(tss, head, t, 0, size); System.arraycopy(avails, head, a, 0, size); System.arraycopy(vals, head, v, 0, size)
    tss = t; avails = a; vals = v; head = 0
  }
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

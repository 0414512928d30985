package tally.window

import tally.agg.{Aggregator, Invertible}

/** A window of the time semantics (DESIGN.md, "Time semantics"), in epoch microseconds.
  *
  * For a query at t, an event at ts (available at `avail`) is inside when
  *   left-closed  (default): t-d-w <= ts <  t-d  and avail <  t
  *   right-closed          : t-d-w <  ts <= t-d  and avail <= t
  * A lifetime window has w = +infinity. Rewritten per event, with enter = max(ts+d, avail) and exit = ts+d+w:
  *   left : enter <  t <= exit        right: enter <= t <  exit
  * so each event is inside over one interval of query time, and the sweep adds it when t passes `enter` and
  * removes it when t passes `exit`. Equal timestamps share enter and exit, so ties are all in or all out.
  */
final case class Window(length: Long, delay: Long, rightClosed: Boolean) {
  require(length > 0, s"window length must be positive, got $length us")
  require(delay >= 0, s"window delay must not be negative, got $delay us")
  def lifetime: Boolean = length == Window.Lifetime
  /** Has an event whose enter time is `enter` entered the window by query time t? */
  @inline def entered(enter: Long, t: Long): Boolean = if (rightClosed) enter <= t else enter < t
  /** Has an event at ts left the window by query time t? */
  @inline def exited(ts: Long, t: Long): Boolean =
    !lifetime && { val exit = ts + delay + length; if (rightClosed) exit <= t else exit < t }
}

object Window { val Lifetime: Long = Long.MaxValue }

/** One output column: an aggregation of one event value (`column`, or -1 for "every event") over a window. */
final case class Feature(name: String, agg: Aggregator[AnyRef], column: Int, window: Window, default: Any)

/** The sweep: for one entity key at a time, a time-ordered stream of events and queries in, feature values out.
  *
  * Algorithm, per key:
  *  1. `reset()` when the key changes; then calls arrive in non-decreasing time order, and at equal times every
  *     event before any query (so right-closed windows with no delay see an event at exactly t).
  *  2. `event(ts, avail, values)` appends the event to the key's buffer; nothing is aggregated yet.
  *  3. `query(t, out)`, for each window:
  *     a. admit: events whose enter time has passed are added — `update` for invertible aggregators, a push on
  *        the two-stacks queue for the others. Without `available_at`, enter order is buffer order and admitting
  *        is a pointer walk; with it, events wait in a min-heap keyed by enter time.
  *     b. expire: events whose exit time has passed leave in buffer (= ts) order — `remove`, or a pop of the
  *        two-stacks queue. An event that expires before it was admitted (its label arrived after its window) is
  *        skipped.
  *     c. read: finish each aggregator as of t; an empty result takes the feature's default.
  *  4. The buffer drops events that every window has expired (lifetime windows keep none: their IRs are
  *     running totals), so memory per key is bounded by the events inside the longest window plus those still
  *     waiting for their `available_at`, never by the key's whole history. A key may have many events between
  *     two queries (a merchant's charges, a sparse spine), so `event` also moves the windows to its time and
  *     compacts whenever the buffer has doubled since the last compaction: at most twice the window between
  *     queries, amortized O(1) per event.
  *
  * Invariants (checked with `require`, naming the view and key): times never go backwards within a key; a
  * window's admitted events are exactly those with enter passed and exit not passed.
  *
  * With `available_at`, admission order differs from expiry order, so the two-stacks queue (FIFO) cannot serve
  * non-invertible aggregators; they are recomputed from the admitted events at each query (O(events in window)).
  */
final class Sweep(view: String, features: IndexedSeq[Feature], ttl: Option[Long], withAvailability: Boolean) {
  private val buffer = new EventBuffer
  private val windows: Array[WindowState] = { // an array and while loops: this is the per-event path
    val ttlWindow = ttl.map(l => Window(l, 0L, rightClosed = false))
    val byWindow = features.zipWithIndex.groupBy(_._1.window).toIndexedSeq
    val states = byWindow.map { case (w, fs) => new WindowState(w, fs.map(_._2).toIndexedSeq) }
    (states ++ ttlWindow.filterNot(byWindow.map(_._1).contains).map(w => new WindowState(w, IndexedSeq.empty))).toArray
  }
  @inline private def eachWindow(f: WindowState => Unit): Unit = { var i = 0; while (i < windows.length) { f(windows(i)); i += 1 } }
  private val ttlState: Option[WindowState] = ttl.map(l => windows.find(_.window == Window(l, 0L, rightClosed = false)).get)
  private var key: Any = null
  private var lastTime: Long = Long.MinValue
  private var compactAt: Int = Sweep.CompactSlack

  def reset(newKey: Any): Unit = {
    key = newKey; lastTime = Long.MinValue; buffer.clear(); eachWindow(_.reset()); compactAt = Sweep.CompactSlack
  }

  def event(ts: Long, avail: Long, values: Array[Any]): Unit = {
    advance(ts)
    buffer.append(ts, avail, values)
    if (buffer.length >= compactAt) { eachWindow(_.moveTo(ts)); compact() }
  }

  /** Events held for the current key (for tests of the memory bound). */
  def buffered: Int = buffer.length

  /** Fills `out(i)` with feature i as of t. */
  def query(t: Long, out: Array[Any]): Unit = {
    advance(t)
    eachWindow(_.moveTo(t))
    val alive = ttlState.forall(_.admitted > 0)
    var i = 0
    while (i < features.length) { out(i) = null; i += 1 }
    if (alive) eachWindow(_.read(t, out))
    compact()
  }

  private def advance(t: Long): Unit = {
    require(t >= lastTime, s"view '$view', key $key: time went backwards ($t < $lastTime); input must be sorted by (key, time)")
    lastTime = t
  }

  private def compact(): Unit = {
    var keep = buffer.end
    eachWindow(w => keep = math.min(keep, w.oldestNeeded))
    buffer.dropBefore(keep)
    compactAt = 2 * buffer.length + Sweep.CompactSlack
  }

  private final class WindowState(val window: Window, featureIdx: IndexedSeq[Int]) {
    private val feats = featureIdx.map(features).toArray
    private val columns = feats.map(_.column)
    // The invertible view of each aggregator, or null: it is added and removed in O(1), no queue needed.
    private val inverses = feats.map { f => f.agg match { case i: Invertible[_] => i.asInstanceOf[Invertible[AnyRef]]; case _ => null } }
    private val allInvertible = inverses.forall(_ != null)
    private val states = new Array[AnyRef](feats.length)
    private val queues = feats.indices.map(i => if (inverses(i) != null) null else new TwoStacks(feats(i).agg)).toArray
    private var nextEnter = 0L   // without availability: next buffer index to admit
    private var nextExit = 0L    // next buffer index to expire (expiry is in ts order)
    // With availability: events not yet admitted wait on a heap keyed by enter time; `isIn` marks admitted ones.
    private val pending = new LongMinHeap
    private var pendingScan = 0L  // next buffer index to put on the heap
    private var settled = 0L      // every index below it is admitted or expired
    private val isIn = new java.util.BitSet()
    private var bitBase = 0L
    var admitted: Long = 0L

    def reset(): Unit = {
      var i = 0
      while (i < feats.length) { states(i) = feats(i).agg.zero(); if (queues(i) != null) queues(i).clear(); i += 1 }
      nextEnter = 0L; nextExit = 0L; pendingScan = 0L; settled = 0L
      pending.clear(); isIn.clear(); bitBase = 0L; admitted = 0L
    }
    reset()

    /** The oldest buffer index this window may still read. */
    def oldestNeeded: Long =
      if (!withAvailability) { if (window.lifetime) nextEnter else nextExit }
      else if (window.lifetime) { if (allInvertible) settled else 0L }
      else nextExit

    def moveTo(t: Long): Unit =
      if (!withAvailability) {
        while (nextEnter < buffer.end && window.entered(buffer.ts(nextEnter) + window.delay, t)) { add(nextEnter); nextEnter += 1 }
        if (!window.lifetime) while (nextExit < nextEnter && window.exited(buffer.ts(nextExit), t)) { drop(nextExit); nextExit += 1 }
      } else {
        while (pendingScan < buffer.end) {
          pending.push(math.max(buffer.ts(pendingScan) + window.delay, buffer.avail(pendingScan)), pendingScan)
          pendingScan += 1
        }
        while (!pending.isEmpty && window.entered(pending.minKey, t)) {
          val idx = pending.minIndex; pending.pop()
          // An event whose exit passed before its label arrived never enters.
          if (window.lifetime || (idx >= nextExit && !window.exited(buffer.ts(idx), t))) { setIn(idx, in = true); add(idx) }
        }
        if (!window.lifetime) while (nextExit < pendingScan && window.exited(buffer.ts(nextExit), t)) {
          if (inAt(nextExit)) { setIn(nextExit, in = false); drop(nextExit) }
          nextExit += 1
        }
        settled = math.max(settled, nextExit)
        while (settled < pendingScan && inAt(settled)) settled += 1
      }

    private def add(idx: Long): Unit = { admitted += 1; apply(idx, adding = true) }
    private def drop(idx: Long): Unit = { admitted -= 1; apply(idx, adding = false) }

    /** The event at `idx` into (or out of) every aggregator of this window: update / remove for invertible
      * ones, push / pop of the two-stacks queue for the others (which, under availability, recompute instead). */
    private def apply(idx: Long, adding: Boolean): Unit = if (feats.length > 0) {
      val values = buffer.values(idx)
      val ts = buffer.ts(idx)
      var i = 0
      while (i < feats.length) {
        val v = valueIn(values, columns(i))
        if (v != null) {
          if (inverses(i) != null) states(i) = if (adding) inverses(i).update(states(i), v, ts) else inverses(i).remove(states(i), v, ts)
          else if (!withAvailability) { if (adding) queues(i).push(v, ts) else queues(i).pop() }
        }
        i += 1
      }
    }

    def read(t: Long, out: Array[Any]): Unit = {
      var i = 0
      while (i < feats.length) {
        val f = feats(i)
        val v =
          if (inverses(i) != null) f.agg.finish(states(i), t)
          else if (!withAvailability) queues(i).finish(t)
          else recompute(f, t)
        out(featureIdx(i)) = if (v == null) f.default else v
        i += 1
      }
    }

    /** Non-invertible aggregators under `available_at`: fold the admitted events afresh. */
    private def recompute(f: Feature, t: Long): Any = {
      var s = f.agg.zero()
      var idx = math.max(nextExit, bitBase)
      while (idx < pendingScan) {
        if (inAt(idx)) { val v = valueIn(buffer.values(idx), f.column); if (v != null) s = f.agg.update(s, v, buffer.ts(idx)) }
        idx += 1
      }
      f.agg.finish(s, t)
    }

    private def setIn(idx: Long, in: Boolean): Unit = {
      val floor = oldestNeeded
      if (idx - bitBase >= (1L << 16) && floor > bitBase) { // slide the bitset forward over settled indices
        val moved = isIn.get((floor - bitBase).toInt, math.max((floor - bitBase).toInt, isIn.length))
        isIn.clear(); isIn.or(moved); bitBase = floor
      }
      isIn.set((idx - bitBase).toInt, in)
    }
    private def inAt(idx: Long): Boolean = idx >= bitBase && isIn.get((idx - bitBase).toInt)
  }

  /** An event's value for a feature's column; a feature of no column ("every event") counts each as TRUE. */
  @inline private def valueIn(values: Array[Any], column: Int): Any = if (column < 0) java.lang.Boolean.TRUE else values(column)
}

object Sweep {
  /** Events a key may buffer beyond twice its window before `event` compacts (keeps compaction rare). */
  val CompactSlack: Int = 1024
}

package tally.window

import tally.agg.{Aggregator, Extreme, Invertible, Unboxed, Unboxing, VType}

/** One output column: an aggregation of one event value (`column`, or -1 for "every event") over a window. */
final case class Feature(name: String, agg: Aggregator[AnyRef], column: Int, window: Window, default: Any)

/** The sweep: for one entity key at a time, a time-ordered stream of events and queries in, feature values out.
  *
  * Algorithm, per key:
  *  1. `reset()` when the key changes; then calls arrive in non-decreasing time order, and at equal times every
  *     event before any query (so right-closed windows with no delay see an event at exactly t).
  *  2. `event(ts, avail, values)` appends the event to the key's buffer; nothing is aggregated yet.
  *  3. `query(t, out)`, for each window:
  *     a. admit: events whose enter time has passed enter the window. Without `available_at`, enter order is
  *        buffer (= ts) order and admitting is a pointer walk; with it, events wait in a min-heap keyed by enter
  *        time.
  *     b. A lifetime window folds each event into every aggregator's IR as it enters (`update`, invertible or
  *        not), once, and forgets it: nothing ever leaves a lifetime window, so it keeps no events and no queue.
  *     c. A sliding window adds each entering event (`update` for invertible aggregators, a push on the
  *        two-stacks queue for the others) and expires events whose exit time has passed, in buffer (= ts) order
  *        (`remove`, or a pop); a hopped window's exit is rounded up to its hop, still monotone in ts (see
  *        [[Window]]). An event that expires before it was admitted (its label arrived after its window) is
  *        skipped. Under `available_at`, admission order differs from expiry order, so the two-stacks queue (FIFO)
  *        cannot serve: non-invertible aggregators are folded afresh from the admitted events at each query
  *        (O(events in the window)).
  *     d. read: finish each aggregator as of t; an empty result takes the feature's default.
  *  4. The buffer drops events that no window needs: those every sliding window has expired and every lifetime
  *     window has taken in (events still waiting for their `available_at` wait on the lifetime window's own heap,
  *     values included, so they pin nothing). Memory per key is thus bounded by the events inside the longest
  *     sliding window (delay and hop included) plus those waiting for their `available_at`, never by the key's
  *     whole history. A key may have many events between two queries (a merchant's charges, a sparse spine), so
  *     `event` also moves the windows to its time and compacts whenever the buffer has doubled since the last
  *     compaction: at most twice the window between queries, amortized O(1) per event.
  *
  * Unboxed paths. Sliding windows read most events twice, as they enter and as they leave, and the leaving ones
  * are old: reading their boxed values back was a cache miss per event and window (with min and max on the
  * two-stacks queue, the largest part of the sweep's time on the benchmark). So the buffer also keeps the values
  * of the columns that [[Unboxed]] aggregators (count, sums, moments) and numeric min and max read as primitive
  * columns, and those features take them from there: invertible ones through `updateBits`/`removeBits` (the same
  * arithmetic as their boxed methods), min and max of longs, timestamps and doubles on a [[MonotonicDeque]] when
  * events leave in the order they entered (no `available_at`). Everything else (lifetime windows, ordered kernels,
  * sketches, decimals, strings) takes the generic path, and the buffer keeps boxed values only if some feature
  * does. `specialise = false` sends every feature the generic way: SweepOracleSuite compares the two.
  *
  * Invariants: times never go backwards within a key (checked with `require`, naming the view and key); a
  * window's admitted events are exactly those with enter passed and exit not passed (kept by construction, pinned
  * by the brute-force oracle in SweepOracleSuite).
  *
  * Update order. Under `available_at` a lifetime window folds events in the order they become available, not in
  * time order. The result does not depend on that order: first, last, last_k and time_since_last decide by
  * (ts, value), never by arrival (see Order.scala); min and max by value; counts, sums, moments and decayed sums
  * are sums. approx_distinct's estimate and approx_percentile's IR are functions of the set (multiset) of values
  * (SketchOrderSuite). top_k is not past its exact regime: its features are folded along the tile ladder by
  * [[LadderFold]], with the events of one microsecond in [[Ladder.tieOrder]], exactly as the fetcher folds stored
  * tiles, so a training row and a served value agree to the bit and a rerun gives the same values.
  */
final class Sweep(view: String, features: IndexedSeq[Feature], ttl: Option[Long], withAvailability: Boolean,
    specialise: Boolean = true) {
  private val paths: IndexedSeq[Sweep.Path] = features.map(f => if (specialise) Sweep.pathOf(f, withAvailability) else Sweep.Generic)
  /** The buffer's primitive columns: one per (value column, unboxing) that an unboxed path reads. */
  private val unboxedColumns: IndexedSeq[(Int, Unboxing)] = features.indices.collect {
    case i if paths(i) != Sweep.Generic && features(i).column >= 0 => (features(i).column, paths(i).unboxing)
  }.distinct
  private val buffer = new EventBuffer(unboxedColumns, keepValues = paths.contains(Sweep.Generic))
  private val windows: Array[WindowState] = { // an array and while loops: this is the per-event path
    val ttlWindow = ttl.map(l => Window(l, 0L, rightClosed = false))
    val (free, ordered) = features.indices.partition(i => features(i).agg.orderFree)
    val byWindow = free.groupBy(features(_).window).toIndexedSeq.sortBy(_._2.head).map { case (w, idx) => w -> idx }
    val all = byWindow ++ ttlWindow.filterNot(byWindow.map(_._1).contains).map(w => w -> IndexedSeq.empty[Int])
    all.map { case (w, idx) =>
      if (w.lifetime) new LifetimeWindow(w, idx)
      else if (withAvailability) new SlidingByAvailability(w, idx)
      else new SlidingInOrder(w, idx): WindowState
    }.toArray ++ (if (ordered.isEmpty) None else Some(new Laddered(ordered)))
  }
  @inline private def eachWindow(f: WindowState => Unit): Unit = { var i = 0; while (i < windows.length) { f(windows(i)); i += 1 } }
  private val ttlState: Option[WindowState] = ttl.map(l => windows.find(_.window == Window(l, 0L, rightClosed = false)).get)
  private var key: Any = null
  private var lastTime: Long = Long.MinValue
  private var compactAt: Int = Sweep.CompactSlack
  eachWindow(_.reset())

  def reset(newKey: Any): Unit = {
    key = newKey; lastTime = Long.MinValue; buffer.clear(); eachWindow(_.reset()); compactAt = Sweep.CompactSlack
  }

  def event(ts: Long, avail: Long, values: Array[Any]): Unit = {
    advance(ts)
    buffer.append(ts, avail, values)
    if (buffer.length >= compactAt) { eachWindow(_.moveTo(ts)); compact() }
  }

  /** Events held for the current key, in the buffer and in the windows' own heaps and queues (a probe for the
    * memory tests). */
  private[window] def retained: Int = { var n = buffer.length; eachWindow(w => n += w.held); n }

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

  /** One window's aggregators and the events it holds; three kinds, by how events enter and leave. */
  private abstract class WindowState(val window: Window, featureIdx: IndexedSeq[Int]) {
    protected val feats: Array[Feature] = featureIdx.map(features).toArray
    protected val columns: Array[Int] = feats.map(_.column)
    protected val states = new Array[AnyRef](feats.length)
    /** Events inside the window now (the ttl's liveness test). */
    var admitted: Long = 0L

    def reset(): Unit = {
      var i = 0
      while (i < feats.length) { states(i) = feats(i).agg.zero(); i += 1 }
      admitted = 0L
    }
    /** Admits and expires events as of query time t (never decreasing within a key). */
    def moveTo(t: Long): Unit
    /** The oldest buffer index this window may still read. */
    def oldestNeeded: Long
    /** Events (or their aggregates) this window holds outside the buffer. */
    def held: Int

    def read(t: Long, out: Array[Any]): Unit = {
      var i = 0
      while (i < feats.length) {
        val v = result(i, t)
        out(featureIdx(i)) = if (v == null) feats(i).default else v
        i += 1
      }
    }
    protected def result(i: Int, t: Long): Any = feats(i).agg.finish(states(i), t)
  }

  /** A lifetime window: an event never leaves it, so each is folded into every aggregator once, as it enters, and
    * forgotten (see "Update order" above). Without `available_at` events enter in buffer order, a pointer walk;
    * with it they wait on a heap keyed by enter time that holds their values, so the buffer need not keep them. */
  private final class LifetimeWindow(window: Window, featureIdx: IndexedSeq[Int]) extends WindowState(window, featureIdx) {
    private var next = 0L // the next buffer index to admit (in order) or to move onto the heap (availability)
    private val waiting = if (withAvailability) new LongMinHeap else null // key: enter time; index: ts

    override def reset(): Unit = { super.reset(); next = 0L; if (waiting != null) waiting.clear() }
    def oldestNeeded: Long = next
    def held: Int = if (waiting == null) 0 else waiting.size

    def moveTo(t: Long): Unit =
      if (waiting == null) {
        while (next < buffer.end && window.entered(buffer.ts(next) + window.delay, t)) {
          fold(buffer.ts(next), valuesAt(next)); next += 1
        }
      } else {
        while (next < buffer.end) {
          val ts = buffer.ts(next)
          waiting.push(math.max(ts + window.delay, buffer.avail(next)), ts, valuesAt(next))
          next += 1
        }
        while (!waiting.isEmpty && window.entered(waiting.minKey, t)) { fold(waiting.minIndex, waiting.minPayload); waiting.pop() }
      }

    /** An event's boxed values, if this window has features to fold them into (a ttl's window has none). */
    private def valuesAt(idx: Long): Array[Any] = if (feats.length > 0) buffer.values(idx) else null
    private def fold(ts: Long, values: Array[Any]): Unit = {
      admitted += 1
      var i = 0
      while (i < feats.length) {
        val v = valueIn(values, columns(i))
        if (v != null) states(i) = feats(i).agg.update(states(i), v, ts)
        i += 1
      }
    }
  }

  /** A window of finite length: events enter and leave. Invertible aggregators take each event in and out in
    * O(1) (`update`, `remove`); what the others do is the subclass's. */
  private abstract class SlidingWindow(window: Window, featureIdx: IndexedSeq[Int]) extends WindowState(window, featureIdx) {
    private val path: Array[Sweep.Path] = featureIdx.map(paths).toArray
    private val anyGeneric = path.contains(Sweep.Generic)
    // Per feature: the invertible view of its aggregator (generic path) or null; its unboxed aggregator or null;
    // its deque or null; the buffer column it reads unboxed (-1: none, every event counts, with `constBits`).
    protected val inverses: Array[Invertible[AnyRef]] = feats.indices.map { i =>
      feats(i).agg match { case inv: Invertible[_] if path(i) == Sweep.Generic => inv.asInstanceOf[Invertible[AnyRef]]; case _ => null }
    }.toArray
    private val unboxed: Array[Unboxed[AnyRef]] = feats.indices.map { i =>
      if (path(i) == Sweep.Generic || path(i).isInstanceOf[Sweep.Deque]) null else feats(i).agg.asInstanceOf[Unboxed[AnyRef]]
    }.toArray
    protected val deques: Array[MonotonicDeque] = path.map {
      case Sweep.Deque(isMax, u) => new MonotonicDeque(isMax, doubles = u == Unboxing.AsDouble)
      case _                     => null
    }
    private val slots: Array[Int] = feats.indices.map { i =>
      if (path(i) == Sweep.Generic || columns(i) < 0) -1 else unboxedColumns.indexOf((columns(i), path(i).unboxing))
    }.toArray
    private val constBits: Array[Long] = path.map(p => if (p == Sweep.Generic) 0L else p.unboxing.bits(java.lang.Boolean.TRUE))

    override def reset(): Unit = {
      super.reset()
      var i = 0
      while (i < deques.length) { if (deques(i) != null) deques(i).clear(); i += 1 }
    }
    protected def dequesHeld: Int = deques.foldLeft(0)((n, d) => if (d == null) n else n + d.size)

    /** The event at `idx` into (or out of) every aggregator of this window. */
    protected def move(idx: Long, adding: Boolean): Unit = {
      admitted += (if (adding) 1 else -1)
      if (feats.length > 0) {
        val values = if (anyGeneric) buffer.values(idx) else null
        val ts = buffer.ts(idx)
        var i = 0
        while (i < feats.length) {
          val c = slots(i)
          if (unboxed(i) != null) {
            if (c < 0 || !buffer.isNull(c, idx)) {
              val bits = if (c < 0) constBits(i) else buffer.bits(c, idx)
              states(i) = if (adding) unboxed(i).updateBits(states(i), bits, ts) else unboxed(i).removeBits(states(i), bits, ts)
            }
          } else if (deques(i) != null) {
            if (!adding) deques(i).expireThrough(idx)
            else if (!buffer.isNull(c, idx)) deques(i).push(buffer.bits(c, idx), idx)
          } else {
            val v = valueIn(values, columns(i))
            if (v != null) {
              if (inverses(i) != null) states(i) = if (adding) inverses(i).update(states(i), v, ts) else inverses(i).remove(states(i), v, ts)
              else moveOther(i, v, ts, adding)
            }
          }
          i += 1
        }
      }
    }
    /** Whether feature i is invertible (on either path): its state is in `states`. */
    protected def invertible(i: Int): Boolean = inverses(i) != null || unboxed(i) != null
    override protected def result(i: Int, t: Long): Any = if (deques(i) != null) deques(i).finish else super.result(i, t)
    /** A non-null value of non-invertible aggregator i enters (or leaves) the window. */
    protected def moveOther(i: Int, v: Any, ts: Long, adding: Boolean): Unit
  }

  /** A sliding window without `available_at`: events enter and leave in buffer order, two pointer walks.
    * Non-invertible aggregators sit on a two-stacks queue (amortized O(1) per event). */
  private final class SlidingInOrder(window: Window, featureIdx: IndexedSeq[Int]) extends SlidingWindow(window, featureIdx) {
    private val queues = feats.indices.map(i => if (invertible(i) || deques(i) != null) null else new TwoStacks(feats(i).agg)).toArray
    private var nextEnter = 0L // the next buffer index to admit
    private var nextExit = 0L  // the next buffer index to expire

    override def reset(): Unit = {
      super.reset(); nextEnter = 0L; nextExit = 0L
      var i = 0
      while (i < queues.length) { if (queues(i) != null) queues(i).clear(); i += 1 }
    }
    def oldestNeeded: Long = nextExit
    def held: Int = queues.foldLeft(dequesHeld)((n, q) => if (q == null) n else n + q.size)

    def moveTo(t: Long): Unit = {
      while (nextEnter < buffer.end && window.entered(buffer.ts(nextEnter) + window.delay, t)) { move(nextEnter, adding = true); nextEnter += 1 }
      while (nextExit < nextEnter && window.exited(buffer.ts(nextExit), t)) { move(nextExit, adding = false); nextExit += 1 }
    }
    protected def moveOther(i: Int, v: Any, ts: Long, adding: Boolean): Unit = if (adding) queues(i).push(v, ts) else queues(i).pop()
    override protected def result(i: Int, t: Long): Any = if (queues(i) == null) super.result(i, t) else queues(i).finish(t)
  }

  /** A sliding window under `available_at`: events enter in enter-time order (a heap), leave in buffer order.
    * `isIn` marks the admitted ones, so that expiry removes only what entered. Non-invertible aggregators are
    * folded afresh from the admitted events at each query. */
  private final class SlidingByAvailability(window: Window, featureIdx: IndexedSeq[Int]) extends SlidingWindow(window, featureIdx) {
    private val pending = new LongMinHeap // events not yet admitted, keyed by enter time
    private var pendingScan = 0L          // the next buffer index to put on the heap
    private var nextExit = 0L             // the next buffer index to expire
    private val isIn = new java.util.BitSet()
    private var bitBase = 0L

    override def reset(): Unit = { super.reset(); pending.clear(); pendingScan = 0L; nextExit = 0L; isIn.clear(); bitBase = 0L }
    def oldestNeeded: Long = nextExit
    def held: Int = pending.size

    def moveTo(t: Long): Unit = {
      while (pendingScan < buffer.end) {
        pending.push(math.max(buffer.ts(pendingScan) + window.delay, buffer.avail(pendingScan)), pendingScan)
        pendingScan += 1
      }
      while (!pending.isEmpty && window.entered(pending.minKey, t)) {
        val idx = pending.minIndex; pending.pop()
        // An event whose exit passed before its label arrived never enters.
        if (idx >= nextExit && !window.exited(buffer.ts(idx), t)) { setIn(idx, in = true); move(idx, adding = true) }
      }
      while (nextExit < pendingScan && window.exited(buffer.ts(nextExit), t)) {
        if (inAt(nextExit)) { setIn(nextExit, in = false); move(nextExit, adding = false) }
        nextExit += 1
      }
    }
    protected def moveOther(i: Int, v: Any, ts: Long, adding: Boolean): Unit = ()

    override protected def result(i: Int, t: Long): Any =
      if (invertible(i)) super.result(i, t)
      else {
        val f = feats(i)
        var s = f.agg.zero()
        var idx = math.max(nextExit, bitBase)
        while (idx < pendingScan) {
          if (inAt(idx)) { val v = valueIn(buffer.values(idx), f.column); if (v != null) s = f.agg.update(s, v, buffer.ts(idx)) }
          idx += 1
        }
        f.agg.finish(s, t)
      }

    private def setIn(idx: Long, in: Boolean): Unit = {
      if (idx - bitBase >= (1L << 16) && nextExit > bitBase) { // slide the bitset forward over expired indices
        val moved = isIn.get((nextExit - bitBase).toInt, math.max((nextExit - bitBase).toInt, isIn.length))
        isIn.clear(); isIn.or(moved); bitBase = nextExit
      }
      isIn.set((idx - bitBase).toInt, in)
    }
    private def inAt(idx: Long): Boolean = idx >= bitBase && isIn.get((idx - bitBase).toInt)
  }

  /** The features of order-dependent kernels, whatever their windows: folded along the tile ladder as the fetcher
    * folds them (see [[LadderFold]]). It takes each event from the buffer once. */
  private final class Laddered(featureIdx: IndexedSeq[Int]) extends WindowState(Window(1L, 0L, rightClosed = false), featureIdx) {
    private val fold = new LadderFold(feats.toIndexedSeq, withAvailability)
    private var next = 0L
    override def reset(): Unit = { super.reset(); if (fold != null) fold.reset(); next = 0L }
    def oldestNeeded: Long = next
    def held: Int = fold.held
    def moveTo(t: Long): Unit =
      while (next < buffer.end) { fold.event(buffer.ts(next), buffer.avail(next), buffer.values(next)); next += 1 }
    override def read(t: Long, out: Array[Any]): Unit = {
      fold.query(t, out, featureIdx)
      var i = 0
      while (i < feats.length) { if (out(featureIdx(i)) == null) out(featureIdx(i)) = feats(i).default; i += 1 }
    }
  }

  /** An event's value for a feature's column; a feature of no column ("every event") counts each as TRUE. */
  @inline private def valueIn(values: Array[Any], column: Int): Any = if (column < 0) java.lang.Boolean.TRUE else values(column)
}

object Sweep {
  /** How a feature's values reach its aggregator (see "Unboxed paths"). */
  sealed trait Path { def unboxing: Unboxing }
  case object Generic extends Path { def unboxing: Unboxing = throw new IllegalStateException("the generic path reads boxed values") }
  final case class Invert(unboxing: Unboxing) extends Path
  final case class Deque(isMax: Boolean, unboxing: Unboxing) extends Path

  def pathOf(f: Feature, withAvailability: Boolean): Path =
    if (f.window.lifetime || !f.agg.orderFree) Generic
    else (f.agg: Any) match {
      case u: Unboxed[_] => Invert(u.unboxing)
      case Extreme(input, isMax) if !withAvailability && f.column >= 0 => input match {
        case VType.Long | VType.Timestamp => Deque(isMax, Unboxing.AsLong)
        case VType.Double                 => Deque(isMax, Unboxing.AsDouble)
        case _                            => Generic
      }
      case _ => Generic
    }

  /** Events a key may buffer beyond twice its window before `event` compacts (keeps compaction rare). */
  val CompactSlack: Int = 1024
}

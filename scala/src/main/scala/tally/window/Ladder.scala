package tally.window

import scala.collection.mutable.ArrayBuffer

import tally.agg.Aggregator

/** The tile ladder: which spans tiles cover, and how a window's span is cut into tiles.
  *
  * Every online view uses one ladder, aligned to the UTC epoch:
  *  - **raw tiles** of one minute hold the events themselves (time, availability, values), so a window's end, which
  *    is exact, can fall anywhere: the fetcher folds the events of the one partial minute it needs;
  *  - **IR tiles** of 5 minutes, 1 hour, 1 day and 30 days hold each kernel's encoded IR, so that long and old spans
  *    cost few merges.
  * A span `[from, to)` is cut from its start: at each position the largest IR tile that starts there (is aligned)
  * and ends by `to`, else the raw minute around the position, clipped to the span. A 30-day window with a 1-day
  * hop (its start on a day boundary) therefore merges at most 30 day tiles, 23 hour tiles and 11 five-minute tiles,
  * and folds the raw events of at most 5 minutes. A window whose start is not aligned to a level (an exact window,
  * an odd hop, the ttl) climbs the ladder from raw minutes first, so the same bounds hold at both ends.
  */
object Ladder {
  val RawUs: Long = 60L * 1000000L
  /** IR tile lengths, shortest first; each divides the next and is a multiple of the raw minute. */
  val IrUs: IndexedSeq[Long] = IndexedSeq(5L * RawUs, 60L * RawUs, 24L * 60L * RawUs, 30L * 24L * 60L * RawUs)
  val Longest: Long = IrUs.last
  val lengths: IndexedSeq[Long] = RawUs +: IrUs

  def floor(x: Long, length: Long): Long = Window.floorHop(x, length)

  /** The level of a tile length: 0 for the raw minute, then the IR levels shortest first. */
  def level(length: Long): Int = {
    var i = 0
    while (i < levelLengths.length && levelLengths(i) != length) i += 1
    require(i < levelLengths.length, s"$length µs is not a tile length of the ladder (${lengths.mkString(", ")})")
    i
  }
  private val levelLengths: Array[Long] = lengths.toArray

  /** One piece of a span: an IR tile `[start, start + length)` taken whole, or the raw tile at `start` whose events
    * in `[from, to)` are folded one by one. */
  sealed trait Piece
  final case class Whole(start: Long, length: Long) extends Piece
  final case class Events(start: Long, from: Long, to: Long) extends Piece

  /** The pieces covering `[from, to)`, in time order. */
  def cut(from: Long, to: Long): IndexedSeq[Piece] = {
    val out = IndexedSeq.newBuilder[Piece]
    var pos = from
    while (pos < to) {
      var level = IrUs.length - 1
      while (level >= 0 && !(Math.floorMod(pos, IrUs(level)) == 0 && pos <= to - IrUs(level))) level -= 1
      if (level >= 0) { out += Whole(pos, IrUs(level)); pos += IrUs(level) }
      else {
        val start = floor(pos, RawUs)
        val end = math.min(to, start + RawUs)
        out += Events(start, pos, end)
        pos = end
      }
    }
    out.result()
  }

  /** Does an event count in the IR of a tile ending at `end` (settled), or stay raw in it until it is available?
    * Without `available_at` (or with a null one) every event settles. */
  @inline def settles(withAvail: Boolean, avail: Long, end: Long): Boolean =
    !withAvail || avail == Long.MinValue || avail < end

  /** Is a raw event available to a request at `at`? (`closed="right"` windows take an event available at `at`.) */
  @inline def available(e: RawEvent, at: Long, right: Boolean): Boolean =
    e.avail == Long.MinValue || (if (right) e.avail <= at else e.avail < at)

  /** The span `[from, to)` that a window of this shape reads at `at`: what its events may hold by time (availability
    * is checked per event). A lifetime window starts at `first`, the first event, rounded down to the longest
    * tile (empty without one). Sums saturate instead of wrapping, for times near the ends of time. */
  def span(at: Long, lengthUs: Option[Long], delayUs: Long, right: Boolean, hopUs: Long, first: Option[Long]): (Long, Long) = {
    val end = sat(sat(at, -delayUs), if (right) 1L else 0L)
    val start = lengthUs match {
      case None                 => first.fold(end)(f => math.min(end, floor(f, Longest)))
      case Some(w) if hopUs > 0 => floor(sat(sat(at, -delayUs), -w), hopUs)
      case Some(w)              => sat(sat(sat(at, -delayUs), -w), if (right) 1L else 0L)
    }
    (start, end)
  }

  /** a + b, clamped to the Long range instead of wrapping. */
  def sat(a: Long, b: Long): Long = { val s = a + b; if (((a ^ s) & (b ^ s)) < 0) (if (a < 0) Long.MinValue else Long.MaxValue) else s }

  /** Tiles as a fold reads them: a tile's slot by address (negative: no such tile), a slot's IR of kernel k, its
    * raw events (a raw tile's events; an IR tile's unsettled ones). */
  trait Source {
    def slot(length: Long, start: Long): Int
    def ir(slot: Int, k: Int): AnyRef
    def raw(slot: Int): scala.collection.IndexedSeq[RawEvent]
  }

  /** Kernel `k` (reading value column `column`, -1 for "every event") over the pieces of one span as of `at`: whole
    * tiles merged in time order, each followed by its unsettled events once available, then the partial minutes'
    * events; the kernel's result (null for an empty window). The one fold the fetcher and the sweep share, so that
    * kernels whose result depends on the order of merges (top_k) agree too. */
  def fold(agg: Aggregator[AnyRef], k: Int, column: Int, pieces: IndexedSeq[Piece], at: Long, right: Boolean, tiles: Source): Any = {
    var s = agg.zero()
    def update(e: RawEvent): Unit = {
      val v = if (column < 0) java.lang.Boolean.TRUE else e.values(column)
      if (v != null) s = agg.update(s, v, e.ts)
    }
    var p = 0
    while (p < pieces.length) {
      pieces(p) match {
        case Whole(st, len) =>
          val i = tiles.slot(len, st)
          if (i >= 0) {
            s = agg.merge(s, tiles.ir(i, k))
            tiles.raw(i).foreach(e => if (available(e, at, right)) update(e))
          }
        case Events(st, from, to) =>
          val i = tiles.slot(RawUs, st)
          if (i >= 0) tiles.raw(i).foreach(e => if (e.ts >= from && e.ts < to && available(e, at, right)) update(e))
      }
      p += 1
    }
    agg.finish(s, at)
  }

  /** The order of one microsecond's events in tiles: by their values (nulls first, then as text), then their
    * availability. Spark does not fix the order of equal times, so tiles and the sweep put them in this one. */
  val tieOrder: Ordering[RawEvent] = (a, b) => {
    var c = java.lang.Long.compare(a.ts, b.ts)
    var i = 0
    while (c == 0 && i < a.values.length) {
      val (x, y) = (a.values(i), b.values(i))
      c = if (x == null || y == null) java.lang.Boolean.compare(x != null, y != null)
          else { val t = String.valueOf(x).compareTo(String.valueOf(y)); if (t != 0) t else x.getClass.getName.compareTo(y.getClass.getName) }
      i += 1
    }
    if (c != 0) c else java.lang.Long.compare(a.avail, b.avail)
  }
}

/** One event as a raw tile keeps it: its time, when it became available (Long.MinValue without `available_at`) and
  * its values, one per value column of the view (null where the source has none). */
final case class RawEvent(ts: Long, avail: Long, values: Array[Any])

/** The sweep's side of the ladder, for kernels whose result depends on the order of their merges (top_k, see
  * [[tally.agg.Aggregator.orderFree]]): one key's events go into tiles as `tally materialize` puts them (the same
  * levels, the same settled rule, ties in [[Ladder.tieOrder]]), and each query folds its window's pieces with
  * [[Ladder.fold]], as the fetcher does; IRs go through their encoding when a tile closes, as stored tiles do. So
  * training rows and served values are the same to the bit, past the sketch's exact regime too.
  *
  * Events arrive in time order, every event of a microsecond before a query at it (the sweep's contract). A tile
  * closes when an event passes its end, or when a query arrives at or past its end (nothing can join it then).
  * Closed tiles that no later query can read are dropped: memory is the events and tiles of the longest window,
  * plus one 30-day tile per month of history for a lifetime window. */
final class LadderFold(feats: IndexedSeq[Feature], withAvail: Boolean) {
  private final class Tile(val start: Long, val length: Long) {
    val end: Long = start + length
    var states: Array[AnyRef] = if (length == Ladder.RawUs) null else feats.map(_.agg.zero()).toArray
    var irs: Array[Array[Byte]] = null
    val decoded = new Array[AnyRef](feats.length)
    val raw = ArrayBuffer.empty[RawEvent]

    def add(e: RawEvent): Unit =
      if (states == null || !Ladder.settles(withAvail, e.avail, end)) raw += e
      else {
        var f = 0
        while (f < feats.length) {
          val c = feats(f).column
          val v = if (c < 0) java.lang.Boolean.TRUE else e.values(c)
          if (v != null) states(f) = feats(f).agg.update(states(f), v, e.ts)
          f += 1
        }
      }
    def close(): Unit = if (states != null) { irs = feats.indices.map(f => feats(f).agg.encode(states(f))).toArray; states = null }
    def ir(f: Int): AnyRef = { if (decoded(f) == null) decoded(f) = feats(f).agg.decode(irs(f)); decoded(f) }
  }

  private val levels = Ladder.lengths
  private val open = new Array[Tile](levels.length)
  private val closed = Array.fill(levels.length)(new java.util.TreeMap[java.lang.Long, Tile]())
  private val ties = ArrayBuffer.empty[RawEvent]
  private var first = Long.MinValue
  private val keepsLongest = feats.exists(_.window.lifetime)
  private val found = ArrayBuffer.empty[Tile]

  private val source = new Ladder.Source {
    def slot(length: Long, start: Long): Int = {
      val level = Ladder.level(length)
      val t = closed(level).get(start) match {
        case null => if (open(level) != null && open(level).start == start) open(level) else null
        case c    => c
      }
      if (t == null) -1 else { found += t; found.length - 1 }
    }
    def ir(slot: Int, k: Int): AnyRef = found(slot).ir(k)
    def raw(slot: Int): scala.collection.IndexedSeq[RawEvent] = found(slot).raw
  }

  def reset(): Unit = {
    var i = 0
    while (i < levels.length) { open(i) = null; closed(i).clear(); i += 1 }
    ties.clear(); first = Long.MinValue
  }

  def event(ts: Long, avail: Long, values: Array[Any]): Unit = {
    if (ties.nonEmpty && ties(0).ts != ts) flush()
    if (first == Long.MinValue) first = ts
    ties += RawEvent(ts, avail, values)
  }

  /** Events held as raw events (a probe for the memory tests). */
  def held: Int = {
    var n = ties.length
    levels.indices.foreach { i =>
      if (open(i) != null) n += open(i).raw.length
      closed(i).values.forEach(t => n += t.raw.length)
    }
    n
  }

  /** Fills `out(featureIdx(f))` with feature f as of t (null for an empty window). */
  def query(t: Long, out: Array[Any], featureIdx: IndexedSeq[Int]): Unit = {
    flush()
    var i = 0
    while (i < levels.length) {
      val o = open(i)
      if (o != null && o.end <= Ladder.sat(t, 1L)) { o.close(); closed(i).put(o.start, o); open(i) = null }
      i += 1
    }
    var keepFrom = Long.MaxValue // closed tiles ending by then no later query reads (but a lifetime's 30-day ones)
    var f = 0
    while (f < feats.length) {
      val w = feats(f).window
      val (from, to) = Ladder.span(t, if (w.lifetime) None else Some(w.length), w.delay, w.rightClosed, w.hop,
        if (first == Long.MinValue) None else Some(first))
      found.clear()
      out(featureIdx(f)) = Ladder.fold(feats(f).agg, f, feats(f).column, Ladder.cut(from, to), t, w.rightClosed, source)
      keepFrom = math.min(keepFrom, if (w.lifetime) Ladder.floor(to, Ladder.Longest) else from)
      f += 1
    }
    i = 0
    while (i < levels.length) {
      if (!(keepsLongest && levels(i) == Ladder.Longest)) {
        val m = closed(i)
        while (!m.isEmpty && m.firstEntry.getValue.end <= keepFrom) m.pollFirstEntry()
      }
      i += 1
    }
  }

  /** Puts the events of one microsecond into the tiles, in tie order. */
  private def flush(): Unit = if (ties.nonEmpty) {
    val events = if (ties.length > 1) ties.sorted(Ladder.tieOrder) else ties
    events.foreach { e =>
      var i = 0
      while (i < levels.length) {
        val start = Ladder.floor(e.ts, levels(i))
        val o = open(i)
        if (o != null && o.start != start) { o.close(); closed(i).put(o.start, o); open(i) = null }
        if (open(i) == null) open(i) = new Tile(start, levels(i))
        open(i).add(e)
        i += 1
      }
    }
    ties.clear()
  }
}

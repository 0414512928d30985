package tally.online

import tally.agg.{Aggregator, Aggregators, Codec, VType, Values}
import tally.bridge.ViewSpec
import tally.window.Window

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
}

/** One event as a raw tile keeps it: its time, when it became available (Long.MinValue without `available_at`) and
  * its values, one per value column of the view (null where the source has none). */
final case class RawEvent(ts: Long, avail: Long, values: Array[Any])

/** A tile's content. Raw tiles: every event of the minute, no IRs. IR tiles: per kernel, the IR of the tile's
  * *settled* events (available before the tile ends, or without `available_at`), how many those are (the ttl asks
  * whether any event is inside), and the unsettled events raw, so that a request counts each exactly when the
  * offline sweep does: once available. Without `available_at` every event is settled.
  *
  * Binary form (format byte 0x40, then big-endian): kernel count, settled count, each IR (length-prefixed), raw
  * event count, each raw event (ts, whether it has an availability, the availability, then per value column a
  * presence byte and the value as [[Values.write]] writes it). */
final case class TilePayload(settled: Long, irs: IndexedSeq[Array[Byte]], raw: IndexedSeq[RawEvent])

object TilePayload {
  private val Format: Byte = 0x40

  def encode(p: TilePayload, columnTypes: IndexedSeq[VType]): Array[Byte] = {
    val w = Codec.writer(Format, 64)
    w.int(p.irs.length).long(p.settled)
    p.irs.foreach(w.bytes)
    w.int(p.raw.length)
    p.raw.foreach { e =>
      w.long(e.ts).bool(e.avail != Long.MinValue)
      if (e.avail != Long.MinValue) w.long(e.avail)
      var i = 0
      while (i < columnTypes.length) {
        val v = e.values(i)
        w.bool(v != null)
        if (v != null) Values.write(w, columnTypes(i), v.asInstanceOf[AnyRef])
        i += 1
      }
    }
    w.result()
  }

  def decode(bytes: Array[Byte], columnTypes: IndexedSeq[VType]): TilePayload = {
    val r = Codec.reader(bytes, Format, "tile")
    val nIrs = r.int()
    val settled = r.long()
    val irs = IndexedSeq.fill(nIrs)(r.bytes())
    val raw = IndexedSeq.fill(r.int()) {
      val ts = r.long()
      val avail = if (r.bool()) r.long() else Long.MinValue
      RawEvent(ts, avail, Array.tabulate[Any](columnTypes.length)(i => if (r.bool()) Values.read(r, columnTypes(i)) else null))
    }
    r.done()
    TilePayload(settled, irs, raw)
  }
}

/** What tiles of one view version hold, derived from its spec and its value columns' types: the value columns (in
  * the spec's order, as the offline sweep reads them) and the kernels, one per distinct (function, column, params)
  * — features that differ only in their window share a kernel and so one IR per tile. Serializable: the tile job
  * ships it to the executors. */
final class TileLayout(val spec: ViewSpec, columnTypes: Map[String, VType]) extends Serializable {
  val columns: IndexedSeq[String] = spec.features.flatMap(_.column).distinct.toIndexedSeq
  val types: IndexedSeq[VType] = columns.map(c => columnTypes.getOrElse(c, throw new IllegalArgumentException(
    s"view '${spec.view}': no type for value column '$c' (known: ${columnTypes.keys.toSeq.sorted.mkString(", ")})")))

  private val kernelOf: IndexedSeq[(String, Option[String], Map[String, Any])] =
    spec.features.map(f => (f.function, f.column, f.params)).distinct.toIndexedSeq
  /** Per kernel: its aggregator and its value column's index (-1: every event counts, as TRUE). */
  val kernels: IndexedSeq[(Aggregator[AnyRef], Int)] = kernelOf.map { case (function, column, params) =>
    val vtype = column.map(c => types(columns.indexOf(c))).getOrElse(VType.Long)
    val agg = try Aggregators.build(function, vtype, params) catch {
      case e: IllegalArgumentException => throw new IllegalArgumentException(
        s"view '${spec.view}', function '$function'${column.fold("")(c => s" of '$c'")}: ${e.getMessage}", e)
    }
    agg -> column.map(columns.indexOf).getOrElse(-1)
  }
  /** Per feature (spec order): its kernel. */
  val kernelOfFeature: IndexedSeq[Int] = spec.features.map(f => kernelOf.indexOf((f.function, f.column, f.params))).toIndexedSeq

  /** An event's value for kernel k (TRUE for "every event"); null values are skipped by the caller. */
  @inline def valueFor(k: Int, values: Array[Any]): Any = { val c = kernels(k)._2; if (c < 0) java.lang.Boolean.TRUE else values(c) }
}

/** Builds one view version's tiles from its events, key by key, in time order: the same kernels and IRs the
  * offline sweep folds. Feed `key`, then that key's events by non-decreasing time with `event`, then the next key;
  * `tiles` hands out the tiles closed so far (a tile closes when an event passes its end, or at `finish`). Memory is
  * one open tile per ladder level.
  *
  * Events before `coarseBefore` (a multiple of the longest tile) go to the longest tiles only: what a lifetime
  * window takes of the history beyond the bounded windows' reach, since the ladder's cut of its span climbs down
  * from 30-day tiles. */
final class TileBuilder(layout: TileLayout, view: String, version: Int, stamp: Long, coarseBefore: Long = Long.MinValue) {
  require(coarseBefore == Long.MinValue || Math.floorMod(coarseBefore, Ladder.Longest) == 0,
    s"view '$view': coarse tiles must end on a ${Ladder.Longest} µs boundary, not at $coarseBefore")
  private val levels = Ladder.lengths
  private val open = new Array[Open](levels.length)
  private val out = new java.util.ArrayDeque[Tile]()
  private var key: EntityKey = null
  private var last = Long.MinValue
  private val withAvail = layout.spec.availableAt.isDefined

  private final class Open(val start: Long, val length: Long) {
    val states: Array[AnyRef] = if (length == Ladder.RawUs) null else layout.kernels.map(_._1.zero()).toArray
    var settled = 0L
    val raw = IndexedSeq.newBuilder[RawEvent]
    var nRaw = 0
    def add(ts: Long, avail: Long, values: Array[Any]): Unit =
      if (states == null || (withAvail && avail != Long.MinValue && avail >= start + length)) {
        raw += RawEvent(ts, avail, values); nRaw += 1
      } else {
        settled += 1
        var k = 0
        while (k < states.length) {
          val v = layout.valueFor(k, values)
          if (v != null) states(k) = layout.kernels(k)._1.update(states(k), v, ts)
          k += 1
        }
      }
    def close(): Tile = {
      val irs = if (states == null) IndexedSeq.empty else states.indices.map(k => layout.kernels(k)._1.encode(states(k)))
      Tile(view, version, key, start, length, TilePayload.encode(TilePayload(settled, irs, raw.result()), layout.types), stamp)
    }
  }

  /** Starts the next key (closing the previous key's tiles). */
  def key(k: EntityKey): Unit = { closeAll(); key = k; last = Long.MinValue }

  /** One event of the current key; `avail` is Long.MinValue when the source has no `available_at` (or it is null,
    * which the offline sweep reads the same way). */
  def event(ts: Long, avail: Long, values: Array[Any]): Unit = {
    require(key != null, s"view '$view': an event before any key")
    require(ts >= last, s"view '$view', key ${key.encoded}: events out of time order ($ts after $last)")
    last = ts
    var i = if (ts < coarseBefore) levels.length - 1 else 0
    while (i < levels.length) {
      val start = Ladder.floor(ts, levels(i))
      if (open(i) != null && open(i).start != start) { out.add(open(i).close()); open(i) = null }
      if (open(i) == null) open(i) = new Open(start, levels(i))
      open(i).add(ts, avail, values)
      i += 1
    }
  }

  /** Closes the last key's tiles. */
  def finish(): Unit = { closeAll(); key = null }

  /** The tiles closed since the last call. */
  def tiles(): Seq[Tile] = { val t = Seq.newBuilder[Tile]; while (!out.isEmpty) t += out.poll(); t.result() }

  private def closeAll(): Unit = {
    var i = 0
    while (i < open.length) { if (open(i) != null) { out.add(open(i).close()); open(i) = null }; i += 1 }
  }
}

/** Spark simpleString type names, as serving specs hold them, to the kernels' value types. */
object TypeNames {
  private val decimal = """decimal\((\d+),\s*(\d+)\)""".r
  def vtype(name: String): Option[VType] = name.trim.toLowerCase match {
    case "tinyint" | "smallint" | "int" | "integer" | "bigint" | "long" => Some(VType.Long)
    case "float" | "double"                                             => Some(VType.Double)
    case decimal(p, s)                                                  => Some(VType.Decimal(p.toInt, s.toInt))
    case "string"                                                       => Some(VType.String)
    case "boolean"                                                      => Some(VType.Boolean)
    case "timestamp" | "timestamp_ntz"                                  => Some(VType.Timestamp)
    case _                                                              => None
  }
  def name(t: VType): String = t match {
    case VType.Long          => "bigint"
    case VType.Double        => "double"
    case VType.Decimal(p, s) => s"decimal($p,$s)"
    case VType.String        => "string"
    case VType.Boolean       => "boolean"
    case VType.Timestamp     => "timestamp"
    case VType.ArrayOf(e)    => s"array<${name(e)}>"
    case VType.StructOf(fs)  => fs.map { case (n, ft) => s"$n:${name(ft)}" }.mkString("struct<", ",", ">")
  }
}

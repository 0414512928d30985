package tally.online

import tally.agg.{Aggregator, Aggregators, Codec, VType, Values}
import tally.bridge.ViewSpec
import tally.window.{Ladder, RawEvent}

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
    p.raw.foreach(writeRaw(w, _, columnTypes))
    w.result()
  }

  private def writeRaw(w: Codec.Writer, e: RawEvent, columnTypes: IndexedSeq[VType]): Unit = {
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

  private def readRaw(r: Codec.Reader, columnTypes: IndexedSeq[VType]): RawEvent = {
    val ts = r.long()
    val avail = if (r.bool()) r.long() else Long.MinValue
    RawEvent(ts, avail, Array.tabulate[Any](columnTypes.length)(i => if (r.bool()) Values.read(r, columnTypes(i)) else null))
  }

  def decode(bytes: Array[Byte], columnTypes: IndexedSeq[VType]): TilePayload = {
    val r = Codec.reader(bytes, Format, "tile")
    val nIrs = r.int()
    val settled = r.long()
    val irs = IndexedSeq.fill(nIrs)(r.bytes())
    val raw = IndexedSeq.fill(r.int())(readRaw(r, columnTypes))
    r.done()
    TilePayload(settled, irs, raw)
  }

  /** An encoded payload's parts, located without decoding its raw events: what [[TileFold]] needs to pass a side's
    * raw events through as bytes (their encoding is one function of the events, so the bytes are what `encode` of
    * the decoded events writes). */
  private[online] final class Parts(val bytes: Array[Byte]) {
    private val buf = java.nio.ByteBuffer.wrap(bytes) // big-endian, as Codec writes
    require(bytes.nonEmpty && bytes(0) == Format,
      s"cannot decode a tile: format byte ${if (bytes.isEmpty) "missing" else f"0x${bytes(0)}%02x"}, expected 0x40 " +
        "(written by another tally version?)")
    val irs: Int = buf.getInt(1)
    val settled: Long = buf.getLong(5)
    /** Where IR k's length prefix sits, then where the raw events' count does. */
    private val at: Array[Int] = new Array[Int](irs + 1)
    at(0) = 13
    (0 until irs).foreach(k => at(k + 1) = at(k) + 4 + buf.getInt(at(k)))
    val rawCount: Int = buf.getInt(at(irs))
    /** The raw events' bytes: from after their count to the end. */
    val rawFrom: Int = at(irs) + 4
    def ir(k: Int): Array[Byte] = java.util.Arrays.copyOfRange(bytes, at(k) + 4, at(k + 1))
    /** The first raw event's time (the events are in the builder's order: by time); rawCount > 0. */
    def firstTs: Long = buf.getLong(rawFrom)
    /** The last raw event's time, found by passing over the others' values; rawCount > 0. */
    def lastTs(columnTypes: IndexedSeq[VType]): Long = {
      val r = Codec.reader(bytes, Format, "tile")
      r.skip(rawFrom - 1)
      var ts = 0L
      var n = 0
      while (n < rawCount) {
        ts = r.long()
        if (r.bool()) r.skip(8)
        var i = 0
        while (i < columnTypes.length) { if (r.bool()) Values.skip(r, columnTypes(i)); i += 1 }
        n += 1
      }
      r.done()
      ts
    }
    /** The raw events, decoded. */
    def raw(columnTypes: IndexedSeq[VType]): IndexedSeq[RawEvent] = {
      val r = Codec.reader(bytes, Format, "tile")
      r.skip(rawFrom - 1)
      val out = IndexedSeq.fill(rawCount)(readRaw(r, columnTypes))
      r.done()
      out
    }
  }

  /** A payload from its parts: the settled count, the encoded IRs, and the raw events either as another payload's
    * bytes (`rawOf`, passed through) or, when `rawOf` is null, as `raw` encoded here. */
  private[online] def assemble(settled: Long, irs: Array[Array[Byte]], rawOf: Seq[Parts], raw: IndexedSeq[RawEvent],
                               columnTypes: IndexedSeq[VType]): Array[Byte] = {
    val w = Codec.writer(Format, 64 + irs.map(_.length + 4).sum + rawOf.map(p => p.bytes.length - p.rawFrom).sum)
    w.int(irs.length).long(settled)
    irs.foreach(w.bytes)
    if (rawOf.nonEmpty) {
      w.int(rawOf.map(_.rawCount).sum)
      rawOf.foreach(p => w.raw(p.bytes, p.rawFrom, p.bytes.length - p.rawFrom))
    } else { w.int(raw.length); raw.foreach(writeRaw(w, _, columnTypes)) }
    w.result()
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
  private val ties = scala.collection.mutable.ArrayBuffer.empty[RawEvent]
  private val withAvail = layout.spec.availableAt.isDefined

  private final class Open(val start: Long, val length: Long) {
    val states: Array[AnyRef] = if (length == Ladder.RawUs) null else layout.kernels.map(_._1.zero()).toArray
    var settled = 0L
    val raw = IndexedSeq.newBuilder[RawEvent]
    var nRaw = 0
    def add(ts: Long, avail: Long, values: Array[Any]): Unit =
      if (states == null || !Ladder.settles(withAvail, avail, start + length)) {
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
    * which the offline sweep reads the same way). The events of one microsecond wait for the next time and enter
    * the tiles in [[Ladder.tieOrder]], whatever order Spark gave them. */
  def event(ts: Long, avail: Long, values: Array[Any]): Unit = {
    require(key != null, s"view '$view': an event before any key")
    require(ts >= last, s"view '$view', key ${key.encoded}: events out of time order ($ts after $last)")
    if (ts != last) flush()
    last = ts
    ties += RawEvent(ts, avail, values)
  }

  private def flush(): Unit = if (ties.nonEmpty) {
    (if (ties.length > 1) ties.sorted(Ladder.tieOrder) else ties).foreach { e =>
      var i = if (e.ts < coarseBefore) levels.length - 1 else 0
      while (i < levels.length) {
        val start = Ladder.floor(e.ts, levels(i))
        if (open(i) != null && open(i).start != start) { out.add(open(i).close()); open(i) = null }
        if (open(i) == null) open(i) = new Open(start, levels(i))
        open(i).add(e.ts, e.avail, e.values)
        i += 1
      }
    }
    ties.clear()
  }

  /** Closes the last key's tiles. */
  def finish(): Unit = { closeAll(); key = null }

  /** The tiles closed since the last call. */
  def tiles(): Seq[Tile] = { val t = Seq.newBuilder[Tile]; while (!out.isEmpty) t += out.poll(); t.result() }

  private def closeAll(): Unit = {
    flush()
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

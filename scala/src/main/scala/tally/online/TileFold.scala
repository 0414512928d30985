package tally.online

import tally.agg.Aggregator
import tally.window.{Ladder, RawEvent}

/** Folds the tiles a stream micro-batch built from its own events into the tiles the store already holds. Pure:
  * the Spark layer ([[tally.spark.StreamJob]]) builds the batch's tiles with the same [[TileBuilder]] as
  * `materialize`, reads the stored tiles at the same addresses, and writes what this returns.
  *
  * Why a merge is right: a tile is, per kernel, the IR of its settled events, their count, and its unsettled (or
  * raw-minute) events as they are. The builder decides settled-or-raw from each event's own time and availability
  * against the tile's end, never from the other events, so the batch's tile and the stored tile split their events
  * as one tile built from both would; IRs of disjoint events combine with the kernels' `merge`, counts add, and raw
  * events are concatenated in the builder's order (time, then [[Ladder.tieOrder]]).
  *
  * Exactly once: a stored tile already stamped with this batch's stamp holds the batch's events (an earlier attempt
  * of the same batch wrote it before dying), so it is skipped, not folded twice. */
object TileFold {

  /** What to write for `fresh` (a tile of this batch, stamped with the batch's stamp) given the stored tile at its
    * address, if any: None when the stored tile already carries the batch's stamp. */
  def fold(layout: TileLayout, stored: Option[Tile], fresh: Tile): Option[Tile] = stored match {
    case None                                  => Some(fresh)
    case Some(old) if old.stamp == fresh.stamp => None
    case Some(old) =>
      require(old.startUs == fresh.startUs && old.lengthUs == fresh.lengthUs && old.key == fresh.key &&
        old.version == fresh.version && old.view == fresh.view, s"view '${fresh.view}' key ${fresh.key.encoded}: folding $fresh into $old")
      Some(fresh.copy(payload = mergeEncoded(layout, old.payload, fresh.payload)))
  }

  /** [[merge]] on encoded payloads, byte for byte what `encode(merge(decode(a), decode(b)))` gives
    * (TileFoldSuite), for less: a stream batch folds some 20,000-50,000 tiles on the driver, and decoding every raw
    * event into objects only to write it back was a good part of the fold (bench/README.md). The IRs merge per
    * kernel as in [[merge]]; raw events pass through as bytes when only one side has any (every IR tile of a source
    * without `available_at`) or when one side's all come before the other's, and are decoded and ordered only
    * otherwise. */
  def mergeEncoded(layout: TileLayout, a: Array[Byte], b: Array[Byte]): Array[Byte] = {
    val (pa, pb) = (new TilePayload.Parts(a), new TilePayload.Parts(b))
    checkKernels(layout, pa.irs, pb.irs)
    val irs = new Array[Array[Byte]](pa.irs)
    var k = 0
    while (k < irs.length) { irs(k) = mergeIr(layout.kernels(k)._1, pa.ir(k), pb.ir(k)); k += 1 }
    val settled = pa.settled + pb.settled
    if (pb.rawCount == 0) TilePayload.assemble(settled, irs, Seq(pa), Vector.empty, layout.types)
    else if (pa.rawCount == 0) TilePayload.assemble(settled, irs, Seq(pb), Vector.empty, layout.types)
    // Both hold raw events (a minute tile, or unsettled events): in builder order each, so when one side's events all
    // come before the other's in time, the two run one after the other as they are. A stream's later batch mostly
    // brings later events. Otherwise (a tie at the seam, events out of order) they are decoded and ordered.
    else if (pa.lastTs(layout.types) < pb.firstTs) TilePayload.assemble(settled, irs, Seq(pa, pb), Vector.empty, layout.types)
    else if (pb.lastTs(layout.types) < pa.firstTs) TilePayload.assemble(settled, irs, Seq(pb, pa), Vector.empty, layout.types)
    else TilePayload.assemble(settled, irs, Nil, ordered(pa.raw(layout.types) ++ pb.raw(layout.types)), layout.types)
  }

  /** The payload of one tile holding the events of `a` and of `b` (disjoint): the reference [[mergeEncoded]] is
    * checked against. */
  def merge(layout: TileLayout, a: TilePayload, b: TilePayload): TilePayload = {
    checkKernels(layout, a.irs.length, b.irs.length)
    val irs = a.irs.indices.map(k => mergeIr(layout.kernels(k)._1, a.irs(k), b.irs(k)))
    TilePayload(a.settled + b.settled, irs, ordered(a.raw ++ b.raw))
  }

  private def mergeIr(agg: Aggregator[AnyRef], a: Array[Byte], b: Array[Byte]): Array[Byte] =
    agg.encode(agg.merge(agg.decode(a), agg.decode(b)))

  private def checkKernels(layout: TileLayout, a: Int, b: Int): Unit =
    require(a == b, s"view '${layout.spec.view}': tiles with $a and $b kernels; a tile of another definition is in the " +
      "store (materialize the view again)")

  private val order: Ordering[RawEvent] = Ordering.by[RawEvent, Long](_.ts).orElse(Ladder.tieOrder)

  private def ordered(raw: IndexedSeq[RawEvent]): IndexedSeq[RawEvent] = if (raw.length < 2) raw else raw.sorted(order)
}

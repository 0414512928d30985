package tally.online

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
      require(old.address == fresh.address, s"view '${fresh.view}' key ${fresh.key.encoded}: folding ${fresh} into $old")
      Some(fresh.copy(payload = TilePayload.encode(merge(layout, TilePayload.decode(old.payload, layout.types),
        TilePayload.decode(fresh.payload, layout.types)), layout.types)))
  }

  /** The payload of one tile holding the events of `a` and of `b` (disjoint). */
  def merge(layout: TileLayout, a: TilePayload, b: TilePayload): TilePayload = {
    require(a.irs.length == b.irs.length, s"view '${layout.spec.view}': tiles with ${a.irs.length} and ${b.irs.length} " +
      "kernels; a tile of another definition is in the store (materialize the view again)")
    val irs = a.irs.indices.map { k =>
      val agg = layout.kernels(k)._1
      agg.encode(agg.merge(agg.decode(a.irs(k)), agg.decode(b.irs(k))))
    }
    TilePayload(a.settled + b.settled, irs, ordered(a.raw ++ b.raw))
  }

  private val order: Ordering[RawEvent] = Ordering.by[RawEvent, Long](_.ts).orElse(Ladder.tieOrder)

  private def ordered(raw: IndexedSeq[RawEvent]): IndexedSeq[RawEvent] = if (raw.length < 2) raw else raw.sorted(order)
}

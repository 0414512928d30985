package tally.online

import scala.util.Random

import tally.agg.{Aggregators, Catalogue, VType}
import tally.bridge.{FeatureSpec, ViewSpec}
import tally.window.Ladder

/** What a stream relies on ([[TileFold]]): events arriving in micro-batches, out of order, each batch's tiles folded
  * into the stored ones, give the tiles built from all events at once — for every (function, input type) the
  * registry allows, with `available_at` — and a batch replayed after it died half-way changes nothing. */
class TileFoldSuite extends munit.FunSuite {
  val M: Long = 60L * 1000000L
  val H: Long = 60L * M
  val T0: Long = 1709251200L * 1000000L // 2024-03-01 00:00 UTC
  // Sizes that keep sketches exact: past their exact regimes, estimates depend on the order of merges.
  val sizes: Map[String, Map[String, Any]] = Map(
    "approx_distinct" -> Map("lg_k" -> 14), "approx_percentile" -> Map("k" -> 2000), "top_k" -> Map("k" -> 40))

  def gen(vt: VType): Random => AnyRef = Catalogue.scalar(vt)

  type Store = Map[(String, Int, EntityKey, Long, Long), Tile]

  def build(layout: TileLayout, stamp: Long, events: Seq[(String, Long, Long, Array[Any])]): Seq[Tile] = {
    val b = new TileBuilder(layout, "folded", 1, stamp)
    events.groupBy(_._1).toSeq.sortBy(_._1).foreach { case (key, evs) =>
      b.key(EntityKey.of(key)); evs.sortBy(_._2).foreach { case (_, ts, a, v) => b.event(ts, a, v) }
    }
    b.finish(); b.tiles()
  }

  def fold(layout: TileLayout, store: Store, tiles: Seq[Tile]): Store =
    store ++ tiles.flatMap(t => TileFold.fold(layout, store.get(t.address), t)).map(t => t.address -> t)

  /** A tile's content as values: settled count, each kernel's result at the tile's end, raw events. */
  def content(layout: TileLayout, t: Tile): (Long, Seq[Any], Seq[(Long, Long, Seq[Any])]) = {
    val p = TilePayload.decode(t.payload, layout.types)
    (p.settled, p.irs.indices.map(k => layout.kernels(k)._1.finish(layout.kernels(k)._1.decode(p.irs(k)), t.endUs)),
      p.raw.map(e => (e.ts, e.avail, e.values.toSeq)))
  }

  def close(a: Any, b: Any): Boolean = (a, b) match {
    case (x: java.lang.Double, y: java.lang.Double) =>
      x.equals(y) || math.abs(x - y) <= 1e-9 * math.max(1.0, math.max(math.abs(x), math.abs(y)))
    case (x: Seq[_], y: Seq[_]) => x.length == y.length && x.zip(y).forall { case (p, q) => close(p, q) }
    case _ => a == b
  }

  for (fn <- Aggregators.functions; vt <- VType.scalars if Aggregators.takes(fn, vt)) {
    test(s"$fn($vt): batches folded out of order into stored tiles equal the tiles of all events; a replay changes nothing") {
      val params = Catalogue.cases.find(_.function == fn).map(_.params).getOrElse(Map.empty) ++ sizes.getOrElse(fn, Map.empty)
      val spec = ViewSpec("folded", 1, Seq("k"), "ts", Some("avail"), None,
        Seq(FeatureSpec("f", fn, Some("v"), Some(24 * H), 0L, "left", H, params, None)))
      val layout = new TileLayout(spec, Map("v" -> vt))
      val r = new Random(fn.hashCode * 31 + vt.hashCode)
      val events = (0 until 300).map { _ =>
        val ts = T0 + (if (r.nextInt(4) == 0) r.nextLong(2 * 24 * H) / M * M else r.nextLong(2 * 24 * H)) // ties
        val avail = if (r.nextInt(3) == 0) Long.MinValue else ts + r.nextLong(3 * H)
        (if (r.nextBoolean()) "a" else "b", ts, avail, Array[Any](if (r.nextInt(10) == 0) null else gen(vt)(r)))
      }
      // Arrival order: by time, each event late by up to 10 minutes, cut into 6 micro-batches.
      val arrived = events.sortBy(e => e._2 + r.nextLong(10 * M)).grouped(50).toSeq
      var store: Store = Map.empty
      arrived.zipWithIndex.foreach { case (batch, id) => store = fold(layout, store, build(layout, id.toLong, batch)) }
      val whole = build(layout, 99L, events).map(t => t.address -> t).toMap
      assertEquals(store.keySet, whole.keySet)
      whole.foreach { case (address, t) =>
        val (got, want) = (content(layout, store(address)), content(layout, t))
        assert(got._1 == want._1 && got._3 == want._3 && close(got._2, want._2), s"tile $address: $got, from all events $want")
      }

      // The last batch again, after a first attempt that wrote half its tiles and died: the same store.
      val last = build(layout, (arrived.length - 1).toLong, arrived.last)
      val before = fold(layout, Map.empty[(String, Int, EntityKey, Long, Long), Tile] ++
        arrived.init.zipWithIndex.foldLeft(Map.empty: Store) { case (s, (b, id)) => fold(layout, s, build(layout, id.toLong, b)) }, Nil)
      val half = fold(layout, before, last.take(last.length / 2))
      assertEquals(fold(layout, half, last), store)
      assertEquals(fold(layout, store, last), store, "a batch replayed whole after it was written changes nothing")
      assert(Ladder.lengths.forall(l => store.keys.exists(_._4 == l)), "every ladder level was folded")
    }
  }

  for (fn <- Aggregators.functions; vt <- VType.scalars if Aggregators.takes(fn, vt)) {
    test(s"$fn($vt): mergeEncoded is encode(merge(decode, decode)), byte for byte, with raw events on neither, one or both sides") {
      val params = Catalogue.cases.find(_.function == fn).map(_.params).getOrElse(Map.empty)
      val spec = ViewSpec("folded", 1, Seq("k"), "ts", Some("avail"), None,
        Seq(FeatureSpec("f", fn, Some("v"), Some(24 * H), 0L, "left", H, params, None)))
      val layout = new TileLayout(spec, Map("v" -> vt))
      val r = new Random(fn.hashCode * 17 + vt.hashCode)
      // Two disjoint sets of events over a few keys and hours, each built into tiles: the stored side and the batch.
      // `half`: every event in the first (0) or second (1) half of its minute, or anywhere (-1), so that one side's
      // raw events come before the other's in some folds, with ties at the seam in others.
      def events(n: Int, unsettled: Int, half: Int = -1) = (0 until n).map { _ =>
        val any = if (r.nextInt(4) == 0) r.nextLong(3 * H) / M * M else r.nextLong(3 * H) // ties
        val ts = T0 + (if (half < 0) any else any / M * M + half * (M / 2) + (if (r.nextInt(4) == 0) 0 else r.nextLong(M / 2)))
        val avail = if (r.nextInt(unsettled) != 0) Long.MinValue else ts + r.nextLong(2 * H)
        (s"k${r.nextInt(4)}", ts, avail, Array[Any](if (r.nextInt(10) == 0) null else gen(vt)(r)))
      }
      val pairs = for {
        (na, ua, ha, nb, ub, hb) <- Seq((200, 3, -1, 200, 3, -1), (200, 1000000, -1, 60, 2, -1), (30, 2, -1, 300, 1000000, -1),
          (5, 1000000, -1, 5, 1000000, -1), (300, 3, 0, 300, 3, 1), (300, 3, 1, 300, 3, 0), (300, 1000000, 0, 300, 1000000, 0))
        a = build(layout, 1L, events(na, ua, ha)).map(t => t.address -> t).toMap
        t <- build(layout, 2L, events(nb, ub, hb)) if a.contains(t.address)
      } yield (a(t.address), t)
      def raws(t: Tile) = TilePayload.decode(t.payload, layout.types).raw.nonEmpty
      val kinds = pairs.map { case (a, b) => (raws(a), raws(b)) }.toSet
      assertEquals(kinds, Set((false, false), (false, true), (true, false), (true, true)), "every raw-events case is covered")
      pairs.foreach { case (a, b) =>
        val want = TilePayload.encode(TileFold.merge(layout, TilePayload.decode(a.payload, layout.types),
          TilePayload.decode(b.payload, layout.types)), layout.types)
        assertEquals(TileFold.mergeEncoded(layout, a.payload, b.payload).toSeq, want.toSeq, s"tile ${a.address}")
        assertEquals(TileFold.fold(layout, Some(a), b).map(_.payload.toSeq), Some(want.toSeq))
      }
    }
  }
}

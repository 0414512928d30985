package tally.window

import tally.agg.{Aggregators, VType}

/** Window edges, one event at a time, for exact and hopped windows (DESIGN.md, "Time semantics" and "Online
  * serving": at t a hopped window holds floor_hop(t-d-w) <= ts, with the end of the exact window). Each case runs
  * through both sliding-window paths (without and with `available_at`). */
class WindowBoundarySuite extends munit.FunSuite {
  /** How many of `events` a count over `w` sees at each of `queries` (in time order). */
  private def counts(w: Window, events: Seq[Long], queries: Seq[Long]): Seq[Seq[Long]] =
    for (withAvail <- Seq(false, true)) yield {
      val sweep = new Sweep("edges", IndexedSeq(Feature("n", Aggregators.build("count", VType.Long), -1, w, null)), None, withAvail)
      sweep.reset("k")
      val out = new Array[Any](1)
      val stream = (events.map(t => (t, 0)) ++ queries.map(t => (t, 1))).sorted
      stream.flatMap { case (t, kind) =>
        if (kind == 0) { sweep.event(t, Long.MinValue, Array.empty); None }
        else { sweep.query(t, out); Some(out(0).asInstanceOf[Long]) }
      }
    }

  private def seen(w: Window, event: Long, t: Long): Boolean = {
    val both = counts(w, Seq(event), Seq(t)).map(_.head)
    assertEquals(both(0), both(1), s"$w, event at $event, query at $t: the two sliding paths disagree")
    both(0) == 1L
  }

  // w = 100, d = 20, hop = 30, query at t = 1000: t-d = 980, t-d-w = 880, floor_hop(880) = 870.
  private val (t, w, d, hop) = (1000L, 100L, 20L, 30L)

  for (right <- Seq(false, true)) {
    val closed = if (right) "right" else "left"
    val hopped = Window(w, d, right, hop)

    test(s"hopped, $closed-closed: an event exactly at floor_hop(t-d-w) is inside, one microsecond before it is not") {
      assertEquals(Window.floorHop(t - d - w, hop), 870L)
      assert(seen(hopped, 870L, t))
      assert(!seen(hopped, 869L, t))
      assert(seen(hopped, 880L, t)) // the exact start is inside too, whichever `closed`
    }

    test(s"hopped, $closed-closed: at the end, an event at t-d follows the exact window's rule") {
      assertEquals(seen(hopped, t - d, t), right)
      assertEquals(seen(Window(w, d, right), t - d, t), right)
      assert(seen(hopped, t - d - 1, t))
    }

    test(s"hopped, $closed-closed: an event leaves when the start passes its hop, not when t-d-w passes it") {
      // The event at 870 is inside while floor_hop(t-d-w) <= 870, i.e. until t-d-w reaches the next boundary 900.
      assertEquals(counts(hopped, Seq(870L), Seq(999L, 1000L, 1019L, 1020L)).head, Seq(1L, 1L, 1L, 0L))
      val exact = Window(w, d, right)
      assertEquals(counts(exact, Seq(870L), Seq(989L, 990L, 991L)).head, if (right) Seq(1L, 0L, 0L) else Seq(1L, 1L, 0L))
    }

    test(s"hopped, $closed-closed: boundaries are aligned to the epoch with floorDiv, before 1970 too") {
      // t = -1000: t-d-w = -1120, floor_hop = -1140 (truncating division would give -1110).
      assertEquals(Window.floorHop(-1120L, hop), -1140L)
      assert(seen(hopped, -1140L, -1000L))
      assert(!seen(hopped, -1141L, -1000L))
      // Moving the query inside one hop does not move the start: aligned to the epoch, not to the query.
      assert(seen(hopped, 870L, 1019L) && seen(hopped, 870L, 991L))
    }
  }

  test("a hop that does not divide the length, or exceeds it, still rounds the start down to a boundary") {
    val odd = Window(100L, 0L, rightClosed = false, hop = 7L)   // t-d-w = 900, floor_hop = 896
    assert(seen(odd, 896L, 1000L) && !seen(odd, 895L, 1000L))
    val wide = Window(100L, 0L, rightClosed = false, hop = 250L) // floor_hop(900) = 750: up to 2.5 lengths
    assert(seen(wide, 750L, 1000L) && !seen(wide, 749L, 1000L))
    val one = Window(100L, 0L, rightClosed = false, hop = 1L)    // a hop of 1 us is the exact left-closed window
    assert(seen(one, 900L, 1000L) && !seen(one, 899L, 1000L))
  }

  test("hops are refused on lifetime windows, and must not be negative") {
    intercept[IllegalArgumentException](Window(Window.Lifetime, 0L, rightClosed = false, hop = 60L))
    intercept[IllegalArgumentException](Window(100L, 0L, rightClosed = false, hop = -1L))
  }
}

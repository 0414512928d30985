package tally.window

import tally.agg.{Aggregator, Aggregators, VType}

/** Memory per key is bounded by the events inside the longest window (plus those waiting for `available_at`),
  * never by the key's history, and work is linear in the events: one hot key with millions of events. */
class SweepMemorySuite extends munit.FunSuite {
  private val Second = 1000000L
  private val Hour = 3600L * Second

  /** An aggregator that counts the updates and merges made to it: the work the sweep does, without timing. */
  final class Counting(agg: Aggregator[AnyRef]) extends Aggregator[AnyRef] {
    var calls = 0L
    def zero(): AnyRef = agg.zero()
    def update(s: AnyRef, value: Any, ts: Long): AnyRef = { calls += 1; agg.update(s, value, ts) }
    def merge(a: AnyRef, b: AnyRef): AnyRef = { calls += 1; agg.merge(a, b) }
    def copy(s: AnyRef): AnyRef = agg.copy(s)
    def finish(s: AnyRef, asOf: Long): Any = agg.finish(s, asOf)
    def encode(s: AnyRef): Array[Byte] = agg.encode(s)
    def decode(bytes: Array[Byte]): AnyRef = agg.decode(bytes)
    val outputType: VType = agg.outputType
  }

  private def usedHeapMb(): Long = {
    val rt = Runtime.getRuntime
    System.gc(); System.gc()
    (rt.totalMemory - rt.freeMemory) >> 20
  }

  private val N = 4000000
  private val QueryEvery = 100

  for (withAvail <- Seq(false, true))
    test(s"a lifetime max, last and approx_distinct keep memory bounded and work linear over 4 M events of one key (available_at: $withAvail)") {
      val names = Seq("max", "last", "approx_distinct")
      val aggs = names.map(f => new Counting(Aggregators.build(f, VType.Long)))
      val lifetime = Window(Window.Lifetime, 0L, rightClosed = false)
      val features = names.zip(aggs).map { case (n, a) => Feature(n, a, 0, lifetime, null) }.toIndexedSeq
      val sweep = new Sweep("memory", features, None, withAvail)
      val out = new Array[Any](features.length)
      val rng = new java.util.SplittableRandom(7)
      // Labels arrive up to 2 h after their event, in any order: events wait at most 7200 events' time.
      val maxLag = 2 * Hour
      val waitingAtMost = (maxLag / Second).toInt + 1
      val bound = (if (withAvail) waitingAtMost else 0) + QueryEvery + Sweep.CompactSlack
      val before = usedHeapMb()
      sweep.reset("hot")
      var maxRetained = 0
      var max = Long.MinValue
      var t = 0L
      var i = 0
      while (i < N) {
        val v = (i.toLong * 2654435761L) % 1000003L // ~1 M distinct values, in scrambled order
        max = math.max(max, v)
        val avail = if (withAvail) t + rng.nextLong(maxLag) else Long.MinValue
        sweep.event(t, avail, Array[Any](java.lang.Long.valueOf(v)))
        if (i % QueryEvery == 0) sweep.query(t, out)
        maxRetained = math.max(maxRetained, sweep.retained)
        i += 1
        // Checked as it goes, so that a regression fails in seconds instead of running a quadratic loop to the end.
        if ((i & 0xffff) == 0 || i == N) {
          assert(maxRetained <= bound, s"after $i events the sweep retained $maxRetained events (bound $bound)")
          for ((n, a) <- names.zip(aggs))
            assert(a.calls <= 2L * i, s"after $i events, $n had ${a.calls} updates and merges: not linear in the events")
        }
        t += Second
      }
      sweep.query(t + maxLag + 1, out)
      val after = usedHeapMb()
      assertEquals(out(0), java.lang.Long.valueOf(max))
      assertEquals(out(1), java.lang.Long.valueOf(((N - 1).toLong * 2654435761L) % 1000003L))
      val distinct = math.min(N, 1000003).toDouble
      val estimate = out(2).asInstanceOf[java.lang.Long].toDouble
      assert(math.abs(estimate - distinct) <= 0.05 * distinct, s"approx_distinct $estimate, expected about $distinct")
      println(f"SweepMemorySuite (available_at: $withAvail): $N%,d events, at most $maxRetained%,d retained (bound $bound%,d), " +
        s"updates+merges ${aggs.map(_.calls).mkString("/")}, heap $before MB before and $after MB after (sweep alive)")
      assert(sweep.retained >= 0) // keeps the sweep reachable until the heap was measured
    }

  test("a sliding count keeps memory bounded by the events inside its window (5 M events, 1 h window)") {
    val step = Second // one event a second: 3600 inside the window
    val inWindow = (Hour / step).toInt + 1
    for (withQueries <- Seq(true, false)) {
      val count = IndexedSeq(Feature("n", Aggregators.build("count", VType.Long), -1, Window(Hour, 0L, rightClosed = false), null))
      val sweep = new Sweep("memory", count, None, withAvailability = false)
      val out = new Array[Any](1)
      sweep.reset("hot")
      var maxRetained = 0
      var t = 0L
      var i = 0
      while (i < 5000000) {
        if (withQueries) sweep.query(t, out)
        sweep.event(t, Long.MinValue, Array.empty)
        maxRetained = math.max(maxRetained, sweep.retained)
        t += step; i += 1
      }
      sweep.query(t, out)
      assertEquals(out(0), inWindow.toLong - 1)
      // Between queries the buffer compacts when it has doubled, so it may hold up to twice the window.
      val bound = if (withQueries) inWindow else 2 * inWindow + Sweep.CompactSlack
      assert(maxRetained <= bound, s"the sweep retained $maxRetained events (queries: $withQueries), the window holds $inWindow")
    }
  }
}

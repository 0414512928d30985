package tally.window

import tally.agg.{Aggregators, VType}

/** The sweep alone on bench/userpath's workload shape, its unboxed paths against the generic one, in one JVM:
  * thread CPU time, so that a loaded machine blurs it less than wall time. Not a test; run it with
  * `sbt "Test/runMain tally.window.SweepBench [events] [rounds]"`.
  *
  * Events: cards zipf(1.6)-like over events/20 cards, 90 days of whole seconds (ties), lognormal amounts; every
  * event is also a query (the charges as their own spine), and the 12 features are count, sum and max of the
  * amount over 1h, 24h, 7d and 30d, left-closed. */
object SweepBench {
  def main(args: Array[String]): Unit = {
    val n = args.headOption.map(_.toInt).getOrElse(2000000)
    val rounds = if (args.length > 1) args(1).toInt else 5
    val r = new scala.util.Random(42)
    val cards = math.max(n / 20, 1)
    val card = Array.fill(n)(((math.pow(1.0 - r.nextDouble(), -1.0 / 0.6) - 1.0).toLong % cards))
    val ts = Array.fill(n)(1735689600000000L + r.nextInt(90 * 86400).toLong * 1000000L)
    val amount = Array.fill(n)(java.lang.Double.valueOf(math.rint(math.exp(3.5 + 1.2 * r.nextGaussian()) * 100) / 100))
    val order = (0 until n).sortBy(i => (card(i), ts(i))).toArray
    val hour = 3600L * 1000000L
    val features = (for {
      (w, wn) <- Seq(hour -> "1h", 24 * hour -> "24h", 7 * 24 * hour -> "7d", 30 * 24 * hour -> "30d")
      (fn, col) <- Seq("count" -> -1, "sum" -> 0, "max" -> 0)
    } yield Feature(s"${fn}_$wn", Aggregators.build(fn, VType.Double), col, Window(w, 0L, rightClosed = false), null)).toIndexedSeq
    val bean = java.lang.management.ManagementFactory.getThreadMXBean
    def once(specialise: Boolean): (Double, Double) = {
      val sweep = new Sweep("bench", features, None, withAvailability = false, specialise)
      val out = new Array[Any](features.length)
      var check = 0.0
      val cpu0 = bean.getCurrentThreadCpuTime
      var i = 0
      var key = -1L
      while (i < n) {
        val e = order(i)
        if (card(e) != key) { key = card(e); sweep.reset(java.lang.Long.valueOf(key)) }
        sweep.event(ts(e), Long.MinValue, Array[Any](amount(e)))
        // the queries of one (key, time) run come after all its events
        if (i + 1 == n || card(order(i + 1)) != key || ts(order(i + 1)) != ts(e)) {
          sweep.query(ts(e), out)
          var j = 0
          while (j < out.length) { check += java.util.Objects.hashCode(out(j)); j += 1 }
        }
        i += 1
      }
      ((bean.getCurrentThreadCpuTime - cpu0) / 1e9, check)
    }
    val fast = Seq.newBuilder[Double]; val generic = Seq.newBuilder[Double]
    once(true); once(false) // warm-up
    for (round <- 1 to rounds) {
      val (g, cg) = once(false); val (f, cf) = once(true)
      require(cg == cf, s"round $round: the unboxed and generic sweeps disagree ($cf != $cg)")
      generic += g; fast += f
      println(f"round $round: generic $g%.2f CPU-s, unboxed $f%.2f CPU-s")
    }
    def med(xs: Seq[Double]) = xs.sorted.apply(xs.size / 2)
    val (g, f) = (generic.result(), fast.result())
    println(f"$n events, median of $rounds: generic ${med(g)}%.2f CPU-s (${g.min}%.2f-${g.max}%.2f), " +
      f"unboxed ${med(f)}%.2f CPU-s (${f.min}%.2f-${f.max}%.2f): ${med(g) / med(f)}%.2fx")
  }
}

package tally.agg

import scala.util.Random

/** The order-free sketches give one result per multiset: folded in any order, split into any parts, sent through
  * the wire format or copied, and merged in any tree, approx_percentile gives the same bytes and the same quantiles
  * and approx_distinct the same estimate, past their exact regimes too. That is what makes the sweep (folding
  * events) and the fetcher (merging tiles) agree to the bit. */
class SketchOrderSuite extends munit.FunSuite {

  /** Builds `values` through a random plan: a random order, split into 1 to 24 parts, each part through the wire
    * format, a copy or neither, merged pairwise in random order. */
  private def randomBuild(agg: Aggregator[AnyRef], values: IndexedSeq[AnyRef], r: Random): AnyRef = {
    val shuffled = r.shuffle(values)
    val parts = 1 + r.nextInt(24)
    val cuts = (Seq(0, shuffled.length) ++ Seq.fill(parts - 1)(r.nextInt(shuffled.length + 1))).sorted
    var irs = cuts.sliding(2).map { case Seq(a, b) =>
      val s = shuffled.slice(a, b).foldLeft(agg.zero())((s, v) => agg.update(s, v, 0L))
      r.nextInt(3) match { case 0 => agg.decode(agg.encode(s)); case 1 => agg.copy(s); case _ => s }
    }.toVector
    while (irs.length > 1) {
      val i = r.nextInt(irs.length - 1)
      irs = irs.patch(i, Seq(agg.merge(irs(i), irs(i + 1))), 2)
    }
    irs.head
  }

  private def sameEverywhere(agg: Aggregator[AnyRef], values: IndexedSeq[AnyRef], seed: Long, bytes: Boolean): Unit = {
    val reference = values.foldLeft(agg.zero())((s, v) => agg.update(s, v, 0L))
    val (refBytes, refValue) = (agg.encode(reference), agg.finish(reference, 0L))
    val r = new Random(seed)
    (0 until 12).foreach { attempt =>
      val built = randomBuild(agg, values, r)
      assertEquals(agg.finish(built, 0L), refValue, s"$agg, ${values.length} values, plan $attempt")
      if (bytes) assert(java.util.Arrays.equals(agg.encode(built), refBytes), s"$agg, ${values.length} values, plan $attempt: bytes differ")
    }
  }

  private val sizes = Seq(1, 7, 60, 400, 5000)
  private def box(d: Double): AnyRef = java.lang.Double.valueOf(d)

  test("approx_percentile: the same bytes and quantiles for every order and merge tree, exact and bucketed") {
    val qs = Vector(0.0, 0.01, 0.25, 0.5, 0.9, 0.99, 1.0)
    for (params <- Seq(Map("k" -> 8), Map("k" -> 200), Map("k" -> 8, "relative_error" -> 0.001), Map("k" -> 50, "relative_error" -> 0.1));
         n <- sizes) {
      val agg = Aggregators.build("approx_percentile", VType.Double, params + ("quantiles" -> qs))
      val r = new Random(n * 31 + params.hashCode)
      val values = IndexedSeq.fill(n)(Catalogue.anyDouble(r)) // NaN, infinities, extremes, -0.0 among them
      sameEverywhere(agg, values, n, bytes = true)
    }
  }

  test("approx_percentile: folding the buckets nearest zero is order-free too") {
    // Magnitudes from 1e-300 to 1e300: 600 decades, far past the 12 kept.
    val agg = Aggregators.build("approx_percentile", VType.Double,
      Map("k" -> 8, "relative_error" -> 0.001, "quantiles" -> Seq(0.0, 0.1, 0.3, 0.5, 0.7, 0.95, 1.0)))
    val r = new Random(3)
    val values = IndexedSeq.fill(3000)(box((if (r.nextBoolean()) 1 else -1) * math.pow(10, r.nextDouble() * 600 - 300)))
    sameEverywhere(agg, values, 3, bytes = true)
    val folded = values.foldLeft(agg.zero())((s, v) => agg.update(s, v, 0L)).asInstanceOf[QuantileIR]
    val kept = math.ceil(Quantiles.KeptDecades * math.log(10) / math.log(1.001 / 0.999)).toInt
    assert(folded.pos.hi - folded.pos.lo < kept && folded.neg.hi - folded.neg.lo < kept)
  }

  test("approx_percentile on decimals and longs: the same bytes whatever the order") {
    for (n <- sizes) {
      val r = new Random(n + 1)
      sameEverywhere(Aggregators.build("approx_percentile", VType.Decimal(12, 2), Map("quantiles" -> Seq(0.5, 0.95), "k" -> 16)),
        IndexedSeq.fill(n)(Catalogue.decimal2(r)), n, bytes = true)
      sameEverywhere(Aggregators.build("approx_percentile", VType.Long, Map("quantiles" -> Seq(0.5), "k" -> 16)),
        IndexedSeq.fill(n)(Catalogue.anyLong(r)), n, bytes = true)
    }
  }

  test("approx_distinct: the same estimate for every order and merge tree, in list, set and HLL modes") {
    for (lgK <- Seq(4, 8, 12); n <- sizes :+ 40000) {
      val r = new Random(lgK * 100 + n)
      val longs = Aggregators.build("approx_distinct", VType.Long, Map("lg_k" -> lgK))
      sameEverywhere(longs, IndexedSeq.fill(n)(java.lang.Long.valueOf(r.nextInt(n * 2 + 1).toLong)), n, bytes = false)
      val strings = Aggregators.build("approx_distinct", VType.String, Map("lg_k" -> lgK))
      sameEverywhere(strings, IndexedSeq.fill(n)(s"m${r.nextInt(n + 1)}"), n + 1, bytes = false)
    }
  }

  test("LogBuckets counts as a plain map does, the buckets below the kept span folded into its lowest") {
    val r = new Random(5)
    for (round <- 0 until 300) {
      val maxBins = 1 + r.nextInt(40)
      val b = new LogBuckets(maxBins)
      val naive = scala.collection.mutable.Map.empty[Int, Long]
      val spread = 1 + r.nextInt(200)
      val centre = r.nextInt(1000) - 500
      (0 until r.nextInt(200)).foreach { _ =>
        val (i, c) = (centre + r.nextInt(spread) - spread / 2, 1L + r.nextInt(3))
        if (r.nextInt(10) == 0) { val o = new LogBuckets(maxBins); o.add(i, c); o.add(i - 3, c); b.addAll(o); naive(i) = naive.getOrElse(i, 0L) + c; naive(i - 3) = naive.getOrElse(i - 3, 0L) + c }
        else { b.add(i, c); naive(i) = naive.getOrElse(i, 0L) + c }
      }
      if (naive.nonEmpty) {
        val floor = naive.keys.max - maxBins + 1
        val want = naive.toSeq.groupMapReduce { case (i, _) => math.max(i, floor) }(_._2)(_ + _)
        val got = (b.lo to b.hi).map(i => i -> b.count(i)).filter(_._2 != 0L).toMap
        assertEquals(got, want, s"round $round, maxBins $maxBins")
      }
    }
  }

  test("approx_percentile stays within its relative error of the true quantile past the exact regime") {
    val qs = Vector(0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999)
    for (error <- Seq(0.01, 0.001)) {
      val agg = Aggregators.build("approx_percentile", VType.Double, Map("quantiles" -> qs, "relative_error" -> error))
      val r = new Random(11)
      // heavy-tailed like amounts, with negatives (refunds) and zeros
      val values = IndexedSeq.fill(200000)(box(r.nextInt(20) match {
        case 0 => 0.0; case 1 => -math.exp(r.nextGaussian() * 2); case _ => math.exp(r.nextGaussian() * 2) }))
      val sorted = values.map(_.asInstanceOf[java.lang.Double].doubleValue).sorted
      val got = agg.finish(randomBuild(agg, values, r), 0L).asInstanceOf[Seq[Double]]
      for ((q, x) <- qs.zip(got)) {
        val want = sorted((Quantiles.rank(q, sorted.length) - 1).toInt)
        assert(math.abs(x - want) <= error * math.abs(want) * (1 + 1e-9), s"relative_error=$error q=$q: got $x, true $want")
      }
    }
  }

  test("approx_percentile refuses an IR built with other parameters and a bad relative_error") {
    val a = Aggregators.build("approx_percentile", VType.Double, Map("quantiles" -> Seq(0.5)))
    val b = Aggregators.build("approx_percentile", VType.Double, Map("quantiles" -> Seq(0.5), "relative_error" -> 0.02))
    val e = intercept[IllegalArgumentException](b.decode(a.encode(a.update(a.zero(), box(1.0), 0L))))
    assert(e.getMessage.contains("relative_error=0.01"), e.getMessage)
    val bad = intercept[IllegalArgumentException](
      Aggregators.build("approx_percentile", VType.Double, Map("quantiles" -> Seq(0.5), "relative_error" -> 0.5)))
    assert(bad.getMessage.contains("'relative_error'"), bad.getMessage)
  }
}

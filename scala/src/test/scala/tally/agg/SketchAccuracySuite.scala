package tally.agg

import scala.util.Random

/** Sketches stay within their documented error on 1 M values (fixed seeds), also when built in parts and merged,
  * as Spark's partial aggregation does. */
class SketchAccuracySuite extends munit.FunSuite {
  private val N = 1000000

  private def inParts[S <: AnyRef](agg: Aggregator[S], parts: Int)(value: Int => Any): S = {
    val irs = (0 until parts).map { p =>
      var s = agg.zero()
      var i = p
      while (i < N) { s = agg.update(s, value(i), 0L); i += parts }
      agg.decode(agg.encode(s)) // through the wire format, as in a shuffle
    }
    irs.reduce(agg.merge)
  }

  for (lgK <- Seq(10, 12, 14)) test(s"approx_distinct lg_k=$lgK is within 3 standard errors on 1M distinct values") {
    val agg = Aggregators.build("approx_distinct", VType.Long, Map("lg_k" -> lgK))
    val r = new Random(lgK)
    val values = Array.fill(N)(r.nextLong()) // distinct with overwhelming probability
    val distinct = values.distinct.length.toDouble
    val se = 1.04 / math.sqrt(math.pow(2, lgK)) // DataSketches' documented RSE for HLL
    for (parts <- Seq(1, 8)) {
      val est = agg.finish(inParts(agg, parts)(i => values(i)), 0L).asInstanceOf[Long]
      val err = math.abs(est - distinct) / distinct
      assert(err <= 3 * se, s"lg_k=$lgK parts=$parts: estimate $est vs $distinct, error $err > ${3 * se}")
    }
  }

  test("top_k finds the heavy hitters of a skewed 1M stream with counts within the sketch's error") {
    val agg = Aggregators.build("top_k", VType.Long, Map("k" -> 5))
    val r = new Random(5)
    // 5 heavy items (10%, 8%, 6%, 4%, 2% of the stream), the rest spread over 100k items.
    val values = Array.fill(N) {
      val u = r.nextDouble()
      if (u < 0.10) 1L else if (u < 0.18) 2L else if (u < 0.24) 3L else if (u < 0.28) 4L else if (u < 0.30) 5L
      else 1000L + r.nextInt(100000)
    }
    val exact = values.groupBy(identity).map { case (k, v) => k.toString -> v.length.toLong }
    val bound = 3.5 * N / TopK.mapSize(5) // DataSketches frequent items: error <= 3.5 n / maxMapSize
    val got = agg.finish(inParts(agg, 8)(i => values(i)), 0L).asInstanceOf[Seq[Seq[Any]]]
    assertEquals(got.map(_(0)), Seq("1", "2", "3", "4", "5"))
    for (Seq(item: String, count: java.lang.Long) <- got)
      assert(math.abs(count - exact(item)) <= bound, s"$item: $count vs ${exact(item)}, bound $bound")
  }
}

package tally.agg

/** Behaviour the catalogue's generic laws do not pin: types, NaN rules, ties, parameters, errors, precision. */
class KernelsSuite extends munit.FunSuite {
  private def run(f: String, t: VType, values: Seq[Any], params: Map[String, Any] = Map.empty, ts: Int => Long = _ => 0L) = {
    val a = Aggregators.build(f, t, params)
    a.finish(values.zipWithIndex.foldLeft(a.zero()) { case (s, (v, i)) => a.update(s, v, ts(i)) }, 0L)
  }

  test("output types: long sum stays long, decimal sum keeps scale at precision 38, min/max keep the input type") {
    assertEquals(Aggregators.build("sum", VType.Long).outputType, VType.Long)
    assertEquals(Aggregators.build("sum", VType.Decimal(12, 2)).outputType, VType.Decimal(38, 2))
    assertEquals(Aggregators.build("max", VType.String).outputType, VType.String)
    assertEquals(Aggregators.build("min", VType.Decimal(12, 2)).outputType, VType.Decimal(12, 2))
    assertEquals(Aggregators.build("mean", VType.Decimal(12, 2)).outputType, VType.Double)
    assertEquals(run("sum", VType.Long, Seq(1, 2L, 3.toShort)), 6L)
  }

  test("empty: count and sum give 0, decayed_* give 0.0, everything else null") {
    for (f <- Aggregators.functions) {
      val a = Aggregators.build(f, VType.Long, Map("k" -> 8, "quantiles" -> Seq(0.5), "half_life_us" -> 1000L))
      val expected = f match { case "count" | "sum" => 0L; case "decayed_sum" | "decayed_count" => 0.0; case _ => null }
      assertEquals(a.finish(a.zero(), 0L), expected, f)
    }
  }

  test("invertible: exactly count, sum, mean, variance, stddev and decayed_*") {
    for (f <- Aggregators.functions) {
      val a = Aggregators.build(f, VType.Double, Map("k" -> 8, "quantiles" -> Seq(0.5), "half_life_us" -> 1000L))
      assertEquals(a.isInstanceOf[Invertible[_]], Aggregators.invertible(f), f)
    }
  }

  test("moments: removing down to one value leaves a variance of exactly 0, not the removals' residue") {
    for (f <- Seq("variance_pop", "stddev_pop")) {
      val m = Aggregators.build(f, VType.Double).asInstanceOf[Invertible[AnyRef]]
      for (seed <- 1 to 20) {
        val r = new scala.util.Random(seed)
        val xs = Seq.fill(50)(math.exp(r.nextGaussian() * 3) * 100)
        var s = xs.foldLeft(m.zero())((s, v) => m.update(s, v, 0L))
        for (v <- r.shuffle(xs.tail)) s = m.remove(s, v, 0L)
        assertEquals(m.finish(s, 0L), 0.0, s"$f, seed $seed")
      }
    }
  }

  test("NaN: max is NaN, min ignores it; mean is NaN until the NaN is removed") {
    assert(run("max", VType.Double, Seq(1.0, Double.NaN, Double.PositiveInfinity)).asInstanceOf[Double].isNaN)
    assertEquals(run("min", VType.Double, Seq(1.0, Double.NaN, -0.0, 0.0)), -0.0)
    val m = Aggregators.build("mean", VType.Double).asInstanceOf[Invertible[AnyRef]]
    val s = Seq(1.0, Double.NaN, 3.0).foldLeft(m.zero())((s, v) => m.update(s, v, 0L))
    assert(m.finish(s, 0L).asInstanceOf[Double].isNaN)
    assertEquals(m.finish(m.remove(s, Double.NaN, 0L), 0L), 2.0)
  }

  test("first/last tie at equal ts: last takes the greatest value, first the least, whatever the order") {
    for (order <- Seq(Seq("b", "c", "a"), Seq("c", "a", "b"))) {
      assertEquals(run("last", VType.String, order), "c")
      assertEquals(run("first", VType.String, order), "a")
    }
    assertEquals(run("last", VType.String, Seq("z", "a"), ts = i => i.toLong), "a") // time wins over value
  }

  test("last_k is newest first; time_since_last is seconds to asOf") {
    assertEquals(run("last_k", VType.Long, Seq(1, 2, 3, 4), Map("k" -> 3), ts = i => i * 10L), Vector(4L, 3L, 2L))
    val t = Aggregators.build("time_since_last", VType.Timestamp)
    assertEquals(t.finish(t.update(t.zero(), 0L, 1000000L), 91000000L), 90.0)
  }

  test("sample variance of one value is null, population variance is 0") {
    assertEquals(run("variance", VType.Double, Seq(5.0)), null)
    assertEquals(run("variance_pop", VType.Double, Seq(5.0)), 0.0)
    assertEquals(run("stddev", VType.Long, Seq(2, 4, 4, 4, 5, 5, 7, 9)), math.sqrt(32.0 / 7))
  }

  test("welford stays accurate around a large offset") {
    val xs = (1 to 1000).map(i => 1e9 + (i % 10))
    val v = run("variance_pop", VType.Double, xs).asInstanceOf[Double]
    assertEqualsDouble(v, 8.25, 1e-6)
  }

  test("decayed: one half-life halves, precision after removing a huge amount") {
    val h = 3600L * 1000000L
    val d = Aggregators.build("decayed_sum", VType.Double, Map("half_life_us" -> h)).asInstanceOf[Invertible[AnyRef]]
    var s = d.update(d.zero(), 8.0, 0L)
    assertEqualsDouble(d.finish(s, h).asInstanceOf[Double], 4.0, 1e-12)
    s = d.update(s, 1e12, h / 2); s = d.update(s, 1.0, h); s = d.remove(s, 1e12, h / 2)
    assertEqualsDouble(d.finish(s, h).asInstanceOf[Double], 5.0, 1e12 * 1e-15) // documented: ~1e-16 * peak
    s = d.remove(d.remove(s, 8.0, 0L), 1.0, h)
    assertEquals(d.finish(s, h), 0.0) // exact reset when empty
  }

  test("params: numbers from JSON in any form, integral where needed, errors name function and parameter") {
    for (k <- Seq[Any](3, 3L, 3.0, BigDecimal(3), new java.math.BigDecimal("3")))
      assertEquals(Aggregators.build("top_k", VType.String, Map("k" -> k)).asInstanceOf[TopK].k, 3)
    val err = intercept[IllegalArgumentException](Aggregators.build("top_k", VType.String, Map("k" -> 2.5)))
    assert(err.getMessage.contains("'top_k'") && err.getMessage.contains("'k'"), err.getMessage)
    intercept[IllegalArgumentException](Aggregators.build("last_k", VType.String))
    intercept[IllegalArgumentException](Aggregators.build("approx_percentile", VType.Double, Map("quantiles" -> Seq(1.5))))
    intercept[IllegalArgumentException](Aggregators.build("approx_distinct", VType.Long, Map("lg_k" -> 30)))
    intercept[IllegalArgumentException](Aggregators.build("mean", VType.String))
    intercept[IllegalArgumentException](Aggregators.build("median", VType.Long))
  }

  test("durations") {
    assertEquals(Durations.micros("90s"), 90000000L)
    assertEquals(Durations.micros("7d"), 7L * 86400 * 1000000)
    assertEquals(Durations.micros("1500"), 1500L)
    intercept[IllegalArgumentException](Durations.micros("7 days"))
  }

  test("an IR with other parameters is refused on decode") {
    val a = Aggregators.build("last_k", VType.Long, Map("k" -> 2))
    val b = Aggregators.build("last_k", VType.Long, Map("k" -> 3))
    intercept[IllegalArgumentException](b.decode(a.encode(a.zero())))
    intercept[IllegalArgumentException](Aggregators.build("min", VType.String).decode(
      Aggregators.build("min", VType.Long).encode(Aggregators.build("min", VType.Long).update(Aggregators.build("min", VType.Long).zero(), 1L, 0L))))
  }
}

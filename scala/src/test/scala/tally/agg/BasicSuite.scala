package tally.agg

class BasicSuite extends munit.FunSuite {
  test("long sum stays exact and refuses to overflow") {
    val s = LongSum.update(LongSum.update(LongSum.zero(), Long.MaxValue - 1, 0L), 1L, 0L)
    assertEquals(LongSum.finish(s, 0L), Long.MaxValue)
    intercept[ArithmeticException](LongSum.update(s, 1L, 0L))
  }

  test("double sum add-then-remove of a huge value leaves the small ones exact") {
    var s = DoubleSum.zero()
    s = DoubleSum.update(s, 0.1, 0L); s = DoubleSum.update(s, 1e17, 0L); s = DoubleSum.update(s, 0.2, 0L)
    s = DoubleSum.remove(s, 1e17, 0L)
    assertEqualsDouble(DoubleSum.value(s), 0.30000000000000004, 1e-16)
  }

  test("decimal sum keeps the scale") {
    val agg = DecimalSum(2)
    val s = agg.update(agg.update(agg.zero(), new java.math.BigDecimal("1.10"), 0L), new java.math.BigDecimal("2.05"), 0L)
    assertEquals(agg.finish(s, 0L), new java.math.BigDecimal("3.15"))
  }

  test("encode/decode round trip and a foreign format byte is refused") {
    val s = Count.update(Count.update(Count.zero(), "x", 0L), "y", 0L)
    assertEquals(Count.decode(Count.encode(s)).n, 2L)
    intercept[IllegalArgumentException](Count.decode(LongSum.encode(LongSum.zero())))
  }
}

package tally.bridge

/** The window object of the JSON spec, as Python writes it, including the optional `hop_us`. */
class SpecSuite extends munit.FunSuite {
  private def spec(window: String) =
    s"""{"spec_version": ${Bridge.SpecVersion}, "view": "card_velocity", "version": 1, "entity": {"keys": ["card_id"]},
       |"source": {"timestamp": "created"}, "ttl_us": null,
       |"features": [{"name": "count_24h", "function": "count", "column": null, "window": $window}]}""".stripMargin
  private def window(json: String): FeatureSpec = Spec.parse(spec(json)).features.head

  test("a window without hop_us (every spec written before hops) is exact") {
    val f = window("""{"length_us": 86400000000, "delay_us": 0, "closed": "left"}""")
    assertEquals((f.lengthUs, f.delayUs, f.closed, f.hopUs), (Some(86400000000L), 0L, "left", 0L))
    assertEquals(window("""{"length_us": 60, "delay_us": 0, "closed": "left", "hop_us": null}""").hopUs, 0L)
  }

  test("hop_us is read in microseconds; 0 means exact") {
    assertEquals(window("""{"length_us": 86400000000, "delay_us": 0, "closed": "right", "hop_us": 3600000000}""").hopUs, 3600000000L)
    assertEquals(window("""{"length_us": 86400000000, "delay_us": 0, "closed": "left", "hop_us": 0}""").hopUs, 0L)
  }

  test("a hop on a lifetime window, a negative or a fractional hop is refused, naming the view and feature") {
    for (bad <- Seq(
        """{"length_us": null, "delay_us": 0, "closed": "left", "hop_us": 60000000}""",
        """{"length_us": 60, "delay_us": 0, "closed": "left", "hop_us": -1}""",
        """{"length_us": 60, "delay_us": 0, "closed": "left", "hop_us": 1.5}""",
        """{"length_us": 60, "delay_us": 0, "closed": "left", "hop_us": "1h"}""")) {
      val e = intercept[IllegalArgumentException](window(bad))
      assert(e.getMessage.contains("card_velocity") && e.getMessage.contains("count_24h") && e.getMessage.contains("hop"), e.getMessage)
    }
  }
}

package tally.online

import java.time.{Instant, LocalDate}

import tally.online.EntityKey._

import scala.util.Random

class EntityKeySuite extends munit.FunSuite {
  test("the documented encoding, pinned: a change here is a new store layout") {
    val pinned = Seq(
      EntityKey.of("card_1") -> "scard_1",
      EntityKey.of(42) -> "i42",
      EntityKey.of(-42L) -> "i-42",
      EntityKey.of(true) -> "b1",
      EntityKey.of(Array[Byte](0, 15, -1)) -> "x000fff",
      EntityKey.of(new java.math.BigDecimal("1.50")) -> "n1.5",
      EntityKey.of(BigDecimal("1E+3")) -> "n1000",
      EntityKey.of(LocalDate.of(2024, 1, 31)) -> "d2024-01-31",
      EntityKey.of(Instant.parse("2024-01-31T00:00:00.000001Z")) -> "t1706659200000001",
      EntityKey.of(1.5) -> "f3ff8000000000000",
      EntityKey.of("c_1{x}", LocalDate.of(2024, 1, 31)) -> "sc_1%7Bx%7D,d2024-01-31",
      EntityKey.of("a,b%", "\n") -> "sa%2Cb%25,s%0A",
      EntityKey.of("ü名") -> "sü名")
    pinned.foreach { case (key, encoded) => assertEquals(key.encoded, encoded) }
  }

  test("widths and spellings of one value are one key, as in Spark's grouping") {
    assertEquals(EntityKey.of(7: Byte), EntityKey.of(7L))
    assertEquals(EntityKey.of(7: Short), EntityKey.of(7))
    assertEquals(EntityKey.of(BigDecimal("2.500")), EntityKey.of(BigDecimal("2.5")))
    assertEquals(EntityKey.of(BigDecimal("0.000")), EntityKey.of(BigDecimal(0)))
    assertEquals(EntityKey.of(-0.0), EntityKey.of(0.0))
    assertEquals(EntityKey.of(Double.NaN), EntityKey.of(java.lang.Double.longBitsToDouble(0x7ff8000000000001L)))
    assertEquals(EntityKey.of(0.5f), EntityKey.of(0.5))
  }

  test("different values and types are different keys, even where their text looks alike") {
    val keys = Seq(EntityKey.of("42"), EntityKey.of(42L), EntityKey.of(42.0), EntityKey.of(BigDecimal(42)),
      EntityKey.of("a,b"), EntityKey.of("a", "b"), EntityKey.of("a,sb"), EntityKey.of("%2C"), EntityKey.of(","),
      EntityKey.of(true), EntityKey.of("b1"), EntityKey.of(Array[Byte](1)), EntityKey.of(""), EntityKey.of("", ""))
    assertEquals(keys.map(_.encoded).distinct.size, keys.size)
  }

  test("decode round-trips every part type, and a key rebuilt from its parts is the key") {
    val rng = new Random(13)
    def part(): Part = rng.nextInt(8) match {
      case 0 => Str(Seq.fill(rng.nextInt(6))(rng.shuffle(Seq('a', ',', '%', '{', '}', ':', '\u0000', 'é', '名', ' ')).head).mkString)
      case 1 => Integral(rng.nextLong())
      case 2 => Bool(rng.nextBoolean())
      case 3 => Binary.of(Array.fill(rng.nextInt(5))(rng.nextInt(256).toByte))
      case 4 => Decimal(new java.math.BigDecimal(java.math.BigInteger.valueOf(rng.nextLong()), rng.nextInt(20) - 5))
      case 5 => Date(LocalDate.ofEpochDay(rng.nextInt(3000000) - 1500000L))
      case 6 => Timestamp(rng.nextLong())
      case _ => Real(java.lang.Double.longBitsToDouble(rng.nextLong()))
    }
    (0 until 2000).foreach { _ =>
      val key = EntityKey(Seq.fill(1 + rng.nextInt(3))(part()): _*)
      assertEquals(EntityKey.decode(key.encoded), key)
      assertEquals(EntityKey.fromBytes(key.bytes), key)
      assertEquals(EntityKey(key.parts: _*), key)
      assert(!key.encoded.exists(c => c == '{' || c == '}'), key.encoded)
    }
  }

  test("parts come back typed and normalized") {
    val key = EntityKey.of("x", 3, BigDecimal("1.10"), LocalDate.of(2024, 2, 29), Array[Byte](1, 2))
    assertEquals(key.parts.take(4), Seq(Str("x"), Integral(3), Decimal(new java.math.BigDecimal("1.1")), Date(LocalDate.of(2024, 2, 29))))
    assertEquals(key.parts(4), Binary.of(Array[Byte](1, 2)))
  }

  test("null, empty and unsupported parts are refused, naming the problem") {
    assert(intercept[IllegalArgumentException](EntityKey.of("a", null)).getMessage.contains("null"))
    intercept[IllegalArgumentException](EntityKey())
    assert(intercept[IllegalArgumentException](EntityKey.of(new Object)).getMessage.contains("java.lang.Object"))
    assert(intercept[IllegalArgumentException](EntityKey.of("\uD800")).getMessage.contains("Unicode"))
  }

  test("text that no key encodes to is refused") {
    Seq("", "q1", "iabc", "i1,", "n1.50", "s%7b", "s%4", "b2", "f12", "d2024-13-01", "x0g").foreach { bad =>
      intercept[IllegalArgumentException](EntityKey.decode(bad))
    }
  }
}

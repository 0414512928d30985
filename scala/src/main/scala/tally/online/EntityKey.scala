package tally.online

import java.nio.charset.StandardCharsets.UTF_8
import java.time.{Instant, LocalDate}
import java.util.HexFormat

import scala.collection.immutable.ArraySeq

/** One entity's key as the online store addresses it: one value per key column of the view's entity, in the
  * entity's key order (a composite key has several).
  *
  * The key *is* its encoding: two keys are equal exactly when their encodings are, so the tile builder (reading
  * Catalyst rows) and the fetcher (reading JSON) find the same tiles as long as they build the same parts.
  *
  * Encoding (stable; a change needs a new store layout, see docs/online-store.md): parts joined by `,`; each
  * part is a one-letter type tag followed by its value, in printable UTF-8:
  * {{{
  *   s<text>     string; `%`, `,`, `{`, `}` and ASCII control characters are written %XX (hex of the byte)
  *   i<digits>   integral (byte, short, int and long all widen to long: the value is the key, not the width)
  *   b1 / b0     boolean
  *   x<hex>      binary, lower-case hex
  *   n<plain>    decimal, trailing zeros stripped (1.50 and 1.5 are one key, as in Spark's grouping)
  *   d<iso>      date, ISO-8601 (2024-01-31)
  *   t<micros>   timestamp, microseconds since the epoch (UTC)
  *   f<hex16>    floating point, the IEEE-754 bits of the double (floats widen); -0.0 is 0.0 and every NaN is one
  *               NaN, as in Spark's grouping
  * }}}
  * Example: card "c_1{x}" and day 2024-01-31 encode as `sc_1%7Bx%7D,d2024-01-31`. The encoding never holds
  * `{` or `}`, so inside a Redis Cluster hash tag it is the whole tag, and it is valid UTF-8, so it reads in
  * `redis-cli` and stores as an SQLite BLOB (its UTF-8 bytes) alike. Null parts are refused: a null key is a data
  * error (DESIGN.md, Time semantics), never a key.
  */
final class EntityKey private (val encoded: String) {
  /** The UTF-8 bytes of the encoding: the Redis key part and the SQLite BLOB. */
  def bytes: Array[Byte] = encoded.getBytes(UTF_8)

  /** The typed parts, decoded from the encoding (so normalized: a decimal without trailing zeros, ...). */
  def parts: Seq[EntityKey.Part] = EntityKey.splitParts(encoded).map(EntityKey.decodePart(_, encoded))

  override def equals(other: Any): Boolean = other match {
    case k: EntityKey => k.encoded == encoded
    case _ => false
  }
  override def hashCode: Int = encoded.hashCode
  override def toString: String = s"EntityKey($encoded)"
}

object EntityKey {
  /** One key column's value. Values are normalized when encoded, so equal keys have one encoding. */
  sealed trait Part
  final case class Str(value: String) extends Part
  final case class Integral(value: Long) extends Part
  final case class Bool(value: Boolean) extends Part
  final case class Binary(value: ArraySeq[Byte]) extends Part
  final case class Decimal(value: java.math.BigDecimal) extends Part
  final case class Date(value: LocalDate) extends Part
  final case class Timestamp(micros: Long) extends Part
  final case class Real(value: Double) extends Part

  object Binary { def of(bytes: Array[Byte]): Binary = Binary(ArraySeq.from(bytes)) }

  def apply(parts: Part*): EntityKey = {
    require(parts.nonEmpty, "an entity key needs at least one part")
    new EntityKey(parts.map(encodePart).mkString(","))
  }

  /** A key from plain JVM values, as a fetcher holds them after reading a request with the view's key types:
    * String, Byte/Short/Int/Long, Boolean, Array[Byte], java.math.BigDecimal or BigDecimal, LocalDate,
    * Instant (microsecond precision), Float/Double. */
  def of(values: Any*): EntityKey = EntityKey(values.map(part): _*)

  def part(value: Any): Part = value match {
    case p: Part => p
    case s: String => Str(s)
    case l: Long => Integral(l)
    case i: Int => Integral(i.toLong)
    case s: Short => Integral(s.toLong)
    case b: Byte => Integral(b.toLong)
    case b: Boolean => Bool(b)
    case a: Array[Byte] => Binary.of(a)
    case d: java.math.BigDecimal => Decimal(d)
    case d: BigDecimal => Decimal(d.bigDecimal)
    case d: LocalDate => Date(d)
    case t: Instant => Timestamp(Math.addExact(Math.multiplyExact(t.getEpochSecond, 1000000L), t.getNano / 1000L))
    case d: Double => Real(d)
    case f: Float => Real(f.toDouble)
    case null => throw new IllegalArgumentException("an entity key part is null: null keys are a data error, never a key")
    case other => throw new IllegalArgumentException(
      s"an entity key part of type ${other.getClass.getName} ($other) is not supported: use a string, an integer, a " +
        "boolean, bytes, a decimal, a date, a timestamp or a floating-point number")
  }

  /** The key of an encoding read back from a store; refuses text that no key encodes to. */
  def decode(encoded: String): EntityKey = {
    val key = EntityKey(splitParts(encoded).map(decodePart(_, encoded)): _*)
    require(key.encoded == encoded, s"'$encoded' is not a canonical entity key encoding (it would be '${key.encoded}')")
    key
  }

  def fromBytes(bytes: Array[Byte]): EntityKey = decode(new String(bytes, UTF_8))

  private val hex = HexFormat.of()

  private def encodePart(p: Part): String = p match {
    case Str(v) =>
      require(v != null, "an entity key part is null: null keys are a data error, never a key")
      val utf8 = v.getBytes(UTF_8)
      require(new String(utf8, UTF_8) == v, s"entity key part '$v' is not valid Unicode (a lone surrogate?)")
      "s" + escape(utf8)
    case Integral(v) => "i" + v
    case Bool(v) => if (v) "b1" else "b0"
    case Binary(v) => "x" + hex.formatHex(v.toArray)
    case Decimal(v) =>
      require(v != null, "an entity key part is null: null keys are a data error, never a key")
      "n" + (if (v.signum == 0) "0" else v.stripTrailingZeros.toPlainString)
    case Date(v) =>
      require(v != null, "an entity key part is null: null keys are a data error, never a key")
      "d" + v
    case Timestamp(v) => "t" + v
    case Real(v) =>
      val canonical = if (v.isNaN) Double.NaN else if (v == 0.0) 0.0 else v
      "f" + hex.toHexDigits(java.lang.Double.doubleToLongBits(canonical))
  }

  private def decodePart(s: String, whole: String): Part = {
    def bad(why: String) = throw new IllegalArgumentException(s"cannot decode entity key '$whole': part '$s' $why")
    if (s.isEmpty) bad("is empty")
    val v = s.substring(1)
    try s.charAt(0) match {
      case 's' => Str(unescape(v))
      case 'i' => Integral(java.lang.Long.parseLong(v))
      case 'b' => v match { case "1" => Bool(true); case "0" => Bool(false); case _ => bad("is not b1 or b0") }
      case 'x' => Binary(ArraySeq.from(hex.parseHex(v)))
      case 'n' => Decimal(new java.math.BigDecimal(v))
      case 'd' => Date(LocalDate.parse(v))
      case 't' => Timestamp(java.lang.Long.parseLong(v))
      case 'f' if v.length == 16 => Real(java.lang.Double.longBitsToDouble(java.lang.Long.parseUnsignedLong(v, 16)))
      case c => bad(s"has an unknown type tag '$c'")
    } catch {
      case e: IllegalArgumentException if !String.valueOf(e.getMessage).startsWith("cannot decode") =>
        bad(s"is malformed (${e.getMessage})")
      case e: java.time.DateTimeException => bad(s"is malformed (${e.getMessage})")
    }
  }

  // Every part's text is free of `,` (strings escape it), so splitting on it is exact.
  private[online] def splitParts(encoded: String): Seq[String] = encoded.split(",", -1).toSeq

  private def special(b: Byte): Boolean = b == '%' || b == ',' || b == '{' || b == '}' || (b >= 0 && b < 0x20) || b == 0x7f

  private def escape(utf8: Array[Byte]): String =
    if (!utf8.exists(special)) new String(utf8, UTF_8)
    else {
      val out = new java.io.ByteArrayOutputStream(utf8.length + 8)
      utf8.foreach { b =>
        if (special(b)) out.writeBytes(f"%%${b & 0xff}%02X".getBytes(UTF_8)) else out.write(b.toInt)
      }
      new String(out.toByteArray, UTF_8)
    }

  private def unescape(s: String): String = {
    val utf8 = s.getBytes(UTF_8)
    val out = new java.io.ByteArrayOutputStream(utf8.length)
    var i = 0
    while (i < utf8.length) {
      if (utf8(i) == '%') {
        require(i + 2 < utf8.length, s"'%' without two hex digits in '$s'")
        out.write(Integer.parseInt(new String(utf8, i + 1, 2, UTF_8), 16)); i += 3
      } else { out.write(utf8(i).toInt); i += 1 }
    }
    new String(out.toByteArray, UTF_8)
  }
}

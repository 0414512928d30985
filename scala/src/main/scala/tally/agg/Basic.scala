package tally.agg

/** Counting and summing: the invertible core of velocity features. */

/** Mutable counter IR. */
final class CountIR(var n: Long)

object Count extends Unboxed[CountIR] {
  private val Format: Byte = 0x01
  def zero() = new CountIR(0L)
  val unboxing: Unboxing = Unboxing.Unread
  def updateBits(s: CountIR, bits: Long, ts: Long): CountIR = { s.n += 1; s }
  def removeBits(s: CountIR, bits: Long, ts: Long): CountIR = { s.n -= 1; s }
  def merge(a: CountIR, b: CountIR): CountIR = { a.n += b.n; a }
  def copy(s: CountIR) = new CountIR(s.n)
  def finish(s: CountIR, asOf: Long): Any = s.n
  def encode(s: CountIR): Array[Byte] = Codec.writer(Format).long(s.n).result()
  def decode(bytes: Array[Byte]): CountIR = { val r = Codec.reader(bytes, Format, "count"); val s = new CountIR(r.long()); r.done(); s }
  val outputType: VType = VType.Long
}

/** Sum of integers: exact (a sum of longs stays a long; overflow raises instead of wrapping). */
final class LongSumIR(var sum: Long)

object LongSum extends Unboxed[LongSumIR] {
  private val Format: Byte = 0x02
  def zero() = new LongSumIR(0L)
  val unboxing: Unboxing = Unboxing.AsLong
  def updateBits(s: LongSumIR, bits: Long, ts: Long): LongSumIR = { s.sum = Math.addExact(s.sum, bits); s }
  def removeBits(s: LongSumIR, bits: Long, ts: Long): LongSumIR = { s.sum = Math.subtractExact(s.sum, bits); s }
  def merge(a: LongSumIR, b: LongSumIR): LongSumIR = { a.sum = Math.addExact(a.sum, b.sum); a }
  def copy(s: LongSumIR) = new LongSumIR(s.sum)
  def finish(s: LongSumIR, asOf: Long): Any = s.sum
  def encode(s: LongSumIR): Array[Byte] = Codec.writer(Format).long(s.sum).result()
  def decode(bytes: Array[Byte]): LongSumIR = { val r = Codec.reader(bytes, Format, "long sum"); val s = new LongSumIR(r.long()); r.done(); s }
  val outputType: VType = VType.Long
}

/** Sum of doubles with Neumaier compensation, so that adding and later removing values of very different
  * magnitudes (a sliding window over heavy-tailed amounts) does not drift. NaN and infinities propagate as in
  * IEEE arithmetic; a window that once saw a NaN reports NaN until it is removed and recounted from non-NaN
  * values (tracked by `nans`). */
final class DoubleSumIR(var sum: Double, var comp: Double, var nans: Long, var posInf: Long, var negInf: Long)

object DoubleSum extends Unboxed[DoubleSumIR] {
  private val Format: Byte = 0x03
  def zero() = new DoubleSumIR(0.0, 0.0, 0L, 0L, 0L)
  private def add(s: DoubleSumIR, v: Double, sign: Int): DoubleSumIR = {
    if (v.isNaN) s.nans += sign
    else if (v == Double.PositiveInfinity) s.posInf += sign
    else if (v == Double.NegativeInfinity) s.negInf += sign
    else {
      val x = if (sign > 0) v else -v
      val t = s.sum + x
      s.comp += (if (math.abs(s.sum) >= math.abs(x)) (s.sum - t) + x else (x - t) + s.sum)
      s.sum = t
    }
    s
  }
  val unboxing: Unboxing = Unboxing.AsDouble
  def updateBits(s: DoubleSumIR, bits: Long, ts: Long): DoubleSumIR = add(s, java.lang.Double.longBitsToDouble(bits), 1)
  def removeBits(s: DoubleSumIR, bits: Long, ts: Long): DoubleSumIR = add(s, java.lang.Double.longBitsToDouble(bits), -1)
  def merge(a: DoubleSumIR, b: DoubleSumIR): DoubleSumIR = {
    add(a, b.sum, 1); add(a, b.comp, 1)
    a.nans += b.nans; a.posInf += b.posInf; a.negInf += b.negInf; a
  }
  def copy(s: DoubleSumIR) = new DoubleSumIR(s.sum, s.comp, s.nans, s.posInf, s.negInf)
  def value(s: DoubleSumIR): Double =
    if (s.nans > 0 || (s.posInf > 0 && s.negInf > 0)) Double.NaN
    else if (s.posInf > 0) Double.PositiveInfinity
    else if (s.negInf > 0) Double.NegativeInfinity
    else s.sum + s.comp
  def finish(s: DoubleSumIR, asOf: Long): Any = value(s)
  def encode(s: DoubleSumIR): Array[Byte] =
    Codec.writer(Format).double(s.sum).double(s.comp).long(s.nans).long(s.posInf).long(s.negInf).result()
  def decode(bytes: Array[Byte]): DoubleSumIR = {
    val r = Codec.reader(bytes, Format, "double sum")
    val s = new DoubleSumIR(r.double(), r.double(), r.long(), r.long(), r.long()); r.done(); s
  }
  val outputType: VType = VType.Double
}

/** Sum of decimals: exact, keeping the input's scale (precision widened to 38 as Spark does for sums). */
final class DecimalSumIR(var sum: java.math.BigDecimal)

final case class DecimalSum(scale: Int) extends Invertible[DecimalSumIR] {
  private val Format: Byte = 0x04
  def zero() = new DecimalSumIR(java.math.BigDecimal.ZERO.setScale(scale))
  def update(s: DecimalSumIR, value: Any, ts: Long): DecimalSumIR = { s.sum = s.sum.add(Num.decimal(value)); s }
  def remove(s: DecimalSumIR, value: Any, ts: Long): DecimalSumIR = { s.sum = s.sum.subtract(Num.decimal(value)); s }
  def merge(a: DecimalSumIR, b: DecimalSumIR): DecimalSumIR = { a.sum = a.sum.add(b.sum); a }
  def copy(s: DecimalSumIR) = new DecimalSumIR(s.sum)
  def finish(s: DecimalSumIR, asOf: Long): Any = s.sum.setScale(scale)
  def encode(s: DecimalSumIR): Array[Byte] = Codec.writer(Format).decimal(s.sum).result()
  def decode(bytes: Array[Byte]): DecimalSumIR = { val r = Codec.reader(bytes, Format, "decimal sum"); val s = new DecimalSumIR(r.decimal()); r.done(); s }
  val outputType: VType = VType.Decimal(38, scale)
}

/** Boxed JVM numbers to primitives; input values are checked once by type at the crossing. */
object Num {
  def long(v: Any): Long = v match {
    case l: java.lang.Long    => l
    case i: java.lang.Integer => i.longValue
    case s: java.lang.Short   => s.longValue
    case b: java.lang.Byte    => b.longValue
    case b: java.lang.Boolean => if (b) 1L else 0L
    case other                => throw new IllegalArgumentException(s"expected an integer value, got ${other.getClass.getName}")
  }
  def double(v: Any): Double = v match {
    case d: java.lang.Double     => d
    case f: java.lang.Float      => f.doubleValue
    case d: java.math.BigDecimal => d.doubleValue
    case d: scala.math.BigDecimal => d.toDouble
    case b: java.lang.Boolean    => if (b) 1.0 else 0.0
    case n: java.lang.Number     => n.doubleValue
    case other                   => throw new IllegalArgumentException(s"expected a numeric value, got ${other.getClass.getName}")
  }
  def decimal(v: Any): java.math.BigDecimal = v match {
    case d: java.math.BigDecimal  => d
    case d: scala.math.BigDecimal => d.bigDecimal
    case l: java.lang.Long        => java.math.BigDecimal.valueOf(l)
    case i: java.lang.Integer     => java.math.BigDecimal.valueOf(i.longValue)
    case other                    => throw new IllegalArgumentException(s"expected a decimal value, got ${other.getClass.getName}")
  }
}

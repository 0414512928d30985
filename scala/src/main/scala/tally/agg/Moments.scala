package tally.agg

/** Mean, variance and standard deviation from one IR: Welford's running mean and sum of squared deviations
  * (m2), merged with Chan's formula and taken back with Welford's inverse step, so all of them are invertible.
  *
  * Inputs are read as doubles (decimals too); results are doubles. Empty gives null; sample variance and
  * sample stddev of a single value give null (as Spark's var_samp). NaN and infinities are counted apart (see
  * [[Specials]]): the mean follows IEEE (NaN, or the one infinity present), variance and stddev are NaN while
  * any non-finite value is in the state.
  *
  * Precision: after many add/remove cycles m2 carries absolute error of about eps * n * max(x^2); it is clamped
  * at 0 and reset exactly when the state empties. */
final class MomentsIR(var n: Long, var mean: Double, var m2: Double, val specials: Specials)

sealed abstract class Moment(val name: String)
object Moment {
  case object Mean extends Moment("mean")
  case object VarSamp extends Moment("variance")
  case object VarPop extends Moment("variance_pop")
  case object StdSamp extends Moment("stddev")
  case object StdPop extends Moment("stddev_pop")
  val all: Seq[Moment] = Seq(Mean, VarSamp, VarPop, StdSamp, StdPop)
}

final case class Moments(moment: Moment) extends Unboxed[MomentsIR] {
  private val Format: Byte = 0x05
  def zero() = new MomentsIR(0L, 0.0, 0.0, new Specials())

  val unboxing: Unboxing = Unboxing.AsDouble

  def updateBits(s: MomentsIR, bits: Long, ts: Long): MomentsIR = {
    val x = java.lang.Double.longBitsToDouble(bits)
    if (!s.specials.take(x, 1)) {
      s.n += 1
      val d = x - s.mean
      s.mean += d / s.n
      s.m2 += d * (x - s.mean)
    }
    s
  }

  def removeBits(s: MomentsIR, bits: Long, ts: Long): MomentsIR = {
    val x = java.lang.Double.longBitsToDouble(bits)
    if (!s.specials.take(x, -1)) {
      if (s.n <= 1) { s.n = 0; s.mean = 0.0; s.m2 = 0.0 } // reset exactly: no drift survives an empty window
      else {
        val before = s.mean
        s.n -= 1
        s.mean -= (x - before) / s.n
        // One value left has no deviation: m2 is exactly 0, not the residue of the removals (whose square root,
        // ~sqrt(eps) * |x|, a stddev would report).
        s.m2 = if (s.n == 1) 0.0 else math.max(0.0, s.m2 - (x - s.mean) * (x - before))
      }
    }
    s
  }

  def merge(a: MomentsIR, b: MomentsIR): MomentsIR = {
    if (b.n > 0) {
      val n = a.n + b.n
      val d = b.mean - a.mean
      // Weighted by fractions: symmetric in a and b (so merge commutes exactly), exact when one side is empty,
      // and no overflow from mean * n.
      a.mean = a.mean * (a.n.toDouble / n) + b.mean * (b.n.toDouble / n)
      a.m2 = a.m2 + b.m2 + d * d * (a.n.toDouble * b.n / n)
      a.n = n
    }
    a.specials.merge(b.specials)
    a
  }

  def copy(s: MomentsIR) = new MomentsIR(s.n, s.mean, s.m2, s.specials.copy())

  def finish(s: MomentsIR, asOf: Long): Any = {
    val total = s.n + s.specials.count
    moment match {
      case _ if total == 0 => null
      case Moment.Mean => s.specials.resolve(s.mean)
      case Moment.VarSamp | Moment.StdSamp if total < 2 => null
      case _ =>
        val v = if (s.specials.count > 0) Double.NaN
                else if (moment == Moment.VarSamp || moment == Moment.StdSamp) s.m2 / (s.n - 1) else s.m2 / s.n
        if (moment == Moment.StdSamp || moment == Moment.StdPop) math.sqrt(v) else v
    }
  }

  def encode(s: MomentsIR): Array[Byte] = s.specials.write(Codec.writer(Format).long(s.n).double(s.mean).double(s.m2)).result()
  def decode(bytes: Array[Byte]): MomentsIR = {
    val r = Codec.reader(bytes, Format, "moments")
    val s = new MomentsIR(r.long(), r.double(), r.double(), Specials.read(r)); r.done(); s
  }
  val outputType: VType = VType.Double
}

package tally.agg

/** decayed_sum and decayed_count: sum of v * 2^(-(asOf - ts) / half_life) over the events (v = 1 for the count),
  * evaluated at finish's `asOf`. Events after asOf weigh more than 1 (the formula is applied as is).
  *
  * The IR holds the sum scaled to a reference time `ref`, the latest ts seen: sum = Σ v * 2^((ts - ref) / h).
  * Moving ref forward rescales the sum, so every stored term is at most |v| and nothing overflows however long
  * the history; finish multiplies by 2^((ref - asOf) / h). Merge rescales both sides to the later ref, which is
  * symmetric, so merge commutes exactly.
  *
  * Invertible, with care: remove subtracts v * 2^((ts - ref) / h). The result then carries an absolute error of
  * about 1e-16 times the largest |scaled sum| the state has held (a huge amount added and later removed
  * leaves a residue of that order); the state resets exactly to 0 when its last event is removed. Terms older
  * than ~1074 half-lives underflow to 0 both when added and removed, consistently. NaN and infinite amounts are
  * counted apart ([[Specials]]) and decide the result while present. Empty gives 0.0 (like count and sum). */
final class DecayedIR(var sum: Double, var ref: Long, var n: Long, val specials: Specials)

final case class Decayed(halfLifeUs: Long, counting: Boolean) extends Invertible[DecayedIR] {
  require(halfLifeUs > 0, s"aggregation '${if (counting) "decayed_count" else "decayed_sum"}': parameter 'half_life_us' must be positive, got $halfLifeUs")
  private val Format: Byte = 0x0d
  private val h = halfLifeUs.toDouble
  private def weight(from: Long, to: Long): Double = math.pow(2.0, (to - from).toDouble / h) // 2^((to - from)/h)

  def zero() = new DecayedIR(0.0, Long.MinValue, 0L, new Specials())

  private def amount(value: Any): Double = if (counting) 1.0 else Num.double(value)

  def update(s: DecayedIR, value: Any, ts: Long): DecayedIR = {
    val v = amount(value)
    s.n += 1
    if (s.n == 1 || ts > s.ref) { // move ref forward to the newest event; the old sum decays to it
      s.sum = (if (s.n == 1) 0.0 else s.sum * weight(ts, s.ref))
      s.ref = ts
    }
    if (!s.specials.take(v, 1)) s.sum += v * weight(s.ref, ts)
    s
  }

  def remove(s: DecayedIR, value: Any, ts: Long): DecayedIR = {
    val v = amount(value)
    s.n -= 1
    if (!s.specials.take(v, -1)) s.sum -= v * weight(s.ref, ts)
    if (s.n == 0) s.sum = 0.0 // exact reset: no residue survives an empty window
    s
  }

  def merge(a: DecayedIR, b: DecayedIR): DecayedIR = {
    if (b.n > 0) {
      if (a.n == 0) { a.sum = b.sum; a.ref = b.ref }
      else {
        val ref = math.max(a.ref, b.ref)
        a.sum = a.sum * weight(ref, a.ref) + b.sum * weight(ref, b.ref)
        a.ref = ref
      }
      a.n += b.n
    }
    a.specials.merge(b.specials)
    a
  }

  def copy(s: DecayedIR) = new DecayedIR(s.sum, s.ref, s.n, s.specials.copy())
  def value(s: DecayedIR, asOf: Long): Double = if (s.n == 0) 0.0 else s.specials.resolve(s.sum * weight(asOf, s.ref))
  def finish(s: DecayedIR, asOf: Long): Any = value(s, asOf)

  def encode(s: DecayedIR): Array[Byte] =
    s.specials.write(Codec.writer(Format, 64).long(halfLifeUs).double(s.sum).long(s.ref).long(s.n)).result()
  def decode(bytes: Array[Byte]): DecayedIR = {
    val r = Codec.reader(bytes, Format, "decayed")
    val stored = r.long()
    require(stored == halfLifeUs, s"decayed IR was built with half_life_us=$stored, this aggregator has $halfLifeUs")
    val s = new DecayedIR(r.double(), r.long(), r.long(), Specials.read(r)); r.done(); s
  }
  val outputType: VType = VType.Double
}

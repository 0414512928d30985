package tally.agg

/** Counts of NaN and infinite inputs, kept apart from the finite arithmetic so that removing them restores an
  * exact finite state (a window that saw a NaN reports NaN only while the NaN is inside it). IEEE rules decide
  * the result while any are present: NaN, or +Inf and -Inf together, give NaN; one kind of infinity wins. */
final class Specials(var nans: Long = 0L, var posInf: Long = 0L, var negInf: Long = 0L) {
  /** Counts `v` with `sign` (+1 add, -1 remove) if it is not finite; true when it was counted. */
  def take(v: Double, sign: Int): Boolean =
    if (v.isNaN) { nans += sign; true }
    else if (v == Double.PositiveInfinity) { posInf += sign; true }
    else if (v == Double.NegativeInfinity) { negInf += sign; true }
    else false

  def count: Long = nans + posInf + negInf
  def merge(b: Specials): Unit = { nans += b.nans; posInf += b.posInf; negInf += b.negInf }
  def copy(): Specials = new Specials(nans, posInf, negInf)
  /** The value the finite part `finite` turns into when specials are present. */
  def resolve(finite: Double): Double =
    if (nans > 0 || (posInf > 0 && negInf > 0)) Double.NaN
    else if (posInf > 0) Double.PositiveInfinity
    else if (negInf > 0) Double.NegativeInfinity
    else finite
  def write(w: Codec.Writer): Codec.Writer = w.long(nans).long(posInf).long(negInf)
}

object Specials {
  def read(r: Codec.Reader): Specials = new Specials(r.long(), r.long(), r.long())
}

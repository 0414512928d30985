package tally.spark

import org.apache.spark.sql.catalyst.InternalRow
import org.apache.spark.sql.catalyst.expressions.GenericInternalRow
import org.apache.spark.sql.types.DataType

/** Equality of the leading key columns of two Catalyst rows, for sweeps over rows sorted by key. Keys are
  * compared by their Catalyst values (UTF8String, Long, Decimal, ...), so no key is converted per row. */
final case class KeyOf(types: Seq[DataType]) {
  private val n = types.length
  private val ts = types.toArray

  def same(a: InternalRow, b: InternalRow): Boolean = {
    var i = 0
    while (i < n) {
      val (x, y) = (a.get(i, ts(i)), b.get(i, ts(i)))
      if (x == null || y == null) { if (x != y) return false } else if (x != y) return false
      i += 1
    }
    true
  }

  /** A standalone copy of the key columns (the input row object is reused by the iterator). */
  def copy(row: InternalRow): InternalRow = {
    val out = new GenericInternalRow(n)
    var i = 0
    while (i < n) { out.update(i, InternalRow.copyValue(row.get(i, ts(i)))); i += 1 }
    out
  }

  def show(row: InternalRow): String = (0 until n).map(i => String.valueOf(row.get(i, ts(i)))).mkString("(", ", ", ")")
}

package tally.spark

import org.apache.spark.sql.catalyst.InternalRow
import org.apache.spark.sql.types.DataType
import org.apache.spark.unsafe.types.UTF8String

/** Entity keys read from the leading columns of Catalyst rows, as values with content equality and hashing
  * (UTF8String, Long, Decimal, ...; a Seq of them for composite keys), so rows of one key can be grouped. */
object Keys {
  /** A reader of the key in columns 0 until types.length. With `stable`, what points into the row's buffer (which
    * the shuffle reader and the sorter reuse) is copied, so the key may be kept past the next row. */
  def reader(types: Seq[DataType]): (InternalRow, Boolean) => Any = {
    val get = types.map(t => InternalRow.getAccessor(t)).toArray // resolves the physical type once
    def one(row: InternalRow, i: Int, stable: Boolean): Any = get(i)(row, i) match {
      case s: UTF8String => if (stable) s.clone() else s
      case b: Array[Byte] => b.toSeq
      case v => v
    }
    if (get.length == 1) (row, stable) => one(row, 0, stable)
    else (row, stable) => get.indices.map(i => one(row, i, stable))
  }
}

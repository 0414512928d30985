package tally.spark

import java.time.{Instant, LocalDate, LocalDateTime, ZoneOffset}

import org.apache.spark.sql.catalyst.{CatalystTypeConverters, InternalRow}
import org.apache.spark.sql.types.{DataType, DateType, TimestampNTZType, TimestampType}
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

  /** A key value (Catalyst's internal form) as the Scala value `lit` takes back: dates and timestamps as java.time
    * values, which carry no zone. The default converters give java.sql.Date and Timestamp, built and read in the
    * JVM's default zone, which may differ between the executor that converts and the driver that makes the
    * literal (a date key would then move by a day). */
  def external(v: Any, t: DataType): Any = (v, t) match {
    case (null, _)                   => null
    case (d: Int, DateType)          => LocalDate.ofEpochDay(d.toLong)
    case (m: Long, TimestampType)    => Instant.ofEpochSecond(Math.floorDiv(m, 1000000L), Math.floorMod(m, 1000000L) * 1000L)
    case (m: Long, TimestampNTZType) =>
      LocalDateTime.ofEpochSecond(Math.floorDiv(m, 1000000L), (Math.floorMod(m, 1000000L) * 1000L).toInt, ZoneOffset.UTC)
    case _                           => CatalystTypeConverters.convertToScala(v, t)
  }
}

package tally.spark

import org.apache.spark.sql.{Column, DataFrame}
import org.apache.spark.sql.functions._
import org.apache.spark.sql.tally.SparkInternals
import org.apache.spark.sql.types._

/** Time columns as epoch microseconds (UTC), the same whatever `spark.sql.session.timeZone` or the JVM's default
  * zone say (DESIGN.md, "Time semantics": timestamps are UTC instants; naive ones are read as UTC):
  *  - timestamp: its instant;
  *  - timestamp_ntz: its wall time read as UTC (a plain cast would read it in the session's zone);
  *  - date: 00:00 UTC of that day;
  *  - bigint, where `micros` allows it: already microseconds. */
object Times {
  def micros(df: DataFrame, name: String, where: String, allowMicros: Boolean): Column = {
    val field = df.schema.find(_.name == name).getOrElse(throw new IllegalArgumentException(
      s"$where: no timestamp column '$name' (columns: ${df.columns.mkString(", ")})"))
    val c = col(s"`$name`")
    field.dataType match {
      case TimestampType                  => unix_micros(c)
      case TimestampNTZType | DateType    => unix_micros(SparkInternals.castInUtc(c, TimestampType))
      case LongType if allowMicros        => c
      case other => throw new IllegalArgumentException(
        s"$where: column '$name' must be a timestamp, timestamp_ntz or date${if (allowMicros) " (or bigint microseconds)" else ""}, got ${other.simpleString}")
    }
  }
}

// The uses of Spark-internal API in tally, kept to this file. They live in Spark's package because what they call
// is `private[sql]`.
package org.apache.spark.sql.tally

import org.apache.spark.rdd.RDD
import org.apache.spark.sql.{Column, DataFrame, SparkSession}
import org.apache.spark.sql.catalyst.InternalRow
import org.apache.spark.sql.catalyst.expressions.Cast
import org.apache.spark.sql.classic.ExpressionUtils
import org.apache.spark.sql.types.{DataType, StructType}

object SparkInternals {
  /** A DataFrame from an RDD of Catalyst rows. Why: the sweep used to read and emit external `Row`s, and converting
    * every row to a Row and back (timestamps to Instants, decimals to BigDecimals, structs to Rows) cost about a
    * fifth of the engine's CPU on the benchmark. */
  def fromInternalRows(spark: SparkSession, rows: RDD[InternalRow], schema: StructType): DataFrame =
    spark.asInstanceOf[org.apache.spark.sql.classic.SparkSession].internalCreateDataFrame(rows, schema)

  /** `c` cast to `to` in UTC, whatever `spark.sql.session.timeZone` says. Why: a cast between timestamp_ntz (or
    * date) and timestamp takes the session's zone, and the public API has no way to name another (the analyzer
    * fills in the session's zone only where none is set). `timestamp_diff` from an NTZ epoch does not help: it casts
    * both sides in the session's zone, an hour off across a DST gap. */
  def castInUtc(c: Column, to: DataType): Column =
    ExpressionUtils.column(Cast(ExpressionUtils.expression(c), to, Some("UTC")))
}

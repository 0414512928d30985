// The one use of Spark-internal API in tally, kept to this file: a DataFrame from an RDD of Catalyst rows.
// It lives in Spark's package because `internalCreateDataFrame` is `private[sql]`. Why: the sweep used to read
// and emit external `Row`s, and converting every row to a Row and back (timestamps to Instants, decimals to
// BigDecimals, structs to Rows) cost about a fifth of the engine's CPU on the benchmark.
package org.apache.spark.sql.tally

import org.apache.spark.rdd.RDD
import org.apache.spark.sql.{DataFrame, SparkSession}
import org.apache.spark.sql.catalyst.InternalRow
import org.apache.spark.sql.types.StructType

object InternalFrames {
  def fromInternalRows(spark: SparkSession, rows: RDD[InternalRow], schema: StructType): DataFrame =
    spark.asInstanceOf[org.apache.spark.sql.classic.SparkSession].internalCreateDataFrame(rows, schema)
}

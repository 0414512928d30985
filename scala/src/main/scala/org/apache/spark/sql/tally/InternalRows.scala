package org.apache.spark.sql.tally

import org.apache.spark.rdd.RDD
import org.apache.spark.sql.DataFrame
import org.apache.spark.sql.catalyst.InternalRow
import org.apache.spark.sql.types.StructType

/** The one door into Spark internals: a DataFrame from Catalyst rows. The sweep jobs read and write InternalRows
  * so that no row is converted to and from external Row objects (half of their time, measured on the as-of
  * benchmark). It lives in this package only because `internalCreateDataFrame` is `private[sql]`. */
object InternalRows {
  def rdd(df: DataFrame): RDD[InternalRow] = df.queryExecution.toRdd

  def toDataFrame(like: DataFrame, rows: RDD[InternalRow], schema: StructType): DataFrame =
    like.sparkSession.asInstanceOf[org.apache.spark.sql.classic.SparkSession].internalCreateDataFrame(rows, schema, false)
}

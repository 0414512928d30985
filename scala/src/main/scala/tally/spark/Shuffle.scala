package tally.spark

import org.apache.spark.sql.DataFrame
import org.apache.spark.sql.functions.col

/** The one shuffle the sweep jobs need: rows of a key in one partition, sorted by (key, time, ...).
  *
  * Measured, not assumed: leading the sort with a 64-bit hash of the key (to give the sort a distinctive prefix)
  * made the as-of benchmark 35 % slower and left the temporal one unchanged, so the sort is on the key itself. */
object Shuffle {
  def byKeyThenTime(df: DataFrame, keys: Seq[String], thenBy: Seq[String], partitions: Int): DataFrame =
    df.repartition(partitions, keys.map(col): _*).sortWithinPartitions((keys ++ thenBy).map(col): _*)
}

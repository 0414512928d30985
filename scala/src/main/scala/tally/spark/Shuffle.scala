package tally.spark

import org.apache.spark.sql.DataFrame
import org.apache.spark.sql.functions.{col, xxhash64}

/** The one shuffle the sweep jobs need: rows of a key in one partition, sorted by (key, time, ...). */
object Shuffle {
  /** Hash-partitions by `keys` and sorts within partitions. A 64-bit hash of the key leads the sort, so the sort's
    * cheap prefix comparison tells almost every pair of keys apart, where string keys sharing a prefix ("card1...")
    * would fall back to full row comparisons; equal keys still sort by time after it. */
  def byKeyThenTime(df: DataFrame, keys: Seq[String], thenBy: Seq[String], partitions: Int): DataFrame =
    df.repartition(partitions, keys.map(col): _*)
      .sortWithinPartitions((xxhash64(keys.map(col): _*) +: (keys ++ thenBy).map(col)): _*)
}

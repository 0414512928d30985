package tally.spark

import org.apache.spark.sql.SparkSession

/** One small local SparkSession for the Scala tests of the Spark layer, with the `tally_*` functions registered. */
object LocalSpark {
  lazy val session: SparkSession = {
    val spark = SparkSession.builder()
      .master("local[2]")
      .appName("tally-scala-tests")
      .config("spark.ui.enabled", "false")
      .config("spark.sql.shuffle.partitions", "4")
      .config("spark.default.parallelism", "4")
      .config("spark.driver.bindAddress", "127.0.0.1")
      .getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    Functions.register(spark)
    spark
  }
}

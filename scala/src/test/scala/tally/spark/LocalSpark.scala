package tally.spark

import org.apache.spark.sql.SparkSession

/** One small local SparkSession for the Scala tests of the Spark layer, with Delta and the `tally_*` functions. */
object LocalSpark {
  lazy val session: SparkSession = {
    val spark = SparkSession.builder()
      .master("local[2]")
      .appName("tally-scala-tests")
      .config("spark.ui.enabled", "false")
      .config("spark.sql.shuffle.partitions", "4")
      .config("spark.default.parallelism", "4")
      .config("spark.driver.bindAddress", "127.0.0.1")
      // as tally's sessions: Delta reads (StreamJobSuite reads the tile table back) need its extension and catalog
      .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
      .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
      .getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    Functions.register(spark)
    spark
  }
}

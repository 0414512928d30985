package tally.spark

import org.apache.spark.sql.{Column, DataFrame}
import org.apache.spark.sql.expressions.Window
import org.apache.spark.sql.functions._

/** The hot-key split of the sweep: a key with more events than a task should carry is swept in several time
  * buckets, on several tasks, instead of by one task alone.
  *
  * A bucket of length L holds the queries at times [b*L, (b+1)*L) and every event any of them can see: its own
  * events and those of the `overlap` before it (overlap = the longest window + its delay, or the ttl). With
  * L >= overlap, an event at ts goes to bucket floor(ts / L) and, when floor((ts + overlap) / L) is the next
  * one, also there as a copy that is only an event, never a query. Buckets are one more key column of the
  * shuffle and the sweep, so nothing else changes. Views with a lifetime window need all of a key's history in
  * one place and are never split.
  *
  * Which keys: a sample of the events (one job over the key and time columns) estimates each key's rows n and
  * time range; the total N. A key is a candidate when n > N / partitions (more than an average task). Mode
  * `auto` splits a candidate only when that shortens the job's critical path on this cluster's C task slots:
  *   without: max(n, N / C);   with B buckets and r = 1 + overlap / L events per event: max(n r / B, (N + n (r - 1)) / C)
  * by at least a fifth. On 2 cores a key must hold well over half of the rows to gain; on 100 cores, a few
  * percent. Mode `always` splits every candidate (tests, benchmarks); `off` never.
  */
object HotKeys {
  val ModeConf = "spark.tally.sweep.split"               // auto | always | off
  val SampleConf = "spark.tally.sweep.splitSample"       // fraction of events sampled, default 0.01
  val SlotsConf = "spark.tally.sweep.slots"              // tasks that run at once; default: Spark's default parallelism
  private val MaxHotKeys = 64

  /** One hot key: its values (in key column order) and its bucket length in microseconds. */
  final case class Hot(values: Seq[Any], bucketUs: Long)

  /** The keys to split, or none. `time` is the events' time in microseconds (a Column over `events`). */
  def plan(events: DataFrame, keys: Seq[String], time: Column, overlapUs: Option[Long], partitions: Int): Seq[Hot] = {
    val spark = events.sparkSession
    val mode = spark.conf.get(ModeConf, "auto")
    require(Set("auto", "always", "off")(mode), s"$ModeConf must be auto, always or off, got '$mode'")
    val overlap = overlapUs.getOrElse(return Nil) // a lifetime window: never split
    if (mode == "off") return Nil
    val fraction = spark.conf.get(SampleConf, "0.01").toDouble
    val slots = spark.conf.getOption(SlotsConf).map(_.toDouble).getOrElse(spark.sparkContext.defaultParallelism.toDouble)
    val sampled = events.select(keys.map(k => col(s"`$k`")) :+ time.as("__t"): _*).where(col("__t").isNotNull)
    val sample = if (fraction >= 1.0) sampled else sampled.sample(withReplacement = false, fraction, 42L)
    val top = sample.groupBy(keys.map(k => col(s"`$k`")): _*)
      .agg(count(lit(1)).as("__n"), min("__t").as("__lo"), max("__t").as("__hi"))
      .withColumn("__total", sum("__n").over(Window.partitionBy()))
      .orderBy(desc("__n")).limit(MaxHotKeys).collect()
    top.toSeq.flatMap { row =>
      val total = row.getAs[Long]("__total") / fraction
      val n = row.getAs[Long]("__n") / fraction
      val range = math.max(row.getAs[Long]("__hi") - row.getAs[Long]("__lo"), 1L).toDouble
      if (n <= total / partitions) None
      else {
        val buckets = math.ceil(n / (total / partitions))
        val length = math.max(overlap.toDouble, range / buckets).max(1.0)
        val used = math.ceil(range / length)
        val r = 1.0 + overlap / length
        val without = math.max(n, total / slots)
        val withSplit = math.max(n * r / used, (total + n * (r - 1)) / slots)
        val worth = mode == "always" || withSplit < 0.8 * without
        if (used < 2 || !worth) None else Some(Hot(keys.indices.map(i => row.get(i)), length.toLong))
      }
    }
  }

  /** The key's bucket length, or null for a key that is not split. */
  def bucketLength(hot: Seq[Hot], keys: Seq[Column]): Column =
    hot.foldLeft(lit(null).cast("bigint")) { (acc, h) =>
      when(keys.zip(h.values).map { case (k, v) => k === lit(v) }.reduce(_ && _), lit(h.bucketUs)).otherwise(acc)
    }

  /** floor(t / length): an exact multiple of length divided by it, exact in doubles below 2^53 us (year 2255). */
  def bucketOf(micros: Column, length: Column): Column = (micros - pmod(micros, length)).divide(length).cast("bigint")

  /** The bucket of a key that is not split: any constant will do; this one no real time gives. */
  val Unsplit: Long = Long.MinValue
}

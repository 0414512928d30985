package tally.spark

import org.apache.spark.sql.{Column, DataFrame}
import org.apache.spark.sql.functions._

/** The hot-key split of the sweep: a key with more events than a task should carry is swept in several time
  * buckets, on several tasks, instead of by one task alone.
  *
  * A bucket of length L holds the queries at times [b*L, (b+1)*L) and every event any of them can see: its own
  * events and those of the `overlap` before it (overlap = the longest window + its delay + its hop, or the
  * ttl). With L >= overlap, an event at ts goes to bucket floor(ts / L) and, when floor((ts + overlap) / L) is
  * the next one, also there as a copy that is only an event, never a query. Buckets are one more key column of the
  * shuffle and the sweep, so nothing else changes. Views with a lifetime window need all of a key's history in
  * one place and are never split.
  *
  * Which keys: a sample of the events (one pass, no shuffle, over the key and time columns) estimates each
  * key's rows n and time range, and the total N. A key is a candidate when n > N / partitions (more than an average task). Mode
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
    val (total, counts) = countKeys(sample, keys.size)
    counts.toSeq.flatMap { case (values, Array(sampledRows, lo, hi)) =>
      val n = sampledRows / fraction
      val all = total / fraction
      val range = math.max(hi - lo, 1L).toDouble
      if (n <= all / partitions) None
      else {
        val buckets = math.ceil(n / (all / partitions))
        val length = math.max(overlap.toDouble, range / buckets).max(1.0)
        val used = math.ceil(range / length)
        val r = 1.0 + overlap / length
        val without = math.max(n, all / slots)
        val withSplit = math.max(n * r / used, (all + n * (r - 1)) / slots)
        val worth = mode == "always" || withSplit < 0.8 * without
        if (used < 2 || !worth) None else Some(Hot(values, length.toLong))
      }
    }
  }

  /** Rows of the sample, and for its most frequent keys (in key values as Scala sees them): rows, first and
    * last time. One pass, no shuffle: each task counts its keys and keeps its top ones, the driver adds them up
    * (a key that is hot overall is near the top of every task's share). */
  private def countKeys(sample: DataFrame, nKeys: Int): (Long, Map[Seq[Any], Array[Long]]) = {
    val types = sample.schema.fields.map(_.dataType).toSeq
    val perTask = sample.queryExecution.toRdd.mapPartitions { rows =>
      val read = Keys.reader(types.take(nKeys))
      val seen = new java.util.HashMap[Any, Array[Long]]()
      var total = 0L
      rows.foreach { row =>
        total += 1
        val t = row.getLong(nKeys)
        var s = seen.get(read(row, false))
        if (s == null) { s = Array(0L, t, t); seen.put(read(row, true), s) }
        s(0) += 1; s(1) = math.min(s(1), t); s(2) = math.max(s(2), t)
      }
      val top = scala.jdk.CollectionConverters.MapHasAsScala(seen).asScala.toSeq.sortBy(-_._2(0)).take(MaxHotKeys).map {
        case (k, s) =>
          val parts = if (nKeys == 1) Seq(k) else k.asInstanceOf[Seq[Any]]
          parts.zip(types).map { case (v, dt) => Keys.external(v, dt) } -> s
      }
      Iterator.single(total -> top)
    }.collect()
    val merged = perTask.flatMap(_._2).groupMapReduce(_._1)(_._2) { (a, b) =>
      Array(a(0) + b(0), math.min(a(1), b(1)), math.max(a(2), b(2)))
    }
    (perTask.map(_._1).sum, merged.toSeq.sortBy(-_._2(0)).take(MaxHotKeys).toMap)
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

package tally.spark

import org.apache.spark.sql.DataFrame
import org.apache.spark.sql.catalyst.InternalRow
import org.apache.spark.sql.catalyst.expressions.GenericInternalRow
import org.apache.spark.sql.functions._
import org.apache.spark.sql.tally.SparkInternals
import org.apache.spark.sql.types._

/** As-of join: for each spine row at t, the right-hand row of the same key with the latest time <= t (and, with
  * a tolerance, time > t - tolerance). Never a range join followed by ROW_NUMBER, whose output grows with history
  * and whose ties duplicate rows; and no sort of either side.
  *
  *  1. Right rows are projected to (keys, time in microseconds, values) and spine rows to (keys, time, the other
  *     spine columns); each side is shuffled once by key into the same number of partitions, so partition i of
  *     both holds the same keys.
  *  2. Per partition, the right rows (the build side) are indexed in memory: key -> its times, sorted, and rows.
  *     The partition count grows with the right side's size, so that index stays small (about
  *     [[AsOfJob.BuildBytesPerPartition]] of input per task). Feature tables hold one row per key and day, so no
  *     key is hot on this side.
  *  3. Spine rows stream through: a hash lookup of the key, a binary search for the last time <= t. Exactly one
  *     output row per spine row; two right rows of one key at one time are refused (which one is "latest" would
  *     be arbitrary).
  *
  * Measured against the previous shape (union both sides, one shuffle, sort by (key, time, kind), one merge
  * pass): the sort of every right row was most of the time, and the union carried null padding for the other
  * side's columns through the shuffle.
  */
object AsOfJob {
  /** Right-side input bytes (as Spark estimates them from the files) per partition of the in-memory index. */
  val BuildBytesPerPartition: Long = 32L << 20
  private val MaxPartitions = 4096

  def run(spine: DataFrame, spineTime: String, right: DataFrame, rightTime: String, keys: Seq[String],
          valueCols: Seq[String], prefix: String, toleranceUs: Long, partitions: Int): DataFrame = {
    keys.foreach { k =>
      require(spine.columns.contains(k), s"the spine has no key column '$k' (columns: ${spine.columns.mkString(", ")})")
      val (s, r) = (spine.schema(k).dataType, right.schema(k).dataType)
      require(s == r, s"key column '$k' is ${s.simpleString} in the spine but ${r.simpleString} in the feature table; cast the spine's '$k'")
    }
    def micros(df: DataFrame, c: String) = Times.micros(df, c, "as-of join", allowMicros = false)
    val keyCols = keys.map(k => col(s"`$k`"))
    val rest = spine.columns.toIndexedSeq.filterNot(keys.contains)
    val valueFields = valueCols.map(c => right.schema(c).copy(name = prefix + c, nullable = true))
    val rights = right.select(keyCols ++ Seq(micros(right, rightTime).as("__tally_t")) ++
      valueCols.zipWithIndex.map { case (c, i) => col(s"`$c`").as(s"__tally_v$i") }: _*)
    val queries = spine.select(keyCols ++ Seq(micros(spine, spineTime).as("__tally_t")) ++
      rest.zipWithIndex.map { case (c, j) => col(s"`$c`").as(s"__tally_s$j") }: _*)

    // Spark knows file sizes; for a plan it cannot size (a local relation, some sources) it reports
    // spark.sql.defaultSizeInBytes (Long.MaxValue), and the caller's partition count stands.
    val estimated = right.queryExecution.optimizedPlan.stats.sizeInBytes
    val bySize = if (estimated >= BigInt(spine.sparkSession.sessionState.conf.defaultSizeInBytes)) 0
                 else (estimated / BuildBytesPerPartition).min(BigInt(MaxPartitions)).toInt + 1
    val n = math.max(partitions, bySize)
    val build = rights.repartition(n, keyCols: _*).queryExecution.toRdd
    val probe = queries.repartition(n, keyCols: _*).queryExecution.toRdd
    require(build.getNumPartitions == n && probe.getNumPartitions == n,
      s"as-of join: both sides must keep $n partitions (got ${build.getNumPartitions} and ${probe.getNumPartitions})")

    val outSchema = StructType(spine.schema.fields ++ valueFields)
    val nKeys = keys.size
    val nValues = valueCols.size
    val keyTypes = rights.schema.fields.take(nKeys).map(_.dataType)
    val rightTypes = rights.schema.fields.map(_.dataType)
    val spineTypes = queries.schema.fields.map(_.dataType)
    // Where each output column comes from in a shuffled spine row.
    val source = spine.columns.map(c => if (keys.contains(c)) keys.indexOf(c) else nKeys + 1 + rest.indexOf(c))
    val rows = build.zipPartitions[InternalRow, InternalRow](probe) { (rightRows, spineRows) =>
      val index = AsOfIndex.build(rightRows, keyTypes, nKeys)
      val getRight = rightTypes.map(t => InternalRow.getAccessor(t))
      val getSpine = spineTypes.map(t => InternalRow.getAccessor(t))
      val keyOf = Keys.reader(keyTypes)
      spineRows.map { row =>
        val out = new GenericInternalRow(source.length + nValues) // the scan over this RDD projects it to an UnsafeRow
        val k = keyOf(row, false)
        if (row.isNullAt(nKeys)) throw new IllegalArgumentException(s"a spine row of key $k has a null timestamp")
        val t = row.getLong(nKeys)
        val hit = index.latest(k, t)
        val matched = hit != null && (toleranceUs <= 0 || hit.getLong(nKeys) > t - toleranceUs)
        var i = 0
        while (i < source.length) { out.update(i, getSpine(source(i))(row, source(i))); i += 1 }
        var j = 0
        while (j < nValues) {
          val at = nKeys + 1 + j
          out.update(i + j, if (matched && !hit.isNullAt(at)) getRight(at)(hit, at) else null)
          j += 1
        }
        out: InternalRow
      }
    }
    SparkInternals.fromInternalRows(spine.sparkSession, rows, outSchema)
  }
}

/** The build side of one partition: per key, its rows (copies) sorted by time (column `nKeys`, microseconds). */
private final class AsOfIndex(entries: java.util.HashMap[Any, AsOfIndex.Entry]) {
  /** The row of `key` with the greatest time <= t, or null. */
  def latest(key: Any, t: Long): InternalRow = {
    val e = entries.get(key)
    if (e == null) return null
    var lo = 0
    var hi = e.n - 1
    var found = -1 // the last index with times(found) <= t
    while (lo <= hi) {
      val mid = (lo + hi) >>> 1
      if (e.times(mid) <= t) { found = mid; lo = mid + 1 } else hi = mid - 1
    }
    if (found < 0) null else e.rows(found)
  }
}

private object AsOfIndex {
  final class Entry {
    var times = new Array[Long](4)
    var rows = new Array[InternalRow](4)
    var n = 0
    def add(t: Long, row: InternalRow): Unit = {
      if (n == times.length) { times = java.util.Arrays.copyOf(times, n * 2); rows = java.util.Arrays.copyOf(rows, n * 2) }
      times(n) = t; rows(n) = row; n += 1
    }
  }

  def build(rows: Iterator[InternalRow], keyTypes: Array[DataType], nKeys: Int): AsOfIndex = {
    val keyOf = Keys.reader(keyTypes)
    val entries = new java.util.HashMap[Any, Entry]()
    rows.foreach { row =>
      if (row.isNullAt(nKeys)) throw new IllegalArgumentException(s"a feature row of key ${keyOf(row, false)} has a null time")
      var e = entries.get(keyOf(row, false))
      if (e == null) { e = new Entry; entries.put(keyOf(row, true), e) } // a stable copy only for a new key
      e.add(row.getLong(nKeys), row.copy())
    }
    entries.forEach { (k, e) =>
      sortByTime(e)
      var i = 1
      while (i < e.n) {
        if (e.times(i) == e.times(i - 1)) throw new IllegalArgumentException(
          s"the feature table has two rows for key $k at the same time (${e.times(i)} us since the epoch); an as-of join needs one")
        i += 1
      }
    }
    new AsOfIndex(entries)
  }

  /** Sorts an entry's (time, row) pairs by time, stably (a merge sort of the parallel arrays); rows often arrive
    * in order, so that is checked first. */
  private def sortByTime(e: Entry): Unit = {
    var i = 1
    while (i < e.n && e.times(i - 1) <= e.times(i)) i += 1
    if (i < e.n) mergeSort(e.times, e.rows, new Array[Long](e.n), new Array[InternalRow](e.n), 0, e.n)
  }

  private def mergeSort(ts: Array[Long], rs: Array[InternalRow], tt: Array[Long], tr: Array[InternalRow], from: Int, until: Int): Unit =
    if (until - from > 1) {
      val mid = (from + until) >>> 1
      mergeSort(ts, rs, tt, tr, from, mid); mergeSort(ts, rs, tt, tr, mid, until)
      var (a, b, o) = (from, mid, from)
      while (o < until) {
        if (b >= until || (a < mid && ts(a) <= ts(b))) { tt(o) = ts(a); tr(o) = rs(a); a += 1 }
        else { tt(o) = ts(b); tr(o) = rs(b); b += 1 }
        o += 1
      }
      System.arraycopy(tt, from, ts, from, until - from); System.arraycopy(tr, from, rs, from, until - from)
    }
}

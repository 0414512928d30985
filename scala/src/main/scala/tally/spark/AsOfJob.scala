package tally.spark

import scala.collection.mutable

import org.apache.spark.sql.DataFrame
import org.apache.spark.sql.catalyst.InternalRow
import org.apache.spark.sql.catalyst.expressions.{BoundReference, GenericInternalRow, JoinedRow, UnsafeProjection, UnsafeRow}
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
  *  2. Per partition, the right rows (the build side) are indexed in memory: key -> its times, sorted, and its rows'
  *     addresses in one [[RowArena]] per task (no object per row).
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
    val spineWidth = queries.schema.length
    // The output row, projected (generated code, no boxing) from the spine row joined with the matched right row
    // (or a row of nulls): each spine column where the shuffled spine row holds it, then the values.
    val output = spine.columns.toSeq.map { c =>
      val i = if (keys.contains(c)) keys.indexOf(c) else nKeys + 1 + rest.indexOf(c)
      BoundReference(i, queries.schema(i).dataType, nullable = true)
    } ++ (0 until nValues).map { j =>
      val at = nKeys + 1 + j
      BoundReference(spineWidth + at, rights.schema(at).dataType, nullable = true)
    }
    val rightSchema = rights.schema
    val rightWidth = rightSchema.length
    val rows = build.zipPartitions[InternalRow, InternalRow](probe) { (rightRows, spineRows) =>
      val index = AsOfIndex.build(rightRows, rightSchema, nKeys)
      val project = UnsafeProjection.create(output)
      val joined = new JoinedRow()
      val none = new GenericInternalRow(rightWidth)
      spineRows.map { row =>
        if (row.isNullAt(nKeys))
          throw new IllegalArgumentException(s"a spine row of key ${index.keyName(row)} has a null timestamp")
        val t = row.getLong(nKeys)
        val hit = index.latest(row, t)
        val matched = hit != null && (toleranceUs <= 0 || hit.getLong(nKeys) > t - toleranceUs)
        project(joined(row, if (matched) hit else none)): InternalRow
      }
    }
    SparkInternals.fromInternalRows(spine.sparkSession, rows, outSchema)
  }
}

/** The build side of one partition: per key, its rows' times sorted (column `nKeys`, microseconds) and the
  * rows' addresses in a [[RowArena]] (no object per row). A single integral key (bigint, int, date, timestamp,
  * ...) is looked up as a primitive long in an open-addressing map, without boxing; other keys (strings,
  * composites) by their [[Keys.reader]] value in a HashMap. Measured (JFR, bench/asof.py --keys bigint): the boxed
  * lookups were a third of the kernel's samples. Rows of a null key match spine rows of a null key, as in the
  * HashMap. */
private final class AsOfIndex(longKey: AsOfIndex.LongKey, longs: mutable.LongMap[AsOfIndex.Entry],
                              keyOf: (InternalRow, Boolean) => Any, others: java.util.HashMap[Any, AsOfIndex.Entry],
                              nullKey: AsOfIndex.Entry, arena: RowArena) {
  private def entry(row: InternalRow): AsOfIndex.Entry =
    if (longKey == null) others.get(keyOf(row, false))
    else if (row.isNullAt(0)) nullKey
    else longs.getOrNull(longKey(row))

  /** The key of a row (its leading columns), for messages. */
  def keyName(row: InternalRow): Any = keyOf(row, false)

  /** The right row of the key of spine `row` with the greatest time <= t, or null; valid until the next call. */
  def latest(row: InternalRow, t: Long): InternalRow = {
    val e = entry(row)
    if (e == null) return null
    var lo = 0
    var hi = e.n - 1
    var found = -1 // the last index with times(found) <= t
    while (lo <= hi) {
      val mid = (lo + hi) >>> 1
      if (e.times(mid) <= t) { found = mid; lo = mid + 1 } else hi = mid - 1
    }
    if (found < 0) null else arena.get(e.rows(found))
  }
}

private object AsOfIndex {
  /** One key's rows: times and arena addresses, in parallel. */
  final class Entry {
    var times = new Array[Long](4)
    var rows = new Array[Long](4)
    var n = 0
    def add(t: Long, row: Long): Unit = {
      if (n == times.length) { times = java.util.Arrays.copyOf(times, n * 2); rows = java.util.Arrays.copyOf(rows, n * 2) }
      times(n) = t; rows(n) = row; n += 1
    }
  }

  /** A single integral key read as a primitive long: a `InternalRow => Long` function would box it. */
  abstract class LongKey { def apply(row: InternalRow): Long }

  /** A reader of a single integral key as a long, or null for other keys. */
  private def longReader(keyTypes: Array[DataType]): LongKey =
    if (keyTypes.length != 1) null
    else keyTypes(0) match {
      case LongType | TimestampType | TimestampNTZType => new LongKey { def apply(row: InternalRow) = row.getLong(0) }
      case IntegerType | DateType => new LongKey { def apply(row: InternalRow) = row.getInt(0).toLong }
      case ShortType => new LongKey { def apply(row: InternalRow) = row.getShort(0).toLong }
      case ByteType => new LongKey { def apply(row: InternalRow) = row.getByte(0).toLong }
      case _ => null
    }

  def build(rows: Iterator[InternalRow], schema: StructType, nKeys: Int): AsOfIndex = {
    val keyTypes = schema.fields.take(nKeys).map(_.dataType)
    val keyOf = Keys.reader(keyTypes.toIndexedSeq)
    val longKey = longReader(keyTypes)
    val longs = new mutable.LongMap[Entry]()
    val others = new java.util.HashMap[Any, Entry]()
    var nullKey: Entry = null
    val arena = new RowArena(schema.length)
    lazy val toUnsafe = UnsafeProjection.create(schema) // the shuffle hands back UnsafeRows; anything else is converted
    rows.foreach { row =>
      if (row.isNullAt(nKeys)) throw new IllegalArgumentException(s"a feature row of key ${keyOf(row, false)} has a null time")
      val e = if (longKey == null) {
        var e = others.get(keyOf(row, false))
        if (e == null) { e = new Entry; others.put(keyOf(row, true), e) } // a stable copy only for a new key
        e
      } else if (row.isNullAt(0)) {
        if (nullKey == null) nullKey = new Entry
        nullKey
      } else {
        val k = longKey(row)
        var e = longs.getOrNull(k)
        if (e == null) { e = new Entry; longs.update(k, e) }
        e
      }
      e.add(row.getLong(nKeys), arena.add(row match { case u: UnsafeRow => u; case r => toUnsafe(r) }))
    }
    def check(k: => Any, e: Entry): Unit = {
      sortByTime(e)
      var i = 1
      while (i < e.n) {
        if (e.times(i) == e.times(i - 1)) throw new IllegalArgumentException(
          s"the feature table has two rows for key $k at the same time (${e.times(i)} us since the epoch); an as-of join needs one")
        i += 1
      }
    }
    others.forEach((k, e) => check(k, e))
    longs.foreachEntry((_, e) => check(keyOf(arena.get(e.rows(0)), false), e))
    if (nullKey != null) check(null, nullKey)
    new AsOfIndex(longKey, longs, keyOf, others, nullKey, arena)
  }

  /** Sorts an entry's (time, row) pairs by time, stably (a merge sort of the parallel arrays); rows often arrive
    * in order, so that is checked first. */
  private def sortByTime(e: Entry): Unit = {
    var i = 1
    while (i < e.n && e.times(i - 1) <= e.times(i)) i += 1
    if (i < e.n) mergeSort(e.times, e.rows, new Array[Long](e.n), new Array[Long](e.n), 0, e.n)
  }

  private def mergeSort(ts: Array[Long], rs: Array[Long], tt: Array[Long], tr: Array[Long], from: Int, until: Int): Unit =
    if (until - from > 1) {
      val mid = (from + until) >>> 1
      mergeSort(ts, rs, tt, tr, from, mid); mergeSort(ts, rs, tt, tr, mid, until)
      var a = from
      var b = mid
      var o = from
      while (o < until) {
        if (b >= until || (a < mid && ts(a) <= ts(b))) { tt(o) = ts(a); tr(o) = rs(a); a += 1 }
        else { tt(o) = ts(b); tr(o) = rs(b); b += 1 }
        o += 1
      }
      System.arraycopy(tt, from, ts, from, until - from); System.arraycopy(tr, from, rs, from, until - from)
    }
}

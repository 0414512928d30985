package tally.spark

import org.apache.spark.sql.{Column, DataFrame}
import org.apache.spark.sql.catalyst.InternalRow
import org.apache.spark.sql.catalyst.expressions.GenericInternalRow
import org.apache.spark.sql.functions._
import org.apache.spark.sql.tally.InternalFrames
import org.apache.spark.sql.types._
import org.apache.spark.unsafe.types.UTF8String

import tally.agg.{Aggregators, VType}
import tally.bridge.ViewSpec
import tally.window.{Feature, Sweep, Window}

/** Temporal features of one view for every spine row, in one shuffle and one sweep per key.
  *
  *  1. Source rows (events) and spine rows (queries) are projected to one shape — key columns, time in
  *     microseconds, availability, event values, then the spine row — and unioned, with a kind column telling
  *     which is which. When the spine is the source itself (the same plan: "as of each charge, over the
  *     charges"), there is no union: every row is both an event and a query, and is shuffled and sorted once.
  *  2. One shuffle by key, then a sort within partitions by (key, time).
  *  3. Each partition streams through a [[Sweep]], key by key. Events enter the sweep as they come; the queries
  *     of one (key, time) run wait until the run ends, so every event at t is in before any query at t (what
  *     right-closed windows with no delay need, whatever the order within the run), and the run's features are
  *     computed once for all its queries.
  */
object TemporalJob {
  private val Kind = "__tally_kind"
  private val Time = "__tally_t"
  private val Avail = "__tally_avail"
  private val SpineRow = "__tally_spine"
  private def keyCol(i: Int) = s"__tally_k$i"
  private def valueCol(i: Int) = s"__tally_v$i"

  /** Where things sit in a shuffled row: keys at 0.., then time, availability, values, then the spine (a struct
    * at `spineAt`, or, when the spine is the source, its columns inline from `spineAt`) and the kind. */
  private final case class Layout(nKeys: Int, nValues: Int, nSpine: Int, selfSpine: Boolean, withAvail: Boolean) {
    val timeAt: Int = nKeys
    val availAt: Int = nKeys + 1
    val firstValue: Int = nKeys + 2
    val spineAt: Int = firstValue + nValues
    val kindAt: Int = spineAt + (if (selfSpine) nSpine else 1)
  }

  def run(spine: DataFrame, source: DataFrame, spec: ViewSpec, spineTime: String, prefix: String, partitions: Int): DataFrame = {
    val view = spec.view
    def need(df: DataFrame, col: String, what: String): StructField =
      df.schema.find(_.name == col).getOrElse(throw new IllegalArgumentException(
        s"view '$view': the $what has no column '$col' (columns: ${df.columns.mkString(", ")})"))

    spec.keys.foreach { k =>
      val (s, e) = (need(spine, k, "spine"), need(source, k, s"source of view '$view'"))
      require(s.dataType == e.dataType,
        s"view '$view': key column '$k' is ${s.dataType.simpleString} in the spine but ${e.dataType.simpleString} in the source; cast the spine's '$k'")
    }
    val valueCols = spec.features.flatMap(_.column).distinct
    val valueTypes = valueCols.map(c => c -> need(source, c, s"source of view '$view'").dataType).toMap

    val features = spec.features.map { f =>
      val vtype = f.column.map { c =>
        Catalyst.vtype(valueTypes(c)).getOrElse(throw new IllegalArgumentException(
          s"view '$view', feature '${f.name}': column '$c' has type ${valueTypes(c).simpleString}, which '${f.function}' cannot aggregate"))
      }.getOrElse(VType.Long)
      val agg = try Aggregators.build(f.function, vtype, f.params) catch {
        case e: IllegalArgumentException => throw new IllegalArgumentException(s"view '$view', feature '${f.name}': ${e.getMessage}", e)
      }
      Feature(f.name, agg, f.column.map(valueCols.indexOf).getOrElse(-1),
        Window(f.lengthUs.getOrElse(Window.Lifetime), f.delayUs, f.closed == "right"),
        f.default.map(Catalyst.coerce(_, agg.outputType)).orNull)
    }.toIndexedSeq
    val outTypes = features.map(_.agg.outputType).toArray

    need(spine, spineTime, "spine")
    // The spine is the source (same rows, same time column): one copy of each row, both event and query.
    val selfSpine = spineTime == spec.timestamp &&
      spine.queryExecution.analyzed.sameResult(source.queryExecution.analyzed)
    val layout = Layout(spec.keys.size, valueCols.size, spine.columns.length, selfSpine, spec.availableAt.isDefined)
    val keys = spec.keys.indices.map(keyCol)
    def common(df: DataFrame, time: String, avail: Column, values: Seq[Column]): Seq[Column] =
      spec.keys.zipWithIndex.map { case (k, i) => col(k).as(keyCol(i)) } ++
        Seq(micros(df, time, view).as(Time), avail.as(Avail)) ++ values
    val eventValues = valueCols.zipWithIndex.map { case (c, i) => col(c).cast(Catalyst.carrier(valueTypes(c))).as(valueCol(i)) }
    val avail = spec.availableAt.map(a => micros(source, a, view)).getOrElse(lit(null).cast(LongType))
    val spineCols = spine.columns.toIndexedSeq.map(c => col(s"`$c`"))
    val rows =
      if (selfSpine) source.select(common(source, spec.timestamp, avail, eventValues) ++ spineCols.zipWithIndex.map {
        case (c, i) => c.as(s"__tally_s$i") }: _*)
      else {
        val events = source.select(common(source, spec.timestamp, avail, eventValues) ++
          Seq(lit(null).cast(spine.schema).as(SpineRow), lit(0).as(Kind)): _*)
        val nullValues = valueCols.indices.map(i => lit(null).cast(Catalyst.carrier(valueTypes(valueCols(i)))).as(valueCol(i)))
        val queries = spine.select(common(spine, spineTime, lit(null).cast(LongType), nullValues) ++
          Seq(struct(spineCols: _*).as(SpineRow), lit(1).as(Kind)): _*)
        events.unionByName(queries)
      }

    val outSchema = StructType(spine.schema.fields ++ features.zip(outTypes).map { case (f, t) =>
      StructField(prefix + f.name, Catalyst.dataType(t), nullable = true)
    })
    val ttl = spec.ttlUs
    val sorted = Shuffle.byKeyThenTime(rows, keys, Seq(Time), partitions)
    val types = RowTypes(sorted.schema.fields.map(_.dataType).toIndexedSeq, spine.schema.fields.map(_.dataType).toIndexedSeq, outTypes)
    val result = sorted.queryExecution.toRdd.mapPartitions { it =>
      new PartitionSweep(it, new Sweep(view, features, ttl, layout.withAvail), layout, types, view)
    }
    InternalFrames.fromInternalRows(spine.sparkSession, result, outSchema)
  }

  /** Catalyst types of the shuffled row, of the spine, and the features' kernel types. */
  private final case class RowTypes(row: IndexedSeq[DataType], spine: IndexedSeq[DataType], out: Array[VType])

  /** One partition, sorted by (key, time), through one [[Sweep]]: spine rows with their features out. Rows stay
    * Catalyst rows: spine cells are copied as they are, only event values and results are converted. */
  private final class PartitionSweep(rows: Iterator[InternalRow], sweep: Sweep, l: Layout, types: RowTypes, view: String)
      extends Iterator[InternalRow] {
    private val nOut = types.out.length
    private val features = new Array[Any](nOut)
    private val results = new Array[Any](nOut)
    private val toCatalyst = types.out.map(Catalyst.toCatalyst)
    private val valueTypes = (0 until l.nValues).map(i => types.row(l.firstValue + i)).toArray
    private val toScala = valueTypes.map(Catalyst.toKernel)
    // Accessors resolve the physical type once: InternalRow.get(i, type) does it per call, through SQLConf.
    private val valueGet = valueTypes.map(t => InternalRow.getAccessor(t))
    private val keyGet = (0 until l.nKeys).map(i => InternalRow.getAccessor(types.row(i))).toArray
    private val spineGet = types.spine.map(t => InternalRow.getAccessor(t)).toArray
    private val queries = new java.util.ArrayList[InternalRow]() // spine rows of the current (key, time) run (copies)
    private var emitted = 0                                       // of `queries`, how many went out
    private var ahead: InternalRow = null                         // first row of the next run, read ahead (a copy)
    private var key: Any = new Object                             // no key equals it
    private var time = Long.MinValue

    def hasNext: Boolean = {
      while (emitted == queries.size) {
        queries.clear(); emitted = 0
        if (ahead == null && !rows.hasNext) return false
        readRun()
      }
      true
    }

    def next(): InternalRow = {
      if (!hasNext) throw new NoSuchElementException
      if (emitted == 0) { // first query of the run: the sweep answers once for all of them
        sweep.query(time, features)
        var j = 0
        while (j < nOut) { results(j) = toCatalyst(j)(features(j)); j += 1 }
      }
      val row = queries.get(emitted)
      emitted += 1
      val spineRow = if (l.selfSpine) row else row.getStruct(l.spineAt, l.nSpine)
      val offset = if (l.selfSpine) l.spineAt else 0
      val cells = new Array[Any](l.nSpine + nOut)
      var i = 0
      while (i < l.nSpine) { cells(i) = spineGet(i)(spineRow, offset + i); i += 1 }
      System.arraycopy(results, 0, cells, l.nSpine, nOut)
      new GenericInternalRow(cells)
    }

    /** Reads one whole (key, time) run: its events into the sweep, its queries into `queries`. The sorter reuses
      * its row objects, so a row kept past the next `rows.next()` is copied. */
    private def readRun(): Unit = {
      var row = if (ahead != null) ahead else rows.next()
      ahead = null
      val k = keyOf(row)
      if (k != key) { sweep.reset(k); key = k }
      time = timeOf(row, k)
      feed(row)
      while (ahead == null && rows.hasNext) {
        row = rows.next()
        val k2 = keyOf(row)
        if (timeOf(row, k2) == time && k2 == key) feed(row) else ahead = row.copy()
      }
    }

    private def keyOf(row: InternalRow): Any = {
      def one(i: Int): Any = keyGet(i)(row, i) match {
        case s: UTF8String => s.clone() // may point into memory the sorter reuses
        case b: Array[Byte] => b.toSeq
        case v => v
      }
      if (l.nKeys == 1) one(0) else (0 until l.nKeys).map(one)
    }

    private def timeOf(row: InternalRow, k: Any): Long = {
      if (row.isNullAt(l.timeAt)) throw new IllegalArgumentException(s"view '$view': a row of key $k has a null timestamp")
      row.getLong(l.timeAt)
    }

    private def feed(row: InternalRow): Unit = {
      val isEvent = l.selfSpine || row.getInt(l.kindAt) == 0
      if (isEvent) {
        val values = new Array[Any](l.nValues)
        var i = 0
        while (i < l.nValues) {
          val at = l.firstValue + i
          values(i) = if (row.isNullAt(at)) null else toScala(i)(valueGet(i)(row, at))
          i += 1
        }
        sweep.event(time, if (l.withAvail && !row.isNullAt(l.availAt)) row.getLong(l.availAt) else Long.MinValue, values)
      }
      if (!isEvent || l.selfSpine) queries.add(row.copy())
    }
  }

  /** A timestamp (or date) column as epoch microseconds, UTC. */
  private def micros(df: DataFrame, name: String, view: String): Column = {
    val field = df.schema.find(_.name == name).getOrElse(
      throw new IllegalArgumentException(s"view '$view': no timestamp column '$name' (columns: ${df.columns.mkString(", ")})"))
    field.dataType match {
      case TimestampType    => unix_micros(col(name))
      case TimestampNTZType => unix_micros(col(name).cast(TimestampType))
      case DateType         => unix_micros(col(name).cast(TimestampType))
      case LongType         => col(name)
      case other => throw new IllegalArgumentException(
        s"view '$view': column '$name' must be a timestamp, got ${other.simpleString}")
    }
  }
}

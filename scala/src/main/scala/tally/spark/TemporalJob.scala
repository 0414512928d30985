package tally.spark

import org.apache.spark.sql.{Column, DataFrame}
import org.apache.spark.sql.catalyst.InternalRow
import org.apache.spark.sql.catalyst.expressions.GenericInternalRow
import org.apache.spark.sql.functions._
import org.apache.spark.sql.tally.SparkInternals
import org.apache.spark.sql.types._

import tally.agg.{Aggregators, Values, VType}
import tally.bridge.ViewSpec
import tally.window.{Feature, Sweep, Window}

/** Temporal features of one view for every spine row, in one shuffle and one sweep per key.
  *
  *  1. Source rows (events) and spine rows (queries) are projected to one shape — key columns, time in
  *     microseconds, availability, a sort prefix, event values, then the spine row — and unioned, with a kind
  *     column telling which is which. When the spine is the source itself (the same plan: "as of each charge,
  *     over the charges"), there is no union: every row is both an event and a query, shuffled and sorted once.
  *  2. One shuffle by key, then a sort within partitions by one 64-bit prefix: 31 bits of a hash of the key,
  *     then the time in ~1 s steps (microseconds >> 20). One long column lets Spark radix-sort it; sorting by
  *     (key, time) instead meant a comparison sort whose prefix (the key) ties for every row of a hot key, so
  *     each of those comparisons read both rows — a fifth of the engine's CPU on the benchmark. The prefix is
  *     monotone in time for each key, which is all the sweep needs: rows of one prefix (a "block": one hash,
  *     one ~1 s step) are put in time order in memory, and the few keys that share a hash (a "group") are swept
  *     side by side, each with its own [[Sweep]].
  *  3. Each partition streams through its blocks. Events enter their key's sweep as they come; the queries of
  *     one (key, time) run wait until the run ends, so every event at t is in before any query at t (what
  *     right-closed windows with no delay need, whatever the order within the run), and the run's features are
  *     computed once for all its queries.
  */
object TemporalJob {
  private val Kind = "__tally_kind"
  private val Time = "__tally_t"
  private val Avail = "__tally_avail"
  private val SpineRow = "__tally_spine"
  private val Prefix = "__tally_p"
  private def keyCol(i: Int) = s"__tally_k$i"
  private def valueCol(i: Int) = s"__tally_v$i"

  /** Where things sit in a shuffled row: keys at 0.., then time, availability, sort prefix, values, then the spine
    * (a struct at `spineAt`, or, when the spine is the source, its columns inline from `spineAt`) and the kind. */
  private final case class Layout(nKeys: Int, nValues: Int, nSpine: Int, selfSpine: Boolean, withAvail: Boolean, split: Boolean) {
    val timeAt: Int = nKeys
    val availAt: Int = nKeys + 1
    val prefixAt: Int = nKeys + 2
    val firstValue: Int = nKeys + 3
    val spineAt: Int = firstValue + nValues
    val kindAt: Int = spineAt + (if (selfSpine) nSpine else 1)
    /** A kind column says which rows are events (0), queries (1) or both (2); without one, every row is both. */
    val hasKind: Boolean = !selfSpine || split
  }

  /** Bits of the prefix below the key's hash: the time in steps of 2^20 us, offset by 2^32 steps and clamped, so
    * 1828-2112 keep their order (times beyond share the end steps: still correct, sorted in memory). */
  private val TimeBits = 33
  /** Bits of the key's hash in the prefix: 31 (all that is left). Tests set fewer, so that many keys share one
    * group and are swept side by side. */
  val HashBitsConf = "spark.tally.sweep.hashBits"

  /** The sort prefix (see step 2), from the key columns and the time in microseconds. */
  private def sortPrefix(keys: Seq[Column], micros: Column, hashBits: Int): Column = {
    val hash = xxhash64(keys: _*).bitwiseAND(lit((1L << hashBits) - 1))
    val steps = least(greatest(shiftright(micros, 20) + lit(1L << 32), lit(0L)), lit((1L << TimeBits) - 1))
    shiftleft(hash, TimeBits).bitwiseOR(steps)
  }

  /** The keys of `source` the sweep splits into time buckets (see [[HotKeys]]). */
  def hotKeys(source: DataFrame, spec: ViewSpec, partitions: Int): Seq[HotKeys.Hot] =
    HotKeys.plan(source, spec.keys, micros(source, spec.timestamp, spec.view), spec.reachUs, partitions)

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
        Window(f.lengthUs.getOrElse(Window.Lifetime), f.delayUs, f.closed == "right", f.hopUs),
        f.default.map(Values.coerce(_, agg.outputType)).orNull)
    }.toIndexedSeq
    val outTypes = features.map(_.agg.outputType).toArray

    need(spine, spineTime, "spine")
    // The spine is the source (same rows, same time column): one copy of each row, both event and query.
    val selfSpine = spineTime == spec.timestamp &&
      spine.queryExecution.analyzed.sameResult(source.queryExecution.analyzed)
    val hashBits = spine.sparkSession.conf.get(HashBitsConf, "31").toInt
    require(hashBits >= 1 && hashBits <= 64 - TimeBits, s"$HashBitsConf must be within 1..31, got $hashBits")

    // Hot keys are swept in time buckets (see HotKeys); the bucket is one more key column.
    val overlap = spec.reachUs
    val hot = hotKeys(source, spec, partitions)
    val split = hot.nonEmpty
    val layout = Layout(spec.keys.size + (if (split) 1 else 0), valueCols.size, spine.columns.length, selfSpine,
      spec.availableAt.isDefined, split)
    val keys = (0 until layout.nKeys).map(keyCol)
    val bucketLength = HotKeys.bucketLength(hot, spec.keys.map(col(_)))
    val eventValues = valueCols.zipWithIndex.map { case (c, i) => col(c).cast(Catalyst.carrier(valueTypes(c))).as(valueCol(i)) }
    val avail = spec.availableAt.map(a => micros(source, a, view)).getOrElse(lit(null).cast(LongType))
    /** The shuffled shape: keys (and bucket), time, availability, prefix, values, then `tail`. */
    def shape(df: DataFrame, time: String, avail: Column, values: Seq[Column], bucketShift: Long, tail: Seq[Column]): DataFrame = {
      val t = micros(df, time, view)
      val bucket = if (!split) Nil
                   else Seq(when(bucketLength.isNull, lit(HotKeys.Unsplit)).otherwise(HotKeys.bucketOf(t + lit(bucketShift), bucketLength)))
      val keyValues = spec.keys.map(col(_)) ++ bucket
      df.select(keyValues.zipWithIndex.map { case (k, i) => k.as(keyCol(i)) } ++
        Seq(t.as(Time), avail.as(Avail), sortPrefix(keyValues, t, hashBits).as(Prefix)) ++ values ++ tail: _*)
    }
    /** Copies of hot keys' events for the next bucket, when their overlap reaches into it: events only. */
    def replicas(tail: Seq[Column]): Option[DataFrame] = overlap.filter(_ => split).map { o =>
      val t = micros(source, spec.timestamp, view)
      shape(source.where(bucketLength.isNotNull &&
        HotKeys.bucketOf(t + lit(o), bucketLength) =!= HotKeys.bucketOf(t, bucketLength)), spec.timestamp, avail, eventValues, o, tail)
    }
    val spineCols = spine.columns.toIndexedSeq.map(c => col(s"`$c`"))
    val rows =
      if (selfSpine) {
        val own = spineCols.zipWithIndex.map { case (c, i) => c.as(s"__tally_s$i") }
        val none = spine.schema.fields.toIndexedSeq.zipWithIndex.map { case (f, i) => lit(null).cast(f.dataType).as(s"__tally_s$i") }
        val originals = shape(source, spec.timestamp, avail, eventValues, 0L, own ++ (if (split) Seq(lit(2).as(Kind)) else Nil))
        replicas(none :+ lit(0).as(Kind)).fold(originals)(originals.unionByName(_))
      } else {
        val eventTail = Seq(lit(null).cast(spine.schema).as(SpineRow), lit(0).as(Kind))
        val events = shape(source, spec.timestamp, avail, eventValues, 0L, eventTail)
        val nullValues = valueCols.indices.map(i => lit(null).cast(Catalyst.carrier(valueTypes(valueCols(i)))).as(valueCol(i)))
        val queries = shape(spine, spineTime, lit(null).cast(LongType), nullValues, 0L, Seq(struct(spineCols: _*).as(SpineRow), lit(1).as(Kind)))
        (events +: replicas(eventTail).toSeq :+ queries).reduce(_ unionByName _)
      }

    val outSchema = StructType(spine.schema.fields ++ features.zip(outTypes).map { case (f, t) =>
      StructField(prefix + f.name, Catalyst.dataType(t), nullable = true)
    })
    val ttl = spec.ttlUs
    val sorted = rows.repartition(partitions, keys.map(col): _*).sortWithinPartitions(col(Prefix))
    val types = RowTypes(sorted.schema.fields.map(_.dataType).toIndexedSeq, spine.schema.fields.map(_.dataType).toIndexedSeq, outTypes)
    val result = sorted.queryExecution.toRdd.mapPartitions { it =>
      new PartitionSweep(it, () => new Sweep(view, features, ttl, layout.withAvail), layout, types, view,
        features.map(_.name).toArray)
    }
    SparkInternals.fromInternalRows(spine.sparkSession, result, outSchema)
  }

  /** Catalyst types of the shuffled row, of the spine, and the features' kernel types. */
  private final case class RowTypes(row: IndexedSeq[DataType], spine: IndexedSeq[DataType], out: Array[VType])

  /** One partition, sorted by prefix, through one [[Sweep]] per key of the current group: spine rows with their
    * features out. Rows stay Catalyst rows: spine cells are copied as they are, only event values and results
    * are converted. */
  private final class PartitionSweep(rows: Iterator[InternalRow], newSweep: () => Sweep, l: Layout, types: RowTypes, view: String,
      names: Array[String]) extends Iterator[InternalRow] {
    private val nOut = types.out.length
    private val features = new Array[Any](nOut)
    private val toCatalyst = types.out.map(Catalyst.toCatalyst)
    private val valueTypes = (0 until l.nValues).map(i => types.row(l.firstValue + i)).toArray
    private val toScala = valueTypes.map(Catalyst.toKernel)
    // Accessors resolve the physical type once: InternalRow.get(i, type) does it per call, through SQLConf.
    private val valueGet = valueTypes.map(t => InternalRow.getAccessor(t))
    private val keyReader = Keys.reader(types.row.take(l.nKeys))
    private val spineGet = types.spine.map(t => InternalRow.getAccessor(t)).toArray

    /** A key of the current group: its sweep and the queries of its open (key, time) run. */
    private final class KeyState(val key: Any, val sweep: Sweep) {
      var time: Long = Long.MinValue
      val queries = new java.util.ArrayList[InternalRow]()
      var touched = false
    }
    private val states = new java.util.HashMap[Any, KeyState]() // the keys of the current group
    private val spare = new java.util.ArrayDeque[Sweep]()       // sweeps of finished groups, for reuse
    private var last: KeyState = null                          // the key of the previous row
    private var group = 0L
    private val block = new java.util.ArrayList[InternalRow]()  // rows of one prefix (copies: the sorter reuses its rows)
    private val touched = new java.util.ArrayList[KeyState]()
    private var ahead: InternalRow = null                       // first row of the next block (a copy)
    private val out = new java.util.ArrayDeque[InternalRow]()

    def hasNext: Boolean = {
      while (out.isEmpty && (ahead != null || rows.hasNext)) readBlock()
      !out.isEmpty
    }

    def next(): InternalRow = {
      if (!hasNext) throw new NoSuchElementException
      out.poll()
    }

    /** Reads the rows of one prefix, feeds them in time order, and answers the runs they end. */
    private def readBlock(): Unit = {
      block.clear()
      block.add(if (ahead != null) ahead else checked(rows.next()).copy())
      ahead = null
      val p = block.get(0).getLong(l.prefixAt)
      while (ahead == null && rows.hasNext) {
        val row = checked(rows.next())
        if (row.getLong(l.prefixAt) == p) block.add(row.copy()) else ahead = row.copy()
      }
      if (states.isEmpty || (p >> TimeBits) != group) { endGroup(); group = p >> TimeBits }
      if (block.size > 1) block.sort((a, b) => java.lang.Long.compare(a.getLong(l.timeAt), b.getLong(l.timeAt)))
      var i = 0
      while (i < block.size) { feed(block.get(i)); i += 1 }
      // A run never spans two blocks (another prefix is another time), so every run the block touched is over.
      i = 0
      while (i < touched.size) { val st = touched.get(i); answer(st); st.touched = false; i += 1 }
      touched.clear()
    }

    private def checked(row: InternalRow): InternalRow = {
      if (row.isNullAt(l.timeAt)) throw new IllegalArgumentException(
        s"view '$view': a row of key ${keyReader(row, false)} has a null timestamp")
      row
    }

    private def endGroup(): Unit = {
      states.forEach((_, st) => spare.push(st.sweep))
      states.clear(); last = null
    }

    private def stateOf(row: InternalRow): KeyState = {
      val k = keyReader(row, false)
      if (last != null && last.key == k) return last
      var st = states.get(k)
      if (st == null) {
        val stable = keyReader(row, true)
        val sweep = if (spare.isEmpty) newSweep() else spare.pop()
        sweep.reset(stable)
        st = new KeyState(stable, sweep)
        states.put(stable, st)
      }
      last = st
      st
    }

    private def feed(row: InternalRow): Unit = {
      val st = stateOf(row)
      val time = row.getLong(l.timeAt)
      if (time != st.time) { answer(st); st.time = time }
      if (!st.touched) { st.touched = true; touched.add(st) }
      val kind = if (l.hasKind) row.getInt(l.kindAt) else 2
      val isEvent = kind != 1
      if (isEvent) {
        val values = new Array[Any](l.nValues)
        var i = 0
        while (i < l.nValues) {
          val at = l.firstValue + i
          values(i) = if (row.isNullAt(at)) null else toScala(i)(valueGet(i)(row, at))
          i += 1
        }
        st.sweep.event(time, if (l.withAvail && !row.isNullAt(l.availAt)) row.getLong(l.availAt) else Long.MinValue, values)
      }
      if (kind >= 1) st.queries.add(row)
    }

    /** The features of the key's open run, once, onto each of its queries. */
    private def answer(st: KeyState): Unit = if (!st.queries.isEmpty) {
      st.sweep.query(st.time, features)
      val results = new Array[Any](nOut)
      var j = 0
      while (j < nOut) {
        try results(j) = toCatalyst(j)(features(j))
        catch { // a decimal sum beyond its column's precision: an error that says where, never a wrong value
          case e: ArithmeticException =>
            throw new ArithmeticException(s"view '$view', feature '${names(j)}', key ${st.key}: ${e.getMessage}")
        }
        j += 1
      }
      val offset = if (l.selfSpine) l.spineAt else 0
      var q = 0
      while (q < st.queries.size) {
        val row = st.queries.get(q)
        val spineRow = if (l.selfSpine) row else row.getStruct(l.spineAt, l.nSpine)
        val cells = new Array[Any](l.nSpine + nOut)
        var i = 0
        while (i < l.nSpine) { cells(i) = spineGet(i)(spineRow, offset + i); i += 1 }
        System.arraycopy(results, 0, cells, l.nSpine, nOut)
        out.add(new GenericInternalRow(cells))
        q += 1
      }
      st.queries.clear()
    }
  }

  /** A time column as epoch microseconds, UTC (see [[Times]]). */
  private def micros(df: DataFrame, name: String, view: String): Column = Times.micros(df, name, s"view '$view'", allowMicros = true)
}

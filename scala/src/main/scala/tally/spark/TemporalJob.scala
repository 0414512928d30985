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

/** Temporal features of one or more views that share their keys, for every spine row, in one shuffle and one
  * sweep per key.
  *
  *  1. Source rows (events) and spine rows (queries) are projected to one shape — key columns, time in
  *     microseconds, availability, a sort prefix, every view's event values, then the spine row — and unioned,
  *     with a kind column telling which is which and, when several views are swept together, a part column saying
  *     whose event a row is. When the spine is a view's source itself (the same plan: "as of each charge, over the
  *     charges"), its rows are not unioned twice: every row is both an event and a query, shuffled and sorted once.
  *  2. One shuffle by key, then a sort within partitions by one 64-bit prefix: 31 bits of a hash of the key,
  *     then the time in ~1 s steps (microseconds >> 20). One long column lets Spark radix-sort it; sorting by
  *     (key, time) instead meant a comparison sort whose prefix (the key) ties for every row of a hot key, so
  *     each of those comparisons read both rows — a fifth of the engine's CPU on the benchmark. The prefix is
  *     monotone in time for each key, which is all the sweep needs: rows of one prefix (a "block": one hash,
  *     one ~1 s step) are put in time order in memory, and the few keys that share a hash (a "group") are swept
  *     side by side, each with its own [[Sweep]] per view.
  *  3. Each partition streams through its blocks. Events enter their key's sweep as they come; the queries of
  *     one (key, time) run wait until the run ends, so every event at t is in before any query at t (what
  *     right-closed windows with no delay need, whatever the order within the run), and the run's features are
  *     computed once for all its queries.
  *
  * Sweeping views that share a key together costs the spine's shuffle and sort once instead of once per view: a
  * training set's per-view cost is mostly its spine rows, and card_disputes adds few events to card_velocity's.
  * Hot keys split into time buckets by each view's own reach (see [[HotKeys]]), so views with hot keys are swept
  * one after the other instead.
  */
object TemporalJob {
  private val Kind = "__tally_kind"
  private val PartCol = "__tally_part"
  private val Time = "__tally_t"
  private val Avail = "__tally_avail"
  private val SpineRow = "__tally_spine"
  private val Prefix = "__tally_p"
  private def keyCol(i: Int) = s"__tally_k$i"
  private def valueCol(i: Int) = s"__tally_v$i"

  /** One view of a sweep: its source (events), spec and output column prefix. */
  final case class Part(source: DataFrame, spec: ViewSpec, prefix: String)

  /** Where things sit in a shuffled row: keys at 0.., then time, availability, sort prefix, values (every part's,
    * in part order), then the spine (a struct at `spineAt`, or, when the spine is a source, its columns inline from
    * `spineAt`), the kind and, with several parts, the part. */
  private final case class Layout(nKeys: Int, nValues: Int, nSpine: Int, selfSpine: Boolean, split: Boolean, nParts: Int) {
    val timeAt: Int = nKeys
    val availAt: Int = nKeys + 1
    val prefixAt: Int = nKeys + 2
    val firstValue: Int = nKeys + 3
    val spineAt: Int = firstValue + nValues
    val kindAt: Int = spineAt + (if (selfSpine) nSpine else 1)
    val partAt: Int = kindAt + 1
    /** A kind column says which rows are events (0), queries (1) or both (2); without one, every row is both. */
    val hasKind: Boolean = !selfSpine || split || nParts > 1
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

  /** The spine plus one view's `prefix + feature` columns. */
  def run(spine: DataFrame, source: DataFrame, spec: ViewSpec, spineTime: String, prefix: String, partitions: Int): DataFrame =
    run(spine, Seq(Part(source, spec, prefix)), spineTime, partitions)

  /** The spine plus each part's `prefix + feature` columns, in part order. The parts' views must have the same key
    * columns. */
  def run(spine: DataFrame, parts: Seq[Part], spineTime: String, partitions: Int): DataFrame = {
    require(parts.nonEmpty, "a sweep needs at least one view")
    val keys = parts.head.spec.keys
    parts.foreach { p =>
      require(p.spec.keys == keys, s"views swept together need the same keys: '${parts.head.spec.view}' has " +
        s"${keys.mkString(", ")}, '${p.spec.view}' has ${p.spec.keys.mkString(", ")}")
    }
    val hot = parts.map(p => hotKeys(p.source, p.spec, partitions))
    if (parts.size > 1 && hot.exists(_.nonEmpty))
      parts.zip(hot).foldLeft(spine) { case (s, (p, h)) => sweep(s, Seq(p), h, spineTime, partitions) }
    else sweep(spine, parts, hot.head, spineTime, partitions)
  }

  /** The views' features, compiled: aggregators, windows and value columns. */
  private final case class Compiled(part: Part, valueCols: Seq[String], valueTypes: Seq[DataType], features: IndexedSeq[Feature]) {
    def view: String = part.spec.view
    def outTypes: Seq[VType] = features.map(_.agg.outputType)
  }

  private def compile(spine: DataFrame, part: Part): Compiled = {
    val Part(source, spec, _) = part
    val view = spec.view
    spec.keys.foreach { k =>
      val (s, e) = (need(spine, k, "spine", view), need(source, k, s"source of view '$view'", view))
      require(s.dataType == e.dataType,
        s"view '$view': key column '$k' is ${s.dataType.simpleString} in the spine but ${e.dataType.simpleString} in the source; cast the spine's '$k'")
    }
    val valueCols = spec.features.flatMap(_.column).distinct
    val valueTypes = valueCols.map(c => c -> need(source, c, s"source of view '$view'", view).dataType).toMap
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
    Compiled(part, valueCols, valueCols.map(valueTypes), features)
  }

  private def need(df: DataFrame, col: String, what: String, view: String): StructField =
    df.schema.find(_.name == col).getOrElse(throw new IllegalArgumentException(
      s"view '$view': the $what has no column '$col' (columns: ${df.columns.mkString(", ")})"))

  private def sweep(spine: DataFrame, parts: Seq[Part], hot: Seq[HotKeys.Hot], spineTime: String, partitions: Int): DataFrame = {
    val compiled = parts.map(compile(spine, _)).toIndexedSeq
    val first = parts.head.spec
    val view = first.view
    need(spine, spineTime, "spine", view)
    // A part whose source is the spine (same rows, same time column): one copy of each row, both event and query.
    val selfAt = parts.indexWhere(p => spineTime == p.spec.timestamp &&
      spine.queryExecution.analyzed.sameResult(p.source.queryExecution.analyzed))
    val selfSpine = selfAt >= 0
    val hashBits = spine.sparkSession.conf.get(HashBitsConf, "31").toInt
    require(hashBits >= 1 && hashBits <= 64 - TimeBits, s"$HashBitsConf must be within 1..31, got $hashBits")

    // Hot keys are swept in time buckets (see HotKeys); the bucket is one more key column. Only ever one part here.
    val split = hot.nonEmpty
    val valueAt = compiled.scanLeft(0)(_ + _.valueCols.size)
    val layout = Layout(first.keys.size + (if (split) 1 else 0), valueAt.last, spine.columns.length, selfSpine, split,
      parts.size)
    val keys = (0 until layout.nKeys).map(keyCol)
    val bucketLength = HotKeys.bucketLength(hot, first.keys.map(col(_)))
    val carriers = compiled.flatMap(_.valueTypes.map(Catalyst.carrier))
    /** Part p's event values: its own columns, null in the other parts' places. */
    def eventValues(p: Int): Seq[Column] = carriers.indices.map { i =>
      val own = i - valueAt(p)
      if (own >= 0 && own < compiled(p).valueCols.size) col(compiled(p).valueCols(own)).cast(carriers(i)).as(valueCol(i))
      else lit(null).cast(carriers(i)).as(valueCol(i))
    }
    val nullValues = carriers.indices.map(i => lit(null).cast(carriers(i)).as(valueCol(i)))
    def avail(p: Int): Column = parts(p).spec.availableAt.map(a => micros(parts(p).source, a, parts(p).spec.view))
      .getOrElse(lit(null).cast(LongType))
    def tail(spineCells: Seq[Column], kind: Int, part: Int): Seq[Column] = spineCells ++
      (if (layout.hasKind) Seq(lit(kind).as(Kind)) else Nil) ++ (if (parts.size > 1) Seq(lit(part).as(PartCol)) else Nil)
    /** The shuffled shape: keys (and bucket), time, availability, prefix, values, then `tail`. */
    def shape(df: DataFrame, time: String, avail: Column, values: Seq[Column], bucketShift: Long, tail: Seq[Column], view: String): DataFrame = {
      val t = micros(df, time, view)
      val bucket = if (!split) Nil
                   else Seq(when(bucketLength.isNull, lit(HotKeys.Unsplit)).otherwise(HotKeys.bucketOf(t + lit(bucketShift), bucketLength)))
      val keyValues = first.keys.map(col(_)) ++ bucket
      df.select(keyValues.zipWithIndex.map { case (k, i) => k.as(keyCol(i)) } ++
        Seq(t.as(Time), avail.as(Avail), sortPrefix(keyValues, t, hashBits).as(Prefix)) ++ values ++ tail: _*)
    }
    def events(p: Int, tail: Seq[Column]): DataFrame =
      shape(parts(p).source, parts(p).spec.timestamp, avail(p), eventValues(p), 0L, tail, parts(p).spec.view)
    /** Copies of hot keys' events for the next bucket, when their overlap reaches into it: events only. */
    def replicas(tail: Seq[Column]): Option[DataFrame] = first.reachUs.filter(_ => split).map { o =>
      val source = parts.head.source
      val t = micros(source, first.timestamp, view)
      shape(source.where(bucketLength.isNotNull &&
        HotKeys.bucketOf(t + lit(o), bucketLength) =!= HotKeys.bucketOf(t, bucketLength)), first.timestamp, avail(0),
        eventValues(0), o, tail, view)
    }
    val spineCols = spine.columns.toIndexedSeq.map(c => col(s"`$c`"))
    val rows =
      if (selfSpine) {
        val own = spineCols.zipWithIndex.map { case (c, i) => c.as(s"__tally_s$i") }
        val none = spine.schema.fields.toIndexedSeq.zipWithIndex.map { case (f, i) => lit(null).cast(f.dataType).as(s"__tally_s$i") }
        val originals = events(selfAt, tail(own, 2, selfAt))
        val others = parts.indices.filter(_ != selfAt).map(p => events(p, tail(none, 0, p)))
        (originals +: others ++: replicas(tail(none, 0, 0)).toSeq).reduce(_ unionByName _)
      } else {
        val noSpine = Seq(lit(null).cast(spine.schema).as(SpineRow))
        val queries = shape(spine, spineTime, lit(null).cast(LongType), nullValues, 0L,
          tail(Seq(struct(spineCols: _*).as(SpineRow)), 1, 0), view)
        (parts.indices.map(p => events(p, tail(noSpine, 0, p))) ++ replicas(tail(noSpine, 0, 0)).toSeq :+ queries)
          .reduce(_ unionByName _)
      }

    val outSchema = StructType(spine.schema.fields ++ compiled.flatMap { c =>
      c.features.zip(c.outTypes).map { case (f, t) => StructField(c.part.prefix + f.name, Catalyst.dataType(t), nullable = true) }
    })
    val sorted = rows.repartition(partitions, keys.map(col): _*).sortWithinPartitions(col(Prefix))
    val types = RowTypes(sorted.schema.fields.map(_.dataType).toIndexedSeq, spine.schema.fields.map(_.dataType).toIndexedSeq,
      compiled.map(_.outTypes.toArray), valueAt.toArray)
    val plans = compiled.map(c => (c.view, c.features, c.part.spec.ttlUs, c.part.spec.availableAt.isDefined))
    val names = compiled.map(c => (c.view, c.features.map(_.name).toArray))
    val result = sorted.queryExecution.toRdd.mapPartitions { it =>
      new PartitionSweep(it, () => plans.map { case (v, f, ttl, avail) => new Sweep(v, f, ttl, avail) }.toArray, layout,
        types, names)
    }
    SparkInternals.fromInternalRows(spine.sparkSession, result, outSchema)
  }

  /** Catalyst types of the shuffled row and of the spine; per part, the features' kernel types, and where each
    * part's values start among the row's values (`valueAt(p)` to `valueAt(p + 1)`). */
  private final case class RowTypes(row: IndexedSeq[DataType], spine: IndexedSeq[DataType], out: IndexedSeq[Array[VType]],
      valueAt: Array[Int])

  /** One partition, sorted by prefix, through one [[Sweep]] per view per key of the current group: spine rows with
    * their features out. Rows stay Catalyst rows: spine cells are copied as they are, only event values and results
    * are converted. `names` are each part's view and feature names, for messages. */
  private final class PartitionSweep(rows: Iterator[InternalRow], newSweeps: () => Array[Sweep], l: Layout, types: RowTypes,
      names: IndexedSeq[(String, Array[String])]) extends Iterator[InternalRow] {
    private val nParts = types.out.length
    private val nOut = types.out.map(_.length).sum
    private val features = types.out.map(t => new Array[Any](t.length)).toArray
    private val toCatalyst = types.out.map(_.map(Catalyst.toCatalyst)).toArray
    private val valueTypes = (0 until l.nValues).map(i => types.row(l.firstValue + i)).toArray
    private val toScala = valueTypes.map(Catalyst.toKernel)
    // Accessors resolve the physical type once: InternalRow.get(i, type) does it per call, through SQLConf.
    private val valueGet = valueTypes.map(t => InternalRow.getAccessor(t))
    private val keyReader = Keys.reader(types.row.take(l.nKeys))
    private val spineGet = types.spine.map(t => InternalRow.getAccessor(t)).toArray

    /** A key of the current group: its sweeps (one per part) and the queries of its open (key, time) run. */
    private final class KeyState(val key: Any, val sweeps: Array[Sweep]) {
      var time: Long = Long.MinValue
      val queries = new java.util.ArrayList[InternalRow]()
      var touched = false
    }
    private val states = new java.util.HashMap[Any, KeyState]() // the keys of the current group
    private val spare = new java.util.ArrayDeque[Array[Sweep]]() // sweeps of finished groups, for reuse
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

    private def partOf(row: InternalRow): Int = if (nParts > 1) row.getInt(l.partAt) else 0

    private def checked(row: InternalRow): InternalRow = {
      if (row.isNullAt(l.timeAt)) throw new IllegalArgumentException(
        s"view '${names(partOf(row))._1}': a row of key ${keyReader(row, false)} has a null timestamp")
      row
    }

    private def endGroup(): Unit = {
      states.forEach((_, st) => spare.push(st.sweeps))
      states.clear(); last = null
    }

    private def stateOf(row: InternalRow): KeyState = {
      val k = keyReader(row, false)
      if (last != null && last.key == k) return last
      var st = states.get(k)
      if (st == null) {
        val stable = keyReader(row, true)
        val sweeps = if (spare.isEmpty) newSweeps() else spare.pop()
        var p = 0
        while (p < nParts) { sweeps(p).reset(stable); p += 1 }
        st = new KeyState(stable, sweeps)
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
      if (kind != 1) { // an event, of its part's view
        val part = partOf(row)
        val from = types.valueAt(part)
        val values = new Array[Any](types.valueAt(part + 1) - from)
        var i = 0
        while (i < values.length) {
          val v = from + i
          val at = l.firstValue + v
          values(i) = if (row.isNullAt(at)) null else toScala(v)(valueGet(v)(row, at))
          i += 1
        }
        st.sweeps(part).event(time, if (!row.isNullAt(l.availAt)) row.getLong(l.availAt) else Long.MinValue, values)
      }
      if (kind >= 1) st.queries.add(row)
    }

    /** The features of the key's open run, once, onto each of its queries. */
    private def answer(st: KeyState): Unit = if (!st.queries.isEmpty) {
      val results = new Array[Any](nOut)
      var at = 0
      var p = 0
      while (p < nParts) {
        val feats = features(p)
        st.sweeps(p).query(st.time, feats)
        var j = 0
        while (j < feats.length) {
          try results(at + j) = toCatalyst(p)(j)(feats(j))
          catch { // a decimal sum beyond its column's precision: an error that says where, never a wrong value
            case e: ArithmeticException =>
              throw new ArithmeticException(s"view '${names(p)._1}', feature '${names(p)._2(j)}', key ${st.key}: ${e.getMessage}")
          }
          j += 1
        }
        at += feats.length
        p += 1
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

package tally.spark

import org.apache.spark.sql.{Column, DataFrame, Encoders, Row}
import org.apache.spark.sql.functions._
import org.apache.spark.sql.types._

import tally.agg.{Aggregators, VType}
import tally.bridge.ViewSpec
import tally.window.{Feature, Sweep, Window}

/** Temporal features of one view for every spine row, in one shuffle and one sweep per key.
  *
  *  1. Spine rows (queries) and source rows (events) are projected to one shape — key columns, time in
  *     microseconds, availability, kind (0 event, 1 query), event values, the spine row as a struct — and unioned.
  *  2. One shuffle by key, then a sort within partitions by (key, time, kind): events precede queries at equal
  *     times, which is what right-closed windows with no delay need.
  *  3. Each partition streams through a [[Sweep]], key by key; each query emits its spine row plus the features.
  */
object TemporalJob {
  private val Kind = "__tally_kind"
  private val Time = "__tally_t"
  private val Avail = "__tally_avail"
  private val SpineRow = "__tally_spine"
  private def keyCol(i: Int) = s"__tally_k$i"
  private def valueCol(i: Int) = s"__tally_v$i"

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
        Types.toVType(valueTypes(c)).getOrElse(throw new IllegalArgumentException(
          s"view '$view', feature '${f.name}': column '$c' has type ${valueTypes(c).simpleString}, which '${f.function}' cannot aggregate"))
      }.getOrElse(VType.Long)
      val agg = try Aggregators.build(f.function, vtype, f.params) catch {
        case e: IllegalArgumentException => throw new IllegalArgumentException(s"view '$view', feature '${f.name}': ${e.getMessage}", e)
      }
      Feature(f.name, agg, f.column.map(valueCols.indexOf).getOrElse(-1),
        Window(f.lengthUs.getOrElse(Window.Lifetime), f.delayUs, f.closed == "right"),
        f.default.map(Types.coerce(_, agg.outputType)).orNull)
    }.toIndexedSeq
    val outTypes = features.map(_.agg.outputType)

    val keys = spec.keys.indices.map(keyCol)
    val nullValues = valueCols.indices.map(i => lit(null).cast(Types.carrier(valueTypes(valueCols(i)))).as(valueCol(i)))
    val events = source.select(
      spec.keys.zipWithIndex.map { case (k, i) => col(k).as(keyCol(i)) } ++ Seq(
        micros(source, spec.timestamp, view).as(Time),
        spec.availableAt.map(a => micros(source, a, view)).getOrElse(lit(null).cast(LongType)).as(Avail),
        lit(0).as(Kind)) ++
        valueCols.zipWithIndex.map { case (c, i) => col(c).cast(Types.carrier(valueTypes(c))).as(valueCol(i)) } :+
        lit(null).cast(spine.schema).as(SpineRow): _*)
    need(spine, spineTime, "spine")
    val queries = spine.select(
      spec.keys.zipWithIndex.map { case (k, i) => col(k).as(keyCol(i)) } ++ Seq(
        micros(spine, spineTime, view).as(Time), lit(null).cast(LongType).as(Avail), lit(1).as(Kind)) ++
        nullValues :+ struct(spine.columns.toIndexedSeq.map(c => col(s"`$c`")): _*).as(SpineRow): _*)

    val outSchema = StructType(spine.schema.fields ++ features.zip(outTypes).map { case (f, t) =>
      StructField(prefix + f.name, Types.toSpark(t), nullable = true)
    })
    val nKeys = keys.size
    val nValues = valueCols.size
    val withAvail = spec.availableAt.isDefined
    val ttl = spec.ttlUs
    val (firstValue, timeAt, availAt, kindAt, spineAt) = (nKeys + 3, nKeys, nKeys + 1, nKeys + 2, nKeys + 3 + nValues)

    events.unionByName(queries)
      .repartition(partitions, keys.map(col): _*)
      .sortWithinPartitions((keys :+ Time :+ Kind).map(col): _*)
      .mapPartitions { rows: Iterator[Row] =>
        val sweep = new Sweep(view, features, ttl, withAvail)
        val out = new Array[Any](features.length)
        var current: Any = new Object // no key equals it
        rows.flatMap { row =>
          val key: Any = if (nKeys == 1) row.get(0) else (0 until nKeys).map(row.get)
          if (key != current) { sweep.reset(key); current = key }
          if (row.isNullAt(timeAt)) throw new IllegalArgumentException(s"view '$view': a row of key $key has a null timestamp")
          if (row.getInt(kindAt) == 0) {
            val values = new Array[Any](nValues)
            var i = 0
            while (i < nValues) { values(i) = row.get(firstValue + i); i += 1 }
            sweep.event(row.getLong(timeAt), if (withAvail && !row.isNullAt(availAt)) row.getLong(availAt) else Long.MinValue, values)
            Iterator.empty
          } else {
            sweep.query(row.getLong(timeAt), out)
            val spineRow = row.getStruct(spineAt)
            val cells = new Array[Any](spineRow.length + out.length)
            var i = 0
            while (i < spineRow.length) { cells(i) = spineRow.get(i); i += 1 }
            var j = 0
            while (j < out.length) { cells(i + j) = Types.toExternal(out(j), outTypes(j)); j += 1 }
            Iterator.single(Row.fromSeq(cells.toSeq))
          }
        }
      }(Encoders.row(outSchema))
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

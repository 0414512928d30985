package tally.spark

import org.apache.spark.sql.DataFrame
import org.apache.spark.sql.catalyst.InternalRow
import org.apache.spark.sql.catalyst.expressions.{GenericInternalRow, UnsafeProjection}
import org.apache.spark.sql.functions._
import org.apache.spark.sql.tally.InternalFrames
import org.apache.spark.sql.types._

/** As-of join: for each spine row at t, the right-hand row of the same key with the latest time <= t (and, with
  * a tolerance, time > t - tolerance), in one shuffle and one merge pass — never a range join followed by
  * ROW_NUMBER, whose output grows with history and whose ties duplicate rows.
  *
  *  1. Spine rows and right rows are projected to (keys, time in microseconds, kind, payload struct) and unioned;
  *     right rows sort before spine rows at equal times, so a snapshot at exactly t is visible at t.
  *  2. One shuffle by key and a sort within partitions by (key, time, kind).
  *  3. One pass per partition remembers the latest right row of the current key and emits each spine row with
  *     it (or nulls when there is none, or it is older than the tolerance). Exactly one output row per spine row.
  */
object AsOfJob {
  def run(spine: DataFrame, spineTime: String, right: DataFrame, rightTime: String, keys: Seq[String],
          valueCols: Seq[String], prefix: String, toleranceUs: Long, partitions: Int): DataFrame = {
    keys.foreach { k =>
      require(spine.columns.contains(k), s"the spine has no key column '$k' (columns: ${spine.columns.mkString(", ")})")
      val (s, r) = (spine.schema(k).dataType, right.schema(k).dataType)
      require(s == r, s"key column '$k' is ${s.simpleString} in the spine but ${r.simpleString} in the feature table; cast the spine's '$k'")
    }
    def micros(df: DataFrame, c: String) = df.schema(c).dataType match {
      case TimestampType    => unix_micros(col(c))
      case TimestampNTZType => unix_micros(col(c).cast(TimestampType))
      case DateType         => unix_micros(col(c).cast(TimestampType))
      case other => throw new IllegalArgumentException(s"column '$c' must be a timestamp, got ${other.simpleString}")
    }
    // One flat row shape for both sides, so the shuffle carries no nested structs and no second copy of the key:
    // keys (the spine's own key columns), time, kind (0 feature row, 1 spine row), values, other spine columns.
    val rest = spine.columns.toIndexedSeq.filterNot(keys.contains)
    val valueFields = valueCols.map(c => right.schema(c).copy(name = prefix + c, nullable = true))
    val rights = right.select(keys.map(k => col(s"`$k`")) ++ Seq(micros(right, rightTime).as("__tally_t"), lit(0).as("__tally_kind")) ++
      valueCols.zipWithIndex.map { case (c, i) => col(s"`$c`").as(s"__tally_v$i") } ++
      rest.zipWithIndex.map { case (c, j) => lit(null).cast(spine.schema(c).dataType).as(s"__tally_s$j") }: _*)
    val queries = spine.select(keys.map(k => col(s"`$k`")) ++ Seq(micros(spine, spineTime).as("__tally_t"), lit(1).as("__tally_kind")) ++
      valueFields.zipWithIndex.map { case (f, i) => lit(null).cast(f.dataType).as(s"__tally_v$i") } ++
      rest.zipWithIndex.map { case (c, j) => col(s"`$c`").as(s"__tally_s$j") }: _*)

    val outSchema = StructType(spine.schema.fields ++ valueFields)
    val nKeys = keys.size
    val (timeAt, kindAt, firstValue) = (nKeys, nKeys + 1, nKeys + 2)
    val nValues = valueCols.size
    val sorted = Shuffle.byKeyThenTime(rights.unionByName(queries), keys, Seq("__tally_t", "__tally_kind"), partitions)
    val rowTypes = sorted.schema.fields.map(_.dataType)
    // Where each output column comes from in the shuffled row (values are taken from the remembered feature row).
    val source = spine.columns.map(c => if (keys.contains(c)) keys.indexOf(c) else firstValue + nValues + rest.indexOf(c))
    val rows = sorted.queryExecution.toRdd.mapPartitions[InternalRow] { rows =>
      // Accessors resolve each physical type once; InternalRow.get(i, type) does so per call.
      val get = rowTypes.map(t => InternalRow.getAccessor(t))
      val keyOf = KeyOf(rowTypes.take(nKeys).toIndexedSeq)
      val project = UnsafeProjection.create(outSchema)
      val out = new GenericInternalRow(source.length + nValues)
      val last = new Array[Any](nValues)
      var current: InternalRow = null
      var have = false
      var lastTime = Long.MinValue
      rows.flatMap { row =>
        if (current == null || !keyOf.same(current, row)) { current = keyOf.copy(row); have = false }
        if (row.isNullAt(timeAt)) throw new IllegalArgumentException(s"a row of key ${keyOf.show(row)} has a null timestamp")
        if (row.getInt(kindAt) == 0) {
          var j = 0
          while (j < nValues) { last(j) = InternalRow.copyValue(get(firstValue + j)(row, firstValue + j)); j += 1 }
          have = true; lastTime = row.getLong(timeAt)
          Iterator.empty
        } else {
          val hit = have && (toleranceUs <= 0 || lastTime > row.getLong(timeAt) - toleranceUs)
          var i = 0
          while (i < source.length) { out.update(i, get(source(i))(row, source(i))); i += 1 }
          var j = 0
          while (j < nValues) { out.update(i + j, if (hit) last(j) else null); j += 1 }
          Iterator.single[InternalRow](project(out))
        }
      }
    }
    InternalFrames.fromInternalRows(spine.sparkSession, rows, outSchema)
  }
}

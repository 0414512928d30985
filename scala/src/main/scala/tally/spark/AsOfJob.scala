package tally.spark

import org.apache.spark.sql.DataFrame
import org.apache.spark.sql.catalyst.InternalRow
import org.apache.spark.sql.catalyst.expressions.{GenericInternalRow, JoinedRow, UnsafeProjection}
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
    val keyCols = keys.indices.map(i => s"__tally_k$i")
    def micros(df: DataFrame, c: String) = df.schema(c).dataType match {
      case TimestampType    => unix_micros(col(c))
      case TimestampNTZType => unix_micros(col(c).cast(TimestampType))
      case DateType         => unix_micros(col(c).cast(TimestampType))
      case other => throw new IllegalArgumentException(s"column '$c' must be a timestamp, got ${other.simpleString}")
    }
    val valueType = StructType(valueCols.map(c => right.schema(c).copy(nullable = true)))
    val spineType = spine.schema
    val rights = right.select(keys.zip(keyCols).map { case (k, kc) => col(k).as(kc) } ++ Seq(
      micros(right, rightTime).as("__tally_t"), lit(0).as("__tally_kind"),
      struct(valueCols.map(c => col(s"`$c`")): _*).as("__tally_values"), lit(null).cast(spineType).as("__tally_spine")): _*)
    val queries = spine.select(keys.zip(keyCols).map { case (k, kc) => col(k).as(kc) } ++ Seq(
      micros(spine, spineTime).as("__tally_t"), lit(1).as("__tally_kind"), lit(null).cast(valueType).as("__tally_values"),
      struct(spine.columns.toIndexedSeq.map(c => col(s"`$c`")): _*).as("__tally_spine")): _*)

    val outSchema = StructType(spineType.fields ++ valueType.fields.map(f => f.copy(name = prefix + f.name)))
    val nKeys = keys.size
    val keyTypes = keys.map(k => spine.schema(k).dataType)
    val (timeAt, kindAt, valuesAt, spineAt) = (nKeys, nKeys + 1, nKeys + 2, nKeys + 3)
    val (nValues, nSpine) = (valueCols.size, spineType.size)
    val sorted = Shuffle.byKeyThenTime(rights.unionByName(queries), keyCols, Seq("__tally_t", "__tally_kind"), partitions)
    val rows = sorted.queryExecution.toRdd.mapPartitions[InternalRow] { rows =>
      val project = UnsafeProjection.create(outSchema)
      val joined = new JoinedRow
      val empty = new GenericInternalRow(nValues)
      val keyOf = KeyOf(keyTypes)
      var current: InternalRow = null
      var last: InternalRow = null
      var lastTime = Long.MinValue
      rows.flatMap { row =>
        if (current == null || !keyOf.same(current, row)) { current = keyOf.copy(row); last = null }
        if (row.isNullAt(timeAt)) throw new IllegalArgumentException(s"a row of key ${keyOf.show(row)} has a null timestamp")
        if (row.getInt(kindAt) == 0) { last = row.getStruct(valuesAt, nValues).copy(); lastTime = row.getLong(timeAt); Iterator.empty }
        else {
          val t = row.getLong(timeAt)
          val hit = last != null && (toleranceUs <= 0 || lastTime > t - toleranceUs)
          Iterator.single[InternalRow](project(joined(row.getStruct(spineAt, nSpine), if (hit) last else empty)))
        }
      }
    }
    InternalFrames.fromInternalRows(spine.sparkSession, rows, outSchema)
  }
}

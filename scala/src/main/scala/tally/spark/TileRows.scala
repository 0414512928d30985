package tally.spark

import org.apache.spark.sql.{DataFrame, Row}
import org.apache.spark.sql.functions._
import org.apache.spark.sql.types._
import org.apache.spark.util.LongAccumulator

import tally.bridge.ViewSpec
import tally.online.{EntityKey, TileBuilder, TileLayout}

/** A source's events as tiles of one online view: what `materialize` ([[MaterializeJob]]) and each stream
  * micro-batch ([[StreamJob]]) share, so that both build tiles with one piece of code.
  *
  * 1. [[prepare]] checks the view's columns against the source and selects, per event, its key parts (`__k<i>`, as
  *    the fetcher builds keys from a request: dates as ISO text, timestamps as microseconds), its time `__t` and
  *    availability `__a` in microseconds, and its values `__v<i>` in the kernels' carriers.
  * 2. [[build]] shuffles those rows by key, sorts them by (key, time), the sweep's order, and runs each key's events
  *    through one [[TileBuilder]] on the executors; tiles come back packed in chunks that [[unpack]] reads.
  *    [[buildLocal]] runs the same sweep on the driver over rows collected there (a small micro-batch).
  */
object TileRows {

  final case class Prepared(spec: ViewSpec, rows: DataFrame, keyTypes: Map[String, DataType], valueTypes: Map[String, DataType],
                            valueCols: Seq[String]) {
    def layout: TileLayout = new TileLayout(spec, valueTypes.map { case (c, t) => c -> Catalyst.vtype(t).get })
  }

  /** `carry`: more columns of `source` kept after the values, unread by the sweep (a stream's contract flags). */
  def prepare(source: DataFrame, spec: ViewSpec, carry: Seq[String] = Nil): Prepared = {
    val view = spec.view
    def field(c: String, what: String): StructField = source.schema.find(_.name == c).getOrElse(
      throw new IllegalArgumentException(s"view '$view': the source has no $what column '$c' (columns: ${source.columns.mkString(", ")})"))
    val keyTypes = spec.keys.map(k => k -> field(k, "key").dataType).toMap
    val valueCols = spec.features.flatMap(_.column).distinct
    val valueTypes = valueCols.map(c => c -> field(c, "value").dataType).toMap
    valueTypes.foreach { case (c, t) =>
      if (Catalyst.vtype(t).isEmpty) throw new IllegalArgumentException(
        s"view '$view': value column '$c' has type ${t.simpleString}, which no kernel aggregates")
    }
    val ts = Times.micros(source, spec.timestamp, s"view '$view'", allowMicros = true)
    val keyCols = spec.keys.zipWithIndex.map { case (k, i) =>
      (keyTypes(k) match {
        case DateType                         => col(s"`$k`").cast(StringType)
        case TimestampType | TimestampNTZType => Times.micros(source, k, s"view '$view'", allowMicros = false)
        case _                                => col(s"`$k`")
      }).as(s"__k$i")
    }
    val avail = spec.availableAt.map(a => Times.micros(source, a, s"view '$view'", allowMicros = true)).getOrElse(lit(null).cast(LongType))
    val values = valueCols.zipWithIndex.map { case (c, i) =>
      (valueTypes(c) match {
        case TimestampType | TimestampNTZType => Times.micros(source, c, s"view '$view'", allowMicros = false)
        case t                                => col(s"`$c`").cast(Catalyst.carrier(t))
      }).as(s"__v$i")
    }
    Prepared(spec, source.select(keyCols ++ Seq(ts.as("__t"), avail.as("__a")) ++ values ++ carry.map(c => col(s"`$c`")): _*),
      keyTypes, valueTypes, valueCols)
  }

  /** The tiles of `rows` (a filter of `p.rows`) as chunks of packed tiles, each key's tiles together. */
  def build(p: Prepared, rows: DataFrame, layout: TileLayout, partitions: Int, stamp: Long, coarseBefore: Long,
            eventCount: LongAccumulator): org.apache.spark.rdd.RDD[Array[Byte]] = {
    val keyNames = p.spec.keys.indices.map(i => s"__k$i")
    val sorted = rows.repartition(partitions, keyNames.map(col): _*).sortWithinPartitions((keyNames :+ "__t").map(col): _*)
    sorted.rdd.mapPartitions(sweep(p, layout, stamp, coarseBefore, eventCount))
  }

  /** [[build]] on the driver, for rows of `p.rows` already collected there (a small stream micro-batch, where the
    * shuffle's scheduling costs more than its work): grouped by key, each key's events in time order, then the same
    * sweep. Keys come out in order of first arrival, not sorted; a tile depends only on its key's events. */
  def buildLocal(p: Prepared, rows: Iterable[Row], layout: TileLayout, stamp: Long, coarseBefore: Long,
                 eventCount: LongAccumulator): Iterator[Array[Byte]] = {
    val nKeys = p.spec.keys.size
    val byKey = scala.collection.mutable.LinkedHashMap.empty[Seq[Any], scala.collection.mutable.ArrayBuffer[Row]]
    rows.foreach { r =>
      // grouped as the shuffle groups: by value (a binary key's bytes, not its array's identity)
      val key = (0 until nKeys).map(i => r.get(i) match { case a: Array[Byte] => a.toSeq; case v => v })
      byKey.getOrElseUpdate(key, scala.collection.mutable.ArrayBuffer.empty) += r
    }
    // a null time sorts first, where the sweep names it
    val ordered = byKey.valuesIterator.flatMap(_.sortBy(r => if (r.isNullAt(nKeys)) Long.MinValue else r.getLong(nKeys)))
    sweep(p, layout, stamp, coarseBefore, eventCount)(ordered)
  }

  /** One partition's events, grouped by key and in time order within a key, through one [[TileBuilder]]: what
    * [[build]] runs on the executors and [[buildLocal]] on the driver. */
  private def sweep(p: Prepared, layout: TileLayout, stamp: Long, coarseBefore: Long,
                    eventCount: LongAccumulator): Iterator[Row] => Iterator[Array[Byte]] = {
    val spec = p.spec
    val nKeys = spec.keys.size
    val dates = spec.keys.map(k => p.keyTypes(k) == DateType)
    val times = spec.keys.map(k => p.keyTypes(k) == TimestampType || p.keyTypes(k) == TimestampNTZType)
    val nValues = p.valueCols.size
    val (name, version) = (spec.view, spec.version)
    val keyNamesForErrors = spec.keys
    it => {
      val builder = new TileBuilder(layout, name, version, stamp, coarseBefore)
      val packer = new Packer
      var current: EntityKey = null
      def keyOf(r: Row): EntityKey = EntityKey.of((0 until nKeys).map { i =>
        if (r.isNullAt(i)) throw new IllegalArgumentException(
          s"view '$name': an event has a null key '${keyNamesForErrors(i)}'; null keys are a data error (filter them in the source)")
        if (dates(i)) java.time.LocalDate.parse(r.getString(i))
        else if (times(i)) EntityKey.Timestamp(r.getLong(i))
        else r.get(i)
      }: _*)
      it.flatMap { r =>
        val key = keyOf(r)
        if (r.isNullAt(nKeys)) throw new IllegalArgumentException(s"view '$name': an event of key ${key.encoded} has a null timestamp")
        if (key != current) { builder.key(key); current = key }
        eventCount.add(1L)
        builder.event(r.getLong(nKeys), if (r.isNullAt(nKeys + 1)) Long.MinValue else r.getLong(nKeys + 1),
          Array.tabulate[Any](nValues)(i => if (r.isNullAt(nKeys + 2 + i)) null else r.get(nKeys + 2 + i)))
        packer.add(builder.tiles())
      } ++ { builder.finish(); packer.add(builder.tiles()) ++ packer.rest() }
    }
  }

  /** Tiles travel to the driver packed into chunks of about this many bytes (key, start, length, payload each):
    * byte arrays cross as they are, where tuples took Java serialization a slot each. */
  private val ChunkBytes = 4 << 20

  private final class Packer {
    private var bytes = new java.io.ByteArrayOutputStream(ChunkBytes + (64 << 10))
    private var out = new java.io.DataOutputStream(bytes)
    def add(tiles: Seq[tally.online.Tile]): Iterator[Array[Byte]] = {
      tiles.foreach { t =>
        val key = t.key.bytes
        out.writeInt(key.length); out.write(key); out.writeLong(t.startUs); out.writeLong(t.lengthUs)
        out.writeInt(t.payload.length); out.write(t.payload)
      }
      if (bytes.size >= ChunkBytes) Iterator.single(take()) else Iterator.empty
    }
    def rest(): Iterator[Array[Byte]] = if (bytes.size > 0) Iterator.single(take()) else Iterator.empty
    private def take(): Array[Byte] = {
      out.flush(); val chunk = bytes.toByteArray
      bytes = new java.io.ByteArrayOutputStream(ChunkBytes + (64 << 10)); out = new java.io.DataOutputStream(bytes)
      chunk
    }
  }

  /** The (key encoding, start, length, payload) of each tile in a chunk, in order. */
  def unpack(chunk: Array[Byte])(f: (String, Long, Long, Array[Byte]) => Unit): Unit = {
    val in = java.nio.ByteBuffer.wrap(chunk)
    while (in.hasRemaining) {
      val key = new Array[Byte](in.getInt()); in.get(key)
      val (start, length) = (in.getLong(), in.getLong())
      val payload = new Array[Byte](in.getInt()); in.get(payload)
      f(new String(key, java.nio.charset.StandardCharsets.UTF_8), start, length, payload)
    }
  }
}

package tally.spark

import org.apache.spark.sql.{DataFrame, Row}
import org.apache.spark.sql.functions._
import org.apache.spark.sql.types._

import tally.bridge.ViewSpec
import tally.online.{EntityKey, Ladder, OnlineStore, OnlineView, Tile, TileBuilder, TypeNames}

/** `tally materialize`: one online view's tiles, built from its source with the same kernels as the offline sweep,
  * loaded into an online store.
  *
  * 1. The source's newest event time fixes the default start: what requests at that time need (the view's reach:
  *    its longest window with delay and hop, or its ttl; everything with a lifetime window). The start is rounded
  *    down to the ladder's longest tile, so every tile written is complete.
  * 2. Events from the start on are shuffled by key and sorted by (key, time), the sweep's order, and each key's
  *    events go through one [[TileBuilder]] on the executors.
  * 3. Tiles come back to the driver in batches and are written to the store, then the view's watermark rises to
  *    the newest event time. Re-running writes the same tiles (the store replaces them), so it is idempotent.
  *
  * The driver writes, not the executors: the embedded store is one SQLite file beside the driver, and Redis takes
  * pipelined batches from one client just as well at this size.
  */
object MaterializeJob {
  final case class Result(events: Long, keys: Long, tiles: Long, applied: Long, fromUs: Long, watermarkUs: Option[Long],
                          view: OnlineView)

  private val BatchTiles = 2000

  private def emit(tiles: Seq[Tile]): Seq[(String, Long, Long, Array[Byte])] = tiles.map(t => (t.key.encoded, t.startUs, t.lengthUs, t.payload))

  def run(source: DataFrame, spec: ViewSpec, specJson: String, store: OnlineStore, fromUs: Long, stamp: Long,
          partitions: Int): Result = {
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
    val bounds = source.agg(min(ts), max(ts)).head()
    val (first, newest) = (Option(bounds.get(0)).map(_.asInstanceOf[Long]), Option(bounds.get(1)).map(_.asInstanceOf[Long]))
    // Lifetime windows start at the source's first event: the serving spec records it.
    val online = OnlineView(spec, specJson, keyTypes.map { case (k, t) => k -> t.simpleString },
      valueTypes.map { case (c, t) => c -> TypeNames.name(Catalyst.vtype(t).get) }, first)
    val layout = online.layout

    val from =
      if (fromUs != Long.MinValue) Ladder.floor(fromUs, Ladder.Longest)
      else spec.reachUs.fold(Long.MinValue)(r => newest.fold(Long.MinValue)(n => Ladder.floor(n - r, Ladder.Longest)))

    // Keys as the fetcher builds them from a request: dates as ISO text, timestamps as microseconds.
    val keyCols = spec.keys.zipWithIndex.map { case (k, i) =>
      (keyTypes(k) match {
        case DateType                       => col(s"`$k`").cast(StringType)
        case TimestampType | TimestampNTZType => Times.micros(source, k, s"view '$view'", allowMicros = false)
        case _                              => col(s"`$k`")
      }).as(s"__k$i")
    }
    val avail = spec.availableAt.map(a => Times.micros(source, a, s"view '$view'", allowMicros = true)).getOrElse(lit(null).cast(LongType))
    val values = valueCols.zipWithIndex.map { case (c, i) =>
      (valueTypes(c) match {
        case TimestampType | TimestampNTZType => Times.micros(source, c, s"view '$view'", allowMicros = false)
        case t                                => col(s"`$c`").cast(Catalyst.carrier(t))
      }).as(s"__v$i")
    }
    val rows = source.select(keyCols ++ Seq(ts.as("__t"), avail.as("__a")) ++ values: _*)
      .where(col("__t") >= lit(from) || col("__t").isNull) // null times are refused below, not dropped
    val keyNames = spec.keys.indices.map(i => s"__k$i")
    val sorted = rows.repartition(partitions, keyNames.map(col): _*).sortWithinPartitions((keyNames :+ "__t").map(col): _*)

    val nKeys = spec.keys.size
    val dates = spec.keys.map(k => keyTypes(k) == DateType)
    val times = spec.keys.map(k => keyTypes(k) == TimestampType || keyTypes(k) == TimestampNTZType)
    val nValues = valueCols.size
    val (name, version) = (spec.view, spec.version)
    val keyNamesForErrors = spec.keys
    val eventCount = source.sparkSession.sparkContext.longAccumulator(s"tally materialize $name events")
    // Executors: (key encoding, start, length, payload) of each tile.
    val built = sorted.rdd.mapPartitions { it =>
      val builder = new TileBuilder(layout, name, version, stamp)
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
        emit(builder.tiles())
      } ++ { builder.finish(); emit(builder.tiles()) }.iterator
    }

    var (nTiles, applied) = (0L, 0L)
    val keys = new java.util.HashSet[String]()
    val batch = Seq.newBuilder[Tile]
    var inBatch = 0
    def flush(): Unit = { applied += store.write(batch.result()); batch.clear(); inBatch = 0 }
    built.toLocalIterator.foreach { case (key, start, length, payload) =>
      keys.add(key)
      batch += Tile(name, version, EntityKey.decode(key), start, length, payload, stamp)
      nTiles += 1; inBatch += 1
      if (inBatch >= BatchTiles) flush()
    }
    flush()
    val events = eventCount.sum
    val loaded = if (events > 0) newest else None
    loaded.foreach(store.advanceWatermark(name, version, _))
    Result(events, keys.size.toLong, nTiles, applied, from, loaded, online)
  }
}

package tally.spark

import org.apache.spark.sql.{DataFrame, Row}
import org.apache.spark.sql.functions._
import org.apache.spark.sql.types._

import tally.bridge.ViewSpec
import tally.online.{EntityKey, OnlineStore, OnlineView, Tile, TileBuilder, TypeNames}
import tally.window.Ladder

/** `tally materialize`: one online view's tiles, built from its source with the same kernels as the offline sweep,
  * loaded into an online store.
  *
  * 1. The first request time to serve (the caller's start, else the source's newest event time) fixes what is
  *    loaded: what requests from that time on need (the reach of the view's bounded windows, with delay and hop,
  *    or its ttl, before it). The start is rounded down to the ladder's longest
  *    tile, so every tile written is complete. A lifetime window also needs the history before the start, but
  *    only as whole 30-day tiles (the ladder's cut of its span climbs down from them): events before the start
  *    build those alone.
  * 2. Events are shuffled by key and sorted by (key, time), the sweep's order, and each key's events go through
  *    one [[TileBuilder]] on the executors.
  * 3. Tiles come back to the driver partition by partition, the next ones computed while the driver writes, and
  *    are written to the store in batches; then the view's watermark rises to the newest event time. Re-running
  *    writes the same tiles (the store replaces them), so it is idempotent.
  *
  * The driver writes, not the executors: the embedded store is one SQLite file beside the driver, and Redis takes
  * pipelined batches from one client just as well at this size.
  */
object MaterializeJob {
  final case class Result(events: Long, keys: Long, tiles: Long, applied: Long, fromUs: Long, watermarkUs: Option[Long],
                          view: OnlineView)

  private val BatchTiles = 20000
  // Partitions the driver holds at once: the one it writes and the next ones being computed.
  private val PartitionsAhead = 2
  // At least this many tile partitions, so that a partition held by the driver stays small.
  private val MinPartitions = 32

  /** Tiles travel to the driver packed into chunks of about this many bytes (key, start, length, payload each):
    * byte arrays cross as they are, where tuples took Java serialization a slot each. */
  private val ChunkBytes = 4 << 20

  private final class Packer {
    private var bytes = new java.io.ByteArrayOutputStream(ChunkBytes + (64 << 10))
    private var out = new java.io.DataOutputStream(bytes)
    def add(tiles: Seq[Tile]): Iterator[Array[Byte]] = {
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
  private def unpack(chunk: Array[Byte])(f: (String, Long, Long, Array[Byte]) => Unit): Unit = {
    val in = java.nio.ByteBuffer.wrap(chunk)
    while (in.hasRemaining) {
      val key = new Array[Byte](in.getInt()); in.get(key)
      val (start, length) = (in.getLong(), in.getLong())
      val payload = new Array[Byte](in.getInt()); in.get(payload)
      f(new String(key, java.nio.charset.StandardCharsets.UTF_8), start, length, payload)
    }
  }

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

    // Every ladder level from `from` on; before it, 30-day tiles for lifetime windows and nothing otherwise. The
    // first request time served exactly is `fromUs` when given, else the newest event time; either reaches back
    // by the view's bounded reach.
    val reach = spec.boundedReachUs.getOrElse(0L)
    val from =
      if (fromUs != Long.MinValue) Ladder.floor(fromUs - reach, Ladder.Longest)
      else newest.fold(Long.MinValue)(n => Ladder.floor(n - reach, Ladder.Longest))
    val coarseBefore = if (spec.hasLifetime) from else Long.MinValue

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
      .where(lit(spec.hasLifetime) || col("__t") >= lit(from) || col("__t").isNull) // null times are refused below
    val keyNames = spec.keys.indices.map(i => s"__k$i")
    val sorted = rows.repartition(math.max(partitions, MinPartitions), keyNames.map(col): _*).sortWithinPartitions((keyNames :+ "__t").map(col): _*)

    val nKeys = spec.keys.size
    val dates = spec.keys.map(k => keyTypes(k) == DateType)
    val times = spec.keys.map(k => keyTypes(k) == TimestampType || keyTypes(k) == TimestampNTZType)
    val nValues = valueCols.size
    val (name, version) = (spec.view, spec.version)
    val keyNamesForErrors = spec.keys
    val eventCount = source.sparkSession.sparkContext.longAccumulator(s"tally materialize $name events")
    // Executors: (key encoding, start, length, payload) of each tile.
    val built = sorted.rdd.mapPartitions { it =>
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

    var (nTiles, applied) = (0L, 0L)
    val keys = new java.util.HashSet[String]()
    val batch = Seq.newBuilder[Tile]
    var inBatch = 0
    def flush(): Unit = { applied += store.write(batch.result()); batch.clear(); inBatch = 0 }
    var (lastKey, entity) = ("", null: EntityKey)
    eachPartition(built, PartitionsAhead)(_.foreach(unpack(_) { (key, start, length, payload) =>
      if (key != lastKey) { keys.add(key); lastKey = key; entity = EntityKey.decode(key) } // tiles come key by key
      batch += Tile(name, version, entity, start, length, payload, stamp)
      nTiles += 1; inBatch += 1
      if (inBatch >= BatchTiles) flush()
    }))
    flush()
    val events = eventCount.sum
    val loaded = if (events > 0) newest else None
    loaded.foreach(store.advanceWatermark(name, version, _))
    Result(events, keys.size.toLong, nTiles, applied, from, loaded, online)
  }

  /** Hands `f` the RDD's partitions in order, each computed by its own job up to `ahead` partitions before `f` takes
    * it. Why: `toLocalIterator` computes one partition at a time, so the executors would idle while the driver
    * writes and the driver while they build. If `f` or a job fails, the jobs still running are cancelled and the
    * threads released before the failure passes on. */
  private def eachPartition[T: scala.reflect.ClassTag](rdd: org.apache.spark.rdd.RDD[T], ahead: Int)(f: Array[T] => Unit): Unit = {
    import scala.concurrent.{Await, ExecutionContext, Future}
    import scala.concurrent.duration.Duration
    val sc = rdd.sparkContext
    val group = s"tally-materialize-${java.util.UUID.randomUUID}"
    val pool = java.util.concurrent.Executors.newFixedThreadPool(ahead, (r: Runnable) => {
      val t = new Thread(r, "tally-materialize-prefetch"); t.setDaemon(true); t })
    implicit val ec: ExecutionContext = ExecutionContext.fromExecutor(pool)
    val collect = (it: Iterator[T]) => it.toArray
    val pending = new java.util.ArrayDeque[Future[Array[T]]]()
    val parts = (0 until rdd.getNumPartitions).iterator
    def fill(): Unit = while (pending.size < ahead && parts.hasNext) {
      val p = parts.next()
      pending.add(Future { sc.setJobGroup(group, "tally materialize", interruptOnCancel = false); sc.runJob(rdd, collect, Seq(p)).head })
    }
    try {
      fill()
      while (!pending.isEmpty) {
        val part = Await.result(pending.poll(), Duration.Inf)
        fill()
        f(part)
      }
    } catch {
      case e: Throwable => sc.cancelJobGroup(group); throw e
    } finally pool.shutdownNow()
  }
}

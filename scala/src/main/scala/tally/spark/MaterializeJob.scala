package tally.spark

import org.apache.spark.sql.DataFrame
import org.apache.spark.sql.functions._

import tally.bridge.ViewSpec
import tally.online.{EntityKey, OnlineStore, OnlineView, Tile, TypeNames}
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

  def run(source: DataFrame, spec: ViewSpec, specJson: String, store: OnlineStore, fromUs: Long, stamp: Long,
          partitions: Int): Result = {
    val view = spec.view
    val prepared = TileRows.prepare(source, spec)
    val bounds = prepared.rows.agg(min(col("__t")), max(col("__t"))).head()
    val (first, newest) = (Option(bounds.get(0)).map(_.asInstanceOf[Long]), Option(bounds.get(1)).map(_.asInstanceOf[Long]))
    // Lifetime windows start at the source's first event: the serving spec records it.
    val online = OnlineView(spec, specJson, prepared.keyTypes.map { case (k, t) => k -> t.simpleString },
      prepared.valueTypes.map { case (c, t) => c -> TypeNames.name(Catalyst.vtype(t).get) }, first)

    // Every ladder level from `from` on; before it, 30-day tiles for lifetime windows and nothing otherwise. The
    // first request time served exactly is `fromUs` when given, else the newest event time; either reaches back
    // by the view's bounded reach.
    val reach = spec.boundedReachUs.getOrElse(0L)
    val from =
      if (fromUs != Long.MinValue) Ladder.floor(fromUs - reach, Ladder.Longest)
      else newest.fold(Long.MinValue)(n => Ladder.floor(n - reach, Ladder.Longest))
    val coarseBefore = if (spec.hasLifetime) from else Long.MinValue
    val rows = prepared.rows
      .where(lit(spec.hasLifetime) || col("__t") >= lit(from) || col("__t").isNull) // null times are refused below
    val eventCount = source.sparkSession.sparkContext.longAccumulator(s"tally materialize $view events")
    val built = TileRows.build(prepared, rows, online.layout, math.max(partitions, MinPartitions), stamp, coarseBefore, eventCount)
    val (name, version) = (spec.view, spec.version)

    var (nTiles, applied) = (0L, 0L)
    val keys = new java.util.HashSet[String]()
    val batch = Seq.newBuilder[Tile]
    var inBatch = 0
    def flush(): Unit = { applied += store.write(batch.result()); batch.clear(); inBatch = 0 }
    var (lastKey, entity) = ("", null: EntityKey)
    eachPartition(built, PartitionsAhead)(_.foreach(TileRows.unpack(_) { (key, start, length, payload) =>
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

package tally.bridge

import org.apache.spark.sql.{DataFrame, SparkSession}

/** The one py4j entry point. Python calls these static methods through `spark._jvm.tally.bridge.Bridge`. */
object Bridge {
  /** Version of the JSON spec this JAR reads; Python refuses a JAR whose version differs from its own. */
  val SpecVersion: Int = 1

  def specVersion(): Int = SpecVersion

  /** Registers the `tally_*` SQL functions in the session. Called by `tally.session()`. */
  def register(spark: SparkSession): Unit = tally.spark.Functions.register(spark)

  /** Temporal features of views that share their keys, for every spine row, in one sweep: the spine's columns plus,
    * per view in order, `prefix + feature` columns. `sources(i)`, `specsJson(i)` and `prefixes(i)` describe view i. */
  def temporal(spine: DataFrame, sources: java.util.List[DataFrame], specsJson: java.util.List[String], spineTime: String,
               prefixes: java.util.List[String], partitions: Int): DataFrame = {
    require(sources.size == specsJson.size && prefixes.size == specsJson.size, "one source, spec and prefix per view")
    val parts = (0 until specsJson.size).map { i =>
      tally.spark.TemporalJob.Part(sources.get(i), Spec.parse(specsJson.get(i)), prefixes.get(i))
    }
    tally.spark.TemporalJob.run(spine, parts, spineTime, partitions)
  }

  /** The keys of the view's source the sweep would split into time buckets, as JSON:
    * `[{"key": ["value", ...], "bucket_us": length}, ...]` (key values as strings). */
  def hotKeys(source: DataFrame, specJson: String, partitions: Int): String = {
    val mapper = new com.fasterxml.jackson.databind.ObjectMapper()
    val hot = tally.spark.TemporalJob.hotKeys(source, Spec.parse(specJson), partitions)
    mapper.writeValueAsString(hot.map { h =>
      java.util.Map.of("key", h.values.map(String.valueOf).toArray, "bucket_us", Long.box(h.bucketUs))
    }.toArray)
  }

  /** As-of join of `right` (keyed feature rows at `rightTime`) onto the spine: the latest row at or before each
    * spine time, within `toleranceUs` when positive. Value columns come out as `prefix + name`. */
  def asOf(spine: DataFrame, spineTime: String, right: DataFrame, rightTime: String, keys: java.util.List[String],
           values: java.util.List[String], prefix: String, toleranceUs: Long, partitions: Int): DataFrame = {
    import scala.jdk.CollectionConverters._
    tally.spark.AsOfJob.run(spine, spineTime, right, rightTime, keys.asScala.toSeq, values.asScala.toSeq, prefix,
      toleranceUs, partitions)
  }

  // ---- Online serving, in process (notebooks, tests): the JSON of `tally serve`'s POST /features, no HTTP.

  /** Stores opened by URL, kept open across calls so that repeated fetches do not reopen SQLite files or Redis pools. */
  private val stores = new java.util.concurrent.ConcurrentHashMap[String, tally.online.OnlineStore]()

  private def store(url: String): tally.online.OnlineStore = stores.computeIfAbsent(url, u => tally.online.Stores.open(u))

  /** Builds one online view's tiles from its source and loads them into the store at `storeUrl` (see
    * [[tally.spark.MaterializeJob]]); `fromUs` = Long.MinValue loads what requests at the newest event need. Returns
    * `{"view", "version", "events", "keys", "tiles", "applied", "from_us", "watermark_us", "serving_spec"}`. */
  def materialize(source: DataFrame, specJson: String, storeUrl: String, fromUs: Long, stamp: Long, partitions: Int): String = {
    val spec = Spec.parse(specJson)
    val r = tally.spark.MaterializeJob.run(source, spec, specJson, store(storeUrl), fromUs, stamp, partitions)
    val mapper = new com.fasterxml.jackson.databind.ObjectMapper()
    val out = mapper.createObjectNode()
    out.put("view", spec.view).put("version", spec.version).put("events", r.events).put("keys", r.keys)
      .put("tiles", r.tiles).put("applied", r.applied).put("from_us", r.fromUs)
    r.watermarkUs.fold(out.putNull("watermark_us"))(w => out.put("watermark_us", w))
    out.set[com.fasterxml.jackson.databind.JsonNode]("serving_spec", mapper.readTree(tally.online.OnlineView.toJson(r.view)))
    mapper.writeValueAsString(out)
  }

  /** Folds one stream micro-batch into the store at `storeUrl` and the Delta tile table at `tileTable`, exactly once
    * (see [[tally.spark.StreamJob]]). Returns
    * `{"batch_id", "skipped", "events", "late", "tiles", "applied", "newest_us", "horizon_us", "phases_ms"}`. */
  def streamBatch(batch: DataFrame, specJson: String, storeUrl: String, tileTable: String, stream: String, batchId: Long,
                  stampBase: Long, floorUs: Long, partitions: Int, flags: java.util.List[String]): String = {
    import scala.jdk.CollectionConverters._
    val r = tally.spark.StreamJob.foldBatch(batch, Spec.parse(specJson), store(storeUrl), tileTable, stream, batchId,
      stampBase, floorUs, partitions, flags.asScala.toSeq)
    val mapper = new com.fasterxml.jackson.databind.ObjectMapper()
    val out = mapper.createObjectNode()
    out.put("batch_id", r.batchId).put("skipped", r.skipped).put("events", r.events).put("late", r.late)
      .put("tiles", r.tiles).put("applied", r.applied).put("horizon_us", r.horizonUs)
    r.newestUs.fold(out.putNull("newest_us"))(w => out.put("newest_us", w))
    val phases = out.putObject("phases_ms")
    r.phasesMs.foreach { case (phase, ms) => phases.put(phase, ms) }
    val failing = out.putArray("failing")
    r.failing.foreach(n => failing.add(n))
    mapper.writeValueAsString(out)
  }

  /** Before a stream's first batch: makes the tile table at `tileTable` hold the store's last batch of `stream`
    * (see [[tally.spark.StreamJob.catchUp]]). Returns `{"rewritten": batch id | null}`. */
  def streamCatchUp(spark: SparkSession, specJson: String, storeUrl: String, tileTable: String, stream: String,
                    stampBase: Long): String = {
    val spec = Spec.parse(specJson)
    val out = new com.fasterxml.jackson.databind.ObjectMapper().createObjectNode()
    tally.spark.StreamJob.catchUp(spark, store(storeUrl), spec.view, spec.version, tileTable, stream, stampBase)
      .fold(out.putNull("rewritten"))(b => out.put("rewritten", b))
    out.toString
  }

  /** Waits for the tile-table commit to `tileTable` still running after its batch (see
    * [[tally.spark.StreamJob.flush]]). */
  def streamFlush(tileTable: String): Unit = tally.spark.StreamJob.flush(tileTable)

  /** The last micro-batch `stream` recorded in the store at `storeUrl`: `{"last_batch": n | null}`. */
  def lastBatch(storeUrl: String, stream: String): String = {
    val out = new com.fasterxml.jackson.databind.ObjectMapper().createObjectNode()
    store(storeUrl).lastBatch(stream).fold(out.putNull("last_batch"))(b => out.put("last_batch", b))
    out.toString
  }

  /** One POST /features answered in process. `viewsJson` is a JSON array of serving specs (see
    * [[tally.online.OnlineView.parse]]); a bad request throws IllegalArgumentException with the server's 400 message. */
  def fetch(storeUrl: String, viewsJson: String, requestJson: String): String = {
    val views = servingSpecs(viewsJson)
    tally.online.Requests.checkKeyTypes(views)
    tally.online.Requests.answer(new tally.online.Fetcher(store(storeUrl), views), requestJson)
  }

  private def servingSpecs(json: String): Seq[tally.online.OnlineView] = {
    val mapper = new com.fasterxml.jackson.databind.ObjectMapper()
    val root = mapper.readTree(json)
    require(root != null && root.isArray, "the serving specs must be a JSON array of serving spec objects")
    import scala.jdk.CollectionConverters._
    root.elements().asScala.map(v => tally.online.OnlineView.parse(mapper.writeValueAsString(v))).toSeq
  }

  /** One view version's state in the store: `{"watermark_us": n | null}`. */
  def onlineStatus(storeUrl: String, view: String, version: Int): String =
    tally.online.Responses.status(store(storeUrl), view, version)

  /** Closes every store the calls above opened (the next call opens them again). */
  def closeStores(): Unit = stores.keySet.forEach(url => Option(stores.remove(url)).foreach(_.close()))
}

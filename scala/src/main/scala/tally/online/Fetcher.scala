package tally.online

import tally.agg.{Values, VType}
import tally.bridge.ViewSpec
import tally.window.{Ladder, RawEvent}

/** A request the caller got wrong (unknown view or feature, a missing or mistyped key): the message names the
  * culprit. The server answers it with a 4xx; everything else is the server's fault (a 5xx, without a trace). */
final class FetchException(message: String) extends IllegalArgumentException(message)

/** One lookup: the entity keys a request gives (key column -> value typed as the view's key type: String,
  * java.lang.Long, java.lang.Boolean, java.math.BigDecimal, java.lang.Double, LocalDate, Instant, Array[Byte]) and
  * the request time in microseconds since the epoch (UTC). */
final case class FetchRow(keys: Map[String, Any], atUs: Long)

/** What a fetch returns: one column per feature reference (`view:feature`), its kernel type, and per row the values
  * as the kernels give them (boxed as in [[tally.agg.Values]]; null for an empty window without a default). */
final case class Fetched(refs: IndexedSeq[String], types: IndexedSeq[VType], rows: IndexedSeq[Array[Any]])

/** The fetcher: reads the tiles of the referenced views and merges them with the kernels, so that a fetch of
  * (key, at) equals the training-set value of a spine row (key, at) — for every function, whenever the store holds
  * the tiles covering the window (see docs/serving.md).
  *
  * Per feature and row, the window's span is cut along the [[Ladder]]: whole IR tiles are merged (`merge`), the
  * raw events of the partial minutes at the ends are folded (`update`), each event only once it is available by
  * the offline rule (`avail < at`, or `<= at` for closed="right"); the ttl asks the same of its own span. All views
  * and keys of a call are read in one store call (one round trip on one Redis node), the tiles of each key as a few
  * runs (one per level and end of a span). Thread-safe: between calls it keeps only the resolved feature lists. */
final class Fetcher(store: OnlineStore, views: Seq[OnlineView]) {
  import Fetcher._

  private val newest: Map[String, Plan] =
    views.groupBy(_.spec.view).map { case (n, vs) => n -> new Plan(vs.maxBy(_.spec.version)) }

  /** The views this fetcher serves (the newest version of each), by name. */
  def served: Seq[OnlineView] = newest.values.map(_.view).toSeq.sortBy(_.spec.view)

  // Resolved feature lists, by the list asked for: a service sees the same few lists on every request.
  private val resolvedCache = new java.util.concurrent.ConcurrentHashMap[Seq[String], Resolved]()

  private def resolve(refs: Seq[String]): Resolved = {
    val hit = resolvedCache.get(refs)
    if (hit != null) return hit
    if (refs.isEmpty) throw new FetchException("no features asked for: give at least one 'view' or 'view:feature'")
    val out = refs.toIndexedSeq.flatMap { ref =>
      val (name, feature) = ref.indexOf(':') match {
        case -1 => (ref, None)
        case i  => (ref.substring(0, i), Some(ref.substring(i + 1)))
      }
      val plan = newest.getOrElse(name, throw new FetchException(
        s"unknown view '$name' in '$ref'; served views: ${if (newest.isEmpty) "none (run tally materialize)" else newest.keys.toSeq.sorted.mkString(", ")}"))
      val names = plan.spec.features.map(_.name)
      feature match {
        case None    => names.indices.map(name -> _)
        case Some(f) =>
          val i = names.indexOf(f)
          if (i < 0) throw new FetchException(s"view '$name' has no feature '$f'; its features: ${names.mkString(", ")}")
          Seq(name -> i)
      }
    }.distinct
    val plans = out.map(_._1).distinct.map(newest).toIndexedSeq
    val resolved = new Resolved(plans, out.map { case (n, _) => plans.indexWhere(_.name == n) }.toArray, out.map(_._2).toArray)
    if (resolvedCache.size >= MaxCachedLists) resolvedCache.clear()
    resolvedCache.put(refs.toIndexedSeq, resolved)
    resolved
  }

  def keyColumns(refs: Seq[String]): Seq[(String, String)] =
    resolve(refs).plans.flatMap(p => p.spec.keys.map(k => k -> p.view.keyTypes(k))).distinct

  def fetch(refs: Seq[String], rows: Seq[FetchRow]): Fetched = {
    val res = resolve(refs)
    val rowsV = rows.toIndexedSeq
    val nViews = res.plans.length
    // Per view and row: the entity key and the request's windows (distinct spans, each cut along the ladder).
    val keys = res.plans.map(p => rowsV.map(p.keyOf))
    val windows = res.plans.map(p => rowsV.map(row => p.windows(row.atUs)))
    // The tiles every row's windows take, per view and key, as runs: one store call.
    val requests = res.plans.indices.map { v =>
      val codes = new java.util.HashMap[EntityKey, LongBuffer]()
      rowsV.indices.foreach(r => windows(v)(r).addTo(codes.computeIfAbsent(keys(v)(r), _ => new LongBuffer)))
      val runs = Map.newBuilder[EntityKey, Seq[TileRun]]
      codes.forEach((k, c) => runs += k -> Address.runs(c.sortedDistinct()))
      TileRequest(res.plans(v).name, res.plans(v).spec.version, runs.result())
    }
    val read = store.get(requests)
    val out = rowsV.indices.map { r =>
      val row = new Array[Any](res.size)
      val perView = Array.tabulate(nViews)(v =>
        res.plans(v).values(new KeyTiles(res.plans(v).layout, read(v)(keys(v)(r))), windows(v)(r), rowsV(r).atUs))
      var i = 0
      while (i < res.size) { row(i) = perView(res.viewOf(i))(res.featureOf(i)); i += 1 }
      row
    }
    Fetched(res.names, res.types, out)
  }
}

private object Fetcher {
  private val MaxCachedLists = 1024

  /** A feature list resolved: the views it reads, and per output column its view (index into `plans`) and feature. */
  final class Resolved(val plans: IndexedSeq[Plan], val viewOf: Array[Int], val featureOf: Array[Int]) {
    def size: Int = viewOf.length
    val names: IndexedSeq[String] = viewOf.indices.map(i => s"${plans(viewOf(i)).name}:${plans(viewOf(i)).spec.features(featureOf(i)).name}")
    val types: IndexedSeq[VType] = viewOf.indices.map { i =>
      val l = plans(viewOf(i)).layout
      l.kernels(l.kernelOfFeature(featureOf(i)))._1.outputType
    }
  }

  /** A served view, with what every request of it needs precomputed. */
  final class Plan(val view: OnlineView) {
    val spec: ViewSpec = view.spec
    val name: String = spec.view
    val layout: TileLayout = view.layout
    private val defaults = view.defaults
    private val right: Array[Boolean] = spec.features.map(_.closed == "right").toArray
    private val kernelOf: Array[Int] = layout.kernelOfFeature.toArray
    private val aggs: Array[tally.agg.Aggregator[AnyRef]] = layout.kernels.map(_._1).toArray
    private val columnOf: Array[Int] = kernelOf.map(layout.kernels(_)._2)

    def keyOf(row: FetchRow): EntityKey = {
      val parts = spec.keys.map { k =>
        row.keys.getOrElse(k, throw new FetchException(
          s"view '$name' needs key '$k' (its entity's keys: ${spec.keys.mkString(", ")}); the request gives: " +
            s"${if (row.keys.isEmpty) "none" else row.keys.keys.toSeq.sorted.mkString(", ")}"))
      }
      try EntityKey.of(parts: _*) catch {
        case e: IllegalArgumentException => throw new FetchException(s"view '$name': ${e.getMessage}")
      }
    }

    /** The windows of a request at `at`: its distinct spans (features', then the ttl's), each cut once. */
    def windows(at: Long): Windows = {
      val spans = view.spans(at)
      val from = new Array[Long](spans.length)
      val to = new Array[Long](spans.length)
      val index = new Array[Int](spans.length)
      var n = 0
      var i = 0
      while (i < spans.length) {
        val (f, t) = spans(i)
        var j = 0
        while (j < n && (from(j) != f || to(j) != t)) j += 1
        if (j == n) { from(n) = f; to(n) = t; n += 1 }
        index(i) = j
        i += 1
      }
      new Windows(IndexedSeq.tabulate(n)(j => Ladder.cut(from(j), to(j))),
        index.take(spec.features.length), if (spec.ttlUs.isDefined) index.last else -1)
    }

    /** Every feature of the view as of `at`, in spec order. */
    def values(tiles: KeyTiles, w: Windows, at: Long): Array[Any] = {
      val out = new Array[Any](spec.features.length)
      if (w.ttl < 0 || tiles.any(w.pieces(w.ttl), at)) {
        var i = 0
        while (i < out.length) {
          val result = Ladder.fold(aggs(kernelOf(i)), kernelOf(i), columnOf(i), w.pieces(w.featureSpan(i)), at, right(i), tiles)
          out(i) = if (result == null) defaults(i) else result
          i += 1
        }
      }
      out
    }
  }

  /** A request's windows for one view: the pieces of each distinct span, and per feature (and the ttl) its span. */
  final class Windows(val pieces: IndexedSeq[IndexedSeq[Ladder.Piece]], val featureSpan: Array[Int], val ttl: Int) {
    /** Adds the address of every tile the pieces take. */
    def addTo(codes: LongBuffer): Unit = pieces.foreach(_.foreach {
      case Ladder.Whole(st, len)   => codes += Address.code(len, st)
      case Ladder.Events(st, _, _) => codes += Address.code(Ladder.RawUs, st)
    })
  }

  /** A tile address as one long: the ladder level (0 = raw minute) added to the start, which every level aligns to
    * a whole minute, so the two never collide. */
  object Address {
    def code(length: Long, start: Long): Long = start + Ladder.level(length)
    def level(code: Long): Int = Math.floorMod(code, Ladder.RawUs).toInt
    def start(code: Long): Long = code - level(code)

    /** Sorted distinct codes as runs: consecutive tiles of one level join one run. */
    def runs(codes: Array[Long]): Seq[TileRun] = {
      val out = Seq.newBuilder[TileRun]
      var lv = 0
      while (lv < Ladder.lengths.length) {
        val length = Ladder.lengths(lv)
        var first = 0L; var last = 0L; var open = false
        var i = 0
        while (i < codes.length) {
          if (level(codes(i)) == lv) {
            val st = start(codes(i))
            if (open && st == last + length) last = st
            else { if (open) out += TileRun(length, first, last); first = st; last = st; open = true }
          }
          i += 1
        }
        if (open) out += TileRun(length, first, last)
        lv += 1
      }
      out.result()
    }
  }

  /** A growable array of longs. */
  final class LongBuffer {
    private var a = new Array[Long](256)
    private var n = 0
    def +=(x: Long): Unit = { if (n == a.length) a = java.util.Arrays.copyOf(a, 2 * n); a(n) = x; n += 1 }
    def sortedDistinct(): Array[Long] = {
      val s = java.util.Arrays.copyOf(a, n)
      java.util.Arrays.sort(s)
      var m = 0
      var i = 0
      while (i < s.length) { if (m == 0 || s(i) != s(m - 1)) { s(m) = s(i); m += 1 }; i += 1 }
      java.util.Arrays.copyOf(s, m)
    }
  }

  /** One key's tiles of one view, found by address, each decoded on first use. */
  final class KeyTiles(layout: TileLayout, tiles: Seq[Tile]) extends Ladder.Source {
    private val sorted: Array[Tile] = tiles.toArray.sortBy(t => Address.code(t.lengthUs, t.startUs))
    private val codes: Array[Long] = sorted.map(t => Address.code(t.lengthUs, t.startUs))
    private val payloads = new Array[TilePayload](sorted.length)
    private val irs = new Array[Array[AnyRef]](sorted.length)

    private def payload(i: Int): TilePayload = {
      if (payloads(i) == null) payloads(i) = TilePayload.decode(sorted(i).payload, layout.types)
      payloads(i)
    }

    def slot(length: Long, start: Long): Int = java.util.Arrays.binarySearch(codes, Address.code(length, start))
    def ir(i: Int, k: Int): AnyRef = {
      if (irs(i) == null) irs(i) = new Array[AnyRef](layout.kernels.length)
      if (irs(i)(k) == null) irs(i)(k) = layout.kernels(k)._1.decode(payload(i).irs(k))
      irs(i)(k)
    }
    def raw(i: Int): IndexedSeq[RawEvent] = payload(i).raw

    /** Whether any event of the pieces is available as of `at`: the ttl's liveness test. */
    def any(pieces: IndexedSeq[Ladder.Piece], at: Long): Boolean =
      pieces.exists {
        case Ladder.Whole(st, len) =>
          val i = slot(len, st)
          i >= 0 && (payload(i).settled > 0 || payload(i).raw.exists(Ladder.available(_, at, right = false)))
        case Ladder.Events(st, lo, hi) =>
          val i = slot(Ladder.RawUs, st)
          i >= 0 && payload(i).raw.exists(e => e.ts >= lo && e.ts < hi && Ladder.available(e, at, right = false))
      }
  }
}

/** What serving needs to know of one online view version beyond its spec: the Spark types (simpleString, as
  * `bigint`, `string`, `decimal(12,2)`, `timestamp`, `date`) of its key columns and value columns. Written by
  * `tally materialize` next to the tiles (JSON, see [[OnlineView.parse]]), read by the server. */
final case class OnlineView(spec: ViewSpec, specJson: String, keyTypes: Map[String, String], columnTypes: Map[String, String],
                            firstUs: Option[Long] = None) {
  spec.keys.foreach(k => require(keyTypes.contains(k), s"serving spec of view '${spec.view}': no type for key column '$k'"))

  /** The tiles' layout: the value columns' kernel types and the kernels. */
  lazy val layout: TileLayout = new TileLayout(spec, columnTypes.map { case (c, t) =>
    c -> TypeNames.vtype(t).getOrElse(throw new IllegalArgumentException(
      s"serving spec of view '${spec.view}': column '$c' has type '$t', which no kernel aggregates"))
  })

  /** Each feature's default as the kernel's value (null: none), as the offline sweep fills an empty window. */
  lazy val defaults: IndexedSeq[Any] = spec.features.indices.map { i =>
    spec.features(i).default.map(d => Values.coerce(d, layout.kernels(layout.kernelOfFeature(i))._1.outputType)).orNull
  }

  /** The spans `[from, to)` a request at `at` reads: one per feature (spec order), then the ttl's when there is one.
    * A feature's span holds the events its window may hold by time (availability is checked per event); a lifetime
    * window starts at the first event materialized (`firstUs`, rounded down to the ladder's longest tile). */
  def spans(at: Long): IndexedSeq[(Long, Long)] =
    spec.features.toIndexedSeq.map(f => Ladder.span(at, f.lengthUs, f.delayUs, f.closed == "right", f.hopUs, firstUs)) ++
      spec.ttlUs.map(ttl => (Ladder.sat(at, -ttl), at))
}

object OnlineView {
  private val mapper = new com.fasterxml.jackson.databind.ObjectMapper()


  /** `{"spec": <the view's JSON spec>, "key_types": {col: type}, "column_types": {col: type}, "first_event_us": n}`
    * (`first_event_us` optional: the first event materialized, where lifetime windows start). */
  def parse(json: String): OnlineView = {
    val root = mapper.readTree(json)
    require(root != null && root.isObject && root.path("spec").isObject,
      "a serving spec is a JSON object with 'spec', 'key_types' and 'column_types'")
    val specJson = mapper.writeValueAsString(root.get("spec"))
    def types(field: String): Map[String, String] = {
      val node = root.path(field)
      require(node.isObject, s"serving spec: '$field' must be an object of column -> type")
      import scala.jdk.CollectionConverters._
      node.properties().asScala.map(e => e.getKey -> e.getValue.asText).toMap
    }
    val first = root.path("first_event_us")
    OnlineView(tally.bridge.Spec.parse(specJson), specJson, types("key_types"), types("column_types"),
      if (first.isIntegralNumber) Some(first.asLong) else None)
  }

  def toJson(v: OnlineView): String = {
    val root = mapper.createObjectNode()
    root.set[com.fasterxml.jackson.databind.JsonNode]("spec", mapper.readTree(v.specJson))
    val keys = root.putObject("key_types"); v.keyTypes.toSeq.sorted.foreach { case (k, t) => keys.put(k, t) }
    val cols = root.putObject("column_types"); v.columnTypes.toSeq.sorted.foreach { case (k, t) => cols.put(k, t) }
    v.firstUs.foreach(root.put("first_event_us", _))
    mapper.writeValueAsString(root)
  }
}

package tally.online

import tally.agg.{Values, VType}
import tally.bridge.ViewSpec

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
  * and keys of a call are read in one store call (one round trip on one Redis node). Thread-safe: it keeps no
  * state between calls. */
final class Fetcher(store: OnlineStore, views: Seq[OnlineView]) {
  private val newest: Map[String, OnlineView] = views.groupBy(_.spec.view).map { case (n, vs) => n -> vs.maxBy(_.spec.version) }
  private val layouts: Map[String, TileLayout] = newest.map { case (n, v) => n -> v.layout }

  /** The views this fetcher serves (the newest version of each), by name. */
  def served: Seq[OnlineView] = newest.values.toSeq.sortBy(_.spec.view)

  import Fetcher.Ref

  private def resolve(refs: Seq[String]): IndexedSeq[Ref] = {
    if (refs.isEmpty) throw new FetchException("no features asked for: give at least one 'view' or 'view:feature'")
    val out = refs.toIndexedSeq.flatMap { ref =>
      val (name, feature) = ref.indexOf(':') match {
        case -1 => (ref, None)
        case i  => (ref.substring(0, i), Some(ref.substring(i + 1)))
      }
      val view = newest.getOrElse(name, throw new FetchException(
        s"unknown view '$name' in '$ref'; served views: ${if (newest.isEmpty) "none (run tally materialize)" else newest.keys.toSeq.sorted.mkString(", ")}"))
      val names = view.spec.features.map(_.name)
      feature match {
        case None    => names.indices.map(Ref(view, _))
        case Some(f) =>
          val i = names.indexOf(f)
          if (i < 0) throw new FetchException(s"view '$name' has no feature '$f'; its features: ${names.mkString(", ")}")
          Seq(Ref(view, i))
      }
    }
    out.distinct
  }

  def keyColumns(refs: Seq[String]): Seq[(String, String)] =
    resolve(refs).map(_.view).distinct.flatMap(v => v.spec.keys.map(k => k -> v.keyTypes(k))).distinct

  def fetch(refs: Seq[String], rows: Seq[FetchRow]): Fetched = {
    val resolved = resolve(refs)
    val byView = resolved.map(_.view).distinct
    val rowsV = rows.toIndexedSeq
    // Each view's entity key per row, and one read of the span every row's windows can reach.
    val keys: Map[String, IndexedSeq[EntityKey]] = byView.map { v =>
      v.spec.view -> rowsV.map { row =>
        val parts = v.spec.keys.map { k =>
          row.keys.getOrElse(k, throw new FetchException(
            s"view '${v.spec.view}' needs key '$k' (its entity's keys: ${v.spec.keys.mkString(", ")}); the request gives: " +
              s"${if (row.keys.isEmpty) "none" else row.keys.keys.toSeq.sorted.mkString(", ")}"))
        }
        try EntityKey.of(parts: _*) catch {
          case e: IllegalArgumentException => throw new FetchException(s"view '${v.spec.view}': ${e.getMessage}")
        }
      }
    }.toMap
    // The exact tiles each row's windows merge (the ladder's cut of each span), per view and key: one store call.
    val cuts = new java.util.HashMap[(Long, Long), IndexedSeq[Ladder.Piece]]()
    def cut(span: (Long, Long)): IndexedSeq[Ladder.Piece] = cuts.computeIfAbsent(span, sp => Ladder.cut(sp._1, sp._2))
    val requests = byView.map { v =>
      val wanted = new java.util.HashMap[EntityKey, java.util.LinkedHashSet[(Long, Long)]]()
      rowsV.indices.foreach { r =>
        val set = wanted.computeIfAbsent(keys(v.spec.view)(r), _ => new java.util.LinkedHashSet[(Long, Long)]())
        v.spans(rowsV(r).atUs).foreach(span => cut(span).foreach {
          case Ladder.Whole(st, len)     => set.add((len, st))
          case Ladder.Events(st, _, _)   => set.add((Ladder.RawUs, st))
        })
      }
      import scala.jdk.CollectionConverters._
      TileRequest(v.spec.view, v.spec.version, wanted.asScala.map { case (k, a) => k -> a.asScala.toSeq }.toMap)
    }
    val read = store.get(requests)
    val tilesOf: Map[String, Map[EntityKey, Seq[Tile]]] = byView.map(_.spec.view).zip(read).toMap

    val out = rowsV.indices.map { r =>
      val row = new Array[Any](resolved.length)
      val perView = byView.map { v =>
        val tiles = new KeyTiles(layouts(v.spec.view), tilesOf(v.spec.view)(keys(v.spec.view)(r)), cut)
        v.spec.view -> tiles.values(v, rowsV(r).atUs)
      }.toMap
      resolved.indices.foreach { i => row(i) = perView(resolved(i).view.spec.view)(resolved(i).feature) }
      row
    }
    Fetched(resolved.map(r => s"${r.view.spec.view}:${r.view.spec.features(r.feature).name}"),
      resolved.map(r => layouts(r.view.spec.view).kernels(layouts(r.view.spec.view).kernelOfFeature(r.feature))._1.outputType),
      out)
  }

  /** One key's tiles of one view, decoded on first use. */
  private final class KeyTiles(layout: TileLayout, tiles: Seq[Tile], cut: ((Long, Long)) => IndexedSeq[Ladder.Piece]) {
    private val byAddress = new java.util.HashMap[(Long, Long), Tile]()
    tiles.foreach(t => byAddress.put((t.lengthUs, t.startUs), t))
    private val decoded = new java.util.HashMap[(Long, Long), TilePayload]()
    private val irCache = new java.util.HashMap[(Long, Long, Int), AnyRef]()

    private def payload(length: Long, start: Long): TilePayload = {
      val a = (length, start)
      var p = decoded.get(a)
      if (p == null) {
        val t = byAddress.get(a)
        if (t != null) { p = TilePayload.decode(t.payload, layout.types); decoded.put(a, p) }
      }
      p
    }
    private def ir(length: Long, start: Long, k: Int, p: TilePayload): AnyRef =
      irCache.computeIfAbsent((length, start, k), _ => layout.kernels(k)._1.decode(p.irs(k)))

    /** Every feature of the view as of `at`, in spec order. */
    def values(v: OnlineView, at: Long): Array[Any] = {
      val spec = v.spec
      val out = new Array[Any](spec.features.length)
      val spans = v.spans(at)
      val alive = spec.ttlUs.forall(_ => any(spans.last, at))
      if (alive) spec.features.indices.foreach { i =>
        val right = spec.features(i).closed == "right"
        val k = layout.kernelOfFeature(i)
        val agg = layout.kernels(k)._1
        var s = agg.zero()
        def fold(e: RawEvent): Unit = {
          val value = layout.valueFor(k, e.values)
          if (value != null) s = agg.update(s, value, e.ts)
        }
        cut(spans(i)).foreach {
          case Ladder.Whole(st, len) =>
            val p = payload(len, st)
            if (p != null) {
              s = agg.merge(s, ir(len, st, k, p))
              p.raw.foreach(e => if (available(e, at, right)) fold(e))
            }
          case Ladder.Events(st, from, to) =>
            val p = payload(Ladder.RawUs, st)
            if (p != null) p.raw.foreach(e => if (e.ts >= from && e.ts < to && available(e, at, right)) fold(e))
        }
        val result = agg.finish(s, at)
        out(i) = if (result == null) v.defaults(i) else result
      }
      out
    }

    /** Whether any event of `[from, to)` is available as of `at`: the ttl's liveness test. */
    private def any(span: (Long, Long), at: Long): Boolean =
      cut(span).exists {
        case Ladder.Whole(st, len) =>
          val p = payload(len, st)
          p != null && (p.settled > 0 || p.raw.exists(available(_, at, right = false)))
        case Ladder.Events(st, lo, hi) =>
          val p = payload(Ladder.RawUs, st)
          p != null && p.raw.exists(e => e.ts >= lo && e.ts < hi && available(e, at, right = false))
      }

    @inline private def available(e: RawEvent, at: Long, right: Boolean): Boolean =
      e.avail == Long.MinValue || (if (right) e.avail <= at else e.avail < at)
  }
}

private object Fetcher {
  /** A resolved reference: a view and the index of one of its features. */
  final case class Ref(view: OnlineView, feature: Int)
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
  def spans(at: Long): IndexedSeq[(Long, Long)] = {
    val features = spec.features.toIndexedSeq.map { f =>
      val right = f.closed == "right"
      val end = OnlineView.sat(OnlineView.sat(at, -f.delayUs), if (right) 1L else 0L)
      val start = f.lengthUs match {
        case None                   => firstUs.fold(end)(first => math.min(end, Ladder.floor(first, Ladder.Longest)))
        case Some(w) if f.hopUs > 0 => Ladder.floor(OnlineView.sat(OnlineView.sat(at, -f.delayUs), -w), f.hopUs)
        case Some(w)                => OnlineView.sat(OnlineView.sat(OnlineView.sat(at, -f.delayUs), -w), if (right) 1L else 0L)
      }
      (start, end)
    }
    features ++ spec.ttlUs.map(ttl => (OnlineView.sat(at, -ttl), at))
  }

}

object OnlineView {
  private val mapper = new com.fasterxml.jackson.databind.ObjectMapper()

  /** a + b, clamped to the Long range instead of wrapping (request times near the ends of time). */
  private[online] def sat(a: Long, b: Long): Long = { val s = a + b; if (((a ^ s) & (b ^ s)) < 0) (if (a < 0) Long.MinValue else Long.MaxValue) else s }

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

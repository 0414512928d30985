package tally.online

import tally.agg.VType
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

/** The fetcher: decodes the tiles of the referenced views and merges them with the kernels, so that a fetch of
  * (key, at) equals the training-set value of a spine row (key, at). See docs/serving.md. */
final class Fetcher(store: OnlineStore, views: Seq[OnlineView]) {

  /** The key columns (and their types) a request for `refs` must give, in first-seen order. Throws
    * [[FetchException]] for an unknown view or feature. */
  def keyColumns(refs: Seq[String]): Seq[(String, String)] = ???

  /** The values of `refs` ("view" = all its features, or "view:feature") for each row. */
  def fetch(refs: Seq[String], rows: Seq[FetchRow]): Fetched = ???

  /** The views this fetcher serves (the newest version of each). */
  def served: Seq[OnlineView] = ???
}

/** What serving needs to know of one online view version beyond its spec: the Spark types (simpleString, as
  * `bigint`, `string`, `decimal(12,2)`, `timestamp`, `date`) of its key columns and value columns. Written by
  * `tally materialize` next to the tiles (JSON, see [[OnlineView.parse]]), read by the server. */
final case class OnlineView(spec: ViewSpec, specJson: String, keyTypes: Map[String, String], columnTypes: Map[String, String])

object OnlineView {
  /** `{"spec": <the view's JSON spec>, "key_types": {col: type}, "column_types": {col: type}}` */
  def parse(json: String): OnlineView = ???
  def toJson(v: OnlineView): String = ???
}

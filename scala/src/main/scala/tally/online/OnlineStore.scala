package tally.online

/** Where online tiles live, behind one interface: [[SqliteStore]] (embedded default, one file) and [[RedisStore]]
  * (Redis or Redis Cluster). Callers (the tile builder, the stream, the fetcher, `describe`) never ask which.
  *
  * The stamp rule (exactly-once per tile, without multi-key transactions, which Redis Cluster cannot do across
  * slots): every tile a writer writes in one pass (a stream micro-batch, a materialize run) carries that pass's
  * id as its stamp. The store applies a tile unless it already holds that tile with the same stamp, atomically
  * per tile. So a pass that dies half-way and is replayed under the same id rewrites only the tiles its first
  * attempt did not reach; a writer that folds new events into stored tiles reads them first ([[read]] returns
  * stamps) and skips the ones stamped with its own id, and should it fold one again anyway the store refuses it.
  * Ids must therefore differ between passes that write different content to a tile of one view version (a
  * materialize run must not reuse a stream's batch id). Tiles written with another stamp replace the stored ones.
  *
  * Implementations are thread-safe: the fetcher reads from many threads while a stream writes.
  */
trait OnlineStore extends AutoCloseable {

  /** Writes tiles, each atomically; returns how many were applied (the others already carried their stamp).
    * Why: the tile builder and each stream micro-batch load their tiles in one call. SQLite applies the whole call
    * in one transaction; Redis applies all tiles of one entity key in one command, pipelined over keys. A call
    * must not hold two tiles with one address: that is a writer's bug, refused before anything is written. */
  final def write(tiles: Seq[Tile]): Int = { checkDistinct(tiles); if (tiles.isEmpty) 0 else writeTiles(tiles) }

  /** A writer's bug, refused before anything is written: two tiles with one address in one call. */
  protected final def checkDistinct(tiles: Seq[Tile]): Unit = {
    val seen = new java.util.HashSet[(String, Int, EntityKey, Long, Long)]()
    tiles.foreach { t =>
      require(seen.add(t.address), s"view '${t.view}' v${t.version} key ${t.key.encoded}: two tiles at " +
        s"[${t.startUs}, +${t.lengthUs}) in one write; fold them into one before writing")
    }
  }

  /** The tiles of each query's keys that overlap its span, with their stamps: one map per query, in order, holding
    * every key asked for (with no tiles: an empty list), tiles sorted by (startUs, lengthUs) so that merges run
    * in one order everywhere. Why: a fetch merges, per view and key, the tiles covering each window; a stream
    * reads the tiles it will fold into (and their stamps, for the rule above). All queries of one call take one
    * round trip on a single Redis node (see [[RedisStore]]), so a request for many views costs one. */
  final def read(queries: Seq[TileQuery]): Seq[Map[EntityKey, Seq[Tile]]] =
    if (queries.isEmpty) Nil else readTiles(queries.map(q => q.copy(keys = q.keys.distinct)))

  /** One view version's tiles for `keys` overlapping `[fromUs, toUs)`: [[read]] for a single query. */
  final def read(view: String, version: Int, keys: Seq[EntityKey], fromUs: Long, toUs: Long): Map[EntityKey, Seq[Tile]] =
    read(Seq(TileQuery(view, version, keys, fromUs, toUs))).head

  /** The tiles at exactly the addresses asked for — per view version and key, runs of (lengthUs, startUs) — those
    * that exist, one map per request, in order (every key asked for present; tiles sorted as [[read]] sorts them).
    * Why: a fetch knows from the tile ladder which few dozen tiles each window merges, while a key's hash or range
    * holds its whole history; reading only those keeps a request's cost independent of the history's length. The
    * tiles a span takes at one level lie side by side, so a run costs SQLite one seek; all requests of one call
    * take one round trip on a single Redis node, as [[read]] does. Runs of one key must not overlap (a caller's
    * bug, refused before reading). */
  final def get(requests: Seq[TileRequest]): Seq[Map[EntityKey, Seq[Tile]]] = {
    requests.foreach(q => q.runs.foreach { case (key, runs) =>
      runs.groupBy(_.lengthUs).foreach { case (length, same) =>
        same.sortBy(_.firstUs).sliding(2).foreach {
          case Seq(a, b) => require(a.lastUs < b.firstUs, s"view '${q.view}' v${q.version} key ${key.encoded}: runs of " +
            s"$length µs tiles [${a.firstUs}..${a.lastUs}] and [${b.firstUs}..${b.lastUs}] overlap; merge them before reading")
          case _ => ()
        }
      }
    })
    if (requests.isEmpty) Nil else getTiles(requests)
  }

  /** The tiles the store holds at exactly `addresses` — (key, lengthUs, startUs) of one view version — one answer
    * per address, in order: the tile there, with its stamp, or None. Why: a stream micro-batch folds each tile it
    * built into the stored tile at the same address, and needs no other; reading the touched keys' spans instead
    * would bring every tile of every ladder level over them. One call is one read transaction on SQLite (statements
    * of many addresses each, in primary-key order) and one pipeline of one HMGET per entity key on Redis. */
  final def at(view: String, version: Int, addresses: IndexedSeq[(EntityKey, Long, Long)]): IndexedSeq[Option[Tile]] = {
    Names.checkView(view, version)
    if (addresses.isEmpty) IndexedSeq.empty
    else {
      val found = tilesAt(view, version, addresses)
      require(found.length == addresses.length, s"view '$view' v$version: ${found.length} answers for ${addresses.length} addresses")
      found.toIndexedSeq.map(Option(_))
    }
  }

  /** The newest event time loaded for a view version, if any. Why: `describe` shows how fresh the online view is,
    * and a fetcher can tell a request beyond what is loaded. */
  def watermark(view: String, version: Int): Option[Long]

  /** Raises a view version's watermark to `eventUs` (never lowers it: reloading older tiles keeps the newest).
    * Why: the tile builder and each micro-batch call it after their tiles are written. */
  final def advanceWatermark(view: String, version: Int, eventUs: Long): Unit = {
    checkWatermark(view, version, eventUs)
    raiseWatermark(view, version, eventUs)
  }

  protected final def checkWatermark(view: String, version: Int, eventUs: Long): Unit = {
    Names.checkView(view, version)
    require(math.abs(eventUs) <= OnlineStore.MaxExactMicros,
      s"view '$view' v$version: watermark $eventUs µs is beyond ±2^53 µs (year 2255), which Redis scores hold exactly")
  }

  /** The last micro-batch a stream recorded as fully written, if any. Why: a restarted stream skips batches it
    * already completed, and replays the one it did not under the same id (the stamp rule covers its tiles). */
  def lastBatch(stream: String): Option[Long]

  /** Records that `stream` wrote every tile of `batchId`; the last record wins (a stream reset from scratch starts
    * again at 0). Why: written after the batch's tiles and watermark, it closes the batch. */
  final def recordBatch(stream: String, batchId: Long): Unit = { Names.checkStream(stream); setBatch(stream, batchId) }

  /** Closes a stream micro-batch: writes its tiles, raises the view version's watermark (if the batch had events)
    * and records the batch; returns how many tiles were applied. Why one call: a store that can (SQLite) does all of
    * it in one transaction, so a batch is either wholly in the store or not at all. The default does the three
    * steps in that order, which the stamp rule makes safe to replay (docs/streaming.md): Redis, whose Cluster has no
    * transaction across slots. */
  def closeBatch(tiles: Seq[Tile], view: String, version: Int, watermarkUs: Option[Long], stream: String, batchId: Long): Int = {
    val applied = write(tiles)
    watermarkUs.foreach(advanceWatermark(view, version, _))
    recordBatch(stream, batchId)
    applied
  }

  /** The view version's tiles that carry `stamp`, in no particular order: what one pass (a stream micro-batch) left in
    * the store, untouched by later passes. Why: a stream commits a batch to its Delta tile table after the store's
    * close, beside the next batch; when a crash loses that commit, the batch's table rows are exactly these tiles
    * (docs/streaming.md). A scan of the view version's tiles: a recovery call, not a request path. */
  final def stamped(view: String, version: Int, stamp: Long): Seq[Tile] = {
    Names.checkView(view, version); stampedTiles(view, version, stamp)
  }

  /** Removes a view version's tiles that end at or before `beforeUs`; returns how many. Why: the store keeps only
    * what requests can still need (the longest window or ttl), and dropping an old version is a prune to +inf. */
  final def prune(view: String, version: Int, beforeUs: Long): Long = { Names.checkView(view, version); pruneTiles(view, version, beforeUs) }

  /** Releases connections (SQLite: the file; Redis: the pool). The store is unusable after. */
  def close(): Unit

  protected def writeTiles(tiles: Seq[Tile]): Int
  protected def readTiles(queries: Seq[TileQuery]): Seq[Map[EntityKey, Seq[Tile]]]
  protected def getTiles(requests: Seq[TileRequest]): Seq[Map[EntityKey, Seq[Tile]]]
  /** [[at]]: per address, the tile there or null. */
  protected def tilesAt(view: String, version: Int, addresses: IndexedSeq[(EntityKey, Long, Long)]): Array[Tile]
  protected def raiseWatermark(view: String, version: Int, eventUs: Long): Unit
  protected def setBatch(stream: String, batchId: Long): Unit
  protected def pruneTiles(view: String, version: Int, beforeUs: Long): Long
  protected def stampedTiles(view: String, version: Int, stamp: Long): Seq[Tile]
}

object OnlineStore {
  /** Redis keeps watermarks as sorted-set scores (doubles), exact up to 2^53. */
  val MaxExactMicros: Long = 1L << 53

  /** Sorts one key's tiles as [[OnlineStore.read]] promises. */
  private[online] def ordered(tiles: Seq[Tile]): Seq[Tile] = tiles.sortBy(t => (t.startUs, t.lengthUs))
}

/** A store that cannot do what was asked for a reason outside tally's data (unreachable, wrong file): the message
  * says which store, where, and what to do. */
final class OnlineStoreException(message: String, cause: Throwable = null) extends RuntimeException(message, cause)

package tally.online

import java.nio.charset.StandardCharsets.{US_ASCII, UTF_8}
import java.util.concurrent.{ExecutorService, Executors}

import redis.clients.jedis.exceptions.JedisException
import redis.clients.jedis.params.ZAddParams
import redis.clients.jedis.{AbstractPipeline, HostAndPort, RedisClient, RedisClusterClient, UnifiedJedis}

import scala.jdk.CollectionConverters._
import scala.util.Using

/** The online store on Redis, a single server or a Redis Cluster, through one Jedis client.
  *
  * Layout: one hash per (view, version, entity key), named `<ns>:{<view>:<version>:<key>}` (`ns` defaults to
  * `tally`; `key` is [[EntityKey.encoded]], which holds no braces, so the whole braced part is the Cluster hash
  * tag). Each tile is one field of that hash, `<lengthUs>:<startUs>`, holding the tile's stamp (8 bytes, big-endian)
  * followed by its payload: a fetch asks for one field per tile. Also `<ns>:watermarks`, a sorted set scored by event time (member `<view>:<version>`,
  * raised with ZADD GT), and `<ns>:batches`, a hash from stream name to last batch id.
  *
  * One entity key's tiles live in one hash, hence in one Cluster slot: a write of all its tiles is one command and
  * atomic, and the stamp rule ([[OnlineStore]]) is checked inside it by a short Lua script (single-key, so it runs
  * the same on Cluster). No command touches two entity keys, so none is ever cross-slot.
  *
  * Round trips: a write is one pipeline (one round trip per 1,000 entity keys). A `get` of exact tiles (the fetch
  * path) is one pipelined HMGET per (view, key), of just the tiles' fields. A read of any number of queries
  * is one pipelined HGETALL per (view, key): a request for N views x 1 key costs one round trip on a single server,
  * and on a Cluster one per node holding one of the N hashes (at most min(N, masters)), sent to the nodes in
  * parallel. HGETALL returns all of a key's tiles; the store filters the span client-side, which stays cheap
  * because [[prune]] keeps only the tiles requests can still need.
  */
final class RedisStore private (client: UnifiedJedis, newPipeline: () => AbstractPipeline, val where: String,
                                val namespace: String, release: () => Unit) extends OnlineStore {
  import RedisStore._

  private val watermarks = s"$namespace:watermarks"
  private val batches = s"$namespace:batches"

  private def hash(view: String, version: Int, key: EntityKey): String = s"$namespace:{$view:$version:${key.encoded}}"

  protected def writeTiles(tiles: Seq[Tile]): Int = io("write tiles") {
    tiles.groupBy(t => hash(t.view, t.version, t.key)).iterator.grouped(WriteChunk).map { chunk =>
      withPipeline { p =>
        val applied = chunk.map { case (hashKey, ts) =>
          val args = new java.util.ArrayList[Array[Byte]](ts.size * 3)
          ts.foreach { t =>
            val stamp = stampBytes(t.stamp)
            val value = java.util.Arrays.copyOf(stamp, StampBytes + t.payload.length)
            System.arraycopy(t.payload, 0, value, StampBytes, t.payload.length)
            args.add(field(t.lengthUs, t.startUs)); args.add(stamp); args.add(value)
          }
          p.eval(WriteScript, java.util.List.of(hashKey.getBytes(UTF_8)), args)
        }
        p.sync()
        applied.map(_.get.asInstanceOf[java.lang.Long].intValue).sum
      }
    }.sum
  }

  protected def readTiles(queries: Seq[TileQuery]): Seq[Map[EntityKey, Seq[Tile]]] = io("read tiles") {
    withPipeline { p =>
      val pending = queries.map(q => q.keys.map(k => k -> p.hgetAll(hash(q.view, q.version, k).getBytes(UTF_8))))
      p.sync()
      queries.zip(pending).map { case (q, keys) =>
        keys.map { case (k, fields) => k -> OnlineStore.ordered(tilesOf(q, k, fields.get).filter(_.overlaps(q.fromUs, q.toUs))) }.toMap
      }
    }
  }

  protected def getTiles(requests: Seq[TileRequest]): Seq[Map[EntityKey, Seq[Tile]]] = io("read tiles") {
    withPipeline { p =>
      val pending = requests.map { q =>
        q.runs.toSeq.map { case (k, runs) =>
          val addresses = runs.flatMap(run => run.starts.map(run.lengthUs -> _))
          (k, addresses, p.hmget(hash(q.view, q.version, k).getBytes(UTF_8), addresses.map { case (l, s) => field(l, s) }: _*))
        }
      }
      p.sync()
      requests.zip(pending).map { case (q, keys) =>
        keys.map { case (k, addresses, values) =>
          val got = values.get
          k -> OnlineStore.ordered(addresses.indices.flatMap { i =>
            val value = got.get(i)
            if (value == null) None
            else Some(tile(q.view, q.version, k, addresses(i)._1, addresses(i)._2, value, hash(q.view, q.version, k)))
          })
        }.toMap
      }
    }
  }

  protected def tilesAt(view: String, version: Int, addresses: IndexedSeq[(EntityKey, Long, Long)]): Array[Tile] = io("read tiles") {
    val found = new Array[Tile](addresses.length)
    withPipeline { p =>
      val pending = addresses.indices.groupBy(i => addresses(i)._1).toSeq.map { case (k, slots) =>
        (k, slots, p.hmget(hash(view, version, k).getBytes(UTF_8), slots.map(i => field(addresses(i)._2, addresses(i)._3)): _*))
      }
      p.sync()
      pending.foreach { case (k, slots, values) =>
        val got = values.get
        slots.indices.foreach { n =>
          val value = got.get(n)
          if (value != null) {
            val (_, length, start) = addresses(slots(n))
            found(slots(n)) = tile(view, version, k, length, start, value, hash(view, version, k))
          }
        }
      }
    }
    found
  }

  /** The tiles of one hash. */
  private def tilesOf(q: TileQuery, key: EntityKey, fields: java.util.Map[Array[Byte], Array[Byte]]): Seq[Tile] = {
    val h = hash(q.view, q.version, key)
    fields.asScala.iterator.map { case (f, value) =>
      val (length, start) = parseField(new String(f, US_ASCII), h)
      tile(q.view, q.version, key, length, start, value, h)
    }.toSeq
  }

  /** A tile from its field's value: the stamp, then the payload. */
  private def tile(view: String, version: Int, key: EntityKey, length: Long, start: Long, value: Array[Byte], h: String): Tile = {
    if (value.length < StampBytes) throw new OnlineStoreException(s"Redis online store at $where: hash $h has tile " +
      s"field '$length:$start' of ${value.length} bytes, too short for a stamp: it was not written by tally; prune the " +
      "view version or delete the hash")
    Tile(view, version, key, start, length, java.util.Arrays.copyOfRange(value, StampBytes, value.length),
      java.nio.ByteBuffer.wrap(value, 0, StampBytes).getLong)
  }

  private def parseField(name: String, hashKey: String): (Long, Long) = name.split(':') match {
    case Array(l, s) if l.toLongOption.isDefined && s.toLongOption.isDefined => (l.toLong, s.toLong)
    case _ => throw new OnlineStoreException(s"Redis online store at $where: hash $hashKey has field '$name', not " +
      "<lengthUs>:<startUs>: it was not written by tally; delete the hash")
  }

  def watermark(view: String, version: Int): Option[Long] = io("read a watermark") {
    Option(client.zscore(watermarks, s"$view:$version")).map(_.longValue)
  }

  protected def raiseWatermark(view: String, version: Int, eventUs: Long): Unit = io("raise a watermark") {
    client.zadd(watermarks, eventUs.toDouble, s"$view:$version", ZAddParams.zAddParams().gt())
  }

  def lastBatch(stream: String): Option[Long] = io("read a stream's last batch")(Option(client.hget(batches, stream)).map(_.toLong))

  protected def setBatch(stream: String, batchId: Long): Unit = io("record a stream's batch") {
    client.hset(batches, stream, batchId.toString)
  }

  /** SCANs the view version's hashes (on every Cluster node) and deletes old fields: a maintenance call, not a
    * request path. A hash whose last field goes is deleted by Redis itself. */
  protected def pruneTiles(view: String, version: Int, beforeUs: Long): Long = io("prune tiles") {
    val scan = client.scanIteration(ScanCount, s"$namespace:{$view:$version:*")
    var removed = 0L
    while (!scan.isIterationCompleted) {
      val hashes = scan.nextBatchList().asScala.toSeq
      val old = withPipeline { p =>
        val names = hashes.map(h => h -> p.hkeys(h))
        p.sync()
        names.map { case (h, fields) =>
          h -> fields.get.asScala.toSeq.filter { f =>
            val (length, start) = parseField(f, h); start + length <= beforeUs
          }
        }.filter(_._2.nonEmpty)
      }
      if (old.nonEmpty) withPipeline { p =>
        val deleted = old.map { case (h, fields) => p.hdel(h, fields: _*) }
        p.sync()
        removed += deleted.map(_.get.longValue).sum
      }
    }
    removed
  }

  /** SCANs the view version's hashes (on every Cluster node), as [[pruneTiles]] does: a recovery call. */
  protected def stampedTiles(view: String, version: Int, stamp: Long): Seq[Tile] = io("read stamped tiles") {
    val prefix = s"$namespace:{$view:$version:"
    val scan = client.scanIteration(ScanCount, prefix + "*")
    val wanted = stampBytes(stamp)
    val out = Seq.newBuilder[Tile]
    while (!scan.isIterationCompleted) {
      val hashes = scan.nextBatchList().asScala.toSeq
      withPipeline { p =>
        val all = hashes.map(h => h -> p.hgetAll(h.getBytes(UTF_8)))
        p.sync()
        all.foreach { case (h, fields) =>
          val key = EntityKey.decode(h.substring(prefix.length, h.length - 1))
          fields.get.asScala.foreach { case (f, value) =>
            if (value.length >= StampBytes && java.util.Arrays.equals(value, 0, StampBytes, wanted, 0, StampBytes)) {
              val (length, start) = parseField(new String(f, US_ASCII), h)
              out += tile(view, version, key, length, start, value, h)
            }
          }
        }
      }
    }
    out.result()
  }

  def close(): Unit = { client.close(); release() }

  private def withPipeline[A](f: AbstractPipeline => A): A = Using.resource(newPipeline())(f)

  private def io[A](what: String)(f: => A): A =
    try f
    catch {
      case e: JedisException => throw new OnlineStoreException(s"the Redis online store at $where could not $what: " +
        s"${e.getMessage}. Is Redis running there (redis-server; `make setup` installs it)?", e)
    }
}

object RedisStore {
  /** A store on one Redis server (the client keeps a connection pool; the store is thread-safe). */
  def apply(host: String, port: Int, namespace: String = "tally"): RedisStore = {
    checkNamespace(namespace)
    val client = RedisClient.create(host, port)
    connecting(s"$host:$port", client, () => ())(new RedisStore(client, () => client.pipelined(), s"$host:$port", namespace, () => ()))
  }

  /** A store on a Redis Cluster, found from any of its nodes. Pipelines go to every node concerned at once, on a
    * small pool of threads kept for the store's life. */
  def cluster(nodes: Seq[(String, Int)], namespace: String = "tally"): RedisStore = {
    require(nodes.nonEmpty, "a Redis Cluster store needs at least one node address")
    checkNamespace(namespace)
    val where = "cluster " + nodes.map { case (h, p) => s"$h:$p" }.mkString(",")
    val client = try RedisClusterClient.create(nodes.map { case (h, p) => new HostAndPort(h, p) }.toSet.asJava)
    catch { case e: JedisException => throw unreachable(where, e) }
    val syncs: ExecutorService = Executors.newFixedThreadPool(4, (r: Runnable) => {
      val t = new Thread(r, "tally-redis-cluster-sync"); t.setDaemon(true); t
    })
    val release = () => { syncs.shutdown(); () }
    connecting(where, client, release)(new RedisStore(client, () => client.pipelined(syncs), where, namespace, release))
  }

  /** Checks the server answers before handing out the store, so a wrong address fails at open, not mid-request. */
  private def connecting(where: String, client: UnifiedJedis, release: () => Unit)(store: => RedisStore): RedisStore =
    try { client.ping(); store }
    catch { case e: JedisException => client.close(); release(); throw unreachable(where, e) }

  private def unreachable(where: String, e: JedisException) = new OnlineStoreException(
    s"cannot reach the Redis online store at $where: ${e.getMessage}. Start Redis there (redis-server), or point " +
      "tally's online store at a running one", e)

  private def checkNamespace(ns: String): Unit =
    require(Namespace.matches(ns), s"Redis namespace '$ns' must match ${Namespace.regex}")

  private val Namespace = "[A-Za-z0-9_.-]+".r
  private val StampBytes = 8
  private val WriteChunk = 1000
  private val ScanCount = 1000

  private def field(lengthUs: Long, startUs: Long): Array[Byte] = s"$lengthUs:$startUs".getBytes(US_ASCII)

  private def stampBytes(stamp: Long): Array[Byte] = java.nio.ByteBuffer.allocate(StampBytes).putLong(stamp).array()

  /** The stamp rule, atomic per hash: ARGV holds (field, stamp, value) triples, the value being the stamp and the
    * payload; a tile whose stored value starts with the incoming stamp is left as it is. Returns how many tiles
    * were written. */
  private val WriteScript: Array[Byte] =
    """local applied = 0
      |for i = 1, #ARGV, 3 do
      |  local stored = redis.call('HGET', KEYS[1], ARGV[i])
      |  if not stored or string.sub(stored, 1, 8) ~= ARGV[i + 1] then
      |    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2])
      |    applied = applied + 1
      |  end
      |end
      |return applied""".stripMargin.getBytes(UTF_8)
}

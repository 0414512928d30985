package tally.online

import java.nio.file.Paths

/** Opens an online store from its URL, the one string that names a store across the crossing (Python's
  * `online_store` setting, `tally serve --store`, the bridge's calls):
  *
  *   - `sqlite:/absolute/path/tally.db` — [[SqliteStore]]; the file and its folders are created if missing
  *   - `redis://host:port` or `redis://host:port/namespace` — [[RedisStore]] on one server
  *   - `redis-cluster://host1:port1,host2:port2` — [[RedisStore.cluster]], from any nodes of the cluster
  *
  * A relative SQLite path is refused: the JVM and the process that wrote the URL need not share a working folder. */
object Stores {
  val Forms: String = "sqlite:/absolute/path/tally.db, redis://host:port, redis://host:port/namespace or " +
    "redis-cluster://host1:port1,host2:port2"

  private val Sqlite = "sqlite:(.+)".r
  private val Redis = """redis://([^/]+)(?:/([^/]*))?""".r
  private val Cluster = "redis-cluster://(.+)".r

  def open(url: String): OnlineStore = url match {
    case Sqlite(path) =>
      val p = Paths.get(path)
      if (!p.isAbsolute) bad(url, s"the SQLite path '$path' is relative")
      SqliteStore(p)
    case Redis(node, ns) =>
      val (host, port) = address(url, node)
      if (ns == null) RedisStore(host, port)
      else if (ns.isEmpty) bad(url, "the namespace after '/' is empty")
      else RedisStore(host, port, ns)
    case Cluster(nodes) => RedisStore.cluster(nodes.split(",", -1).toSeq.map(address(url, _)))
    case _ => bad(url, "unknown form")
  }

  private val HostPort = """(\[[^\]]+\]|[^:\[\]]+):(\d{1,5})""".r

  private def address(url: String, node: String): (String, Int) = node match {
    case HostPort(host, port) if (1 to 65535).contains(port.toInt) => (host.stripPrefix("[").stripSuffix("]"), port.toInt)
    case _ => bad(url, s"'$node' is not host:port")
  }

  private def bad(url: String, why: String): Nothing =
    throw new IllegalArgumentException(s"online store URL '$url': $why; tally opens $Forms")
}

package tally.online

import java.io.File
import java.net.{InetAddress, ServerSocket}
import java.nio.charset.StandardCharsets.UTF_8
import java.nio.file.{Files, Path, Paths}
import java.util.Comparator

import redis.clients.jedis.{Jedis, Protocol}

import scala.util.Try

/** A real `redis-server` for tests: on 127.0.0.1, a free port, its own temporary folder, no persistence (no RDB
  * snapshots, no AOF). Started ready (it answered PING), stopped with its folder removed. A machine without
  * redis-server fails the tests that need it, with the fix: CI must run the Redis tests, never skip them. */
final class RedisServer private (val port: Int, val dir: Path, process: Process) {
  def host: String = "127.0.0.1"

  /** A plain connection, to look at the layout or flush between tests. */
  def connection(): Jedis = new Jedis(host, port)

  def flushAll(): Unit = { val j = connection(); try j.flushAll() finally j.close() }

  def stop(): Unit = {
    process.destroy() // SIGTERM: redis-server shuts down at once (nothing to save)
    if (!process.waitFor(10, java.util.concurrent.TimeUnit.SECONDS)) { process.destroyForcibly(); process.waitFor() }
    RedisServer.delete(dir)
  }
}

object RedisServer {
  /** Where redis-server is: on the PATH, else in Debian's folder. */
  def binary(path: String = System.getenv("PATH"), fallbacks: Seq[String] = Seq("/usr/bin", "/usr/sbin", "/usr/local/bin")): Path =
    (Option(path).toSeq.flatMap(_.split(File.pathSeparator)) ++ fallbacks)
      .map(d => Paths.get(d, "redis-server")).find(Files.isExecutable)
      .getOrElse(throw new AssertionError(
        "redis-server is not installed, and the Redis online-store tests need a real one: run `make setup` (it " +
          "installs the Debian package redis-server), or `apt-get install redis-server`"))

  def start(extra: Seq[String] = Nil): RedisServer = {
    val bin = binary()
    // A free port can be taken between our probe and redis-server's bind: try a few.
    val attempts = Iterator.range(0, 5).map(_ => tryStart(bin, freePort(), extra))
    attempts.collectFirst { case Right(s) => s }.getOrElse(throw new AssertionError("redis-server did not start after 5 tries"))
  }

  /** `n` servers joined into one Redis Cluster (no replicas), the slots split evenly, ready when every node says
    * cluster_state:ok. */
  def cluster(n: Int = 3): Seq[RedisServer] = {
    val nodes = (0 until n).map(_ => start(Seq("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
      "--cluster-node-timeout", "5000")))
    try {
      val per = 16384 / n
      nodes.zipWithIndex.foreach { case (node, i) =>
        val hi = if (i == n - 1) 16383 else (i + 1) * per - 1
        command(node, "ADDSLOTSRANGE", (i * per).toString, hi.toString)
      }
      nodes.tail.foreach(node => command(nodes.head, "MEET", node.host, node.port.toString))
      val deadline = System.nanoTime() + 30L * 1000000000L
      def ready = nodes.forall { node =>
        val info = command(node, "INFO")
        info.contains("cluster_state:ok") && info.contains(s"cluster_known_nodes:$n")
      }
      while (!ready) {
        if (System.nanoTime() > deadline) throw new AssertionError(s"the test Redis Cluster of $n nodes did not become ready in 30 s")
        Thread.sleep(50)
      }
      nodes
    } catch { case e: Throwable => nodes.foreach(_.stop()); throw e }
  }

  private def command(node: RedisServer, args: String*): String = {
    val j = node.connection()
    try j.sendCommand(Protocol.Command.CLUSTER, args: _*) match {
      case b: Array[Byte] => new String(b, UTF_8)
      case other => String.valueOf(other)
    } finally j.close()
  }

  private def tryStart(bin: Path, port: Int, extra: Seq[String]): Either[String, RedisServer] = {
    val dir = Files.createTempDirectory("tally-redis-")
    val log = dir.resolve("redis.log")
    val args = Seq(bin.toString, "--port", port.toString, "--bind", "127.0.0.1", "--dir", dir.toString,
      "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", log.toString) ++ extra
    val process = new ProcessBuilder(args: _*).redirectErrorStream(true).redirectOutput(dir.resolve("stdout").toFile).start()
    val server = new RedisServer(port, dir, process)
    val deadline = System.nanoTime() + 10L * 1000000000L
    while (System.nanoTime() < deadline) {
      if (!process.isAlive) {
        val why = Try(new String(Files.readAllBytes(log), UTF_8)).getOrElse("") +
          Try(new String(Files.readAllBytes(dir.resolve("stdout")), UTF_8)).getOrElse("")
        delete(dir)
        return Left(why)
      }
      val answered = Try { val j = server.connection(); try j.ping() finally j.close() }.toOption.contains("PONG")
      if (answered) return Right(server)
      Thread.sleep(20)
    }
    server.stop()
    throw new AssertionError(s"redis-server on port $port did not answer PING within 10 s")
  }

  private def freePort(): Int = {
    val s = new ServerSocket(0, 1, InetAddress.getLoopbackAddress)
    try s.getLocalPort finally s.close()
  }

  def delete(dir: Path): Unit =
    if (Files.exists(dir)) Files.walk(dir).sorted(Comparator.reverseOrder[Path]()).forEach(p => Files.deleteIfExists(p))
}

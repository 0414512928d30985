package tally.online

import java.io.{IOException, InputStream}
import java.net.InetSocketAddress
import java.nio.ByteBuffer
import java.nio.charset.{CharacterCodingException, CodingErrorAction}
import java.nio.charset.StandardCharsets.UTF_8
import java.nio.file.{Files, Path, Paths}
import java.util.concurrent.{ExecutorService, Executors, TimeUnit}
import java.util.concurrent.atomic.AtomicInteger

import com.sun.net.httpserver.{HttpExchange, HttpHandler, HttpServer}

import scala.jdk.CollectionConverters._
import scala.util.Using
import scala.util.control.NonFatal

/** `tally serve`: online features over HTTP, on the JDK's HttpServer with a fixed pool of worker threads.
  *
  *   - `GET /health`    the served views, their versions and the store's watermarks
  *   - `POST /features` one row or a batch: see [[Requests]] for the body, [[Responses]] for the answer
  *
  * Every answer is JSON. What the caller got wrong is a 4xx naming the culprit (400 bad request, 404 unknown path,
  * 405 wrong method, 413 body over [[Server.MaxBodyBytes]]); a store that cannot answer (Redis down) is a 503 with
  * the store's message; anything else is a 500 `internal error: <class>: <message>`, its stack trace on stderr only. */
final class Server private (http: HttpServer, pool: ExecutorService, val views: Seq[OnlineView]) {
  /** The port bound (the free one chosen when started on port 0). */
  def port: Int = http.getAddress.getPort

  /** Stops listening, gives exchanges in flight up to `graceSeconds` to finish, and ends the worker threads. The
    * store stays open: it belongs to whoever opened it. (The JDK's server waits out the whole grace, so tests pass 0.) */
  def stop(graceSeconds: Int = 0): Unit = {
    http.stop(graceSeconds)
    pool.shutdown()
    pool.awaitTermination(10, TimeUnit.SECONDS)
  }
}

object Server {
  // TCP_NODELAY on every connection. The JDK server writes a response's headers and body separately; with Nagle's
  // algorithm on, a keep-alive client's delayed ACK then stalls each response ~40 ms (measured: 175 requests/s at
  // any load). The JDK reads this property once, when its server classes load, so it is set before any is created.
  if (System.getProperty("sun.net.httpserver.nodelay") == null) System.setProperty("sun.net.httpserver.nodelay", "true")

  val MaxBodyBytes: Int = 1 << 20
  val DefaultHost = "127.0.0.1"
  val DefaultPort = 8765
  val DefaultThreads = 8
  val Usage = s"usage: tally serve --store URL --views DIR [--host $DefaultHost] [--port $DefaultPort] [--threads $DefaultThreads]"

  /** Serves the newest version of each view in `views` from `store`, on `host:port` (0: a free port). */
  def start(store: OnlineStore, views: Seq[OnlineView], host: String, port: Int, threads: Int): Server = {
    require(threads >= 1, s"tally serve needs at least one worker thread, got $threads")
    Requests.checkKeyTypes(views)
    val fetcher = new Fetcher(store, views)
    val http = HttpServer.create(new InetSocketAddress(host, port), 0)
    val n = new AtomicInteger()
    val pool = Executors.newFixedThreadPool(threads, (r: Runnable) => new Thread(r, s"tally-serve-${n.incrementAndGet()}"))
    http.setExecutor(pool)
    http.createContext("/", new Handler(store, fetcher))
    http.start()
    new Server(http, pool, fetcher.served)
  }

  def main(args: Array[String]): Unit = {
    val o = try options(args.toList) catch { case e: IllegalArgumentException => fail(2, s"${e.getMessage}\n$Usage") }
    val views = try loadViews(o.views) catch { case e: IllegalArgumentException => fail(1, e.getMessage) }
    val store = try Stores.open(o.store) catch {
      case e @ (_: IllegalArgumentException | _: OnlineStoreException) => fail(1, e.getMessage)
    }
    val server = try start(store, views, o.host, o.port, o.threads) catch {
      case e: IOException              => store.close(); fail(1, s"cannot listen on ${o.host}:${o.port}: ${e.getMessage}")
      case e: IllegalArgumentException => store.close(); fail(1, e.getMessage)
    }
    // SIGTERM and SIGINT run shutdown hooks: stop taking requests, let those in flight end, then release the store.
    Runtime.getRuntime.addShutdownHook(new Thread(() => { server.stop(graceSeconds = 1); store.close() }, "tally-serve-stop"))
    val names = if (server.views.isEmpty) "none" else server.views.map(_.spec.view).mkString(", ")
    val shownHost = if (o.host.contains(':')) s"[${o.host}]" else o.host
    System.out.println(s"tally serve: listening on http://$shownHost:${server.port} (${server.views.size} views: $names)")
    System.out.flush()
  }

  /** Every serving spec (`*.json`) in `dir`, each version as found; the fetcher serves the newest of each view. A
    * file that does not parse, or two files for one view version, stop the server from starting, naming them. */
  def loadViews(dir: Path): Seq[OnlineView] = {
    if (!Files.isDirectory(dir)) throw new IllegalArgumentException(s"--views $dir is not a folder of serving specs (*.json)")
    val files = Using.resource(Files.list(dir))(_.iterator.asScala.toSeq)
      .filter(f => f.getFileName.toString.endsWith(".json") && Files.isRegularFile(f)).sortBy(_.toString)
    val parsed = files.map { f =>
      f -> (try OnlineView.parse(Files.readString(f, UTF_8)) catch {
        case NonFatal(e) => throw new IllegalArgumentException(s"serving spec $f: ${Option(e.getMessage).getOrElse(e.getClass.getName)}", e)
      })
    }
    parsed.groupBy { case (_, v) => (v.spec.view, v.spec.version) }.toSeq.sortBy(_._1).foreach { case ((view, version), same) =>
      if (same.size > 1) throw new IllegalArgumentException(
        s"serving specs ${same.map(_._1).mkString(" and ")} are both view '$view' version $version: keep one")
    }
    parsed.map(_._2)
  }

  private final case class Options(store: String, views: Path, host: String, port: Int, threads: Int)

  private def options(args: List[String]): Options = {
    val flags = Set("--store", "--views", "--host", "--port", "--threads")
    def loop(rest: List[String], seen: Map[String, String]): Map[String, String] = rest match {
      case f :: _ if flags(f) && seen.contains(f) => throw new IllegalArgumentException(s"$f given twice")
      case f :: v :: tail if flags(f)             => loop(tail, seen + (f -> v))
      case f :: Nil if flags(f)                   => throw new IllegalArgumentException(s"$f needs a value")
      case other :: _                             => throw new IllegalArgumentException(s"unknown argument '$other'")
      case Nil                                    => seen
    }
    val m = loop(args, Map.empty)
    def required(f: String) = m.getOrElse(f, throw new IllegalArgumentException(s"$f is required"))
    def int(f: String, default: Int, lo: Int, hi: Int) = m.get(f).fold(default) { v =>
      v.toIntOption.filter(i => i >= lo && i <= hi).getOrElse(throw new IllegalArgumentException(s"$f must be an integer from $lo to $hi, got '$v'"))
    }
    Options(required("--store"), Paths.get(required("--views")), m.getOrElse("--host", DefaultHost),
      int("--port", DefaultPort, 0, 65535), int("--threads", DefaultThreads, 1, 1024))
  }

  private def fail(code: Int, message: String): Nothing = {
    System.err.println(s"tally serve: $message")
    sys.exit(code)
  }

  /** One exchange: route, answer JSON, map exceptions to statuses in this one place. */
  private final class Handler(store: OnlineStore, fetcher: Fetcher) extends HttpHandler {
    def handle(ex: HttpExchange): Unit = try {
      val (status, body) = try route(ex) catch {
        case e: BadRequest           => (e.status, Responses.error(e.getMessage))
        case e: FetchException       => (400, Responses.error(e.getMessage))
        case e: OnlineStoreException =>
          System.err.println(s"tally serve: ${ex.getRequestMethod} ${ex.getRequestURI.getPath}: ${e.getMessage}")
          (503, Responses.error(e.getMessage))
        case NonFatal(e) =>
          System.err.println(s"tally serve: internal error on ${ex.getRequestMethod} ${ex.getRequestURI.getPath}")
          e.printStackTrace()
          (500, Responses.error(s"internal error: ${e.getClass.getName}: ${e.getMessage}"))
      }
      val bytes = body.getBytes(UTF_8)
      ex.getResponseHeaders.set("Content-Type", "application/json")
      if (ex.getRequestMethod == "HEAD") ex.sendResponseHeaders(status, -1)
      else { ex.sendResponseHeaders(status, bytes.length.toLong); ex.getResponseBody.write(bytes) }
    } catch {
      case _: IOException => () // the client went away; nothing to answer
    } finally ex.close()

    private def route(ex: HttpExchange): (Int, String) = ex.getRequestURI.getPath match {
      case "/health"   => only(ex, "GET"); (200, Responses.health(store, fetcher.served))
      case "/features" => only(ex, "POST"); (200, Requests.answer(fetcher, body(ex)))
      case other       => throw new BadRequest(s"no endpoint '$other': tally serve answers GET /health and POST /features", 404)
    }

    private def only(ex: HttpExchange, method: String): Unit = if (ex.getRequestMethod != method) {
      ex.getResponseHeaders.set("Allow", method)
      throw new BadRequest(s"${ex.getRequestURI.getPath} takes $method, not ${ex.getRequestMethod}", 405)
    }

    /** The body as UTF-8 text, at most MaxBodyBytes. A larger one is read on (up to a limit) and dropped, so that
      * the client, still sending, reads the 413 instead of a reset connection. */
    private def body(ex: HttpExchange): String = {
      val declared = Option(ex.getRequestHeaders.getFirst("Content-Length")).flatMap(_.toLongOption)
      val in = ex.getRequestBody
      val bytes = if (declared.exists(_ > MaxBodyBytes)) null else in.readNBytes(MaxBodyBytes + 1)
      if (bytes == null || bytes.length > MaxBodyBytes) {
        drain(in)
        throw new BadRequest(s"the body is over ${MaxBodyBytes / 1024 / 1024} MB" +
          s"${declared.fold("")(n => s" ($n bytes)")}; send fewer rows per request (at most ${Requests.MaxRows})", 413)
      }
      try UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT).onUnmappableCharacter(CodingErrorAction.REPORT)
        .decode(ByteBuffer.wrap(bytes)).toString
      catch { case _: CharacterCodingException => throw new BadRequest("the body is not UTF-8 text") }
    }
  }

  private val DrainBytes = 16L * MaxBodyBytes

  private def drain(in: InputStream): Unit = {
    val buf = new Array[Byte](64 * 1024)
    var left = DrainBytes
    var n = 0
    while (left > 0 && { n = in.read(buf, 0, math.min(buf.length.toLong, left).toInt); n >= 0 }) left -= n
  }
}

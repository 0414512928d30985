package tally.online

import java.net.URI
import java.net.http.{HttpClient, HttpRequest, HttpResponse}
import java.nio.charset.StandardCharsets.UTF_8
import java.nio.file.{Files, Path}
import java.time.{Duration, Instant, LocalDate}
import java.util.concurrent.{Callable, Executors, TimeUnit}

import com.fasterxml.jackson.databind.{JsonNode, ObjectMapper}

import scala.jdk.CollectionConverters._

/** `tally serve` over real HTTP, on a real SQLite store (and once on a real redis-server): tiles built by the
  * [[TileBuilder]], requests sent with the JDK's HttpClient. Checks what a client sees: the status, that every
  * answer is JSON, that a refusal names its culprit and never carries a stack trace, and the encoding of every
  * kernel type. */
class ServerSuite extends munit.FunSuite {
  import ServerSuite._

  private var dir: Path = _
  private var store: SqliteStore = _
  private var server: Server = _
  private val client = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).connectTimeout(Duration.ofSeconds(5)).build()

  override def beforeAll(): Unit = {
    dir = Files.createTempDirectory("tally-serve-")
    store = SqliteStore(dir.resolve("online").resolve("tally.db"))
    load(store)
    server = Server.start(store, Views, "127.0.0.1", 0, threads = 4)
  }

  override def afterAll(): Unit = {
    if (server != null) server.stop()
    if (store != null) store.close()
    tally.bridge.Bridge.closeStores()
    RedisServer.delete(dir)
  }

  // ---- HTTP

  final case class Answer(status: Int, contentType: String, allow: Option[String], body: String) {
    lazy val json: JsonNode = mapper.readTree(body)
    def error: String = json.path("error").asText
  }

  private def send(method: String, path: String, body: Array[Byte] = null, port: Int = server.port): Answer = {
    val publisher = if (body == null) HttpRequest.BodyPublishers.noBody() else HttpRequest.BodyPublishers.ofByteArray(body)
    val request = HttpRequest.newBuilder(URI.create(s"http://127.0.0.1:$port$path")).timeout(Duration.ofSeconds(30))
      .method(method, publisher).build()
    val r = client.send(request, HttpResponse.BodyHandlers.ofString(UTF_8))
    Answer(r.statusCode, r.headers.firstValue("Content-Type").orElse(""), Option(r.headers.firstValue("Allow").orElse(null)), r.body)
  }

  private def post(body: String, port: Int = server.port): Answer = send("POST", "/features", body.getBytes(UTF_8), port)

  private def ok(a: Answer): JsonNode = {
    assertEquals(a.status, 200, a.body)
    assertEquals(a.contentType, "application/json")
    a.json
  }

  /** A refusal: its status, JSON with an `error` naming every culprit given, and no trace of the server's insides. */
  private def refused(a: Answer, status: Int, naming: String*): Unit = {
    assertEquals(a.status, status, a.body)
    assertEquals(a.contentType, "application/json")
    assertEquals(a.json.properties().iterator().asScala.map(_.getKey).toSeq, Seq("error"), a.body)
    naming.foreach(n => assert(a.error.contains(n), s"the error does not name $n: ${a.error}"))
    assert(!a.body.contains("at tally.") && !a.body.contains("\tat "), a.body)
    // A 503 carries the store's message, which may quote its driver's exception; a 4xx speaks of the request only.
    if (status < 500) assert(!a.body.contains("Exception"), a.body)
  }

  private val card1 = """{"card_id": "c_1"}"""

  // ---- health

  test("GET /health: status ok, each view with its version and the store's watermark (null before any load)") {
    val h = ok(send("GET", "/health"))
    assertEquals(h.path("status").asText, "ok")
    assertEquals(h.path("views").elements().asScala.map(_.toString).toSeq, Seq(
      s"""{"view":"card_velocity","version":2,"watermark_us":${T0 + 3 * M + 123}}""",
      """{"view":"merchant_risk","version":1,"watermark_us":null}""",
      s"""{"view":"typed","version":1,"watermark_us":${T0 + M}}"""))
  }

  test("the server serves the newest version of each view it is given") {
    assertEquals(server.views.map(v => v.spec.view -> v.spec.version), Seq("card_velocity" -> 2, "merchant_risk" -> 1, "typed" -> 1))
  }

  // ---- good requests

  test("one row: at in ISO UTC with microseconds, values in request order, Spark type names") {
    val r = ok(post(s"""{"features": ["card_velocity:last_merchant", "card_velocity:count_1h"], "entities": $card1,
                       |"at": "2024-03-01T00:30:00.5Z"}""".stripMargin))
    assertEquals(r.properties().iterator().asScala.map(_.getKey).toSeq, Seq("at", "values", "types"), r.toString)
    assertEquals(r.path("at").asText, "2024-03-01T00:30:00.500000Z")
    assertEquals(r.path("values").toString, """{"card_velocity:last_merchant":"m_9","card_velocity:count_1h":3}""")
    assertEquals(r.path("types").toString, """{"card_velocity:last_merchant":"string","card_velocity:count_1h":"bigint"}""")
  }

  test("every kernel type is encoded as documented: NaN and infinities as strings, decimals exact, ISO timestamps, arrays, structs") {
    val r = ok(post(s"""{"features": ["card_velocity"], "entities": $card1, "at": "2024-03-01T01:30:00+01:00"}"""))
    assertEquals(r.path("at").asText, "2024-03-01T00:30:00.000000Z")
    assertEquals(r.path("values").toString,
      """{"card_velocity:count_1h":3,"card_velocity:score_sum":"NaN","card_velocity:score_min":"-Infinity",""" +
        """"card_velocity:score_max":"NaN","card_velocity:fee_sum":"12.50","card_velocity:last_merchant":"m_9",""" +
        """"card_velocity:last_flag":true,"card_velocity:last_seen":"2024-03-01T00:03:00.000123Z",""" +
        """"card_velocity:recent":["m_9","m_1"],"card_velocity:top":[{"item":"m_1","count":2},{"item":"m_9","count":1}]}""")
    assertEquals(r.path("types").toString,
      """{"card_velocity:count_1h":"bigint","card_velocity:score_sum":"double","card_velocity:score_min":"double",""" +
        """"card_velocity:score_max":"double","card_velocity:fee_sum":"decimal(38,2)","card_velocity:last_merchant":"string",""" +
        """"card_velocity:last_flag":"boolean","card_velocity:last_seen":"timestamp","card_velocity:recent":"array<string>",""" +
        """"card_velocity:top":"array<struct<item:string,count:bigint>>"}""")
    // Finite doubles are JSON numbers; +Infinity is a string.
    val c2 = ok(post("""{"features": ["card_velocity:score_min", "card_velocity:score_max"], "entities": {"card_id": "c_2"}, "at": 1709253000000000}"""))
    assertEquals(c2.path("values").toString, """{"card_velocity:score_min":2.0,"card_velocity:score_max":"Infinity"}""")
  }

  test("an entity without tiles: counts are 0, other values null; an absent 'at' is now") {
    val before = Requests.nowUs()
    val r = ok(post("""{"features": ["card_velocity:count_1h", "card_velocity:last_merchant"], "entities": {"card_id": "c_9"}}"""))
    assertEquals(r.path("values").toString, """{"card_velocity:count_1h":0,"card_velocity:last_merchant":null}""")
    val at = Instant.parse(r.path("at").asText)
    assert(!at.isBefore(Instant.ofEpochSecond(0, before * 1000)) && !at.isAfter(Instant.now()), at)
    assert(r.path("at").asText.matches("""\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z"""), r.path("at").asText)
  }

  test("a window excludes what is out of it: an hour later the 1h count is 0, the 24h count of another view is not") {
    val r = ok(post("""{"features": ["card_velocity:count_1h", "merchant_risk:count_24h"],
                      |"entities": {"card_id": "c_1", "merchant_id": "m_9", "unused": [1]}, "at": "2024-03-01T02:00:00Z"}""".stripMargin))
    assertEquals(r.path("values").toString, """{"card_velocity:count_1h":0,"merchant_risk:count_24h":2}""")
  }

  test("a batch: types once, one {at, values} per row in request order, times as ISO or epoch microseconds") {
    val r = ok(post(
      """{"features": ["card_velocity:count_1h"], "rows": [
        |  {"entities": {"card_id": "c_2"}, "at": 1709253000000000},
        |  {"entities": {"card_id": "c_1"}, "at": "2024-03-01T00:02:30Z"},
        |  {"entities": {"card_id": "c_1"}, "at": "2024-03-01T00:30:00Z"}]}""".stripMargin))
    assertEquals(r.properties().iterator().asScala.map(_.getKey).toSeq, Seq("types", "rows"))
    assertEquals(r.path("types").toString, """{"card_velocity:count_1h":"bigint"}""")
    assertEquals(r.path("rows").toString,
      """[{"at":"2024-03-01T00:30:00.000000Z","values":{"card_velocity:count_1h":2}},""" +
        """{"at":"2024-03-01T00:02:30.000000Z","values":{"card_velocity:count_1h":2}},""" +
        """{"at":"2024-03-01T00:30:00.000000Z","values":{"card_velocity:count_1h":3}}]""")
    assertEquals(ok(post("""{"features": ["card_velocity"], "rows": []}""")).path("rows").toString, "[]")
  }

  test("keys of every Spark type are read as the tiles hold them (a float key is the float, widened)") {
    val keys = """"k_tiny": 7, "k_int": 70000, "k_big": 1099511627776, "k_bool": true, "k_flt": 0.1, "k_dbl": 0.1,
                 |"k_dec": %s, "k_date": "2024-02-29", "k_ts": %s, "k_ntz": "2024-03-01T00:00:00.000001", "k_bin": "AQID"""".stripMargin
    def count(dec: String, ts: String) =
      ok(post(s"""{"features": ["typed"], "entities": {${keys.format(dec, ts)}}, "at": "2024-03-01T00:10:00Z"}""")).path("values").path("typed:n").asLong
    assertEquals(count("\"12.5\"", "\"2024-03-01T01:00:00.000001+01:00\""), 1L)
    assertEquals(count("12.50", "1709251200000001"), 1L)
    assertEquals(count("12.51", "1709251200000001"), 0L) // another key: the value matters
  }

  test("concurrent requests on the worker threads all get their own answers") {
    val pool = Executors.newFixedThreadPool(8)
    try {
      val calls = (0 until 64).map { i =>
        val (card, expected) = if (i % 2 == 0) ("c_1", 3) else ("c_2", 2)
        pool.submit(new Callable[(Long, Int)] {
          def call(): (Long, Int) = (ok(post(s"""{"features": ["card_velocity:count_1h"], "entities": {"card_id": "$card"},
                                              |"at": "2024-03-01T00:30:00Z"}""".stripMargin)).path("values").path("card_velocity:count_1h").asLong, expected)
        })
      }
      calls.foreach { c => val (got, expected) = c.get(60, TimeUnit.SECONDS); assertEquals(got, expected.toLong) }
    } finally pool.shutdown()
  }

  // ---- refusals

  test("malformed bodies: bad JSON, trailing text, duplicate fields, empty, not an object, not UTF-8") {
    refused(post("""{"features": ["card_velocity"], "entities": """), 400, "malformed JSON", "line 1")
    refused(post(s"""{"features": ["card_velocity"], "entities": $card1} {}"""), 400, "malformed JSON")
    refused(post("""{"features": ["a"], "features": ["b"], "entities": {}}"""), 400, "malformed JSON", "features")
    refused(post(""), 400, "empty")
    refused(post("""[{"features": ["card_velocity"]}]"""), 400, "JSON object", "a list")
    refused(post("\"card_velocity\""), 400, "JSON object", "the string \"card_velocity\"")
    refused(send("POST", "/features", Array[Byte](0x7b, 0xff.toByte, 0x7d)), 400, "UTF-8")
  }

  test("'features': missing, not a list, empty, not strings, an unknown view or feature") {
    refused(post(s"""{"entities": $card1}"""), 400, "'features' is missing")
    refused(post(s"""{"features": "card_velocity", "entities": $card1}"""), 400, "'features' must be", "the string \"card_velocity\"")
    refused(post(s"""{"features": [], "entities": $card1}"""), 400, "'features' is empty")
    refused(post(s"""{"features": ["card_velocity", 3], "entities": $card1}"""), 400, "'features'[1]", "the number 3")
    refused(post(s"""{"features": ["card_velocity", "nope"], "entities": $card1}"""), 400, "unknown view 'nope'", "card_velocity, merchant_risk, typed")
    refused(post(s"""{"features": ["card_velocity:nope"], "entities": $card1}"""), 400, "view 'card_velocity' has no feature 'nope'", "count_1h")
  }

  test("unknown fields are named, at the top and in a batch's rows; 'entities' and 'rows' are one or the other") {
    refused(post(s"""{"features": ["card_velocity"], "entities": $card1, "foo": 1, "limit": 2}"""), 400, "'foo', 'limit'")
    refused(post(s"""{"features": ["card_velocity"], "rows": [{"entities": $card1, "extra": 1}]}"""), 400, "rows[0]", "'extra'")
    refused(post(s"""{"features": ["card_velocity"], "entities": $card1, "rows": []}"""), 400, "both 'entities'", "'rows'")
    refused(post("""{"features": ["card_velocity"]}"""), 400, "neither 'entities'", "'rows'")
    refused(post(s"""{"features": ["card_velocity"], "rows": [], "at": 0}"""), 400, "'at' in each of its 'rows'")
    refused(post(s"""{"features": ["card_velocity"], "rows": {"entities": $card1}}"""), 400, "'rows' must be a list", "an object")
    refused(post("""{"features": ["card_velocity"], "rows": [{"at": 0}]}"""), 400, "rows[0]", "'entities' is missing")
    refused(post("""{"features": ["card_velocity"], "rows": [7]}"""), 400, "rows[0]", "the number 7")
    refused(post("""{"features": ["card_velocity"], "entities": ["c_1"]}"""), 400, "'entities' must be an object", "a list")
  }

  test("a batch over 10,000 rows is refused") {
    val rows = Seq.fill(Requests.MaxRows + 1)(s"""{"entities": $card1, "at": 0}""").mkString(",")
    refused(post(s"""{"features": ["card_velocity"], "rows": [$rows]}"""), 400, "10001 rows", "at most 10000")
  }

  test("keys: a missing one names the key and the view needing it; a mistyped one the key, its type and the value") {
    refused(post("""{"features": ["card_velocity", "merchant_risk"], "entities": {"card_id": "c_1", "merchant": "m_9"}}"""),
      400, "key 'merchant_id' is missing", "view 'merchant_risk'", "'card_id', 'merchant'")
    refused(post("""{"features": ["card_velocity"], "rows": [{"entities": {"card_id": "c_1"}}, {"entities": {}}]}"""),
      400, "rows[1]", "key 'card_id' is missing", "view 'card_velocity'", "no keys")
    refused(post("""{"features": ["card_velocity"], "entities": {"card_id": 17}}"""), 400, "key 'card_id' (string)", "a JSON string", "the number 17")
    refused(post("""{"features": ["card_velocity"], "entities": {"card_id": null}}"""), 400, "key 'card_id'", "got null")
    def typed(key: String, value: String, naming: String*): Unit = {
      val keys = Map("k_tiny" -> "7", "k_int" -> "1", "k_big" -> "1", "k_bool" -> "true", "k_flt" -> "1", "k_dbl" -> "1",
        "k_dec" -> "1", "k_date" -> "\"2024-01-01\"", "k_ts" -> "0", "k_ntz" -> "0", "k_bin" -> "\"\"") + (key -> value)
      refused(post(s"""{"features": ["typed"], "entities": {${keys.map { case (k, v) => s""""$k": $v""" }.mkString(", ")}}}"""),
        400, s"key '$key'" +: naming: _*)
    }
    typed("k_tiny", "300", "(tinyint)", "from -128 to 127", "the number 300")
    typed("k_int", "1.5", "(int)", "JSON integer", "the number 1.5")
    typed("k_big", "9223372036854775808", "(bigint)", "the number 9223372036854775808")
    typed("k_bool", "\"true\"", "(boolean)", "true or false", "the string \"true\"")
    typed("k_dbl", "\"1.5\"", "(double)", "JSON number", "the string \"1.5\"")
    typed("k_dec", "\"12.345\"", "(decimal(10,2))", "at most 8 digits before the point and 2 after", "\"12.345\"")
    typed("k_dec", "123456789", "(decimal(10,2))", "the number 123456789")
    typed("k_date", "\"2024-02-30\"", "(date)", "YYYY-MM-DD", "\"2024-02-30\"")
    typed("k_ts", "\"2024-03-01T00:00:00\"", "(timestamp)", "has no zone", "2024-03-01T00:00:00Z")
    typed("k_ntz", "\"2024-03-01T00:00:00Z\"", "(timestamp_ntz)", "zone-less")
    typed("k_bin", "\"not base64!\"", "(binary)", "base64", "\"not base64!\"")
  }

  test("'at': a zone-less string, a fraction of a microsecond count, text that is no time, a number out of range") {
    refused(post(s"""{"features": ["card_velocity"], "entities": $card1, "at": "2024-03-01T12:00:00"}"""), 400,
      "'at' \"2024-03-01T12:00:00\" has no zone", "UTC", "2024-03-01T12:00:00Z")
    refused(post(s"""{"features": ["card_velocity"], "entities": $card1, "at": 1.5}"""), 400, "'at' must be", "the number 1.5")
    refused(post(s"""{"features": ["card_velocity"], "entities": $card1, "at": "yesterday"}"""), 400, "'at' must be", "\"yesterday\"")
    refused(post(s"""{"features": ["card_velocity"], "entities": $card1, "at": 99999999999999999999}"""), 400, "'at'", "99999999999999999999")
    refused(post(s"""{"features": ["card_velocity"], "rows": [{"entities": $card1, "at": "2024-03-01"}]}"""), 400, "rows[0]", "'at'", "\"2024-03-01\"")
  }

  test("the transport: an unknown path is 404, a wrong method 405 with Allow, a body over 1 MB 413") {
    refused(send("GET", "/nope"), 404, "'/nope'", "GET /health", "POST /features")
    refused(send("GET", "/health/extra"), 404, "'/health/extra'")
    val get = send("GET", "/features")
    refused(get, 405, "/features", "POST", "not GET")
    assertEquals(get.allow, Some("POST"))
    refused(send("POST", "/health", "{}".getBytes(UTF_8)), 405, "/health", "GET", "not POST")
    val big = s"""{"features": ["card_velocity"], "entities": $card1, "pad": "${"x" * (Server.MaxBodyBytes + 10)}"}"""
    refused(post(big), 413, "over 1 MB")
    // Having refused it, the server still serves.
    ok(send("GET", "/health"))
  }

  // ---- failures that are not the caller's

  test("a store that fails is a 500 naming the exception, its trace on stderr only; the server keeps serving others") {
    val broken = SqliteStore(dir.resolve("broken").resolve("tally.db"))
    val s = Server.start(broken, Views, "127.0.0.1", 0, threads = 1)
    try {
      broken.close()
      val a = post(s"""{"features": ["card_velocity"], "entities": $card1, "at": 0}""", s.port)
      assertEquals(a.status, 500, a.body)
      assertEquals(a.contentType, "application/json")
      assert(a.error.startsWith("internal error: java.lang.IllegalStateException: "), a.error)
      assert(a.error.contains("is closed"), a.error)
      assert(!a.body.contains("\tat ") && !a.body.contains("at tally."), a.body)
    } finally s.stop()
  }

  test("on Redis: the same answers; a Redis that goes away is a 503 naming the store") {
    val redis = RedisServer.start()
    var stopped = false
    try {
      val rs = RedisStore(redis.host, redis.port)
      try {
        load(rs)
        val s = Server.start(rs, Views, "127.0.0.1", 0, threads = 2)
        try {
          val request = s"""{"features": ["card_velocity", "merchant_risk"], "entities": {"card_id": "c_1", "merchant_id": "m_9"}, "at": "2024-03-01T00:30:00Z"}"""
          assertEquals(ok(post(request, s.port)).toString, ok(post(request)).toString)
          assertEquals(ok(send("GET", "/health", port = s.port)).toString, ok(send("GET", "/health")).toString)
          redis.stop(); stopped = true
          refused(post(request, s.port), 503, s"127.0.0.1:${redis.port}", "Redis")
          refused(send("GET", "/health", port = s.port), 503, s"127.0.0.1:${redis.port}")
        } finally s.stop()
      } finally rs.close()
    } finally if (!stopped) redis.stop()
  }

  // ---- the command

  test("loadViews: every *.json of the folder; a bad file or two files of one view version stop it, named") {
    val views = Files.createDirectories(dir.resolve("load"))
    Files.writeString(views.resolve("card_velocity-1.json"), OnlineView.toJson(CardV1))
    Files.writeString(views.resolve("card_velocity-2.json"), OnlineView.toJson(Card))
    Files.writeString(views.resolve("README.txt"), "not a spec")
    assertEquals(Server.loadViews(views).map(v => v.spec.view -> v.spec.version), Seq("card_velocity" -> 1, "card_velocity" -> 2))
    Files.writeString(views.resolve("copy.json"), OnlineView.toJson(Card))
    val twice = intercept[IllegalArgumentException](Server.loadViews(views)).getMessage
    assert(twice.contains("card_velocity-2.json") && twice.contains("copy.json") && twice.contains("version 2"), twice)
    Files.writeString(views.resolve("copy.json"), """{"spec": 1}""")
    val bad = intercept[IllegalArgumentException](Server.loadViews(views)).getMessage
    assert(bad.contains("copy.json"), bad)
    val none = intercept[IllegalArgumentException](Server.loadViews(views.resolve("absent"))).getMessage
    assert(none.contains("absent") && none.contains("not a folder"), none)
  }

  test("tally serve prints one line once listening, serves the newest version of each view, and stops on SIGTERM") {
    val views = Files.createDirectories(dir.resolve("views"))
    Seq(CardV1, Card, Merchant).foreach(v => Files.writeString(views.resolve(s"${v.spec.view}-${v.spec.version}.json"), OnlineView.toJson(v)))
    val run = Serve(dir, "--store", "sqlite:" + dir.resolve("online").resolve("tally.db"), "--views", views.toString,
      "--port", "0", "--threads", "2")
    try {
      val Listening = """tally serve: listening on http://127\.0\.0\.1:(\d+) \(2 views: card_velocity, merchant_risk\)""".r
      val port = run.firstLine() match {
        case Listening(p) => p.toInt
        case other        => fail(s"unexpected first line: $other; stderr: ${run.stderr}")
      }
      val r = ok(post(s"""{"features": ["card_velocity:fee_sum"], "entities": $card1, "at": "2024-03-01T00:30:00Z"}""", port))
      assertEquals(r.path("values").toString, """{"card_velocity:fee_sum":"12.50"}""")
      run.process.destroy() // SIGTERM
      assert(run.process.waitFor(20, TimeUnit.SECONDS), "tally serve did not stop on SIGTERM")
      assertEquals(run.process.exitValue, 143)
      assert(!run.stderr.contains("Exception"), run.stderr)
    } finally run.process.destroyForcibly()
  }

  test("tally serve refuses to start on a bad serving spec (naming the file) or bad arguments (with the usage)") {
    val views = Files.createDirectories(dir.resolve("bad-views"))
    Files.writeString(views.resolve("broken.json"), "{")
    val bad = Serve(dir, "--store", "sqlite:" + dir.resolve("unused.db"), "--views", views.toString)
    assert(bad.process.waitFor(60, TimeUnit.SECONDS))
    assertEquals(bad.process.exitValue, 1)
    assert(bad.stderr.contains("broken.json") && bad.stderr.startsWith("tally serve: "), bad.stderr)
    val usage = Serve(dir, "--store", "sqlite:" + dir.resolve("unused.db"), "--views", views.toString, "--port", "http")
    assert(usage.process.waitFor(60, TimeUnit.SECONDS))
    assertEquals(usage.process.exitValue, 2)
    assert(usage.stderr.contains("--port must be an integer from 0 to 65535, got 'http'") && usage.stderr.contains("usage: tally serve"), usage.stderr)
  }

  // ---- the bridge: the same JSON in process

  test("Bridge.fetch answers as POST /features does, and refuses with the 400's message") {
    val url = "sqlite:" + dir.resolve("online").resolve("tally.db")
    val viewsJson = Views.map(OnlineView.toJson).mkString("[", ",", "]")
    val request = s"""{"features": ["card_velocity", "typed"], "rows": [{"entities": {"card_id": "c_1", "k_tiny": 7, "k_int": 70000,
                     |"k_big": 1099511627776, "k_bool": true, "k_flt": 0.1, "k_dbl": 0.1, "k_dec": 12.5, "k_date": "2024-02-29",
                     |"k_ts": 1709251200000001, "k_ntz": 1709251200000001, "k_bin": "AQID"}, "at": "2024-03-01T00:30:00Z"}]}""".stripMargin
    assertEquals(mapper.readTree(tally.bridge.Bridge.fetch(url, viewsJson, request)), ok(post(request)))
    val bad = s"""{"features": ["card_velocity"], "entities": {"card_id": 17}}"""
    val e = intercept[IllegalArgumentException](tally.bridge.Bridge.fetch(url, viewsJson, bad))
    assertEquals(e.getMessage, post(bad).error)
    assertEquals(tally.bridge.Bridge.onlineStatus(url, "card_velocity", 2), s"""{"watermark_us":${T0 + 3 * M + 123}}""")
    assertEquals(tally.bridge.Bridge.onlineStatus(url, "merchant_risk", 1), """{"watermark_us":null}""")
  }

  test("Bridge keeps one store per URL until closeStores, and reopens after") {
    val url = "sqlite:" + dir.resolve("bridge").resolve("tally.db")
    assertEquals(tally.bridge.Bridge.onlineStatus(url, "card_velocity", 2), """{"watermark_us":null}""")
    // Another client raises the watermark; the cached store reads the same file.
    val other = SqliteStore(dir.resolve("bridge").resolve("tally.db"))
    try other.advanceWatermark("card_velocity", 2, 42L) finally other.close()
    assertEquals(tally.bridge.Bridge.onlineStatus(url, "card_velocity", 2), """{"watermark_us":42}""")
    tally.bridge.Bridge.closeStores()
    assertEquals(tally.bridge.Bridge.onlineStatus(url, "card_velocity", 2), """{"watermark_us":42}""")
  }
}

object ServerSuite {
  /** `tally serve` in its own JVM (this one's classpath), its stdout piped and its stderr in a file. */
  final case class Serve(process: Process, errFile: Path) {
    private val out = new java.io.BufferedReader(new java.io.InputStreamReader(process.getInputStream, UTF_8))
    def firstLine(): String = {
      val line = java.util.concurrent.CompletableFuture.supplyAsync(() => out.readLine())
      try line.get(60, TimeUnit.SECONDS) catch { case _: java.util.concurrent.TimeoutException => s"(nothing within 60 s)" }
    }
    def stderr: String = Files.readString(errFile, UTF_8)
  }
  object Serve {
    def apply(dir: Path, args: String*): Serve = {
      val java = Path.of(System.getProperty("java.home"), "bin", "java").toString
      val err = Files.createTempFile(dir, "serve-", ".err")
      val p = new ProcessBuilder((Seq(java, "-cp", System.getProperty("java.class.path"), "tally.online.Server") ++ args): _*)
        .redirectError(err.toFile).start()
      Serve(p, err)
    }
  }

  val mapper = new ObjectMapper()
  val M: Long = 60L * 1000000L
  val H: Long = 60L * M
  val T0: Long = 1709251200L * 1000000L // 2024-03-01 00:00 UTC

  private def feature(name: String, function: String, column: String = null, lengthUs: Long = H, params: String = "{}") =
    s"""{"name":"$name","function":"$function",${Option(column).fold("")(c => s""""column":"$c",""")}""" +
      s""""window":{"length_us":$lengthUs},"params":$params}"""

  private def view(name: String, version: Int, keys: Seq[(String, String)], columns: Seq[(String, String)], features: Seq[String]): OnlineView = {
    def obj(kv: Seq[(String, String)]) = kv.map { case (k, v) => s""""$k":"$v"""" }.mkString("{", ",", "}")
    val spec = s"""{"spec_version":1,"view":"$name","version":$version,"entity":{"keys":[${keys.map(k => "\"" + k._1 + "\"").mkString(",")}]},""" +
      s""""source":{"timestamp":"ts"},"features":[${features.mkString(",")}]}"""
    OnlineView.parse(s"""{"spec":$spec,"key_types":${obj(keys)},"column_types":${obj(columns)}}""")
  }

  val CardV1: OnlineView = view("card_velocity", 1, Seq("card_id" -> "string"), Nil, Seq(feature("count_1h", "count")))
  val Card: OnlineView = view("card_velocity", 2, Seq("card_id" -> "string"),
    Seq("score" -> "double", "fee" -> "decimal(12,2)", "merchant" -> "string", "flagged" -> "boolean", "paid_at" -> "timestamp"),
    Seq(feature("count_1h", "count"), feature("score_sum", "sum", "score"), feature("score_min", "min", "score"),
      feature("score_max", "max", "score"), feature("fee_sum", "sum", "fee"), feature("last_merchant", "last", "merchant"),
      feature("last_flag", "last", "flagged"), feature("last_seen", "max", "paid_at"),
      feature("recent", "last_k", "merchant", params = """{"k":2}"""), feature("top", "top_k", "merchant", params = """{"k":2}""")))
  val Merchant: OnlineView = view("merchant_risk", 1, Seq("merchant_id" -> "string"), Nil, Seq(feature("count_24h", "count", lengthUs = 24 * H)))
  val Typed: OnlineView = view("typed", 1, Seq("k_tiny" -> "tinyint", "k_int" -> "int", "k_big" -> "bigint", "k_bool" -> "boolean",
    "k_flt" -> "float", "k_dbl" -> "double", "k_dec" -> "decimal(10,2)", "k_date" -> "date", "k_ts" -> "timestamp",
    "k_ntz" -> "timestamp_ntz", "k_bin" -> "binary"), Nil, Seq(feature("n", "count")))
  val Views: Seq[OnlineView] = Seq(CardV1, Card, Merchant, Typed)

  /** Builds and writes the tiles of one view's events, as materialize does, and raises its watermark. */
  private def write(store: OnlineStore, v: OnlineView, events: Seq[(EntityKey, Long, Map[String, Any])], watermark: Boolean): Unit = {
    val layout = v.layout
    val builder = new TileBuilder(layout, v.spec.view, v.spec.version, stamp = 1L)
    events.groupBy(_._1).toSeq.sortBy(_._1.encoded).foreach { case (key, es) =>
      builder.key(key)
      es.sortBy(_._2).foreach { case (_, ts, values) => builder.event(ts, Long.MinValue, layout.columns.map(values(_)).toArray[Any]) }
    }
    builder.finish()
    store.write(builder.tiles())
    if (watermark) store.advanceWatermark(v.spec.view, v.spec.version, events.map(_._2).max)
  }

  def load(store: OnlineStore): Unit = {
    def card(id: String, ts: Long, score: Double, fee: String, merchant: String, flagged: Boolean) =
      (EntityKey.of(id), ts, Map[String, Any]("score" -> score, "fee" -> new java.math.BigDecimal(fee), "merchant" -> merchant,
        "flagged" -> flagged, "paid_at" -> ts))
    write(store, Card, Seq(
      card("c_1", T0 + M, 1.5, "10.25", "m_1", flagged = false),
      card("c_1", T0 + 2 * M, Double.NaN, "2.25", "m_1", flagged = false),
      card("c_1", T0 + 3 * M + 123, Double.NegativeInfinity, "0.00", "m_9", flagged = true),
      card("c_2", T0 + M, 2.0, "1.00", "m_2", flagged = false),
      card("c_2", T0 + 2 * M, Double.PositiveInfinity, "1.00", "m_2", flagged = false)), watermark = true)
    write(store, Merchant, Seq((EntityKey.of("m_9"), T0 + M, Map.empty[String, Any]), (EntityKey.of("m_9"), T0 + 2 * M, Map.empty[String, Any])),
      watermark = false)
    val typedKey = EntityKey.of(7.toByte, 70000, 1099511627776L, true, 0.1f, 0.1d, new java.math.BigDecimal("12.50"),
      LocalDate.parse("2024-02-29"), Instant.parse("2024-03-01T00:00:00.000001Z"), EntityKey.Timestamp(T0 + 1), Array[Byte](1, 2, 3))
    write(store, Typed, Seq((typedKey, T0 + M, Map.empty[String, Any])), watermark = true)
  }
}

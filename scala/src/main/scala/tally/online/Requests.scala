package tally.online

import java.math.{BigDecimal => JDecimal}
import java.time.{Instant, LocalDate, LocalDateTime, OffsetDateTime}
import java.time.format.{DateTimeFormatter, DateTimeParseException}
import java.util.Base64

import com.fasterxml.jackson.core.{JacksonException, StreamReadFeature}
import com.fasterxml.jackson.databind.{DeserializationFeature, JsonNode}
import com.fasterxml.jackson.databind.json.JsonMapper

import scala.jdk.CollectionConverters._

/** A request the caller got wrong, with the HTTP status that says so: 400, or the transport's 404, 405 and 413.
  * An IllegalArgumentException, as [[FetchException]] is, so that the bridge's callers see bad input as such. */
final class BadRequest(message: String, val status: Int = 400) extends IllegalArgumentException(message)

/** The request side of `POST /features`, shared by `tally serve` and the in-process bridge, so that both take the
  * same JSON and refuse it with the same messages:
  *
  * {{{
  * one row:  {"features": ["view", "view:feature", ...], "entities": {"key": value, ...}, "at": time}
  * a batch:  {"features": [...], "rows": [{"entities": {...}, "at": time}, ...]}
  * }}}
  *
  * `time` is an ISO-8601 string with an explicit zone (`Z` or `±hh:mm`) or an integer of epoch microseconds; a
  * string without a zone is refused, not read in some default zone. Absent, it is the time the request is read:
  * one instant for every row of a request. Each key the features' views need is read by its Spark type (see
  * `keyReader`); keys no view needs are ignored. A batch holds at most [[Requests.MaxRows]] rows. */
object Requests {
  val MaxRows = 10000

  /** A parsed request: the feature references, one fetch row per requested row, and its form (for the answer). */
  final case class Request(refs: Seq[String], rows: IndexedSeq[FetchRow], batch: Boolean)

  /** The whole of `POST /features`: parse, fetch, encode. */
  def answer(fetcher: Fetcher, body: String): String = {
    val r = parse(fetcher, body)
    Responses.fetched(fetcher.fetch(r.refs, r.rows), r.rows, r.batch)
  }

  def parse(fetcher: Fetcher, body: String): Request = {
    val root = json(body)
    if (!root.isObject) bad(s"the body must be a JSON object with 'features' and 'entities' (one row) or 'rows' (a batch), got ${describe(root)}")
    unknownFields(root, Set("features", "entities", "at", "rows"), "the request",
      "'features' with 'entities' and 'at' (one row) or 'features' with 'rows' (a batch)")
    val refs = features(root.get("features"))
    val now = nowUs()
    (Option(root.get("entities")), Option(root.get("rows"))) match {
      case (Some(_), Some(_)) => bad("the request has both 'entities' (one row) and 'rows' (a batch): give one of them")
      case (None, None)       => bad("the request has neither 'entities' (one row) nor 'rows' (a batch): give one of them")
      case (Some(entities), None) =>
        val keys = new KeyReader(fetcher, refs)
        Request(refs, IndexedSeq(FetchRow(keys.read(entities, ""), at(root.get("at"), "", now))), batch = false)
      case (None, Some(rows)) =>
        if (root.has("at")) bad("a batch takes 'at' in each of its 'rows', not beside them")
        if (!rows.isArray) bad(s"'rows' must be a list of {\"entities\": {...}, \"at\": time} objects, got ${describe(rows)}")
        if (rows.size > MaxRows) bad(s"'rows' holds ${rows.size} rows; a request takes at most $MaxRows: split it into several")
        val keys = new KeyReader(fetcher, refs)
        val out = rows.elements().asScala.zipWithIndex.map { case (row, i) =>
          val where = s"rows[$i]: "
          if (!row.isObject) bad(s"${where}a row must be an object {\"entities\": {...}, \"at\": time}, got ${describe(row)}")
          unknownFields(row, Set("entities", "at"), s"rows[$i]", "'entities' and 'at'")
          val entities = Option(row.get("entities")).getOrElse(bad(s"${where}'entities' is missing"))
          FetchRow(keys.read(entities, where), at(row.get("at"), where, now))
        }.toIndexedSeq
        Request(refs, out, batch = true)
    }
  }

  /** Refuses serving specs whose key types requests could not give, so that `tally serve` fails at startup. */
  def checkKeyTypes(views: Seq[OnlineView]): Unit = views.foreach { v =>
    v.spec.keys.foreach { k =>
      val t = v.keyTypes.getOrElse(k, throw new IllegalArgumentException(
        s"serving spec of view '${v.spec.view}' v${v.spec.version}: no type for key column '$k'"))
      if (keyReader(t).isEmpty) throw new IllegalArgumentException(
        s"serving spec of view '${v.spec.view}' v${v.spec.version}: key column '$k' has type '$t', which requests " +
          s"cannot give; served key types: $KeyTypes")
    }
  }

  /** The current time in microseconds since the epoch. */
  def nowUs(): Long = micros(Instant.now())

  // ---- the body

  private val mapper = JsonMapper.builder()
    .enable(StreamReadFeature.STRICT_DUPLICATE_DETECTION)
    .enable(DeserializationFeature.USE_BIG_DECIMAL_FOR_FLOATS, DeserializationFeature.FAIL_ON_TRAILING_TOKENS)
    .build()

  private def json(body: String): JsonNode = {
    val root = try mapper.readTree(body) catch {
      case e: JacksonException =>
        val where = Option(e.getLocation).fold("")(l => s" (line ${l.getLineNr}, column ${l.getColumnNr})")
        bad(s"malformed JSON$where: ${e.getOriginalMessage}")
    }
    if (root == null || root.isMissingNode) bad("the body is empty: send a JSON object with 'features' and 'entities' or 'rows'")
    root
  }

  private def unknownFields(node: JsonNode, known: Set[String], what: String, takes: String): Unit = {
    val unknown = node.properties().iterator().asScala.map(_.getKey).filterNot(known).toSeq
    if (unknown.nonEmpty)
      bad(s"unknown field${if (unknown.size > 1) "s" else ""} ${unknown.map(u => s"'$u'").mkString(", ")} in $what; it takes $takes")
  }

  private def features(node: JsonNode): Seq[String] = {
    val what = "a list of \"view\" or \"view:feature\" names"
    if (node == null) bad(s"'features' is missing: give $what")
    if (!node.isArray) bad(s"'features' must be $what, got ${describe(node)}")
    if (node.isEmpty) bad(s"'features' is empty: give $what")
    node.elements().asScala.zipWithIndex.map { case (f, i) =>
      if (f.isTextual) f.textValue else bad(s"'features'[$i] must be a \"view\" or \"view:feature\" name, got ${describe(f)}")
    }.toSeq
  }

  private def at(node: JsonNode, where: String, now: Long): Long =
    if (node == null) now else time(node).fold(why => bad(s"$where'at' $why"), identity)

  // ---- times

  private val TimeForms = "an ISO-8601 time with a zone (2024-03-01T12:00:00.5Z, or an offset such as +01:00) or " +
    "an integer of epoch microseconds"

  /** A time as requests give it (`at`, timestamp keys), in microseconds; Left: what is wrong, after the subject. */
  private def time(node: JsonNode): Either[String, Long] =
    if (node.isIntegralNumber && node.canConvertToLong) Right(node.longValue)
    else if (!node.isTextual) Left(s"must be $TimeForms, got ${describe(node)}")
    else {
      val s = node.textValue
      try Right(micros(OffsetDateTime.parse(s, DateTimeFormatter.ISO_OFFSET_DATE_TIME).toInstant))
      catch {
        case _: DateTimeParseException if parses(LocalDateTime.parse(s)) =>
          Left(s"${quote(s)} has no zone; times are UTC explicitly: write ${s}Z, or give its offset (such as +01:00)")
        case _: DateTimeParseException | _: ArithmeticException => Left(s"must be $TimeForms, got ${describe(node)}")
      }
    }

  private def parses(f: => Any): Boolean = try { f; true } catch { case _: DateTimeParseException => false }

  /** Microseconds of an instant, truncating finer digits as Spark does when it reads a timestamp. */
  private def micros(i: Instant): Long = Math.addExact(Math.multiplyExact(i.getEpochSecond, 1000000L), i.getNano / 1000L)

  // ---- entity keys

  /** Reads one row's entity keys as the referenced views' key types; a missing key names the views needing it. */
  private final class KeyReader(fetcher: Fetcher, refs: Seq[String]) {
    private val columns = fetcher.keyColumns(refs).map { case (k, t) =>
      (k, t, keyReader(t).getOrElse(throw new IllegalStateException(s"no reader for key '$k' of type '$t'")))
    }
    private val referenced = refs.map(_.takeWhile(_ != ':')).toSet
    private val views = fetcher.served.filter(v => referenced(v.spec.view))

    def read(entities: JsonNode, where: String): Map[String, Any] = {
      if (!entities.isObject) bad(s"$where'entities' must be an object of key column -> value, got ${describe(entities)}")
      columns.map { case (k, t, reader) =>
        val node = entities.get(k)
        if (node == null) {
          val needing = views.filter(_.spec.keys.contains(k)).map(v => s"'${v.spec.view}'")
          val gives = entities.properties().iterator().asScala.map(_.getKey).toSeq.sorted
          val who = if (needing.size == 1) s"view ${needing.head} needs" else s"views ${needing.mkString(", ")} need"
          bad(s"${where}key '$k' is missing: $who it; the request gives " +
            s"${if (gives.isEmpty) "no keys" else gives.map(g => s"'$g'").mkString(", ")}")
        }
        k -> reader(node).fold(why => bad(s"${where}key '$k' ($t) $why"), identity)
      }.toMap
    }
  }

  private val KeyTypes = "string, tinyint, smallint, int, bigint, boolean, float, double, decimal(p,s), date, timestamp, timestamp_ntz, binary"
  private val Decimal = """decimal\((\d+),\s*(\d+)\)""".r

  /** The reader of a key column's JSON value, by the column's Spark type (simpleString): the value in the form the
    * fetcher takes ([[FetchRow]]). Left: what is wrong with the value, after the subject. */
  private def keyReader(sparkType: String): Option[JsonNode => Either[String, Any]] = {
    def reader(expected: String)(read: PartialFunction[JsonNode, Any]): JsonNode => Either[String, Any] =
      n => (try read.lift(n) catch { case _: ArithmeticException => None }).toRight(s"must be $expected, got ${describe(n)}")
    def integer(lo: Long, hi: Long) = reader(s"a JSON integer from $lo to $hi") {
      case n if n.isIntegralNumber && n.canConvertToLong && n.longValue >= lo && n.longValue <= hi => java.lang.Long.valueOf(n.longValue)
    }
    def real(narrow: Double => Double) = reader("a JSON number, or \"NaN\", \"Infinity\" or \"-Infinity\"") {
      case n if n.isNumber => java.lang.Double.valueOf(narrow(n.decimalValue.doubleValue))
      case n if n.isTextual && Specials.contains(n.textValue) => java.lang.Double.valueOf(narrow(Specials(n.textValue)))
    }
    Option(sparkType.trim.toLowerCase).collect {
      case "string"   => reader("a JSON string") { case n if n.isTextual => n.textValue }
      case "tinyint"  => integer(Byte.MinValue, Byte.MaxValue)
      case "smallint" => integer(Short.MinValue, Short.MaxValue)
      case "int" | "integer" => integer(Int.MinValue, Int.MaxValue)
      case "bigint"   => integer(Long.MinValue, Long.MaxValue)
      case "boolean"  => reader("true or false") { case n if n.isBoolean => java.lang.Boolean.valueOf(n.booleanValue) }
      // A float column's keys are floats widened to double (as Spark widens them): 0.1 is 0.1f, not 0.1.
      case "float"    => real(d => d.toFloat.toDouble)
      case "double"   => real(identity)
      case Decimal(p, s) => reader(s"a number or numeric string with at most ${p.toInt - s.toInt} digits before the point and $s after") {
        case n if n.isNumber && fits(n.decimalValue, p.toInt, s.toInt) => n.decimalValue
        case n if n.isTextual && decimal(n.textValue).exists(fits(_, p.toInt, s.toInt)) => decimal(n.textValue).get
      }
      case "date"     => reader("a date string YYYY-MM-DD") { case n if n.isTextual && parses(LocalDate.parse(n.textValue)) => LocalDate.parse(n.textValue) }
      case "timestamp" => n => time(n).map(us => Instant.ofEpochSecond(Math.floorDiv(us, 1000000L), Math.floorMod(us, 1000000L) * 1000L))
      // A zone-less column's wall clock, which tiles hold as if it were UTC (as the offline engine reads it).
      case "timestamp_ntz" => reader("a zone-less ISO-8601 time (2024-03-01T12:00:00.5) or an integer of microseconds") {
        case n if n.isIntegralNumber && n.canConvertToLong => EntityKey.Timestamp(n.longValue)
        case n if n.isTextual && parses(LocalDateTime.parse(n.textValue)) =>
          EntityKey.Timestamp(micros(LocalDateTime.parse(n.textValue).toInstant(java.time.ZoneOffset.UTC)))
      }
      case "binary"   => reader("a base64 string") { case n if n.isTextual && base64(n.textValue).isDefined => base64(n.textValue).get }
    }
  }

  private val Specials = Map("NaN" -> Double.NaN, "Infinity" -> Double.PositiveInfinity, "-Infinity" -> Double.NegativeInfinity)

  private def decimal(s: String): Option[JDecimal] = try Some(new JDecimal(s)) catch { case _: NumberFormatException => None }

  /** Whether a value is one of decimal(p, s) without rounding. */
  private def fits(d: JDecimal, p: Int, s: Int): Boolean = d.signum == 0 || {
    val x = d.stripTrailingZeros
    x.scale <= s && x.precision - x.scale <= p - s
  }

  private def base64(s: String): Option[Array[Byte]] = try Some(Base64.getDecoder.decode(s)) catch { case _: IllegalArgumentException => None }

  // ---- messages

  /** What a JSON value is, for a message: its kind and (shortened) text. */
  private[online] def describe(n: JsonNode): String =
    if (n.isTextual) s"the string ${quote(n.textValue)}"
    else if (n.isNumber) s"the number ${shorten(n.toString)}"
    else if (n.isBoolean || n.isNull) n.toString
    else if (n.isArray) "a list"
    else if (n.isObject) "an object"
    else n.getNodeType.toString.toLowerCase

  private def quote(s: String): String = "\"" + shorten(s) + "\""
  private def shorten(s: String): String = if (s.length <= 60) s else s.take(57) + "..."

  private def bad(message: String): Nothing = throw new BadRequest(message)
}

package tally.bridge

import scala.jdk.CollectionConverters._

import com.fasterxml.jackson.databind.{JsonNode, ObjectMapper}

/** The versioned JSON spec Python sends across py4j (python/tally/definitions.py writes it). Parsing fails with a
  * message naming the view and the field.
  *
  * A feature's window: `{"length_us": <int or null for lifetime>, "delay_us": <int, default 0>, "closed": "left" |
  * "right" (default "left"), "hop_us": <int, optional>}`. `hop_us` absent, null or 0 means an exact window; it was
  * added within spec version 1, so specs without it (and their fingerprints) are unchanged. */
final case class FeatureSpec(
    name: String,
    function: String,
    column: Option[String],
    lengthUs: Option[Long],   // None = lifetime
    delayUs: Long,
    closed: String,           // "left" | "right"
    hopUs: Long,              // 0 = exact
    params: Map[String, Any],
    default: Option[Any])

final case class ViewSpec(
    view: String,
    version: Int,
    keys: Seq[String],
    timestamp: String,
    availableAt: Option[String],
    ttlUs: Option[Long],
    features: Seq[FeatureSpec]) {
  /** How far back a query at t looks: the longest window plus its delay and its hop (a hopped window's start is
    * rounded down by up to one hop), or the ttl; None (everything) with a lifetime window. The sweep's overlap for
    * split hot keys and the online store's reach are this one figure. */
  def reachUs: Option[Long] =
    if (features.exists(_.lengthUs.isEmpty)) None
    else boundedReachUs

  /** The reach of the bounded windows and the ttl alone (None: only lifetime windows and no ttl). A lifetime window
    * reaches further back, but the online store serves it from whole 30-day tiles beyond this reach. */
  def boundedReachUs: Option[Long] =
    (features.flatMap(f => f.lengthUs.map(f.delayUs + _ + f.hopUs)) ++ ttlUs).maxOption

  /** Whether some feature has a lifetime window. */
  def hasLifetime: Boolean = features.exists(_.lengthUs.isEmpty)
}

object Spec {
  private val mapper = new ObjectMapper()

  def parse(json: String): ViewSpec = {
    val root = mapper.readTree(json)
    val view = text(root, "view", "?")
    val version = root.path("spec_version").asInt(-1)
    require(version == Bridge.SpecVersion,
      s"view '$view': spec_version $version, this tally JAR reads ${Bridge.SpecVersion}; rebuild the JAR (make jar)")
    val entity = root.path("entity")
    val source = root.path("source")
    ViewSpec(
      view = view,
      version = root.path("version").asInt(),
      keys = entity.path("keys").elements().asScala.map(_.asText).toSeq,
      timestamp = text(source, "timestamp", view),
      availableAt = opt(source.path("available_at")).map(_.asText),
      ttlUs = opt(root.path("ttl_us")).map(_.asLong),
      features = root.path("features").elements().asScala.map(feature(view, _)).toSeq)
  }

  private def feature(view: String, f: JsonNode): FeatureSpec = {
    val window = f.path("window")
    val name = text(f, "name", view)
    val closed = window.path("closed").asText("left")
    require(closed == "left" || closed == "right", s"view '$view', feature '$name': closed must be left or right, got '$closed'")
    val lengthUs = opt(window.path("length_us")).map(_.asLong)
    val hopUs = opt(window.path("hop_us")).map { h =>
      require(h.canConvertToExactIntegral && h.asLong >= 0,
        s"view '$view', feature '$name': window hop_us must be a whole number of microseconds >= 0, got $h")
      h.asLong
    }.getOrElse(0L)
    require(hopUs == 0 || lengthUs.isDefined,
      s"view '$view', feature '$name': a lifetime window takes no hop (hop_us = $hopUs); drop the hop or give the window a length")
    FeatureSpec(
      name = name,
      function = text(f, "function", s"$view.$name"),
      column = opt(f.path("column")).map(_.asText),
      lengthUs = lengthUs,
      delayUs = window.path("delay_us").asLong(0L),
      closed = closed,
      hopUs = hopUs,
      params = opt(f.path("params")).map(p => p.properties().asScala.map(e => e.getKey -> plain(e.getValue)).toMap).getOrElse(Map.empty),
      default = opt(f.path("default")).map(plain))
  }

  private def text(node: JsonNode, field: String, where: String): String = {
    val v = node.path(field)
    require(v.isTextual, s"spec of '$where': field '$field' is missing or not a string")
    v.asText
  }
  private def opt(node: JsonNode): Option[JsonNode] = if (node.isMissingNode || node.isNull) None else Some(node)

  /** JSON to plain JVM values: Long, Double, String, Boolean, Seq, Map. */
  def plain(node: JsonNode): Any =
    if (node.isIntegralNumber) node.asLong
    else if (node.isNumber) node.asDouble
    else if (node.isBoolean) node.asBoolean
    else if (node.isTextual) node.asText
    else if (node.isArray) node.elements().asScala.map(plain).toSeq
    else if (node.isObject) node.properties().asScala.map(e => e.getKey -> plain(e.getValue)).toMap
    else null
}

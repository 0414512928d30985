package tally.online

import java.io.StringWriter
import java.time.{Instant, ZoneOffset}
import java.time.format.DateTimeFormatter

import com.fasterxml.jackson.core.{JsonFactory, JsonGenerator}

import tally.agg.VType

/** The JSON `tally serve` and the bridge answer with, shared by both.
  *
  * {{{
  * one row:  {"at": "2024-03-01T12:00:00.500000Z", "values": {"view:feature": value, ...}, "types": {"view:feature": "bigint", ...}}
  * a batch:  {"types": {...}, "rows": [{"at": ..., "values": {...}}, ...]}
  * health:   {"status": "ok", "views": [{"view": "card_velocity", "version": 1, "watermark_us": 123 | null}, ...]}
  * error:    {"error": "message naming the culprit"}
  * }}}
  *
  * Values by kernel type: Long a JSON integer; Double a number, except NaN and the infinities, which JSON lacks,
  * as the strings "NaN", "Infinity", "-Infinity"; Decimal an exact string (a JSON number would be read back as a
  * double by most clients); String; Boolean; Timestamp an ISO-8601 UTC string with six fractional digits; arrays as
  * lists; structs as objects of their fields; null as null. Types are named as Spark's simpleString names them. */
object Responses {
  private val factory = new JsonFactory()

  def fetched(f: Fetched, rows: IndexedSeq[FetchRow], batch: Boolean): String = write { g =>
    def values(r: Int): Unit = {
      g.writeObjectFieldStart("values")
      f.refs.indices.foreach { i => g.writeFieldName(f.refs(i)); value(g, f.types(i), f.rows(r)(i)) }
      g.writeEndObject()
    }
    def types(): Unit = {
      g.writeObjectFieldStart("types")
      f.refs.indices.foreach(i => g.writeStringField(f.refs(i), TypeNames.name(f.types(i))))
      g.writeEndObject()
    }
    g.writeStartObject()
    if (batch) {
      types()
      g.writeArrayFieldStart("rows")
      rows.indices.foreach { r =>
        g.writeStartObject(); g.writeStringField("at", iso(rows(r).atUs)); values(r); g.writeEndObject()
      }
      g.writeEndArray()
    } else {
      g.writeStringField("at", iso(rows.head.atUs)); values(0); types()
    }
    g.writeEndObject()
  }

  def health(store: OnlineStore, views: Seq[OnlineView]): String = write { g =>
    g.writeStartObject()
    g.writeStringField("status", "ok")
    g.writeArrayFieldStart("views")
    views.foreach { v =>
      g.writeStartObject()
      g.writeStringField("view", v.spec.view)
      g.writeNumberField("version", v.spec.version)
      watermark(g, store, v.spec.view, v.spec.version)
      g.writeEndObject()
    }
    g.writeEndArray()
    g.writeEndObject()
  }

  /** `{"watermark_us": n | null}`: one view version's state, for the bridge's `onlineStatus`. */
  def status(store: OnlineStore, view: String, version: Int): String = write { g =>
    g.writeStartObject(); watermark(g, store, view, version); g.writeEndObject()
  }

  def error(message: String): String = write { g => g.writeStartObject(); g.writeStringField("error", message); g.writeEndObject() }

  private def watermark(g: JsonGenerator, store: OnlineStore, view: String, version: Int): Unit = {
    g.writeFieldName("watermark_us")
    store.watermark(view, version) match { case Some(us) => g.writeNumber(us); case None => g.writeNull() }
  }

  private def value(g: JsonGenerator, t: VType, v: Any): Unit = if (v == null) g.writeNull() else t match {
    case VType.Long          => g.writeNumber(number(t, v).longValue)
    case VType.Double        =>
      val d = number(t, v).doubleValue
      if (d.isNaN) g.writeString("NaN")
      else if (d.isInfinite) g.writeString(if (d > 0) "Infinity" else "-Infinity")
      else g.writeNumber(d)
    case _: VType.Decimal    => g.writeString(v match {
      case d: java.math.BigDecimal => d.toPlainString
      case d: BigDecimal           => d.bigDecimal.toPlainString
      case other                   => unexpected(t, other)
    })
    case VType.String        => g.writeString(v.toString)
    case VType.Boolean       => g.writeBoolean(v.asInstanceOf[java.lang.Boolean].booleanValue)
    case VType.Timestamp     => g.writeString(iso(number(t, v).longValue))
    case VType.ArrayOf(e)    => g.writeStartArray(); elements(t, v).foreach(value(g, e, _)); g.writeEndArray()
    case VType.StructOf(fs)  =>
      val xs = elements(t, v)
      if (xs.length != fs.length) unexpected(t, v)
      g.writeStartObject()
      fs.zip(xs).foreach { case ((name, ft), x) => g.writeFieldName(name); value(g, ft, x) }
      g.writeEndObject()
  }

  private def number(t: VType, v: Any): Number = v match { case n: Number => n; case other => unexpected(t, other) }

  private def elements(t: VType, v: Any): Seq[Any] = v match {
    case s: Seq[_]   => s
    case a: Array[_] => a.toSeq
    case other       => unexpected(t, other)
  }

  private def unexpected(t: VType, v: Any): Nothing =
    throw new IllegalStateException(s"a kernel gave ${v.getClass.getName} for a value of type ${TypeNames.name(t)}")

  private val Iso = DateTimeFormatter.ofPattern("uuuu-MM-dd'T'HH:mm:ss.SSSSSS'Z'").withZone(ZoneOffset.UTC)

  /** Epoch microseconds as ISO-8601 UTC with six fractional digits. */
  def iso(us: Long): String = Iso.format(Instant.ofEpochSecond(Math.floorDiv(us, 1000000L), Math.floorMod(us, 1000000L) * 1000L))

  private def write(f: JsonGenerator => Unit): String = {
    val out = new StringWriter()
    val g = factory.createGenerator(out)
    try f(g) finally g.close()
    out.toString
  }
}

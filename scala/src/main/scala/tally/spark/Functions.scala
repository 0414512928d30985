package tally.spark

import org.apache.spark.sql.SparkSession
import org.apache.spark.sql.catalyst.expressions.Expression
import org.apache.spark.sql.catalyst.util.ArrayData
import org.apache.spark.sql.types._

import tally.agg.{Aggregators, Durations, VType}

/** The `tally_<name>` SQL functions: one signature line per kernel, one generic builder.
  *
  * Spark calls a builder with the resolved argument expressions, so the builder sees the input column's type and
  * picks the kernel for it (see [[KernelAggregate]]). Constant arguments (k, lg_k, quantiles, half-life) must be
  * literals and become kernel parameters; the as-of time must be constant too (a literal or current_timestamp()).
  * A wrong argument fails analysis with an IllegalArgumentException naming the function and the argument. */
object Functions {
  /** What an argument position means. */
  sealed trait Role { def label: String }
  case object Value extends Role { val label = "x" }
  case object Ts extends Role { val label = "ts" }
  case object AsOf extends Role { val label = "as_of" }
  /** An integral constant, passed to the kernel as parameter `key`. */
  final case class IntParam(key: String) extends Role { def label: String = key }
  /** A numeric constant, passed as parameter `key`. */
  final case class NumberParam(key: String) extends Role { def label: String = key }
  /** A constant array of numbers (or one number), passed as parameter `key`. */
  final case class DoublesParam(key: String) extends Role { def label: String = key }
  /** A half-life: a duration string ('90s', '30m', '1h', '7d'), a day-time interval or microseconds. */
  case object HalfLife extends Role { val label = "half_life" }

  /** `roles` in argument order; the first `required` are mandatory. */
  final case class Signature(function: String, roles: Seq[Role], required: Int) {
    def usage: String = {
      val (req, opt) = roles.map(_.label).splitAt(required)
      s"tally_$function(${req.mkString(", ")}${opt.map(o => s"[, $o]").mkString})"
    }
  }

  private def value(f: String) = Signature(f, Seq(Value), 1)

  val signatures: Seq[Signature] = Seq(
    value("count"), value("sum"), value("mean"), value("min"), value("max"),
    value("variance"), value("variance_pop"), value("stddev"), value("stddev_pop"),
    Signature("first", Seq(Value, Ts), 2),
    Signature("last", Seq(Value, Ts), 2),
    Signature("last_k", Seq(Value, Ts, IntParam("k")), 3),
    Signature("time_since_last", Seq(Ts, AsOf), 2),
    Signature("approx_distinct", Seq(Value, IntParam("lg_k")), 1),
    Signature("approx_percentile", Seq(Value, DoublesParam("quantiles"), IntParam("k"), NumberParam("relative_error")), 2),
    Signature("top_k", Seq(Value, IntParam("k")), 1),
    Signature("decayed_sum", Seq(Value, Ts, HalfLife, AsOf), 4),
    Signature("decayed_count", Seq(Ts, HalfLife, AsOf), 3))

  require(signatures.map(_.function).toSet == Aggregators.functions.toSet,
    "every kernel in Aggregators.functions needs exactly one SQL signature here")

  /** Registers every `tally_<name>` function in the session (idempotent: re-registering replaces). */
  def register(spark: SparkSession): Unit = {
    val registry = spark.asInstanceOf[org.apache.spark.sql.classic.SparkSession].sessionState.functionRegistry
    // A temporary function, as spark.udf.register makes (Spark 4.2 qualifies the name itself).
    for (sig <- signatures)
      registry.createOrReplaceTempFunction(s"tally_${sig.function}", (args: Seq[Expression]) => build(sig, args), "scala_udf")
  }

  def build(sig: Signature, args: Seq[Expression]): KernelAggregate = {
    val name = s"tally_${sig.function}"
    def fail(msg: String) = throw new IllegalArgumentException(s"$name: $msg; usage: ${sig.usage}")
    if (args.length < sig.required || args.length > sig.roles.length)
      fail(s"expected ${if (sig.required == sig.roles.length) sig.required else s"${sig.required} to ${sig.roles.length}"} arguments, got ${args.length}")

    def constant(role: Role, e: Expression): Any = {
      if (!e.foldable) fail(s"argument '${role.label}' must be a constant, got ${e.sql}")
      val v = e.eval()
      if (v == null) fail(s"argument '${role.label}' must not be null")
      v
    }
    def number(v: Any): Any = v match { case d: Decimal => d.toJavaBigDecimal; case other => other }
    def isTime(t: DataType) = t match { case TimestampType | TimestampNTZType | LongType => true; case _ => false }

    var params = Map.empty[String, Any]
    val inputs = Seq.newBuilder[Expression]
    var valueIdx, tsIdx, asOfIdx, n = -1
    def input(e: Expression): Int = { inputs += e; n += 1; n }

    for ((e, role) <- args.zip(sig.roles)) role match {
      case Value => valueIdx = input(e)
      case Ts =>
        if (!isTime(e.dataType)) fail(s"argument 'ts' must be a timestamp (or bigint microseconds), got ${e.dataType.sql}")
        tsIdx = input(e)
      case AsOf =>
        if (!isTime(e.dataType)) fail(s"argument 'as_of' must be a timestamp (or bigint microseconds), got ${e.dataType.sql}")
        if (!e.foldable) fail(s"argument 'as_of' must be a constant (a literal or current_timestamp()), got ${e.sql}")
        asOfIdx = input(e)
      case IntParam(key) => params += key -> number(constant(role, e))
      case NumberParam(key) => params += key -> number(constant(role, e))
      case DoublesParam(key) =>
        params += key -> ((e.dataType, constant(role, e)) match {
          case (ArrayType(et, _), a: ArrayData) => a.toSeq[Any](et).map { x =>
              if (x == null) fail(s"argument '$key' must not contain nulls") else number(x)
            }
          case (_: NumericType, x) => Seq(number(x))
          case (t, _) => fail(s"argument '$key' must be an array of numbers, got ${t.sql}")
        })
      case HalfLife =>
        val micros = (e.dataType, constant(role, e)) match {
          case (_: StringType, s) =>
            try Durations.micros(s.toString) catch { case err: IllegalArgumentException => fail(err.getMessage) }
          case (_: DayTimeIntervalType | ByteType | ShortType | IntegerType | LongType, x) => x.asInstanceOf[Number].longValue
          case (t, _) => fail(s"argument 'half_life' must be a duration such as '7d', got ${t.sql}")
        }
        params += "half_life_us" -> micros
    }

    val inputType: VType =
      if (valueIdx < 0) VType.Timestamp
      else Catalyst.vtype(args(valueIdx).dataType) match {
        case Some(t) => t
        case None if sig.function == "count" => VType.Long // count never looks at the value
        case None => fail(s"argument 'x' has type ${args(valueIdx).dataType.sql}, which tally kernels do not read")
      }
    // Build once now so that a bad type or parameter fails at analysis, not inside a task.
    try Aggregators.build(sig.function, inputType, params)
    catch { case err: IllegalArgumentException => fail(s"${err.getMessage} (argument 'x' is ${args(valueIdx max 0).dataType.sql})") }
    KernelAggregate(sig.function, inputType, params, inputs.result(), valueIdx, tsIdx, asOfIdx)
  }
}

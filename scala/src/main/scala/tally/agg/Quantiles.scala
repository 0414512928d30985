package tally.agg

/** approx_percentile: exact while a window holds at most `k` values, then a histogram of logarithmic buckets (the
  * DDSketch construction) whose every quantile is within `relative_error` of the true one. Parameters: the requested
  * `quantiles` in [0, 1], `k` in [8, 65535] (default 200) and `relative_error` in [0.001, 0.1] (default 0.01).
  * Output: one double per requested quantile, in the order asked. Quantiles are inclusive: the value of rank
  * ceil(q * n), at least 1, so 0 gives the minimum and 1 the maximum (both always exact). NaN is ignored, -0.0 is
  * 0.0, decimals are read as doubles. Empty gives null.
  *
  * Why not KLL: a KLL sketch depends on the order of its updates and merges, and DataSketches draws its
  * compaction coins from one process-wide random generator, so the sweep (folding events) and the fetcher (merging
  * tiles) could not give the same estimate. This IR is a function of the multiset of values folded into it, whatever
  * the order or the merge tree: the same bytes and the same quantiles on every path (SketchOrderSuite).
  *
  * Buckets: a positive x falls in bucket i = ceil(log_g(x)) with g = (1 + e) / (1 - e), and a bucket reports
  * 2 g^i / (1 + g), within e of every value in it; negatives mirror that; zeros are counted apart. Logarithms
  * and powers are StrictMath's, so every JVM puts a value in the same bucket. Each sign keeps the buckets of
  * [[Quantiles.KeptDecades]] decades below its largest magnitude: smaller magnitudes fold into the lowest kept
  * bucket (only quantiles among them lose their bound). Folding depends only on the largest bucket, so it keeps the
  * state order-free. */
final class QuantileIR(private[agg] var n: Long, private[agg] var exact: Array[Double], private[agg] var sorted: Boolean,
    private[agg] var min: Double, private[agg] var max: Double, private[agg] var zeros: Long,
    private[agg] val pos: LogBuckets, private[agg] val neg: LogBuckets) {
  private[agg] def bucketed: Boolean = exact == null
  private[agg] def sortExact(): Unit = if (!sorted) { java.util.Arrays.sort(exact, 0, n.toInt); sorted = true }
  private[agg] def deepCopy(): QuantileIR =
    new QuantileIR(n, if (exact == null) null else exact.clone(), sorted, min, max, zeros, pos.deepCopy(), neg.deepCopy())
}

/** Counts per bucket index for one sign, densely over [lo, hi]; at most `maxBins` wide (see [[QuantileIR]]). */
final class LogBuckets(maxBins: Int) {
  private[agg] var counts: Array[Long] = Array.emptyLongArray
  private[agg] var base = 0 // counts(j) counts bucket base + j
  private[agg] var lo = Int.MaxValue
  private[agg] var hi = Int.MinValue

  def isEmpty: Boolean = hi < lo
  def count(i: Int): Long = counts(i - base)

  def add(index: Int, c: Long): Unit = {
    if (index > hi) raiseTop(index)
    val i = math.max(index, hi - maxBins + 1) // below the kept span: folds into its lowest bucket
    if (i < lo) { cover(i, hi); lo = i }
    counts(i - base) += c
  }

  def addAll(o: LogBuckets): Unit = if (!o.isEmpty) {
    if (o.hi > hi) raiseTop(o.hi)
    var i = o.lo
    while (i <= o.hi) { val c = o.counts(i - o.base); if (c != 0L) add(i, c); i += 1 }
  }

  /** A new largest bucket: what falls below the kept span folds into its lowest bucket. */
  private def raiseTop(top: Int): Unit =
    if (isEmpty) { cover(top, top); lo = top; hi = top }
    else {
      val floor = top - maxBins + 1
      var folded = 0L
      var i = lo
      while (i <= hi && i < floor) { folded += counts(i - base); counts(i - base) = 0L; i += 1 }
      if (floor > hi) { counts = Array.emptyLongArray; lo = Int.MaxValue; hi = Int.MinValue; cover(floor, top) }
      else { lo = math.max(lo, floor); cover(lo, top) }
      lo = math.max(if (isEmpty) floor else lo, floor); hi = top
      counts(lo - base) += folded
    }

  /** Makes the array cover [from, to] as well as [lo, hi], keeping the counts; slack goes the way it grows. */
  private def cover(from: Int, to: Int): Unit = {
    val needLo = if (isEmpty) from else math.min(from, lo)
    val needHi = if (isEmpty) to else math.max(to, hi)
    if (counts.length == 0 || needLo < base || needHi >= base + counts.length) {
      val span = needHi - needLo + 1
      val width = math.max(span, math.max(8, math.min(2 * span, maxBins)))
      val newBase = if (!isEmpty && from < lo) needHi - width + 1 else needLo
      val fresh = new Array[Long](width)
      if (!isEmpty) System.arraycopy(counts, lo - base, fresh, lo - newBase, hi - lo + 1)
      counts = fresh; base = newBase
    }
  }

  def deepCopy(): LogBuckets = {
    val c = new LogBuckets(maxBins)
    c.counts = counts.clone(); c.base = base; c.lo = lo; c.hi = hi; c
  }
}

final case class ApproxPercentile(k: Int, quantiles: Vector[Double], relativeError: Double = Quantiles.DefaultRelativeError)
    extends Aggregator[QuantileIR] {
  require(k >= 8 && k <= 65535, s"aggregation 'approx_percentile': parameter 'k' must be between 8 and 65535, got $k")
  require(relativeError >= 1e-3 && relativeError <= 0.1,
    s"aggregation 'approx_percentile': parameter 'relative_error' must be between 0.001 and 0.1, got $relativeError")
  private val Format: Byte = 0x0e // 0x0b was DataSketches' KLL
  private val gamma = (1 + relativeError) / (1 - relativeError)
  private val logGamma = StrictMath.log(gamma)
  private val topIndex = index(Double.MaxValue)
  private val bottomIndex = index(java.lang.Double.MIN_VALUE)
  private val maxBins = math.ceil(Quantiles.KeptDecades * StrictMath.log(10.0) / logGamma).toInt

  private def index(magnitude: Double): Int = math.ceil(StrictMath.log(magnitude) / logGamma).toInt
  private def bucketOf(magnitude: Double): Int =
    if (magnitude > Double.MaxValue) topIndex else math.max(bottomIndex, math.min(topIndex, index(magnitude)))
  private def valueOf(i: Int): Double = 2.0 * StrictMath.exp(i * logGamma) / (1.0 + gamma)

  def zero(): QuantileIR = new QuantileIR(0L, new Array[Double](math.min(k, 16)), true, 0.0, 0.0, 0L,
    new LogBuckets(maxBins), new LogBuckets(maxBins))

  def update(s: QuantileIR, value: Any, ts: Long): QuantileIR = {
    val raw = Num.double(value)
    if (!raw.isNaN) add(s, if (raw == 0.0) 0.0 else raw)
    s
  }

  private def add(s: QuantileIR, x: Double): Unit =
    if (!s.bucketed && s.n < k) {
      if (s.n == s.exact.length) s.exact = java.util.Arrays.copyOf(s.exact, math.min(k, 2 * s.exact.length))
      s.exact(s.n.toInt) = x; s.n += 1; s.sorted = false
    } else {
      if (!s.bucketed) bucketize(s)
      addBucketed(s, x, 1L)
      s.n += 1
    }

  private def addBucketed(s: QuantileIR, x: Double, c: Long): Unit = {
    if (x < s.min) s.min = x
    if (x > s.max) s.max = x
    if (x > 0) s.pos.add(bucketOf(x), c) else if (x < 0) s.neg.add(bucketOf(-x), c) else s.zeros += c
  }

  /** Moves the exact values into buckets (n stays). */
  private def bucketize(s: QuantileIR): Unit = {
    val values = s.exact
    val count = s.n.toInt
    s.exact = null
    s.min = Double.PositiveInfinity; s.max = Double.NegativeInfinity
    var i = 0
    while (i < count) { addBucketed(s, values(i), 1L); i += 1 }
  }

  def merge(a: QuantileIR, b: QuantileIR): QuantileIR = {
    if (b.n == 0L) return a
    if (!a.bucketed && !b.bucketed && a.n + b.n <= k) {
      var i = 0
      while (i < b.n) { add(a, b.exact(i)); i += 1 }
    } else {
      if (!a.bucketed) bucketize(a)
      if (b.bucketed) {
        if (b.min < a.min) a.min = b.min
        if (b.max > a.max) a.max = b.max
        a.zeros += b.zeros; a.pos.addAll(b.pos); a.neg.addAll(b.neg)
      } else {
        var i = 0
        while (i < b.n) { addBucketed(a, b.exact(i), 1L); i += 1 }
      }
      a.n += b.n
    }
    a
  }

  def copy(s: QuantileIR): QuantileIR = s.deepCopy()

  def finish(s: QuantileIR, asOf: Long): Any =
    if (s.n == 0L) null
    else {
      if (!s.bucketed) s.sortExact()
      quantiles.map(q => java.lang.Double.valueOf(quantile(s, Quantiles.rank(q, s.n))))
    }

  /** The value of 1-based rank `r`. */
  private def quantile(s: QuantileIR, r: Long): Double =
    if (!s.bucketed) s.exact((r - 1).toInt)
    else if (r == 1L) s.min
    else if (r == s.n) s.max
    else {
      var seen = 0L
      var i = s.neg.hi
      while (!s.neg.isEmpty && i >= s.neg.lo) {
        seen += s.neg.count(i)
        if (seen >= r) return clamp(s, -valueOf(i))
        i -= 1
      }
      seen += s.zeros
      if (seen >= r) return 0.0
      i = s.pos.lo
      while (i <= s.pos.hi) {
        seen += s.pos.count(i)
        if (seen >= r) return clamp(s, valueOf(i))
        i += 1
      }
      s.max
    }

  private def clamp(s: QuantileIR, x: Double): Double = math.max(s.min, math.min(s.max, x))

  def encode(s: QuantileIR): Array[Byte] = {
    val w = Codec.writer(Format, 32 + 8 * math.min(s.n, k.toLong).toInt).int(k).double(relativeError).varLong(s.n)
    if (!s.bucketed) {
      s.sortExact()
      var i = 0
      while (i < s.n) { w.double(s.exact(i)); i += 1 }
    } else {
      w.double(s.min).double(s.max).varLong(s.zeros)
      writeBuckets(w, s.pos); writeBuckets(w, s.neg)
    }
    w.result()
  }

  /** Non-empty buckets: their number, then (gap to the previous index, count) each; the first gap is from the
    * lowest index the mapping has. */
  private def writeBuckets(w: Codec.Writer, b: LogBuckets): Unit = {
    var nonEmpty = 0
    var i = b.lo
    while (!b.isEmpty && i <= b.hi) { if (b.count(i) != 0L) nonEmpty += 1; i += 1 }
    w.varLong(nonEmpty.toLong)
    var prev = bottomIndex
    i = b.lo
    while (!b.isEmpty && i <= b.hi) {
      val c = b.count(i)
      if (c != 0L) { w.varLong((i - prev).toLong).varLong(c); prev = i }
      i += 1
    }
  }

  def decode(bytes: Array[Byte]): QuantileIR = {
    val r = Codec.reader(bytes, Format, "approx_percentile")
    val (storedK, storedError) = (r.int(), r.double())
    require(storedK == k && storedError == relativeError, s"approx_percentile IR was built with k=$storedK, " +
      s"relative_error=$storedError; this aggregator has k=$k, relative_error=$relativeError")
    val s = zero()
    val n = r.varLong()
    if (n <= k) {
      s.exact = new Array[Double](math.max(n.toInt, s.exact.length))
      var i = 0
      while (i < n) { s.exact(i) = r.double(); i += 1 }
      s.n = n
    } else {
      s.exact = null
      s.n = n; s.min = r.double(); s.max = r.double(); s.zeros = r.varLong()
      readBuckets(r, s.pos); readBuckets(r, s.neg)
    }
    r.done()
    s
  }

  private def readBuckets(r: Codec.Reader, b: LogBuckets): Unit = {
    var left = r.varLong()
    var i = bottomIndex.toLong
    while (left > 0) { i += r.varLong(); b.add(i.toInt, r.varLong()); left -= 1 }
  }

  val outputType: VType = VType.ArrayOf(VType.Double)
}

object Quantiles {
  val DefaultRelativeError = 0.01
  /** How many decades of magnitudes each sign keeps below its largest (1,382 buckets at 1 % error, 13,816 at 0.1 %). */
  val KeptDecades = 12

  /** The 1-based rank quantile q asks of n values: ceil(q * n), at least 1 (the tolerance absorbs q * n landing a
    * rounding error above a whole number, as 0.7 * 10 does). */
  def rank(q: Double, n: Long): Long = math.max(1L, math.min(n, math.ceil(q * n - 1e-9).toLong))
}

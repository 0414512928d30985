package tally.window

/** A window of the time semantics (DESIGN.md, "Time semantics" and "Online serving"), in epoch microseconds.
  *
  * For a query at t, an event at ts (available at `avail`) is inside when
  *   left-closed  (default): t-d-w <= ts <  t-d  and avail <  t
  *   right-closed          : t-d-w <  ts <= t-d  and avail <= t
  *   hopped (hop h > 0)    : floorHop(t-d-w) <= ts, and the end and availability as above
  * where floorHop(x) = h * floorDiv(x, h) rounds the start down to a hop boundary aligned to the UTC epoch (not to
  * the query), inclusive for both `closed` values: a hopped window may hold up to one hop more than w. A lifetime
  * window has w = +infinity and takes no hop.
  *
  * Rewritten per event, with enter = max(ts+d, avail) and exit = ts+d+w:
  *   left : enter <  t <= exit        right: enter <= t <  exit
  * and for a hopped window exit = nextHop(ts)+d+w, the first hop boundary after ts plus d+w, with t < exit for both
  * `closed` values (floorHop(t-d-w) <= ts  <=>  t-d-w < nextHop(ts)). So each event is inside over one interval
  * of query time: the sweep adds it when t passes `enter` and removes it when t reaches `exit`. Exit is monotone
  * in ts (floorHop is monotone), so events leave in time order, hopped or not. Equal timestamps share enter and
  * exit, so ties are all in or all out.
  */
final case class Window(length: Long, delay: Long, rightClosed: Boolean, hop: Long = 0L) {
  require(length > 0, s"window length must be positive, got $length us")
  require(delay >= 0, s"window delay must not be negative, got $delay us")
  require(hop >= 0, s"window hop must not be negative, got $hop us")
  require(hop == 0 || length != Window.Lifetime, s"a lifetime window takes no hop, got $hop us")
  def lifetime: Boolean = length == Window.Lifetime
  /** Has an event whose enter time is `enter` entered the window by query time t? */
  @inline def entered(enter: Long, t: Long): Boolean = if (rightClosed) enter <= t else enter < t
  /** Has an event at ts left the window by query time t? */
  @inline def exited(ts: Long, t: Long): Boolean =
    if (lifetime) false
    else if (hop > 0) Window.floorHop(ts, hop) + hop + delay + length <= t
    else { val exit = ts + delay + length; if (rightClosed) exit <= t else exit < t }
}

object Window {
  val Lifetime: Long = Long.MaxValue
  /** x rounded down to a multiple of `hop` (hop boundaries are aligned to the epoch, also before it). */
  @inline def floorHop(x: Long, hop: Long): Long = Math.floorDiv(x, hop) * hop
}

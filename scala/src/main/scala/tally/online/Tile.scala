package tally.online

/** One key's aggregation state over one time span of one view version: the unit the online store keeps.
  *
  * @param startUs  first microsecond the tile covers (UTC, hop-aligned by its builder); it covers
  *                 `[startUs, startUs + lengthUs)`
  * @param lengthUs the span; tiles of several lengths may coexist for one key (coarser tiles for old spans)
  * @param payload  opaque to the store: the kernels' encoded IRs, later also raw events of a partial tile
  * @param stamp    the id of the write that produced this content (a stream micro-batch id, a materialize run id).
  *                 The store keeps a tile's stamp with it and never applies the same (tile, stamp) twice, which is
  *                 how a replayed batch stays exactly-once per tile: see [[OnlineStore.write]].
  *
  * A case class for its copy and pattern matching; equality compares the payload's bytes, not the array. */
final case class Tile(view: String, version: Int, key: EntityKey, startUs: Long, lengthUs: Long, payload: Array[Byte],
                      stamp: Long) {
  Names.checkView(view, version)
  require(key != null, s"view '$view' v$version: a tile without an entity key")
  require(payload != null, s"view '$view' v$version key ${key.encoded}: a tile without a payload (use an empty array)")
  require(lengthUs > 0, s"view '$view' v$version key ${key.encoded}: tile at $startUs has length $lengthUs µs, not > 0")
  require(startUs <= Long.MaxValue - lengthUs,
    s"view '$view' v$version key ${key.encoded}: tile at $startUs of $lengthUs µs ends past the last representable µs")

  /** The first microsecond after the tile. */
  def endUs: Long = startUs + lengthUs

  /** Whether the tile shares a microsecond with `[fromUs, toUs)`: what a request for that span must merge. */
  def overlaps(fromUs: Long, toUs: Long): Boolean = fromUs < toUs && startUs < toUs && endUs > fromUs

  /** Where the tile lives in the store; two tiles with one address are versions of each other. */
  def address: (String, Int, EntityKey, Long, Long) = (view, version, key, lengthUs, startUs)

  override def equals(other: Any): Boolean = other match {
    case t: Tile => address == t.address && stamp == t.stamp && java.util.Arrays.equals(payload, t.payload)
    case _ => false
  }
  override def hashCode: Int = (address, stamp, java.util.Arrays.hashCode(payload)).hashCode
  override def toString: String =
    s"Tile($view v$version ${key.encoded} [$startUs, +$lengthUs) ${payload.length} B stamp $stamp)"
}

/** A read of one view version: the tiles of `keys` that overlap `[fromUs, toUs)`. */
final case class TileQuery(view: String, version: Int, keys: Seq[EntityKey], fromUs: Long, toUs: Long) {
  Names.checkView(view, version)
  require(fromUs <= toUs, s"view '$view' v$version: read of [$fromUs, $toUs) ends before it starts")
}

/** A read of exact tiles of one view version: per key, the runs of tile addresses wanted. */
final case class TileRequest(view: String, version: Int, runs: Map[EntityKey, Seq[TileRun]]) {
  Names.checkView(view, version)
}

/** The tile addresses `(lengthUs, firstUs)`, `(lengthUs, firstUs + lengthUs)`, ... up to `(lengthUs, lastUs)`: the
  * tiles of one level that a window's span takes side by side, asked for in one seek. */
final case class TileRun(lengthUs: Long, firstUs: Long, lastUs: Long) {
  require(lengthUs > 0 && firstUs <= lastUs && (lastUs - firstUs) % lengthUs == 0,
    s"a run of tiles of $lengthUs µs from $firstUs to $lastUs is not whole tiles")

  /** How many tiles the run names. */
  def size: Long = (lastUs - firstUs) / lengthUs + 1
  def starts: Iterator[Long] = Iterator.iterate(firstUs)(_ + lengthUs).take(size.toInt)
}

object TileRun {
  /** One tile's address as a run. */
  def of(lengthUs: Long, startUs: Long): TileRun = TileRun(lengthUs, startUs, startUs)
}

/** Names the stores build keys from, checked once. View names follow the Python definitions' rule
  * (`[a-z_][a-z0-9_]*`), which also keeps `:` and `{}` out of Redis keys and hash tags. */
private[online] object Names {
  private val view = "[a-z_][a-z0-9_]*".r

  // Names already checked: every tile checks its view's name, and a materialize run makes millions.
  private val valid = java.util.concurrent.ConcurrentHashMap.newKeySet[String]()

  def checkView(name: String, version: Int): Unit = {
    require(name != null && (valid.contains(name) || (view.matches(name) && { if (valid.size < 10000) valid.add(name); true })),
      s"view name '$name' is not an identifier (lower-case letters, digits, '_'; as in the feature definitions)")
    require(version >= 0, s"view '$name': version $version is negative")
  }

  def checkStream(stream: String): Unit =
    require(stream != null && stream.nonEmpty, "a stream needs a non-empty name (for example its checkpoint's view and source)")
}

package tally.agg

import java.nio.{ByteBuffer, ByteOrder}

/** Stable binary encoding of IRs. Layout: one format byte naming the IR kind and its layout version, then the
  * fields in big-endian order. A decoder refuses a format byte it does not know, so an old tally reading a newer
  * IR fails loudly instead of misreading it. Format bytes are never reused; bump them when a layout changes. */
object Codec {
  final class Writer(format: Byte, capacity: Int) {
    private var buf = ByteBuffer.allocate(math.max(capacity, 16)).order(ByteOrder.BIG_ENDIAN)
    buf.put(format)
    private def room(n: Int): Unit = if (buf.remaining < n) {
      val bigger = ByteBuffer.allocate(math.max(buf.capacity * 2, buf.position() + n)).order(ByteOrder.BIG_ENDIAN)
      buf.flip(); bigger.put(buf); buf = bigger
    }
    def long(v: Long): Writer = { room(8); buf.putLong(v); this }
    def int(v: Int): Writer = { room(4); buf.putInt(v); this }
    def double(v: Double): Writer = { room(8); buf.putDouble(v); this }
    def bool(v: Boolean): Writer = { room(1); buf.put(if (v) 1.toByte else 0.toByte); this }
    /** An unsigned LEB128 varint: 1 byte below 128, what sketch counts and index gaps mostly are. */
    def varLong(v: Long): Writer = {
      room(10); var x = v
      while ((x & ~0x7fL) != 0L) { buf.put(((x & 0x7f) | 0x80).toByte); x >>>= 7 }
      buf.put(x.toByte); this
    }
    def bytes(v: Array[Byte]): Writer = { int(v.length); room(v.length); buf.put(v); this }
    /** `len` bytes of `v` from `from`, as they are (no length prefix): a part of another encoding passed through. */
    def raw(v: Array[Byte], from: Int, len: Int): Writer = { room(len); buf.put(v, from, len); this }
    def string(v: String): Writer = bytes(v.getBytes(java.nio.charset.StandardCharsets.UTF_8))
    def decimal(v: java.math.BigDecimal): Writer =
      if (v == null) int(-1) else { int(v.scale); bytes(v.unscaledValue.toByteArray) }
    def result(): Array[Byte] = java.util.Arrays.copyOf(buf.array, buf.position())
  }

  final class Reader(bytes: Array[Byte], expected: Byte, what: String) {
    private val buf = ByteBuffer.wrap(bytes).order(ByteOrder.BIG_ENDIAN)
    require(bytes.nonEmpty, s"cannot decode an empty $what IR")
    private val format = buf.get()
    require(format == expected,
      f"cannot decode $what IR: format byte 0x$format%02x, expected 0x$expected%02x (written by another tally version?)")
    def long(): Long = buf.getLong()
    def int(): Int = buf.getInt()
    def double(): Double = buf.getDouble()
    def bool(): Boolean = buf.get() != 0
    def varLong(): Long = {
      var x = 0L; var shift = 0; var b = 0
      while ({ b = buf.get(); x |= (b & 0x7fL) << shift; shift += 7; (b & 0x80) != 0 })
        require(shift < 64, s"malformed varint in $what IR")
      x
    }
    def bytes(): Array[Byte] = { val a = new Array[Byte](buf.getInt()); buf.get(a); a }
    def string(): String = new String(bytes(), java.nio.charset.StandardCharsets.UTF_8)
    def decimal(): java.math.BigDecimal = {
      val scale = buf.getInt()
      if (scale == -1) null else new java.math.BigDecimal(new java.math.BigInteger(bytes()), scale)
    }
    /** Passes over `n` bytes: a part the caller reads another way. */
    def skip(n: Int): Unit = buf.position(buf.position() + n)
    def done(): Unit = require(!buf.hasRemaining, s"trailing bytes after $what IR")
  }

  def writer(format: Byte, capacity: Int = 32): Writer = new Writer(format, capacity)
  def reader(bytes: Array[Byte], format: Byte, what: String): Reader = new Reader(bytes, format, what)
}

package tally.spark

import scala.collection.mutable

import org.apache.spark.sql.catalyst.expressions.UnsafeRow
import org.apache.spark.unsafe.Platform

/** Rows kept for the life of a task, their bytes back to back in pages, each named by a long address (page << 32 |
  * offset). An `UnsafeRow.copy()` per row is two objects per row for the collector to trace and promote: measured on
  * the as-of join's build side (9 M rows, bench/asof.py), the copies were 18 % of the samples and the task's
  * garbage collection a third of its time. Pages are 1 MiB, below G1's humongous size for heaps >= 4 GiB; a larger
  * row gets a page of its own.
  *
  * Each row is stored as its size (8 bytes) then its bytes, so every row starts 8-byte aligned as Spark's UnsafeRow
  * accessors expect. */
private[spark] final class RowArena(numFields: Int) {
  private val pages = mutable.ArrayBuffer.empty[Array[Byte]]
  private var page: Array[Byte] = Array.emptyByteArray
  private var used = 0
  private val view = new UnsafeRow(numFields)

  /** Copies `row` in; its address. */
  def add(row: UnsafeRow): Long = {
    val size = row.getSizeInBytes
    val step = (8 + size + 7) & ~7
    if (used + step > page.length) {
      page = new Array[Byte](math.max(RowArena.PageBytes, step))
      pages += page
      used = 0
    }
    val at = used
    Platform.putLong(page, Platform.BYTE_ARRAY_OFFSET + at, size.toLong)
    Platform.copyMemory(row.getBaseObject, row.getBaseOffset, page, Platform.BYTE_ARRAY_OFFSET + at + 8, size)
    used += step
    (pages.length - 1).toLong << 32 | at.toLong
  }

  /** The row at `address`, in one reused UnsafeRow: valid until the next call. */
  def get(address: Long): UnsafeRow = {
    val p = pages((address >>> 32).toInt)
    val at = Platform.BYTE_ARRAY_OFFSET + address.toInt
    view.pointTo(p, at + 8, Platform.getLong(p, at).toInt)
    view
  }
}

private[spark] object RowArena {
  val PageBytes: Int = 1 << 20
}

package tally.spark

import scala.util.Random

import org.apache.spark.sql.catalyst.InternalRow
import org.apache.spark.sql.catalyst.expressions.{GenericInternalRow, UnsafeProjection}
import org.apache.spark.sql.types._
import org.apache.spark.unsafe.types.UTF8String

/** The as-of index of one partition against a brute force over the same rows, on seeded random data: hot keys,
  * a null key, rows out of time order, values of every size from empty to past a [[RowArena]] page. The same rows
  * under a bigint key (the primitive-long map) and under a string key (the HashMap) must give the same answers. */
class AsOfIndexSuite extends munit.FunSuite {
  private case class Row(key: java.lang.Long, t: Long, value: String)

  private def rows(seed: Int): Seq[Row] = {
    val rnd = new Random(seed)
    val keys = (0L until 40L).map(k => java.lang.Long.valueOf(k)) :+ null
    val out = for {
      k <- keys
      n = if (k != null && k < 3) 400 else rnd.nextInt(12) // a few hot keys, and keys with no rows
      t <- rnd.shuffle((0 until 1000).map(_ * 10L)).take(n) // distinct times per key, in no order
    } yield {
      val size = rnd.nextInt(100) match {
        case 0 => 0
        case 1 => RowArena.PageBytes + rnd.nextInt(1000) // a row larger than a page
        case 2 | 3 | 4 => RowArena.PageBytes / 2 - 40 + rnd.nextInt(80) // about half a page: page ends reached often
        case _ => rnd.nextInt(300)
      }
      Row(k, t, s"$k@$t:" + "x" * size) // says which row it is
    }
    rnd.shuffle(out)
  }

  private def unsafe(schema: StructType): Seq[Any] => InternalRow = {
    val project = UnsafeProjection.create(schema)
    values => project(new GenericInternalRow(values.toArray)).copy()
  }

  private def check(keyType: DataType, asKey: java.lang.Long => Any): Unit = {
    val schema = StructType(Seq(StructField("k", keyType), StructField("t", LongType), StructField("v", StringType)))
    val row = unsafe(schema)
    for (seed <- 1 to 3) {
      val data = rows(seed)
      val index = AsOfIndex.build(data.iterator.map(r => row(Seq(asKey(r.key), r.t, UTF8String.fromString(r.value)))),
                                  schema, 1)
      val rnd = new Random(seed + 100)
      for (_ <- 0 until 3000) {
        val key = if (rnd.nextInt(30) == 0) null else java.lang.Long.valueOf(rnd.nextInt(45).toLong)
        val t = rnd.nextInt(10100).toLong - 50
        val expected = data.filter(r => r.key == key && r.t <= t).sortBy(_.t).lastOption
        val probe = row(Seq(asKey(key), t, null))
        val got = Option(index.latest(probe, t)).map(h => Row(key, h.getLong(1), h.getUTF8String(2).toString))
        assertEquals(got, expected, s"seed $seed, key $key, t $t")
      }
    }
  }

  test("bigint keys: the latest row at or before t, as a brute force finds it") {
    check(LongType, identity)
  }

  test("string keys: the same answers through the HashMap path") {
    check(StringType, k => if (k == null) null else UTF8String.fromString(s"card$k"))
  }

  test("two rows of one key at one time are refused") {
    val schema = StructType(Seq(StructField("k", LongType), StructField("t", LongType), StructField("v", StringType)))
    val row = unsafe(schema)
    val twice = Iterator(row(Seq(7L, 5L, UTF8String.fromString("a"))), row(Seq(7L, 5L, UTF8String.fromString("b"))))
    val e = intercept[IllegalArgumentException](AsOfIndex.build(twice, schema, 1))
    assert(e.getMessage.contains("two rows for key 7 at the same time"), e.getMessage)
  }
}

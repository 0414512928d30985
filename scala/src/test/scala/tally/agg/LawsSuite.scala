package tally.agg

import scala.util.Random

import Catalogue.{Case, Ev, close}

/** The same oracle and law checks for every aggregator in [[Catalogue]], with IRs built from real updates. */
class LawsSuite extends munit.FunSuite {
  private val AsOf = 40L * 24 * 3600 * 1000000L

  /** Events as a caller sees them: nulls included (about 1 in 10), timestamps with many ties. */
  private def events(c: Case, r: Random, n: Int): Seq[Ev] = Seq.fill(n) {
    val ts = if (r.nextBoolean()) r.nextInt(20) * 3600L * 1000000L else math.abs(r.nextLong() % AsOf)
    (if (r.nextInt(10) == 0) null else c.gen(r), ts)
  }

  private def datasets(c: Case, seed: Long): Seq[(String, Seq[Ev])] = {
    val r = new Random(seed)
    val one = c.gen(r)
    Seq(
      "empty" -> Nil,
      "all-null" -> Seq.fill(5)((null, 7L)),
      "single" -> Seq((one, 5L)),
      "duplicates" -> (Seq.fill(4)((one, 9L)) ++ Seq((one, 3L), (one, 11L))),
      "random" -> events(c, r, 150))
  }

  /** Folds like the callers do: null values never reach update. */
  private def fold(c: Case, xs: Seq[Ev]): AnyRef =
    xs.foldLeft(c.agg.zero()) { case (s, (v, ts)) => if (v == null) s else c.agg.update(s, v, ts) }

  private def result(c: Case, s: AnyRef): Any = c.agg.finish(s, AsOf)
  private def nonNull(xs: Seq[Ev]) = xs.filter(_._1 != null)

  private def assertClose(c: Case, expected: Any, actual: Any, what: String): Unit =
    assert(close(expected, actual, c.tol), s"$c $what: expected $expected, got $actual")

  for (c <- Catalogue.cases) {
    test(s"$c matches its oracle on empty, all-null, single, duplicate and random data") {
      for (seed <- 1L to 4L; (name, xs) <- datasets(c, seed))
        assertClose(c, c.oracle(nonNull(xs), AsOf), result(c, fold(c, xs)), s"on $name (seed $seed)")
    }

    test(s"$c monoid laws: identity, associativity, commutativity; merge leaves b untouched") {
      for (seed <- 1L to 6L) {
        val r = new Random(seed * 31)
        val xs = events(c, r, 120)
        val (i, j) = { val a = r.nextInt(121); val b = r.nextInt(121); (math.min(a, b), math.max(a, b)) }
        val parts = Seq(xs.take(i), xs.slice(i, j), xs.drop(j))
        def ir(k: Int) = fold(c, parts(k))
        val whole = result(c, fold(c, xs))
        assertClose(c, result(c, ir(0)), result(c, c.agg.merge(c.agg.zero(), ir(0))), "zero merge a")
        assertClose(c, result(c, ir(1)), result(c, c.agg.merge(ir(1), c.agg.zero())), "a merge zero")
        val left = c.agg.merge(c.agg.merge(ir(0), ir(1)), ir(2))
        val right = c.agg.merge(ir(0), c.agg.merge(ir(1), ir(2)))
        assertClose(c, result(c, left), result(c, right), s"associativity (seed $seed)")
        assertClose(c, result(c, c.agg.merge(ir(0), ir(1))), result(c, c.agg.merge(ir(1), ir(0))), s"commutativity (seed $seed)")
        assertClose(c, whole, result(c, left), s"split-then-merge vs whole (seed $seed)")
        val b = ir(2); val before = c.agg.encode(b).toSeq
        c.agg.merge(ir(0), b)
        assertEquals(c.agg.encode(b).toSeq, before, s"$c merge changed b")
      }
    }

    test(s"$c encode/decode round trip, copy is independent") {
      for (seed <- 1L to 3L; (name, xs) <- datasets(c, seed)) {
        val s = fold(c, xs)
        val bytes = c.agg.encode(s)
        val back = c.agg.decode(bytes)
        assertClose(c, result(c, s), result(c, back), s"decoded $name")
        // Sketches may lay out a decoded hash map differently, so compare what the bytes mean, not the bytes.
        assertClose(c, result(c, s), result(c, c.agg.decode(c.agg.encode(back))), s"re-encoded $name")
        val copied = c.agg.copy(s)
        c.agg.update(s, c.gen(new Random(seed)), 1L)
        assertClose(c, c.oracle(nonNull(xs), AsOf), result(c, copied), s"copy of $name after the original changed")
      }
    }

    if (c.agg.isInstanceOf[Invertible[_]]) test(s"$c remove is the inverse of update") {
      val inv = c.agg.asInstanceOf[Invertible[AnyRef]]
      for (seed <- 1L to 4L) {
        val r = new Random(seed * 7)
        val (keep, drop) = (nonNull(events(c, r, 80)), nonNull(events(c, r, 80)))
        var s = fold(c, keep ++ drop)
        for ((v, ts) <- r.shuffle(drop)) s = inv.remove(s, v, ts)
        assertClose(c, c.oracle(keep, AsOf), result(c, s), s"after removing (seed $seed)")
        for ((v, ts) <- keep) s = inv.remove(s, v, ts)
        assertClose(c, c.oracle(Nil, AsOf), result(c, s), s"after removing everything (seed $seed)")
      }
    }
  }

  test("every IR kind has its own format byte") {
    val byClass = Catalogue.cases.map(c => c.agg.zero().getClass -> c.agg.encode(c.agg.zero())(0)).distinct
    val clashes = byClass.groupBy(_._2).filter(_._2.map(_._1).distinct.size > 1)
    assert(clashes.isEmpty, s"format bytes shared by different IRs: $clashes")
    val basic = Seq(Count, LongSum, DoubleSum, DecimalSum(2)).map(a => a.asInstanceOf[Aggregator[AnyRef]])
    val taken = basic.map(a => a.encode(a.zero())(0)).toSet
    assert(byClass.forall { case (cls, b) => !taken(b) || basic.exists(_.zero().getClass == cls) })
  }

  test("the catalogue covers every function") {
    assertEquals(Catalogue.cases.map(_.function).toSet, Aggregators.functions.toSet)
  }
}

package tally

import java.nio.file.{Files, Path, Paths}
import scala.jdk.CollectionConverters._

/** The house rule that keeps kernels reusable outside Spark: agg/ and window/ import nothing from Spark, and neither
  * does online/ (the stores and, later, the fetcher run in a server with no Spark session). A folder that is not
  * found, or holds no Scala file, fails: a check that reads nothing must not pass. */
class PuritySuite extends munit.FunSuite {
  private val root = Paths.get("scala/src/main/scala/tally")

  for (pkg <- Seq("agg", "window", "online")) test(s"$pkg/ does not import Spark") {
    val dir = root.resolve(pkg)
    assert(Files.isDirectory(dir), s"no folder $dir under ${Paths.get("").toAbsolutePath}: the purity check read nothing")
    val files = Files.walk(dir).iterator.asScala.filter(_.toString.endsWith(".scala")).toList
    assert(files.nonEmpty, s"no .scala file under $dir: the purity check read nothing")
    val offenders = files.filter((p: Path) => new String(Files.readAllBytes(p), "UTF-8").contains("org.apache.spark"))
    assertEquals(offenders.map(_.toString), Nil, "Spark belongs in tally/spark/, not in the pure kernels")
  }
}

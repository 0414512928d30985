package tally.online

import java.nio.file.{Files, Path}

/** Store URLs: each accepted form opens the store it names (real SQLite file, real redis-server, real cluster);
  * anything else is refused naming the URL and the accepted forms. */
class StoresSuite extends munit.FunSuite {
  private var dir: Path = _
  override def beforeAll(): Unit = dir = Files.createTempDirectory("tally-stores-")
  override def afterAll(): Unit = RedisServer.delete(dir)

  private def using[A](store: OnlineStore)(f: OnlineStore => A): A = try f(store) finally store.close()

  test("sqlite:/absolute/path opens that file, creating its folders") {
    val db = dir.resolve("a").resolve("b").resolve("tally.db")
    using(Stores.open("sqlite:" + db)) { s =>
      assert(s.isInstanceOf[SqliteStore])
      s.advanceWatermark("v", 1, 5L)
    }
    assert(Files.isRegularFile(db))
    using(SqliteStore(db))(s => assertEquals(s.watermark("v", 1), Some(5L)))
  }

  test("redis://host:port and redis://host:port/namespace open RedisStores, the namespace apart") {
    val redis = RedisServer.start()
    try {
      using(Stores.open(s"redis://127.0.0.1:${redis.port}"))(_.advanceWatermark("v", 1, 1L))
      using(Stores.open(s"redis://127.0.0.1:${redis.port}/prod"))(_.advanceWatermark("v", 1, 2L))
      using(RedisStore(redis.host, redis.port))(s => assertEquals(s.watermark("v", 1), Some(1L)))
      using(RedisStore(redis.host, redis.port, "prod"))(s => assertEquals(s.watermark("v", 1), Some(2L)))
    } finally redis.stop()
  }

  test("redis-cluster://h1:p1,h2:p2 opens a cluster store from some of its nodes") {
    val nodes = RedisServer.cluster(3)
    try {
      using(Stores.open(s"redis-cluster://127.0.0.1:${nodes(0).port},127.0.0.1:${nodes(1).port}")) { s =>
        s.advanceWatermark("v", 1, 3L)
        assertEquals(s.watermark("v", 1), Some(3L))
      }
    } finally nodes.foreach(_.stop())
  }

  test("any other URL is refused, naming it, why, and the forms tally opens") {
    Seq(
      "sqlite:relative/tally.db" -> "relative",
      "postgres://db:5432" -> "unknown form",
      "redis://localhost" -> "'localhost' is not host:port",
      "redis://localhost:99999" -> "'localhost:99999' is not host:port",
      "redis://localhost:6379/" -> "namespace",
      "redis-cluster://a:1,,b:2" -> "'' is not host:port",
      "" -> "unknown form"
    ).foreach { case (url, why) =>
      val e = intercept[IllegalArgumentException](Stores.open(url))
      assert(e.getMessage.contains(s"'$url'") && e.getMessage.contains(why) && e.getMessage.contains(Stores.Forms), e.getMessage)
    }
  }
}

package tally.online

import java.nio.charset.StandardCharsets.UTF_8

import redis.clients.jedis.util.JedisClusterCRC16

import scala.jdk.CollectionConverters._

/** The contract on one real redis-server, plus what is Redis's own: the layout and the addresses. */
class RedisStoreSuite extends OnlineStoreContract {
  private var server: RedisServer = _

  override def beforeAll(): Unit = server = RedisServer.start()
  override def afterAll(): Unit = if (server != null) server.stop()

  protected def emptyStore(): OnlineStore = { server.flushAll(); reopen() }
  protected def reopen(): OnlineStore = RedisStore(server.host, server.port)

  storeTest("one hash per view version and entity key, its braces the hash tag; one field per tile, stamp first") { store =>
    val key = EntityKey.of("c{1}", 7L)
    store.write(Seq(tile(key, 0, payload = "ir", stamp = 12), tile(key, Hour, Day)))
    store.advanceWatermark("card_velocity", 1, Hour); store.recordBatch("s", 3)
    val j = server.connection()
    try {
      val name = "tally:{card_velocity:1:sc%7B1%7D,i7}"
      assertEquals(j.keys("*").asScala.toSet, Set(name, "tally:watermarks", "tally:batches"))
      def stamped(stamp: Long, payload: String) = java.nio.ByteBuffer.allocate(8).putLong(stamp).array().toSeq ++ payload.getBytes(UTF_8)
      assertEquals(j.hgetAll(name.getBytes(UTF_8)).asScala.map { case (f, v) => new String(f, UTF_8) -> v.toSeq }.toMap,
        Map("3600000000:0" -> stamped(12, "ir"), "86400000000:3600000000" -> stamped(1, "ir")))
      assertEquals(JedisClusterCRC16.getSlot(name), JedisClusterCRC16.getSlot("card_velocity:1:sc%7B1%7D,i7"))
      assertEquals(j.zscore("tally:watermarks", "card_velocity:1").doubleValue, Hour.toDouble)
      assertEquals(j.hget("tally:batches", "s"), "3")
    } finally j.close()
  }

  test("a namespace keeps two deployments on one server apart") {
    server.flushAll()
    val (a, b) = (RedisStore(server.host, server.port, "dev"), RedisStore(server.host, server.port, "prod"))
    try {
      a.write(Seq(tile(card1, 0, payload = "dev"))); b.write(Seq(tile(card1, 0, payload = "prod")))
      assertEquals(a.read("card_velocity", 1, Seq(card1), 0, Day)(card1).map(text), Seq("dev"))
      assertEquals(b.read("card_velocity", 1, Seq(card1), 0, Day)(card1).map(text), Seq("prod"))
      assertEquals(a.prune("card_velocity", 1, Day), 1L)
      assertEquals(b.read("card_velocity", 1, Seq(card1), 0, Day)(card1).map(text), Seq("prod"))
    } finally { a.close(); b.close() }
  }

  test("a server that does not answer fails at open, naming the address") {
    val port = { val s = new java.net.ServerSocket(0); try s.getLocalPort finally s.close() }
    val e = intercept[OnlineStoreException](RedisStore("127.0.0.1", port))
    assert(e.getMessage.contains(s"127.0.0.1:$port"), e.getMessage)
  }

  test("a hash tally did not write is reported, not misread") {
    server.flushAll()
    val store = RedisStore(server.host, server.port)
    val j = server.connection()
    try {
      j.hset("tally:{card_velocity:1:scard_1}".getBytes(UTF_8), "3600000000:0".getBytes(UTF_8), "x".getBytes(UTF_8))
      val e = intercept[OnlineStoreException](store.read("card_velocity", 1, Seq(card1), 0, Day))
      assert(e.getMessage.contains("too short for a stamp"), e.getMessage)
      val g = intercept[OnlineStoreException](store.get(Seq(TileRequest("card_velocity", 1, Map(card1 -> Seq(TileRun.of(Hour, 0L)))))))
      assert(g.getMessage.contains("too short for a stamp") && g.getMessage.contains("3600000000:0"), g.getMessage)
    } finally { j.close(); store.close() }
  }

  test("without redis-server, the tests fail and say to run make setup") {
    val e = intercept[AssertionError](RedisServer.binary(path = "/nonexistent", fallbacks = Nil))
    assert(e.getMessage.contains("make setup"), e.getMessage)
  }
}

/** The same contract on a three-node Redis Cluster: every command stays within one slot. */
class RedisClusterStoreSuite extends OnlineStoreContract {
  private var nodes: Seq[RedisServer] = Nil

  override def beforeAll(): Unit = nodes = RedisServer.cluster(3)
  override def afterAll(): Unit = nodes.foreach(_.stop())

  protected def emptyStore(): OnlineStore = { nodes.foreach(_.flushAll()); reopen() }
  protected def reopen(): OnlineStore = RedisStore.cluster(nodes.take(1).map(n => n.host -> n.port))

  storeTest("entity keys spread over the nodes, each key's tiles on one") { store =>
    val keys = (0 until 60).map(i => EntityKey.of(s"card_$i"))
    store.write(keys.flatMap(k => Seq(tile(k, 0), tile(k, Hour))))
    val perNode = nodes.map { n => val j = n.connection(); try j.dbSize() finally j.close() }
    assertEquals(perNode.sum, 60L)
    assert(perNode.forall(_ > 0), s"hashes per node: $perNode")
  }
}

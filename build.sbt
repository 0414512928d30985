// tally's Scala side: aggregation kernels (agg/), the sweep engine (window/), the thin Spark layer (spark/)
// and the py4j entry point (bridge/). `sbt package` gives a thin JAR: Spark, Delta and DataSketches are
// provided by the Spark runtime (pyspark bundles Spark and DataSketches; Delta JARs are resolved at setup). The online
// store's drivers (sqlite-jdbc, Jedis) are ordinary dependencies, also resolved at setup into .tools/jars.

val sparkVersion       = "4.2.0"  // = the pinned pyspark
val deltaVersion       = "4.4.0"  // = the pinned delta-spark
val datasketchesVersion = "6.2.0" // = the datasketches-java that Spark 4.2 bundles
val sqliteJdbcVersion  = "3.54.1.0" // online store, embedded (= project/runtime-jars.xml)
val jedisVersion       = "8.0.2"    // online store, Redis and Redis Cluster (= project/runtime-jars.xml)

ThisBuild / scalaVersion := "2.13.18" // = the scala-library that pyspark 4.2.0 bundles
ThisBuild / organization := "dev.tally"
ThisBuild / version      := "0.1.0"

lazy val root = (project in file("."))
  .settings(
    name := "tally",
    Compile / scalaSource := baseDirectory.value / "scala" / "src" / "main" / "scala",
    Test / scalaSource    := baseDirectory.value / "scala" / "src" / "test" / "scala",
    Compile / resourceDirectory := baseDirectory.value / "scala" / "src" / "main" / "resources",
    Test / resourceDirectory    := baseDirectory.value / "scala" / "src" / "test" / "resources",
    Compile / packageBin / artifactPath := baseDirectory.value / "target" / "tally.jar",
    scalacOptions ++= Seq("-deprecation", "-feature", "-unchecked", "-release", "17"),
    libraryDependencies ++= Seq(
      "org.apache.spark"  %% "spark-sql"              % sparkVersion        % Provided,
      "io.delta"           % "delta-spark_4.2_2.13"   % deltaVersion        % Provided,
      "org.apache.datasketches" % "datasketches-java" % datasketchesVersion % Provided,
      // Not bundled by Spark: tally's users get them with the JAR (make setup copies them to .tools/jars).
      "org.xerial"         % "sqlite-jdbc"            % sqliteJdbcVersion,
      "redis.clients"      % "jedis"                  % jedisVersion,
      "org.scalameta"     %% "munit"                  % "1.2.4"             % Test
    ),
    Test / fork := true,
    Test / javaOptions ++= Seq(
      "-Xmx3g",
      "-Dspark.driver.host=127.0.0.1",
      "--add-opens=java.base/java.lang=ALL-UNNAMED",
      "--add-opens=java.base/java.lang.invoke=ALL-UNNAMED",
      "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED",
      "--add-opens=java.base/java.io=ALL-UNNAMED",
      "--add-opens=java.base/java.net=ALL-UNNAMED",
      "--add-opens=java.base/java.nio=ALL-UNNAMED",
      "--add-opens=java.base/java.util=ALL-UNNAMED",
      "--add-opens=java.base/java.util.concurrent=ALL-UNNAMED",
      "--add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED",
      "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
      "--add-opens=java.base/sun.nio.cs=ALL-UNNAMED",
      "--add-opens=java.base/sun.security.action=ALL-UNNAMED",
      "--add-opens=java.base/sun.util.calendar=ALL-UNNAMED"
    ),
    Test / envVars := Map("SPARK_LOCAL_IP" -> "127.0.0.1"),
    Test / parallelExecution := false
  )

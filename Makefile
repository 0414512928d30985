# tally: every target sets up what it needs, idempotently; a second run reuses the setup.
# Needs Java 17+, Python 3.10+, and Maven or sbt; the network only at setup (PyPI, Maven Central).

PYTHON      ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
TOOLS       := .tools
SBT_VERSION := $(shell sed -n 's/^sbt.version=//p' project/build.properties)
SBT_LAUNCH  := $(TOOLS)/sbt-launch-$(SBT_VERSION).jar
MVN_DEP     := org.apache.maven.plugins:maven-dependency-plugin:3.8.1
RUNTIME_JARS := $(TOOLS)/jars/.resolved
JAR         := target/tally.jar
SCALA_SRC   := $(shell find scala -name '*.scala' 2>/dev/null) build.sbt project/build.properties

# sbt from PATH when there is one; otherwise the launcher JAR from Maven Central, told to use only the
# repositories listed in project/repositories.
ifeq ($(shell command -v sbt 2>/dev/null),)
SBT_DEP := $(SBT_LAUNCH)
SBT     := java -Xmx2g -Dsbt.repository.config=project/repositories -Dsbt.override.build.repos=true \
           -Dsbt.boot.directory=$(TOOLS)/sbt-boot -Dsbt.global.base=$(TOOLS)/sbt-global \
           -Dsbt.server.forcestart=false -Dsbt.log.noformat=true -Dsbt.supershell=false -Dsbt.batch=true \
           -jar $(SBT_LAUNCH)
else
SBT_DEP :=
SBT     := sbt -batch -Dsbt.supershell=false
endif

export SPARK_LOCAL_IP := 127.0.0.1
export PYSPARK_PYTHON := $(abspath $(PY))

.PHONY: setup redis jar test test-scala test-python demo bench lint clean

setup: $(VENV)/.installed $(RUNTIME_JARS) $(JAR) redis

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

$(SBT_LAUNCH):
	mkdir -p $(TOOLS)
	mvn -q $(MVN_DEP):copy -Dartifact=org.scala-sbt:sbt-launch:$(SBT_VERSION) -DoutputDirectory=$(TOOLS) -Dmdep.overWriteReleases=false

$(RUNTIME_JARS): project/runtime-jars.xml
	rm -rf $(TOOLS)/jars
	mvn -q -f project/runtime-jars.xml package
	touch $@

# The Redis online-store tests start a real redis-server: installed from Debian's package where it is missing and
# the machine allows (root); elsewhere a message says how, and those tests fail until it is there.
redis:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	  else \
	    echo "redis-server is missing and this user cannot apt-get it: install it (Debian: sudo apt-get install" \
	         "redis-server; macOS: brew install redis), or the Redis online-store tests will fail" >&2; \
	  fi; }

jar: $(JAR)

$(JAR): $(SCALA_SRC) $(SBT_DEP)
	$(SBT) package < /dev/null

test-scala: $(SBT_DEP)
	$(SBT) test < /dev/null

# Time is UTC whatever the machine's zone: the whole suite runs in a half-hour-offset zone east of UTC without DST,
# and the time-semantics tests (the rules of DESIGN.md and the trust cases) again in a zone west of UTC with DST.
TIME_TESTS := tests/test_time_semantics.py tests/test_trust.py

test-python: setup
	TZ=Asia/Kolkata $(PY) -m pytest tests -q
	TZ=America/Los_Angeles $(PY) -m pytest $(TIME_TESTS) -q -m "not slow"

test: setup test-scala test-python

demo: setup
	$(PY) -m tally.cli demo

bench: setup
	$(PY) bench/run.py

lint: $(VENV)/.installed
	$(PY) -m ruff check python tests bench features examples

clean:
	rm -rf target project/target project/project $(VENV) $(TOOLS) warehouse spark-warehouse .pytest_cache

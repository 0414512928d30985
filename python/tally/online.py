"""Online serving from Python: the store's URL, serving specs, `materialize`, in-process `get`, and `OnlineClient`.

The fetcher is Scala (it decodes and merges the kernels' IRs); this module only crosses to it (`tally.kernels`) or
talks to `tally serve` over HTTP. Both answer the same JSON (docs/serving.md), decoded here in one place into
Python values: Decimal for decimals, aware UTC datetimes for timestamps, floats (nan, inf) for doubles.

Time is UTC, explicitly: a request time is an aware datetime, an ISO string with an offset, or epoch
microseconds; naive ones are refused rather than read in some zone.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from tally import config, kernels, registry, training, utc
from tally.definitions import FeatureView
from tally.errors import BadRequestError, ServingError, SetupError, SpecChangedError, UsageError

SCHEMES = ("sqlite:", "redis://", "redis-cluster://")


# --- where things live -------------------------------------------------------------------------------------------

def store_url(url: str | None = None, *, warehouse: str | Path = "warehouse") -> str:
    """The online store's URL, checked: `url`, else the configured `online_store` (tally.toml, $TALLY_ONLINE_STORE),
    else the SQLite file under `warehouse`. A relative SQLite path is made absolute (the server may run elsewhere)."""
    if url is None:
        cfg = config.load()
        explicit = not cfg.origins["online_store"].startswith("default")
        url = cfg.online_store if explicit else config.default_online_store(warehouse)
    url = str(url).strip()
    if url.startswith("sqlite:"):
        path = url[len("sqlite:"):]
        if not path:
            raise UsageError("online store 'sqlite:' names no file", hint="write sqlite:/path/to/tally.db")
        return f"sqlite:{Path(path).resolve()}"
    for scheme in ("redis://", "redis-cluster://"):
        if url.startswith(scheme):
            nodes = url[len(scheme):].split("/", 1)[0]
            for node in nodes.split(","):
                host, _, port = node.rpartition(":")
                if not host or not port.isdigit():
                    raise UsageError(f"online store {url!r}: '{node}' is not host:port",
                                     hint=f"write {scheme}host:port" + ("[/namespace]" if scheme == "redis://" else ",host:port"))
            return url
    raise UsageError(f"online store {url!r} is not a store URL",
                     hint="use sqlite:/path/to/tally.db, redis://host:port[/namespace] or redis-cluster://host:port,host:port")


def views_dir(warehouse: str | Path) -> Path:
    """Where serving specs live: what `tally serve` reads to know the online views."""
    return Path(warehouse).resolve() / "online" / "views"


def spec_path(warehouse: str | Path, view: str, version: int) -> Path:
    return views_dir(warehouse) / f"{view}.v{version}.json"


def write_spec(warehouse: str | Path, serving_spec: dict, fingerprint: str) -> Path:
    """Write one view version's serving spec atomically (a temporary file renamed over the old one), so a server
    starting meanwhile reads the old file or the new one, never half of one. The view's fingerprint goes with it:
    tiles of one version must all come from one definition."""
    spec = serving_spec["spec"]
    path = spec_path(warehouse, spec["view"], spec["version"])
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({**serving_spec, "fingerprint": fingerprint}, f, sort_keys=True, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_specs(warehouse: str | Path) -> list[dict]:
    """Every serving spec under the warehouse (each view version `tally materialize` loaded), by file name."""
    folder = views_dir(warehouse)
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.v*.json"))] if folder.is_dir() else []


def read_spec(warehouse: str | Path, view: str, version: int) -> dict | None:
    path = spec_path(warehouse, view, version)
    return json.loads(path.read_text()) if path.is_file() else None


def _require_specs(warehouse) -> list[dict]:
    specs = read_specs(warehouse)
    if not specs:
        raise UsageError(f"no online views: {views_dir(warehouse)} holds no serving specs",
                         hint="run `tally materialize VIEW...` first (it loads the tiles and writes the specs)")
    return specs


# --- materialize -------------------------------------------------------------------------------------------------

def require_servable(view: FeatureView) -> None:
    """Only temporal views declared online=True have tiles: their windows are hopped, so serving equals training."""
    if view.accuracy == "snapshot":
        raise UsageError(f"view '{view.name}' is a snapshot view (accuracy='snapshot'): it is served from its daily "
                         "Delta table, not from tiles",
                         hint=f"to serve '{view.name}' online, make it temporal and online=True (and bump its version)")
    if not view.online:
        raise UsageError(f"view '{view.name}' is not an online view",
                         hint=f"declare FeatureView(..., online=True) for '{view.name}' and bump its version: "
                              "online windows are hopped, so its values change")


def _stamp(view: FeatureView, source_pin: dict) -> int:
    """The run id tiles carry: a hash of what determines their content (the definition and the source's rows), so a
    rerun over the same rows applies nothing (`applied` 0) and changed rows replace every tile they touch. The
    start is left out on purpose: the tile job rounds it down to the longest tile, so every tile it writes is whole
    and the same whatever the start, and a run with an earlier `start` applies only the older tiles. Negative, so
    it never equals a stream's micro-batch id (those count up from 0)."""
    text = json.dumps([view.fingerprint, source_pin], sort_keys=True, default=str)
    return -(int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 2) - 1


def materialize(spark, views: Sequence[FeatureView], *, warehouse: str | Path = "warehouse", data=None,
                store: str | None = None, start: dt.date | dt.datetime | str | None = None,
                versions: Mapping[str, int] | None = None) -> list[dict]:
    """Build the tiles of each online view from its source and load them into the online store; write its serving
    spec. Returns, per view: view, version, events, keys, tiles, applied, from_us, watermark_us, store, spec_path.

    By default it loads what requests at the source's newest event time need (the longest window or ttl before
    it; everything for lifetime windows); `start` (a day, 00:00 UTC, or an aware instant) loads what requests
    from then on need. Rerunning over the same rows applies nothing; it never changes values (see `_stamp`).
    `versions` pins Delta sources to a version by source name
    (a stream's bootstrap loads exactly the rows before the commit it starts from).
    """
    from tally import store as offline

    for v in views:
        require_servable(v)
    url = store_url(store, warehouse=warehouse)
    for v in views:
        registry.require_unchanged(registry.plan_view(v, offline.stored_versions(spark, warehouse, v.name)))
        stored = read_spec(warehouse, v.name, v.version)
        if stored is not None and stored.get("fingerprint") != v.fingerprint:
            raise SpecChangedError(
                f"view '{v.name}' version {v.version} was materialized with a different definition "
                f"(fingerprint {stored.get('fingerprint')}, now {v.fingerprint})",
                hint=f"bump version= of '{v.name}' to {v.version + 1}: tiles of one version come from one definition")
    if url.startswith("sqlite:"):
        Path(url[len("sqlite:"):]).parent.mkdir(parents=True, exist_ok=True)
    from_us = kernels.MIN_US if start is None else _start_us(start)
    pins: dict = {}
    events = training.checked_sources(spark, views, data=data, versions=versions, pins=pins, warehouse=warehouse)
    out = []
    for v in views:
        report = kernels.materialize(spark, events[v.source.name], v, url, from_us, _stamp(v, pins[v.source.name]))
        path = write_spec(warehouse, report.pop("serving_spec"), v.fingerprint)
        out.append({**report, "store": url, "spec_path": str(path)})
    return out


def _start_us(start) -> int:
    if isinstance(start, dt.datetime) and start.tzinfo is None:
        raise UsageError(f"start {start.isoformat()} is a naive datetime",
                         hint="give a day (00:00 UTC) or an aware datetime, such as datetime(..., tzinfo=timezone.utc)")
    return utc.micros(start)


def status(spark, view: FeatureView, *, warehouse: str | Path = "warehouse", store: str | None = None) -> dict:
    """What `describe` shows of an online view: store, watermark (aware UTC, or None), serving spec path or None.

    A SQLite store that does not exist yet is reported as such, not created."""
    url = store_url(store, warehouse=warehouse)
    spec = spec_path(warehouse, view.name, view.version)
    out = {"store": url, "spec_path": str(spec) if spec.is_file() else None, "watermark": None, "problem": None}
    if url.startswith("sqlite:") and not Path(url[len("sqlite:"):]).is_file():
        out["problem"] = "no store file yet (nothing materialized)"
        return out
    try:
        mark = kernels.online_status(spark, url, view.name, view.version)["watermark_us"]
    except ServingError as err:
        out["problem"] = err.message
        return out
    out["watermark"] = None if mark is None else utc.from_micros(mark)
    return out


# --- requests and answers (one wire format for the in-process call and the server) ------------------------------

class FeatureValues(dict):
    """One lookup's values by "view:feature". A dict, so `pandas.DataFrame(list_of_them)` is a table; `at` is the
    request time (aware UTC) and `types` each value's Spark type (`bigint`, `decimal(38,2)`, `array<string>`)."""

    def __init__(self, values: Mapping[str, Any], at: dt.datetime | None, types: Mapping[str, str]):
        super().__init__(values)
        self.at = at
        self.types = dict(types)

    def __repr__(self) -> str:
        return f"FeatureValues(at={self.at.isoformat() if self.at else None}, {dict.__repr__(self)})"


def request_time(at) -> int | None:
    """A request time as epoch microseconds: an aware datetime, an ISO string with an offset ('...Z'), or an int of
    microseconds; None means now (the server's clock). Naive times are refused: which zone would they be in?"""
    if at is None:
        return None
    if isinstance(at, bool):
        raise UsageError(f"at={at!r} is not a time")
    if isinstance(at, int):
        return at
    if isinstance(at, str):
        try:
            parsed = dt.datetime.fromisoformat(at.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise UsageError(f"at={at!r} is not an ISO timestamp", hint="write 2026-03-01T12:00:00Z") from None
        if parsed.tzinfo is None:
            raise UsageError(f"at={at!r} has no UTC offset", hint=f"write {at.strip()}Z for UTC, or add an offset such as +01:00")
        return utc.micros(parsed)
    if isinstance(at, dt.datetime):
        if at.tzinfo is None or at.utcoffset() is None:
            raise UsageError(f"at={at.isoformat()} is a naive datetime",
                             hint="give an aware one, such as datetime(..., tzinfo=timezone.utc): time is UTC, explicitly")
        return utc.micros(at)
    raise UsageError(f"at must be an aware datetime, an ISO string with an offset or epoch microseconds, "
                     f"got {type(at).__name__}")


def _key_value(v):
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, dt.datetime):
        return utc.micros(v) if v.tzinfo else request_time(v)  # refuses naive
    if isinstance(v, dt.date):
        return v.isoformat()
    if hasattr(v, "item"):  # numpy scalars
        return v.item()
    return v


def _entities(entities) -> dict:
    if not isinstance(entities, Mapping) or not entities:
        raise UsageError(f"entities must be a non-empty mapping of key column to value, got {entities!r}")
    return {str(k): _key_value(v) for k, v in entities.items()}


def make_request(features, entities=None, rows=None, at=None) -> dict:
    """The POST /features body: one lookup (`entities`, `at`) or a batch (`rows`: [{"entities": {...}, "at": ...}])."""
    refs = [features] if isinstance(features, str) else list(features)
    if not refs or not all(isinstance(r, str) for r in refs):
        raise UsageError(f"features must be 'view' or 'view:feature' strings, got {features!r}")
    if (entities is None) == (rows is None):
        raise UsageError("give entities= (one lookup) or rows= (a batch of lookups), not both or neither")
    if rows is None:
        body = {"features": refs, "entities": _entities(entities)}
        when = request_time(at)
        return body if when is None else {**body, "at": when}
    if at is not None:
        raise UsageError("at= goes with entities=; in rows=, each row carries its own 'at'")
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping) or "entities" not in row or set(row) - {"entities", "at"}:
            raise UsageError(f"rows[{i}] must be {{'entities': {{...}}, 'at': ...}}, got {row!r}")
        when = request_time(row.get("at"))
        out.append({"entities": _entities(row["entities"]), **({} if when is None else {"at": when})})
    return {"features": refs, "rows": out}


# A request holds at most 10,000 rows (the fetcher's limit) and the server reads at most 1 MiB of body: longer
# batches go in several requests, and their rows come back in order as one list.
IN_PROCESS_ROWS = 10_000
CLIENT_ROWS = 2_000


def _in_batches(request: dict, size: int, call):
    if "rows" not in request or len(request["rows"]) <= size:
        return call(request)
    rows = request["rows"]
    return [value for i in range(0, len(rows), size) for value in call({**request, "rows": rows[i:i + size]})]


def decode(answer: dict) -> FeatureValues | list[FeatureValues]:
    """The server's JSON answer as Python values: one FeatureValues, or a list for a batch."""
    types = answer["types"]

    def one(part: dict) -> FeatureValues:
        values = {ref: _python(v, types[ref]) for ref, v in part["values"].items()}
        return FeatureValues(values, _python(part.get("at"), "timestamp"), types)

    return [one(r) for r in answer["rows"]] if "rows" in answer else one(answer)


_INTEGERS = ("bigint", "int", "smallint", "tinyint")


def _python(v, kind: str):
    """A JSON value of Spark type `kind` as Python: decimals exact, timestamps aware UTC, doubles with nan/inf."""
    if v is None:
        return None
    if kind.startswith("array<"):
        return [_python(x, kind[len("array<"):-1]) for x in v]
    if kind.startswith("struct<"):
        return {name: _python(v.get(name), t) for name, t in _fields(kind[len("struct<"):-1])}
    if kind.startswith("decimal"):
        return Decimal(str(v))
    if kind in ("double", "float"):
        return float(v)  # float("NaN"), float("Infinity") and float("-Infinity") too
    if kind in _INTEGERS:
        return int(v)
    if kind == "timestamp":
        return utc.from_micros(v) if isinstance(v, int) else dt.datetime.fromisoformat(v.replace("Z", "+00:00")).astimezone(utc.UTC)
    if kind == "date":
        return dt.date.fromisoformat(v)
    return v


def _fields(body: str) -> list[tuple[str, str]]:
    """`item:string,count:bigint` -> [("item", "string"), ("count", "bigint")], nested types kept whole."""
    out, depth, start = [], 0, 0
    for i, ch in enumerate(body + ","):
        depth += ch == "<"
        depth -= ch == ">"
        if ch == "," and depth == 0:
            name, _, kind = body[start:i].partition(":")
            out.append((name.strip(), kind.strip()))
            start = i + 1
    return out


def get(spark, features, entities=None, rows=None, at=None, *, warehouse: str | Path = "warehouse",
        store: str | None = None):
    """Fetch online values in this process (notebooks, tests): what `tally serve` answers, without a server.

    `features` are "view" or "view:feature" references; give `entities` ({"card_id": "c_1"}) and `at` for one lookup
    (a FeatureValues), or `rows` ([{"entities": {...}, "at": ...}]) for a batch (a list of them). Bad requests raise
    BadRequestError naming the culprit."""
    request = make_request(features, entities, rows, at)
    specs = _require_specs(warehouse)
    url = store_url(store, warehouse=warehouse)
    return _in_batches(request, IN_PROCESS_ROWS, lambda part: decode(kernels.fetch(spark, url, specs, part)))


def typed_keys(warehouse: str | Path, refs: Sequence[str], keys: Mapping[str, str]) -> dict:
    """Key values typed from text (the shell's `--key card_id=c_1 --key bin=411111`) by the key types in the
    serving specs of the views `refs` name; a key no spec types stays text (the fetcher then names it if wrong)."""
    names = {ref.partition(":")[0] for ref in refs}
    newest: dict[str, dict] = {}
    for spec in read_specs(warehouse):
        name = spec["spec"]["view"]
        if name in names and spec["spec"]["version"] >= newest.get(name, {"spec": {"version": -1}})["spec"]["version"]:
            newest[name] = spec
    types = {k: t for spec in newest.values() for k, t in spec.get("key_types", {}).items()}
    out = {}
    for name, text in keys.items():
        kind = types.get(name, "string")
        try:
            if kind in _INTEGERS:
                out[name] = int(text)
            elif kind in ("double", "float"):
                out[name] = float(text)
            elif kind == "boolean":
                out[name] = {"true": True, "false": False}[text.lower()]
            else:
                out[name] = text
        except (ValueError, KeyError):
            raise UsageError(f"key {name}={text!r} is not a {kind}", hint=f"the views' key '{name}' is {kind}") from None
    return out


def show(value) -> str:
    """A value as `online-get` prints it: JSON-like, timestamps in ISO UTC, decimals exact."""
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=show, ensure_ascii=False)
    if isinstance(value, Decimal):
        return str(value)
    return "null" if value is None else str(value)


# --- the server process ------------------------------------------------------------------------------------------

def server_command(*, store: str, views: Path, host: str, port: int, threads: int) -> list[str]:
    """The `java` command line of the HTTP server: the tally JAR, the runtime JARs (Delta, SQLite, Jedis) and
    PySpark's JARs (Spark's and Jackson's classes the JAR was compiled against), all from this installation."""
    import shutil

    import pyspark

    from tally.spark import delta_jars, jar_path

    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home and (Path(home) / "bin" / "java").is_file() else shutil.which("java")
    if not java:
        raise SetupError("no `java` found to run the server", hint="install Java 17+ or set JAVA_HOME")
    jar = jar_path()
    if not jar.is_file():
        raise SetupError(f"the tally JAR is missing: {jar}", hint="run `make jar` (or `make setup`) in the tally checkout")
    spark_jars = Path(pyspark.__file__).parent / "jars"
    classpath = [str(jar), *map(str, delta_jars()), str(spark_jars / "*")]
    return [java, "-cp", os.pathsep.join(classpath), "tally.online.Server", "--store", store, "--views", str(views),
            "--host", host, "--port", str(port), "--threads", str(threads)]


def serve(*, warehouse: str | Path, store: str | None = None, host: str = "127.0.0.1", port: int = 8765,
          threads: int = 8, echo=print) -> int:
    """Run `tally serve` in the foreground: start the JVM server, pass its output on (`echo`, line by line, so the
    "listening on" line shows at once), and forward SIGINT and SIGTERM to it. Returns 0 after a stop by signal;
    raises ServingError when the server exits by itself with a failure."""
    import signal
    import subprocess

    _require_specs(warehouse)
    cmd = server_command(store=store_url(store, warehouse=warehouse), views=views_dir(warehouse), host=host, port=port,
                         threads=threads)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, bufsize=1)
    stopped: list[int] = []

    def forward(signum, _frame):
        stopped.append(signum)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for line in proc.stdout:
            echo(line.rstrip("\n"))
        code = proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if proc.poll() is None:
            proc.terminate()
            proc.wait()
    if stopped or code == 0:
        return 0
    raise ServingError(f"the tally server exited with status {code}", hint="see its messages above (stderr)")


# --- the HTTP client ---------------------------------------------------------------------------------------------

class OnlineClient:
    """A client of `tally serve`: `OnlineClient("http://127.0.0.1:8765").get(["card_velocity"], {"card_id": "c_1"})`.

    Standard library only (urllib). A request the server refuses (4xx) raises BadRequestError with the server's
    message; an unreachable or failing server raises ServingError."""

    def __init__(self, url: str = "http://127.0.0.1:8765", *, timeout: float = 10.0):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def get(self, features, entities: Mapping[str, Any], at=None) -> FeatureValues:
        return decode(self._call("POST", "/features", make_request(features, entities=entities, at=at)))

    def get_rows(self, features, rows: Sequence[Mapping[str, Any]]) -> list[FeatureValues]:
        return _in_batches(make_request(features, rows=rows), CLIENT_ROWS,
                           lambda part: decode(self._call("POST", "/features", part)))

    def health(self) -> dict:
        """{"status": "ok", "views": [{"view", "version", "watermark_us"}, ...]}"""
        return self._call("GET", "/health")

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        import urllib.error
        import urllib.request

        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            try:
                message = json.loads(text)["error"]
            except (ValueError, KeyError, TypeError):
                message = text.strip() or exc.reason
            details = {"status": exc.code, "url": self.url + path}
            if 400 <= exc.code < 500:
                raise BadRequestError(str(message), details=details) from None
            raise ServingError(f"the tally server at {self.url} failed ({exc.code}): {message}", details=details) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ServingError(f"cannot reach the tally server at {self.url}: {reason}",
                               hint="start it with `tally serve` (and check its --host and --port)") from None

    def __repr__(self) -> str:
        return f"OnlineClient({self.url!r})"


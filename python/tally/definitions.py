"""What data scientists declare: Entity, Source, Window, Aggregation, FeatureView.

Frozen, keyword-friendly dataclasses, validated when built (raising `DefinitionError` naming the view and the
field), knowing nothing of Spark. A view turns into the versioned JSON spec that crosses to Scala, and its
fingerprint is a hash of that canonical spec.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tally.errors import DefinitionError

SPEC_VERSION = 1

_UNITS_US = {"us": 1, "ms": 1_000, "s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000, "d": 86_400_000_000,
             "w": 7 * 86_400_000_000}
_DURATION = re.compile(r"^\s*(\d+)\s*(us|ms|s|m|h|d|w)\s*$")

# function -> (needs a column, default parameters). Mirrors tally.agg.Aggregators on the Scala side.
FUNCTIONS: dict[str, tuple[bool, dict[str, Any]]] = {
    "count": (False, {}),
    "sum": (True, {}),
    "mean": (True, {}),
    "min": (True, {}),
    "max": (True, {}),
    "variance": (True, {}),
    "variance_pop": (True, {}),
    "stddev": (True, {}),
    "stddev_pop": (True, {}),
    "first": (True, {}),
    "last": (True, {}),
    "last_k": (True, {"k": 5}),
    "time_since_last": (False, {}),
    "approx_distinct": (True, {"lg_k": 12}),
    "approx_percentile": (True, {"quantiles": [0.5], "k": 200, "relative_error": 0.01}),
    "top_k": (True, {"k": 5}),
    "decayed_sum": (True, {"half_life": "1d"}),
    "decayed_count": (False, {"half_life": "1d"}),
}

_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


def parse_duration(text: str, *, where: str) -> int:
    """'90s', '5m', '24h', '7d', '2w' -> microseconds."""
    match = _DURATION.match(str(text))
    if not match:
        raise DefinitionError(
            f"{where}: '{text}' is not a duration",
            hint="write a whole number and a unit: us, ms, s, m, h, d or w (for example '30m', '24h', '7d')",
        )
    return int(match.group(1)) * _UNITS_US[match.group(2)]


def _check_name(name: str, what: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise DefinitionError(f"{what} name {name!r} is not valid",
                              hint="use lower-case letters, digits and underscores, starting with a letter")


@dataclass(frozen=True)
class Entity:
    """A payment entity (card, customer, merchant, issuer) identified by one or more key columns."""

    name: str
    keys: tuple[str, ...]
    description: str = ""

    def __post_init__(self) -> None:
        _check_name(self.name, "entity")
        keys = (self.keys,) if isinstance(self.keys, str) else tuple(self.keys)
        if not keys:
            raise DefinitionError(f"entity '{self.name}': keys must name at least one column")
        object.__setattr__(self, "keys", keys)


@dataclass(frozen=True)
class Check:
    """A data contract on one column that every row must meet; rows that fail are counted and shown.

    Build with the constructors: `Check.ge("amount", 0)`, `Check.le(...)`, `Check.between("rate", 0, 1)`,
    `Check.isin("currency", ["USD", "EUR"])`, `Check.not_null("merchant_id")`, `Check.not_nan("score")`.
    """

    column: str
    kind: str
    args: tuple = ()

    KINDS = ("ge", "le", "between", "isin", "not_null", "not_nan")

    def __post_init__(self) -> None:
        if self.kind not in self.KINDS:
            raise DefinitionError(f"check on '{self.column}': unknown kind '{self.kind}'", hint=f"use {self.KINDS}")
        object.__setattr__(self, "args", tuple(self.args))

    @property
    def name(self) -> str:
        args = ", ".join(repr(list(a)) if isinstance(a, tuple) else repr(a.isoformat()) if hasattr(a, "isoformat")
                         else repr(a) for a in self.args)
        return f"{self.column} {self.kind}({args})" if args else f"{self.column} {self.kind}"

    @classmethod
    def ge(cls, column: str, value) -> Check:
        return cls(column, "ge", (value,))

    @classmethod
    def le(cls, column: str, value) -> Check:
        return cls(column, "le", (value,))

    @classmethod
    def between(cls, column: str, low, high) -> Check:
        return cls(column, "between", (low, high))

    @classmethod
    def isin(cls, column: str, values) -> Check:
        return cls(column, "isin", (tuple(values),))

    @classmethod
    def not_null(cls, column: str) -> Check:
        return cls(column, "not_null")

    @classmethod
    def not_nan(cls, column: str) -> Check:
        return cls(column, "not_nan")


@dataclass(frozen=True)
class Source:
    """Where events come from: a path (parquet, delta, csv, json), a table, or a callable returning a DataFrame.

    `timestamp` is the event time; `available_at` (optional) is when the row became known — a fraud label is
    known when the dispute is filed, not at the charge. `columns` derives columns with Spark SQL expressions,
    `filter` keeps rows with a Spark SQL predicate, `timezone` reads naive timestamps in that zone (default
    UTC), `id` names an event id column that must be unique. Contracts: `schema` declares column types (Spark SQL
    type names), `checks` are row-level Checks, `timestamp_bounds` the plausible event-time range, and
    `on_invalid` is the policy when rows fail: "fail" (default: nothing is written) or "quarantine" (failing rows
    go to a Delta quarantine table with the reason, good rows proceed).
    """

    name: str
    timestamp: str
    path: str | None = None
    format: str = "parquet"
    table: str | None = None
    dataframe: Callable[..., Any] | None = field(default=None, compare=False)
    available_at: str | None = None
    columns: Mapping[str, str] = field(default_factory=dict)
    filter: str | None = None
    timezone: str | None = None
    id: str | None = None
    schema: Mapping[str, str] = field(default_factory=dict)
    checks: Sequence[Check] = ()
    timestamp_bounds: tuple[str, str] = ("1970-01-01", "2100-01-01")
    on_invalid: str = "fail"
    description: str = ""

    def __post_init__(self) -> None:
        _check_name(self.name, "source")
        if self.on_invalid not in ("fail", "quarantine"):
            raise DefinitionError(f"source '{self.name}': on_invalid must be 'fail' or 'quarantine', got {self.on_invalid!r}")
        object.__setattr__(self, "schema", dict(self.schema))
        object.__setattr__(self, "checks", tuple(self.checks))
        object.__setattr__(self, "timestamp_bounds", tuple(self.timestamp_bounds))
        given = [x for x in (self.path, self.table, self.dataframe) if x is not None]
        if len(given) != 1:
            raise DefinitionError(f"source '{self.name}': give exactly one of path=, table= or dataframe=")
        if self.format not in ("parquet", "delta", "csv", "json", "orc"):
            raise DefinitionError(f"source '{self.name}': unknown format '{self.format}'",
                                  hint="use parquet, delta, csv, json or orc")
        object.__setattr__(self, "columns", dict(self.columns))

    def spec(self) -> dict:
        """What determines the rows: not where they live (path, table: configuration), but how they are read.

        A callable source is fingerprinted by its code, so editing the function changes the fingerprint.
        """
        return {
            "name": self.name, "timestamp": self.timestamp, "available_at": self.available_at,
            "format": self.format, "code": _code_hash(self.dataframe) if self.dataframe else None,
            "columns": dict(sorted(self.columns.items())), "filter": self.filter, "timezone": self.timezone,
            "id": self.id,
        }


def _code_hash(fn: Callable) -> str:
    """A hash of a callable's source text (its bytecode and constants when the source is not available)."""
    import inspect

    try:
        text = inspect.getsource(fn)
    except (OSError, TypeError):
        code = getattr(fn, "__code__", None)
        text = repr((code.co_code, code.co_consts, code.co_names)) if code else getattr(fn, "__qualname__", repr(fn))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Window:
    """A time window: `length` ('24h'; None = lifetime), `delay` ('7d': end the window 7 days before the
    query), `closed` ('left', the leakage-safe default, excludes events at the window's end; 'right' includes
    them, such as the query's own row), `hop` ('1h': the window's start is rounded down to a multiple of the hop
    since the UTC epoch, so online serving merges whole tiles; its end stays exact). Offline paths compute hopped
    windows exactly too, so training equals serving."""

    length: str | None
    delay: str | None = None
    closed: str = "left"
    hop: str | None = None

    def __post_init__(self) -> None:
        where = f"window {self.length!r}" + (f" with delay {self.delay!r}" if self.delay is not None else "")
        if self.length is not None and self.length_us <= 0:
            raise DefinitionError(f"{where}: length must be positive")
        if self.delay is not None:
            if str(self.delay).strip().startswith("-"):
                raise DefinitionError(f"{where}: delay '{self.delay}' is negative",
                                      hint="a delay moves the window into the past; write it as a positive duration")
            parse_duration(self.delay, where=where)
        if self.closed not in ("left", "right"):
            raise DefinitionError(f"{where}: closed must be 'left' or 'right', got {self.closed!r}")
        if self.hop is not None:
            if self.length is None:
                raise DefinitionError(f"{where}: a lifetime window takes no hop", hint="drop hop=, or give a length")
            if parse_duration(self.hop, where=f"{where}: hop") > self.length_us:
                raise DefinitionError(f"{where}: hop '{self.hop}' is longer than the window",
                                      hint="a hop is a fraction of the window, such as length / 24")

    @property
    def hop_us(self) -> int | None:
        return None if self.hop is None else parse_duration(self.hop, where=f"hop {self.hop!r}")

    def with_default_hop(self) -> Window:
        """This window with the online default hop when it has none (DESIGN.md): the largest of 1m, 5m, 1h, 1d
        that is at most length / 24; lifetime windows stay as they are."""
        if self.hop is not None or self.length is None:
            return self
        fits = [h for h in ("1d", "1h", "5m", "1m") if parse_duration(h, where="hop") * 24 <= self.length_us]
        hop = fits[0] if fits else "1m" if self.length_us >= 60_000_000 else self.length  # windows under a minute: one tile
        return Window(self.length, self.delay, self.closed, hop)

    @property
    def length_us(self) -> int | None:
        return None if self.length is None else parse_duration(self.length, where=f"window {self.length!r}")

    @property
    def delay_us(self) -> int:
        return 0 if self.delay is None else parse_duration(self.delay, where=f"delay {self.delay!r}")

    @property
    def label(self) -> str:
        text = "lifetime" if self.length is None else str(self.length).strip()
        if self.delay_us:
            text += f"_delay_{str(self.delay).strip()}"
        return text

    def spec(self) -> dict:  # hop_us only when hopped: exact windows keep the fingerprints they always had
        out = {"length_us": self.length_us, "delay_us": self.delay_us, "closed": self.closed}
        return out if self.hop is None else {**out, "hop_us": self.hop_us}

    @staticmethod
    def of(value: Window | str | None) -> Window:
        return value if isinstance(value, Window) else Window(value)


@dataclass(frozen=True)
class Feature:
    """One output column of a view: an aggregation over one window."""

    name: str
    function: str
    column: str | None
    window: Window
    params: Mapping[str, Any]
    default: Any
    description: str

    def spec(self) -> dict:
        return {"name": self.name, "function": self.function, "column": self.column, "window": self.window.spec(),
                "params": dict(sorted(self.params.items())), "default": self.default}


@dataclass(frozen=True)
class Aggregation:
    """`function` of `column` over each of `windows`; one feature per window.

    Names default to `{function}_{column}_{window}` (`count_24h`, `sum_amount_7d`); `name=` overrides (with
    several windows the window label is appended). `default=` replaces an empty window's null. Parameters of
    sketches and decays go in `params` (`k`, `quantiles`, `lg_k`, `half_life`).
    """

    function: str
    column: str | None = None
    windows: Sequence[Window | str | None] = (None,)
    name: str | None = None
    default: Any = None
    params: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        if self.function not in FUNCTIONS:
            raise DefinitionError(f"unknown aggregation function '{self.function}'",
                                  hint=f"use one of: {', '.join(FUNCTIONS)}")
        needs_column, defaults = FUNCTIONS[self.function]
        if needs_column and not self.column:
            raise DefinitionError(f"aggregation '{self.function}' needs a column", hint=f"pass column=... to '{self.function}'")
        if self.function == "time_since_last" and self.column:
            raise DefinitionError("aggregation 'time_since_last' takes no column (it measures event time)")
        windows = (self.windows,) if isinstance(self.windows, (str, Window)) or self.windows is None else self.windows
        object.__setattr__(self, "windows", tuple(Window.of(w) for w in windows))
        if not self.windows:
            raise DefinitionError(f"aggregation '{self.name or self.function}': windows must not be empty")
        unknown = set(self.params) - set(defaults)
        if unknown:
            raise DefinitionError(f"aggregation '{self.function}': unknown parameter(s) {sorted(unknown)}",
                                  hint=f"'{self.function}' takes: {sorted(defaults) or 'no parameters'}")
        object.__setattr__(self, "params", {**defaults, **dict(self.params)})

    def features(self) -> list[Feature]:
        params = dict(self.params)
        if "half_life" in params:
            params["half_life_us"] = parse_duration(params.pop("half_life"), where=f"{self.function} half_life")
        out = []
        for window in self.windows:
            if self.name and len(self.windows) == 1:
                name = self.name
            elif self.name:
                name = f"{self.name}_{window.label}"
            else:
                name = "_".join(x for x in (self.function, self.column, window.label) if x)
            out.append(Feature(name, self.function, self.column, window, params, self.default, self.description))
        return out


@dataclass(frozen=True)
class FeatureView:
    """Features of one entity from one source, versioned. Change a definition -> bump `version`.

    `online=True` marks a view served online: each of its windows without a hop gets the default hop
    (`Window.with_default_hop`), in training sets and backfills alike, so the values trained on are the values served.
    """

    name: str
    entity: Entity
    source: Source
    aggregations: Sequence[Aggregation]
    version: int = 1
    ttl: str | None = None
    accuracy: str = "temporal"
    description: str = ""
    owner: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    online: bool = False

    def __post_init__(self) -> None:
        _check_name(self.name, "view")
        if "__" in self.name:
            raise DefinitionError(f"view '{self.name}': names may not contain '__' (it separates view and feature)")
        if not isinstance(self.version, int) or isinstance(self.version, bool) or self.version < 1:
            raise DefinitionError(f"view '{self.name}': version must be a positive integer, got {self.version!r}")
        if self.accuracy not in ("temporal", "snapshot"):
            raise DefinitionError(f"view '{self.name}': accuracy must be 'temporal' or 'snapshot', got {self.accuracy!r}")
        if not self.aggregations:
            raise DefinitionError(f"view '{self.name}': aggregations must not be empty")
        object.__setattr__(self, "aggregations", tuple(self.aggregations))
        object.__setattr__(self, "tags", dict(self.tags))
        if self.ttl is not None:
            parse_duration(self.ttl, where=f"view '{self.name}': ttl")
        seen: dict[str, str] = {}
        for feature in self.features:
            _check_name(feature.name, f"view '{self.name}': feature")
            if feature.name in seen:
                raise DefinitionError(f"view '{self.name}': two features are named '{feature.name}'",
                                      hint="give one of them name=...")
            if feature.name in self.entity.keys:
                raise DefinitionError(f"view '{self.name}': feature '{feature.name}' clashes with a key column")
            seen[feature.name] = feature.function

    @property
    def features(self) -> list[Feature]:
        out = [f for agg in self.aggregations for f in agg.features()]
        if self.online:
            out = [dataclasses.replace(f, window=f.window.with_default_hop()) for f in out]
        return out

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        from tally.errors import RegistryError

        raise RegistryError(f"view '{self.name}' has no feature '{name}'",
                         hint=f"its features: {', '.join(f.name for f in self.features)}")

    @property
    def ttl_us(self) -> int | None:
        return None if self.ttl is None else parse_duration(self.ttl, where=f"view '{self.name}': ttl")

    @property
    def value_columns(self) -> list[str]:
        return sorted({f.column for f in self.features if f.column})

    def spec(self) -> dict:
        """The versioned, canonical JSON-able spec that crosses to Scala and is fingerprinted."""
        return {
            "spec_version": SPEC_VERSION,
            "view": self.name,
            "version": self.version,
            "entity": {"name": self.entity.name, "keys": list(self.entity.keys)},
            "source": self.source.spec(),
            "ttl_us": self.ttl_us,
            "accuracy": self.accuracy,
            "features": [f.spec() for f in self.features],
        }

    def spec_json(self) -> str:
        return json.dumps(self.spec(), sort_keys=True, separators=(",", ":"))

    @property
    def fingerprint(self) -> str:
        """Hash of what determines the values: the spec minus descriptive fields."""
        return hashlib.sha256(self.spec_json().encode()).hexdigest()[:16]


# --- embedding views ------------------------------------------------------------------------------------------

# method -> the parameters it takes beyond dim, seed and min_count, with their defaults (docs/embeddings.md)
EMBEDDING_METHODS: dict[str, dict[str, Any]] = {
    "als": {"max_iter": 10, "reg_param": 0.1, "alpha": 1.0},
    "word2vec": {"max_iter": 1, "window_size": 5, "step_size": 0.025},
}


@dataclass(frozen=True, kw_only=True)
class EmbeddingView(FeatureView):
    """Vectors of `entity` learned from its co-occurrence with `context` in `source`: a snapshot view whose one
    feature, `vector` (array<float>), is retrained every `cadence` (whole days) on the `lookback` before it.

    `method="als"`: implicit-feedback ALS on the entity x context count matrix; `"word2vec"`: Word2Vec over each
    context's time-ordered sequence of entity ids. `dim` is the vector size, `seed` fixes the training,
    `min_count` drops entities with fewer events in the lookback (they get null: cold start), `params` the
    method's own parameters (EMBEDDING_METHODS). The row of day D-1 holds vectors trained only on events known
    before D 00:00 UTC, aligned to the previous retrain (docs/embeddings.md).
    """

    aggregations: Sequence[Aggregation] = ()
    accuracy: str = "snapshot"
    context: Entity
    method: str = "als"
    dim: int = 16
    lookback: str = "30d"
    cadence: str = "1d"
    seed: int = 7
    min_count: int = 1
    params: Mapping[str, Any] = field(default_factory=dict)

    kind = "embedding"  # a class attribute, not a field: how store and training tell it from aggregation views

    def __post_init__(self) -> None:
        _check_name(self.name, "view")
        where = f"embedding view '{self.name}'"
        if "__" in self.name:
            raise DefinitionError(f"{where}: names may not contain '__' (it separates view and feature)")
        if not isinstance(self.version, int) or isinstance(self.version, bool) or self.version < 1:
            raise DefinitionError(f"{where}: version must be a positive integer, got {self.version!r}")
        if self.aggregations:
            raise DefinitionError(f"{where}: takes no aggregations (its one feature is the vector)")
        if self.accuracy != "snapshot":
            raise DefinitionError(f"{where}: accuracy must be 'snapshot' (vectors are daily snapshots), "
                                  f"got {self.accuracy!r}")
        if self.ttl is not None or self.online:
            raise DefinitionError(f"{where}: ttl and online do not apply (an entity the lookback did not see gets "
                                  "null; embeddings are not served online yet)")
        for role, ent in (("entity", self.entity), ("context", self.context)):
            if not isinstance(ent, Entity):
                raise DefinitionError(f"{where}: {role} must be a tl.Entity, got {type(ent).__name__}")
            if len(ent.keys) != 1:
                raise DefinitionError(f"{where}: {role} '{ent.name}' has keys {list(ent.keys)}; embeddings take an "
                                      "entity with one key column")
        if self.entity.keys == self.context.keys:
            raise DefinitionError(f"{where}: entity and context are both keyed by '{self.entity.keys[0]}'",
                                  hint="the context is what the entity co-occurs with, e.g. cards for merchants")
        if self.method not in EMBEDDING_METHODS:
            raise DefinitionError(f"{where}: unknown method {self.method!r}",
                                  hint=f"use one of: {', '.join(EMBEDDING_METHODS)}")
        for name, low in (("dim", 2), ("seed", 0), ("min_count", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise DefinitionError(f"{where}: {name} must be an integer >= {low}, got {value!r}")
        lookback = parse_duration(self.lookback, where=f"{where}: lookback")
        cadence = parse_duration(self.cadence, where=f"{where}: cadence")
        day = _UNITS_US["d"]
        if cadence < day or cadence % day:
            raise DefinitionError(f"{where}: cadence '{self.cadence}' is not a whole number of days",
                                  hint="retrain every '1d', '7d', ... (snapshots are daily)")
        if lookback <= 0:
            raise DefinitionError(f"{where}: lookback must be positive")
        defaults = EMBEDDING_METHODS[self.method]
        unknown = sorted(set(self.params) - set(defaults))
        if unknown:
            raise DefinitionError(f"{where}: unknown parameter(s) {unknown} for method '{self.method}'",
                                  hint=f"'{self.method}' takes: {', '.join(sorted(defaults))}")
        object.__setattr__(self, "params", {**defaults, **dict(self.params)})
        object.__setattr__(self, "tags", dict(self.tags))
        declared = set(self.source.schema) | set(self.source.columns)
        if self.source.schema:  # a source that declares its columns is checked now, not at the first backfill
            for role, ent in (("entity", self.entity), ("context", self.context)):
                if ent.keys[0] not in declared:
                    raise DefinitionError(f"{where}: source '{self.source.name}' has no {role} column "
                                          f"'{ent.keys[0]}' (its columns: {', '.join(sorted(declared))})")

    @property
    def features(self) -> list[Feature]:
        return [Feature("vector", "embedding", self.context.keys[0], Window(None), {}, None,
                        self.description or f"{self.method} embedding of {self.entity.name} by {self.context.name}")]

    @property
    def lookback_us(self) -> int:
        return parse_duration(self.lookback, where=f"embedding view '{self.name}': lookback")

    @property
    def cadence_days(self) -> int:
        return parse_duration(self.cadence, where=f"embedding view '{self.name}': cadence") // _UNITS_US["d"]

    @property
    def key(self) -> str:
        return self.entity.keys[0]

    def spec(self) -> dict:
        return {
            "spec_version": SPEC_VERSION,
            "kind": self.kind,
            "view": self.name,
            "version": self.version,
            "entity": {"name": self.entity.name, "keys": list(self.entity.keys)},
            "context": {"name": self.context.name, "keys": list(self.context.keys)},
            "source": self.source.spec(),
            "method": self.method,
            "dim": self.dim,
            "lookback_us": self.lookback_us,
            "cadence_days": self.cadence_days,
            "seed": self.seed,
            "min_count": self.min_count,
            "params": dict(sorted(self.params.items())),
        }

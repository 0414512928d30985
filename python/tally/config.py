"""One resolved configuration, and where each value came from.

Layers, later wins: built-in defaults < `[tool.tally]` in pyproject.toml < `tally.toml` < `TALLY_*` environment
variables < command-line flags. Nothing mutates the environment; `tally config` prints the result.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from tally.errors import UsageError

# `online_store` has no fixed default: it is the SQLite file under the warehouse (see `default_online_store`).
DEFAULTS = {"warehouse": "warehouse", "repo": "features", "master": "local[*]", "data": "data", "online_store": None}
_SECRET = re.compile(r"(secret|password|token|credential|access[._-]?key|private)", re.I)


@dataclass(frozen=True)
class Config:
    warehouse: str
    repo: str
    master: str
    data: str = DEFAULTS["data"]  # the data root: relative source paths live under it
    online_store: str = ""  # the online store's URL (sqlite:/path, redis://host:port[/ns], redis-cluster://h:p,...)
    spark_conf: dict[str, str] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)

    def redacted_conf(self) -> dict[str, str]:
        """Spark conf for printing: values whose keys look like secrets are hidden."""
        return {k: ("***" if _SECRET.search(k) else v) for k, v in self.spark_conf.items()}


def _read_toml(path: Path, section: tuple[str, ...]) -> dict:
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"cannot parse {path}: {exc}") from exc
    for key in section:
        data = data.get(key, {})
    return data


def load(cwd: str | Path | None = None, **flags: str | None) -> Config:
    """Resolve the configuration seen from `cwd` (default: the current directory)."""
    cwd = Path(cwd or os.getcwd())
    values: dict[str, object] = dict(DEFAULTS)
    origins = {k: "default" for k in DEFAULTS}
    conf: dict[str, str] = {}
    for path, section in ((cwd / "pyproject.toml", ("tool", "tally")), (cwd / "tally.toml", ())):
        if path.is_file():
            layer = _read_toml(path, section)
            for key in DEFAULTS:
                if key in layer:
                    values[key], origins[key] = str(layer[key]), str(path.name)
            for key, value in (layer.get("spark", {}) or {}).items():
                conf[str(key)] = str(value)
                origins[f"spark.{key}" if not str(key).startswith("spark.") else str(key)] = str(path.name)
    for key in DEFAULTS:
        env = os.environ.get(f"TALLY_{key.upper()}")
        if env:
            values[key], origins[key] = env, f"env TALLY_{key.upper()}"
    for key, value in flags.items():
        if key in DEFAULTS and value is not None:
            values[key], origins[key] = value, f"flag --{key.replace('_', '-')}"
    if values["online_store"] is None:
        values["online_store"] = default_online_store(cwd / str(values["warehouse"]))
        origins["online_store"] = "default: under the warehouse"
    return Config(warehouse=str(values["warehouse"]), repo=str(values["repo"]), master=str(values["master"]),
                  data=str(values["data"]), online_store=str(values["online_store"]), spark_conf=conf, origins=origins)


def default_online_store(warehouse: str | Path) -> str:
    """The embedded online store: one SQLite file under the warehouse (DESIGN.md, "Online store")."""
    return f"sqlite:{(Path(warehouse) / 'online' / 'tally.db').resolve()}"

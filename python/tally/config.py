"""One resolved configuration, and where each value came from.

Layers, later wins: built-in defaults < `[tool.tally]` in pyproject.toml < `tally.toml` < `TALLY_*` environment
variables < command-line flags. Nothing mutates the environment; `tally config` prints the result.

The files are looked for in the working directory and then in each parent folder: the nearest folder holding a
`tally.toml` (or a pyproject.toml with a `[tool.tally]` table) is the project, so commands work from any of its
subfolders. Relative paths in a file (warehouse, repo, data) are relative to that file's folder (and resolved to
absolute paths); relative paths in the environment or a flag are relative to the working directory. A key tally
does not know is refused, naming the file and the keys it knows: a typo must not silently fall back to a default.
"""

from __future__ import annotations

import difflib
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
_PATHS = ("warehouse", "repo", "data")  # relative to the folder of the file that sets them
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


def project_dir(cwd: str | Path | None = None) -> Path | None:
    """The nearest folder, from `cwd` upward, holding a tally.toml or a pyproject.toml with [tool.tally]."""
    here = Path(cwd or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "tally.toml").is_file():
            return folder
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file() and _read_toml(pyproject, ("tool",)).get("tally") is not None:
            return folder
    return None


def _check_keys(layer: dict, path: Path, section: str) -> None:
    known = [*DEFAULTS, "spark"]
    for key in layer:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            raise UsageError(f"{path}: unknown setting '{key}'{f' in {section}' if section else ''}"
                             + (f" (did you mean '{close[0]}'?)" if close else ""),
                             hint=f"known settings: {', '.join(DEFAULTS)}, and a [spark] table of Spark settings")
    if "spark" in layer and not isinstance(layer["spark"], dict):
        raise UsageError(f"{path}: 'spark' must be a table of Spark settings ([spark] with \"key\" = \"value\" lines)")


def load(cwd: str | Path | None = None, **flags: str | None) -> Config:
    """Resolve the configuration seen from `cwd` (default: the current directory)."""
    cwd = Path(cwd or os.getcwd())
    values: dict[str, object] = dict(DEFAULTS)
    origins = {k: "default" for k in DEFAULTS}
    conf: dict[str, str] = {}
    project = project_dir(cwd)
    here = Path(os.getcwd()).resolve()  # relative paths left as they are are read from the process's directory
    files = [] if project is None else [(project / "pyproject.toml", ("tool", "tally")), (project / "tally.toml", ())]
    for path, section in files:
        if path.is_file():
            layer = _read_toml(path, section)
            _check_keys(layer, path, "[tool.tally]" if section else "")
            shown = path.name if project == here else str(path)
            for key in DEFAULTS:
                if key in layer:
                    value = str(layer[key])
                    if key in _PATHS and not Path(value).is_absolute():  # absolute: a Spark JVM started
                        # elsewhere (a notebook that changed directory) reads the same place
                        value = str(project / value)
                    values[key], origins[key] = value, shown
            for key, value in (layer.get("spark", {}) or {}).items():
                conf[str(key)] = str(value)
                origins[f"spark.{key}" if not str(key).startswith("spark.") else str(key)] = shown
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

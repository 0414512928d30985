"""A feature repository: every Entity, Source, FeatureView, FeatureSet, Derived feature, Label and Task defined in
the Python files under a folder.

Loading checks names (views, feature sets and derived features share one namespace: training sets name them)
and that every reference of a feature set or derived feature resolves; `check_columns` checks each aggregation's
column against its source's schema; `plan` compares each view with what the warehouse holds (new view, new
version, unchanged, or spec changed under an existing version: refused, bump the version) and reports what is
wrong between a view and its source's schema.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tally.definitions import Entity, FeatureView, Source
from tally.errors import DataError, RegistryError, SpecChangedError, TallyError, UsageError  # noqa: F401
from tally.labels import Label
from tally.references import Derived, FeatureSet, resolve
from tally.tasks import Task


@dataclass(frozen=True)
class Repository:
    path: Path
    entities: dict[str, Entity]
    sources: dict[str, Source]
    views: dict[str, FeatureView]
    feature_sets: dict[str, FeatureSet] = field(default_factory=dict)
    derived: dict[str, Derived] = field(default_factory=dict)
    labels: dict[str, Label] = field(default_factory=dict)
    tasks: dict[str, Task] = field(default_factory=dict)

    @property
    def refs(self) -> dict[str, FeatureView | FeatureSet | Derived]:
        """Every name a training set's feature list may use: views, feature sets, derived features."""
        return {**self.views, **self.feature_sets, **self.derived}

    def view(self, name: str) -> FeatureView:
        if name not in self.views:
            raise RegistryError(f"unknown feature view '{name}' in {self.path}",
                             hint=f"known views: {', '.join(sorted(self.views)) or 'none'}")
        return self.views[name]


def load(path: str | Path = "features") -> Repository:
    """Import every `*.py` under `path` and collect the definitions it declares."""
    root = Path(path)
    if not root.is_dir():
        raise UsageError(f"feature repository {root} does not exist", hint="pass --repo PATH or set repo in tally.toml")
    found: dict[type, dict[str, tuple[object, str]]] = {Entity: {}, Source: {}, FeatureView: {}, FeatureSet: {},
                                                        Derived: {}, Label: {}, Task: {}}
    for file, module in _import_all(root):
        for value in vars(module).values():
            kind = FeatureView if isinstance(value, FeatureView) else type(value)  # EmbeddingView is a view too
            if kind not in found:
                continue
            seen = found[kind].get(value.name)
            if seen is not None and seen[0] != value:
                raise RegistryError(f"two {kind.__name__}s are named '{value.name}': in {seen[1]} and {file}",
                                    hint="names are unique within a repository; rename one")
            found[kind][value.name] = (value, str(file))
    _check_namespace(found)
    views = {name: v for name, (v, _) in found[FeatureView].items()}
    for v in views.values():  # views may use entities and sources defined inline: collect those too
        found[Entity].setdefault(v.entity.name, (v.entity, "inline"))
        found[Source].setdefault(v.source.name, (v.source, "inline"))
    for task, file in found[Task].values():  # a task's label may be defined inline: a manifest names it
        if isinstance(task.label, Label):
            seen = found[Label].setdefault(task.label.name, (task.label, file))
            if seen[0] != task.label:
                raise RegistryError(f"task '{task.name}' ({file}) uses a label named '{task.label.name}' that differs "
                                    f"from the label of that name in {seen[1]}", hint="rename one of the labels")
        found[Source].setdefault(task.spine.source.name, (task.spine.source, "inline"))
    for lb, _ in found[Label].values():
        found[Source].setdefault(lb.source.name, (lb.source, "inline"))
    repo = Repository(root, {n: e for n, (e, _) in found[Entity].items()},
                      {n: s for n, (s, _) in found[Source].items()}, views,
                      {n: f for n, (f, _) in found[FeatureSet].items()}, {n: d for n, (d, _) in found[Derived].items()},
                      {n: lb for n, (lb, _) in found[Label].items()}, {n: t for n, (t, _) in found[Task].items()})
    for kind in (FeatureSet, Derived):  # their references resolve now, not when a training set first names them
        for value, file in found[kind].values():
            try:
                resolve([value], repo.refs)
            except TallyError as exc:
                raise RegistryError(f"{file}: {exc.message}", hint=exc.hint) from None
    from tally.tasks import definition

    for task, file in found[Task].values():  # a task's label and features resolve now, as a feature set's do
        try:
            definition.check(task, repo)
        except TallyError as exc:
            raise RegistryError(f"{file}: {exc.message}", hint=exc.hint) from None
    return repo


def _check_namespace(found: dict) -> None:
    """A name in a feature list must mean one thing: no view, feature set and derived feature share a name."""
    kinds = {FeatureView: "view", FeatureSet: "feature set", Derived: "derived feature"}
    seen: dict[str, tuple[str, str]] = {}
    for kind, what in kinds.items():
        for name, (_, file) in found[kind].items():
            if name in seen:
                other, where = seen[name]
                raise RegistryError(f"the {what} '{name}' ({file}) has the name of the {other} '{name}' ({where})",
                                    hint="views, feature sets and derived features share one namespace; rename one")
            seen[name] = (what, file)


def _import_all(root: Path) -> list[tuple[Path, object]]:
    """Imports every file of the repository under its module name relative to `root` (`cards`, `fraud.labels`),
    with `root` on sys.path while it loads, so that files import each other as users expect (`from payments import
    card, charges`) and such an import is the very module the registry reads. A name that an installed module
    already holds (a `json.py`) is refused: importing it would shadow that module in this process."""
    files = sorted(root.rglob("*.py"))
    names = [".".join(f.relative_to(root).with_suffix("").parts) for f in files]
    top = str(root.resolve())
    for file, name in zip(files, names):
        held = sys.modules.get(name)
        origin = getattr(held, "__file__", None)
        if held is not None and name not in _LOADED and not str(origin or "").startswith(top + "/"):
            raise RegistryError(f"{file} has the name of the module '{name}' this process already imported "
                                f"({origin or 'built in'})", hint=f"rename {file.name}: repository files are importable modules")
        sys.modules.pop(name, None)  # a module of this name from another repository (an earlier load)
    sys.path.insert(0, top)
    try:
        return [(file, _import(file, name)) for file, name in zip(files, names)]
    finally:
        sys.path.remove(top)
        _LOADED.update(names)


_LOADED: set[str] = set()  # module names a repository load has held (free to reload for another repository)


def _import(file: Path, name: str):
    if name in sys.modules:  # imported by another file of this repository just now
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        from tally.errors import TallyError

        if isinstance(exc, TallyError):
            raise RegistryError(f"{file}: {exc.message}", hint=exc.hint) from exc
        raise RegistryError(f"{file} failed to import: {type(exc).__name__}: {exc}") from exc
    return module


_NUMERIC = {"byte", "short", "integer", "long", "float", "double", "decimal"}
_ORDERED = _NUMERIC | {"string", "boolean", "timestamp", "timestamp_ntz"}
_TIMES = {"timestamp", "timestamp_ntz", "date", "string"}
# The value types each kernel takes (tally.agg.Aggregators.build); functions not listed take no column.
_TAKES = {"sum": _NUMERIC | {"boolean"}, **{f: _NUMERIC for f in (
    "mean", "variance", "variance_pop", "stddev", "stddev_pop", "approx_percentile", "decayed_sum")},
    **{f: _ORDERED for f in ("min", "max", "first", "last", "last_k", "approx_distinct", "top_k")}}


def schema_problems(view: FeatureView, schema) -> list[str]:
    """What is wrong between a view and its source's schema (a pyspark StructType): missing or mistyped columns."""
    types = {f.name: f.dataType.typeName() for f in schema.fields}
    columns = ", ".join(sorted(types))
    src = f"source '{view.source.name}'"
    problems = []
    for what, col in [("timestamp", view.source.timestamp), ("available_at", view.source.available_at)]:
        if col and col not in types:
            problems.append(f"{src} has no {what} column '{col}' (its columns: {columns})")
        elif col and types[col] not in _TIMES:
            problems.append(f"{src}: {what} column '{col}' is {types[col]}, not a timestamp")
    for k in view.entity.keys:
        if k not in types:
            problems.append(f"{src} has no key column '{k}' of entity '{view.entity.name}' (its columns: {columns})")
    for f in view.features:
        if f.column and f.column not in types:
            problems.append(f"feature '{f.name}': {src} has no column '{f.column}' (its columns: {columns})")
        elif f.column and types[f.column] not in _TAKES.get(f.function, _ORDERED):
            problems.append(f"feature '{f.name}': {f.function} does not take column '{f.column}' of type "
                            f"{types[f.column]} (it takes {', '.join(sorted(_TAKES.get(f.function, _ORDERED)))})")
    return problems


def check_columns(view: FeatureView, schema) -> None:
    """Every column a view needs exists in its source's schema with a type its aggregations take."""
    problems = schema_problems(view, schema)
    if problems:
        raise DataError(f"view '{view.name}': " + "; ".join(problems),
                        hint="fix the view's columns or the source (derived columns: Source(columns={...}))",
                        details={"view": view.name, "problems": problems})


@dataclass(frozen=True)
class PlanItem:
    view: str
    version: int
    status: str  # new_view | new_version | unchanged | spec_changed
    fingerprint: str
    stored_fingerprint: str | None
    problems: tuple[str, ...] = ()  # what is wrong with the view's source schema

    @property
    def ok(self) -> bool:
        return self.status != "spec_changed" and not self.problems

    def describe(self) -> str:
        return "\n".join([self._status_line(), *(f"    ! {p}" for p in self.problems)])

    def _status_line(self) -> str:
        return {
            "new_view": f"+ {self.view} v{self.version}: new view",
            "new_version": f"+ {self.view} v{self.version}: new version (older versions stay readable)",
            "unchanged": f"= {self.view} v{self.version}: unchanged",
            "spec_changed": (f"! {self.view} v{self.version}: definition changed since it was backfilled "
                             f"({self.stored_fingerprint} -> {self.fingerprint}); bump the version"),
        }[self.status]


def plan_view(view: FeatureView, stored: dict[int, str | None], problems: Sequence[str] = ()) -> PlanItem:
    """`stored` maps each version present in the warehouse to the fingerprint it was written with; `problems`
    are what `schema_problems` found in the view's source."""
    if view.version in stored:
        old = stored[view.version]
        status = "unchanged" if old in (None, view.fingerprint) else "spec_changed"
        return PlanItem(view.name, view.version, status, view.fingerprint, old, tuple(problems))
    return PlanItem(view.name, view.version, "new_version" if stored else "new_view", view.fingerprint, None,
                    tuple(problems))


def require_unchanged(item: PlanItem) -> None:
    if item.status == "spec_changed":
        raise SpecChangedError(
            f"view '{item.view}' version {item.version} was backfilled with a different definition "
            f"(fingerprint {item.stored_fingerprint}, now {item.fingerprint})",
            hint=f"bump version= of '{item.view}' to {item.version + 1}; version {item.version} stays readable")


# --- feature sets, derived features and labels against what training sets used -----------------------------------
# Views have tables whose commits carry the fingerprint they were built with; feature sets, derived features and
# labels have none. So each training set built records theirs in one small ledger under the warehouse, and `plan`
# (and the next training set) refuse one whose content changed under a version already used: the rule views follow.

_KINDS = {"feature_sets": "feature set", "derived": "derived feature", "labels": "label"}


@dataclass(frozen=True)
class ReferencePlanItem:
    kind: str  # feature set | derived feature | label
    name: str
    version: int
    status: str  # new | unchanged | spec_changed
    fingerprint: str
    stored_fingerprint: str | None

    @property
    def ok(self) -> bool:
        return self.status != "spec_changed"

    def describe(self) -> str:
        return {
            "new": f"+ {self.kind} {self.name} v{self.version}: not used by a training set yet",
            "unchanged": f"= {self.kind} {self.name} v{self.version}: unchanged",
            "spec_changed": (f"! {self.kind} {self.name} v{self.version}: definition changed since a training set "
                             f"used it ({self.stored_fingerprint} -> {self.fingerprint}); bump the version"),
        }[self.status]


def _ledger(warehouse) -> Path:
    return Path(warehouse) / "registry" / "references.json"


def used_references(warehouse) -> dict[str, str]:
    """"{kind}:{name}:v{version}" -> the fingerprint the first training set that used it recorded."""
    import json

    path = _ledger(warehouse)
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError as exc:
        raise DataError(f"{path} is not valid JSON: {exc}", hint="restore it from a backup, or delete it to "
                        "start the record of feature sets, derived features and labels afresh") from None


def references_of(built: dict) -> dict[str, str]:
    """What a training set's build record (`training.build`) says of its feature sets, derived features, labels."""
    entries = {"feature_sets": built.get("feature_sets", []), "derived": built.get("derived", []),
               "labels": (built.get("labels") or {}).get("labels", [])}
    return {f"{_KINDS[key]}:{e['name']}:v{e['version']}": e["fingerprint"] for key, items in entries.items() for e in items}


def check_references(warehouse, built: dict) -> None:
    """Refuses a training set whose feature set, derived feature or label changed under a version already used."""
    used = used_references(warehouse)
    for key, fingerprint in references_of(built).items():
        if used.get(key, fingerprint) != fingerprint:
            kind, name, version = key.split(":")
            raise SpecChangedError(
                f"{kind} '{name}' {version} changed since a training set used it (fingerprint {used[key]}, now "
                f"{fingerprint})", hint=f"bump version= of '{name}': a version names one content, so training sets "
                                        "that name it stay reproducible")


def record_references(warehouse, built: dict) -> None:
    """Adds the training set's references to the ledger (the first fingerprint of a version stays). Written to a
    temporary file and renamed, so a reader never sees half a file."""
    import json
    import os

    used = used_references(warehouse)
    new = {k: v for k, v in references_of(built).items() if k not in used}
    if not new:
        return
    path = _ledger(warehouse)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps({**used, **new}, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def plan_references(repo: Repository, warehouse) -> list[ReferencePlanItem]:
    """Each feature set, derived feature and label of the repository against the ledger."""
    from tally.references import set_fingerprint

    used = used_references(warehouse)
    current = [("feature set", s.name, s.version, set_fingerprint(s, repo.refs)) for s in repo.feature_sets.values()]
    current += [("derived feature", d.name, d.version, resolve([d], repo.refs).derived[-1].fingerprint)
                for d in repo.derived.values()]
    current += [("label", lb.name, lb.version, lb.fingerprint) for lb in repo.labels.values()]
    items = []
    for kind, name, version, fingerprint in sorted(current):
        stored = used.get(f"{kind}:{name}:v{version}")
        status = "new" if stored is None else "unchanged" if stored == fingerprint else "spec_changed"
        items.append(ReferencePlanItem(kind, name, version, status, fingerprint, stored))
    return items

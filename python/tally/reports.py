"""What the inspecting commands show, computed once and rendered as text or as one JSON document.

Each `*_report` gathers what a command shows as plain data: dicts and lists of str, int, bool, None, aware UTC
datetimes and day strings (YYYY-MM-DD). Each `*_text` renders that data as the lines the command has always
printed; `to_json` renders any of it for scripts (`--json`). No command gathers twice for two formats.

The JSON keys are a contract with scripts (docs/cli.md, "Scripting"): keys may be added, never renamed or removed.
Instants are ISO-8601 in UTC with microseconds and a `Z` (`2026-01-10T09:30:00.000000Z`), the format of every
instant tally prints; a naive datetime is refused rather than guessed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

from tally import config as config_module
from tally.errors import UsageError


def instant(value: dt.datetime) -> str:
    """An aware instant as ISO-8601 UTC with a `Z`."""
    if value.tzinfo is None:  # a tally bug: every instant tally builds is aware (tally.utc)
        raise TypeError(f"naive datetime {value!r}: tally prints instants in UTC only")
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _plain(value):
    if isinstance(value, dt.datetime):
        return instant(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"{type(value).__name__} is not part of tally's JSON output")


def to_json(document, *, lenient: bool = False) -> str:
    """One JSON document. `lenient` prints unknown values as strings (for error details, which may hold anything)."""
    default = (lambda v: _plain_or_str(v)) if lenient else _plain
    return json.dumps(document, indent=2, default=default, ensure_ascii=False)


def _plain_or_str(value):
    try:
        return _plain(value)
    except TypeError:
        return str(value)


# --- tally config -----------------------------------------------------------------------------------------------

def config_report(cfg: config_module.Config) -> dict:
    """Each setting with its value and origin; Spark settings as a list (two spellings may name one key)."""
    settings = {key: {"value": getattr(cfg, key), "origin": cfg.origins[key]} for key in config_module.DEFAULTS}
    spark = []
    for key, value in sorted(cfg.redacted_conf().items()):
        name = key if key.startswith("spark.") else f"spark.{key}"
        spark.append({"key": name, "value": value, "origin": cfg.origins.get(name, "config")})
    return {"settings": settings, "spark": spark}


def config_text(report: dict) -> list[str]:
    lines = [f"{key:12} = {s['value']:40} ({s['origin']})" for key, s in report["settings"].items()]
    return lines + [f"{s['key']} = {s['value']} ({s['origin']})" for s in report["spark"]]


# --- tally list -------------------------------------------------------------------------------------------------

def list_report(repo) -> dict:
    views = []
    for v in sorted(repo.views.values(), key=lambda v: v.name):
        names = [f.name for f in v.features]
        views.append({"view": v.name, "version": v.version, "entity": v.entity.name, "keys": list(v.entity.keys),
                      "accuracy": v.accuracy, "online": v.online, "feature_count": len(names), "features": names,
                      "description": v.description, "owner": v.owner, "tags": dict(v.tags)})
    sets = [{"feature_set": s.name, "version": s.version, "references": [_ref(r) for r in s.features],
             "description": s.description} for s in sorted(repo.feature_sets.values(), key=lambda s: s.name)]
    derived = [{"derived": d.name, "version": d.version, "expr": d.expr, "inputs": [_ref(r) for r in d.inputs],
                "description": d.description} for d in sorted(repo.derived.values(), key=lambda d: d.name)]
    labels = [{"label": lb.name, "version": lb.version, "source": lb.source.name, "on": dict(lb.on),
               "within": lb.within, "description": lb.description}
              for lb in sorted(getattr(repo, "labels", {}).values(), key=lambda lb: lb.name)]
    tasks = [{"task": t.name, "version": t.version, "model": t.model, "description": t.description}
             for t in sorted(getattr(repo, "tasks", {}).values(), key=lambda t: t.name)]
    return {"views": views, "feature_sets": sets, "derived": derived, "labels": labels, "tasks": tasks}


def _ref(r) -> str:
    """A feature reference as text: a name, "view:feature", or a key-mapped use."""
    if isinstance(r, str):
        return r
    if hasattr(r, "keys") and hasattr(r, "prefix"):  # a tl.Use
        mapped = ", ".join(f"{k}={v}" for k, v in r.keys.items())
        return f"{r.prefix + '=' if r.prefix else ''}{r.view_name}({mapped})"
    return r.name


def list_text(report: dict) -> list[str]:
    lines = [f"{v['view']:28} v{v['version']:<3} {v['entity']:10} {v['feature_count']:3} features  {v['description']}"
             for v in report["views"]]
    lines += [f"{s['feature_set']:28} v{s['version']:<3} {'set':10} {len(s['references']):3} refs      "
              f"{s['description'] or ', '.join(s['references'])}" for s in report["feature_sets"]]
    lines += [f"{d['derived']:28} v{d['version']:<3} {'derived':10} {len(d['inputs']):3} inputs    "
              f"{d['description'] or d['expr']}" for d in report["derived"]]
    lines += [f"{lb['label']:28} v{lb['version']:<3} {'label':10} from '{lb['source']}'  "
              f"{lb['description'] or ', '.join(lb['on'])}" for lb in report["labels"]]
    lines += [f"{t['task']:28} v{t['version']:<3} {'task':10} {t['model']:20} {t['description']}"
              for t in report.get("tasks", [])]
    return lines


# --- tally task list / run -------------------------------------------------------------------------------------

def task_list_report(repo) -> dict:
    tasks = []
    for t in sorted(repo.tasks.values(), key=lambda t: t.name):
        tasks.append({"task": t.name, "version": t.version, "spine": t.spine.source.name,
                      "label": t.label if isinstance(t.label, str) else t.label.name, "features": t.feature_names,
                      "split": t.split.describe(), "model": t.model, "metrics": list(t.metrics),
                      "segments": list(t.segments), "description": t.description})
    return {"tasks": tasks}


def task_list_text(report: dict) -> list[str]:
    return [f"{t['task']:28} v{t['version']:<3} {t['model']:20} label {t['label']} on {t['spine']}  "
            f"{t['description'] or ', '.join(t['features'])}" for t in report["tasks"]] or ["no tasks"]


def task_run_text(r: dict) -> list[str]:
    test, split = r["test"], r["split"]
    lines = [f"task {r['task']} v{r['version']}: labels as of {r['labels_as_of']}, split at {split['at']}: "
             f"train {split['train_rows']} rows, test {split['test_rows']} rows ({test['positives']} positive)"]
    shown = [f"{name} {test[key]:.4f}" for key, name in (("auc_pr", "AUC-PR"), ("auc_roc", "AUC-ROC"))
             if test.get(key) is not None]
    shown += [f"lift@{x['k']:.0%} {x['lift']:.2f}" for x in test.get("lift", []) if x["lift"] is not None]
    lines.append("  " + ", ".join(shown + [f"positive rate {test['positive_rate']:.4f}"]))
    lines.append(f"  report {r['paths']['run']}/report.md; manifest {r['paths']['manifest']}")
    return lines


# --- tally describe VIEW ----------------------------------------------------------------------------------------

def describe_report(spark, view, *, warehouse: str, online_store: str) -> dict:
    """A view's definition, the tables of each stored version with the days they cover, and its online state."""
    from tally import store

    v = view
    tables = []
    for version, fingerprint in sorted(store.stored_versions(spark, warehouse, v.name).items()):
        path = store.table_path(warehouse, v.name, version)
        days = sorted(store.covered_days(spark, path))
        tables.append({"version": version, "path": str(path), "fingerprint": fingerprint,
                       "backfilled": {"start": days[0], "end": days[-1], "days": len(days)} if days else None})
    online_state = None
    if v.online and v.accuracy == "temporal":
        from tally import online

        st = online.status(spark, v, warehouse=warehouse, store=online_store)
        from tally import streaming

        online_state = {"version": v.version, "store": st["store"], "watermark": st["watermark"],
                        "serving_spec": st["spec_path"], "problem": st["problem"],
                        "stream": streaming.status(warehouse, v)}
    features = [{"name": f.name, "function": f.function, "column": f.column,
                 "window": {"length": f.window.length, "delay": f.window.delay, "closed": f.window.closed,
                            "hop": f.window.hop},
                 "params": dict(f.params), "default": f.default, "description": f.description} for f in v.features]
    return {"view": v.name, "version": v.version, "description": v.description,
            "entity": {"name": v.entity.name, "keys": list(v.entity.keys)},
            "source": {"name": v.source.name, "timestamp": v.source.timestamp, "available_at": v.source.available_at},
            "ttl": v.ttl, "accuracy": v.accuracy, "owner": v.owner, "tags": dict(v.tags), "online": v.online,
            "fingerprint": v.fingerprint, "features": features,
            "table_path": str(store.table_path(warehouse, v.name, v.version)), "tables": tables,
            "online_state": online_state}


def describe_text(r: dict) -> list[str]:
    src = r["source"]
    lines = [f"{r['view']} v{r['version']} — {r['description']}",
             f"  entity {r['entity']['name']} keys {', '.join(r['entity']['keys'])}; source {src['name']} "
             f"(time {src['timestamp']}, available_at {src['available_at'] or '-'}); ttl {r['ttl'] or '-'}; "
             f"accuracy {r['accuracy']}; owner {r['owner'] or '-'}; fingerprint {r['fingerprint']}"]
    for f in r["features"]:
        w = f["window"]
        lines.append(f"  {f['name']:36} {f['function']}({f['column'] or '*'}) window {w['length'] or 'lifetime'} "
                     f"delay {w['delay'] or '0'} closed={w['closed']}  {f['description']}")
    for t in r["tables"]:
        b = t["backfilled"]
        span = f"{b['start']}..{b['end']} ({b['days']} days)" if b else "nothing backfilled"
        lines.append(f"  v{t['version']}: {t['path']}  {span}  fingerprint {t['fingerprint']}")
    if not r["tables"]:
        lines.append(f"  no table yet at {r['table_path']}")
    st = r["online_state"]
    if st:
        mark = f"newest event loaded {instant(st['watermark'])}" if st["watermark"] else st["problem"] or "no tiles loaded"
        spec = st["serving_spec"] or f"no serving spec (run `tally materialize {r['view']}`)"
        lines.append(f"  online v{st['version']}: store {st['store']}; {mark}; {spec}")
        s = st.get("stream")
        if s:
            # lag as of the batch: how far its newest event was behind the wall clock when the batch was written
            lag = f"{s['lag_s']:.1f} s" if s.get("lag_s") is not None else "-"
            lines.append(f"  stream: last batch {s['batch_id']} at {instant(s['at'])} ({s['events']} events, "
                         f"{s['late']} late); newest event {instant(s['newest']) if s['newest'] else '-'}, lag {lag}")
    return lines


# --- tally plan -------------------------------------------------------------------------------------------------

def plan_items(spark, repo, *, data: str, warehouse: str) -> list:
    """Each view against the warehouse and its source's schema (read without scanning rows)."""
    from tally import registry, sources, store
    from tally.errors import TallyError

    items = []
    for v in sorted(repo.views.values(), key=lambda v: v.name):
        try:
            problems = registry.schema_problems(v, sources.read(spark, v.source, data=data, scan=False).schema)
        except TallyError as err:
            problems = [err.message]
        items.append(registry.plan_view(v, store.stored_versions(spark, warehouse, v.name), problems))
    return items


def plan_report(plan) -> dict:
    """`plan`: (view items, reference items), as `tally plan` gathers them."""
    items, references = plan
    return {"ok": all(item.ok for item in [*items, *references]),
            "views": [{**dataclasses.asdict(item), "problems": list(item.problems), "ok": item.ok} for item in items],
            "references": [{**dataclasses.asdict(item), "ok": item.ok} for item in references]}


def plan_text(plan) -> list[str]:
    items, references = plan
    return [item.describe() for item in [*items, *references]]


# --- tally history VIEW -----------------------------------------------------------------------------------------

def history_report(spark, view, version: int | None, *, warehouse: str) -> dict:
    """The Delta commits of one version's table, oldest first, with tally's commit metadata."""
    version, path, entries = _table_commits(spark, view, version, warehouse=warehouse)
    commits = []
    for e in entries:
        meta = e["tally"] or {}
        days = meta.get("range")
        commits.append({"delta_version": e["version"], "timestamp": e["timestamp"], "operation": e["operation"],
                        "rows": e["rows"], "days": {"start": days[0], "end": days[-1]} if days else None,
                        "fingerprint": meta.get("fingerprint"), "tally_version": meta.get("tally_version")})
    return {"view": view.name, "version": version, "path": str(path), "commits": commits}


def _table_commits(spark, view, version: int | None, *, warehouse: str) -> tuple[int, Path, list[dict]]:
    """The view version (default: the repository's), its table's path and commits; refused when it has no table."""
    from tally import store

    version = version or view.version
    path = store.table_path(warehouse, view.name, version)
    entries = store.commits(spark, path)
    if not entries:
        raise UsageError(f"view '{view.name}' v{version} has no table at {path}",
                         hint=f"run `tally backfill {view.name} --start ... --end ...` first")
    return version, path, entries


def history_text(r: dict) -> list[str]:
    lines = []
    for c in r["commits"]:
        days = f"{c['days']['start']}..{c['days']['end']}" if c["days"] else "-"
        lines.append(f"{c['delta_version']:>4}  {c['timestamp']:%Y-%m-%d %H:%M:%S}  {c['operation']:8} days {days:24} "
                     f"fingerprint {c['fingerprint'] or '-'}  tally {c['tally_version'] or '-'}")
    return lines


# --- tally stats VIEW -------------------------------------------------------------------------------------------

def stats_report(spark, view, version: int | None, *, warehouse: str, features=None, start: dt.date | None = None,
                 end: dt.date | None = None) -> dict:
    """The per-day statistics recorded by the backfills of one version's table (the newest commit of each day),
    per feature, with the days the drift rule flags (judged against the week before, even before `start`)."""
    from tally import drift, stats

    version, path, entries = _table_commits(spark, view, version, warehouse=warehouse)
    days = stats.recorded(entries)
    known = list(next(iter(days.values()))["features"]) if days else []
    for d in days.values():
        known += [name for name in d["features"] if name not in known]
    chosen = list(features) if features else known
    unknown = [name for name in chosen if name not in known]
    if unknown:
        from tally.errors import RegistryError

        have = ", ".join(known) if known else "none (no backfill of this table recorded statistics)"
        raise RegistryError(f"view '{view.name}' v{version} has no statistics of feature(s) {', '.join(unknown)}",
                            hint=f"features with statistics: {have}")
    shown = [day for day in days if (start is None or day >= str(start)) and (end is None or day <= str(end))]
    out, flagged = [], []
    for name in chosen:
        rows = {day: {"rows": d["rows"], "delta_version": d["delta_version"], **d["features"].get(name, {})}
                for day, d in days.items()}
        flags: dict[str, list] = {}
        for metric in drift.METRICS:
            for day, why in drift.check({day: r.get(metric) for day, r in rows.items()}, metric).items():
                flags.setdefault(day, []).append(why)
        kind = next((r["kind"] for r in rows.values() if r.get("kind")), None)
        series = []
        for day in shown:
            r = rows[day]
            series.append({"day": day, "rows": r["rows"], "delta_version": r["delta_version"],
                           **{f: r.get(f) for f in ("null_share", "nan_share", "mean", "min", "max", "p01", "p50", "p99")},
                           "drift": flags.get(day, [])})
            flagged += [{"feature": name, "day": day, **why} for why in flags.get(day, [])]
        out.append({"name": name, "kind": kind, "numeric": stats.is_numeric(kind or ""), "days": series})
    return {"view": view.name, "version": version, "path": str(path), "start": shown[0] if shown else None,
            "end": shown[-1] if shown else None, "quantile_accuracy": stats.ACCURACY, "rule": drift.RULE,
            "features": out, "flagged": flagged, "plot": None}


def stats_text(r: dict) -> list[str]:
    if not r["features"] or not any(f["days"] for f in r["features"]):
        return [f"{r['view']} v{r['version']}: no statistics recorded for these days at {r['path']} "
                f"(tables backfilled before tally recorded statistics have none: re-backfill to record them)"]
    lines = [f"{r['view']} v{r['version']} statistics {r['start']}..{r['end']} ({r['path']})"]
    for f in r["features"]:
        lines.append(f"{f['name']} ({f['kind']})")
        lines.append(f"  {'day':10} {'rows':>8} {'null%':>7} {'nan%':>7}" +
                     ("".join(f" {h:>11}" for h in ("mean", "min", "max", "p01", "p50", "p99")) if f["numeric"] else ""))
        for d in f["days"]:
            line = f"  {d['day']:10} {d['rows']:>8} {_pct(d['null_share']):>7} {_pct(d['nan_share']):>7}"
            if f["numeric"]:
                line += "".join(f" {_num(d[k]):>11}" for k in ("mean", "min", "max", "p01", "p50", "p99"))
            for why in d["drift"]:
                line += f"  ! {why['metric']} {_num(why['value'])} vs median {_num(why['median'])}"
            lines.append(line)
    n = len(r["flagged"])
    lines.append(f"{n} drift flag(s)" + (": " + ", ".join(f"{x['feature']} {x['day']} {x['metric']}" for x in r["flagged"])
                                          if n else ""))
    if r["plot"]:
        lines.append(f"plot: {r['plot']}")
    return lines


def _pct(share) -> str:
    return "-" if share is None else f"{100 * share:.1f}%"


def _num(value) -> str:
    return "-" if value is None else f"{value:.6g}"


# --- tally training-set -----------------------------------------------------------------------------------------

def training_report(*, rows: int, out: str, out_format: str, out_hash: dict, manifest: Path, spine: str,
                    spine_hash: dict, features: list[str], built: dict, reproduced: str | None,
                    label_nulls: dict[str, int] | None = None) -> dict:
    """What a written training set holds and what went into it (the manifest has the full record); per label,
    how many rows it left null (a performance window still open at the cutoff, or no default)."""
    views = [{"view": e["view"], "version": e["version"], "fingerprint": e["fingerprint"], "accuracy": e["accuracy"],
              "features": list(e["features"]), "delta_version": e["delta_version"],
              "missing_days": list(e.get("missing_days", [])), "rows_in_missing_days": e.get("rows_in_missing_days", 0)}
             for e in built["views"]]
    return {"rows": rows, "output": {"path": out, "format": out_format, "hash": out_hash["hash"]},
            "manifest": str(manifest), "spine": {"path": spine, "timestamp": built["timestamp"], "rows": spine_hash["rows"]},
            "features": list(features), "views": views, "reproduced": reproduced,
            "labels": None if not built.get("labels") else {
                "as_of": built["labels"]["as_of"],
                "labels": [{"name": e["name"], "version": e["version"], "source": e["source"],
                            "null_rows": (label_nulls or {}).get(e["name"])} for e in built["labels"]["labels"]]}}


def training_text(r: dict) -> list[str]:
    out = r["output"]
    lines = [f"{r['rows']} rows -> {out['path']} ({out['format']}); content hash {out['hash']}; manifest {r['manifest']}"]
    if r["reproduced"]:
        lines.append(f"  reproduced {r['reproduced']}: same {r['rows']} rows and content hash {out['hash']}")
    for v in r["views"]:
        gaps = v["rows_in_missing_days"]
        note = f"; {gaps} rows in days the table lacks were filled with nulls" if gaps else ""
        lines.append(f"  {v['view']} v{v['version']} {v['accuracy']} "
                     f"(Delta version {v['delta_version'] if v['delta_version'] is not None else '-'}){note}")
    for label in (r["labels"] or {}).get("labels", []):
        lines.append(f"  label {label['name']} v{label['version']} from source '{label['source']}' as known at "
                     f"{r['labels']['as_of']}; {label['null_rows']} rows null")
    return lines


# --- tally --version --------------------------------------------------------------------------------------------

def versions() -> dict:
    """This package's version, the spec version it writes, and the JAR's version — read from files, no JVM."""
    from tally.definitions import SPEC_VERSION
    from tally.spark import jar_path

    jar = jar_path()
    return {"tally": package_version(), "spec_version": SPEC_VERSION, "jar": {"path": str(jar), "version": jar_version(jar)}}


def versions_text(r: dict) -> list[str]:
    jar = r["jar"]
    found = f"JAR {jar['version']} ({jar['path']})" if jar["version"] else f"no JAR at {jar['path']}"
    return [f"tally {r['tally']}", f"spec version {r['spec_version']}; {found}"]


def package_version() -> str:
    """The installed distribution's version, else the checkout's pyproject.toml (running from a source tree)."""
    import importlib.metadata

    try:
        return importlib.metadata.version("tally")
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    try:
        return tomllib.loads(pyproject.read_text())["project"]["version"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


def jar_version(path: Path) -> str | None:
    """`Implementation-Version` from the JAR's manifest (sbt writes it from build.sbt's version); None if absent."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as jar:
            manifest = jar.read("META-INF/MANIFEST.MF").decode("utf-8", "replace")
    except (OSError, KeyError, zipfile.BadZipFile):
        return None
    for line in manifest.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "Implementation-Version":
            return value.strip()
    return None

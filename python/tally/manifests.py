"""Training-set manifests: everything needed to rebuild the identical rows later.

A manifest sits beside the data (`<out>.manifest.json`) and records everything that determines the rows: the
spine (path, format, timestamp column, row count and content hash), each use of a view (its version,
fingerprint, accuracy, prefix, key mapping and the Delta version read), each feature set, derived feature and
label named (its version and the fingerprint of its resolved content), the labels' cutoff, each temporal view's
and label's source (its Delta version, or the row count and content hash of what was read), the options
(`allow_missing`), the semantics, the output's row count and content hash (every column; older manifests name
the columns they left out), the tally version and when it was built.

A rebuild reads every snapshot table and Delta source at its recorded version, refuses before writing anything
when a definition (a view, a feature set, a derived feature, a label), the spine or a non-Delta source changed (saying
which and how), and checks that the rows it wrote have the recorded count and content hash.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from tally.definitions import FeatureView
from tally.errors import DataError, SpecChangedError, UsageError

MANIFEST_VERSION = 2


def path_for(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".manifest.json")


def make(*, spine_path: str, spine_format: str, spine_hash: dict, built: dict, features: list[str], out: str,
         out_format: str, out_hash: dict, warehouse: str) -> dict:
    from tally import __version__

    return {
        "manifest_version": MANIFEST_VERSION,
        "spine": {"path": str(Path(spine_path).resolve()), "format": spine_format, "timestamp": built["timestamp"],
                  **spine_hash},
        "features": features,
        "options": built["options"],
        "views": built["views"],
        "feature_sets": built.get("feature_sets", []),
        "derived": built.get("derived", []),
        "sources": built.get("sources", {}),
        "labels": built.get("labels"),
        "semantics": built["semantics"],
        "warehouse": str(Path(warehouse).resolve()),
        "output": {"path": str(Path(out).resolve()), "format": out_format, **out_hash},
        "tally_version": __version__,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def write(manifest: dict, out: str | Path) -> Path:
    target = path_for(out)
    target.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return target


def read(file: str | Path) -> dict:
    path = Path(file)
    if not path.is_file():
        raise UsageError(f"manifest {path} does not exist")
    try:
        manifest = json.loads(path.read_text())
    except ValueError as exc:
        raise UsageError(f"manifest {path} is not valid JSON: {exc}") from exc
    if manifest.get("manifest_version") != MANIFEST_VERSION:
        raise UsageError(f"manifest {path} has version {manifest.get('manifest_version')}, this tally reads "
                         f"{MANIFEST_VERSION}")
    return manifest


def pins(manifest: dict, views: dict) -> dict[str, int]:
    """The Delta version to read per snapshot view; refuses views whose definition changed since, and (given a
    repository's `refs`) feature sets and derived features that changed since."""
    require_same_references(manifest, views)
    out = {}
    for entry in manifest["views"]:
        view = views.get(entry["view"])
        if not isinstance(view, FeatureView):
            raise UsageError(f"the manifest uses view '{entry['view']}', which the repository no longer defines")
        if view.version != entry["version"] or view.fingerprint != entry["fingerprint"]:
            raise SpecChangedError(
                f"view '{view.name}' is now v{view.version} (fingerprint {view.fingerprint}); the manifest was built "
                f"with v{entry['version']} (fingerprint {entry['fingerprint']})",
                hint="check out the feature repository as it was when the training set was built")
        if entry["accuracy"] == "snapshot":
            out[view.name] = entry["delta_version"]
    return out


def require_same_references(manifest: dict, refs: dict) -> None:
    """Refuses when a feature set or derived feature the manifest names is gone or resolves to other content: a
    change under the same version is named as such (bump the version), a new version as a different definition."""
    from tally.references import Derived, FeatureSet, resolve, set_fingerprint

    for kind, what, key in ((FeatureSet, "feature set", "feature_sets"), (Derived, "derived feature", "derived")):
        for entry in manifest.get(key, []):
            name, version = entry["name"], entry["version"]
            found = refs.get(name)
            if not isinstance(found, kind):
                raise UsageError(f"the manifest uses {what} '{name}', which the repository no longer defines",
                                 hint="check out the feature repository as it was when the training set was built")
            now = set_fingerprint(found, refs) if kind is FeatureSet else resolve([found], refs).derived[-1].fingerprint
            if found.version == version and now != entry["fingerprint"]:
                raise SpecChangedError(
                    f"{what} '{name}' v{version} changed since the manifest was built (fingerprint "
                    f"{entry['fingerprint']}, now {now}) without a new version",
                    hint=f"bump version= of '{name}' to {version + 1} when its content changes; to rebuild, check out "
                         "the feature repository as it was")
            if found.version != version:
                raise SpecChangedError(
                    f"{what} '{name}' is now v{found.version}; the manifest was built with v{version}",
                    hint="check out the feature repository as it was when the training set was built")


def labels(manifest: dict, known: dict) -> tuple[list[str], str | None]:
    """The labels a manifest joined and their cutoff; refuses a label that is gone or changed since (a change
    under the same version is named as such)."""
    recorded = manifest.get("labels") or {"labels": [], "as_of": None}
    for entry in recorded["labels"]:
        name, version = entry["name"], entry["version"]
        found = known.get(name)
        if found is None:
            raise UsageError(f"the manifest uses label '{name}', which the repository no longer defines",
                             hint="check out the feature repository as it was when the training set was built")
        if found.version != version or found.fingerprint != entry["fingerprint"]:
            same = found.version == version
            raise SpecChangedError(
                f"label '{name}' " + (f"v{version} changed since the manifest was built (fingerprint "
                                      f"{entry['fingerprint']}, now {found.fingerprint}) without a new version" if same
                                      else f"is now v{found.version}; the manifest was built with v{version}"),
                hint=(f"bump version= of '{name}' to {version + 1} when its content changes; " if same else "")
                + "to rebuild, check out the feature repository as it was")
    return [e["name"] for e in recorded["labels"]], recorded["as_of"]


def source_versions(manifest: dict) -> dict[str, int]:
    """The Delta version each Delta source was read at."""
    return {name: pin["delta_version"] for name, pin in manifest.get("sources", {}).items() if "delta_version" in pin}


def require_same(what: str, recorded: dict, now: dict, hint: str) -> None:
    """Refuses when `what` no longer has the recorded row count and content hash."""
    if (recorded.get("rows"), recorded.get("hash")) != (now["rows"], now["hash"]):
        raise DataError(f"{what} changed since the manifest was written: it had {recorded.get('rows')} rows "
                        f"(content hash {recorded.get('hash')}), now {now['rows']} rows (content hash {now['hash']})",
                        hint=hint)


def require_same_sources(manifest: dict, now: dict) -> None:
    """Refuses when a source that is not pinned by a Delta version was read with other rows than recorded."""
    for name, pin in manifest.get("sources", {}).items():
        if "hash" in pin:
            require_same(f"source '{name}'", pin, now.get(name, {"rows": None, "hash": None}),
                         hint="a file source cannot be read as it was; restore its files, or build a new training "
                              "set (Delta sources are read at their recorded version instead)")

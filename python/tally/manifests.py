"""Training-set manifests: everything needed to rebuild the identical rows later.

A manifest sits beside the data (`<out>.manifest.json`) and records the spine (path, format, row count,
timestamp column), each view's version, fingerprint, accuracy and the Delta version read, the semantics, the
tally version and when it was built. Rebuilding pins every snapshot view to the recorded Delta version and
refuses a view whose definition no longer matches its recorded fingerprint.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from tally.errors import SpecChangedError, UsageError

MANIFEST_VERSION = 1


def path_for(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".manifest.json")


def make(*, spine_path: str, spine_format: str, spine_rows: int, built: dict, features: list[str], out: str,
         out_format: str, warehouse: str) -> dict:
    from tally import __version__

    return {
        "manifest_version": MANIFEST_VERSION,
        "spine": {"path": str(Path(spine_path).resolve()), "format": spine_format, "rows": spine_rows,
                  "timestamp": built["timestamp"]},
        "features": features,
        "views": built["views"],
        "semantics": built["semantics"],
        "warehouse": str(Path(warehouse).resolve()),
        "output": {"path": str(Path(out).resolve()), "format": out_format},
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
    """The Delta version to read per snapshot view; refuses views whose definition changed since."""
    out = {}
    for entry in manifest["views"]:
        view = views.get(entry["view"])
        if view is None:
            raise UsageError(f"the manifest uses view '{entry['view']}', which the repository no longer defines")
        if view.version != entry["version"] or view.fingerprint != entry["fingerprint"]:
            raise SpecChangedError(
                f"view '{view.name}' is now v{view.version} (fingerprint {view.fingerprint}); the manifest was built "
                f"with v{entry['version']} (fingerprint {entry['fingerprint']})",
                hint="check out the feature repository as it was when the training set was built")
        if entry["accuracy"] == "snapshot":
            out[view.name] = entry["delta_version"]
    return out

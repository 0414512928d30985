"""`tally stats --plot`: one feature's daily statistics over time as a PNG (matplotlib, Agg backend, no display)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path


def feature_plot(report: dict, feature: str, out: str | Path) -> Path:
    """The mean with its p01..p99 band (numeric features) and the null share, drift-flagged days marked in red.
    `report` is `reports.stats_report(...)`."""
    import matplotlib

    matplotlib.use("Agg")  # no display: the PNG is the only output
    import matplotlib.pyplot as plt

    f = next(x for x in report["features"] if x["name"] == feature)
    days = [dt.date.fromisoformat(d["day"]) for d in f["days"]]
    flagged = {d["day"] for d in f["days"] if d["drift"]}
    panels = 2 if f["numeric"] else 1
    fig, axes = plt.subplots(panels, 1, sharex=True, figsize=(10, 3 + 2 * panels), squeeze=False)
    axes = [a[0] for a in axes]
    if f["numeric"]:
        ax = axes[0]
        mean = [_nan(d["mean"]) for d in f["days"]]
        ax.fill_between(days, [_nan(d["p01"]) for d in f["days"]], [_nan(d["p99"]) for d in f["days"]],
                        alpha=0.25, label="p01..p99")
        ax.plot(days, mean, marker=".", label="mean")
        ax.set_ylabel(feature)
        _mark(ax, f["days"], flagged, "mean")
        ax.legend(loc="upper left")
    ax = axes[-1]
    ax.plot(days, [_nan(d["null_share"]) for d in f["days"]], marker=".", color="gray", label="null share")
    ax.set_ylabel("null share")
    ax.set_ylim(-0.02, 1.02)
    _mark(ax, f["days"], flagged, "null_share")
    fig.suptitle(f"{report['view']} v{report['version']}: {feature} per day (red: drift)")
    fig.autofmt_xdate()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=100)
    plt.close(fig)
    return out


def _nan(value) -> float:
    return float("nan") if value is None else value


def _mark(ax, rows: list[dict], flagged: set[str], key: str) -> None:
    """A red line on every flagged day; a red dot where this panel's own metric is the one flagged."""
    for d in rows:
        if d["day"] in flagged:
            day = dt.date.fromisoformat(d["day"])
            ax.axvline(day, color="red", alpha=0.3)
            if d[key] is not None and any(why["metric"] == key for why in d["drift"]):
                ax.plot([day], [d[key]], "o", color="red")

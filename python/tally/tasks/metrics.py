"""Binary-classification metrics over (label, score) arrays, in numpy.

Every metric here depends on the multiset of (label, score) pairs only, never on row order: rows with equal
scores are one threshold (AUC-PR, AUC-ROC, calibration bins), and a top-k cut inside a group of tied scores
counts that group's positives pro rata. So a rerun that scores the same rows in another order reports the same
numbers, which `tally task run` promises.
"""

from __future__ import annotations

import math

import numpy as np


def _thresholds(y: np.ndarray, s: np.ndarray):
    """Per distinct score, from the highest down: cumulative true and false positives."""
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last row of each run of equal scores
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    return tp.astype(float), fp.astype(float)


def auc_pr(y, s) -> float | None:
    """Average precision: sum over thresholds of (recall step) x precision. None without a positive."""
    y, s = np.asarray(y, dtype=float), np.asarray(s, dtype=float)
    positives = y.sum()
    if positives == 0:
        return None
    tp, fp = _thresholds(y, s)
    recall = tp / positives
    precision = tp / (tp + fp)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def pr_curve(y, s) -> tuple[list[float], list[float]]:
    """(recall, precision) at every threshold, for the plot."""
    y, s = np.asarray(y, dtype=float), np.asarray(s, dtype=float)
    if y.sum() == 0:
        return [], []
    tp, fp = _thresholds(y, s)
    return (tp / y.sum()).tolist(), (tp / (tp + fp)).tolist()


def auc_roc(y, s) -> float | None:
    """Area under the ROC curve (the probability a positive outscores a negative, ties counting half). None
    without both classes."""
    y, s = np.asarray(y, dtype=float), np.asarray(s, dtype=float)
    pos, neg = y.sum(), len(y) - y.sum()
    if pos == 0 or neg == 0:
        return None
    tp, fp = _thresholds(y, s)
    tpr, fpr = np.r_[0.0, tp / pos], np.r_[0.0, fp / neg]
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def calibration(y, s, bins: int = 10) -> list[dict]:
    """Score deciles (edges at the score quantiles; equal scores share a bin): rows, mean score, observed rate."""
    y, s = np.asarray(y, dtype=float), np.asarray(s, dtype=float)
    if len(s) == 0:
        return []
    edges = np.unique(np.quantile(s, np.linspace(0, 1, bins + 1)[1:-1]))
    which = np.searchsorted(edges, s, side="right")
    out = []
    for b in range(len(edges) + 1):
        mask = which == b
        if mask.any():
            out.append({"bin": b + 1, "rows": int(mask.sum()), "min_score": float(s[mask].min()),
                        "max_score": float(s[mask].max()), "mean_score": float(s[mask].mean()),
                        "observed_rate": float(y[mask].mean())})
    return out


def lift(y, s, k: float) -> dict:
    """The positive rate among the top `k` fraction of rows by score, over the overall rate."""
    y, s = np.asarray(y, dtype=float), np.asarray(s, dtype=float)
    n = len(y)
    take = max(1, math.ceil(k * n)) if n else 0
    base = float(y.mean()) if n else 0.0
    if take == 0:
        return {"k": k, "rows": 0, "positives": 0.0, "rate": None, "lift": None}
    cut = np.sort(s)[::-1][take - 1]
    above, tied = s > cut, s == cut
    positives = y[above].sum() + y[tied].sum() * (take - above.sum()) / tied.sum()
    rate = float(positives / take)
    return {"k": k, "rows": int(take), "positives": float(positives), "rate": rate,
            "lift": rate / base if base > 0 else None}


def summary(y, s, *, lift_at=(0.01, 0.05, 0.1), metrics=("auc_pr", "auc_roc", "calibration", "lift")) -> dict:
    """The metrics a task asks for, on one set of rows."""
    y = np.asarray(y, dtype=float)
    out = {"rows": int(len(y)), "positives": int(y.sum()), "positive_rate": float(y.mean()) if len(y) else None}
    if "auc_pr" in metrics:
        out["auc_pr"] = auc_pr(y, s)
    if "auc_roc" in metrics:
        out["auc_roc"] = auc_roc(y, s)
    if "calibration" in metrics:
        out["calibration"] = calibration(y, s)
    if "lift" in metrics:
        out["lift"] = [lift(y, s, k) for k in lift_at]
    return out

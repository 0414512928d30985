"""The drift rule of `tally stats`: a day whose value jumps away from the days before it. Plain Python, no Spark.

For each feature and metric (mean, null share, NaN share), day D is compared with the same metric on the days
D-7 .. D-1 that have a value (at least `MIN_HISTORY` of them, else no verdict):

    m = median(history)      s = 1.4826 * median(|history - m|)   (MAD scaled to a standard deviation)
    flagged when |x - m| > K * max(s, floor),   floor = REL_FLOOR * |m| for a mean, SHARE_FLOOR for a share

Why median and MAD: one bad day moves a mean and a standard deviation of the trailing week enough to hide the
next bad day and to flag the good day after it; the median and the MAD ignore it. Why a floor: a feature that was
constant all week has MAD 0, so without a floor any change, however small, would be flagged. Shares are bounded
in [0, 1], so their floor is absolute (a jump of more than K * SHARE_FLOOR = 10 points with a flat history);
a mean's is relative to its size (K * REL_FLOOR = 25 % with a flat history).

Known limit: the trailing week holds five weekdays and two weekend days, so a feature whose weekend mean differs
from its weekday mean by more than the band (at least 25 %) gets its weekend days flagged. Comparing a day with
the same weekday of earlier weeks would fix that, at the price of needing weeks of history before any verdict.
"""

from __future__ import annotations

import datetime as dt
import statistics

WINDOW_DAYS = 7
MIN_HISTORY = 3
K = 5.0
MAD_SCALE = 1.4826
REL_FLOOR = 0.05
SHARE_FLOOR = 0.02
ABS_FLOOR = 1e-9  # a mean that was exactly 0 all week: any change is a jump
METRICS = ("mean", "null_share", "nan_share")

RULE = {"window_days": WINDOW_DAYS, "min_history": MIN_HISTORY, "k": K, "mad_scale": MAD_SCALE,
        "mean_relative_floor": REL_FLOOR, "share_floor": SHARE_FLOOR, "metrics": list(METRICS)}


def check(series: dict[str, float | None], metric: str) -> dict[str, dict]:
    """The flagged days of one metric's daily `series` (day -> value, None: no value), each with why."""
    days = {dt.date.fromisoformat(d): v for d, v in series.items() if v is not None}
    out = {}
    for day, x in sorted(days.items()):
        history = [days[p] for p in (day - dt.timedelta(days=i) for i in range(1, WINDOW_DAYS + 1)) if p in days]
        if len(history) < MIN_HISTORY:
            continue
        m = statistics.median(history)
        s = MAD_SCALE * statistics.median(abs(h - m) for h in history)
        floor = SHARE_FLOOR if metric != "mean" else max(REL_FLOOR * abs(m), ABS_FLOOR)
        threshold = K * max(s, floor)
        if abs(x - m) > threshold:
            out[str(day)] = {"metric": metric, "value": x, "median": _g(m), "mad": _g(s / MAD_SCALE),
                             "threshold": _g(threshold)}
    return out


def _g(x: float) -> float:
    return float(f"{x:.6g}")

"""Training sets: one row per spine row, every spine column kept, `{view}__{feature}` columns added.

Temporal views run the sweep engine over their source (one py4j crossing per view); the spine may be any
DataFrame with the entity keys and a timestamp, the source itself included.
"""

from __future__ import annotations

from collections.abc import Sequence

from tally import kernels, sources
from tally.definitions import FeatureView
from tally.errors import DataError, UsageError


def _check_spine(spine, view: FeatureView, timestamp: str) -> None:
    if timestamp not in spine.columns:
        raise DataError(f"the spine has no timestamp column '{timestamp}' (columns: {', '.join(spine.columns)})",
                        hint="pass timestamp= naming the spine's event-time column")
    missing = [k for k in view.entity.keys if k not in spine.columns]
    if missing:
        raise DataError(f"view '{view.name}': the spine lacks key column(s) {missing} of entity '{view.entity.name}'")


def temporal_features(spark, spine, view: FeatureView, timestamp: str, *, source_df=None, partitions: int | None = None):
    """The spine with view `view`'s features exact at each spine row's `timestamp`."""
    _check_spine(spine, view, timestamp)
    events = source_df if source_df is not None else sources.read(spark, view.source)
    return kernels.temporal(spark, spine, events, view, timestamp, partitions=partitions)


def training_set(spark, spine, features: Sequence[FeatureView], timestamp: str):
    """Join every view's features onto `spine`, point-in-time correct at `timestamp`."""
    if not features:
        raise UsageError("training_set needs at least one feature view")
    out = spine
    for view in features:
        if not isinstance(view, FeatureView):
            raise UsageError(f"expected a FeatureView, got {type(view).__name__}")
        out = temporal_features(spark, out, view, timestamp)
    return out

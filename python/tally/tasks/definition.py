"""What a task declares: a spine, a label, features, a time split, a model and metrics. Frozen dataclasses,
validated when built; like `tally.definitions` they know nothing of Spark.

What needs the repository (feature names, a label named by a string) is checked by `check` when the repository
loads; what needs the data (the split's row counts, segment columns) by `tally.tasks.run` before any training.
"""

from __future__ import annotations

import datetime as dt
import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tally.definitions import FeatureView, Source, _check_name
from tally.errors import DefinitionError, RegistryError, TallyError
from tally.labels import Label
from tally.references import Derived, FeatureSet, Use, _check_version, resolve

MODELS = ("logistic_regression", "gbt")
# The MLlib parameters a task may set, per model (the seed is the task's own `seed=`): a typo is refused when
# the task is defined, not after the training set is built.
MODEL_PARAMS = {
    "logistic_regression": ("maxIter", "regParam", "elasticNetParam", "tol", "fitIntercept", "standardization",
                            "threshold", "aggregationDepth"),
    "gbt": ("maxIter", "maxDepth", "stepSize", "subsamplingRate", "minInstancesPerNode", "minInfoGain", "maxBins",
            "featureSubsetStrategy", "lossType", "validationTol"),
}
METRICS = ("auc_pr", "auc_roc", "calibration", "lift")


def closest(name: str, known) -> str:
    """The known names most like `name`, for a hint."""
    near = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.5)
    return f"closest: {', '.join(near)}" if near else f"known: {', '.join(sorted(known)) or 'none'}"


@dataclass(frozen=True)
class Spine:
    """The rows a task scores: one per row of `source` passing `filter` (Spark SQL), at the source's timestamp.
    `columns` adds spine columns as Spark SQL expressions over the source's row (`{"amount_major": "amount / 100"}`);
    numeric ones are model inputs beside the features (the baseline a model has without tally), and any spine
    column can name a segment."""

    source: Source
    filter: str | None = None
    columns: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.source, Source):
            raise DefinitionError(f"spine: source must be a tl.Source, got {type(self.source).__name__}")
        if self.filter is not None and (not isinstance(self.filter, str) or not self.filter.strip()):
            raise DefinitionError(f"spine of source '{self.source.name}': filter= must be a Spark SQL predicate")
        if not isinstance(self.columns, Mapping) or not all(isinstance(k, str) and isinstance(v, str) and v.strip()
                                                           for k, v in self.columns.items()):
            raise DefinitionError(f"spine of source '{self.source.name}': columns= maps new column names to Spark "
                                  "SQL expressions", hint="columns={'amount_major': 'amount / 100'}")
        for name in self.columns:
            _check_name(name, f"spine of source '{self.source.name}': column")
        object.__setattr__(self, "columns", dict(self.columns))

    @property
    def timestamp(self) -> str:
        return self.source.timestamp


@dataclass(frozen=True)
class Split:
    """A time split of the spine: train on rows before the split instant, test on rows at or after it.

    `train_until`: the instant (a day, its 00:00 UTC, or an ISO instant; no offset means UTC). `test_fraction`:
    the last fraction of the spine's time range, the split instant rounded down to a UTC midnight, so it reads as
    a day. Give exactly one."""

    train_until: str | dt.date | dt.datetime | None = None
    test_fraction: float | None = None

    def __post_init__(self) -> None:
        if (self.train_until is None) == (self.test_fraction is None):
            raise DefinitionError("split: give exactly one of train_until= (a day or instant) or test_fraction=",
                                  hint="Split(train_until='2026-03-01') or Split(test_fraction=0.25)")
        if self.train_until is not None:
            from tally import utc

            if isinstance(self.train_until, dt.datetime) and self.train_until.tzinfo is None:
                raise DefinitionError(f"split: train_until={self.train_until!r} is a naive datetime",
                                      hint="pass a day, an ISO string, or an aware datetime (tzinfo=timezone.utc)")
            try:
                utc.instant(self.train_until)
            except (TypeError, ValueError):
                raise DefinitionError(f"split: train_until={self.train_until!r} is not a day or an instant",
                                      hint="write 2026-03-01 or 2026-03-01T00:00:00Z") from None
        elif isinstance(self.test_fraction, bool) or not isinstance(self.test_fraction, (int, float)) \
                or not 0 < self.test_fraction < 1:
            raise DefinitionError(f"split: test_fraction={self.test_fraction!r} is not a fraction strictly "
                                  "between 0 and 1")

    def describe(self) -> str:
        if self.train_until is not None:
            return f"train before {self.train_until}, test from it on"
        return f"test: the last {self.test_fraction:.0%} of the spine's time range, from a UTC midnight"


@dataclass(frozen=True)
class Task:
    """A named, versioned ML task: score the rows of `spine` for `label` with `features`, train `model` on the
    earlier period of `split`, evaluate on the later one with `metrics` (overall and per value of each `segments`
    spine column). `tally task run NAME` runs it (docs/tasks.md).

    `model` is a Spark MLlib binary classifier, "gbt" (gradient-boosted trees) or "logistic_regression"; `params`
    its MLlib parameters ({"maxIter": 30, "maxDepth": 5}); `seed` fixes every random choice it makes. `lift_at`
    lists the top fractions of rows by score whose lift is reported.

        fraud = tl.Task(name="fraud", spine=tl.Spine(charges, columns={"amount_major": "amount / 100"}),
                        label=is_fraud, features=["card_velocity", "merchant_risk"],
                        split=tl.Split(test_fraction=0.33), model="gbt", params={"maxDepth": 5},
                        segments=["channel"])
    """

    name: str
    spine: Spine
    label: Label | str
    features: Sequence[FeatureView | FeatureSet | Derived | str]
    split: Split
    model: str = "gbt"
    params: Mapping[str, object] = field(default_factory=dict)
    seed: int = 7
    metrics: Sequence[str] = METRICS
    lift_at: Sequence[float] = (0.01, 0.05, 0.1)
    segments: Sequence[str] = ()
    version: int = 1
    description: str = ""

    def __post_init__(self) -> None:
        _check_name(self.name, "task")
        where = f"task '{self.name}'"
        _check_version(self.version, where)
        self._check_model(where)
        for attr, kind in (("spine", Spine), ("split", Split)):
            if not isinstance(getattr(self, attr), kind):
                raise DefinitionError(f"{where}: {attr}= must be a tl.{kind.__name__}, got "
                                      f"{type(getattr(self, attr)).__name__}")
        self._check_label(where)
        feats = (self.features,) if isinstance(self.features, (str, FeatureView, FeatureSet, Derived, Use)) \
            else tuple(self.features)
        if not feats:
            raise DefinitionError(f"{where}: features= must name at least one view, 'view:feature' or feature set")
        for item in feats:
            if isinstance(item, Use):
                raise DefinitionError(f"{where}: a tl.Use cannot be named directly (the manifest records feature "
                                      "names)", hint="put it in a tl.FeatureSet of the repository and name that")
            if not isinstance(item, (str, FeatureView, FeatureSet, Derived)):
                raise DefinitionError(f"{where}: {item!r} is not a feature reference",
                                      hint="name views, 'view:feature', feature sets or derived features")
        object.__setattr__(self, "features", feats)
        metrics = (self.metrics,) if isinstance(self.metrics, str) else tuple(self.metrics)
        for m in metrics:
            if m not in METRICS:
                raise DefinitionError(f"{where}: unknown metric '{m}'", hint=f"use {', '.join(METRICS)}; "
                                                                            + closest(str(m), METRICS))
        object.__setattr__(self, "metrics", metrics)
        lift_at = tuple(self.lift_at)
        if not lift_at or any(isinstance(k, bool) or not isinstance(k, (int, float)) or not 0 < k <= 1
                              for k in lift_at):
            raise DefinitionError(f"{where}: lift_at={self.lift_at!r} must list fractions in (0, 1] (0.01: the top 1 %)")
        object.__setattr__(self, "lift_at", lift_at)
        segments = (self.segments,) if isinstance(self.segments, str) else tuple(self.segments)
        for s in segments:
            if not isinstance(s, str) or not s:
                raise DefinitionError(f"{where}: segments= names spine columns, got {s!r}")
        object.__setattr__(self, "segments", segments)

    def _check_model(self, where: str) -> None:
        if self.model not in MODELS:
            raise DefinitionError(f"{where}: unknown model '{self.model}'",
                                  hint=f"use one of {', '.join(MODELS)}; {closest(str(self.model), MODELS)}")
        if not isinstance(self.params, Mapping):
            raise DefinitionError(f"{where}: params= must map MLlib parameter names to values")
        unknown = sorted(set(self.params) - set(MODEL_PARAMS[self.model]))
        if unknown:
            raise DefinitionError(f"{where}: unknown parameter(s) {unknown} of model '{self.model}'",
                                  hint=f"{closest(str(unknown[0]), MODEL_PARAMS[self.model])}; the seed is seed=")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise DefinitionError(f"{where}: seed must be an integer, got {self.seed!r}")
        object.__setattr__(self, "params", dict(sorted(self.params.items())))

    def _check_label(self, where: str) -> None:
        if isinstance(self.label, str):
            return  # a label of the repository: resolved by `check` when the repository loads
        if not isinstance(self.label, Label):
            raise DefinitionError(f"{where}: label= must be a tl.Label or a label's name, got "
                                  f"{type(self.label).__name__}")
        # tl.Label refuses such a source when it is built; a label reaching a task another way is refused here too,
        # since a task trained on rows of unknown arrival is a leak nobody would see in its metrics.
        if not getattr(self.label.source, "available_at", None):
            raise DefinitionError(f"{where}: label '{self.label.name}' reads source '{self.label.source.name}', "
                                  "which declares no available_at: when its rows became known is unknown",
                                  hint=f"declare available_at= on source '{self.label.source.name}'")

    @property
    def feature_names(self) -> list[str]:
        """The feature list as names (what a manifest records)."""
        return [item if isinstance(item, str) else item.name for item in self.features]


def check(task: Task, repo) -> tuple[Label, list[str]]:
    """The task's label and feature names, resolved against the repository; refuses an unknown label, an unknown
    feature (naming the task and the closest names) or an object other than the repository's of that name."""
    where = f"task '{task.name}'"
    labels = getattr(repo, "labels", {})
    if isinstance(task.label, str):
        if task.label not in labels:
            raise RegistryError(f"{where}: unknown label '{task.label}'", hint=closest(task.label, labels))
        label = labels[task.label]
    else:
        label = task.label
    refs = repo.refs
    for item in task.features:
        if not isinstance(item, str) and refs.get(item.name) != item:
            raise RegistryError(f"{where}: {type(item).__name__} '{item.name}' is not the repository's definition "
                                "of that name", hint="define it in a file of the repository and name it")
    names = task.feature_names
    for ref in names:
        name, _, feature = ref.partition(":")
        if name not in refs:
            raise RegistryError(f"{where}: unknown feature '{ref}'", hint=closest(name, refs))
        if feature and isinstance(refs[name], FeatureView) and feature not in {f.name for f in refs[name].features}:
            raise RegistryError(f"{where}: view '{name}' has no feature '{feature}'",
                                hint=closest(feature, [f.name for f in refs[name].features]))
    try:
        resolve(names, refs)
    except TallyError as exc:
        raise RegistryError(f"{where}: {exc.message}", hint=exc.hint) from None
    return label, names

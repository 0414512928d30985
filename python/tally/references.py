"""Feature references and what they resolve to: the columns a training set adds to its spine.

A training set's feature list mixes
- `FeatureView`s, `"view"` and `"view:feature"` strings (today's references);
- `Use(view, keys=..., prefix=...)`: a view joined under other spine key columns, its columns prefixed;
- `Derived(name, expr, inputs=...)`: a Spark SQL expression over other features of the same training row;
- `FeatureSet(name, features=...)`: a named, versioned list of any of these;
- a string naming a feature set or a derived feature of the repository.

Column names: a plain use gives `{view}__{feature}` (unchanged); a prefixed use gives
`{prefix}__{view}__{feature}`; a derived feature gives `{name}`. `resolve` turns a list into one `Resolved` —
uses in first-mention order, derived features in dependency order — and refuses unknown names, key mappings the
view cannot take, two uses under one prefix and column clashes, naming the culprit. Like `definitions`, this
module knows nothing of Spark; `training` checks derived expressions with Spark's analyzer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tally.definitions import FeatureView, _check_name
from tally.errors import DefinitionError, RegistryError, UsageError


def _check_version(version, what: str) -> None:
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise DefinitionError(f"{what}: version must be a positive integer, got {version!r}")


def _hash(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Use:
    """`view` (a FeatureView, "view" or "view:feature") joined with its entity keys read from other spine columns.

    `keys` maps the view's key column to the spine column holding it: `Use(card_velocity, keys={"card_id":
    "payee_card_id"}, prefix="payee")` gives `payee__card_velocity__count_1h` for the payee's card. Keys not
    mapped are read from the spine column of their own name. `features` picks features (default: all, or the one
    a "view:feature" string names). Without a prefix a use keeps the plain `{view}__{feature}` names.
    """

    view: FeatureView | str
    keys: Mapping[str, str] = field(default_factory=dict)
    prefix: str | None = None
    features: Sequence[str] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.view, (FeatureView, str)):
            raise DefinitionError(f"Use: view must be a FeatureView or a 'view[:feature]' string, got "
                                  f"{type(self.view).__name__}")
        where = f"use of '{self.view_name}'"
        if not isinstance(self.keys, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                         for k, v in self.keys.items()):
            raise DefinitionError(f"{where}: keys must map the view's key columns to spine column names")
        # an identity mapping is no mapping: drop it, so Use(v, keys={"card_id": "card_id"}) is a plain use
        object.__setattr__(self, "keys", {k: v for k, v in sorted(self.keys.items()) if k != v})
        if self.prefix is not None:
            _check_name(self.prefix, f"{where}: prefix")
            if "__" in self.prefix:
                raise DefinitionError(f"{where}: prefix '{self.prefix}' may not contain '__' (it separates the "
                                      "prefix from the view)")
        feats = (self.features,) if isinstance(self.features, str) else tuple(self.features)
        object.__setattr__(self, "features", feats)

    @property
    def view_name(self) -> str:
        return self.view.name if isinstance(self.view, FeatureView) else self.view.partition(":")[0]


@dataclass(frozen=True)
class Derived:
    """A feature computed after the joins: `expr`, a Spark SQL expression over the training-set columns of its
    `inputs` (feature references: "view:feature", "view", a `Use`, another derived feature's name).

    `Derived("amount_1h_over_24h", "card_velocity__sum_amount_major_1h / card_velocity__sum_amount_major_24h",
    inputs=["card_velocity:sum_amount_major_1h", "card_velocity:sum_amount_major_24h"])` adds the column
    `amount_1h_over_24h`. Its fingerprint covers the expression and its inputs' views' fingerprints. The
    expression may reference its inputs only (checked with Spark's analyzer before any job runs).
    """

    name: str
    expr: str
    inputs: Sequence[FeatureView | str | Use | Derived]
    version: int = 1
    description: str = ""

    def __post_init__(self) -> None:
        _check_name(self.name, "derived feature")
        where = f"derived feature '{self.name}'"
        if not isinstance(self.expr, str) or not self.expr.strip():
            raise DefinitionError(f"{where}: expr must be a Spark SQL expression string")
        inputs = (self.inputs,) if isinstance(self.inputs, (str, Use, FeatureView, Derived)) else tuple(self.inputs)
        if not inputs:
            raise DefinitionError(f"{where}: inputs must name at least one feature", hint="inputs=['view:feature']")
        for item in inputs:
            if not isinstance(item, (FeatureView, str, Use, Derived)):
                raise DefinitionError(f"{where}: input {item!r} is not a feature reference",
                                      hint="use 'view:feature' strings, views, tl.Use(...) or other derived features")
        object.__setattr__(self, "inputs", inputs)
        _check_version(self.version, where)


@dataclass(frozen=True)
class FeatureSet:
    """A named, versioned list of feature references that training sets name instead of repeating the list.

    Its fingerprint covers what the list resolves to (each view's version and fingerprint, features, key mappings,
    derived features), so a manifest can tell when a set changed under the same version.
    """

    name: str
    features: Sequence[FeatureView | str | Use | Derived | FeatureSet]
    version: int = 1
    description: str = ""

    def __post_init__(self) -> None:
        _check_name(self.name, "feature set")
        where = f"feature set '{self.name}'"
        feats = (self.features,) if isinstance(self.features, (str, Use, FeatureView, Derived, FeatureSet)) \
            else tuple(self.features)
        if not feats:
            raise DefinitionError(f"{where}: features must not be empty")
        for item in feats:
            if not isinstance(item, (FeatureView, str, Use, Derived, FeatureSet)):
                raise DefinitionError(f"{where}: {item!r} is not a feature reference")
        object.__setattr__(self, "features", feats)
        _check_version(self.version, where)


# --- resolution ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Selection:
    """One use of a view in a training set: the features it takes, the spine columns its keys are read from
    (`keys`: view key -> spine column, only where they differ) and its column prefix."""

    view: FeatureView
    features: tuple[str, ...]
    keys: tuple[tuple[str, str], ...] = ()
    prefix: str | None = None

    @property
    def column_prefix(self) -> str:
        return f"{self.prefix}__{self.view.name}__" if self.prefix else f"{self.view.name}__"

    def column(self, feature: str) -> str:
        return self.column_prefix + feature

    @property
    def columns(self) -> list[str]:
        return [self.column(f) for f in self.features]

    def spine_key(self, key: str) -> str:
        return dict(self.keys).get(key, key)

    @property
    def spine_keys(self) -> list[str]:
        return [self.spine_key(k) for k in self.view.entity.keys]

    @property
    def label(self) -> str:
        """How messages name this use."""
        return f"view '{self.view.name}'" + (f" (prefix '{self.prefix}')" if self.prefix else "")

    def content(self) -> dict:
        return {"view": self.view.name, "version": self.view.version, "fingerprint": self.view.fingerprint,
                "features": list(self.features), "prefix": self.prefix, "keys": dict(self.keys)}


@dataclass(frozen=True)
class ResolvedDerived:
    derived: Derived
    inputs: tuple[str, ...]  # the training-set columns the expression may reference
    fingerprint: str

    @property
    def name(self) -> str:
        return self.derived.name

    def content(self) -> dict:
        return {"name": self.name, "version": self.derived.version, "fingerprint": self.fingerprint,
                "expr": self.derived.expr, "inputs": list(self.inputs)}


@dataclass(frozen=True)
class Resolved:
    """What a feature list adds to the spine: view uses, derived features (inputs before their users), the
    feature sets named, and `output`, the added columns in order (a derived feature's inputs are kept only when
    the list asks for them too)."""

    selections: tuple[Selection, ...]
    derived: tuple[ResolvedDerived, ...]
    feature_sets: tuple[dict, ...]
    output: tuple[str, ...]

    def content(self) -> dict:
        return {"uses": [s.content() for s in self.selections], "derived": [d.content() for d in self.derived],
                "output": list(self.output)}


def set_fingerprint(feature_set: FeatureSet, refs: Mapping[str, object] | None) -> str:
    """A hash of the set's name, version and resolved content."""
    content = resolve([feature_set], refs).content()
    return _hash({"name": feature_set.name, "version": feature_set.version, "content": content})


def resolve(features: Sequence, refs: Mapping[str, object] | None = None) -> Resolved:
    """Feature references -> `Resolved`. `refs` maps names to views, feature sets and derived features (a
    repository's `refs`, or just its views)."""
    return _Resolver(getattr(refs, "refs", refs) or {}).run(features)


class _Resolver:
    def __init__(self, refs: Mapping[str, object]):
        self.refs = refs
        self.uses: dict[tuple[str | None, str], list] = {}  # (prefix, view) -> [view, keys, features or None]
        self.derived: dict[str, ResolvedDerived] = {}
        self.sets: dict[str, dict] = {}
        self.requested: list[str] = []
        self.stack: list[str] = []  # feature sets and derived features being resolved: cycles
        self.star: dict[str, tuple[str | None, str]] = {}  # "*{column prefix}" -> its use

    def run(self, features) -> Resolved:
        if isinstance(features, (str, Use, FeatureView, Derived, FeatureSet)):
            features = [features]
        for item in features:
            self.requested += self.walk(item, where="")
        selections = tuple(Selection(v, tuple(fs) if fs is not None else tuple(f.name for f in v.features),
                                     tuple(sorted(keys.items())), prefix)
                           for (prefix, _), (v, keys, fs) in self.uses.items())
        # columns asked for by name, and every column of a use asked for whole ("*{column prefix}")
        wanted = set(self.requested)
        output = [c for s in selections for c in s.columns if c in wanted or f"*{s.column_prefix}" in wanted]
        output += [d.name for d in self.derived.values() if d.name in wanted]
        return Resolved(selections, tuple(self.derived.values()), tuple(self.sets.values()), tuple(output))

    def walk(self, item, *, where: str) -> list[str]:
        """Registers `item`; returns the columns it stands for (`*prefix` for "all of a use's features")."""
        if isinstance(item, FeatureView):
            return self.use(item, None, {}, None, where=where)
        if isinstance(item, Use):
            view, feature = self.lookup_view(item.view, where=where)
            feats = list(item.features) + ([feature] if feature else [])
            return self.use(view, feats or None, dict(item.keys), item.prefix, where=where)
        if isinstance(item, Derived):
            return self.derive(item, where=where)
        if isinstance(item, FeatureSet):
            return self.expand(item, where=where)
        if isinstance(item, str):
            name, _, feature = item.partition(":")
            found = self.refs.get(name)
            if isinstance(found, (FeatureSet, Derived)):
                if feature:
                    raise RegistryError(f"{where}'{item}': '{name}' is a {_kind(found)}, not a view: it takes no "
                                        "':feature'", hint=f"write '{name}'")
                return self.walk(found, where=where)
            view, feature = self.lookup_view(item, where=where)
            return self.use(view, [feature] if feature else None, {}, None, where=where)
        raise UsageError(f"{where}features must be views, 'view[:feature]' strings, tl.Use, tl.Derived or "
                         f"tl.FeatureSet, got {type(item).__name__}")

    def lookup_view(self, ref: FeatureView | str, *, where: str) -> tuple[FeatureView, str | None]:
        if isinstance(ref, FeatureView):
            return ref, None
        name, _, feature = ref.partition(":")
        view = self.refs.get(name)
        if not isinstance(view, FeatureView):
            known = ", ".join(sorted(self.refs)) or "none loaded"
            what = f"'{name}' is a {_kind(view)}, not a feature view" if view is not None \
                else f"unknown feature view '{name}'"
            raise RegistryError(f"{where}{what} in '{ref}'", hint=f"known names: {known}")
        return view, feature or None

    def use(self, view: FeatureView, feats: list[str] | None, keys: dict, prefix: str | None, *, where: str) -> list[str]:
        for f in feats or ():
            try:
                view.feature(f)
            except RegistryError as exc:  # names the view and its features
                raise RegistryError(f"{where}{exc.message}", hint=exc.hint) from None
        unknown = sorted(set(keys) - set(view.entity.keys))
        if unknown:
            raise DefinitionError(f"{where}use of view '{view.name}': keys maps {unknown}, which are not key columns "
                                  f"of entity '{view.entity.name}' (its keys: {', '.join(view.entity.keys)})")
        slot = (prefix, view.name)
        prev = self.uses.get(slot)
        if prev is None:
            self.uses[slot] = [view, keys, None if feats is None else list(feats)]
        else:
            if prev[0] != view:
                raise UsageError(f"{where}two different definitions of view '{view.name}' were passed")
            if prev[1] != keys:
                label = f"prefix '{prefix}'" if prefix else "no prefix"
                raise UsageError(f"{where}two uses of view '{view.name}' with {label} read different keys "
                                 f"({_keys(prev[1])} and {_keys(keys)}): their columns would collide",
                                 hint="give each use of a view its own prefix=")
            if feats is None:
                prev[2] = None
            elif prev[2] is not None:
                prev[2] += [f for f in feats if f not in prev[2]]
        sel = Selection(view, (), tuple(sorted(keys.items())), prefix)
        self.star[f"*{sel.column_prefix}"] = slot
        return [sel.column(f) for f in feats] if feats is not None else [f"*{sel.column_prefix}"]

    def derive(self, d: Derived, *, where: str) -> list[str]:
        done = self.derived.get(d.name)
        if done is not None:
            if done.derived != d:
                raise UsageError(f"{where}two different derived features are named '{d.name}'")
            return [d.name]
        if d.name in self.stack:
            raise DefinitionError(f"derived feature '{d.name}' depends on itself ({' -> '.join(self.stack)})")
        self.stack.append(d.name)
        inner = f"{where}derived feature '{d.name}': "
        columns, content = [], []
        for item in d.inputs:
            got = self.walk(item, where=inner)
            for c in got:
                if c.startswith("*"):  # a whole view: every feature of it is an input
                    view = self.uses[self.star[c]][0]
                    columns += [c[1:] + f.name for f in view.features]
                else:
                    columns.append(c)
            content.append(self._input_content(item, got))
        self.stack.pop()
        fingerprint = _hash({"name": d.name, "version": d.version, "expr": d.expr.strip(), "inputs": content})
        self.derived[d.name] = ResolvedDerived(d, tuple(dict.fromkeys(columns)), fingerprint)
        return [d.name]

    def _input_content(self, item, columns: list[str]) -> dict:
        if isinstance(item, Derived) or (isinstance(item, str) and isinstance(self.refs.get(item), Derived)):
            name = item.name if isinstance(item, Derived) else item
            return {"derived": name, "fingerprint": self.derived[name].fingerprint}
        view = item if isinstance(item, FeatureView) else self.lookup_view(
            item.view if isinstance(item, Use) else item, where="")[0]
        keys = dict(item.keys) if isinstance(item, Use) else {}
        return {"columns": columns, "view": view.name, "version": view.version, "fingerprint": view.fingerprint,
                "keys": keys}

    def expand(self, fs: FeatureSet, *, where: str) -> list[str]:
        if fs.name in self.stack:
            raise DefinitionError(f"feature set '{fs.name}' includes itself ({' -> '.join([*self.stack, fs.name])})")
        self.stack.append(fs.name)
        out = []
        for item in fs.features:
            out += self.walk(item, where=f"{where}feature set '{fs.name}': ")
        self.stack.pop()
        if fs.name not in self.sets:  # fingerprinted on its own, so that the set's content alone decides
            sub = _Resolver(self.refs)
            sub.stack = list(self.stack)
            content = sub.run(fs.features).content()
            self.sets[fs.name] = {"name": fs.name, "version": fs.version,
                                  "fingerprint": _hash({"name": fs.name, "version": fs.version, "content": content})}
        return out


def _kind(value) -> str:
    return {FeatureSet: "feature set", Derived: "derived feature", FeatureView: "feature view"}.get(
        type(value), type(value).__name__)


def _keys(keys: Mapping[str, str]) -> str:
    return "{" + ", ".join(f"{k} <- {v}" for k, v in keys.items()) + "}" if keys else "the view's own key columns"


def check_columns(spine_columns: Sequence[str], resolved: Resolved) -> None:
    """No two columns of the training set share a name: spine columns, feature columns and derived features."""
    owner: dict[str, str] = {c: "a spine column" for c in spine_columns}
    for sel in resolved.selections:
        for c in sel.columns:
            if c in owner:
                raise UsageError(f"column '{c}' of {sel.label} clashes with {owner[c]}",
                                 hint="rename the spine column, or give the use a prefix=")
            owner[c] = f"a feature of {sel.label}"
    for d in resolved.derived:
        if d.name in owner:
            raise DefinitionError(f"derived feature '{d.name}' clashes with {owner[d.name]} of the same name",
                                  hint="rename the derived feature")
        owner[d.name] = f"derived feature '{d.name}'"

"""The feature sets, declared once.

Each :class:`Feature` says *what* is computed (``op``), over *whose* history (``key``: the
origin user, the destination user, the (origin, destination) pair, or none), over *which*
window (``window_ms``; ``None`` = everything so far), and how the value is transformed before
scaling (``transform``). The batch engine (:mod:`txanomaly.features.batch`) and the online
engine (:mod:`txanomaly.features.online`) both evaluate these declarations; neither has
feature logic of its own. docs/features.md gives every definition in words.

Ordering and windows (DESIGN section 3): transactions are ordered by timestamp, ties in input
order. The window of length W of a transaction at time t covers the same user's transactions in
(t - W, t] that come at or before it in that order, itself included. A transaction whose user
id is missing has no history: its aggregates cover itself alone. Missing ids are never pooled.

>>> [f.name for f in SEED.features][:3]
['destination_amount', 'hour_sin', 'day_sin']
>>> FeatureSet.from_dict(STANDARD.to_dict()) == STANDARD
True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np

from txanomaly.errors import TxAnomalyError

HOUR_MS = 3_600_000
DAY_MS = 86_400_000

#: ``log_seconds_since_prev`` caps gaps at 30 days, and a user's first transaction counts as
#: a 30-day gap: "long ago or never" look the same to a distance-based model.
GAP_CAP_SECONDS = 30 * 86_400.0
#: Prior of ``log_amount_zscore``'s variance: the user's variance is shrunk towards
#: ZSCORE_PRIOR_STD^2 as if K more transactions had that spread, (n v + K s0^2) / (n + K).
#: A user with one or two previous amounts, or with all-equal amounts, would otherwise get a
#: huge z-score for an ordinary change. 0.5 in log units is a factor of ~1.65.
ZSCORE_PRIOR_STD = 0.5
ZSCORE_PRIOR_WEIGHT = 5
#: ``hour_deviation`` shrinks a user's hour profile as if K more transactions had been
#: spread evenly over the day: (|V| - V . u) / (n + K). Chosen with docs/detection.md's
#: benchmark (K = 5 and 10 were measured; 10 changed little).
HOUR_PRIOR_WEIGHT = 5

#: What a feature computes. ``key`` and ``window_ms`` say over whose history.
OPS: dict[str, str] = {
    "amount": "the transaction amount (destination amount, else origin amount)",
    "log_amount": "log(1 + amount)",
    "hour_sin": "sin(2 pi hour / 24), hour of day in UTC",
    "hour_cos": "cos(2 pi hour / 24)",
    "day_sin": "sin(2 pi weekday / 7), Monday = 0, UTC",
    "day_cos": "cos(2 pi weekday / 7)",
    "mean_diff": "amount - mean(amount over the user's window)",
    "count": "number of the user's transactions in the window",
    "log_amount_zscore": "(log(1+amount) - mean) / sqrt((n var + 5 * 0.5^2) / (n + 5)) over the "
                         "user's n previous transactions' log(1+amount); 0 when there is none",
    "log_seconds_since_prev": "log(1 + seconds since the user's previous transaction), gaps "
                              "capped at 30 days; the first transaction counts as 30 days",
    "log_amount_to_mean": "log(1 + amount) - log(1 + mean(amount over the user's window))",
    "is_first_pair": "1 if this origin never paid this destination before, else 0",
    "hour_deviation": "(|V| - V.u) / (n + 5): V the sum of the unit vectors (cos, sin of "
                      "2 pi hour / 24) of the user's n previous transactions, u this one's; "
                      "0 when there is none",
    "cross_border": "1 if origin and destination countries are both known and differ, else 0",
    "currency_mismatch": "1 if origin and destination currencies are both known and differ",
}
KEYS = ("origin", "destination", "pair")
#: What a feature means to an analyst, in a few words ({whose}: the key's owner; {span}: the
#: window). The origin is the sender (payer); the destination the recipient (payee, merchant).
_LABELS: dict[str, str] = {
    "amount": "amount",
    "log_amount": "amount (log scale)",
    "hour_sin": "time of day (sine)",
    "hour_cos": "time of day (cosine)",
    "day_sin": "day of week (sine)",
    "day_cos": "day of week (cosine)",
    "mean_diff": "amount minus the {whose} average {span}",
    "count": "{whose} transactions {span}",
    "log_amount_zscore": "amount vs the {whose} usual amounts (z-score)",
    "log_seconds_since_prev": "time since the {whose} previous transaction (log seconds)",
    "log_amount_to_mean": "amount vs the {whose} average {span} (log ratio)",
    "is_first_pair": "first payment between this sender and recipient",
    "hour_deviation": "time of day vs the {whose} usual hours",
    "cross_border": "cross-border (countries differ)",
    "currency_mismatch": "currencies differ between the two sides",
}
_WHOSE = {"origin": "sender's", "destination": "recipient's", "pair": "pair's"}
#: Ops evaluated over a user's history (need ``key``).
USER_OPS = frozenset({"mean_diff", "count", "log_amount_zscore", "log_seconds_since_prev",
                      "log_amount_to_mean", "is_first_pair", "hour_deviation"})
TRANSFORMS = ("none", "log1p", "signed_log1p", "scaled_signed_log1p")
#: Transforms with a scale fitted on the training data (:meth:`FeatureSet.fit_transforms`).
FITTED_TRANSFORMS = frozenset({"scaled_signed_log1p"})
#: Risk directions: which side of a feature's deviation from its prototype counts towards the
#: anomaly score (``both``: either side, the plain distance).
DIRECTIONS: dict[str, int] = {"up": 1, "down": -1, "both": 0}
#: What the destination (counterparty) of a transaction is: a ``merchant`` (a shop, terminal
#: or biller, which many customers pay and which never pays) or a ``person`` (P2P, AML: an
#: account that receives and sends). :mod:`txanomaly.features.roles` detects it from data.
COUNTERPARTIES = ("person", "merchant")
#: Which amount the per-user features read: ``destination`` = the destination amount, falling
#: back to the origin amount, for every feature (the reference's rule, ``seed``); ``own`` = the
#: payer's (origin user's and pair's) features read the origin amount, falling back to the
#: destination amount, so a payer's history is in the currency the payer pays in.
AMOUNT_SIDES = ("destination", "own")
SCALINGS = ("standard", "robust", "none")
#: Distance weights of the standard set, chosen on labelled synthetic data
#: (benchmarks/bench_feature_sets.py; docs/features.md). Standardising a rare 0/1 flag turns
#: a 1 into ~4 standard deviations (no transform can change that: it is affine-invariant),
#: so unweighted flags decided a third of the top of the ranking; the log-amount z-scores,
#: the most direct "unusual for this user" signal, count more.
FLAG_WEIGHT = 0.5
ZSCORE_WEIGHT = 1.5
#: The weights of the payer's hour deviation and of the global hour of day (sine, cosine) in
#: ``standard`` (step 7, docs/detection.md): with the global hour at full weight, the
#: deviation could not rise above 0.25 without costing the card-terminal log (whose fraud has
#: no hour pattern) more than 0.01 PR-AUC, as the global hour led its false alarms; at half
#: weight each, every benchmark log gains.
HOUR_DEVIATION_WEIGHT = 0.5
GLOBAL_HOUR_WEIGHT = 0.5


@dataclass(frozen=True)
class Feature:
    """One feature: a name, what it computes, over whose history and window, and a transform."""

    name: str
    op: str
    key: str | None = None
    window_ms: int | None = None
    transform: str = "none"
    clip: tuple[float, float] | None = None
    weight: float = 1.0
    #: Which side of the deviation from the prototype is risky: ``up``, ``down`` or ``both``.
    direction: str = "both"
    #: The direction when the counterparty is a merchant (None: the same as ``direction``);
    #: :meth:`FeatureSet.for_counterparty` resolves it.
    merchant_direction: str | None = None
    #: ``scaled_signed_log1p``'s scale s: sign(x) log(1 + |x| / s). Fitted on the training
    #: rows (the median of the non-zero |x|) unless given; saved in the model.
    transform_scale: float | None = None

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise TxAnomalyError(f"feature {self.name!r}: unknown op {self.op!r}; "
                                 f"expected one of {sorted(OPS)}")
        if (self.op in USER_OPS) != (self.key is not None):
            raise TxAnomalyError(f"feature {self.name!r}: op {self.op!r} "
                                 + ("needs a key" if self.op in USER_OPS else "takes no key"))
        if self.key is not None and self.key not in KEYS:
            raise TxAnomalyError(f"feature {self.name!r}: key must be one of {KEYS}")
        if self.transform not in TRANSFORMS:
            raise TxAnomalyError(f"feature {self.name!r}: transform must be one of {TRANSFORMS}")
        if self.window_ms is not None and self.window_ms <= 0:
            raise TxAnomalyError(f"feature {self.name!r}: window_ms must be > 0")
        if not (isinstance(self.weight, int | float) and 0 < self.weight < float("inf")):
            raise TxAnomalyError(f"feature {self.name!r}: weight must be a number > 0")
        scale = self.transform_scale
        if scale is not None and not (self.transform in FITTED_TRANSFORMS
                                      and isinstance(scale, int | float)
                                      and not isinstance(scale, bool)
                                      and 0 < scale < float("inf")):
            raise TxAnomalyError(f"feature {self.name!r}: transform_scale must be a number > 0, "
                                 f"given only with transform {sorted(FITTED_TRANSFORMS)}")
        for name in ("direction", "merchant_direction"):
            value = getattr(self, name)
            if value not in DIRECTIONS and not (name == "merchant_direction" and value is None):
                raise TxAnomalyError(f"feature {self.name!r}: {name} must be one of "
                                     f"{sorted(DIRECTIONS)}, got {value!r}")

    @property
    def label(self) -> str:
        """The feature in a few plain words, for analysts (reports, reasons).

        >>> Feature("origin_count_1h", "count", "origin", HOUR_MS).label
        "sender's transactions in the last 1 h"
        """
        whose = _WHOSE.get(self.key or "", "")
        window = "24 h" if self.window_ms == DAY_MS else _span(self.window_ms or 0)
        span = "so far" if self.window_ms is None else f"in the last {window}"
        return _LABELS[self.op].format(whose=whose, span=span)

    def describe(self) -> str:
        """The feature's definition in words (used by docs and reports)."""
        text = OPS[self.op]
        if self.key is not None:
            whose = {"origin": "origin user", "destination": "destination user",
                     "pair": "(origin, destination) pair"}[self.key]
            text = text.replace("the user", f"the {whose}")
            if self.op in ("mean_diff", "count", "log_amount_to_mean"):
                span = "all transactions so far" if self.window_ms is None else (
                    f"window (t - {_span(self.window_ms)}, t]")
                text += f"; window = {span}"
        return text


def _span(ms: int) -> str:
    if ms % DAY_MS == 0:
        return f"{ms // DAY_MS} d"
    if ms % HOUR_MS == 0:
        return f"{ms // HOUR_MS} h"
    return f"{ms} ms"


_KEY_COLUMNS = {"origin": ["origin_user_id"], "destination": ["destination_user_id"],
                "pair": ["origin_user_id", "destination_user_id"]}
_OP_COLUMNS = {"cross_border": ["origin_country", "destination_country"],
               "currency_mismatch": ["origin_currency", "destination_currency"]}


@dataclass(frozen=True)
class FeatureSet:
    """An ordered, named list of features; serialisable into the model file."""

    name: str
    features: tuple[Feature, ...]
    description: str = ""
    version: int = 1
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    #: How the detector scales these features (its ``scaling="auto"`` resolves to this).
    scaling: str = "standard"
    #: The counterparty role the directions were resolved for (None: not resolved).
    counterparty: str | None = None
    #: Which amount the per-user features read (:data:`AMOUNT_SIDES`).
    amount_side: str = "destination"

    def __post_init__(self) -> None:
        if self.scaling not in SCALINGS:
            raise TxAnomalyError(f"feature set {self.name!r}: scaling must be one of {SCALINGS}")
        if self.amount_side not in AMOUNT_SIDES:
            raise TxAnomalyError(f"feature set {self.name!r}: amount_side must be one of "
                                 f"{AMOUNT_SIDES}, got {self.amount_side!r}")
        if self.counterparty is not None and self.counterparty not in COUNTERPARTIES:
            raise TxAnomalyError(f"feature set {self.name!r}: counterparty must be one of "
                                 f"{COUNTERPARTIES}, got {self.counterparty!r}")

    def amount_source(self, key: str | None) -> str:
        """Which amount comes first for a key's features: ``origin`` or ``destination``.

        >>> STANDARD.amount_source("pair"), SEED.amount_source("origin")
        ('origin', 'destination')
        """
        payer = self.amount_side == "own" and key in ("origin", "pair")
        return "origin" if payer else "destination"

    def history_kind(self, key: str) -> str:
        """The name a key's history is kept under by the online engine's stores: the key
        itself, or ``origin:own`` / ``pair:own`` when its features read the origin amount (the
        histories hold amounts, so the two kinds are never mixed)."""
        return key if self.amount_source(key) == "destination" else f"{key}:own"

    def for_counterparty(self, role: str) -> FeatureSet:
        """This set with each feature's direction resolved for a ``person`` or ``merchant``
        counterparty (a feature's ``merchant_direction`` applies to merchants).

        >>> fs = STANDARD.for_counterparty("merchant")
        >>> fs.counterparty, fs.features[STANDARD.names.index("destination_count_1h")].direction
        ('merchant', 'down')
        """
        if role not in COUNTERPARTIES:
            raise TxAnomalyError(f"counterparty must be one of {COUNTERPARTIES}, got {role!r}")
        if self.counterparty is not None and self.counterparty != role:
            raise TxAnomalyError(f"feature set {self.name!r} was already resolved for a "
                                 f"{self.counterparty} counterparty")
        feats = tuple(replace(f, direction=(f.merchant_direction or f.direction)
                              if role == "merchant" else f.direction, merchant_direction=None)
                      for f in self.features)
        return replace(self, features=feats, counterparty=role)

    def fit_transforms(self, X: np.ndarray) -> FeatureSet:
        """This set with every fitted transform's scale fitted on the raw training rows ``X``
        (scales already set are kept): the median of the column's non-zero absolute values,
        1 when it has none. A currency factor multiplies the scale, so the transformed values
        do not change with it.

        >>> fs = FeatureSet("x", (Feature("d", "amount", transform="scaled_signed_log1p"),))
        >>> fs.fit_transforms(np.array([[0.0], [-2.0], [4.0], [10.0]])).features[0].transform_scale
        4.0
        """
        X = np.asarray(X, dtype=np.float64)
        feats = []
        for j, f in enumerate(self.features):
            if f.transform in FITTED_TRANSFORMS and f.transform_scale is None:
                magnitude = np.abs(X[:, j])
                magnitude = magnitude[magnitude > 0]
                scale = float(np.median(magnitude)) if len(magnitude) else 1.0
                f = replace(f, transform_scale=scale if np.isfinite(scale) and scale > 0 else 1.0)
            feats.append(f)
        return replace(self, features=tuple(feats))

    @property
    def transforms_fitted(self) -> bool:
        """Whether every fitted transform has its scale."""
        return all(f.transform_scale is not None for f in self.features
                   if f.transform in FITTED_TRANSFORMS)

    @property
    def directions(self) -> list[int] | None:
        """Per-feature risk directions (+1 up, -1 down, 0 both), or None when all are both."""
        values = [DIRECTIONS[f.direction] for f in self.features]
        return values if any(values) else None

    @property
    def input_columns(self) -> list[str]:
        """The flat record columns the features read (see :mod:`txanomaly.schema`)."""
        columns = ["timestamp", "origin_amount", "destination_amount"]
        for f in self.features:
            if f.key is not None:
                columns += _KEY_COLUMNS[f.key]
            columns += _OP_COLUMNS.get(f.op, [])
        return list(dict.fromkeys(columns))

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def weights(self) -> list[float] | None:
        """Per-feature distance weights, or None when all are 1."""
        weights = [float(f.weight) for f in self.features]
        return None if all(w == 1.0 for w in weights) else weights

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "description": self.description,
                "scaling": self.scaling, "counterparty": self.counterparty,
                "amount_side": self.amount_side,
                "features": [_feature_dict(f) for f in self.features]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSet:
        try:
            feats = tuple(
                Feature(**{**f, "clip": tuple(f["clip"]) if f.get("clip") else None})
                for f in data["features"])
            return cls(name=data["name"], features=feats, description=data.get("description", ""),
                       version=int(data.get("version", 1)),
                       scaling=data.get("scaling", "standard"),
                       counterparty=data.get("counterparty"),
                       amount_side=data.get("amount_side", "destination"))
        except (KeyError, TypeError) as exc:
            raise TxAnomalyError(f"invalid feature set definition: {exc}") from None

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Apply each feature's transform (and clip) column-wise: raw values -> model inputs."""
        X = np.array(X, dtype=np.float64, copy=True)
        plan = self._columns
        if len(plan.log1p):
            X[:, plan.log1p] = np.log1p(np.maximum(X[:, plan.log1p], 0.0))
        if len(plan.signed):
            col = X[:, plan.signed]
            X[:, plan.signed] = np.sign(col) * np.log1p(np.abs(col))
        if len(plan.scaled):
            col = X[:, plan.scaled]
            X[:, plan.scaled] = np.sign(col) * np.log1p(np.abs(col) / plan.scale)
        if len(plan.clipped):
            X[:, plan.clipped] = np.clip(X[:, plan.clipped], plan.low, plan.high)
        return X

    def inverse_transform(self, Z: np.ndarray) -> np.ndarray:
        """Map model inputs back to original units (clipping cannot be undone)."""
        Z = np.array(Z, dtype=np.float64, copy=True)
        plan = self._columns
        if len(plan.log1p):
            Z[:, plan.log1p] = np.expm1(Z[:, plan.log1p])
        if len(plan.signed):
            col = Z[:, plan.signed]
            Z[:, plan.signed] = np.sign(col) * np.expm1(np.abs(col))
        if len(plan.scaled):
            col = Z[:, plan.scaled]
            Z[:, plan.scaled] = np.sign(col) * np.expm1(np.abs(col)) * plan.scale
        return Z

    @cached_property
    def _columns(self) -> _TransformColumns:
        """Which columns each transform applies to: the transforms run one vectorised
        operation per kind (a per-column loop cost ~20 us on a one-row request)."""
        def where(kind: str) -> np.ndarray:
            return np.array([j for j, f in enumerate(self.features) if f.transform == kind],
                            dtype=np.intp)
        clipped = [(j, f.clip) for j, f in enumerate(self.features) if f.clip is not None]
        unfitted = [f.name for f in self.features
                    if f.transform in FITTED_TRANSFORMS and f.transform_scale is None]
        if unfitted:
            raise TxAnomalyError(f"feature set {self.name!r}: the transform scale of {unfitted} "
                                 "is not fitted; call fit_transforms on the training rows (a "
                                 "TransactionModel does it in fit)")
        scaled = where("scaled_signed_log1p")
        return _TransformColumns(
            where("log1p"), where("signed_log1p"), scaled,
            np.array([self.features[j].transform_scale for j in scaled], dtype=np.float64),
            np.array([j for j, _ in clipped], dtype=np.intp),
            np.array([c[0] for _, c in clipped], dtype=np.float64),
            np.array([c[1] for _, c in clipped], dtype=np.float64))


@dataclass(frozen=True)
class _TransformColumns:
    log1p: np.ndarray
    signed: np.ndarray
    scaled: np.ndarray
    scale: np.ndarray
    clipped: np.ndarray
    low: np.ndarray
    high: np.ndarray


def _feature_dict(f: Feature) -> dict[str, Any]:
    d = asdict(f)
    d["clip"] = list(f.clip) if f.clip else None
    return d


SEED = FeatureSet(
    name="seed",
    description="Exactly the 9 features of the reference notebook, in its order.",
    features=(
        Feature("destination_amount", "amount"),
        Feature("hour_sin", "hour_sin"),
        Feature("day_sin", "day_sin"),
        Feature("hour_cos", "hour_cos"),
        Feature("day_cos", "day_cos"),
        Feature("destination_sliding_mean_diff", "mean_diff", "destination", DAY_MS),
        Feature("destination_prefix_mean_diff", "mean_diff", "destination", None),
        Feature("origin_sliding_mean_diff", "mean_diff", "origin", DAY_MS),
        Feature("origin_prefix_mean_diff", "mean_diff", "origin", None),
    ),
)


def _per_user(side: str) -> tuple[Feature, ...]:
    # A burst and a busy recipient are risky for a person (P2P, AML: a mule's inflow); for a
    # merchant many payments are its trade, and a payment when it is usually quiet (few
    # payments lately, a long gap) is the odd one (merchant_direction).
    merchant = side == "destination"
    return (
        Feature(f"{side}_count_1h", "count", side, HOUR_MS, transform="log1p", direction="up",
                merchant_direction="down" if merchant else None),
        Feature(f"{side}_count_24h", "count", side, DAY_MS, transform="log1p", direction="up",
                merchant_direction="down" if merchant else None),
        Feature(f"{side}_log_amount_zscore", "log_amount_zscore", side, clip=(-10.0, 10.0),
                weight=ZSCORE_WEIGHT, direction="up"),
        Feature(f"{side}_log_seconds_since_prev", "log_seconds_since_prev", side,
                direction="down", merchant_direction="up" if merchant else None),
        Feature(f"{side}_log_amount_to_mean_24h", "log_amount_to_mean", side, DAY_MS,
                direction="up"),
    )


def _seed_with_transforms() -> tuple[Feature, ...]:
    out = []
    for f in SEED.features:
        if f.op == "amount":
            f = Feature(f.name, f.op, transform="log1p", direction="up")
        elif f.op == "mean_diff":
            f = Feature(f.name, f.op, f.key, f.window_ms, transform="scaled_signed_log1p",
                        direction="up")
        elif f.op in ("hour_sin", "hour_cos"):
            f = Feature(f.name, f.op, weight=GLOBAL_HOUR_WEIGHT)
        out.append(f)
    return tuple(out)


STANDARD = FeatureSet(
    name="standard",
    description="The seed's 9 features plus velocity, per-user amount statistics, recency, "
                "new counterparty, cross-border and currency mismatch; heavy-tailed values "
                "are log-transformed so no single feature dominates the distance; each "
                "feature's risk direction is declared (a larger amount, a burst, a new "
                "counterparty), per counterparty role for the recipient's velocity; the "
                "payer's features read the payer's own amount; an hour unusual for the "
                "payer.",
    amount_side="own",
    features=(
        *_seed_with_transforms(),
        Feature("log_amount", "log_amount", direction="up"),
        *_per_user("origin"),
        *_per_user("destination"),
        Feature("is_first_pair", "is_first_pair", "pair", weight=FLAG_WEIGHT, direction="up"),
        Feature("cross_border", "cross_border", weight=FLAG_WEIGHT, direction="up"),
        Feature("currency_mismatch", "currency_mismatch", weight=FLAG_WEIGHT, direction="up"),
        Feature("origin_hour_deviation", "hour_deviation", "origin",
                weight=HOUR_DEVIATION_WEIGHT, direction="up"),
    ),
)

FEATURE_SETS: dict[str, FeatureSet] = {"seed": SEED, "standard": STANDARD}


def get_feature_set(name: str | FeatureSet) -> FeatureSet:
    """Look a feature set up by name (``seed`` or ``standard``)."""
    if isinstance(name, FeatureSet):
        return name
    try:
        return FEATURE_SETS[name]
    except KeyError:
        raise TxAnomalyError(f"unknown feature set {name!r}; expected one of "
                             f"{sorted(FEATURE_SETS)}") from None

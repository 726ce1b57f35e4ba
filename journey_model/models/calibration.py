"""Calibrated outcome probabilities and operating points: scores a retention or credit team can act on.

A model's sigmoid outputs rank customers but are not probabilities one can read as "40 % will leave". Per
outcome, :func:`fit_calibration` fits on the validation split (NaN label = unknown, ignored):

* **Platt / temperature scaling** — ``sigmoid(a * logit(p) + b)``, ``a`` and ``b`` minimising log-loss
  (temperature scaling is the case ``b = 0``);
* **isotonic regression** — pool-adjacent-violators; stored as breakpoints (x, y) at the pooled blocks'
  weighted mean scores and applied by linear interpolation (``np.interp``), so it is strictly increasing
  between the outermost blocks and ties only beyond them; clipped to [1e-6, 1 - 1e-6];
* **identity** — the raw scores, kept when neither beats them.

The method is chosen honestly: every candidate is scored by its out-of-fold log-loss (k-fold cross-fitting on
the validation rows, folds stratified by label); a more flexible map replaces a simpler one (identity, Platt,
isotonic, in that order) only when it is better by more than one standard error of the paired per-row
difference; the winner is refitted on all validation rows. Isotonic
needs :data:`MIN_CLASS_ROWS_ISOTONIC` rows of each class, Platt :data:`MIN_CLASS_ROWS_PLATT`; below that the
outcome falls back to Platt, then identity.

**Operating points** turn the calibrated probability into a flag by a declared policy
(:class:`OperatingPolicy`, parsed from text): ``capacity:5%`` (flag the top 5 % of scored customers),
``precision:0.6`` (the lowest threshold reaching that precision on validation; when unreachable, the best-F1
threshold and a recorded warning), ``cost:10`` (a missed positive costs 10 false alarms: the threshold
minimising that cost on validation). A customer is flagged when ``p >= threshold``; a NaN probability (a
customer not scored, e.g. ineligible) is never flagged.

Everything is plain JSON (:meth:`Calibration.to_json`; ``calibration.json`` in a model bundle), applied by
vectorised numpy, deterministic. This module needs numpy and scipy only; it sits in the models layer so
that training (which fits it) and inference (which applies it) both reach it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import isotonic_regression, minimize
from scipy.special import expit, logit

CALIBRATION_FILE = "calibration.json"
FORMAT_VERSION = 1
METHODS = ("auto", "platt", "isotonic", "none")  # what training may ask for
FITTED_METHODS = ("identity", "platt", "isotonic")  # what an outcome may end up with
PROBABILITY_CLIP = 1e-6  # calibrated probabilities stay in [1e-6, 1 - 1e-6]: log-loss stays finite
LOGIT_CLIP = 1e-7  # raw probabilities are clipped to this before the logit (float32 sigmoids saturate at 1)
DEFAULT_BINS = 15  # as journey_model.training.metrics: equal-width bins (Guo et al. 2017)
DEFAULT_FOLDS = 5
MIN_CLASS_ROWS_PLATT = 5  # rows of each class below which an outcome stays uncalibrated
# rows of the rarer class below which isotonic overfits (Niculescu-Mizil & Caruana 2005: isotonic needs far more
# data than Platt; on the demo, 84 positives, isotonic won on validation and lost 0.04 log-loss on the test month)
MIN_CLASS_ROWS_ISOTONIC = 100
TOP_DECILE = 0.10
DEFAULT_POLICY = "capacity:10%"
BIN_STRATEGIES = ("width", "mass")


class CalibrationError(ValueError):
    """A policy or method that cannot be read, or a calibration file that does not fit the model."""


# --------------------------------------------------------------------------------------------------------------
# Measures
# --------------------------------------------------------------------------------------------------------------


def known_pairs(probabilities: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, labels) as float64 arrays, rows with an unknown label or a NaN score dropped."""
    p = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if p.shape != y.shape:
        raise CalibrationError(f"probabilities {p.shape} and labels {y.shape} differ in length")
    keep = ~(np.isnan(y) | np.isnan(p))
    return p[keep], y[keep]


def log_loss(probabilities: Any, labels: Any, epsilon: float = PROBABILITY_CLIP) -> float:
    """Mean binary cross-entropy over known labels; NaN when none is known."""
    p, y = known_pairs(probabilities, labels)
    if not p.size:
        return math.nan
    p = np.clip(p, epsilon, 1.0 - epsilon)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def _bin_index(p: np.ndarray, n_bins: int, strategy: str) -> np.ndarray:
    if strategy == "width":
        return np.clip((p * n_bins).astype(np.int64), 0, n_bins - 1)  # 1.0 joins the last bin
    if strategy == "mass":  # equal-count bins over the sorted scores; ties may straddle two bins
        order = np.argsort(p, kind="stable")
        index = np.empty(p.size, dtype=np.int64)
        index[order] = (np.arange(p.size) * n_bins) // max(p.size, 1)
        return index
    raise CalibrationError(f"bin strategy {strategy!r}; expected one of {BIN_STRATEGIES}")


@dataclass
class ReliabilityCurve:
    """Reliability-diagram data: per bin the mean predicted probability, the observed rate and the count."""

    mean_predicted: np.ndarray  # NaN for an empty bin
    observed_rate: np.ndarray  # NaN for an empty bin
    count: np.ndarray  # int64
    strategy: str


def reliability_curve(probabilities: Any, labels: Any, n_bins: int = DEFAULT_BINS,
                      strategy: str = "width") -> ReliabilityCurve:
    """Per-bin data over known labels. ``width``: equal-width bins of [0, 1] (the metrics' ECE bins);
    ``mass``: bins holding equally many customers (better resolution where the scores crowd)."""
    if n_bins < 1:
        raise CalibrationError(f"n_bins = {n_bins}; expected a positive number of bins")
    p, y = known_pairs(probabilities, labels)
    index = _bin_index(p, n_bins, strategy)
    count = np.bincount(index, minlength=n_bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, np.bincount(index, p, n_bins) / count, np.nan)
        observed = np.where(count > 0, np.bincount(index, y, n_bins) / count, np.nan)
    return ReliabilityCurve(mean, observed, count, strategy)


def expected_calibration_error(probabilities: Any, labels: Any, n_bins: int = DEFAULT_BINS,
                               strategy: str = "width") -> float:
    """ECE = sum over bins of (share of customers) x |observed rate - mean predicted|; NaN with no known label.

    With ``strategy="width"`` and 15 bins it equals the ``ece/<outcome>`` of the training metrics.
    """
    curve = reliability_curve(probabilities, labels, n_bins, strategy)
    total = curve.count.sum()
    if not total:
        return math.nan
    filled = curve.count > 0
    gaps = np.abs(curve.observed_rate[filled] - curve.mean_predicted[filled])
    return float(np.sum(curve.count[filled] * gaps) / total)


def top_share_precision(probabilities: Any, labels: Any, share: float = TOP_DECILE) -> float:
    """Positive rate among the top ``share`` of customers by probability (known labels), ties averaged.

    Customers tied at the cut are counted by the tied group's positive rate, so the value does not depend on
    row order.
    """
    p, y = known_pairs(probabilities, labels)
    if not p.size:
        return math.nan
    k = max(1, math.ceil(share * p.size - 1e-9))
    cut = np.sort(p)[::-1][k - 1]
    above, tied = p > cut, p == cut
    positives = y[above].sum() + (k - above.sum()) * y[tied].mean()
    return float(positives / k)


def lift_at(probabilities: Any, labels: Any, share: float = TOP_DECILE) -> float:
    """Positive rate in the top ``share`` over the overall positive rate (1 = no better than random)."""
    p, y = known_pairs(probabilities, labels)
    if not p.size or not y.sum():
        return math.nan
    return top_share_precision(p, y, share) / float(y.mean())


# --------------------------------------------------------------------------------------------------------------
# Fitting
# --------------------------------------------------------------------------------------------------------------


def raw_logits(probabilities: np.ndarray) -> np.ndarray:
    """logit(p) with p clipped to [1e-7, 1 - 1e-7] so saturated float32 sigmoids stay finite."""
    return logit(np.clip(probabilities, LOGIT_CLIP, 1.0 - LOGIT_CLIP))


def fit_platt(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """``a``, ``b`` of ``sigmoid(a * logit(p) + b)`` minimising log-loss (L-BFGS with the exact gradient)."""
    z, y = raw_logits(probabilities), labels

    def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        s = params[0] * z + params[1]
        q = expit(s)
        value = np.mean(np.logaddexp(0.0, s) - y * s)  # log-loss written stably in the logit
        residual = q - y
        return float(value), np.array([np.mean(residual * z), np.mean(residual)])

    found = minimize(loss, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B")
    return {"a": float(found.x[0]), "b": float(found.x[1])}


def fit_isotonic(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, list[float]]:
    """Breakpoints of a non-decreasing map: PAV over the distinct scores, one point per pooled block at its
    weighted mean score and positive rate."""
    x, inverse = np.unique(probabilities, return_inverse=True)
    weights = np.bincount(inverse).astype(np.float64)
    rates = np.bincount(inverse, labels) / weights
    fitted = isotonic_regression(rates, weights=weights, increasing=True)
    starts = fitted.blocks[:-1]
    block_weight = np.add.reduceat(weights, starts)
    centres = np.add.reduceat(x * weights, starts) / block_weight
    values = np.clip(fitted.x[starts], PROBABILITY_CLIP, 1.0 - PROBABILITY_CLIP)
    return {"x": centres.tolist(), "y": values.tolist()}


def transform(method: str, params: Mapping[str, Any], probabilities: Any) -> np.ndarray:
    """Apply one fitted map to raw probabilities (float64; NaN stays NaN)."""
    p = np.asarray(probabilities, dtype=np.float64)
    if method == "identity":
        return p.copy()
    if method == "platt":
        out = expit(params["a"] * raw_logits(p) + params["b"])
    elif method == "isotonic":
        out = np.interp(p, np.asarray(params["x"], np.float64), np.asarray(params["y"], np.float64))
    else:
        raise CalibrationError(f"calibration method {method!r}; expected one of {FITTED_METHODS}")
    out = np.clip(out, PROBABILITY_CLIP, 1.0 - PROBABILITY_CLIP)
    return np.where(np.isnan(p), np.nan, out)


def _fit(method: str, probabilities: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    if method == "platt":
        return fit_platt(probabilities, labels)
    if method == "isotonic":
        return fit_isotonic(probabilities, labels)
    return {}


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold number of each row: positives and negatives each spread evenly over the folds, by a seeded shuffle."""
    rng = np.random.default_rng(seed)
    assignment = np.empty(labels.size, dtype=np.int64)
    for value in (0.0, 1.0):
        rows = np.flatnonzero(labels == value)
        assignment[rows[rng.permutation(rows.size)]] = np.arange(rows.size) % folds
    return assignment


def row_log_losses(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    p = np.clip(probabilities, PROBABILITY_CLIP, 1.0 - PROBABILITY_CLIP)
    return -(labels * np.log(p) + (1.0 - labels) * np.log1p(-p))


def cross_fitted_losses(method: str, probabilities: np.ndarray, labels: np.ndarray, folds: int,
                        seed: int) -> np.ndarray:
    """Per-row log-loss of ``method`` on rows it was not fitted on (k-fold cross-fitting over validation)."""
    if method == "identity":
        return row_log_losses(probabilities, labels)
    assignment = stratified_folds(labels, folds, seed)
    out_of_fold = np.empty_like(probabilities)
    for fold in range(folds):
        held = assignment == fold
        params = _fit(method, probabilities[~held], labels[~held])
        out_of_fold[held] = transform(method, params, probabilities[held])
    return row_log_losses(out_of_fold, labels)


def choose_method(losses: Mapping[str, np.ndarray]) -> str:
    """The simplest candidate (in the given order) unless a later one beats the current choice by more than
    one standard error of the paired per-row difference: noise never buys a more flexible map."""
    names = list(losses)
    chosen = names[0]
    for name in names[1:]:
        difference = losses[chosen] - losses[name]
        standard_error = difference.std(ddof=1) / math.sqrt(difference.size) if difference.size > 1 else math.inf
        if difference.mean() > standard_error:
            chosen = name
    return chosen


# --------------------------------------------------------------------------------------------------------------
# Operating points
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OperatingPolicy:
    """Where to cut: ``capacity`` (share of customers flagged), ``precision`` (target) or ``cost`` (FN / FP)."""

    kind: str
    value: float

    KINDS = ("capacity", "precision", "cost")

    @classmethod
    def parse(cls, text: str) -> OperatingPolicy:
        """``capacity:5%`` (or ``capacity:0.05``), ``precision:0.6`` (or ``60%``), ``cost:10``."""
        match = re.fullmatch(r"\s*(\w+)\s*:\s*([0-9.eE+-]+)\s*(%?)\s*", str(text))
        if not match or match.group(1) not in cls.KINDS:
            raise CalibrationError(f"operating policy {text!r}; expected capacity:5%, precision:0.6 or cost:10")
        kind, number, percent = match.group(1), match.group(2), match.group(3)
        try:
            value = float(number) / (100.0 if percent else 1.0)
        except ValueError as error:
            raise CalibrationError(f"operating policy {text!r}: {number!r} is not a number") from error
        if kind in ("capacity", "precision") and not 0.0 < value <= 1.0:
            raise CalibrationError(f"operating policy {text!r}: {kind} must be a share in (0, 1] (or a percentage)")
        if kind == "cost" and not value > 0.0:
            raise CalibrationError(f"operating policy {text!r}: the cost ratio must be positive")
        return cls(kind, value)

    def __str__(self) -> str:
        if self.kind == "capacity":
            return f"capacity:{self.value * 100:g}%"
        return f"{self.kind}:{self.value:g}"


@dataclass
class OperatingPoint:
    """A policy's threshold on the calibrated probability and what it gave on validation."""

    policy: str  # the policy text, normalised (capacity:10%)
    threshold: float | None  # flag when p >= threshold; None: flag nobody
    precision: float  # on validation rows with a known label
    recall: float
    flagged_share: float  # share of validation customers flagged
    lift_top_decile: float  # positive rate in the top 10 % over the overall rate
    warning: str | None = None  # e.g. the precision target was unreachable

    def flags(self, probabilities: Any) -> np.ndarray:
        """Boolean flags; NaN probabilities (customers not scored) are never flagged."""
        p = np.asarray(probabilities, dtype=np.float64)
        if self.threshold is None:
            return np.zeros(p.shape, dtype=bool)
        with np.errstate(invalid="ignore"):
            return p >= self.threshold  # NaN >= t is False


def _threshold_table(p: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each distinct score t (descending): (t, true positives, flagged) when flagging p >= t."""
    order = np.argsort(-p, kind="stable")
    sorted_p, sorted_y = p[order], y[order]
    last_of_tie = np.r_[sorted_p[1:] != sorted_p[:-1], True]
    true_positives = np.cumsum(sorted_y)[last_of_tie]
    flagged = (np.arange(p.size) + 1)[last_of_tie]
    return sorted_p[last_of_tie], true_positives, flagged


def operating_metrics(probabilities: Any, labels: Any, threshold: float | None) -> dict[str, float]:
    """Precision, recall and flagged share of ``p >= threshold`` over known labels (NaN where undefined)."""
    p, y = known_pairs(probabilities, labels)
    flagged = np.zeros(p.size, dtype=bool) if threshold is None else p >= threshold
    n_flagged, positives = int(flagged.sum()), float(y.sum())
    hits = float(y[flagged].sum())
    return {
        "precision": hits / n_flagged if n_flagged else math.nan,
        "recall": hits / positives if positives else math.nan,
        "flagged_share": n_flagged / p.size if p.size else math.nan,
    }


def choose_operating_point(probabilities: Any, labels: Any, policy: OperatingPolicy | str) -> OperatingPoint:
    """The threshold ``policy`` asks for on (calibrated) validation probabilities with known labels."""
    policy = policy if isinstance(policy, OperatingPolicy) else OperatingPolicy.parse(policy)
    p, y = known_pairs(probabilities, labels)
    warning = None
    threshold: float | None = None
    if p.size:
        thresholds, true_positives, flagged = _threshold_table(p, y)
        positives = float(y.sum())
        if policy.kind == "capacity":
            k = max(1, math.ceil(policy.value * p.size - 1e-9))
            threshold = float(np.sort(p)[::-1][k - 1])
        elif policy.kind == "precision":
            reaching = np.flatnonzero(true_positives / flagged >= policy.value)
            if reaching.size:
                threshold = float(thresholds[reaching[-1]])  # the lowest threshold that still reaches it
            else:
                f1 = 2 * true_positives / (flagged + positives)
                threshold = float(thresholds[int(np.argmax(f1))])
                warning = (f"precision {policy.value:g} is not reached at any threshold on validation (best "
                           f"{float(np.max(true_positives / flagged)):.3f}); the best-F1 threshold is used instead")
        else:  # cost: a missed positive costs `value` false alarms; flagging nobody is a candidate too
            costs = policy.value * (positives - true_positives) + (flagged - true_positives)
            best = int(np.argmin(costs))  # the first minimum: the highest threshold among equals
            threshold = float(thresholds[best]) if costs[best] < policy.value * positives else None
    values = operating_metrics(p, y, threshold)
    return OperatingPoint(policy=str(policy), threshold=threshold, precision=values["precision"],
                          recall=values["recall"], flagged_share=values["flagged_share"],
                          lift_top_decile=lift_at(p, y), warning=warning)


# --------------------------------------------------------------------------------------------------------------
# The calibration of a model
# --------------------------------------------------------------------------------------------------------------


@dataclass
class OutcomeCalibration:
    """One outcome's fitted map, what it did on validation and its operating point."""

    method: str  # identity, platt or isotonic
    params: dict[str, Any]  # platt: {a, b}; isotonic: {x, y}; identity: {}
    ece_before: float
    ece_after: float
    logloss_before: float
    logloss_after: float
    n: int  # validation rows with a known label
    positives: int
    cross_fitted_logloss: dict[str, float] = field(default_factory=dict)  # per candidate method, out of fold
    note: str | None = None  # why a method was not tried (too few positives)
    operating_point: OperatingPoint | None = None

    def apply(self, probabilities: Any) -> np.ndarray:
        return transform(self.method, self.params, probabilities)


def _json_float(value: Any) -> Any:
    """NaN and infinities as None: calibration.json stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_float(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_float(v) for v in value]
    return value


def _from_json_float(value: Any) -> float:
    return math.nan if value is None else float(value)


@dataclass
class Calibration:
    """Per-outcome calibration maps and operating points of one model (``calibration.json`` in its bundle)."""

    outcomes: dict[str, OutcomeCalibration]
    bins: int = DEFAULT_BINS  # ECE bins (equal width) behind ece_before / ece_after

    # ---------------------------------------------------------------- scoring
    def apply(self, outcome: str, probabilities: Any) -> np.ndarray:
        """Calibrated probabilities of ``outcome`` (vectorised; an outcome without a map is returned as is)."""
        entry = self.outcomes.get(outcome)
        return transform("identity", {}, probabilities) if entry is None else entry.apply(probabilities)

    def flag(self, outcome: str, calibrated: Any) -> np.ndarray | None:
        """Flags of ``outcome`` from calibrated probabilities, or None when it has no operating point."""
        entry = self.outcomes.get(outcome)
        if entry is None or entry.operating_point is None:
            return None
        return entry.operating_point.flags(calibrated)

    def flag_columns(self, outcome_names: Sequence[str]) -> list[str]:
        """``flag_<outcome>`` for each outcome (in ``outcome_names`` order) that has an operating point."""
        return [f"flag_{name}" for name in outcome_names
                if name in self.outcomes and self.outcomes[name].operating_point is not None]

    def apply_columns(self, columns: dict[str, Any], outcome_names: Sequence[str]) -> dict[str, Any]:
        """Replace each ``p_<outcome>`` of a scored batch by its calibrated value and add ``flag_<outcome>``
        columns after them (in place; also returned). NaN stays NaN and is never flagged."""
        for name in outcome_names:
            key = f"p_{name}"
            if key in columns:
                columns[key] = self.apply(name, columns[key])
        for name in outcome_names:
            key = f"p_{name}"
            flags = self.flag(name, columns[key]) if key in columns else None
            if flags is not None:
                columns[f"flag_{name}"] = flags
        return columns

    # ---------------------------------------------------------------- evaluation
    def evaluate(self, probabilities: np.ndarray, labels: np.ndarray, outcome_names: Sequence[str]) -> dict[str, float]:
        """Metrics of raw ``(N, outcomes)`` probabilities on held-out rows, before and after calibration:
        ``ece/``, ``ece_raw/``, ``logloss/``, ``logloss_raw/``, ``op_precision/``, ``op_recall/``,
        ``op_flagged/``, ``lift10/`` + outcome."""
        values: dict[str, float] = {}
        for j, name in enumerate(outcome_names):
            raw, y = probabilities[:, j], labels[:, j]
            calibrated = self.apply(name, raw)
            values[f"ece_raw/{name}"] = expected_calibration_error(raw, y, self.bins)
            values[f"ece/{name}"] = expected_calibration_error(calibrated, y, self.bins)
            values[f"logloss_raw/{name}"] = log_loss(raw, y)
            values[f"logloss/{name}"] = log_loss(calibrated, y)
            values[f"lift10/{name}"] = lift_at(calibrated, y)
            point = self.outcomes[name].operating_point if name in self.outcomes else None
            if point is not None:
                at = operating_metrics(calibrated, y, point.threshold)
                values[f"op_precision/{name}"] = at["precision"]
                values[f"op_recall/{name}"] = at["recall"]
                values[f"op_flagged/{name}"] = at["flagged_share"]
        return values

    def describe(self) -> dict[str, dict[str, Any]]:
        """Per outcome: method, policy, threshold and the policy's warning, for metadata and people."""
        described = {}
        for name, entry in self.outcomes.items():
            point = entry.operating_point
            described[name] = {"method": entry.method, "policy": point.policy if point else None,
                               "threshold": point.threshold if point else None,
                               "warning": point.warning if point else None}
        return described

    # ---------------------------------------------------------------- persistence
    def to_json(self) -> dict[str, Any]:
        outcomes = {}
        for name, entry in self.outcomes.items():
            data = asdict(entry)
            outcomes[name] = _json_float(data)
        return {"version": FORMAT_VERSION, "bins": self.bins, "bin_strategy": "width", "outcomes": outcomes}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Calibration:
        if data.get("version") != FORMAT_VERSION:
            raise CalibrationError(f"calibration version {data.get('version')!r}; expected {FORMAT_VERSION}")
        outcomes = {}
        for name, entry in data["outcomes"].items():
            entry = dict(entry)
            point = entry.pop("operating_point", None)
            if point is not None:
                point = OperatingPoint(**{**point, **{k: _from_json_float(point[k]) for k in
                                                      ("precision", "recall", "flagged_share", "lift_top_decile")}})
            for key in ("ece_before", "ece_after", "logloss_before", "logloss_after"):
                entry[key] = _from_json_float(entry[key])
            entry["cross_fitted_logloss"] = {k: _from_json_float(v)
                                             for k, v in entry.get("cross_fitted_logloss", {}).items()}
            if entry["method"] not in FITTED_METHODS:
                raise CalibrationError(f"outcome {name!r}: calibration method {entry['method']!r}; "
                                       f"expected one of {FITTED_METHODS}")
            outcomes[name] = OutcomeCalibration(**entry, operating_point=point)
        return cls(outcomes=outcomes, bins=int(data.get("bins", DEFAULT_BINS)))

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=1, allow_nan=False)

    @classmethod
    def read(cls, path: str | Path) -> Calibration:
        path = Path(path)
        try:
            return cls.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (KeyError, TypeError, json.JSONDecodeError) as error:
            raise CalibrationError(f"{path}: not a Journey calibration file ({error})") from error


def fit_outcome(probabilities: Any, labels: Any, method: str = "auto", policy: OperatingPolicy | str | None = None,
                *, folds: int = DEFAULT_FOLDS, bins: int = DEFAULT_BINS, seed: int = 0) -> OutcomeCalibration:
    """Fit one outcome's calibration (``method`` of :data:`METHODS`) and its operating point on validation."""
    if method not in METHODS:
        raise CalibrationError(f"calibration method {method!r}; expected one of {METHODS}")
    p, y = known_pairs(probabilities, labels)
    # The fit must not depend on the order rows arrive in (one process or several, batch order): the folds are
    # drawn over rows sorted by (score, label).
    order = np.lexsort((y, p))
    p, y = p[order], y[order]
    positives, negatives = int(y.sum()), int(p.size - y.sum())
    smaller = min(positives, negatives)
    candidates = {"auto": ["identity", "platt", "isotonic"], "platt": ["platt"], "isotonic": ["isotonic"],
                  "none": ["identity"]}[method]
    note = None
    if "isotonic" in candidates and smaller < MIN_CLASS_ROWS_ISOTONIC:
        candidates = [c for c in candidates if c != "isotonic"] or ["platt"]
        note = f"isotonic not tried: {smaller} rows of the rarer class (< {MIN_CLASS_ROWS_ISOTONIC})"
    if "platt" in candidates and smaller < MIN_CLASS_ROWS_PLATT:
        candidates = ["identity"]
        note = f"left uncalibrated: {smaller} rows of the rarer class (< {MIN_CLASS_ROWS_PLATT})"
    scores: dict[str, float] = {}
    if len(candidates) > 1:
        k = max(2, min(folds, smaller))
        losses = {c: cross_fitted_losses(c, p, y, k, seed) for c in candidates}
        scores = {c: float(v.mean()) for c, v in losses.items()}
        chosen = choose_method(losses)
    else:
        chosen = candidates[0]
    params = _fit(chosen, p, y)
    calibrated = transform(chosen, params, p)
    entry = OutcomeCalibration(
        method=chosen, params=params,
        ece_before=expected_calibration_error(p, y, bins), ece_after=expected_calibration_error(calibrated, y, bins),
        logloss_before=log_loss(p, y), logloss_after=log_loss(calibrated, y), n=int(p.size), positives=positives,
        cross_fitted_logloss=scores, note=note)
    if policy is not None:
        entry.operating_point = choose_operating_point(calibrated, y, policy)
    return entry


def fit_calibration(probabilities: Any, labels: Any, outcome_names: Sequence[str], method: str = "auto",
                    policy: OperatingPolicy | str | None = DEFAULT_POLICY, *, from_logits: bool = False,
                    folds: int = DEFAULT_FOLDS, bins: int = DEFAULT_BINS, seed: int = 0) -> Calibration:
    """Calibration of every outcome from validation scores ``(N, outcomes)`` and labels (NaN = unknown).

    ``from_logits``: the scores are logits; they are turned into float32 sigmoids first, exactly as the
    Scorer computes ``p_<outcome>``, so the maps are fitted on what they will be applied to. ``policy`` None:
    no operating points (no flags).
    """
    if isinstance(policy, str):
        policy = OperatingPolicy.parse(policy)
    scores = np.asarray(probabilities, dtype=np.float32 if from_logits else np.float64)
    if from_logits:
        scores = expit(scores)
    scores = np.asarray(scores, dtype=np.float64).reshape(len(scores), -1)
    targets = np.asarray(labels, dtype=np.float64).reshape(len(scores), -1)
    if scores.shape[1] != len(outcome_names):
        raise CalibrationError(f"scores have {scores.shape[1]} columns for outcomes {list(outcome_names)}")
    return Calibration({name: fit_outcome(scores[:, j], targets[:, j], method, policy, folds=folds, bins=bins,
                                          seed=seed)
                        for j, name in enumerate(outcome_names)}, bins=bins)


__all__ = [
    "CALIBRATION_FILE", "Calibration", "CalibrationError", "METHODS", "OperatingPoint", "OperatingPolicy",
    "OutcomeCalibration", "ReliabilityCurve", "choose_operating_point", "expected_calibration_error",
    "fit_calibration", "fit_isotonic", "fit_outcome", "fit_platt", "lift_at", "log_loss", "operating_metrics",
    "reliability_curve", "top_share_precision", "transform",
]

"""Evaluation metrics for every Journey task: outcomes, next event, multi-step forecasts, ATRank's sampled AUC.

Four families, each as plain functions over tensors and as a stateful accumulator (a
:class:`torchmetrics.Metric`, so states follow the module's device and are gathered across processes) whose
``compute()`` returns ``dict[str, float]`` with keys ready to be prefixed (``"val/"``, ``"test/"``, see
:func:`prefix_metric_keys`) and logged to MLflow:

* **Outcomes** (binary per-customer targets such as churn or default; NaN target = unknown, ignored):
  ROC-AUC and PR-AUC (average precision) from :mod:`torchmetrics`, log-loss, expected calibration error over
  equal-width bins, and the data of the ROC, precision-recall and reliability curves for plotting.
  Keys ``auc/<name>``, ``pr_auc/<name>``, ``logloss/<name>``, ``ece/<name>``, ``prevalence/<name>``,
  ``n/<name>``.
* **Next event** (logits ``(B, V)`` over a vocabulary, target ids ``(B,)``, 0 = unknown): accuracy, hit rate,
  NDCG and MRR at k, mean reciprocal rank. Keys ``acc``, ``hr_at_<k>``, ``ndcg_at_<k>``, ``mrr_at_<k>``,
  ``mrr``, ``n_ranked``, ``unseen_targets`` (with ``/<target name>`` appended when the accumulator is given
  one). The accumulator ranks as :func:`peer_ranking_metrics` does, the sequential-recommendation peers'
  definitions (expected value over tied scores, MRR@k cut at k, unseen targets optionally counted as misses);
  :func:`hit_rate_at_k` and friends are the pessimistic-tie variants.
* **Forecast** (predicted and true future event-type ids ``(B, K)``, ending at ``<eos>`` = 3, padded with 0):
  per-step accuracy and Levenshtein edit distance, raw and normalised. Keys ``step_acc/<k>``,
  ``edit_distance``, ``edit_distance_norm``, ``n_forecast``.
* **ATRank's reported "AUC"** (Zhou et al., AAAI 2018, arXiv:1711.06632; reference code
  github.com/jinze1994/ATRank): the share of customers whose positive item scores strictly above one
  uniformly sampled negative item; ties are misses. Keys ``sampled_auc``, ``n_sampled``.

MLflow metric names may only hold letters, digits, ``_ - . / :`` and spaces, so the ranking cut-offs are
written ``hr_at_10`` / ``ndcg_at_10`` rather than ``hr@10``.

Every function that cannot define a value (no known target, only one class for a ranking metric, no
customer with a real step k) returns NaN instead of raising, and says why in its docstring. Malformed input
(wrong shapes, targets that are not 0/1/NaN, probabilities outside [0, 1], NaN scores on known targets,
ids outside the vocabulary) raises :class:`ValueError` naming the argument, the row and what was expected.
An accumulator computed before any ``update`` returns NaNs (torchmetrics also warns that it was not updated).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.functional.classification import (
    binary_auroc,
    binary_average_precision,
    binary_precision_recall_curve,
    binary_roc,
)
from torchmetrics.utilities.data import dim_zero_cat

from journey_model.data.features import EOS_ID, EVENT_TYPE_SPECIAL_IDS, PAD_ID

DEFAULT_CALIBRATION_BINS = 15  # equal-width probability bins for ECE and reliability curves (Guo et al. 2017)
LOG_LOSS_EPSILON = 1e-15  # probabilities are clipped to [eps, 1 - eps] before the log (as scikit-learn did)
_NEGATIVE_SAMPLING_ROUNDS = 32  # rejection rounds before a row's negative is drawn by enumeration

TensorLike = torch.Tensor | np.ndarray | Sequence[float] | Sequence[int]


def prefix_metric_keys(values: Mapping[str, float], prefix: str) -> dict[str, float]:
    """``{"auc/churn": 0.8}`` with prefix ``"val"`` -> ``{"val/auc/churn": 0.8}`` (MLflow / Lightning keys)."""
    stem = prefix.rstrip("/")
    if not stem:
        raise ValueError(
            f"prefix_metric_keys: prefix must be a non-empty stage name such as 'val', got {prefix!r}"
        )
    return {f"{stem}/{key}": float(value) for key, value in values.items()}


# --------------------------------------------------------------------------------------------------------------
# Outcomes
# --------------------------------------------------------------------------------------------------------------


def _first_bad_row(bad: torch.Tensor) -> int:
    return int(torch.nonzero(bad.reshape(-1))[0, 0])


def _check_binary_inputs(
    scores: TensorLike, targets: TensorLike, *, from_logits: bool, what: str = "outcome"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate one outcome's scores and 0/1/NaN targets; return both as float64 1-D tensors."""
    scores_t = torch.as_tensor(scores).detach()
    targets_t = torch.as_tensor(targets).detach()
    if scores_t.dim() != 1 or targets_t.shape != scores_t.shape:
        raise ValueError(
            f"{what}: scores and targets must be 1-D tensors of the same length, got scores "
            f"{tuple(scores_t.shape)} and targets {tuple(targets_t.shape)}"
        )
    scores_t = scores_t.to(torch.float64)
    targets_t = targets_t.to(torch.float64)
    known = ~torch.isnan(targets_t)
    bad_target = known & (targets_t != 0) & (targets_t != 1)
    if bad_target.any():
        row = _first_bad_row(bad_target)
        raise ValueError(
            f"{what}: targets row {row} is {targets_t[row].item()!r}; expected 0, 1 or NaN (unknown)"
        )
    bad_score = known & ~torch.isfinite(scores_t) if from_logits else known & torch.isnan(scores_t)
    if bad_score.any():
        row = _first_bad_row(bad_score)
        raise ValueError(
            f"{what}: scores row {row} is {scores_t[row].item()!r} where the target is known; expected a "
            f"{'finite logit' if from_logits else 'probability'}"
        )
    if not from_logits:
        outside = known & ((scores_t < 0) | (scores_t > 1))
        if outside.any():
            row = _first_bad_row(outside)
            raise ValueError(
                f"{what}: scores row {row} is {scores_t[row].item()!r}; expected a probability in [0, 1] "
                "(pass from_logits=True for logits)"
            )
    return scores_t, targets_t


def _known_probabilities(
    scores: TensorLike, targets: TensorLike, *, from_logits: bool, what: str = "outcome"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities (float64) and 0/1 targets of the rows whose target is known."""
    scores_t, targets_t = _check_binary_inputs(scores, targets, from_logits=from_logits, what=what)
    known = ~torch.isnan(targets_t)
    scores_t, targets_t = scores_t[known], targets_t[known]
    probs = torch.sigmoid(scores_t) if from_logits else scores_t
    return probs, targets_t


def _has_both_classes(targets: torch.Tensor) -> bool:
    n_pos = int(targets.sum().item())
    return 0 < n_pos < targets.numel()


def binary_roc_auc(scores: TensorLike, targets: TensorLike, *, from_logits: bool = False) -> float:
    """Area under the ROC curve (tied scores count one half), over the rows whose target is known.

    Uses :func:`torchmetrics.functional.classification.binary_auroc`. NaN when no target is known or all
    known targets are of one class: the ROC curve needs both a positive and a negative to be defined.
    """
    probs, known_targets = _known_probabilities(
        scores, targets, from_logits=from_logits, what="binary_roc_auc"
    )
    if not _has_both_classes(known_targets):
        return math.nan
    return float(binary_auroc(probs, known_targets.long()))


def binary_pr_auc(scores: TensorLike, targets: TensorLike, *, from_logits: bool = False) -> float:
    """Average precision (area under the precision-recall curve, step-wise, no interpolation).

    Uses :func:`torchmetrics.functional.classification.binary_average_precision`. NaN when no target is
    known or all known targets are of one class: without a positive, recall is undefined; with positives
    only, every ranking scores 1, which says nothing about the model.
    """
    probs, known_targets = _known_probabilities(
        scores, targets, from_logits=from_logits, what="binary_pr_auc"
    )
    if not _has_both_classes(known_targets):
        return math.nan
    return float(binary_average_precision(probs, known_targets.long()))


def binary_log_loss(scores: TensorLike, targets: TensorLike, *, from_logits: bool = False) -> float:
    """Mean binary cross-entropy (natural log) over the rows whose target is known.

    With logits it is computed exactly (``binary_cross_entropy_with_logits``); probabilities are clipped to
    ``[LOG_LOSS_EPSILON, 1 - LOG_LOSS_EPSILON]`` first, so a confident miss costs about 34.5, not infinity.
    Defined with one class present; NaN only when no target is known (a mean over nothing).
    """
    scores_t, targets_t = _check_binary_inputs(
        scores, targets, from_logits=from_logits, what="binary_log_loss"
    )
    known = ~torch.isnan(targets_t)
    if not known.any():
        return math.nan
    scores_t, targets_t = scores_t[known], targets_t[known]
    if from_logits:
        return float(F.binary_cross_entropy_with_logits(scores_t, targets_t))
    probs = scores_t.clamp(LOG_LOSS_EPSILON, 1.0 - LOG_LOSS_EPSILON)
    return float(-(targets_t * probs.log() + (1.0 - targets_t) * (1.0 - probs).log()).mean())


@dataclass
class CalibrationCurve:
    """Reliability-diagram data over equal-width bins of the predicted probability of the positive class."""

    bin_edges: (
        np.ndarray
    )  # (n_bins + 1,) probability edges 0 .. 1; bin b is [e_b, e_b+1), the last includes 1
    mean_predicted: np.ndarray  # (n_bins,) mean predicted probability in the bin, NaN for an empty bin
    observed_rate: np.ndarray  # (n_bins,) share of positives in the bin, NaN for an empty bin
    count: np.ndarray  # (n_bins,) int64 number of known targets in the bin


def _calibration_bins(
    probs: torch.Tensor, targets: torch.Tensor, n_bins: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(edges, count, sum of predicted probabilities, sum of targets) per equal-width bin."""
    if n_bins < 1:
        raise ValueError(f"calibration: n_bins must be a positive number of bins, got {n_bins}")
    edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64, device=probs.device)
    # The same bucketing as torchmetrics' calibration error, except that 1.0 joins the last bin.
    index = (torch.bucketize(probs, edges, right=True) - 1).clamp(0, n_bins - 1)
    count = torch.zeros(n_bins, dtype=torch.float64, device=probs.device).index_add_(
        0, index, torch.ones_like(probs)
    )
    prob_sum = torch.zeros_like(count).index_add_(0, index, probs)
    target_sum = torch.zeros_like(count).index_add_(0, index, targets)
    return edges, count, prob_sum, target_sum


def calibration_curve(
    scores: TensorLike,
    targets: TensorLike,
    *,
    n_bins: int = DEFAULT_CALIBRATION_BINS,
    from_logits: bool = False,
) -> CalibrationCurve:
    """Per-bin mean prediction, observed positive rate and count, for a reliability diagram.

    Empty bins (and every bin when no target is known) hold NaN rates and a zero count.
    """
    probs, known_targets = _known_probabilities(
        scores, targets, from_logits=from_logits, what="calibration_curve"
    )
    edges, count, prob_sum, target_sum = _calibration_bins(probs, known_targets, n_bins)
    safe = count.clamp(min=1.0)
    empty = count == 0
    mean_predicted = torch.where(empty, torch.nan, prob_sum / safe)
    observed = torch.where(empty, torch.nan, target_sum / safe)
    return CalibrationCurve(
        bin_edges=edges.cpu().numpy(),
        mean_predicted=mean_predicted.cpu().numpy(),
        observed_rate=observed.cpu().numpy(),
        count=count.round().to(torch.int64).cpu().numpy(),
    )


def expected_calibration_error(
    scores: TensorLike,
    targets: TensorLike,
    *,
    n_bins: int = DEFAULT_CALIBRATION_BINS,
    from_logits: bool = False,
) -> float:
    """ECE = sum over equal-width bins of (bin share of customers) x |observed rate - mean predicted probability|.

    The bins are those of :func:`calibration_curve`, so the number matches the reliability diagram; it
    equals torchmetrics' ``binary_calibration_error(norm="l1")`` except that torchmetrics gives a probability
    of exactly 1.0 a bin of its own. Defined with one class present (it measures probabilities against
    outcomes, not a ranking); NaN only when no target is known.
    """
    probs, known_targets = _known_probabilities(
        scores, targets, from_logits=from_logits, what="expected_calibration_error"
    )
    if probs.numel() == 0:
        return math.nan
    _, count, prob_sum, target_sum = _calibration_bins(probs, known_targets, n_bins)
    return float((prob_sum - target_sum).abs().sum() / count.sum())


@dataclass
class RocCurve:
    """Points of the ROC curve, from the highest threshold down."""

    false_positive_rate: np.ndarray  # (P,) float
    true_positive_rate: np.ndarray  # (P,) float
    thresholds: np.ndarray  # (P,) probability thresholds, descending


@dataclass
class PrecisionRecallCurve:
    """Points of the precision-recall curve (torchmetrics' order: recall descending to 0)."""

    precision: np.ndarray  # (P + 1,) float, the last point is (recall 0, precision 1)
    recall: np.ndarray  # (P + 1,) float
    thresholds: np.ndarray  # (P,) probability thresholds, ascending


@dataclass
class OutcomeCurves:
    """Everything needed to plot one outcome's ROC, precision-recall and reliability curves."""

    roc: RocCurve | None  # None when the known targets hold only one class (or none): the curve is undefined
    precision_recall: PrecisionRecallCurve | None  # None in the same cases as roc
    calibration: CalibrationCurve  # always present; empty bins are NaN
    n_known: int  # customers whose target is known
    n_positive: int  # of which positive


def outcome_curves(
    scores: TensorLike,
    targets: TensorLike,
    *,
    n_bins: int = DEFAULT_CALIBRATION_BINS,
    from_logits: bool = False,
) -> OutcomeCurves:
    """ROC, precision-recall and calibration curve data of one outcome, as numpy arrays for plotting."""
    probs, known_targets = _known_probabilities(
        scores, targets, from_logits=from_logits, what="outcome_curves"
    )
    roc = precision_recall = None
    if _has_both_classes(known_targets):
        fpr, tpr, roc_thresholds = binary_roc(probs, known_targets.long())
        roc = RocCurve(
            false_positive_rate=fpr.cpu().numpy(),
            true_positive_rate=tpr.cpu().numpy(),
            thresholds=roc_thresholds.cpu().numpy(),
        )
        precision, recall, pr_thresholds = binary_precision_recall_curve(probs, known_targets.long())
        precision_recall = PrecisionRecallCurve(
            precision=precision.cpu().numpy(),
            recall=recall.cpu().numpy(),
            thresholds=pr_thresholds.cpu().numpy(),
        )
    return OutcomeCurves(
        roc=roc,
        precision_recall=precision_recall,
        calibration=calibration_curve(probs, known_targets, n_bins=n_bins),
        n_known=int(known_targets.numel()),
        n_positive=int(known_targets.sum().item()),
    )


def _check_outcome_matrix(
    scores: TensorLike, targets: TensorLike, outcome_names: Sequence[str], *, from_logits: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    scores_t = torch.as_tensor(scores).detach()
    targets_t = torch.as_tensor(targets).detach()
    if scores_t.dim() == 1:
        scores_t = scores_t[:, None]
    if targets_t.dim() == 1:
        targets_t = targets_t[:, None]
    expected = (scores_t.shape[0], len(outcome_names))
    if tuple(scores_t.shape) != expected or tuple(targets_t.shape) != expected:
        raise ValueError(
            f"outcomes: scores {tuple(scores_t.shape)} and targets {tuple(targets_t.shape)} must both be "
            f"(batch, {len(outcome_names)}) for outcomes {list(outcome_names)}"
        )
    for j, name in enumerate(outcome_names):
        _check_binary_inputs(
            scores_t[:, j], targets_t[:, j], from_logits=from_logits, what=f"outcome {name!r}"
        )
    return scores_t.to(torch.float64), targets_t.to(torch.float64)


def _outcome_values(
    scores: torch.Tensor, targets: torch.Tensor, name: str, *, n_bins: int, from_logits: bool
) -> dict[str, float]:
    known = ~torch.isnan(targets)
    n_known = int(known.sum())
    return {
        f"auc/{name}": binary_roc_auc(scores, targets, from_logits=from_logits),
        f"pr_auc/{name}": binary_pr_auc(scores, targets, from_logits=from_logits),
        f"logloss/{name}": binary_log_loss(scores, targets, from_logits=from_logits),
        f"ece/{name}": expected_calibration_error(scores, targets, n_bins=n_bins, from_logits=from_logits),
        f"prevalence/{name}": float(targets[known].mean()) if n_known else math.nan,
        f"n/{name}": float(n_known),
    }


def outcome_metrics(
    scores: TensorLike,
    targets: TensorLike,
    outcome_names: Sequence[str],
    *,
    n_bins: int = DEFAULT_CALIBRATION_BINS,
    from_logits: bool = False,
) -> dict[str, float]:
    """All outcome metrics of ``(B, n_outcomes)`` scores and 0/1/NaN targets, keyed ``<metric>/<outcome>``."""
    scores_t, targets_t = _check_outcome_matrix(scores, targets, outcome_names, from_logits=from_logits)
    values: dict[str, float] = {}
    for j, name in enumerate(outcome_names):
        values.update(
            _outcome_values(scores_t[:, j], targets_t[:, j], name, n_bins=n_bins, from_logits=from_logits)
        )
    return values


class OutcomeMetrics(Metric):
    """Epoch-level outcome metrics: keeps every (score, target) pair, since AUCs need the whole ranking.

    ``update(scores, targets)`` takes ``(B, n_outcomes)`` scores (logits or probabilities, as declared by
    ``from_logits``) and targets with NaN for unknown; ``compute()`` gives :func:`outcome_metrics`' dict;
    ``curves()`` gives :class:`OutcomeCurves` per outcome. Memory grows with the evaluation set (16 bytes
    per customer and outcome).
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(
        self,
        outcome_names: Sequence[str],
        *,
        from_logits: bool,  # True: scores are logits; False: probabilities in [0, 1]. No default on purpose.
        n_bins: int = DEFAULT_CALIBRATION_BINS,  # equal-width calibration bins
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if not outcome_names:
            raise ValueError("OutcomeMetrics: outcome_names must name at least one outcome")
        if len(set(outcome_names)) != len(outcome_names):
            raise ValueError(f"OutcomeMetrics: outcome_names must be distinct, got {list(outcome_names)}")
        if n_bins < 1:
            raise ValueError(f"OutcomeMetrics: n_bins must be a positive number of bins, got {n_bins}")
        self.outcome_names = list(outcome_names)
        self.from_logits = from_logits
        self.n_bins = n_bins
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("targets", default=[], dist_reduce_fx="cat")

    def update(self, scores: torch.Tensor, targets: torch.Tensor) -> None:
        scores_t, targets_t = _check_outcome_matrix(
            scores, targets, self.outcome_names, from_logits=self.from_logits
        )
        self.scores.append(scores_t)
        self.targets.append(targets_t)

    def pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every (scores, targets) row seen since the last reset, ``(N, n_outcomes)`` float64 each."""
        return self._all_pairs()

    def _all_pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(self.scores, list) and not self.scores:
            empty = torch.empty((0, len(self.outcome_names)), dtype=torch.float64, device=self.device)
            return empty, empty
        return dim_zero_cat(self.scores), dim_zero_cat(self.targets)

    def compute(self) -> dict[str, float]:
        scores, targets = self._all_pairs()
        return outcome_metrics(
            scores, targets, self.outcome_names, n_bins=self.n_bins, from_logits=self.from_logits
        )

    def curves(self) -> dict[str, OutcomeCurves]:
        """Curve data per outcome name over everything seen since the last reset."""
        scores, targets = self._all_pairs()
        return {
            name: outcome_curves(
                scores[:, j], targets[:, j], n_bins=self.n_bins, from_logits=self.from_logits
            )
            for j, name in enumerate(self.outcome_names)
        }


# --------------------------------------------------------------------------------------------------------------
# Next event
# --------------------------------------------------------------------------------------------------------------


def _check_ranking_inputs(logits: torch.Tensor, targets: torch.Tensor, what: str) -> None:
    if logits.dim() != 2 or targets.dim() != 1 or logits.shape[0] != targets.shape[0]:
        raise ValueError(
            f"{what}: expected logits (B, V) and target ids (B,), got logits {tuple(logits.shape)} and "
            f"targets {tuple(targets.shape)}"
        )
    if not logits.is_floating_point():
        raise ValueError(f"{what}: logits must be floating point, got {logits.dtype}")
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise ValueError(f"{what}: target ids must be integers, got {targets.dtype}")
    vocab = logits.shape[1]
    outside = (targets < 0) | (targets >= vocab)
    if outside.any():
        row = _first_bad_row(outside)
        raise ValueError(
            f"{what}: targets row {row} is {int(targets[row])}; expected an id in [0, {vocab}) (0 = unknown)"
        )
    nan_rows = torch.isnan(logits).any(dim=1) & (targets != PAD_ID)
    if nan_rows.any():
        row = _first_bad_row(nan_rows)
        raise ValueError(f"{what}: logits row {row} holds NaN while its target is known")


def exclude_special_ids(
    logits: torch.Tensor, special_ids: Sequence[int] = EVENT_TYPE_SPECIAL_IDS
) -> torch.Tensor:
    """A copy of ``(B, V)`` logits with the given columns set to -inf, so they never outrank a real id.

    Event types reserve 0..3 (``EVENT_TYPE_SPECIAL_IDS``); items and other fields only 0 and 1
    (``FIELD_SPECIAL_IDS``). A target that is itself excluded then ranks last (a miss).
    """
    if logits.dim() != 2 or not logits.is_floating_point():
        raise ValueError(
            f"exclude_special_ids: expected float logits (B, V), got {logits.dtype} {tuple(logits.shape)}"
        )
    ids = sorted(set(int(i) for i in special_ids))
    if ids and (ids[0] < 0 or ids[-1] >= logits.shape[1]):
        raise ValueError(
            f"exclude_special_ids: special ids {ids} fall outside the vocabulary of {logits.shape[1]} ids"
        )
    out = logits.clone()
    if ids:
        out[:, ids] = -math.inf
    return out


def target_ranks(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1-based rank of each target id among its row's V logits; 0 where the target is unknown (id 0).

    Ties count against the target (pessimistic rank: 1 + number of other ids scoring at least as high), so
    a model that scores every id the same does not get hits for free. Shape ``(B,)`` int64.
    """
    _check_ranking_inputs(logits, targets, "target_ranks")
    target_logit = logits.gather(1, targets[:, None])
    ranks = (logits >= target_logit).sum(dim=1)
    return torch.where(targets != PAD_ID, ranks, torch.zeros_like(ranks))


def _known_ranks(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    ranks = target_ranks(logits, targets)
    return ranks[ranks > 0].to(torch.float64)


def next_event_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Share of known targets equal to the argmax id (torch's argmax: the lowest id among tied maxima).

    NaN when no target is known. Exclude special ids first (:func:`exclude_special_ids`) if they must not
    be predicted.
    """
    _check_ranking_inputs(logits, targets, "next_event_accuracy")
    known = targets != PAD_ID
    if not known.any():
        return math.nan
    return float((logits[known].argmax(dim=1) == targets[known]).to(torch.float64).mean())


def hit_rate_at_k(logits: torch.Tensor, targets: torch.Tensor, k: int) -> float:
    """Share of known targets whose pessimistic rank is at most k (HR@k). NaN when no target is known."""
    if k < 1:
        raise ValueError(f"hit_rate_at_k: k must be at least 1, got {k}")
    ranks = _known_ranks(logits, targets)
    return float((ranks <= k).to(torch.float64).mean()) if ranks.numel() else math.nan


def ndcg_at_k(logits: torch.Tensor, targets: torch.Tensor, k: int) -> float:
    """Mean NDCG@k with one relevant id per row: 1 / log2(rank + 1) if rank <= k else 0. NaN when none known."""
    if k < 1:
        raise ValueError(f"ndcg_at_k: k must be at least 1, got {k}")
    ranks = _known_ranks(logits, targets)
    if not ranks.numel():
        return math.nan
    gains = torch.where(ranks <= k, 1.0 / torch.log2(ranks + 1.0), torch.zeros_like(ranks))
    return float(gains.mean())


def mean_reciprocal_rank(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean of 1 / rank over known targets, no cut-off. NaN when no target is known."""
    ranks = _known_ranks(logits, targets)
    return float((1.0 / ranks).mean()) if ranks.numel() else math.nan


def _sum_over_ranks(table: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """``sum(f(r) for r in low..high)`` from the prefix sums ``table[m] = f(1) + … + f(m)``; 0 when high < low."""
    return torch.where(high >= low, table[high.clamp(min=0)] - table[(low - 1).clamp(min=0)], 0.0)


def _fair_rank_sums(
    logits: torch.Tensor, targets: torch.Tensor, ks: Sequence[int], excluded_ids: Sequence[int]
) -> dict[str, torch.Tensor]:
    """Per-batch sums behind :func:`peer_ranking_metrics` and :class:`NextEventMetrics` (float64 tensors).

    ``hr``, ``ndcg``, ``mrr_at``: ``(len(ks),)`` sums over the rankable targets of each metric's expectation over
    tied orders; ``mrr``: the same for 1/rank without a cut-off; ``rankable`` (a ``(B,)`` mask), ``n_unseen``.
    """
    logits = logits.detach().to(torch.float64)
    excluded = sorted(set(int(i) for i in excluded_ids))
    ranked = exclude_special_ids(logits, excluded) if excluded else logits
    known = targets != PAD_ID
    unseen = known & torch.isin(targets, torch.tensor(excluded, dtype=targets.dtype, device=targets.device))
    rankable = known & ~unseen
    target_logit = ranked.gather(1, targets[:, None])
    higher = (ranked > target_logit).sum(dim=1)[rankable]
    tied = (ranked == target_logit).sum(dim=1)[rankable]  # the target itself included
    low, high = higher + 1, higher + tied
    ranks = torch.arange(0, logits.shape[1] + 1, dtype=torch.float64, device=logits.device)
    safe = ranks.clamp(min=1)
    reciprocal = torch.cumsum(torch.where(ranks > 0, 1.0 / safe, 0.0), 0)
    discounted = torch.cumsum(torch.where(ranks > 0, 1.0 / torch.log2(safe + 1.0), 0.0), 0)
    spread = tied.to(torch.float64)
    hr, ndcg, mrr_at = [], [], []
    for k in ks:
        top = torch.minimum(high, torch.full_like(high, int(k)))
        hr.append(((top - low + 1).clamp(min=0).to(torch.float64) / spread).sum())
        ndcg.append((_sum_over_ranks(discounted, low, top) / spread).sum())
        mrr_at.append((_sum_over_ranks(reciprocal, low, top) / spread).sum())
    return {
        "hr": torch.stack(hr), "ndcg": torch.stack(ndcg), "mrr_at": torch.stack(mrr_at),
        "mrr": (_sum_over_ranks(reciprocal, low, high) / spread).sum(),
        "rankable": rankable, "n_unseen": unseen.sum().to(torch.float64),
    }


def peer_ranking_metrics(
    logits: torch.Tensor,
    targets: torch.Tensor,
    ks: Sequence[int] = (10,),
    *,
    excluded_ids: Sequence[int] = (),
    unseen_as_miss: bool = False,
) -> dict[str, float]:
    """HR@k, NDCG@k and MRR@k as the sequential-recommendation peers (SASRec, RecBole) report them, with ties
    counted fairly: a target tied with e other ids takes each rank g+1 … g+e+1 (g = ids scored strictly higher)
    with probability 1/(e+1), and every metric is that expectation (so scoring every id the same earns what a
    random order would, neither everything nor nothing). MRR@k counts 1/rank only within the top k.

    ``excluded_ids`` (special ids, see :func:`exclude_special_ids`) are never ranked. A known target that is
    itself excluded — an item unseen in training, mapped to <oov> — is left out and counted (``n_unseen``) by
    default; with ``unseen_as_miss`` it counts as a miss in every metric instead (the peers' full-ranking
    convention: leaving them out flatters every model). Unknown targets (id 0) are always left out. Keys
    ``hr_at_<k>``, ``ndcg_at_<k>``, ``mrr_at_<k>``, ``n_ranked``, ``n_unseen``; NaN when nothing is ranked.
    :class:`NextEventMetrics` (what train and compare log) accumulates the same values over batches.
    """
    _check_ranking_inputs(logits, targets, "peer_ranking_metrics")
    if not ks or any(int(k) < 1 for k in ks):
        raise ValueError(f"peer_ranking_metrics: ks must be positive cut-offs, got {list(ks)}")
    sums = _fair_rank_sums(logits, targets, ks, excluded_ids)
    n_unseen = float(sums["n_unseen"])
    n = float(sums["rankable"].sum()) + (n_unseen if unseen_as_miss else 0.0)
    values: dict[str, float] = {}
    for i, k in enumerate(int(k) for k in ks):
        values[f"hr_at_{k}"] = float(sums["hr"][i]) / n if n else math.nan
        values[f"ndcg_at_{k}"] = float(sums["ndcg"][i]) / n if n else math.nan
        values[f"mrr_at_{k}"] = float(sums["mrr_at"][i]) / n if n else math.nan
    values["n_ranked"] = n
    values["n_unseen"] = n_unseen
    return values


class NextEventMetrics(Metric):
    """Epoch-level next-event (or next-item) ranking metrics, accumulated as sums.

    ``update(logits, targets, negative_ids=None)``: logits ``(B, V)``, target ids ``(B,)`` with 0 = unknown
    (skipped). ``excluded_ids`` are set to -inf before ranking and argmax. HR@k, NDCG@k, MRR@k and MRR are the
    peers' definitions (:func:`peer_ranking_metrics`: ties counted fairly, MRR@k cut at k; ``mrr`` has no
    cut-off). A known target that is itself an excluded id (an item or type unseen in training, <oov>) is
    counted in ``unseen_targets`` and left out of every metric, or, with ``unseen_as_miss``, counted as a miss
    in ``acc``, ``hr_at_<k>``, ``ndcg_at_<k>``, ``mrr_at_<k>`` and ``mrr`` (and in ``n_ranked``). When
    ``negative_ids`` ``(B,)`` are given (see :func:`sample_negative_ids`), ATRank's sampled AUC is accumulated
    too from the same logits, over the rankable targets only (keys ``sampled_auc`` and ``n_sampled``).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        *,
        excluded_ids: Sequence[
            int
        ],  # ids never ranked: EVENT_TYPE_SPECIAL_IDS or FIELD_SPECIAL_IDS. No default.
        ks: Sequence[int] = (1, 5, 10),  # cut-offs for hr_at_k, ndcg_at_k and mrr_at_k
        target_name: str | None = None,  # appended to every key as "/<target_name>" when given
        unseen_as_miss: bool = False,  # count targets unseen in training (<oov>) as misses instead of dropping them
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if not ks or any(int(k) < 1 for k in ks):
            raise ValueError(f"NextEventMetrics: ks must be positive cut-offs, got {list(ks)}")
        self.ks = [int(k) for k in ks]
        self.excluded_ids = tuple(int(i) for i in excluded_ids)
        self.suffix = f"/{target_name}" if target_name else ""
        self.unseen_as_miss = bool(unseen_as_miss)
        zero = torch.tensor(0.0, dtype=torch.float64)
        per_k = torch.zeros(len(self.ks), dtype=torch.float64)
        self.add_state("n", default=zero.clone(), dist_reduce_fx="sum")
        self.add_state("correct", default=zero.clone(), dist_reduce_fx="sum")
        self.add_state("reciprocal_rank_sum", default=zero.clone(), dist_reduce_fx="sum")
        self.add_state("hits", default=per_k.clone(), dist_reduce_fx="sum")
        self.add_state("ndcg_sum", default=per_k.clone(), dist_reduce_fx="sum")
        self.add_state("mrr_at_sum", default=per_k.clone(), dist_reduce_fx="sum")
        self.add_state("n_sampled", default=zero.clone(), dist_reduce_fx="sum")
        self.add_state("n_unrankable", default=zero.clone(), dist_reduce_fx="sum")
        self.add_state("sampled_wins", default=zero.clone(), dist_reduce_fx="sum")

    def update(
        self, logits: torch.Tensor, targets: torch.Tensor, negative_ids: torch.Tensor | None = None
    ) -> None:
        logits = logits.detach()
        _check_ranking_inputs(logits, targets, "NextEventMetrics")
        ranked = exclude_special_ids(logits, self.excluded_ids)
        # A target that is itself an excluded id (<oov> above all) cannot be ranked and would make the
        # sampled AUC compare the model's <oov> score with a real item: such targets are counted apart
        # (``n_unrankable``) and left out of the sums (they only enter the denominator with unseen_as_miss).
        sums = _fair_rank_sums(logits, targets, self.ks, self.excluded_ids)
        known = sums["rankable"]
        self.n_unrankable += sums["n_unseen"]
        self.n += known.sum()
        self.correct += (ranked[known].argmax(dim=1) == targets[known]).sum()
        self.reciprocal_rank_sum += sums["mrr"]
        self.hits += sums["hr"]
        self.ndcg_sum += sums["ndcg"]
        self.mrr_at_sum += sums["mrr_at"]
        if negative_ids is not None:
            if negative_ids.shape != targets.shape:
                raise ValueError(
                    f"NextEventMetrics: negative_ids {tuple(negative_ids.shape)} must match targets {tuple(targets.shape)}"
                )
            _check_ranking_inputs(logits, negative_ids, "NextEventMetrics negative_ids")
            positive_scores = logits.gather(1, targets[:, None])[:, 0][known]
            negative_scores = logits.gather(1, negative_ids[:, None])[:, 0][known]
            self.n_sampled += known.sum()
            self.sampled_wins += (positive_scores > negative_scores).sum()

    def compute(self) -> dict[str, float]:
        unrankable = float(self.n_unrankable)
        n = float(self.n) + (unrankable if self.unseen_as_miss else 0.0)
        values = {f"acc{self.suffix}": float(self.correct) / n if n else math.nan}
        for i, k in enumerate(self.ks):
            values[f"hr_at_{k}{self.suffix}"] = float(self.hits[i]) / n if n else math.nan
            values[f"ndcg_at_{k}{self.suffix}"] = float(self.ndcg_sum[i]) / n if n else math.nan
            values[f"mrr_at_{k}{self.suffix}"] = float(self.mrr_at_sum[i]) / n if n else math.nan
        values[f"mrr{self.suffix}"] = float(self.reciprocal_rank_sum) / n if n else math.nan
        values[f"n_ranked{self.suffix}"] = n
        values[f"unseen_targets{self.suffix}"] = unrankable
        seen = float(self.n)
        values[f"unrankable_share{self.suffix}"] = unrankable / (seen + unrankable) if seen + unrankable else math.nan
        n_sampled = float(self.n_sampled)
        if n_sampled:
            values[f"sampled_auc{self.suffix}"] = float(self.sampled_wins) / n_sampled
            values[f"n_sampled{self.suffix}"] = n_sampled
        return values


# --------------------------------------------------------------------------------------------------------------
# ATRank's per-customer AUC with one sampled negative
# --------------------------------------------------------------------------------------------------------------


def _check_pair_scores(
    positive_scores: TensorLike, negative_scores: TensorLike, what: str
) -> tuple[torch.Tensor, torch.Tensor]:
    pos = torch.as_tensor(positive_scores).detach()
    neg = torch.as_tensor(negative_scores).detach()
    if pos.dim() != 1 or pos.shape != neg.shape:
        raise ValueError(
            f"{what}: positive and negative scores must be 1-D of the same length (one pair per customer), got "
            f"{tuple(pos.shape)} and {tuple(neg.shape)}"
        )
    bad = torch.isnan(pos) | torch.isnan(neg)
    if bad.any():
        row = _first_bad_row(bad)
        raise ValueError(
            f"{what}: row {row} has a NaN score (positive {pos[row].item()}, negative {neg[row].item()})"
        )
    return pos, neg


def per_customer_sampled_auc(positive_scores: TensorLike, negative_scores: TensorLike) -> float:
    """ATRank's reported "AUC": share of customers whose positive scores strictly above their one negative.

    One (positive, negative) pair per customer, as in the reference code's test set; a tie is a miss, unlike
    ROC-AUC where it counts one half. NaN when there is no customer.
    """
    pos, neg = _check_pair_scores(positive_scores, negative_scores, "per_customer_sampled_auc")
    if pos.numel() == 0:
        return math.nan
    return float((pos > neg).to(torch.float64).mean())


def sample_negative_ids(
    positive_ids: torch.Tensor,
    vocab_size: int,
    *,
    excluded_ids: Sequence[int],
    generator: torch.Generator,
    history_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """One uniformly drawn negative id per row, never the row's positive, a special id or a history id.

    ``positive_ids`` ``(B,)``; ``excluded_ids`` are the vocabulary's reserved ids (``EVENT_TYPE_SPECIAL_IDS``
    or ``FIELD_SPECIAL_IDS``); ``history_ids`` ``(B, T)`` optionally excludes each customer's past ids too,
    as the reference code does (its negative is redrawn while it is in the user's item list). Draws are
    exactly uniform over the remaining ids (rejection sampling, then enumeration for rows that keep
    colliding) and reproducible with the same ``generator``. Returns ``(B,)`` int64 on the positives' device.
    Raises when a row has no id left to draw.
    """
    if positive_ids.dim() != 1:
        raise ValueError(f"sample_negative_ids: positive_ids must be (B,), got {tuple(positive_ids.shape)}")
    device = positive_ids.device
    positive_ids = positive_ids.to(torch.int64)
    blocked = positive_ids[:, None]
    if history_ids is not None:
        if history_ids.dim() != 2 or history_ids.shape[0] != positive_ids.shape[0]:
            raise ValueError(
                f"sample_negative_ids: history_ids must be (B, T) with B = {positive_ids.shape[0]}, got "
                f"{tuple(history_ids.shape)}"
            )
        blocked = torch.cat([blocked, history_ids.to(device=device, dtype=torch.int64)], dim=1)
    outside = ((blocked < 0) | (blocked >= vocab_size)).any(dim=1)
    if outside.any():
        row = _first_bad_row(outside)
        raise ValueError(
            f"sample_negative_ids: row {row} holds an id outside the vocabulary [0, {vocab_size}) in its positive "
            "or history ids"
        )
    allowed = torch.ones(vocab_size, dtype=torch.bool, device=device)
    for special in excluded_ids:
        if 0 <= int(special) < vocab_size:
            allowed[int(special)] = False
    allowed_ids = torch.nonzero(allowed)[:, 0]
    # How many allowed ids each row blocks (distinct), to refuse rows with nothing left before sampling.
    blocked_allowed = torch.where(allowed[blocked], blocked, torch.full_like(blocked, -1)).sort(dim=1).values
    distinct = (blocked_allowed[:, :1] >= 0).sum(dim=1) + (
        (blocked_allowed[:, 1:] != blocked_allowed[:, :-1]) & (blocked_allowed[:, 1:] >= 0)
    ).sum(dim=1)
    empty = distinct >= allowed_ids.numel()
    if empty.any():
        row = _first_bad_row(empty)
        raise ValueError(
            f"sample_negative_ids: row {row} has no id left to sample among {vocab_size} ids once the specials "
            f"{sorted(set(excluded_ids))}, its positive and its history are excluded"
        )
    negatives = torch.empty_like(positive_ids)
    pending = torch.arange(positive_ids.shape[0], device=device)
    for _ in range(_NEGATIVE_SAMPLING_ROUNDS):
        if pending.numel() == 0:
            return negatives
        draw = torch.randint(
            allowed_ids.numel(), (pending.numel(),), generator=generator, device=generator.device
        )
        candidates = allowed_ids[draw.to(device)]
        collide = (blocked[pending] == candidates[:, None]).any(dim=1)
        negatives[pending[~collide]] = candidates[~collide]
        pending = pending[collide]
    for row in pending.tolist():  # rows whose history covers most of the vocabulary: enumerate what is left
        left = allowed_ids[~torch.isin(allowed_ids, blocked[row])]
        pick = torch.randint(left.numel(), (1,), generator=generator, device=generator.device)
        negatives[row] = left[pick.to(device)]
    return negatives


class SampledAUCMetrics(Metric):
    """Accumulates :func:`per_customer_sampled_auc` over batches: ``update(positive_scores, negative_scores)``.

    For models that score one positive and one negative per customer directly (ATRank's training setup).
    Keys ``sampled_auc`` and ``n_sampled`` (with ``/<target_name>`` when given); NaN before any pair.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, *, target_name: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.suffix = f"/{target_name}" if target_name else ""
        self.add_state("n_pairs", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("wins", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, positive_scores: torch.Tensor, negative_scores: torch.Tensor) -> None:
        pos, neg = _check_pair_scores(positive_scores, negative_scores, "SampledAUCMetrics")
        self.n_pairs += pos.numel()
        self.wins += (pos > neg).sum()

    def compute(self) -> dict[str, float]:
        n = float(self.n_pairs)
        return {
            f"sampled_auc{self.suffix}": float(self.wins) / n if n else math.nan,
            f"n_sampled{self.suffix}": n,
        }


# --------------------------------------------------------------------------------------------------------------
# Forecast
# --------------------------------------------------------------------------------------------------------------


def _check_id_matrix(ids: torch.Tensor, name: str, what: str) -> torch.Tensor:
    if ids.dim() != 2 or ids.is_floating_point() or ids.dtype == torch.bool:
        raise ValueError(
            f"{what}: {name} must be an integer (B, K) tensor of event-type ids, got {ids.dtype} {tuple(ids.shape)}"
        )
    negative = (ids < 0).any(dim=1)
    if negative.any():
        row = _first_bad_row(negative)
        raise ValueError(f"{what}: {name} row {row} holds a negative id; expected ids >= 0 (0 = padding)")
    return ids.to(torch.int64)


def forecast_lengths(ids: torch.Tensor) -> torch.Tensor:
    """Number of real steps per row: the position of the first padding (0) or ``<eos>`` (3), else K. ``(B,)``."""
    ids = _check_id_matrix(ids, "ids", "forecast_lengths")
    if ids.shape[1] == 0:
        return torch.zeros(ids.shape[0], dtype=torch.int64, device=ids.device)
    stop = (ids == PAD_ID) | (ids == EOS_ID)
    positions = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
    return torch.where(stop, positions, torch.full_like(positions, ids.shape[1])).min(dim=1).values


def forecast_target_known(target_ids: torch.Tensor) -> torch.Tensor:
    """Rows whose forecast target is known: not all padding (``[3, 0, ...]`` is a known 'nothing follows')."""
    target_ids = _check_id_matrix(target_ids, "target_ids", "forecast_target_known")
    return (target_ids != PAD_ID).any(dim=1)


def _check_forecast_pair(
    predicted_ids: torch.Tensor, target_ids: torch.Tensor, what: str
) -> tuple[torch.Tensor, torch.Tensor]:
    predicted_ids = _check_id_matrix(predicted_ids, "predicted_ids", what)
    target_ids = _check_id_matrix(target_ids, "target_ids", what)
    if predicted_ids.shape[0] != target_ids.shape[0]:
        raise ValueError(
            f"{what}: predicted_ids {tuple(predicted_ids.shape)} and target_ids {tuple(target_ids.shape)} must have the "
            "same number of rows"
        )
    return predicted_ids, target_ids


def sequence_edit_distance(predicted_ids: torch.Tensor, target_ids: torch.Tensor) -> torch.Tensor:
    """Levenshtein distance (insert, delete, substitute: cost 1 each) between each row's two id sequences.

    A row's sequence is its ids up to and excluding the first ``<eos>`` or padding (see
    :func:`forecast_lengths`); the widths of the two tensors may differ. Returns ``(B,)`` int64.
    """
    predicted_ids, target_ids = _check_forecast_pair(predicted_ids, target_ids, "sequence_edit_distance")
    pred_len = forecast_lengths(predicted_ids)
    target_len = forecast_lengths(target_ids)
    batch, target_width = target_ids.shape
    columns = torch.arange(target_width + 1, device=target_ids.device)
    row = columns.expand(batch, -1).clone()  # D[0][j] = j
    distance = row.gather(1, target_len[:, None])[:, 0]  # rows with an empty prediction
    for i in range(1, predicted_ids.shape[1] + 1):
        substitution = (predicted_ids[:, i - 1 : i] != target_ids).to(torch.int64)  # (B, K)
        # E[j] = min(D[i-1][j] + 1, D[i-1][j-1] + cost), E[0] = i; then D[i][j] = min_{j' <= j} E[j'] + (j - j').
        best = torch.minimum(row[:, 1:] + 1, row[:, :-1] + substitution)
        best = torch.cat([torch.full((batch, 1), i, dtype=torch.int64, device=row.device), best], dim=1)
        row = torch.cummin(best - columns, dim=1).values + columns
        distance = torch.where(pred_len == i, row.gather(1, target_len[:, None])[:, 0], distance)
    return distance


def forecast_step_accuracy(predicted_ids: torch.Tensor, target_ids: torch.Tensor) -> torch.Tensor:
    """Accuracy of step k (1..K) over the customers whose target has a real step k (before ``<eos>``/padding).

    A prediction ends at its own first ``<eos>`` or padding: later steps count as misses, and so do steps
    beyond its width. Returns ``(K,)`` float64, NaN for a step no customer has.
    """
    correct, total = _step_counts(*_check_forecast_pair(predicted_ids, target_ids, "forecast_step_accuracy"))
    return torch.where(total > 0, correct / total.clamp(min=1.0), torch.nan)


def _step_counts(predicted_ids: torch.Tensor, target_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-step (correct, total) over real target steps, float64 ``(K,)`` each, K = target width."""
    batch, width = target_ids.shape
    steps = torch.arange(width, device=target_ids.device)
    real = steps[None, :] < forecast_lengths(target_ids)[:, None]
    aligned = torch.zeros_like(target_ids)
    keep = min(width, predicted_ids.shape[1])
    aligned[:, :keep] = predicted_ids[:, :keep]
    aligned = torch.where(
        steps[None, :] < forecast_lengths(predicted_ids)[:, None], aligned, torch.zeros_like(aligned)
    )
    correct = (real & (aligned == target_ids)).sum(dim=0).to(torch.float64)
    return correct, real.sum(dim=0).to(torch.float64)


class ForecastMetrics(Metric):
    """Epoch-level forecast metrics: per-step accuracy and mean edit distance, raw and normalised.

    ``update(predicted_ids, target_ids)``: ``(B, K')`` greedy/beam output and ``(B, K)`` targets (event-type
    ids ending with ``<eos>``, 0 = padding; all-padding rows are unknown and skipped). ``edit_distance`` is
    the mean Levenshtein distance over known rows; ``edit_distance_norm`` the mean of distance / max(length of
    prediction, length of target), in [0, 1], 0 when both are empty. Keys ``step_acc/1..n_steps``,
    ``edit_distance``, ``edit_distance_norm``, ``n_forecast``.
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(
        self, n_steps: int, **kwargs
    ) -> None:  # n_steps: forecast horizon K (real steps, <eos> excluded)
        super().__init__(**kwargs)
        if n_steps < 1:
            raise ValueError(f"ForecastMetrics: n_steps must be at least 1, got {n_steps}")
        self.n_steps = int(n_steps)
        self.add_state(
            "step_correct", default=torch.zeros(self.n_steps, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state(
            "step_total", default=torch.zeros(self.n_steps, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("distance_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state(
            "normalised_distance_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("n_known", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, predicted_ids: torch.Tensor, target_ids: torch.Tensor) -> None:
        predicted_ids, target_ids = _check_forecast_pair(
            predicted_ids.detach(), target_ids.detach(), "ForecastMetrics"
        )
        target_len = forecast_lengths(target_ids)
        too_long = target_len > self.n_steps
        if too_long.any():
            row = _first_bad_row(too_long)
            raise ValueError(
                f"ForecastMetrics: target_ids row {row} has {int(target_len[row])} real steps; this accumulator was "
                f"built for at most n_steps={self.n_steps}"
            )
        correct, total = _step_counts(predicted_ids, target_ids)
        width = min(self.n_steps, correct.numel())
        self.step_correct[:width] += correct[:width]
        self.step_total[:width] += total[:width]
        known = forecast_target_known(target_ids)
        distance = sequence_edit_distance(predicted_ids, target_ids)[known].to(torch.float64)
        longest = torch.maximum(forecast_lengths(predicted_ids), target_len)[known].to(torch.float64)
        self.distance_sum += distance.sum()
        self.normalised_distance_sum += (distance / longest.clamp(min=1.0)).sum()
        self.n_known += known.sum()

    def compute(self) -> dict[str, float]:
        values = {
            f"step_acc/{k + 1}": float(self.step_correct[k] / self.step_total[k])
            if self.step_total[k] > 0
            else math.nan
            for k in range(self.n_steps)
        }
        n = float(self.n_known)
        values["edit_distance"] = float(self.distance_sum) / n if n else math.nan
        values["edit_distance_norm"] = float(self.normalised_distance_sum) / n if n else math.nan
        values["n_forecast"] = n
        return values

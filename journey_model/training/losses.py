"""The loss of each task (:mod:`journey_model.models.tasks`), and their weighted sum for one batch.

* ``outcome`` — masked binary cross-entropy in which NaN targets (unknown) are ignored; in training, Wide & Deep's
  network head (``wide_network_head``) adds the same loss of the network's own scores (``outcome_network``).
* ``next_event`` — cross-entropy over the event-type vocabulary, target id 0 (unknown) ignored.
* ``next_item`` — cross-entropy over the whole item vocabulary, or sampled softmax over the true item and
  uniformly sampled negatives (Jean et al. 2015); target id 0 ignored.
* ``forecast`` — token cross-entropy of the teacher-forced next K event types, padding (id 0) ignored.

Every loss returns a scalar that stays attached to the graph even when a batch knows no target, so a
trainer can always call ``backward()``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from journey_model.data.batch import SequenceBatch
from journey_model.data.features import PAD_ID
from journey_model.models.output import ModelOutput
from journey_model.models.tasks import Task, parse_task

NETWORK_OUTCOME = "outcome_network"  # the loss of Wide & Deep's network head (training only)


def _zero_loss(logits: torch.Tensor) -> torch.Tensor:
    return logits.sum() * 0.0  # keeps the graph so backward() works on a batch with no known target


def outcome_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy over the known (non-NaN) entries of ``targets``, both (B, n_outcomes)."""
    if logits.shape != targets.shape:
        raise ValueError(f"outcome_loss: logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ")
    known = ~torch.isnan(targets)
    if not known.any():
        return _zero_loss(logits)
    return F.binary_cross_entropy_with_logits(logits[known], targets[known].to(logits.dtype))


def next_event_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of (B, V) logits against (B,) ids; id 0 (unknown) is ignored."""
    if not (targets != PAD_ID).any():
        return _zero_loss(logits)
    return F.cross_entropy(logits, targets, ignore_index=PAD_ID)


def next_item_loss(
    full_logits: torch.Tensor | None, sampled_logits: torch.Tensor | None, targets: torch.Tensor
) -> torch.Tensor:
    """Next-item cross-entropy: over the full vocabulary, or sampled softmax when ``sampled_logits`` is given.

    ``sampled_logits`` (B, 1 + S) hold the true item's logit in column 0 and S negatives after it.
    Rows whose target is 0 (unknown) are ignored either way.
    """
    if sampled_logits is not None:
        known = targets != PAD_ID
        if not known.any():
            return _zero_loss(sampled_logits)
        positive_column = torch.zeros(int(known.sum()), dtype=torch.long, device=sampled_logits.device)
        return F.cross_entropy(sampled_logits[known], positive_column)
    if full_logits is None:
        raise ValueError("next_item_loss: neither full nor sampled next-item logits were given")
    return next_event_loss(full_logits, targets)


def forecast_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Token cross-entropy of (B, K, V) teacher-forced logits against (B, K) ids; padding (0) is ignored."""
    B, K, V = logits.shape
    if targets.shape != (B, K):
        raise ValueError(f"forecast_loss: logits {tuple(logits.shape)} do not match targets {tuple(targets.shape)}")
    return next_event_loss(logits.reshape(B * K, V), targets.reshape(B * K))


def compute_losses(
    output: ModelOutput, batch: SequenceBatch, weights: Mapping[Task | str, float] | None = None,
    auxiliary: bool = True,
) -> dict[str, torch.Tensor]:
    """Each task's loss where the model produced it and the batch holds its target, and their weighted sum.

    Returns ``{"loss": total, "outcome": …,
    "next_event": …, …}``; a task weight defaults to 1. With ``auxiliary`` (training), the total also holds the
    losses of scores that are trained but never predicted with (Wide & Deep's network head, under
    ``NETWORK_OUTCOME``); without it (validation, test), the total is the loss of the predictions alone, comparable
    across models.
    """
    weight_of = {parse_task(k): float(v) for k, v in (weights or {}).items()}
    losses: dict[str, torch.Tensor] = {}
    if output.outcome_logits is not None and batch.outcomes is not None:
        losses[Task.OUTCOME.value] = outcome_loss(output.outcome_logits, batch.outcomes)
    if output.next_event_logits is not None and batch.next_event_type is not None:
        losses[Task.NEXT_EVENT.value] = next_event_loss(output.next_event_logits, batch.next_event_type)
    has_item_logits = output.next_item_logits is not None or output.next_item_sampled_logits is not None
    if has_item_logits and batch.next_item is not None:
        losses[Task.NEXT_ITEM.value] = next_item_loss(
            output.next_item_logits, output.next_item_sampled_logits, batch.next_item
        )
    if output.forecast_logits is not None and batch.forecast is not None:
        losses[Task.FORECAST.value] = forecast_loss(output.forecast_logits, batch.forecast)
    if not losses:
        raise ValueError(
            "compute_losses: the model output and the batch share no task (did the batch carry targets?)"
        )
    total = sum(weight_of.get(Task(name), 1.0) * value for name, value in losses.items())
    if auxiliary and output.network_outcome_logits is not None and batch.outcomes is not None:
        losses[NETWORK_OUTCOME] = outcome_loss(output.network_outcome_logits, batch.outcomes)
        total = total + weight_of.get(Task.OUTCOME, 1.0) * losses[NETWORK_OUTCOME]
    losses["loss"] = total
    return losses

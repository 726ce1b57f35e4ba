"""The tasks a Journey model answers, which model may answer which, and the loss of each.

* ``outcome`` — one or several binary targets per customer (churn, default …), one logit each; masked binary
  cross-entropy in which NaN targets (unknown) are ignored.
* ``next_event`` — the type of the customer's next behaviour, ranked over the event-type vocabulary;
  cross-entropy, target id 0 (unknown) ignored.
* ``next_item`` — the object of the next behaviour (:attr:`FeatureSpec.item_field`); cross-entropy over the
  whole item vocabulary, or, for large vocabularies, over the true item and uniformly sampled negatives
  (sampled softmax, Jean et al. 2015); target id 0 ignored.
* ``forecast`` — the next K event types, decoded step by step from ``<bos>`` to ``<eos>``; token
  cross-entropy, padding (id 0) ignored.

Every loss returns a scalar that stays attached to the graph even when a batch knows no target, so a
trainer can always call ``backward()``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from journey_model.batch import PAD_ID, FeatureSpec, SequenceBatch

if TYPE_CHECKING:
    from journey_model.models.output import ModelOutput


class Task(StrEnum):
    OUTCOME = "outcome"
    NEXT_EVENT = "next_event"
    NEXT_ITEM = "next_item"
    FORECAST = "forecast"


ALL_TASKS: tuple[Task, ...] = tuple(Task)


class UnsupportedTaskError(ValueError):
    """A model was asked for a task it cannot answer, or a task the FeatureSpec gives it no data for."""


def parse_task(task: Task | str) -> Task:
    """``"next_event"`` -> :attr:`Task.NEXT_EVENT`; an unknown name lists the valid ones."""
    try:
        return Task(task)
    except ValueError:
        valid = ", ".join(t.value for t in ALL_TASKS)
        raise UnsupportedTaskError(f"unknown task {task!r}; valid tasks: {valid}") from None


def missing_spec_requirement(task: Task, spec: FeatureSpec) -> str | None:
    """Why ``spec`` gives no data for ``task``, or None when it does."""
    if task is Task.OUTCOME and not spec.outcome_names:
        return "task 'outcome' needs FeatureSpec.outcome_names, which is empty"
    if task is Task.NEXT_ITEM:
        if spec.item_field is None:
            return "task 'next_item' needs FeatureSpec.item_field, which is None"
        if spec.item_field not in spec.categorical_vocab_sizes:
            return (
                f"task 'next_item': FeatureSpec.item_field {spec.item_field!r} is not one of the categorical "
                f"fields {spec.categorical_fields}"
            )
    if task is Task.FORECAST and spec.forecast_steps <= 0:
        return "task 'forecast' needs FeatureSpec.forecast_steps > 0"
    return None


def resolve_tasks(
    model_name: str,
    supported: Iterable[Task],
    spec: FeatureSpec,
    requested: Iterable[Task | str] | None = None,
    reasons: Mapping[Task, str] | None = None,
) -> tuple[Task, ...]:
    """The tasks a model built from ``spec`` will answer.

    ``requested=None`` takes every task the spec has data for and the model supports. A requested task the
    model cannot answer raises :class:`UnsupportedTaskError` naming the model and the task (with the model's
    reason when it gives one); so does a task the spec has no data for.
    """
    supported = frozenset(supported)
    supported_names = ", ".join(t.value for t in ALL_TASKS if t in supported)
    if requested is None:
        chosen = tuple(t for t in ALL_TASKS if t in supported and missing_spec_requirement(t, spec) is None)
        if not chosen:
            raise UnsupportedTaskError(
                f"model {model_name!r} supports {supported_names}, but the FeatureSpec provides data for none of them"
            )
        return chosen
    chosen_set: set[Task] = set()
    for item in requested:
        task = parse_task(item)
        if task not in supported:
            why = f" ({reasons[task]})" if reasons and task in reasons else ""
            raise UnsupportedTaskError(
                f"model {model_name!r} cannot answer task {task.value!r}{why}; it supports: {supported_names}"
            )
        problem = missing_spec_requirement(task, spec)
        if problem is not None:
            raise UnsupportedTaskError(f"model {model_name!r}: {problem}")
        chosen_set.add(task)
    if not chosen_set:
        raise UnsupportedTaskError(f"model {model_name!r}: no task requested")
    return tuple(t for t in ALL_TASKS if t in chosen_set)


# ---------------------------------------------------------------------------------------------- losses


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
    output: ModelOutput, batch: SequenceBatch, weights: Mapping[Task | str, float] | None = None
) -> dict[str, torch.Tensor]:
    """Each task's loss where the model produced it and the batch holds its target, and their weighted sum.

    Returns ``{"loss": total, "outcome": …,
    "next_event": …, …}``; a task weight defaults to 1.
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
    losses["loss"] = sum(weight_of.get(Task(name), 1.0) * value for name, value in losses.items())
    return losses

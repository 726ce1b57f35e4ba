"""The tasks a Journey model answers, and which model may answer which.

* ``outcome`` — one or several binary targets per customer (churn, default …), one logit each.
* ``next_event`` — the type of the customer's next behaviour, ranked over the event-type vocabulary.
* ``next_item`` — the object of the next behaviour (:attr:`FeatureSpec.item_field`), over the whole item
  vocabulary or over the true item and sampled negatives.
* ``forecast`` — the next K event types, decoded step by step from ``<bos>`` to ``<eos>``.

Their losses live with the trainer, in :mod:`journey_model.training.losses`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum

from journey_model.data.features import FeatureSpec


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

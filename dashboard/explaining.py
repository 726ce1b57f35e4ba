"""One customer's explanation for the customer view: per-event importance, reasons and reason codes.

The model is the one that scored the run (``models:/NAME/VERSION`` of the scores, or the bundle folder the
manifest names), opened with :func:`journey_model.tracking.loading.open_model`; the customer's example is
encoded by the point-in-time builder at the run's cut-off and explained by
:func:`journey_model.inference.explain.explain_examples` with its defaults, so the dashboard shows what batch
scoring and the API would say. Whatever the explanation carries beyond ``attention`` and ``reasons`` (reason
codes, a readable reason text) is read where present.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from dashboard.data import ScoringRun
from journey_model.data.schema import CUSTOMER_ID, TIMESTAMP_TYPE
from journey_model.data.sequences import CUTOFF, encode_examples
from journey_model.inference.explain import explain_examples
from journey_model.inference.scorer import ModelIdentity, Scorer
from journey_model.tracking.loading import open_model
from journey_model.tracking.store import mlflow_scope


@dataclass
class CustomerExplanation:
    """What the customer view draws: the events with an importance per task, and the reasons."""

    method: str
    tasks: list[str]  # tasks with a per-event importance (outcomes, next_event …; all_tasks for a pooling model)
    importance: pd.DataFrame  # one row per event before the cut-off (oldest first): position, event_type, task columns
    reasons: dict[str, list[dict[str, Any]]]  # task -> [{summary, event_type, time_bucket, weight, events}]
    reason_codes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # outcome -> [{code, sentence, weight}]
    reason_text: str | None = None
    scores: dict[str, Any] = field(default_factory=dict)  # the scores of this explanation's forward pass


def model_reference(run: ScoringRun) -> str:
    """The URI of the model version that scored ``run`` (an alias may have moved since)."""
    uri = str(run.manifest.get("model_uri") or (run.manifest.get("config") or {}).get("model") or "")
    if uri.startswith("models:/") and run.model_name and run.model_version:
        return f"models:/{run.model_name}/{run.model_version}"
    return uri


def open_run_model(run: ScoringRun, tracking_uri: str) -> tuple[Scorer, ModelIdentity]:
    """The scorer that scored ``run``, read from ``tracking_uri``'s registry when it is an MLflow model."""
    reference = model_reference(run)
    if not reference:
        raise ValueError(f"{run.path}: the manifest names no model")
    if Path(reference).is_dir():
        return open_model(reference)
    with mlflow_scope(tracking_uri):
        return open_model(reference)


def explain_customer(scorer: Scorer, events: pa.Table, customer_id: str, cutoff: pd.Timestamp) -> CustomerExplanation:
    """Encode ``customer_id``'s example at ``cutoff`` from its canonical ``events`` and explain it."""
    moment = pd.Timestamp(cutoff)
    moment = moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")
    examples = pa.table({CUSTOMER_ID: pa.array([customer_id], pa.string()),
                         CUTOFF: pa.array([moment.value // 1000], pa.int64()).cast(TIMESTAMP_TYPE)})
    rows = encode_examples(scorer.preprocessor, events, examples)
    frame, explanations = explain_examples(scorer, rows.to_pylist())
    explanation = explanations[0]
    before = events.filter(pc.less(events.column("ts"), pa.scalar(moment.to_pydatetime(), TIMESTAMP_TYPE)))
    n_before = before.num_rows
    seen = len(explanation.event_type)
    importance = pd.DataFrame({"position": np.arange(n_before)})
    for task, weights in explanation.attention.items():
        column = np.zeros(n_before)
        column[n_before - seen:] = np.asarray(weights, dtype=float)[:seen]
        importance[task] = column
    importance["seen_by_model"] = importance["position"] >= n_before - seen
    reasons = {task: [{"summary": r.summary, "event_type": r.event_type, "time_bucket": r.time_bucket,
                       "weight": r.weight, "events": r.events} for r in task_reasons]
               for task, task_reasons in explanation.reasons.items()}
    codes = getattr(explanation, "reason_codes", None) or {}
    reason_codes = {task: [hit.to_dict() if hasattr(hit, "to_dict") else dict(vars(hit)) for hit in hits]
                    for task, hits in codes.items()}
    text = getattr(explanation, "reason_text", None)
    scores = frame.iloc[0].to_dict() if len(frame) else {}
    return CustomerExplanation(getattr(explanation, "method", "attention"), list(explanation.attention), importance,
                               reasons, reason_codes, text if isinstance(text, str) else None, scores)


__all__ = ["CustomerExplanation", "explain_customer", "model_reference", "open_run_model"]

"""Why a model scored a customer as it did: an importance per event and task, top reasons, reason codes.

The importances come from :mod:`journey_model.inference.attribution` by the chosen ``method``: the model's own
attention (ATRank's task queries, Zhou et al. 2018 §3.4, or a pooling attention shared by every task), attention
rollout, integrated gradients on the behaviour embeddings, or leave-one-event-out occlusion. The default is the
one that put the planted causes of the synthetic bank first most often (``benchmarks/bench_explanations.py``),
per model family (:func:`~journey_model.inference.attribution.default_method`).

Top reasons group an event-level importance by behaviour type and ATRank time bucket ("2 × complaint 3-7 days
before the cut-off"), which is what a dashboard or a case worker can read; reason codes read the top events in
the dataset's stable codes and sentences (:mod:`journey_model.inference.reason_codes`), one list per outcome.
Both batch scoring and the online API call :func:`explain_rows` / :func:`explain_examples`, so the same
customer gets the same reasons everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from journey_model.data.batch import SequenceBatch
from journey_model.data.eligibility import ineligible_reason_column
from journey_model.data.features import PAD_ID
from journey_model.data.schema import ReasonCode
from journey_model.inference.attribution import (
    POOLED_TASK,
    SIGNED_METHODS,
    AttributionConfig,
    attribute_batch,
    default_method,
)
from journey_model.inference.reason_codes import EventFacts, ReasonCodeHit, reason_codes_per_task, reason_text
from journey_model.inference.scorer import Scorer

__all__ = ["POOLED_TASK", "REASON_CODE_TYPE", "REASON_TYPE", "Explanation", "Reason", "ReasonCodeHit",
           "explain_examples", "explain_rows", "reason_codes_column", "reason_text_column", "reasons_column"]

REASON_TYPE = pa.struct([
    pa.field("task", pa.string()),
    pa.field("event_type", pa.string()),
    pa.field("time_bucket", pa.string()),
    pa.field("weight", pa.float64()),
    pa.field("events", pa.int32()),
])


REASON_CODE_TYPE = pa.struct([
    pa.field("task", pa.string()),
    pa.field("code", pa.string()),
    pa.field("sentence", pa.string()),
    pa.field("weight", pa.float64()),
    pa.field("events", pa.int32()),
])


@dataclass
class Reason:
    """A group of events (one behaviour type, one time bucket) and its summed importance for a task."""

    task: str  # outcome name, "next_event", "next_item" (or all_tasks for a pooling attention)
    event_type: str  # behaviour type as the model knows it; "<oov>" for a type it never saw in training
    time_bucket: str  # ATRank time bucket of the gap to the cut-off, e.g. "3-7 days"
    weight: float  # summed importance: a share of the attention (0..1), or probability points (signed methods)
    events: int  # number of events in the group

    @property
    def summary(self) -> str:
        times = "event" if self.events == 1 else "events"
        return (f"{self.events} {self.event_type} {times} {self.time_bucket} before the cut-off: "
                f"weight {self.weight:.3g} for {self.task}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "summary": self.summary}


@dataclass
class Explanation:
    """One customer's explanation over the events the model saw (oldest first)."""

    method: str  # the attribution method's name: attention, attention-rollout, integrated-gradients, occlusion
    event_type: list[str]  # per model input event, the behaviour type the model saw
    time_bucket: list[str]  # per model input event, its time bucket label
    attention: dict[str, np.ndarray]  # task -> (n,) the method's importance per input event (name kept for callers)
    reasons: dict[str, list[Reason]]  # task -> top reasons, largest weight first
    # outcome -> top 3 codes; weights are summed importances (attention methods: the share above an even 1/n)
    reason_codes: dict[str, list[ReasonCodeHit]] = field(default_factory=dict)
    item: list[str | None] = field(default_factory=list)  # per input event, its item (None where it has none)
    # per input event, days before the cut-off: exact when the rows carry days_before_cutoff, else the upper
    # bound of its time bucket (ATRank's log2 buckets: "3-7 days" -> 7)
    days_before_cutoff: list[float] = field(default_factory=list)

    @property
    def reason_text(self) -> str:
        """One readable line: 'churn: FEE_AFTER_COMPLAINT — a fee …; … | default: …' (batch output's column)."""
        return reason_text(self.reason_codes)


def group_top_reasons(
    weights: torch.Tensor, batch: SequenceBatch, num_buckets: int, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sum one task's (B, T) weights per (event type, time bucket) and keep the k largest groups per row.

    Returns (event-type ids, time-bucket ids, summed weights, event counts), each (B, k'); a group with no
    events has count 0 and must be skipped by the caller.
    """
    mask = batch.mask
    key = batch.event_type * num_buckets + batch.time_bucket  # (B, T) one id per group
    width = int(key.max()) + 1 if key.numel() else 1
    w = torch.where(mask, weights, torch.zeros_like(weights))
    sums = torch.zeros(key.shape[0], width, dtype=w.dtype).scatter_add_(1, key, w)  # (B, groups)
    counts = torch.zeros(key.shape[0], width).scatter_add_(1, key, mask.float())
    sums[counts == 0] = float("-inf")  # never pick an empty group over a real one, even a negative one
    top = sums.topk(min(k, width), dim=1)
    picked_counts = counts.gather(1, top.indices)
    return top.indices // num_buckets, top.indices % num_buckets, top.values, picked_counts


def bucket_ages_days(scorer: Scorer) -> tuple[np.ndarray, np.ndarray]:
    """Per time-bucket id, the smallest and largest gap to the cut-off in days (padding: NaN)."""
    buckets = scorer.preprocessor.time_buckets
    days_per_unit = buckets.unit_seconds / 86400.0
    low = np.full(buckets.num_buckets + 1, np.nan)
    high = np.full(buckets.num_buckets + 1, np.nan)
    for k in range(buckets.num_buckets):
        low[k + 1] = (2.0**k - 1) * days_per_unit
        high[k + 1] = np.inf if k == buckets.num_buckets - 1 else (2.0 ** (k + 1) - 1) * days_per_unit
    return low, high


def outcome_reason_codes(scorer: Scorer) -> dict[str, list[ReasonCode]]:
    """The reason codes the model's dataset config declares, per outcome (empty lists where none)."""
    declared = scorer.preprocessor.dataset.outcomes
    return {name: list(declared[name].reasons) if name in declared else [] for name in scorer.preprocessor.outcome_names}


def explain_examples(
    scorer: Scorer,
    examples: list[dict[str, Any]],
    top_k: int = 3,
    with_events: bool = True,
    method: str | None = None,
    reason_codes: Mapping[str, Sequence[ReasonCode]] | None = None,
    config: AttributionConfig | None = None,
) -> tuple[pd.DataFrame, list[Explanation]]:
    """Scores (as :meth:`Scorer.score_rows` gives them) and an explanation per example.

    ``method``: an attribution method (default :func:`~journey_model.inference.attribution.default_method`
    of the model); an unavailable one raises ``AttributionUnavailableError``. ``reason_codes``: per outcome,
    the codes to read the top events in (default: the model's dataset config). ``with_events=False`` skips
    the per-event lists (batch scoring keeps only the reasons and reason codes).
    """
    method = method or default_method(scorer)
    batch = scorer.collate(examples)
    attributions, output = attribute_batch(scorer.model, batch, method, config=config)
    frame = scorer.frame_from_output(examples, batch, output)
    per_task = {task: torch.from_numpy(values) for task, values in attributions.importance.items()}
    preprocessor = scorer.preprocessor
    event_vocab = preprocessor.vocabularies["event_type"]
    item_field = preprocessor.config.item_field
    item_vocab = preprocessor.vocabularies.get(item_field) if item_field else None
    buckets = preprocessor.time_buckets
    num_buckets = preprocessor.config.num_time_buckets + 1
    bucket_labels = [buckets.label(i) for i in range(num_buckets)]
    age_low, age_high = bucket_ages_days(scorer)
    codes = outcome_reason_codes(scorer) if reason_codes is None else {k: list(v) for k, v in reason_codes.items()}
    outcomes = list(preprocessor.outcome_names)
    lengths = batch.lengths.tolist()

    reasons: list[dict[str, list[Reason]]] = [{} for _ in examples]
    for task, weights in per_task.items():
        type_ids, bucket_ids, sums, counts = group_top_reasons(weights, batch, num_buckets, top_k)
        type_names = [event_vocab.decode(row) for row in type_ids.tolist()]
        rows = zip(type_names, bucket_ids.tolist(), sums.tolist(), counts.long().tolist(), strict=True)
        for b, (names, bucket_row, sum_row, count_row) in enumerate(rows):
            reasons[b][task] = [
                Reason(task, name, bucket_labels[bucket], weight, n)
                for name, bucket, weight, n in zip(names, bucket_row, sum_row, count_row, strict=True)
                if n > 0 and (weight > 0 or method not in SIGNED_METHODS)
            ]

    explanations = []
    for b, n in enumerate(lengths):
        types = event_vocab.decode(batch.event_type[b, :n].tolist())
        bucket_ids = batch.time_bucket[b, :n].numpy()
        items: list[str | None] = [None] * n
        if item_vocab is not None and item_field in batch.categorical:
            items = [None if i == PAD_ID else token for i, token in
                     zip(batch.categorical[item_field][b, :n].tolist(),
                         item_vocab.decode(batch.categorical[item_field][b, :n].tolist()), strict=True)]
        exact = examples[b].get("days_before_cutoff")
        if exact is not None and n:
            low = high = np.asarray(list(exact)[-n:], dtype=np.float64)
        else:
            low, high = age_low[bucket_ids], age_high[bucket_ids]
        facts = EventFacts(types, items, low, high)
        importance = {task: attributions.of(task, b) for task in attributions.importance}
        # attention is a share that sums to 1: only the attention above an even spread (1/n) says "this event
        # mattered more than the rest", so frequent events (daily logins) do not win a code by their number
        excess = importance if method in SIGNED_METHODS else {t: w - 1.0 / max(n, 1) for t, w in importance.items()}
        hits = reason_codes_per_task(excess, facts, codes, outcomes, shared_task=POOLED_TASK)
        # an outcome the customer is not eligible for has no score, so nothing to explain
        ineligible = {name for name in scorer.judged_outcomes if examples[b].get(ineligible_reason_column(name))}
        hits = {task: found for task, found in hits.items() if task not in ineligible}
        reasons[b] = {task: found for task, found in reasons[b].items() if task not in ineligible}
        if with_events:
            times = [bucket_labels[i] if i != PAD_ID else "<pad>" for i in bucket_ids.tolist()]
            days = [float(d) for d in high]
            explanations.append(Explanation(method, types, times, importance, reasons[b], hits, items, days))
        else:
            explanations.append(Explanation(method, [], [], {}, reasons[b], hits))
    return frame, explanations


def explain_rows(
    scorer: Scorer,
    rows: pa.Table,
    top_k: int = 3,
    with_events: bool = True,
    method: str | None = None,
    reason_codes: Mapping[str, Sequence[ReasonCode]] | None = None,
    config: AttributionConfig | None = None,
) -> tuple[pd.DataFrame, list[Explanation]]:
    """:func:`explain_examples` over encoded rows, ``scorer.batch_size`` customers at a time."""
    frames, explanations = [], []
    for start in range(0, rows.num_rows, scorer.batch_size):
        chunk = rows.slice(start, scorer.batch_size).to_pylist()
        frame, explained = explain_examples(scorer, chunk, top_k, with_events, method, reason_codes, config)
        frames.append(frame)
        explanations.extend(explained)
    if not frames:
        return pd.DataFrame(columns=scorer.output_columns), []
    return pd.concat(frames, ignore_index=True), explanations


def reasons_column(explanations: Sequence[Explanation | None]) -> pa.Array:
    """Every customer's top reasons (all tasks, largest weight first within a task) as a list<struct> column.

    ``None`` (a customer not explained) gives an empty list, here and in :func:`reason_codes_column`.
    """
    values = [
        [{"task": r.task, "event_type": r.event_type, "time_bucket": r.time_bucket, "weight": r.weight,
          "events": r.events} for task_reasons in e.reasons.values() for r in task_reasons] if e else []
        for e in explanations
    ]
    return pa.array(values, type=pa.list_(REASON_TYPE))


def reason_codes_column(explanations: Sequence[Explanation | None]) -> pa.Array:
    """Every customer's reason codes (per outcome, largest weight first) as a list<struct> column."""
    values = [
        [{"task": task, "code": h.code, "sentence": h.sentence, "weight": h.weight, "events": len(h.events)}
         for task, hits in e.reason_codes.items() for h in hits] if e else []
        for e in explanations
    ]
    return pa.array(values, type=pa.list_(REASON_CODE_TYPE))


def reason_text_column(explanations: Sequence[Explanation | None]) -> pa.Array:
    """One readable string per customer ('churn: FEE_AFTER_COMPLAINT — a fee …; … | default: …')."""
    return pa.array([e.reason_text if e else None for e in explanations], type=pa.string())

"""Why a model scored a customer as it did: attention weight per event and task, and the top reasons.

ATRank (Zhou et al. 2018, §3.4) answers every task with its own learned query attending over the encoded
behaviours, and the paper's case study reads those weights to see which behaviours drove a prediction. Here
the weights of each task query (``ModelOutput.attentions["task/<name>"]``, (B, heads, T)) are averaged over
heads, which gives one weight per event and task that sums to 1 over the events the model saw. Models with
a single attention pooling (``gru-attn``: ``"pool"``, (B, T)) get one weight per event shared by all tasks;
models without attention give no weights and say so (``method = "none"``) instead of inventing any.

Top reasons group an event-level weight by behaviour type and ATRank time bucket ("2 × complaint 3-7 days
before the cut-off: 41% of the churn attention"), which is what a dashboard or a case worker can read. Both
batch scoring and the online API call :func:`explain_rows` / :func:`explain_examples`, so the same customer
gets the same reasons everywhere. Attention says where the model looked, not a causal attribution.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from journey_model.data.batch import SequenceBatch
from journey_model.data.features import PAD_ID
from journey_model.inference.scorer import Scorer
from journey_model.models.output import ModelOutput

METHOD_TASK_QUERY = "task-query attention"
METHOD_POOLING = "attention pooling"
METHOD_NONE = "none"
POOLED_TASK = "all_tasks"  # the task name of a pooling attention that every task shares

REASON_TYPE = pa.struct([
    pa.field("task", pa.string()),
    pa.field("event_type", pa.string()),
    pa.field("time_bucket", pa.string()),
    pa.field("weight", pa.float64()),
    pa.field("events", pa.int32()),
])


@dataclass
class Reason:
    """A group of events (one behaviour type, one time bucket) and its share of a task's attention."""

    task: str  # outcome name, "next_event", "next_item" (or all_tasks for a pooling attention)
    event_type: str  # behaviour type as the model knows it; "<oov>" for a type it never saw in training
    time_bucket: str  # ATRank time bucket of the gap to the cut-off, e.g. "3-7 days"
    weight: float  # share of the task's attention on these events, 0..1
    events: int  # number of events in the group

    @property
    def summary(self) -> str:
        times = "event" if self.events == 1 else "events"
        return (f"{self.events} {self.event_type} {times} {self.time_bucket} before the cut-off: "
                f"{self.weight:.0%} of the {self.task} attention")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "summary": self.summary}


@dataclass
class Explanation:
    """One customer's explanation over the events the model saw (oldest first)."""

    method: str  # METHOD_TASK_QUERY, METHOD_POOLING or METHOD_NONE
    event_type: list[str]  # per model input event, the behaviour type the model saw
    time_bucket: list[str]  # per model input event, its time bucket label
    attention: dict[str, np.ndarray]  # task -> (n,) weights over the model's input events
    reasons: dict[str, list[Reason]]  # task -> top reasons, largest weight first


def attention_per_task(output: ModelOutput) -> tuple[str, dict[str, torch.Tensor]]:
    """(method, {task: (B, T) weights}) from a forward pass run with ``output_attentions=True``."""
    per_task = {
        name[len("task/"):]: weights.float().mean(dim=1)  # (B, heads, T) -> (B, T)
        for name, weights in output.attentions.items()
        if name.startswith("task/")
    }
    if per_task:
        return METHOD_TASK_QUERY, per_task
    if "pool" in output.attentions:
        return METHOD_POOLING, {POOLED_TASK: output.attentions["pool"].float()}
    return METHOD_NONE, {}


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
    sums = torch.zeros(key.shape[0], width).scatter_add_(1, key, w)  # (B, groups)
    counts = torch.zeros(key.shape[0], width).scatter_add_(1, key, mask.float())
    sums[counts == 0] = -1.0  # never pick an empty group over a real one
    top = sums.topk(min(k, width), dim=1)
    picked_counts = counts.gather(1, top.indices)
    return top.indices // num_buckets, top.indices % num_buckets, top.values.clamp(min=0.0), picked_counts


def explain_examples(
    scorer: Scorer, examples: list[dict[str, Any]], top_k: int = 3, with_events: bool = True
) -> tuple[pd.DataFrame, list[Explanation]]:
    """Scores (as :meth:`Scorer.score_rows` gives them) and an explanation per example, from one forward pass.

    ``with_events=False`` skips the per-event lists (batch scoring only keeps the reasons).
    """
    batch, output = scorer.forward(examples, output_attentions=True)
    frame = scorer.frame_from_output(examples, batch, output)
    method, per_task = attention_per_task(output)
    preprocessor = scorer.preprocessor
    event_vocab = preprocessor.vocabularies["event_type"]
    buckets = preprocessor.time_buckets
    num_buckets = preprocessor.config.num_time_buckets + 1
    bucket_labels = [buckets.label(i) for i in range(num_buckets)]
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
                if n > 0
            ]

    explanations = []
    for b, n in enumerate(lengths):
        if with_events:
            types = event_vocab.decode(batch.event_type[b, :n].tolist())
            times = [bucket_labels[i] if i != PAD_ID else "<pad>" for i in batch.time_bucket[b, :n].tolist()]
            attention = {task: w[b, :n].numpy().astype(np.float64) for task, w in per_task.items()}
        else:
            types, times, attention = [], [], {}
        explanations.append(Explanation(method, types, times, attention, reasons[b]))
    return frame, explanations


def explain_rows(
    scorer: Scorer, rows: pa.Table, top_k: int = 3, with_events: bool = True
) -> tuple[pd.DataFrame, list[Explanation]]:
    """:func:`explain_examples` over encoded rows, ``scorer.batch_size`` customers per forward pass."""
    frames, explanations = [], []
    for start in range(0, rows.num_rows, scorer.batch_size):
        chunk = rows.slice(start, scorer.batch_size).to_pylist()
        frame, explained = explain_examples(scorer, chunk, top_k, with_events)
        frames.append(frame)
        explanations.extend(explained)
    if not frames:
        return pd.DataFrame(columns=scorer.output_columns), []
    return pd.concat(frames, ignore_index=True), explanations


def reasons_column(explanations: list[Explanation]) -> pa.Array:
    """Every customer's top reasons (all tasks, largest weight first within a task) as a list<struct> column."""
    values = [
        [{"task": r.task, "event_type": r.event_type, "time_bucket": r.time_bucket, "weight": r.weight,
          "events": r.events} for task_reasons in e.reasons.values() for r in task_reasons]
        for e in explanations
    ]
    return pa.array(values, type=pa.list_(REASON_TYPE))

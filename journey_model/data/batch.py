"""The padded tensor batch every Journey model reads, and the one function that builds it.

A prepared example is one (customer, cut-off): the customer's most recent events strictly before the
cut-off, already encoded to integer ids by :mod:`journey_model.data.preprocessing`, plus its targets. Training
(the datamodule), batch scoring and the online API all turn lists of such examples into a
:class:`SequenceBatch` through :func:`collate_examples`, so padding and masking are written once.

Conventions (shared with the preprocessing artifact):

* Events are in chronological order, right-padded: position ``lengths[b] - 1`` is the most recent event.
* Id 0 is padding (or "this behaviour type does not carry this field"), id 1 is out-of-vocabulary.
  The event-type vocabulary also reserves 2 = ``<bos>`` and 3 = ``<eos>`` for step-by-step forecasts.
* Time buckets are ATRank's log2 gaps to the cut-off, shifted by one so that 0 stays padding; ``time_gap``
  is the same gap in seconds (float), for models that read time at the data's own resolution.
* Numeric fields are transformed (signed log1p, standardised) floats with a presence mask; missing is 0.
* Unknown targets: NaN for outcomes, 0 for next-event ids and forecast steps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields

import numpy as np
import torch


@dataclass
class SequenceBatch:
    """B customers' event sequences of at most T events, with their targets. Shapes in comments."""

    event_type: torch.Tensor  # (B, T) int64 event-type ids
    time_bucket: torch.Tensor  # (B, T) int64 time-gap bucket ids (0 = padding)
    categorical: dict[str, torch.Tensor]  # field -> (B, T) int64 ids
    numeric: torch.Tensor  # (B, T, F) float32 transformed values, 0 where missing
    numeric_mask: torch.Tensor  # (B, T, F) float32, 1 where the value is present
    mask: torch.Tensor  # (B, T) bool, True on real events
    lengths: torch.Tensor  # (B,) int64 number of real events
    outcomes: torch.Tensor | None = None  # (B, n_outcomes) float32, NaN = unknown
    next_event_type: torch.Tensor | None = None  # (B,) int64, 0 = unknown
    next_item: torch.Tensor | None = None  # (B,) int64, 0 = unknown
    forecast: torch.Tensor | None = None  # (B, K) int64 future event types ending with <eos>, 0 = padding
    time_gap: torch.Tensor | None = None  # (B, T) float32 seconds from each event to the cut-off, 0 at padding
    customer_id: list[str] = field(default_factory=list)  # (B,) for joining scores back
    event_id: list[list[str | None]] | None = None  # per customer, per real event (explanations)

    @property
    def batch_size(self) -> int:
        return self.event_type.shape[0]

    def take(self, rows: torch.Tensor | Sequence[int]) -> SequenceBatch:
        """The customers at ``rows`` (indices into B), every per-customer field taken alike."""
        index = torch.as_tensor(rows, dtype=torch.long)
        taken: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                value = value[index]
            elif isinstance(value, dict):
                value = {k: v[index] for k, v in value.items()}
            elif isinstance(value, list) and value:
                value = [value[i] for i in index.tolist()]
            taken[f.name] = value
        return SequenceBatch(**taken)  # type: ignore[arg-type]

    def to(self, device: torch.device | str) -> SequenceBatch:
        """A copy with every tensor on ``device``."""
        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                value = value.to(device, non_blocking=True)
            elif isinstance(value, dict):
                value = {k: v.to(device, non_blocking=True) for k, v in value.items()}
            moved[f.name] = value
        return SequenceBatch(**moved)


def _pad_int(rows: Sequence[Sequence[int]], width: int) -> torch.Tensor:
    out = np.zeros((len(rows), width), dtype=np.int64)
    for b, row in enumerate(rows):
        n = min(len(row), width)
        if n:
            out[b, :n] = np.asarray(row[-n:] if len(row) > width else row, dtype=np.int64)
    return torch.from_numpy(out)


def collate_examples(
    examples: Sequence[Mapping[str, object]],
    categorical_fields: Sequence[str],
    numeric_fields: Sequence[str],
    outcome_names: Sequence[str] = (),
    max_len: int | None = None,
) -> SequenceBatch:
    """Pad a list of encoded examples (dicts of prepared columns) into one :class:`SequenceBatch`.

    An example holds ``event_type`` and ``time_bucket`` (lists of ids), optionally ``time_gap`` (seconds to
    the cut-off; examples prepared before it existed lack it), ``cat_<field>`` lists of ids,
    ``num_<field>`` lists of floats (NaN = missing) and optionally the targets ``y_<outcome>``,
    ``next_event_type``, ``next_item`` and ``forecast_event_type``. Sequences longer than ``max_len``
    keep their most recent events. T is the longest sequence in the batch (at least 1).
    """
    lengths_list = [len(ex["event_type"]) for ex in examples]  # type: ignore[arg-type]
    longest = max(lengths_list, default=0)
    width = max(1, min(longest, max_len) if max_len else longest)
    lengths = torch.tensor([min(n, width) for n in lengths_list], dtype=torch.int64)
    mask = torch.arange(width)[None, :] < lengths[:, None]  # (B, T)

    event_type = _pad_int([ex["event_type"] for ex in examples], width)  # type: ignore[misc]
    time_bucket = _pad_int([ex["time_bucket"] for ex in examples], width)  # type: ignore[misc]
    categorical = {name: _pad_int([ex[f"cat_{name}"] for ex in examples], width) for name in categorical_fields}  # type: ignore[misc]

    numeric = np.zeros((len(examples), width, len(numeric_fields)), dtype=np.float32)
    for b, ex in enumerate(examples):
        n = int(lengths[b])
        for j, name in enumerate(numeric_fields):
            values = np.asarray(ex[f"num_{name}"], dtype=np.float32)  # type: ignore[arg-type]
            if n:
                numeric[b, :n, j] = values[-n:]
    numeric_mask = (~np.isnan(numeric)).astype(np.float32)
    numeric = np.nan_to_num(numeric, nan=0.0)
    numeric_mask[~mask.numpy()] = 0.0

    batch = SequenceBatch(
        event_type=event_type,
        time_bucket=time_bucket,
        categorical=categorical,
        numeric=torch.from_numpy(numeric),
        numeric_mask=torch.from_numpy(numeric_mask),
        mask=mask,
        lengths=lengths,
        customer_id=[str(ex.get("customer_id", "")) for ex in examples],
    )
    if examples and "time_gap" in examples[0]:
        gaps = np.zeros((len(examples), width), dtype=np.float32)
        for b, ex in enumerate(examples):
            n = int(lengths[b])
            if n:
                gaps[b, :n] = np.asarray(ex["time_gap"], dtype=np.float32)[-n:]  # type: ignore[arg-type]
        batch.time_gap = torch.from_numpy(gaps)
    if outcome_names:
        batch.outcomes = torch.tensor(
            [[_float_or_nan(ex.get(f"y_{name}")) for name in outcome_names] for ex in examples], dtype=torch.float32
        )
    if examples and "next_event_type" in examples[0]:
        batch.next_event_type = torch.tensor([int(ex.get("next_event_type") or 0) for ex in examples])
    if examples and "next_item" in examples[0]:
        batch.next_item = torch.tensor([int(ex.get("next_item") or 0) for ex in examples])
    if examples and "forecast_event_type" in examples[0]:
        steps = [_as_list(ex.get("forecast_event_type")) for ex in examples]
        batch.forecast = _pad_int(steps, max(1, max(len(s) for s in steps)))
    if examples and "event_id" in examples[0]:
        batch.event_id = [
            _as_list(ex.get("event_id"))[-int(lengths[b]) :] if lengths[b] else [] for b, ex in enumerate(examples)
        ]
    return batch


def _as_list(value: object) -> list:
    """A list column's value (list, array or None) as a Python list."""
    return [] if value is None else list(value)  # type: ignore[call-overload]


def _float_or_nan(value: object) -> float:
    if value is None:
        return float("nan")
    return float(value)  # type: ignore[arg-type]

"""What every model in the zoo shares: the common config fields and the model interface.

A :class:`JourneyModel` is a plain ``nn.Module`` that says which tasks it supports (``supported_tasks``),
which ones it was built for (``tasks``), whether it learns by gradient (``trainable``), and answers
``forward(batch, output_attentions=False) -> ModelOutput``. Models that forecast also implement
``start_decoding`` / ``decode_step`` so greedy and beam decoding (:mod:`journey_model.models.decoding`)
are written once; :meth:`JourneyModel.forecast` is the entry point.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from journey_model.core.settings import check_choice
from journey_model.data.batch import SequenceBatch
from journey_model.data.features import FeatureSpec
from journey_model.models import decoding
from journey_model.models.output import ForecastResult, ModelOutput
from journey_model.models.tasks import Task, UnsupportedTaskError, resolve_tasks

# Fields model configs held before the training settings moved to journey_model.training.recipes. Bundles
# saved back then still carry them in their config dict; loaders drop them before building the model.
LEGACY_TRAINING_FIELDS = frozenset(
    {"optimizer", "learning_rate", "lr_decay_step", "lr_after_decay", "grad_clip_norm", "batch_size", "weight_decay"}
)


@dataclass
class SequenceModelConfig:
    """Fields every sequence encoder shares: the raw behaviour embedding and the task heads.

    Architecture only: how a model is trained (optimiser, learning rate, clipping) is the trainer's
    :class:`~journey_model.training.recipes.TrainingRecipe`.
    """

    field_dim: int = 32  # width of each field embedding (event type, each categorical field, time bucket)
    hidden_size: int = 64  # H, the shared space every behaviour group is projected into
    num_heads: int = 4  # heads of the attention blocks and of the task-query attention
    task_ffn_size: int | None = None  # inner width of the task-query feed-forward; None = H // 4
    dropout: float = 0.1  # dropout on attention weights (and between stacked RNN layers)
    layer_norm_eps: float = 1e-5  # LayerNorm epsilon of the attention blocks
    embedding_init: str = "glorot"  # "glorot" (Glorot-uniform, as ATRank's code) or "normal" (torch default)
    next_item_scoring: str = "full"  # "full" softmax over the item vocabulary, or "sampled" negatives
    num_sampled_negatives: int = 100  # negatives per batch when next_item_scoring = "sampled"
    next_item_copy: bool = True  # also copy the next item from the journey's own items (pointer + learned gate)
    task_recency: bool = False  # the task queries also score each behaviour by its age: a learned bias per task,
    # head and log2-minute bucket of the time to the cut-off (zero at first)
    wide: bool = False  # Wide & Deep outcomes: scores also linear in the journey's totals (the bag's counts)
    wide_network_head: bool = False  # (with wide) the network's task answers also get outcome scores of their own,
    # trained alone beside the combined ones (deep supervision), so the network learns as it would without the
    # counts; predictions use the combined scores only. Without it, the network's outcome weights start at zero
    # so that the linear part leads until the network has learnt more

    # fields added after models were first saved, with the value those models were built with
    SAVED_BEFORE: ClassVar[dict[str, object]] = {"next_item_copy": False, "task_recency": False, "wide": False,
                                                  "wide_network_head": False}

    def __post_init__(self) -> None:
        check_choice(self, "embedding_init", self.embedding_init, ("glorot", "normal"))
        check_choice(self, "next_item_scoring", self.next_item_scoring, ("full", "sampled"))
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"{type(self).__name__}.hidden_size = {self.hidden_size} is not divisible by "
                f"num_heads = {self.num_heads}"
            )

    @property
    def task_ffn_width(self) -> int:
        return self.task_ffn_size or max(1, self.hidden_size // 4)


def check_batch(batch: SequenceBatch, spec: FeatureSpec) -> None:
    """Raise a clear error when ``batch`` does not hold what ``spec`` describes (fields, id ranges)."""
    missing = [name for name in spec.categorical_fields if name not in batch.categorical]
    if missing:
        raise ValueError(
            f"SequenceBatch.categorical lacks fields {missing}; the FeatureSpec expects {spec.categorical_fields}"
        )
    if batch.numeric.shape[-1] != len(spec.numeric_fields):
        raise ValueError(
            f"SequenceBatch.numeric has {batch.numeric.shape[-1]} columns; the FeatureSpec expects "
            f"{len(spec.numeric_fields)} ({spec.numeric_fields})"
        )
    _check_ids("event_type", batch.event_type, spec.event_type_vocab_size, batch)
    _check_ids("time_bucket", batch.time_bucket, spec.num_time_buckets, batch)
    for name, size in spec.categorical_vocab_sizes.items():
        _check_ids(f"categorical[{name!r}]", batch.categorical[name], size, batch)


def _check_ids(name: str, ids: torch.Tensor, size: int, batch: SequenceBatch) -> None:
    if ids.numel() == 0:
        return
    bad = (ids < 0) | (ids >= size)
    if bad.any():
        row, position = (int(i) for i in bad.nonzero()[0])
        customer = f" (customer {batch.customer_id[row]!r})" if row < len(batch.customer_id) else ""
        raise ValueError(
            f"SequenceBatch.{name}: id {int(ids[row, position])} at row {row}{customer}, position {position} "
            f"is outside the FeatureSpec vocabulary of size {size} (expected 0..{size - 1})"
        )


class JourneyModel(nn.Module):
    """The interface of every model in the zoo."""

    supported_tasks: ClassVar[frozenset[Task]] = frozenset()
    unsupported_reasons: ClassVar[dict[Task, str]] = {}  # why a task makes no sense for this model
    trainable: ClassVar[bool] = True  # False for count-based baselines fitted with update_counts()

    def __init__(self, spec: FeatureSpec, tasks: Iterable[Task | str] | None, model_name: str):
        super().__init__()
        self.spec = spec
        self.model_name = model_name
        self.tasks: tuple[Task, ...] = resolve_tasks(
            model_name, self.supported_tasks, spec, tasks, self.unsupported_reasons
        )

    def forward(self, batch: SequenceBatch, output_attentions: bool = False) -> ModelOutput:
        raise NotImplementedError

    # -------------------------------------------------------------------------------------- forecasting

    @torch.no_grad()
    def forecast(
        self,
        batch: SequenceBatch,
        steps: int | None = None,
        beam_size: int | None = None,
        output_attentions: bool = False,
    ) -> ForecastResult:
        """The next behaviours of each customer: greedy (``beam_size=None``) or beam search.

        ``steps`` defaults to ``FeatureSpec.forecast_steps + 1`` (K behaviours and <eos>). Call ``eval()``
        first; the model is not switched for you.
        """
        if Task.FORECAST not in self.supported_tasks:
            why = self.unsupported_reasons.get(Task.FORECAST)
            supported = ", ".join(t.value for t in self.supported_tasks)
            raise UnsupportedTaskError(
                f"model {self.model_name!r} cannot answer task 'forecast'" + (f" ({why})" if why else "")
                + f"; it supports: {supported}"
            )
        if Task.FORECAST not in self.tasks:
            raise UnsupportedTaskError(
                f"model {self.model_name!r} was built without task 'forecast' (tasks: "
                f"{[t.value for t in self.tasks]}); build it with FeatureSpec.forecast_steps > 0"
            )
        steps = steps if steps is not None else self.spec.forecast_steps + 1
        if steps < 1:
            raise ValueError(f"forecast: steps must be >= 1, got {steps}")
        if beam_size is None:
            return decoding.greedy_decode(self, batch, steps, output_attentions)
        return decoding.beam_search(self, batch, steps, beam_size, output_attentions)

    def start_decoding(self, batch: SequenceBatch) -> dict[str, torch.Tensor]:
        """The decoder's initial state for ``batch``: batch-first tensors (index_select on dim 0 reorders)."""
        raise NotImplementedError

    def decode_step(
        self, tokens: torch.Tensor, state: dict[str, torch.Tensor], need_weights: bool = False
    ) -> decoding.DecoderStep:
        """Scores of the next event type given the previous one (B,) and the state."""
        raise NotImplementedError

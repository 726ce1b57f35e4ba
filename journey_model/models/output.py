"""The small named results the model zoo returns: an encoded journey, a model's outputs, a forecast.

Every model returns one :class:`ModelOutput` from ``forward`` whatever its architecture, so the trainer,
batch scoring and the API read predictions and attention weights the same way; ``forecast()`` returns a
:class:`ForecastResult`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class EncodedSequence:
    """What an encoder makes of a batch of journeys; the task heads and decoders read it."""

    states: torch.Tensor  # (B, T, H) one vector per behaviour, zero at padding
    mask: torch.Tensor  # (B, T) bool, True on real behaviours
    summary: torch.Tensor  # (B, H) the whole journey in one vector (fixed context, representation)
    attentions: dict[str, torch.Tensor] = field(default_factory=dict)  # encoder weights by name
    final_state: tuple[torch.Tensor, ...] = ()  # RNN encoders: (h_n,) or (h_n, c_n), each (layers, B, H)


@dataclass
class ModelOutput:
    """One forward pass's predictions. A field is None when the model was not built for that task.

    Attention weights (``output_attentions=True``) are keyed by name, e.g. ``"self/block0"`` (B, heads, T, T),
    ``"task/churn"`` (B, heads, T), ``"forecast/attention"`` (B, K, T), ``"pool"`` (B, T), and with next items
    copied from the journey ``"copy/next_item"`` (B, T): each behaviour's share of the prediction by copying.
    """

    outcome_logits: torch.Tensor | None = None  # (B, n_outcomes) one logit per FeatureSpec.outcome_names
    network_outcome_logits: torch.Tensor | None = None  # (B, n_outcomes) with wide_network_head: the network's
    # own scores without the counts, trained beside outcome_logits and never predicted with
    next_event_logits: torch.Tensor | None = None  # (B, V_event) scores of the next event type
    next_item_logits: torch.Tensor | None = None  # (B, V_item) scores over the whole item vocabulary
    next_item_sampled_logits: torch.Tensor | None = None  # (B, 1 + S) true item in column 0, S negatives
    forecast_logits: torch.Tensor | None = None  # (B, K, V_event) teacher-forced step scores
    representation: torch.Tensor | None = None  # (B, H) task-independent summary of the customer
    task_representations: dict[str, torch.Tensor] = field(default_factory=dict)  # task query -> (B, H)
    attentions: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> weights (see above)


@dataclass
class ForecastResult:
    """The next behaviours of each customer, decoded greedily or by beam search."""

    tokens: torch.Tensor  # (B, steps) event-type ids; after <eos> (3) every step is padding (0)
    scores: torch.Tensor  # (B,) total log-probability of ``tokens`` up to and including <eos>
    finished: torch.Tensor  # (B,) bool, True where the forecast ended with <eos> within ``steps``
    beams: torch.Tensor | None = None  # (B, beam_size, steps) every kept beam, best first (beam search)
    beam_scores: torch.Tensor | None = None  # (B, beam_size) their total log-probabilities
    attentions: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (B, steps, ...) per step

"""Simple baselines every sequence model has to beat.

* :class:`BagOfEvents` — logistic regression on a bag of the journey's event types and categorical values
  (log1p counts, order- and recency-free) plus the mean and presence share of each numeric field. Outcomes
  and next event type (multinomial).
* :class:`MostFrequent` — the most frequent next event type / next item, counted from training batches.
* :class:`RecentItems` — the next item is one the customer used before, the more recent the likelier: how often
  the next item was the journey's most recent distinct item, its second most recent, … or a new one is counted
  from training batches (new ones follow their overall frequency). Repeat consumption is strong wherever
  customers come back to the same payee, merchant or product; sequence models have to beat it.
* :class:`Markov` — a first-order Markov chain over event types: P(next | last event), smoothed towards the
  overall next-event frequencies; forecasts by chaining (greedy or beam, like every decoder).
* :class:`GRUAttentionPooling` — a (bidirectional) GRU whose states are pooled by additive attention into one
  vector that every task head reads (the reference code's ``rnn_att`` Bi-RNN + attention baseline).

The count models learn without gradients: ``model.update_counts(batch)`` for each training batch (or
``model.fit(batches)``), then ``forward`` returns log-probabilities as logits. They have ``trainable = False``
and no parameters, only buffers, so their counts are saved in the ``state_dict``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Self

import torch
from torch import nn

from journey_model.data.batch import SequenceBatch
from journey_model.data.features import BOS_ID, EOS_ID, PAD_ID, FeatureSpec
from journey_model.models.attention import large_negative, masked_softmax
from journey_model.models.base import JourneyModel, SequenceModelConfig, check_batch
from journey_model.models.counts import CountsLinear
from journey_model.models.decoding import DecoderStep, teacher_forcing_inputs
from journey_model.models.heads import TaskScores, known_items, mask_special_event_types, task_query_names
from journey_model.models.output import ModelOutput
from journey_model.models.seq2seq import RNNEncoder
from journey_model.models.tasks import Task

# ---------------------------------------------------------------------------------------------- bag of events


@dataclass
class BagConfig:
    """Bag-of-events logistic regression."""

    categorical_fields: list[str] | None = None  # fields whose values are counted; None = every categorical field


def _counts_saved_at_the_top(module: nn.Module, state_dict: dict, prefix: str, *_: object) -> None:
    """A bag saved before :class:`CountsLinear` held its tables at the top (``event_type.weight``, ...)."""
    for name in [k for k in state_dict if k.startswith(prefix) and k[len(prefix):].split(".")[0] in
                 ("event_type", "categorical", "numeric")]:
        state_dict[f"{prefix}counts.{name[len(prefix):]}"] = state_dict.pop(name)


class BagOfEvents(JourneyModel):
    """Logistic regression on counts of event types and categorical values (recency-free)."""

    supported_tasks = frozenset({Task.OUTCOME, Task.NEXT_EVENT})
    unsupported_reasons = {
        Task.FORECAST: "a bag of counts has no order and no decoder; use 'markov' or a seq2seq model",
        Task.NEXT_ITEM: "a linear map from item counts to items needs vocabulary² weights; use 'most-frequent' "
        "or a sequence model",
    }

    def __init__(
        self,
        spec: FeatureSpec,
        config: BagConfig | None = None,
        tasks: Iterable[Task | str] | None = None,
        model_name: str = "bag",
    ):
        super().__init__(spec, tasks, model_name)
        self.config = config or BagConfig()
        self.n_outcomes = len(spec.outcome_names) if Task.OUTCOME in self.tasks else 0
        n_out = self.n_outcomes + (spec.event_type_vocab_size if Task.NEXT_EVENT in self.tasks else 0)
        try:
            self.counts = CountsLinear(spec, n_out, self.config.categorical_fields)
        except ValueError as error:
            raise ValueError(f"BagConfig.categorical_fields: {error}") from None
        self.bias = nn.Parameter(torch.zeros(n_out))
        self.register_load_state_dict_pre_hook(_counts_saved_at_the_top)

    def forward(self, batch: SequenceBatch, output_attentions: bool = False) -> ModelOutput:
        check_batch(batch, self.spec)
        logits = self.bias + self.counts(batch)  # (B, n_out)
        output = ModelOutput()
        if Task.OUTCOME in self.tasks:
            output.outcome_logits = logits[:, : self.n_outcomes]
        if Task.NEXT_EVENT in self.tasks:
            output.next_event_logits = mask_special_event_types(logits[:, self.n_outcomes :])
        return output


# ---------------------------------------------------------------------------------------------- counts


@dataclass
class CountConfig:
    """Count-based baselines (no gradient, no optimiser)."""

    smoothing: float = 1.0  # pseudo-count added to every id (Laplace / add-one smoothing)
    prior_strength: float = 1.0  # Markov: pseudo-transitions pulling each row towards overall frequencies
    count_history: bool = True  # also count the behaviours inside each journey, not only the targets
    recency_ranks: int = 50  # recent-items: distinct items told apart by recency; older ones share the last rank


def last_event_type(batch: SequenceBatch) -> torch.Tensor:
    """(B,) the most recent real event type of each journey; <bos> for an empty journey."""
    index = (batch.lengths - 1).clamp(min=0)[:, None]
    last = batch.event_type.gather(1, index).squeeze(1)
    return torch.where(batch.lengths > 0, last, torch.full_like(last, BOS_ID))


def _log_frequencies(counts: torch.Tensor, smoothing: float, never: tuple[int, ...]) -> torch.Tensor:
    """log((counts + smoothing) / total) over the ids that can occur; very negative for ``never``."""
    allowed = torch.ones_like(counts, dtype=torch.bool)
    allowed[list(never)] = False
    smoothed = (counts + smoothing) * allowed
    log_probs = torch.log(smoothed / smoothed.sum().clamp(min=1e-12))
    return log_probs.masked_fill(~allowed, large_negative(log_probs.dtype))


class CountModel(JourneyModel):
    """A model fitted by counting: ``update_counts(batch)`` per training batch, no gradient."""

    trainable = False

    def update_counts(self, batch: SequenceBatch) -> None:
        raise NotImplementedError

    def fit(self, batches: Iterable[SequenceBatch]) -> Self:
        """Count every batch (e.g. a training DataLoader) and return the model."""
        for batch in batches:
            self.update_counts(batch)
        return self


class MostFrequent(CountModel):
    """Predicts the overall most frequent next event type / next item, whoever the customer is."""

    supported_tasks = frozenset({Task.NEXT_EVENT, Task.NEXT_ITEM})
    unsupported_reasons = {
        Task.OUTCOME: "global frequencies carry no per-customer outcome; use 'bag' as the simplest outcome model",
        Task.FORECAST: "use 'markov' for a count-based forecast",
    }

    def __init__(
        self,
        spec: FeatureSpec,
        config: CountConfig | None = None,
        tasks: Iterable[Task | str] | None = None,
        model_name: str = "most-frequent",
    ):
        super().__init__(spec, tasks, model_name)
        self.config = config or CountConfig()
        self.register_buffer("event_counts", torch.zeros(spec.event_type_vocab_size))  # (V_event,)
        item_vocab = spec.categorical_vocab_sizes[spec.item_field] if Task.NEXT_ITEM in self.tasks else 0  # type: ignore[index]
        self.register_buffer("item_counts", torch.zeros(item_vocab))  # (V_item,)

    @torch.no_grad()
    def update_counts(self, batch: SequenceBatch) -> None:
        check_batch(batch, self.spec)
        if Task.NEXT_EVENT in self.tasks:
            _count_ids(self.event_counts, batch.next_event_type)
            if self.config.count_history:
                _count_ids(self.event_counts, batch.event_type[batch.mask])
        if Task.NEXT_ITEM in self.tasks:
            _count_ids(self.item_counts, batch.next_item)
            if self.config.count_history:
                _count_ids(self.item_counts, batch.categorical[self.spec.item_field][batch.mask])  # type: ignore[index]

    def forward(self, batch: SequenceBatch, output_attentions: bool = False) -> ModelOutput:
        B = batch.batch_size
        output = ModelOutput()
        if Task.NEXT_EVENT in self.tasks:
            log_probs = _log_frequencies(self.event_counts, self.config.smoothing, (PAD_ID, BOS_ID, EOS_ID))
            output.next_event_logits = log_probs.expand(B, -1).clone()  # (B, V_event)
        if Task.NEXT_ITEM in self.tasks:
            log_probs = _log_frequencies(self.item_counts, self.config.smoothing, (PAD_ID,))
            output.next_item_logits = log_probs.expand(B, -1).clone()  # (B, V_item)
        return output


class RecentItems(CountModel):
    """The journey's own items ranked by recency, with the chance of each rank counted from training.

    ``P(item) = P(rank r) / n_r`` for an item whose latest use is the r-th most recent among the journey's
    distinct items (ranks from ``recency_ranks`` on share the last one, among ``n_r`` items), and
    ``P(new) · f(item) / Σ f`` over the items the journey has not used, with ``f`` the add-``smoothing``
    frequency of new next items (``<oov>`` among them). Padding and ``<oov>`` items are never ranked as used.
    """

    supported_tasks = frozenset({Task.NEXT_ITEM})
    unsupported_reasons = {
        Task.OUTCOME: "recency of items carries no outcome; use 'bag' as the simplest outcome model",
        Task.NEXT_EVENT: "use 'markov' or 'most-frequent' for a count-based next event",
        Task.FORECAST: "use 'markov' for a count-based forecast",
    }

    def __init__(
        self,
        spec: FeatureSpec,
        config: CountConfig | None = None,
        tasks: Iterable[Task | str] | None = None,
        model_name: str = "recent-items",
    ):
        super().__init__(spec, tasks, model_name)
        self.config = config or CountConfig()
        if self.config.recency_ranks < 1:
            raise ValueError(f"CountConfig.recency_ranks = {self.config.recency_ranks}; expected at least 1")
        self.register_buffer("rank_counts", torch.zeros(self.config.recency_ranks + 1))  # (1 + R,): new, 1st, 2nd …
        self.register_buffer("new_item_counts", torch.zeros(spec.categorical_vocab_sizes[spec.item_field]))  # type: ignore[index]

    def _ranks(self, batch: SequenceBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) items (padding where not a known item) and (B, T) recency rank of each item's latest use
        (1 = the most recent distinct item, capped at ``recency_ranks``; 0 elsewhere)."""
        check_batch(batch, self.spec)
        items = batch.categorical[self.spec.item_field]  # type: ignore[index]
        known = known_items(items, batch.mask)  # (B, T)
        items = items.masked_fill(~known, PAD_ID)
        T = items.shape[1]
        after = torch.ones(T, T, dtype=torch.bool, device=items.device).triu(1)  # (T, T) key later than query
        used_again = ((items[:, :, None] == items[:, None, :]) & after).any(-1)  # (B, T), (B, T, T) like bag_of_ids
        is_latest = known & ~used_again  # (B, T) each item's latest use
        later = is_latest.flip(1).cumsum(1).flip(1)  # (B, T) latest uses from t on, t included
        ranks = (later * is_latest).clamp(max=self.config.recency_ranks)
        return items, ranks

    @torch.no_grad()
    def update_counts(self, batch: SequenceBatch) -> None:
        if batch.next_item is None:
            return
        items, ranks = self._ranks(batch)
        known = batch.next_item != PAD_ID
        target_rank = (ranks * (items == batch.next_item[:, None])).amax(1)  # (B,) 0 = a new item
        self.rank_counts += torch.bincount(target_rank[known], minlength=self.rank_counts.shape[0]).to(self.rank_counts.dtype)
        _count_ids(self.new_item_counts, batch.next_item[known & (target_rank == 0)])

    def forward(self, batch: SequenceBatch, output_attentions: bool = False) -> ModelOutput:
        items, ranks = self._ranks(batch)
        B = items.shape[0]
        rank_log_p = _log_frequencies(self.rank_counts, self.config.smoothing, ())  # (1 + R,)
        # <oov> keeps its frequency as a next item (a new, unknown item), only copying never names it
        frequency = _log_frequencies(self.new_item_counts, self.config.smoothing, (PAD_ID,)).exp()  # (V,)
        # each item written once, at its latest use; the other positions go to the padding column (masked below)
        latest = items.masked_fill(ranks == 0, PAD_ID)  # (B, T)
        used = torch.zeros(B, frequency.shape[0], dtype=torch.bool, device=items.device)
        used.scatter_(1, latest, ranks > 0)  # (B, V)
        unused_mass = (frequency[None] * ~used).sum(1, keepdim=True).clamp(min=1e-30)  # (B, 1)
        logits = rank_log_p[0] + torch.log((frequency[None] / unused_mass).clamp(min=1e-30))  # (B, V) new items
        # the last rank is shared by every item at or beyond it
        sharing = (ranks == self.config.recency_ranks).sum(1, keepdim=True).clamp(min=1)  # (B, 1)
        share = torch.where(ranks == self.config.recency_ranks, sharing, torch.ones_like(ranks))
        used_log_p = rank_log_p[ranks] - share.to(rank_log_p.dtype).log()  # (B, T), read only at latest uses
        logits = logits.scatter(1, latest, used_log_p.masked_fill(ranks == 0, 0.0))
        logits[:, PAD_ID] = large_negative(logits.dtype)
        return ModelOutput(next_item_logits=logits)


def _count_ids(counts: torch.Tensor, ids: torch.Tensor | None) -> None:
    if ids is None:
        return
    ids = ids[ids != PAD_ID]
    counts += torch.bincount(ids, minlength=counts.shape[0]).to(counts.dtype)


class Markov(CountModel):
    """First-order Markov chain over event types: P(next | last), smoothed towards overall frequencies.

    ``P(v | a) = (C[a, v] + prior_strength · P(v)) / (C[a] + prior_strength)`` where C counts transitions and
    P(v) is the add-``smoothing`` frequency of v as a next event. An empty journey starts from <bos>.
    """

    supported_tasks = frozenset({Task.NEXT_EVENT, Task.FORECAST})
    unsupported_reasons = {
        Task.OUTCOME: "a Markov chain over event types predicts the next event, not a customer outcome; use 'bag'",
        Task.NEXT_ITEM: "a first-order chain over items needs a vocabulary² table; use 'most-frequent' or a "
        "sequence model",
    }

    def __init__(
        self,
        spec: FeatureSpec,
        config: CountConfig | None = None,
        tasks: Iterable[Task | str] | None = None,
        model_name: str = "markov",
    ):
        super().__init__(spec, tasks, model_name)
        self.config = config or CountConfig()
        V = spec.event_type_vocab_size
        self.register_buffer("transitions", torch.zeros(V, V))  # (from, to) counts
        self.register_buffer("destinations", torch.zeros(V))  # how often each type came next

    @torch.no_grad()
    def update_counts(self, batch: SequenceBatch) -> None:
        check_batch(batch, self.spec)
        last = last_event_type(batch)  # (B,)
        sources, targets = [], []
        if self.config.count_history:
            types, mask = batch.event_type, batch.mask
            starts = torch.full_like(types[:, :1], BOS_ID)
            previous = torch.cat([starts, types[:, :-1]], dim=1)  # (B, T): <bos> before the first behaviour
            sources.append(previous[mask])
            targets.append(types[mask])
        if batch.next_event_type is not None:
            sources.append(last)
            targets.append(batch.next_event_type)
        if batch.forecast is not None:
            chain = torch.cat([last[:, None], batch.forecast], dim=1)  # (B, 1 + K)
            sources.append(chain[:, :-1].reshape(-1))
            targets.append(chain[:, 1:].reshape(-1))
        if not sources:
            return
        source, target = torch.cat(sources), torch.cat(targets)
        known = (target != PAD_ID) & (source != PAD_ID)
        source, target = source[known], target[known]
        self.transitions.index_put_((source, target), torch.ones_like(source, dtype=self.transitions.dtype), accumulate=True)
        _count_ids(self.destinations, target)

    def transition_log_probs(self) -> torch.Tensor:
        """(V, V) log P(next | previous); padding and <bos> are never next."""
        prior = _log_frequencies(self.destinations, self.config.smoothing, (PAD_ID, BOS_ID)).exp()  # (V,)
        strength = self.config.prior_strength
        probs = (self.transitions + strength * prior) / (self.transitions.sum(1, keepdim=True) + strength)
        return torch.log(probs.clamp(min=1e-30)).masked_fill(prior[None] == 0, large_negative(probs.dtype))

    def forward(self, batch: SequenceBatch, output_attentions: bool = False) -> ModelOutput:
        check_batch(batch, self.spec)
        log_probs = self.transition_log_probs()
        last = last_event_type(batch)
        output = ModelOutput()
        if Task.NEXT_EVENT in self.tasks:
            output.next_event_logits = mask_special_event_types(log_probs[last])  # (B, V)
        if Task.FORECAST in self.tasks and batch.forecast is not None:
            inputs = teacher_forcing_inputs(batch.forecast)  # (B, K)
            previous = torch.where(inputs == BOS_ID, last[:, None], inputs)
            output.forecast_logits = log_probs[previous]  # (B, K, V)
        return output

    def start_decoding(self, batch: SequenceBatch) -> dict[str, torch.Tensor]:
        check_batch(batch, self.spec)
        return {"last": last_event_type(batch)}

    def decode_step(self, tokens: torch.Tensor, state: dict[str, torch.Tensor], need_weights: bool = False) -> DecoderStep:
        previous = torch.where(tokens == BOS_ID, state["last"], tokens)  # the first step continues the journey
        return DecoderStep(logits=self.transition_log_probs()[previous], state=state)


# ---------------------------------------------------------------------------------------------- GRU + attention


@dataclass
class GRUAttentionConfig(SequenceModelConfig):
    """A GRU read of the journey pooled by additive attention."""

    bidirectional: bool = True  # read the journey both ways (the reference's Bi-RNN + attention baseline)
    num_layers: int = 1  # stacked GRU layers


class AttentionPooling(nn.Module):
    """One learned question to every state: weights = softmax(v·tanh(W h_t)); pooled = Σ weights · h_t."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.project = nn.Linear(hidden_size, hidden_size)
        self.score = nn.Linear(hidden_size, 1, bias=False)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """states (B, T, H) -> pooled (B, H), weights (B, T)."""
        weights = masked_softmax(self.score(torch.tanh(self.project(states))).squeeze(-1), mask)
        return (weights[..., None] * states).sum(1), weights


class GRUAttentionPooling(JourneyModel):
    """GRU encoder + attention pooling; the pooled vector feeds every task's output layer."""

    supported_tasks = frozenset({Task.OUTCOME, Task.NEXT_EVENT, Task.NEXT_ITEM})
    unsupported_reasons = {Task.FORECAST: "it has no decoder; use 'gru' or 'gru-bahdanau'"}

    def __init__(
        self,
        spec: FeatureSpec,
        config: GRUAttentionConfig | None = None,
        tasks: Iterable[Task | str] | None = None,
        model_name: str = "gru-attn",
    ):
        super().__init__(spec, tasks, model_name)
        self.config = config = config or GRUAttentionConfig()
        self.encoder = RNNEncoder(
            spec,
            config.field_dim,
            config.hidden_size,
            "gru",
            config.num_layers,
            config.bidirectional,
            config.dropout,
            config.embedding_init,
        )
        self.pooling = AttentionPooling(config.hidden_size)
        self.query_names = task_query_names(spec, self.tasks)
        self.scores = TaskScores(spec, self.tasks, config)

    def forward(self, batch: SequenceBatch, output_attentions: bool = False) -> ModelOutput:
        encoded = self.encoder(batch)
        pooled, weights = self.pooling(encoded.states, encoded.mask)  # (B, H), (B, T)
        representations = {name: pooled for name in self.query_names}
        output = ModelOutput(representation=pooled, task_representations=representations)
        if output_attentions:
            output.attentions["pool"] = weights
        history = self.scores.item_history(encoded.states, encoded.mask, batch)
        self.scores(representations, output, batch, history, output_attentions)
        return output


"""Task heads on the shared customer representation: task-query attention and per-task scores.

ATRank's "vanilla attention" (Zhou et al. 2018, §3.4): the downstream task asks its own question of the
encoded behaviours. Here each task has one learned query vector — one per outcome (churn, default …), one
for the next event type and one for the next item — so a single model serves every task, and the weights
of each query say which past behaviours drove that prediction. The block is ATRank's (multi-head with
ReLU Q/K/V, residual with the query, LayerNorm, narrow feed-forward, LayerNorm).

Scores follow the reference's output layer, ``logit = bias[target] + ⟨u, e_target⟩``: one vector and bias per
outcome, per event type and per item. Next items can be scored against the whole vocabulary or, in training
with a large vocabulary, against the true item and uniformly sampled negatives.

Customers come back to what they used before (the same payee, merchant, product page), so by default the next
item is also *copied* from the journey, as in pointer-generator networks (See et al. 2017) and RepeatNet (Ren et
al. 2019): ``p(item) = g · softmax(scores)(item) + (1 − g) · Σ_{t: item_t = item} pointer_t``, where the pointer
is an attention of the next-item representation over the behaviours and the gate ``g`` is learned per customer.
The next-item logits are then ``log p``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from journey_model.data.batch import SequenceBatch
from journey_model.data.features import BOS_ID, EOS_ID, FIELD_SPECIAL_IDS, PAD_ID, FeatureSpec
from journey_model.models.attention import (
    MINUTE_BUCKETS,
    AttentionBlock,
    large_negative,
    masked_softmax,
    minute_buckets,
)
from journey_model.models.base import SequenceModelConfig
from journey_model.models.counts import CountsLinear
from journey_model.models.output import EncodedSequence, ModelOutput
from journey_model.models.tasks import Task

NEXT_EVENT_QUERY = "next_event"
NEXT_ITEM_QUERY = "next_item"
COPY_ATTENTION = "copy/next_item"  # (B, T): each behaviour's share of the next-item prediction by copying


def task_query_names(spec: FeatureSpec, tasks: Sequence[Task]) -> list[str]:
    """The task queries a model needs: each outcome's name, then ``next_event`` and ``next_item``."""
    names: list[str] = []
    if Task.OUTCOME in tasks:
        for name in spec.outcome_names:
            if name in (NEXT_EVENT_QUERY, NEXT_ITEM_QUERY) or name in names:
                raise ValueError(
                    f"FeatureSpec.outcome_names: {name!r} is repeated or clashes with a task query name "
                    f"({NEXT_EVENT_QUERY!r}, {NEXT_ITEM_QUERY!r})"
                )
            names.append(name)
    if Task.NEXT_EVENT in tasks:
        names.append(NEXT_EVENT_QUERY)
    if Task.NEXT_ITEM in tasks:
        names.append(NEXT_ITEM_QUERY)
    return names


def time_gap_of(batch: SequenceBatch, what: str) -> torch.Tensor:
    """The batch's seconds to the cut-off, or a clear error for examples prepared before Journey wrote them."""
    if batch.time_gap is None:
        raise ValueError(f"this model {what} but the batch has no time_gap: the examples were prepared by an older "
                         "Journey; run `journey prepare` again")
    return batch.time_gap


class RecencyBias(nn.Module):
    """How old a behaviour is, as a task asks it: a learned score bias per (head, task query, age bucket).

    The task query is asked at the cut-off, so the time between it and a behaviour is the behaviour's age; the
    buckets are :func:`~journey_model.models.attention.minute_buckets` of that age. Content attention can read
    age only through each state's time code; a bias gets the gradient of "views in the last three weeks count,
    the same views three months ago do not" directly, per task (DIN-style recency; ALiBi with a learned shape).
    Zero at first: the model starts as without it.
    """

    def __init__(self, num_queries: int, num_heads: int, num_buckets: int = MINUTE_BUCKETS):
        super().__init__()
        self.num_buckets = num_buckets
        self.table = nn.Parameter(torch.zeros(num_heads, num_queries, num_buckets))

    def forward(self, time_gap: torch.Tensor) -> torch.Tensor:
        """(B, T) seconds to the cut-off -> (B, heads, Q, T) score bias."""
        ages = minute_buckets(time_gap, self.num_buckets)  # (B, T)
        return self.table[:, :, ages].permute(2, 0, 1, 3)  # (heads, Q, B, T) -> (B, heads, Q, T)


class TaskQueryAttention(nn.Module):
    """One learned query per task attends over the encoded behaviours -> one (B, H) vector per task."""

    def __init__(self, names: Sequence[str], config: SequenceModelConfig):
        super().__init__()
        self.names = list(names)
        H = config.hidden_size
        self.queries = nn.Parameter(torch.empty(len(self.names), H))  # (Q, H) one question per task
        nn.init.xavier_uniform_(self.queries)
        self.block = AttentionBlock(
            H,
            config.num_heads,
            config.task_ffn_width,
            config.dropout,
            config.layer_norm_eps,
            relu_projections=True,
            output_projection=False,
        )
        self.recency = RecencyBias(len(self.names), config.num_heads) if config.task_recency else None

    def forward(
        self, states: torch.Tensor, mask: torch.Tensor, need_weights: bool = False,
        time_gap: torch.Tensor | None = None,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """states (B, T, H) -> {task: (B, H)}, and {"task/<name>": (B, heads, T)} when asked; ``time_gap``
        (B, T), seconds to the cut-off, is read with ``task_recency``."""
        B = states.shape[0]
        queries = self.queries[None].expand(B, -1, -1)  # (B, Q, H)
        bias = None
        if self.recency is not None:
            if time_gap is None:
                raise ValueError("TaskQueryAttention: task_recency needs time_gap (seconds to the cut-off)")
            bias = self.recency(time_gap)
        answers, weights = self.block(queries, states, key_mask=mask, need_weights=need_weights,
                                      score_bias=bias)  # (B, Q, H)
        representations = {name: answers[:, q] for q, name in enumerate(self.names)}
        attentions = {} if weights is None else {f"task/{name}": weights[:, :, q] for q, name in enumerate(self.names)}
        return representations, attentions


def known_items(items: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T) True on real behaviours whose item is a known one: neither padding nor ``<oov>``."""
    return mask & (items >= len(FIELD_SPECIAL_IDS))  # the reserved ids come first


@dataclass
class ItemHistory:
    """The behaviours a next-item scorer may copy from: their states and the item each one was about."""

    states: torch.Tensor  # (B, T, H) encoded behaviours, zero at padding
    mask: torch.Tensor  # (B, T) bool, True on real behaviours
    items: torch.Tensor  # (B, T) int64 item ids (0 = padding)


class NextItemScorer(nn.Module):
    """logit(item) = bias[item] + ⟨u, e_item⟩ over the full vocabulary, or true item + sampled negatives;
    with ``copy``, mixed with a pointer over the items of the journey (the module docstring has the formula)."""

    def __init__(self, vocab_size: int, hidden_size: int, scoring: str = "full", num_negatives: int = 100,
                 copy: bool = False):
        super().__init__()
        self.vocab_size = vocab_size
        self.scoring = scoring
        self.num_negatives = num_negatives
        self.item = nn.Embedding(vocab_size, hidden_size)  # (V_item, H)
        nn.init.xavier_uniform_(self.item.weight)
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        self.copy = None
        if copy:
            self.copy = nn.ModuleDict({
                "query": nn.Linear(hidden_size, hidden_size),  # u -> what to look for among past behaviours
                "key": nn.Linear(hidden_size, hidden_size),  # each behaviour's state -> what it offers
                "gate": nn.Linear(hidden_size, 1),  # u -> logit of g, the share of the scored distribution
            })

    def forward(
        self, u: torch.Tensor, target: torch.Tensor | None = None, history: ItemHistory | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """Returns (full logits (B, V_item), None, copied), or in sampled training (None, sampled logits
        (B, 1 + S), copied); ``copied`` (B, T) is each behaviour's share of the prediction handed over by copying,
        ``(1 − g) · pointer``, None without copying."""
        copied = None
        if self.scoring == "sampled" and self.training and target is not None:
            logits, candidates = self._sampled(u, target)
            if self.copy is not None and history is not None:  # the mixture gives the repeats mass again
                logits, copied = self._mix(u, logits, history, candidates)
                logits = _mask_repeats_of_target(logits, candidates)
            return None, logits, copied
        logits = u @ self.item.weight.T + self.bias  # (B, V_item)
        if self.copy is not None and history is not None:
            logits, copied = self._mix(u, logits, history)
        logits[:, PAD_ID] = large_negative(logits.dtype)
        return logits, None, copied

    def _sampled(self, u: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1 + S) logits and the item ids they score: the target in column 0, then shared negatives."""
        # uniform negatives shared by the batch; any id but padding, a negative equal to the target is masked
        negatives = torch.randint(1, self.vocab_size, (self.num_negatives,), device=u.device)  # (S,)
        positive = (u * self.item(target)).sum(-1) + self.bias[target]  # (B,)
        negative = u @ self.item(negatives).T + self.bias[negatives]  # (B, S)
        candidates = torch.cat([target[:, None], negatives[None, :].expand(len(target), -1)], dim=1)  # (B, 1 + S)
        return _mask_repeats_of_target(torch.cat([positive[:, None], negative], dim=1), candidates), candidates

    def _mix(self, u: torch.Tensor, logits: torch.Tensor, history: ItemHistory,
             candidates: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """log(g · softmax(logits) + (1 − g) · copy) in float32, and (1 − g) · pointer (B, T); ``candidates``
        (B, C) names logits' columns when they are not the whole vocabulary."""
        copy = self.copy
        assert copy is not None
        H = u.shape[-1]
        query = copy["query"](u).float()  # (B, H)
        keys = copy["key"](history.states).float()  # (B, T, H)
        # padding and out-of-vocabulary items are never copied: the pointer sees behaviours with a known item
        copyable = known_items(history.items, history.mask)  # (B, T)
        pointer = masked_softmax(torch.einsum("bh,bth->bt", query, keys) / H**0.5, copyable)  # (B, T)
        if candidates is None:
            copied = pointer.new_zeros(u.shape[0], self.vocab_size)  # (B, V_item) pointer mass per item
            copied.scatter_add_(1, history.items, pointer)
        else:  # (B, C) without a (B, V_item) table: sampled scoring is for vocabularies too large for one
            same = candidates[:, :, None] == history.items[:, None, :]  # (B, C, T)
            copied = torch.einsum("bct,bt->bc", same.to(pointer.dtype), pointer)
        gate = copy["gate"](u).float()  # (B, 1) logit of g
        scored = F.logsigmoid(gate) + logits.float().log_softmax(-1)
        recalled = F.logsigmoid(-gate) + copied.clamp_min(torch.finfo(torch.float32).tiny).log()
        return torch.logaddexp(scored, recalled), torch.sigmoid(-gate) * pointer


def _mask_repeats_of_target(logits: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Sampled (B, 1 + S) logits with every negative that equals the target (column 0) very negative."""
    repeats = candidates == candidates[:, :1]
    repeats[:, 0] = False
    return logits.masked_fill(repeats, large_negative(logits.dtype))


def outcome_readout(num_outcomes: int, hidden_size: int) -> tuple[nn.Parameter, nn.Parameter]:
    """Glorot (n_outcomes, H) weights and zero (n_outcomes,) biases: each outcome read from its own task answer."""
    weight = nn.Parameter(torch.empty(num_outcomes, hidden_size))
    nn.init.xavier_uniform_(weight)
    return weight, nn.Parameter(torch.zeros(num_outcomes))


def read_outcomes(answers: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """(B, n_outcomes, H) task answers -> (B, n_outcomes) logits of an :func:`outcome_readout`."""
    return (answers * weight).sum(-1) + bias


class TaskScores(nn.Module):
    """Per-task representations -> the logits of every task the model was built for."""

    def __init__(self, spec: FeatureSpec, tasks: Sequence[Task], config: SequenceModelConfig):
        super().__init__()
        self.outcome_names = list(spec.outcome_names) if Task.OUTCOME in tasks else []
        H = config.hidden_size
        if self.outcome_names:
            self.outcome_weight, self.outcome_bias = outcome_readout(len(self.outcome_names), H)
        # Wide & Deep: the totals' linear scores beside the network's. Without the network's own head, the
        # network's outcome weights start at zero (a random start drowned the counts on a few hundred customers);
        # with it, the head trains the network alone and both readouts keep their usual start
        self.wide = None
        if config.wide and self.outcome_names:
            self.wide = CountsLinear(spec, len(self.outcome_names), zero_numeric=True)
            if not config.wide_network_head:
                nn.init.zeros_(self.outcome_weight)
        self.network_outcome = None
        if config.wide and config.wide_network_head and self.outcome_names:
            self.network_outcome, self.network_outcome_bias = outcome_readout(len(self.outcome_names), H)
        self.next_event = nn.Linear(H, spec.event_type_vocab_size) if Task.NEXT_EVENT in tasks else None
        self.next_item = None
        if Task.NEXT_ITEM in tasks:
            item_vocab = spec.categorical_vocab_sizes[spec.item_field]  # type: ignore[index]
            self.next_item = NextItemScorer(item_vocab, H, config.next_item_scoring, config.num_sampled_negatives,
                                            config.next_item_copy)
        self.item_field = spec.item_field

    def item_history(self, states: torch.Tensor, mask: torch.Tensor, batch: SequenceBatch) -> ItemHistory | None:
        """What the next-item scorer may copy from, or None when it does not copy."""
        if self.next_item is None or self.next_item.copy is None:
            return None
        return ItemHistory(states, mask, batch.categorical[self.item_field])  # type: ignore[index]

    def forward(self, representations: Mapping[str, torch.Tensor], output: ModelOutput, batch: SequenceBatch,
                history: ItemHistory | None = None, need_weights: bool = False) -> None:
        """Fill ``output``'s logits from {task query name: (B, H)} (and the journey's items, to copy from; its
        totals, with ``wide``); with ``need_weights``, also the copied shares (``COPY_ATTENTION``)."""
        if self.outcome_names:
            u = torch.stack([representations[name] for name in self.outcome_names], dim=1)  # (B, n_outcomes, H)
            output.outcome_logits = read_outcomes(u, self.outcome_weight, self.outcome_bias)  # (B, n_outcomes)
            if self.wide is not None:
                output.outcome_logits = output.outcome_logits + self.wide(batch)
            if self.network_outcome is not None:
                output.network_outcome_logits = read_outcomes(u, self.network_outcome, self.network_outcome_bias)
        if self.next_event is not None:
            output.next_event_logits = mask_special_event_types(self.next_event(representations[NEXT_EVENT_QUERY]))
        if self.next_item is not None:
            output.next_item_logits, output.next_item_sampled_logits, copied = self.next_item(
                representations[NEXT_ITEM_QUERY], batch.next_item, history
            )
            if copied is not None and need_weights:
                output.attentions[COPY_ATTENTION] = copied


def mask_special_event_types(logits: torch.Tensor) -> torch.Tensor:
    """Next-event scores never rank padding, <bos> or <eos>: (B, V) with those columns very negative."""
    logits = logits.clone()
    logits[..., [PAD_ID, BOS_ID, EOS_ID]] = large_negative(logits.dtype)
    return logits


class TaskHeads(nn.Module):
    """Every per-customer task answered from one encoded journey: task-query attention, then scores."""

    def __init__(self, spec: FeatureSpec, tasks: Sequence[Task], config: SequenceModelConfig):
        super().__init__()
        names = task_query_names(spec, tasks)
        self.attention = TaskQueryAttention(names, config) if names else None
        self.scores = TaskScores(spec, tasks, config)

    def forward(self, encoded: EncodedSequence, batch: SequenceBatch, need_weights: bool = False) -> ModelOutput:
        output = ModelOutput(representation=encoded.summary, attentions=dict(encoded.attentions))
        if self.attention is None:
            return output
        time_gap = None
        if self.attention.recency is not None:
            time_gap = time_gap_of(batch, "asks how old each behaviour is (task_recency)")
        representations, attentions = self.attention(encoded.states, encoded.mask, need_weights, time_gap)
        output.task_representations = representations
        output.attentions.update(attentions)
        history = self.scores.item_history(encoded.states, encoded.mask, batch)
        self.scores(representations, output, batch, history, need_weights)
        return output

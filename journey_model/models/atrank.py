"""ATRank: attention-based modelling of heterogeneous customer behaviours.

Zhou et al., "ATRank: An Attention-Based User Behavior Modeling Framework for Recommendation", AAAI 2018,
arXiv:1711.06632; reference code github.com/jinze1994/ATRank (where paper and code differ, the code wins).
Reads top to bottom:

1. raw behaviour embedding — each behaviour's fields and time bucket, projected per behaviour group into H
   (:class:`~journey_model.models.embedding.BehaviourEmbedding`, shared with every baseline);
2. optional positional encoding (none in the reference: order reaches the model through time buckets only)
   and causal masking — this project's additions, compared rather than assumed (by default rotary positions, and
   the first block causal: each behaviour reads its own past first, the next block the whole journey);
3. ``num_blocks`` self-attention blocks: multi-head attention with ReLU(Linear) Q/K/V, padded keys masked,
   padded query rows zeroed, dropout on the weights, residual + LayerNorm, feed-forward H -> H/4 -> H,
   residual + LayerNorm;
4. task-query ("vanilla") attention: one learned query per task asks the encoded behaviours its question
   (:class:`~journey_model.models.heads.TaskHeads`); the output layer scores each task.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from journey_model.data.batch import SequenceBatch
from journey_model.data.features import FeatureSpec
from journey_model.models.attention import (
    ACTIVATIONS,
    MINUTE_BUCKETS,
    AttentionBlock,
    RelativeTime,
    SameItemBias,
    TypePairBias,
    gather_last,
    masked_mean,
    rotary_tables,
    rotary_time_tables,
)
from journey_model.models.base import JourneyModel, SequenceModelConfig, check_choice
from journey_model.models.embedding import (
    POSITIONAL_ENCODINGS,
    TIME_ENCODINGS,
    BehaviourEmbedding,
    PositionalEncoding,
)
from journey_model.models.heads import TaskHeads, known_items, time_gap_of
from journey_model.models.output import EncodedSequence, ModelOutput
from journey_model.models.tasks import Task


@dataclass
class ATRankConfig(SequenceModelConfig):
    """ATRank's sizes and switches: Journey's default, measured against the reference lever by lever
    (``benchmarks/bench_atrank_ablation.py``); :meth:`reference` is the reference code's architecture."""

    field_dim: int = 32  # width of each field embedding (reference: 64; the zoo's default: 32)
    hidden_size: int = 64  # H (reference: 128 for one behaviour type, 256 for several; the zoo's default: 64)
    num_heads: int = 4  # attention heads, H / num_heads dims each (reference: 8)
    num_blocks: int = 2  # stacked self-attention blocks (reference: 1)
    ffn_size: int | None = None  # inner width of the blocks' feed-forward; None = H x ffn_ratio
    ffn_ratio: float = 4.0  # feed-forward width as a multiple of H when ffn_size is None (reference: 1/4)
    dropout: float = 0.1  # attention weights (reference: 0.0 one type, 0.1 several; the blocks take attention_dropout
    # when it is set) and, with residual_dropout, the sub-layers' outputs
    layer_norm_eps: float = 1e-8  # LayerNorm epsilon (reference: 1e-8)
    relu_projections: bool = False  # Q, K, V = ReLU(Linear(x)) as in the reference code; False = plain Linear
    positional_encoding: str = "rotary"  # "none" (reference), "sinusoidal", "learned" or "rotary" (RoFormer)
    max_positions: int = 512  # longest sequence a learned positional table covers, in behaviours
    causal: bool = False  # each behaviour attends only to itself and earlier ones, in every block
    causal_blocks: int = 1  # the first N blocks attend causally, the rest see the whole journey. One: each state
    # first reads its own past (as a recurrent encoder does, which told a late fee from the rule), then the whole
    # journey (which next behaviours with sub-day rhythms need); benchmarks/results/atrank_default_v3_16epochs.json
    causal_heads: int = 0  # in the blocks that are not causal, the first N heads look back (attend causally)
    time_encoding: str = "continuous"  # "bucket": log2 days to the cut-off (reference); "continuous": seconds, log
    time_trend_scale: float = 8.0  # continuous time's trend term reads log(1 + minutes) / this (1 at ~2 days)
    linear_time: bool = False  # continuous time also reads tanh(days / 30) and tanh(days / 365): the time
    # between two behaviours becomes a difference of their codes, not a ratio that depends on their age. Off: on
    # the late-fee rule it did not help (benchmarks/results/atrank_levers_latefee_8epochs.json)
    relative_time: str = "none"  # signed time between behaviours: "none" (reference and default), "bias" (per
    # head) or "content" (bias + TiSASRec relative-time key and value embeddings). Off by default: over 3 seeds
    # the model learnt the order rule on every seed without it (0.97-1.00) and on two of three with it, at
    # about 40 % less CPU per training step (benchmarks/results/atrank_headline.json)
    rotary_time: bool = False  # rotate queries and keys by each behaviour's time too (half the rotary pairs;
    # qᵀk then depends on the time between two behaviours)
    norm_first: bool = True  # pre-norm blocks (+ a final LayerNorm); False = post-norm (reference)
    activation: str = "gelu"  # feed-forward activation: "relu" (reference) or "gelu"
    output_projection: bool = True  # mix the heads with one more Linear (Transformer); False = concatenate (reference)
    residual_dropout: bool = True  # dropout also on the attention and feed-forward outputs (reference: weights only)
    attention_dropout: float | None = 0.0  # dropout on the blocks' (T x T) attention weights; None = dropout.
    # Off: on CPU it was most of dropout's cost (B x heads x T x T random numbers a block) and bought no quality
    # over 5 seeds (benchmarks/results/atrank_levers_attention_dropout_16epochs.json)
    type_pair_bias: bool = False  # a learned per-head score bias per (behaviour type, behaviour type) pair; off:
    # on the order rule it did not help (benchmarks/results/atrank_headline.json)
    same_item_bias: bool | None = None  # a learned per-head score bias between two behaviours about the same
    # known item (zero at first); None = on when the data has an item field. Over 10 synthetic seeds, with
    # same_item_time, it raised uptake (+0.020) and the spread-views rule (+0.046) and brought the old-burst decoy
    # level with gru-bahdanau (benchmarks/results/atrank_levers_same_item_time_16epochs.json); on Taobao next item
    # over 6 seeds it was level (HR@10 −0.002, p 0.45; models_taobao_next_item_same_item_time_seeds*.json)
    same_item_time: bool = True  # the same-item bias (where it is on) also depends on the time between the two
    # behaviours (a per-head offset per log2-minute bucket of it)

    wide: bool = True  # Wide & Deep outcomes with the network's own head (SequenceModelConfig), on for ATRank
    wide_network_head: bool = True  # since 2026-12-04: on Berka's loan defaults (20 splits) 0.603 against 0.584
    # without (the bag of events: 0.620); on 10 synthetic seeds level with the default before or above
    # (benchmarks/results/berka_levers_wide_head.md, atrank_levers_wide_head_16epochs.json)

    # Fields a model saved before they existed did not have; such a model was built with these values.
    SAVED_BEFORE: ClassVar[dict[str, object]] = {
        **SequenceModelConfig.SAVED_BEFORE,
        "ffn_ratio": 0.25, "time_encoding": "bucket", "relative_time": "none", "norm_first": False,
        "time_trend_scale": 1.0, "linear_time": False, "type_pair_bias": False, "rotary_time": False,
        "activation": "relu", "output_projection": False, "residual_dropout": False, "causal_blocks": 0,
        "causal_heads": 0, "attention_dropout": None, "same_item_bias": False, "same_item_time": False,
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self, "positional_encoding", self.positional_encoding, POSITIONAL_ENCODINGS)
        check_choice(self, "time_encoding", self.time_encoding, TIME_ENCODINGS)
        check_choice(self, "relative_time", self.relative_time, ("none", "bias", "content"))
        check_choice(self, "activation", self.activation, tuple(ACTIVATIONS))
        if self.num_blocks < 1:
            raise ValueError(f"ATRankConfig.num_blocks = {self.num_blocks}; expected >= 1")
        if not 0 <= self.causal_blocks <= self.num_blocks:
            raise ValueError(f"ATRankConfig.causal_blocks = {self.causal_blocks}; expected 0 to num_blocks "
                             f"({self.num_blocks})")
        if not 0 <= self.causal_heads <= self.num_heads:
            raise ValueError(f"ATRankConfig.causal_heads = {self.causal_heads}; expected 0 to num_heads "
                             f"({self.num_heads})")
        if self.rotary_time and (self.hidden_size // self.num_heads) % 4:
            raise ValueError(f"ATRankConfig.rotary_time needs hidden_size / num_heads divisible by 4; got "
                             f"{self.hidden_size} / {self.num_heads} = {self.hidden_size // self.num_heads}")

    @property
    def ffn_width(self) -> int:
        return self.ffn_size or max(1, int(self.hidden_size * self.ffn_ratio))

    @classmethod
    def reference(cls, multi_behaviour: bool = False, **overrides: object) -> ATRankConfig:
        """The reference code's architecture: 64 per field, H = 128 (one type) or 256 (several), 8 heads, one
        block, LayerNorm eps 1e-8, dropout 0 / 0.1, Glorot-uniform embeddings. Its training (SGD at lr 1.0
        dropping to 0.1 after 336k steps, gradient clipping at global norm 5) is the ``atrank-reference``
        recipe in :mod:`journey_model.training.recipes`; its batch of 32 is ``--batch-size 32``."""
        settings: dict[str, object] = dict(
            field_dim=64,
            hidden_size=256 if multi_behaviour else 128,
            num_heads=8,
            num_blocks=1,
            ffn_size=None,
            dropout=0.1 if multi_behaviour else 0.0,
            layer_norm_eps=1e-8,
            relu_projections=True,
            positional_encoding="none",
            causal=False,
            embedding_init="glorot",
            **cls.SAVED_BEFORE,
        )
        settings.update(overrides)
        return cls(**settings)  # type: ignore[arg-type]


class ATRankEncoder(nn.Module):
    """Behaviours -> (B, T, H) contextual states: embedding, positions, self-attention blocks."""

    def __init__(self, spec: FeatureSpec, config: ATRankConfig):
        super().__init__()
        self.config = config
        H = config.hidden_size
        self.embedding = BehaviourEmbedding(spec, config.field_dim, H, config.embedding_init, config.time_encoding,
                                            config.time_trend_scale, config.linear_time)
        self.positions = PositionalEncoding(config.positional_encoding, H, config.max_positions)
        self.blocks = nn.ModuleList(
            AttentionBlock(
                H,
                config.num_heads,
                config.ffn_width,
                config.dropout,
                config.layer_norm_eps,
                relu_projections=config.relu_projections,
                output_projection=config.output_projection,
                norm_first=config.norm_first,
                activation=config.activation,
                residual_dropout=config.residual_dropout,
                attention_dropout=config.attention_dropout,
            )
            for _ in range(config.num_blocks)
        )
        # one relative-time table shared by the blocks (as T5 shares its position bias)
        self.relative_time = None
        if config.relative_time != "none":
            self.relative_time = RelativeTime(config.num_heads, H // config.num_heads,
                                              content=config.relative_time == "content")
        # one type-pair table shared by the blocks, like the relative-time one
        self.type_pair = TypePairBias(spec.event_type_vocab_size, config.num_heads) if config.type_pair_bias else None
        self.item_field = spec.item_field
        self.same_item = None
        if config.same_item_bias or (config.same_item_bias is None and spec.item_field is not None):
            if spec.item_field is None:
                raise ValueError("ATRankConfig.same_item_bias needs an item field, but the FeatureSpec has none "
                                 "(FeatureSpec.item_field is None: no categorical field was mapped as the item)")
            self.same_item = SameItemBias(config.num_heads, MINUTE_BUCKETS if config.same_item_time else 0)
        self.final_norm = nn.LayerNorm(H, eps=config.layer_norm_eps) if config.norm_first else nn.Identity()

    def forward(self, batch: SequenceBatch, need_weights: bool = False) -> EncodedSequence:
        mask = batch.mask  # (B, T)
        x = self.embedding(batch)  # (B, T, H), zero at padding
        x = self.positions(x, mask)
        relative_time = None
        if self.relative_time is not None:
            gap = time_gap_of(batch, "attends by the time between behaviours (relative_time)")
            relative_time = (self.relative_time, self.relative_time.buckets(gap, gap))
        rotary = None
        head_dim = self.config.hidden_size // self.config.num_heads
        if self.config.rotary_time:
            gap = time_gap_of(batch, "rotates attention by the time of each behaviour (rotary_time)")
            rotary = rotary_time_tables(gap, head_dim, self.config.positional_encoding == "rotary")
        elif self.config.positional_encoding == "rotary":
            rotary = rotary_tables(x.shape[1], head_dim, x.device)
        pair_bias = self.type_pair(batch.event_type, batch.event_type) if self.type_pair is not None else None
        if self.same_item is not None:
            items = batch.categorical[self.item_field]  # type: ignore[index]
            gap = time_gap_of(batch, "weighs repeats of an item by the time between them (same_item_time)") \
                if self.config.same_item_time else None
            same_item = self.same_item(items, known_items(items, mask), gap)
            pair_bias = same_item if pair_bias is None else pair_bias + same_item.dense()
        attentions: dict[str, torch.Tensor] = {}
        for i, block in enumerate(self.blocks):
            causal = self.config.causal or i < self.config.causal_blocks
            x, weights = block(x, x, key_mask=mask, query_mask=mask, causal=causal,
                               need_weights=need_weights, relative_time=relative_time, rotary=rotary,
                               score_bias=pair_bias, causal_heads=self.config.causal_heads)
            if weights is not None:
                attentions[f"self/block{i}"] = weights  # (B, heads, T, T)
        x = self.final_norm(x)
        x = x * mask[..., None].to(x.dtype)  # padded rows hold LayerNorm's bias; make them exact zeros
        # with a causal mask only the last behaviour has seen the whole journey
        summary = gather_last(x, batch.lengths) if self.config.causal else masked_mean(x, mask)
        return EncodedSequence(states=x, mask=mask, summary=summary, attentions=attentions)


class ATRank(JourneyModel):
    """ATRank encoder + task-query attention: outcomes, next event type and next item in one model."""

    supported_tasks = frozenset({Task.OUTCOME, Task.NEXT_EVENT, Task.NEXT_ITEM})
    unsupported_reasons = {
        Task.FORECAST: "ATRank has no decoder; use 'transformer' (ATRank encoder + Transformer decoder)"
    }

    def __init__(
        self,
        spec: FeatureSpec,
        config: ATRankConfig | None = None,
        tasks: Iterable[Task | str] | None = None,
        model_name: str = "atrank",
    ):
        super().__init__(spec, tasks, model_name)
        self.config = config or ATRankConfig()
        self.encoder = ATRankEncoder(spec, self.config)
        self.heads = TaskHeads(spec, self.tasks, self.config)

    def encode(self, batch: SequenceBatch, output_attentions: bool = False) -> EncodedSequence:
        return self.encoder(batch, output_attentions)

    def forward(self, batch: SequenceBatch, output_attentions: bool = False) -> ModelOutput:
        encoded = self.encode(batch, output_attentions)
        return self.heads(encoded, batch, output_attentions)

"""ATRank: attention-based modelling of heterogeneous customer behaviours.

Zhou et al., "ATRank: An Attention-Based User Behavior Modeling Framework for Recommendation", AAAI 2018,
arXiv:1711.06632; reference code github.com/jinze1994/ATRank (where paper and code differ, the code wins).
Reads top to bottom:

1. raw behaviour embedding — each behaviour's fields and time bucket, projected per behaviour group into H
   (:class:`~journey_model.models.embedding.BehaviourEmbedding`, shared with every baseline);
2. optional positional encoding (none in the reference: order reaches the model through time buckets only)
   and optional causal masking — this project's additions, to compare rather than assume;
3. ``num_blocks`` self-attention blocks: multi-head attention with ReLU(Linear) Q/K/V, padded keys masked,
   padded query rows zeroed, dropout on the weights, residual + LayerNorm, feed-forward H -> H/4 -> H,
   residual + LayerNorm;
4. task-query ("vanilla") attention: one learned query per task asks the encoded behaviours its question
   (:class:`~journey_model.models.heads.TaskHeads`); the output layer scores each task.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from journey_model.data.batch import SequenceBatch
from journey_model.data.features import FeatureSpec
from journey_model.models.attention import AttentionBlock, gather_last, masked_mean
from journey_model.models.base import JourneyModel, SequenceModelConfig, check_choice
from journey_model.models.embedding import BehaviourEmbedding, PositionalEncoding
from journey_model.models.heads import TaskHeads
from journey_model.models.output import EncodedSequence, ModelOutput
from journey_model.models.tasks import Task


@dataclass
class ATRankConfig(SequenceModelConfig):
    """ATRank's sizes and switches. Defaults are the reference's sizes; see :meth:`reference`."""

    field_dim: int = 64  # width of each field embedding (reference: 64)
    hidden_size: int = 128  # H (reference: 128 for one behaviour type, 256 for several)
    num_heads: int = 8  # attention heads, H / num_heads dims each (reference: 8)
    num_blocks: int = 1  # stacked self-attention blocks (reference: 1)
    ffn_size: int | None = None  # inner width of the blocks' feed-forward; None = H // 4 (reference)
    dropout: float = 0.0  # dropout on attention weights (reference: 0.0 one type, 0.1 several)
    layer_norm_eps: float = 1e-8  # LayerNorm epsilon (reference: 1e-8)
    relu_projections: bool = True  # Q, K, V = ReLU(Linear(x)) as in the code; False = plain Linear
    positional_encoding: str = "none"  # "none" (reference), "sinusoidal" or "learned"
    max_positions: int = 512  # longest sequence a learned positional table covers, in behaviours
    causal: bool = False  # each behaviour attends only to itself and earlier ones

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self, "positional_encoding", self.positional_encoding, ("none", "sinusoidal", "learned"))
        if self.num_blocks < 1:
            raise ValueError(f"ATRankConfig.num_blocks = {self.num_blocks}; expected >= 1")

    @property
    def ffn_width(self) -> int:
        return self.ffn_size or max(1, self.hidden_size // 4)

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
        )
        settings.update(overrides)
        return cls(**settings)  # type: ignore[arg-type]


class ATRankEncoder(nn.Module):
    """Behaviours -> (B, T, H) contextual states: embedding, positions, self-attention blocks."""

    def __init__(self, spec: FeatureSpec, config: ATRankConfig):
        super().__init__()
        self.config = config
        H = config.hidden_size
        self.embedding = BehaviourEmbedding(spec, config.field_dim, H, config.embedding_init)
        self.positions = PositionalEncoding(config.positional_encoding, H, config.max_positions)
        self.blocks = nn.ModuleList(
            AttentionBlock(
                H,
                config.num_heads,
                config.ffn_width,
                config.dropout,
                config.layer_norm_eps,
                relu_projections=config.relu_projections,
                output_projection=False,  # the reference concatenates heads without mixing them
            )
            for _ in range(config.num_blocks)
        )

    def forward(self, batch: SequenceBatch, need_weights: bool = False) -> EncodedSequence:
        mask = batch.mask  # (B, T)
        x = self.embedding(batch)  # (B, T, H), zero at padding
        x = self.positions(x, mask)
        attentions: dict[str, torch.Tensor] = {}
        for i, block in enumerate(self.blocks):
            x, weights = block(x, x, key_mask=mask, query_mask=mask, causal=self.config.causal, need_weights=need_weights)
            if weights is not None:
                attentions[f"self/block{i}"] = weights  # (B, heads, T, T)
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
        return self.heads(encoded, batch.next_item, output_attentions)

"""A Transformer decoder over an ATRank encoder: forecasts the next behaviours, and answers every task.

Vaswani et al., "Attention Is All You Need", 2017: each decoder layer runs masked (causal) self-attention over
the event types generated so far, cross-attention to the encoded journey, and a feed-forward layer, each
followed by residual + LayerNorm. The encoder is ATRank's self-attention stack
(:class:`~journey_model.models.atrank.ATRankEncoder`, Zhou et al. 2018), whose states also feed the shared
task-query heads, so this model answers outcomes, next event, next item and forecasts.

Teacher forcing decodes all K steps in one pass under the causal mask; inference re-runs the decoder on the
growing prefix (K is small), which gives the same scores at every step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from journey_model.data.batch import SequenceBatch
from journey_model.data.features import PAD_ID, FeatureSpec
from journey_model.models.atrank import ATRankConfig, ATRankEncoder
from journey_model.models.attention import FeedForward, MultiHeadAttention
from journey_model.models.base import JourneyModel
from journey_model.models.decoding import DecoderStep, teacher_forcing_inputs
from journey_model.models.embedding import sinusoidal_positions
from journey_model.models.heads import TaskHeads
from journey_model.models.output import EncodedSequence, ModelOutput
from journey_model.models.tasks import Task


@dataclass
class TransformerConfig(ATRankConfig):
    """ATRank encoder settings (inherited) plus the decoder's."""

    num_decoder_layers: int = 1  # stacked decoder layers
    decoder_ffn_size: int | None = None  # inner width of the decoder feed-forward; None = 4 H (Vaswani)
    decoder_layer_norm_eps: float = 1e-5  # LayerNorm epsilon of the decoder

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_decoder_layers < 1:
            raise ValueError(f"TransformerConfig.num_decoder_layers = {self.num_decoder_layers}; expected >= 1")


class TransformerDecoderLayer(nn.Module):
    """Causal self-attention, cross-attention to the journey, feed-forward; residual + LayerNorm after each."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        H, heads, eps = config.hidden_size, config.num_heads, config.decoder_layer_norm_eps
        self.self_attention = MultiHeadAttention(H, heads, config.dropout)
        self.self_norm = nn.LayerNorm(H, eps=eps)
        self.cross_attention = MultiHeadAttention(H, heads, config.dropout)
        self.cross_norm = nn.LayerNorm(H, eps=eps)
        self.feed_forward = FeedForward(H, config.decoder_ffn_size or 4 * H)
        self.feed_forward_norm = nn.LayerNorm(H, eps=eps)

    def forward(
        self,
        x: torch.Tensor,
        x_mask: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """x (B, K, H) generated so far, memory (B, T, H) -> (B, K, H), self (B, h, K, K), cross (B, h, K, T)."""
        attended, self_weights = self.self_attention(x, x, x_mask, x_mask, causal=True, need_weights=need_weights)
        x = self.self_norm(x + attended)
        attended, cross_weights = self.cross_attention(x, memory, memory_mask, x_mask, need_weights=need_weights)
        x = self.cross_norm(x + attended)
        x = self.feed_forward_norm(x + self.feed_forward(x))
        return x, self_weights, cross_weights


class TransformerDecoder(nn.Module):
    """Event-type tokens (B, K) + encoded journey -> next-token logits (B, K, V)."""

    def __init__(self, spec: FeatureSpec, config: TransformerConfig):
        super().__init__()
        H, V = config.hidden_size, spec.event_type_vocab_size
        self.hidden_size = H
        self.token = nn.Embedding(V, H, padding_idx=0)
        self.layers = nn.ModuleList(TransformerDecoderLayer(config) for _ in range(config.num_decoder_layers))
        self.output = nn.Linear(H, V)

    def forward(
        self, tokens: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor, need_weights: bool = False
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        B, K = tokens.shape
        token_mask = tokens != PAD_ID  # (B, K)
        x = self.token(tokens) * math.sqrt(self.hidden_size)
        x = x + sinusoidal_positions(K, self.hidden_size, x.device, x.dtype)[None]  # (B, K, H)
        attentions: dict[str, torch.Tensor] = {}
        for i, layer in enumerate(self.layers):
            x, self_weights, cross_weights = layer(x, token_mask, memory, memory_mask, need_weights)
            if need_weights:
                attentions[f"forecast/self/layer{i}"] = self_weights  # (B, heads, K, K)
                attentions[f"forecast/cross/layer{i}"] = cross_weights  # (B, heads, K, T)
        return self.output(x), attentions  # (B, K, V)


class Transformer(JourneyModel):
    """ATRank encoder + Transformer decoder, with the shared task-query heads."""

    supported_tasks = frozenset(Task)

    def __init__(
        self,
        spec: FeatureSpec,
        config: TransformerConfig | None = None,
        tasks: Iterable[Task | str] | None = None,
        model_name: str = "transformer",
    ):
        super().__init__(spec, tasks, model_name)
        self.config = config or TransformerConfig()
        self.encoder = ATRankEncoder(spec, self.config)
        self.heads = TaskHeads(spec, self.tasks, self.config)
        self.decoder = TransformerDecoder(spec, self.config) if Task.FORECAST in self.tasks else None

    def encode(self, batch: SequenceBatch, output_attentions: bool = False) -> EncodedSequence:
        return self.encoder(batch, output_attentions)

    def forward(self, batch: SequenceBatch, output_attentions: bool = False) -> ModelOutput:
        encoded = self.encode(batch, output_attentions)
        output = self.heads(encoded, batch, output_attentions)
        if self.decoder is not None and batch.forecast is not None:
            inputs = teacher_forcing_inputs(batch.forecast)  # (B, K)
            output.forecast_logits, attentions = self.decoder(inputs, encoded.states, encoded.mask, output_attentions)
            output.attentions.update(attentions)
        return output

    def start_decoding(self, batch: SequenceBatch) -> dict[str, torch.Tensor]:
        encoded = self.encode(batch)
        prefix = torch.zeros(batch.batch_size, 0, dtype=torch.long, device=batch.event_type.device)
        return {"memory": encoded.states, "memory_mask": encoded.mask, "prefix": prefix}

    def decode_step(self, tokens: torch.Tensor, state: dict[str, torch.Tensor], need_weights: bool = False) -> DecoderStep:
        prefix = torch.cat([state["prefix"], tokens[:, None]], dim=1)  # (B, t)
        logits, attentions = self.decoder(prefix, state["memory"], state["memory_mask"], need_weights)  # type: ignore[misc]
        last = {name: weights[:, :, -1] for name, weights in attentions.items() if "/cross/" in name}  # (B, heads, T)
        return DecoderStep(logits=logits[:, -1], state=dict(state, prefix=prefix), attentions=last)

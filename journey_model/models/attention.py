"""Masks, "gather the last real behaviour" and multi-head attention, written once for every model.

Like RecBole's ``get_attention_mask`` / ``gather_indexes``, the padding and causal masks live here so ATRank,
the Transformer decoder, the task-query heads and the RNN attention variants all mask the same way.

:class:`MultiHeadAttention` follows Vaswani et al. (2017) with ATRank's choices as options (Zhou et al. 2018,
reference code ``multihead_attention``): Q/K/V may be ``ReLU(Linear(x))`` and the heads may be concatenated
without an output projection. Padded keys get a very negative score; rows of padded queries (and of queries
that see no real key) are zeroed after the softmax. When nobody asks for the weights, the fused
:func:`torch.nn.functional.scaled_dot_product_attention` runs; both paths compute the same outputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def large_negative(dtype: torch.dtype) -> float:
    """A score that vanishes in a softmax without turning a fully masked row into NaN."""
    return torch.finfo(dtype).min / 2


def attention_mask(key_mask: torch.Tensor, query_len: int, causal: bool = False) -> torch.Tensor:
    """Which keys each query may see: (B, 1, Tq, Tk) bool, broadcast over heads.

    ``key_mask`` (B, Tk) is True on real keys. ``causal`` also hides keys after the query's own position
    (query i sees keys 0..i; self-attention, so Tq == Tk).
    """
    B, Tk = key_mask.shape
    allowed = key_mask[:, None, None, :].expand(B, 1, query_len, Tk)
    if causal:
        if query_len != Tk:
            raise ValueError(f"causal attention needs as many queries as keys, got {query_len} and {Tk}")
        past = torch.ones(query_len, Tk, dtype=torch.bool, device=key_mask.device).tril()
        allowed = allowed & past
    return allowed


def gather_last(states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The state at each sequence's last real position: (B, T, H) -> (B, H); zeros for empty sequences."""
    B, T, H = states.shape
    index = (lengths - 1).clamp(min=0).view(B, 1, 1).expand(B, 1, H)
    last = states.gather(1, index).squeeze(1)  # (B, H)
    return last * (lengths > 0).to(states.dtype)[:, None]


def masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real positions: (B, T, H) -> (B, H); zeros for empty sequences."""
    weights = mask.to(states.dtype)[..., None]  # (B, T, 1)
    return (states * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def masked_softmax(scores: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
    """Softmax of (B, ..., T) scores over real keys only; a row with no real key is all zeros."""
    shape = (key_mask.shape[0],) + (1,) * (scores.dim() - 2) + (key_mask.shape[1],)
    keys = key_mask.view(shape)
    weights = scores.masked_fill(~keys, large_negative(scores.dtype)).softmax(-1)
    return weights * keys.any(-1, keepdim=True).to(scores.dtype)


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    allowed: torch.Tensor,
    live_rows: torch.Tensor,
    dropout: float = 0.0,
    need_weights: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """softmax(QKᵀ/√d + mask) V with dead rows zeroed. q (B, h, Tq, d), k/v (B, h, Tk, d).

    ``allowed`` (B, 1, Tq, Tk) from :func:`attention_mask`; ``live_rows`` (B, 1, Tq, 1) is False on query
    rows whose output must be zero (padded queries, queries with no visible key). ``dropout`` is applied
    only when > 0 (pass 0 in eval). Returns the output (B, h, Tq, d) and, if asked, the weights (B, h, Tq, Tk)
    before dropout.
    """
    bias = torch.zeros(allowed.shape, dtype=q.dtype, device=q.device)
    bias = bias.masked_fill(~allowed, large_negative(q.dtype))
    live = live_rows.to(q.dtype)
    if not need_weights:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout)
        return out * live, None
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]) + bias  # (B, h, Tq, Tk)
    weights = scores.softmax(-1) * live
    out = F.dropout(weights, dropout, training=dropout > 0) @ v
    return out, weights


class MultiHeadAttention(nn.Module):
    """Queries attend to a memory in ``num_heads`` subspaces (ATRank §3.3: several latent semantic spaces)."""

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        dropout: float = 0.0,
        relu_projections: bool = False,
        output_projection: bool = True,
    ):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.dropout = dropout
        self.relu_projections = relu_projections  # ATRank: Q, K, V = ReLU(Linear(x))
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        # ATRank concatenates the heads and stops; the Transformer mixes them with one more Linear
        self.output = nn.Linear(hidden_size, hidden_size) if output_projection else nn.Identity()

    def _split_heads(self, linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        B, T, H = x.shape
        x = linear(x)
        if self.relu_projections:
            x = F.relu(x)
        return x.view(B, T, self.num_heads, H // self.num_heads).transpose(1, 2)  # (B, heads, T, d)

    def forward(
        self,
        query: torch.Tensor,
        memory: torch.Tensor,
        key_mask: torch.Tensor,
        query_mask: torch.Tensor | None = None,
        causal: bool = False,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """query (B, Tq, H) attends to memory (B, Tk, H) -> (B, Tq, H) and weights (B, heads, Tq, Tk) or None."""
        B, Tq, H = query.shape
        q = self._split_heads(self.query, query)  # (B, heads, Tq, d)
        k = self._split_heads(self.key, memory)  # (B, heads, Tk, d)
        v = self._split_heads(self.value, memory)  # (B, heads, Tk, d)
        allowed = attention_mask(key_mask, Tq, causal)  # (B, 1, Tq, Tk)
        live_rows = allowed.any(-1, keepdim=True)  # (B, 1, Tq, 1)
        if query_mask is not None:
            live_rows = live_rows & query_mask[:, None, :, None]
        dropout = self.dropout if self.training else 0.0
        out, weights = scaled_dot_product_attention(q, k, v, allowed, live_rows, dropout, need_weights)
        out = out.transpose(1, 2).reshape(B, Tq, H)  # heads concatenated
        return self.output(out), weights


class FeedForward(nn.Module):
    """Position-wise Linear -> ReLU -> Linear (ATRank: H -> H/4 -> H, kernel-1 convolutions in the code)."""

    def __init__(self, hidden_size: int, inner_size: int):
        super().__init__()
        self.inner = nn.Linear(hidden_size, inner_size)
        self.outer = nn.Linear(inner_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.outer(F.relu(self.inner(x)))


class AttentionBlock(nn.Module):
    """Attention, residual + LayerNorm, feed-forward, residual + LayerNorm (post-norm, as ATRank and Vaswani)."""

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        ffn_size: int,
        dropout: float = 0.0,
        layer_norm_eps: float = 1e-5,
        relu_projections: bool = False,
        output_projection: bool = True,
    ):
        super().__init__()
        self.attention = MultiHeadAttention(hidden_size, num_heads, dropout, relu_projections, output_projection)
        self.attention_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.feed_forward = FeedForward(hidden_size, ffn_size)
        self.feed_forward_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)

    def forward(
        self,
        query: torch.Tensor,
        memory: torch.Tensor,
        key_mask: torch.Tensor,
        query_mask: torch.Tensor | None = None,
        causal: bool = False,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attended, weights = self.attention(query, memory, key_mask, query_mask, causal, need_weights)
        x = self.attention_norm(query + attended)
        x = self.feed_forward_norm(x + self.feed_forward(x))
        return x, weights

"""Masks, "gather the last real behaviour" and multi-head attention, written once for every model.

Like RecBole's ``get_attention_mask`` / ``gather_indexes``, the padding and causal masks live here so ATRank,
the Transformer decoder, the task-query heads and the RNN attention variants all mask the same way.

:class:`MultiHeadAttention` follows Vaswani et al. (2017) with ATRank's choices as options (Zhou et al. 2018,
reference code ``multihead_attention``): Q/K/V may be ``ReLU(Linear(x))`` and the heads may be concatenated
without an output projection. Padded keys get a very negative score; rows of padded queries (and of queries
that see no real key) are zeroed after the softmax. When nobody asks for the weights, the fused
:func:`torch.nn.functional.scaled_dot_product_attention` runs; both paths compute the same outputs. A score bias
on a few pairs (:class:`PairBias`, e.g. the same-item bias) stays on the fused CPU kernel: the pairs are corrected
from its log-sum-exp, forward and backward, without a (B, heads, T, T) tensor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable


def large_negative(dtype: torch.dtype) -> float:
    """A score that vanishes in a softmax without turning a fully masked row into NaN."""
    return torch.finfo(dtype).min / 2


def attention_mask(key_mask: torch.Tensor, query_len: int, causal: bool = False, causal_heads: int = 0,
                   num_heads: int = 1) -> torch.Tensor:
    """Which keys each query may see: (B, 1, Tq, Tk) bool, broadcast over heads.

    ``key_mask`` (B, Tk) is True on real keys. ``causal`` also hides keys after the query's own position
    (query i sees keys 0..i; self-attention, so Tq == Tk). ``causal_heads`` (when not ``causal``) does so for the
    first ``causal_heads`` of ``num_heads`` heads only, which look back while the others see the whole
    sequence; the mask is then (B, num_heads, Tq, Tk).
    """
    B, Tk = key_mask.shape
    allowed = key_mask[:, None, None, :].expand(B, 1, query_len, Tk)
    if causal or causal_heads:
        if query_len != Tk:
            raise ValueError(f"causal attention needs as many queries as keys, got {query_len} and {Tk}")
        past = torch.ones(query_len, Tk, dtype=torch.bool, device=key_mask.device).tril()
        if not causal:  # (heads, Tq, Tk): the causal heads see the past, the others everything
            looks_back = torch.arange(num_heads, device=key_mask.device) < causal_heads
            past = past | ~looks_back[:, None, None]
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


@dataclass(frozen=True)
class PairBias:
    """A per-head score bias on a few (journey, query, key) pairs, zero elsewhere (e.g. :class:`SameItemBias`):
    (P,) indices ``batch``, ``query``, ``key`` and (P, heads) ``values``, of a (B, heads, Tq, Tk) bias."""

    batch: torch.Tensor
    query: torch.Tensor
    key: torch.Tensor
    values: torch.Tensor
    shape: tuple[int, int, int, int]  # (B, heads, Tq, Tk)

    def dense(self) -> torch.Tensor:
        """The (B, heads, Tq, Tk) bias."""
        B, heads, Tq, Tk = self.shape
        per_pair = self.values.new_zeros(B, Tq, Tk, heads)
        per_pair = per_pair.index_put((self.batch, self.query, self.key), self.values)
        return per_pair.permute(0, 3, 1, 2)


def dense_bias(bias: torch.Tensor | PairBias) -> torch.Tensor:
    """A score bias as a (broadcastable) dense tensor."""
    return bias.dense() if isinstance(bias, PairBias) else bias


def _rows(x: torch.Tensor) -> torch.Tensor:
    """(B, h, T, ...) -> (B·T, h, ...): one row per (journey, position), for gathers at the pairs."""
    return x.transpose(1, 2).reshape(x.shape[0] * x.shape[2], *x.shape[1:2], *x.shape[3:])


def _add_rows(target: torch.Tensor, rows: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """target (B, h, T, ...) + the (P, h, ...) values added at the flat rows (journey·T + position)."""
    B, T = target.shape[0], target.shape[2]
    added = values.new_zeros(B * T, *values.shape[1:]).index_add_(0, rows, values)
    return target + added.view(B, T, *values.shape[1:]).transpose(1, 2)


class _PairBiasedFlashAttention(torch.autograd.Function):
    """softmax(QKᵀ·scale + mask + pair bias) V through torch's fused CPU kernel, exactly, with no (B, h, Tq, Tk)
    tensor: the kernel attends with the mask alone, and the few biased pairs are corrected from its log-sum-exp.

    With w_ij = p⁰_ij (e^{b_ij} − 1) on the pairs (p⁰ the unbiased weights), a row's output is
    (o⁰_i + Σ_j w_ij v_j) / (1 + Σ_j w_ij) and its log-sum-exp L⁰_i + log(1 + Σ_j w_ij). The kernel's backward,
    given that output and log-sum-exp, is right on every unbiased pair and off by the factor e^{-b} on the biased
    ones, whose share of dQ, dK and dV is added here, with the bias's own gradient p_ij (dO_i·v_j − dO_i·o_i).
    Pairs are (P,) flat rows ``query_rows`` (journey·Tq + query) and ``key_rows`` (journey·Tk + key)."""

    @staticmethod
    def forward(ctx, q, k, v, mask, query_rows, key_rows, values, open_pairs):  # noqa: ANN001, ANN205
        scale = q.shape[-1] ** -0.5
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False, attn_mask=mask,
                                                                               scale=scale)
        q_i, k_j, v_j = _rows(q)[query_rows], _rows(k)[key_rows], _rows(v)[key_rows]  # (P, h, d) each
        extra = _pair_weights(q_i, k_j, _rows(lse)[query_rows], open_pairs, scale) * torch.expm1(values)  # (P, h)
        total = _add_rows(torch.ones_like(lse)[..., None], query_rows, extra[..., None])[..., 0]  # (B, h, Tq)
        out = _add_rows(out, query_rows, extra[..., None] * v_j) / total[..., None]
        lse = lse + total.log()
        ctx.save_for_backward(q, k, v, mask, out, lse, query_rows, key_rows, values, open_pairs)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):  # noqa: ANN001, ANN205
        q, k, v, mask, out, lse, query_rows, key_rows, values, open_pairs = ctx.saved_tensors
        scale = q.shape[-1] ** -0.5
        grad_out = grad_out.contiguous()
        dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            grad_out, q, k, v, out, lse, 0.0, False, attn_mask=mask, scale=scale)
        q_i, k_j, v_j = _rows(q)[query_rows], _rows(k)[key_rows], _rows(v)[key_rows]
        seen = _pair_weights(q_i, k_j, _rows(lse)[query_rows], open_pairs, scale)  # the kernel's weight, e^{-b} p
        missing = seen * torch.expm1(values)  # (P, h): the true weight p minus the kernel's
        grad_i = _rows(grad_out)[query_rows]  # (P, h, d)
        score_grad = (grad_i * (v_j - _rows(out)[query_rows])).sum(-1)  # (P, h): dP - D
        extra = (missing * score_grad)[..., None] * scale
        dq = _add_rows(dq, query_rows, extra * k_j)
        dk = _add_rows(dk, key_rows, extra * q_i)
        dv = _add_rows(dv, key_rows, missing[..., None] * grad_i)
        grad_values = seen * torch.exp(values) * score_grad  # p (dP - D): the score's gradient on the pair
        return dq, dk, dv, None, None, None, grad_values, None


def _pair_weights(q_i: torch.Tensor, k_j: torch.Tensor, lse_i: torch.Tensor, open_pairs: torch.Tensor,
                  scale: float) -> torch.Tensor:
    """(P, h) exp(q_i·k_j·scale − lse_i) on the pairs the mask lets through, 0 on the others."""
    logits = (q_i * k_j).sum(-1) * scale - lse_i
    return torch.where(open_pairs, logits, torch.full_like(logits, -math.inf)).exp()


def pair_biased_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor,
                          bias: PairBias) -> torch.Tensor:
    """softmax(QKᵀ/√d + bias + mask) V for a :class:`PairBias`, in the fused CPU kernel's time and memory."""
    zero = torch.zeros((), dtype=q.dtype, device=q.device)
    mask = torch.where(allowed, zero, torch.tensor(large_negative(q.dtype), dtype=q.dtype, device=q.device))
    open_pairs = allowed[bias.batch, :, bias.query, bias.key].expand(-1, q.shape[1])  # (P, h)
    query_rows, key_rows = bias.batch * q.shape[2] + bias.query, bias.batch * k.shape[2] + bias.key
    return _PairBiasedFlashAttention.apply(q.contiguous(), k.contiguous(), v.contiguous(), mask, query_rows,
                                           key_rows, bias.values.to(q.dtype), open_pairs)


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    allowed: torch.Tensor,
    live_rows: torch.Tensor,
    dropout: float = 0.0,
    need_weights: bool = False,
    score_bias: torch.Tensor | PairBias | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """softmax(QKᵀ/√d + bias + mask) V with dead rows zeroed. q (B, h, Tq, d), k/v (B, h, Tk, d).

    ``allowed`` (B, 1, Tq, Tk) from :func:`attention_mask`; ``live_rows`` (B, 1, Tq, 1) is False on query
    rows whose output must be zero (padded queries, queries with no visible key). ``dropout`` is applied
    only when > 0 (pass 0 in eval). ``score_bias`` (broadcastable to (B, h, Tq, Tk), or a :class:`PairBias`) is added to the scores
    before the softmax, e.g. a learned bias of the time between query and key. Returns the output (B, h, Tq, d) and, if asked, the weights (B, h, Tq, Tk)
    before dropout.
    """
    hidden = large_negative(q.dtype)
    live = live_rows.to(q.dtype)
    if isinstance(score_bias, PairBias):
        if not need_weights and dropout == 0 and q.device.type == "cpu" and q.dtype in (torch.float32, torch.float64):
            return pair_biased_attention(q, k, v, allowed, score_bias) * live, None
        score_bias = score_bias.dense()
    # on CPU a learned bias needs its gradient, which the fused kernel does not give: torch then takes its own
    # explicit path, whose safe softmax also scans the (B, h, Tq, Tk) scores for fully masked rows (dead rows are
    # zeroed here instead), so the explicit path below is taken for it directly; CUDA's memory-efficient kernel
    # gives the bias its gradient, so there the fused call stays
    learned_on_cpu = score_bias is not None and score_bias.requires_grad and q.device.type == "cpu"
    if not need_weights and not learned_on_cpu:
        zero = torch.zeros((), dtype=q.dtype, device=q.device)
        bias = zero if score_bias is None else score_bias.to(q.dtype)
        mask = torch.where(allowed, bias, torch.tensor(hidden, dtype=q.dtype, device=q.device))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        return out * live, None
    # scale the (B, h, Tq, d) queries rather than the (B, h, Tq, Tk) scores
    scores = (q / math.sqrt(q.shape[-1])) @ k.transpose(-2, -1)  # (B, h, Tq, Tk)
    if score_bias is not None:
        scores = scores + score_bias.to(q.dtype)
    weights = scores.masked_fill_(~allowed, hidden).softmax(-1)
    # dead rows are zeroed on the (B, h, Tq, d) output, a T/d-th of the weights' size
    out = (F.dropout(weights, dropout, training=dropout > 0) @ v) * live
    return out, (weights * live if need_weights else None)


def rotary_tables(length: int, head_dim: int, device: torch.device, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin), each (length, head_dim), of rotary position embeddings (Su et al. 2021, RoFormer)."""
    if head_dim % 2:
        raise ValueError(f"rotary positions need an even head width, got {head_dim}")
    angles = _position_angles(length, head_dim // 2, device, base)  # (T, d/2)
    angles = torch.cat([angles, angles], dim=-1)  # (T, d)
    return angles.cos(), angles.sin()


def _position_angles(length: int, pairs: int, device: torch.device, base: float) -> torch.Tensor:
    """(length, pairs) rotation angles of positions 0..length-1 at RoFormer's frequencies base^(-2i / 2·pairs)."""
    frequency = base ** (-torch.arange(0, 2 * pairs, 2, device=device, dtype=torch.float32) / (2 * pairs))
    return torch.arange(length, device=device, dtype=torch.float32)[:, None] * frequency


SECONDS_PER_DAY = 86400.0
ROTARY_TIME_PERIODS_DAYS = (1 / 24, 365.0)  # shortest and longest period of the time rotations [days]


def rotary_time_tables(
    time_gap: torch.Tensor, head_dim: int, positions: bool = True, base: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin), each (B, 1, T, head_dim), that rotate queries and keys by each behaviour's TIME (and position).

    ``time_gap`` (B, T) is seconds to the cut-off. Half of the rotation frequencies turn with the time, at periods
    spread geometrically from an hour to a year, so that qᵀk depends on the time BETWEEN two behaviours (the
    rotary counterpart of a relative-time bias, at no T² cost); with ``positions`` the other half turn with
    the position as in :func:`rotary_tables` (fewer frequencies over the same range), else the time has them all."""
    if head_dim % 4:
        raise ValueError(f"rotary time needs a head width divisible by 4, got {head_dim}")
    device = time_gap.device
    pairs = head_dim // 2
    n_time = pairs // 2 if positions else pairs
    shortest, longest = ROTARY_TIME_PERIODS_DAYS
    periods = shortest * (longest / shortest) ** torch.linspace(0.0, 1.0, n_time, device=device)
    days = -time_gap.float() / SECONDS_PER_DAY  # (B, T): later behaviours have larger "times"
    angles = days[..., None] * (2 * torch.pi / periods)  # (B, T, n_time)
    if positions:
        steps = _position_angles(time_gap.shape[1], pairs - n_time, device, base)  # (T, pairs - n_time)
        angles = torch.cat([steps.expand(time_gap.shape[0], -1, -1), angles], dim=-1)  # (B, T, pairs)
    angles = torch.cat([angles, angles], dim=-1)[:, None]  # (B, 1, T, head_dim)
    return angles.cos(), angles.sin()


def rotate(x: torch.Tensor, tables: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """x (B, heads, T, d) rotated by its position: then qᵀk depends on the two contents AND their offset."""
    cos, sin = tables
    half = x.shape[-1] // 2
    turned = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos.to(x.dtype) + turned * sin.to(x.dtype)


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
        relative_time: tuple[RelativeTime, torch.Tensor] | None = None,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
        score_bias: torch.Tensor | PairBias | None = None,
        causal_heads: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """query (B, Tq, H) attends to memory (B, Tk, H) -> (B, Tq, H) and weights (B, heads, Tq, Tk) or None.

        ``relative_time``: a :class:`RelativeTime` and its (B, Tq, Tk) bucket ids (self-attention); ``rotary``
        (cos, sin) tables of :func:`rotary_tables` or :func:`rotary_time_tables` rotate queries and keys by their
        positions or times (self-attention);
        ``score_bias`` (B, heads, Tq, Tk) or a :class:`PairBias` is added to the scores (e.g. :class:`TypePairBias`,
        :class:`SameItemBias`); ``causal_heads``:
        see :func:`attention_mask`."""
        B, Tq, H = query.shape
        q = self._split_heads(self.query, query)  # (B, heads, Tq, d)
        k = self._split_heads(self.key, memory)  # (B, heads, Tk, d)
        if rotary is not None:
            q, k = rotate(q, rotary), rotate(k, rotary)
        v = self._split_heads(self.value, memory)  # (B, heads, Tk, d)
        allowed = attention_mask(key_mask, Tq, causal, causal_heads, self.num_heads)  # (B, 1 or heads, Tq, Tk)
        live_rows = allowed.any(-1, keepdim=True)  # (B, 1 or heads, Tq, 1)
        if query_mask is not None:
            live_rows = live_rows & query_mask[:, None, :, None]
        dropout = self.dropout if self.training else 0.0
        if relative_time is None:
            out, weights = scaled_dot_product_attention(q, k, v, allowed, live_rows, dropout, need_weights,
                                                        score_bias)
        else:
            relative, ids = relative_time
            with_values = relative.values is not None  # the value term needs the weights themselves
            bias = relative.score_bias(q, ids)
            bias = bias if score_bias is None else bias + dense_bias(score_bias)
            out, weights = scaled_dot_product_attention(q, k, v, allowed, live_rows, dropout,
                                                        need_weights or with_values, bias)
            if with_values:
                out = out + relative.value_term(weights, ids)  # type: ignore[arg-type]
            weights = weights if need_weights else None
        out = out.transpose(1, 2).reshape(B, Tq, H)  # heads concatenated
        return self.output(out), weights


ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


class FeedForward(nn.Module):
    """Position-wise Linear -> ReLU (or GELU) -> Linear (ATRank: H -> H/4 -> H, kernel-1 convolutions in the code)."""

    def __init__(self, hidden_size: int, inner_size: int, activation: str = "relu", dropout: float = 0.0):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation = {activation!r}; expected one of {sorted(ACTIVATIONS)}")
        self.inner = nn.Linear(hidden_size, inner_size)
        self.outer = nn.Linear(inner_size, hidden_size)
        self.activation = ACTIVATIONS[activation]
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.outer(self.activation(self.inner(x))))


class AttentionBlock(nn.Module):
    """Attention and feed-forward, each with a residual and a LayerNorm.

    Post-norm (ATRank, Vaswani et al.): ``x = LN(x + attend(x)); x = LN(x + ffn(x))``. Pre-norm
    (``norm_first``, as GPT-2 / SASRec's successors; deeper stacks train without warm-up tricks):
    ``x = x + attend(LN(x)); x = x + ffn(LN(x))`` — the encoder then needs one final LayerNorm.
    ``dropout`` drops attention weights (``attention_dropout`` instead, when given) and, with ``residual_dropout``,
    the sub-layers' outputs.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        ffn_size: int,
        dropout: float = 0.0,
        layer_norm_eps: float = 1e-5,
        relu_projections: bool = False,
        output_projection: bool = True,
        norm_first: bool = False,
        activation: str = "relu",
        residual_dropout: bool = False,
        attention_dropout: float | None = None,
    ):
        super().__init__()
        self.norm_first = norm_first
        weights_dropout = dropout if attention_dropout is None else attention_dropout
        self.attention = MultiHeadAttention(hidden_size, num_heads, weights_dropout, relu_projections,
                                            output_projection)
        self.attention_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.feed_forward = FeedForward(hidden_size, ffn_size, activation, dropout if residual_dropout else 0.0)
        self.feed_forward_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.attention_dropout = nn.Dropout(dropout if residual_dropout else 0.0)

    def forward(
        self,
        query: torch.Tensor,
        memory: torch.Tensor,
        key_mask: torch.Tensor,
        query_mask: torch.Tensor | None = None,
        causal: bool = False,
        need_weights: bool = False,
        relative_time: tuple[RelativeTime, torch.Tensor] | None = None,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
        score_bias: torch.Tensor | PairBias | None = None,
        causal_heads: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.norm_first:
            normed = self.attention_norm(query)
            memory = normed if memory is query else memory  # self-attention reads the normed states
            attended, weights = self.attention(normed, memory, key_mask, query_mask, causal, need_weights,
                                               relative_time, rotary, score_bias, causal_heads)
            x = query + self.attention_dropout(attended)
            return x + self.feed_forward(self.feed_forward_norm(x)), weights
        attended, weights = self.attention(query, memory, key_mask, query_mask, causal, need_weights,
                                           relative_time, rotary, score_bias, causal_heads)
        x = self.attention_norm(query + self.attention_dropout(attended))
        x = self.feed_forward_norm(x + self.feed_forward(x))
        return x, weights


MINUTE_BUCKETS = 20  # log2-minute buckets of a time: under a minute, ..., a year and more


def minute_buckets(seconds: torch.Tensor, num_buckets: int) -> torch.Tensor:
    """``floor(log2(1 + |seconds| / 1 minute))`` capped at ``num_buckets - 1``: 0 for under a minute, 19 for a
    year and more with 20 buckets (T5's log buckets, over time)."""
    return torch.floor(torch.log2(1.0 + seconds.abs() / 60.0)).long().clamp(max=num_buckets - 1)


class TypePairBias(nn.Module):
    """A learned per-head score bias for each (query behaviour type, key behaviour type) pair.

    ATRank's behaviours are heterogeneous; which earlier behaviour matters to a fee is a question of types first
    (a complaint, not one of a hundred logins). Content attention has to find such a pair through the
    projections, with the planted key holding 1 % of a uniform start's weight, and on the synthetic bank it
    did so on some seeds only; a bias per type pair (zero at first) gets its gradient directly. Scores are
    formed per key type, (B, heads, Tq, V), and gathered once, as :class:`RelativeTime` does per bucket.
    """

    def __init__(self, num_types: int, num_heads: int):
        super().__init__()
        self.table = nn.Parameter(torch.zeros(num_heads, num_types, num_types))  # heads x query type x key type

    def forward(self, query_types: torch.Tensor, key_types: torch.Tensor) -> torch.Tensor:
        """(B, Tq) and (B, Tk) event-type ids -> (B, heads, Tq, Tk) score bias."""
        per_key_type = self.table[:, query_types].permute(1, 0, 2, 3)  # (B, heads, Tq, V)
        index = key_types[:, None, None, :].expand(-1, per_key_type.shape[1], query_types.shape[1], -1)
        return per_key_type.gather(-1, index)


class SameItemBias(nn.Module):
    """A learned per-head score bias between two behaviours about the same item (payee, merchant, product).

    "Three views of one product" and "views of three products" differ only in whether the items repeat; content
    attention must find that through the item embeddings' dot products, and on the synthetic bank the decoys both
    models ranked highest were of the second kind. A bias on the pair's equality (zero at first) gives each
    behaviour a direct way to gather the others about its own item. Padding and unknown items never match, and
    a behaviour does not match itself (a journey of distinct items is scored as without the bias).

    With ``num_buckets``, the bias also depends on the time between the two behaviours: a per-head offset for
    each log2-minute bucket of ``|Δt|`` (:func:`minute_buckets`; zero at first) is added to the head's weight, so
    that "viewed again the same day" and "viewed again five months later" can weigh differently.
    """

    def __init__(self, num_heads: int, num_buckets: int = 0):
        super().__init__()
        self.num_buckets = num_buckets
        self.weight = nn.Parameter(torch.zeros(num_heads))
        self.by_time = nn.Parameter(torch.zeros(num_buckets, num_heads)) if num_buckets else None  # buckets x heads

    def forward(self, items: torch.Tensor, known: torch.Tensor, gap: torch.Tensor | None = None) -> PairBias:
        """(B, T) item ids, (B, T) True where the item is a known one and, with time buckets, (B, T) seconds
        before the cut-off -> the score bias of the matching pairs (a few per journey), zero elsewhere."""
        same = (items[:, :, None] == items[:, None, :]) & known[:, :, None] & known[:, None, :]  # (B, T, T)
        same &= ~torch.eye(items.shape[1], dtype=torch.bool, device=items.device)
        b, i, j = same.nonzero(as_tuple=True)  # (P,) each
        heads = self.weight.shape[0]
        if self.by_time is None:
            values = self.weight.expand(b.shape[0], heads)
        elif gap is None:
            raise ValueError("SameItemBias with time buckets needs the behaviours' time_gap; got None")
        else:
            values = (self.weight + self.by_time)[minute_buckets(gap[b, i] - gap[b, j], self.num_buckets)]
        B, T = items.shape
        return PairBias(b, i, j, values, (B, heads, T, T))


class RelativeTime(nn.Module):
    """The signed time between two behaviours in self-attention: a per-head score bias and, with ``content``,
    TiSASRec's relative-time key and value embeddings (Li et al., WSDM 2020; Shaw et al. 2018 for positions).

    Like T5's relative-position buckets, over time and signed (earlier / later): bucket
    ``1 + floor(log2(1 + |Δt| / 1 minute))`` capped at ``num_buckets``, on the side of the key's sign. Events at
    the same time keep their order through the position: an earlier position counts as earlier. With content,
    query i scores key j by ``q_i·(k_j + r_ij)`` and reads ``v_j + r'_ij``: a fee's state then carries "a
    complaint, 3 days EARLIER" — the order of the two is in the content the task query reads, which a bias of
    the time to the cut-off (ATRank's buckets) cannot give.
    """

    def __init__(self, num_heads: int, head_dim: int, num_buckets: int = MINUTE_BUCKETS, content: bool = True):
        super().__init__()
        self.num_buckets = num_buckets
        size = 2 * num_buckets + 1  # the middle one is "itself"
        self.bias = nn.Embedding(size, num_heads)
        nn.init.zeros_(self.bias.weight)
        self.keys = nn.Embedding(size, head_dim) if content else None
        self.values = nn.Embedding(size, head_dim) if content else None
        for table in (self.keys, self.values):
            if table is not None:
                nn.init.normal_(table.weight, std=0.02)

    def buckets(self, query_gap: torch.Tensor, key_gap: torch.Tensor) -> torch.Tensor:
        """(B, Tq) and (B, Tk) seconds before the cut-off -> (B, Tq, Tk) bucket ids; the middle one = same event."""
        delta = query_gap[:, :, None] - key_gap[:, None, :]  # (B, Tq, Tk) > 0: the key is later than the query
        size = minute_buckets(delta, self.num_buckets) + 1
        Tq, Tk = query_gap.shape[1], key_gap.shape[1]
        order = torch.arange(Tk, device=delta.device)[None, :] - torch.arange(Tq, device=delta.device)[:, None]
        sign = torch.where(delta != 0, torch.sign(delta), torch.sign(order).to(delta.dtype)[None]).long()
        return self.num_buckets + sign * size  # sign 0 (the query itself) -> the middle bucket

    def score_bias(self, q: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """q (B, heads, T, d), ids (B, T, T) -> (B, heads, T, T): the head's bias (+ q·r_ij with content).

        Scores are formed per bucket first, (B, heads, T, buckets), then gathered once: an embedding lookup of
        the (B, T, T) ids would cost a dense embedding backward over B·T² rows."""
        per_bucket = self.bias.weight.T.to(q.dtype)[None, :, None, :]  # (1, heads, 1, buckets)
        if self.keys is not None:
            per_bucket = per_bucket + q @ self.keys.weight.T.to(q.dtype) / math.sqrt(q.shape[-1])
        else:
            per_bucket = per_bucket.expand(q.shape[0], -1, q.shape[2], -1)
        return per_bucket.gather(-1, ids[:, None].expand(-1, q.shape[1], -1, -1))

    def value_term(self, weights: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """weights (B, heads, T, T), ids (B, T, T) -> (B, heads, T, d) = sum_j w_ij r'_ij."""
        assert self.values is not None
        per_bucket = weights.new_zeros(*weights.shape[:-1], self.values.num_embeddings)
        per_bucket.scatter_add_(-1, ids[:, None].expand_as(weights), weights)  # attention mass per time bucket
        return per_bucket @ self.values.weight.to(weights.dtype)

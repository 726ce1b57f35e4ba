"""Step-by-step forecasting of the next behaviours: teacher forcing, greedy decoding, beam search.

Every forecasting model (the RNN encoder-decoders, the Transformer decoder, the Markov chain) exposes one
step: ``start_decoding(batch) -> state`` and ``decode_step(tokens, state) -> DecoderStep``. The state is a
dict of batch-first tensors, so beam search reorders it with ``index_select`` on dim 0 and never needs to
know what is inside. Decoding starts from ``<bos>`` and a sequence ends at ``<eos>``; after it every step is
padding. Scores are total log-probabilities under the model's softmax over the whole vocabulary; padding,
``<oov>`` and ``<bos>`` are never emitted. Beam search keeps no length normalisation, so width 1 is greedy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch

from journey_model.data.batch import SequenceBatch
from journey_model.data.features import BOS_ID, EOS_ID, OOV_ID, PAD_ID
from journey_model.models.output import ForecastResult

NEVER_EMITTED = (PAD_ID, OOV_ID, BOS_ID)


@dataclass
class DecoderStep:
    """One decoding step's result."""

    logits: torch.Tensor  # (B, V) scores of the next event type
    state: dict[str, torch.Tensor]  # the state after this step, batch-first tensors
    attentions: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (B, ...) this step's weights


class Decoder(Protocol):
    """What decoding needs of a model (every forecasting :class:`~journey_model.models.base.JourneyModel`)."""

    def start_decoding(self, batch: SequenceBatch) -> dict[str, torch.Tensor]: ...

    def decode_step(self, tokens: torch.Tensor, state: dict[str, torch.Tensor],
                    need_weights: bool = False) -> DecoderStep: ...


def teacher_forcing_inputs(targets: torch.Tensor) -> torch.Tensor:
    """Decoder inputs for (B, K) targets: <bos> then the targets shifted right by one."""
    bos = torch.full_like(targets[:, :1], BOS_ID)
    return torch.cat([bos, targets[:, :-1]], dim=1)


def step_log_probs(logits: torch.Tensor) -> torch.Tensor:
    """Log-probabilities of the next token, with tokens that are never emitted set to -inf."""
    log_probs = logits.float().log_softmax(-1)
    log_probs[:, list(NEVER_EMITTED)] = float("-inf")
    return log_probs


def _pad_steps(weights: torch.Tensor, steps: int) -> torch.Tensor:
    """(B, done, ...) -> (B, steps, ...) with zeros for the steps decoding stopped before."""
    missing = steps - weights.shape[1]
    if missing <= 0:
        return weights
    return torch.cat([weights, weights.new_zeros(weights.shape[0], missing, *weights.shape[2:])], dim=1)


def _stack_attentions(per_step: list[dict[str, torch.Tensor]], steps: int) -> dict[str, torch.Tensor]:
    if not per_step or not per_step[0]:
        return {}
    return {name: _pad_steps(torch.stack([s[name] for s in per_step], dim=1), steps) for name in per_step[0]}


def greedy_decode(
    model: Decoder, batch: SequenceBatch, steps: int, output_attentions: bool = False
) -> ForecastResult:
    """Pick the most probable next event type at every step until <eos> or ``steps``."""
    B = batch.batch_size
    device = batch.event_type.device
    state = model.start_decoding(batch)
    tokens = torch.full((B,), BOS_ID, dtype=torch.long, device=device)
    out = torch.zeros(B, steps, dtype=torch.long, device=device)
    scores = torch.zeros(B, device=device)
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    attentions: list[dict[str, torch.Tensor]] = []
    for step in range(steps):
        result = model.decode_step(tokens, state, output_attentions)
        best_score, best = step_log_probs(result.logits).max(-1)  # (B,), (B,)
        best = best.masked_fill(finished, PAD_ID)
        scores = scores + best_score.masked_fill(finished, 0.0)
        out[:, step] = best
        finished = finished | (best == EOS_ID)
        tokens, state = best, result.state
        attentions.append(result.attentions)
        if finished.all():
            break
    stacked = _stack_attentions(attentions, steps)
    return ForecastResult(tokens=out, scores=scores, finished=finished, attentions=stacked)


def beam_search(
    model: Decoder, batch: SequenceBatch, steps: int, beam_size: int, output_attentions: bool = False
) -> ForecastResult:
    """Keep the ``beam_size`` most probable partial forecasts per customer; return the best one and all beams.

    A beam that has emitted <eos> is finished: it continues only with padding at no cost, so its score is
    final and it keeps its slot while it stays among the best.
    """
    if beam_size < 1:
        raise ValueError(f"beam_search: beam_size must be >= 1, got {beam_size}")
    B, W = batch.batch_size, beam_size
    device = batch.event_type.device
    state = model.start_decoding(batch)
    state = {name: value.repeat_interleave(W, dim=0) for name, value in state.items()}  # (B * W, ...)
    tokens = torch.full((B * W,), BOS_ID, dtype=torch.long, device=device)
    beam_scores = torch.full((B, W), float("-inf"), device=device)
    beam_scores[:, 0] = 0.0  # all beams start identical: expand only the first
    finished = torch.zeros(B, W, dtype=torch.bool, device=device)
    history = torch.zeros(B, W, 0, dtype=torch.long, device=device)
    attention_history: dict[str, torch.Tensor] = {}
    batch_offset = (torch.arange(B, device=device) * W)[:, None]  # (B, 1)
    for _ in range(steps):
        result = model.decode_step(tokens, state, output_attentions)
        log_probs = step_log_probs(result.logits)
        V = log_probs.shape[-1]
        log_probs = log_probs.view(B, W, V)
        pad_only = torch.full((V,), float("-inf"), device=device)
        pad_only[PAD_ID] = 0.0
        log_probs = torch.where(finished[..., None], pad_only, log_probs)
        candidates = (beam_scores[..., None] + log_probs).view(B, W * V)
        beam_scores, index = candidates.topk(W, dim=-1)  # (B, W) best first
        origin, next_tokens = index // V, index % V  # which beam each survivor extends, with which token
        history = torch.cat([history.gather(1, origin[..., None].expand_as(history)), next_tokens[..., None]], -1)
        finished = finished.gather(1, origin) | (next_tokens == EOS_ID)
        flat_origin = (origin + batch_offset).view(-1)  # (B * W,)
        state = {name: value.index_select(0, flat_origin) for name, value in result.state.items()}
        for name, weights in result.attentions.items():
            past = attention_history.get(name)
            past = weights[:, None] if past is None else torch.cat([past, weights[:, None]], dim=1)
            attention_history[name] = past.index_select(0, flat_origin)
        tokens = next_tokens.view(-1)
        if finished.all():
            break
    done = history.shape[-1]
    beams = torch.zeros(B, W, steps, dtype=torch.long, device=device)
    beams[..., :done] = history
    best_attentions = {
        name: _pad_steps(value.view(B, W, *value.shape[1:])[:, 0], steps) for name, value in attention_history.items()
    }
    return ForecastResult(
        tokens=beams[:, 0],
        scores=beam_scores[:, 0],
        finished=finished[:, 0],
        beams=beams,
        beam_scores=beam_scores,
        attentions=best_attentions,
    )

"""RNN encoder-decoders: fixed context, Cho's context-every-step, Bahdanau and Luong attention.

All read a customer's behaviours through the same raw behaviour embedding as ATRank, so a comparison
isolates the encoder. The encoder's states also feed the same task-query attention heads as ATRank, so
every variant answers outcomes, next event and next item as well as forecasts.

* Fixed context — Sutskever, Vinyals & Le, "Sequence to Sequence Learning with Neural Networks", 2014: the
  encoder's final state starts the decoder and is all it knows of the journey.
* Context every step — Cho et al., "Learning Phrase Representations using RNN Encoder-Decoder", 2014: the
  decoder starts from tanh(W c) and reads the summary c at every step and in its output layer.
* Additive attention — Bahdanau, Cho & Bengio, "Neural Machine Translation by Jointly Learning to Align
  and Translate", 2014: bidirectional encoder; before each step, v·tanh(W s + U h_j) scores the previous
  decoder state against every encoder state; the weighted sum is the step's context, fed to the RNN.
* Multiplicative attention — Luong, Pham & Manning, "Effective Approaches to Attention-based Neural Machine
  Translation", 2015: global attention after each step with dot, general (sᵀWh) or concat scores;
  h̃ = tanh(W[c; s]) feeds the output layer (input feeding is left out).

The decoder forecasts the next K event types from <bos> to <eos>: teacher forcing in training, greedy or beam
search at inference (:mod:`journey_model.models.decoding`). Teacher forcing runs the same ``step`` as
inference, one step at a time, so both see exactly the same computation.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from journey_model.data.batch import SequenceBatch
from journey_model.data.features import FeatureSpec
from journey_model.models.attention import masked_softmax
from journey_model.models.base import JourneyModel, SequenceModelConfig, check_choice
from journey_model.models.decoding import DecoderStep, teacher_forcing_inputs
from journey_model.models.embedding import BehaviourEmbedding
from journey_model.models.heads import TaskHeads
from journey_model.models.output import EncodedSequence, ModelOutput
from journey_model.models.tasks import Task

RNN_CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}


@dataclass
class Seq2SeqConfig(SequenceModelConfig):
    """Which encoder-decoder, and its sizes. The registry's names fix ``cell``, ``attention`` and friends."""

    cell: str = "gru"  # "gru" or "lstm", for both encoder and decoder
    attention: str = "none"  # "none" (fixed context), "bahdanau" (additive) or "luong" (multiplicative)
    luong_score: str = "general"  # Luong's score: "dot", "general" or "concat"
    context_every_step: bool = False  # Cho et al.: feed the fixed context to every decoder step
    bidirectional: bool = False  # bidirectional encoder (Bahdanau's choice)
    num_layers: int = 1  # stacked RNN layers, encoder and decoder alike

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self, "cell", self.cell, tuple(RNN_CELLS))
        check_choice(self, "attention", self.attention, ("none", "bahdanau", "luong"))
        check_choice(self, "luong_score", self.luong_score, ("dot", "general", "concat"))
        if self.context_every_step and self.attention != "none":
            raise ValueError("Seq2SeqConfig: context_every_step (Cho) is a fixed-context variant; set attention='none'")


# ---------------------------------------------------------------------------------------------- encoder


class RNNEncoder(nn.Module):
    """Behaviours -> (B, T, H) RNN states (both directions merged into H) and a (B, H) summary."""

    def __init__(
        self,
        spec: FeatureSpec,
        field_dim: int,
        hidden_size: int,
        cell: str = "gru",
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        embedding_init: str = "glorot",
    ):
        super().__init__()
        H = hidden_size
        self.embedding = BehaviourEmbedding(spec, field_dim, H, embedding_init)
        self.rnn = RNN_CELLS[cell](
            H, H, num_layers, batch_first=True, bidirectional=bidirectional, dropout=dropout if num_layers > 1 else 0.0
        )
        self.bidirectional = bidirectional
        self.merge = nn.Linear(2 * H, H) if bidirectional else None  # forward ⊕ backward -> H

    def forward(self, batch: SequenceBatch) -> EncodedSequence:
        mask = batch.mask  # (B, T)
        B, T = mask.shape
        x = self.embedding(batch)  # (B, T, H)
        # packing keeps padding out of the backward direction; an empty journey reads one zero vector
        lengths = batch.lengths.clamp(min=1).cpu()
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        packed_states, final = self.rnn(packed)
        states, _ = pad_packed_sequence(packed_states, batch_first=True, total_length=T)  # (B, T, dirs * H)
        final_state = final if isinstance(final, tuple) else (final,)  # (h_n,) or (h_n, c_n), (layers*dirs, B, H)
        h_n = final_state[0]
        if self.merge is not None:
            states = torch.tanh(self.merge(states))
            summary = torch.tanh(self.merge(torch.cat([h_n[-2], h_n[-1]], dim=-1)))  # last layer, both directions
        else:
            summary = h_n[-1]
        states = states * mask[..., None].to(states.dtype)
        return EncodedSequence(states=states, mask=mask, summary=summary, final_state=final_state)


# ---------------------------------------------------------------------------------------------- attention


class BahdanauAttention(nn.Module):
    """Additive score v·tanh(W s + U h_j) of a decoder state s against every encoder state h_j."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.query = nn.Linear(hidden_size, hidden_size, bias=False)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.score = nn.Linear(hidden_size, 1, bias=False)

    def forward(self, query: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """query (B, H), memory (B, T, H) -> context (B, H), weights (B, T)."""
        scores = self.score(torch.tanh(self.query(query)[:, None] + self.key(memory))).squeeze(-1)  # (B, T)
        weights = masked_softmax(scores, mask)
        return (weights[..., None] * memory).sum(1), weights


class LuongAttention(nn.Module):
    """Multiplicative global attention: dot sᵀh_j, general sᵀW h_j, or concat v·tanh(W[s; h_j])."""

    def __init__(self, hidden_size: int, score: str = "general"):
        super().__init__()
        self.score_kind = score
        self.weight = nn.Linear(hidden_size, hidden_size, bias=False) if score == "general" else None
        self.concat = nn.Linear(2 * hidden_size, hidden_size) if score == "concat" else None
        self.vector = nn.Linear(hidden_size, 1, bias=False) if score == "concat" else None

    def forward(self, query: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """query (B, H), memory (B, T, H) -> context (B, H), weights (B, T)."""
        if self.score_kind == "dot":
            scores = (memory * query[:, None]).sum(-1)  # (B, T)
        elif self.score_kind == "general":
            scores = (self.weight(memory) * query[:, None]).sum(-1)  # type: ignore[misc]
        else:
            pairs = torch.cat([query[:, None].expand_as(memory), memory], dim=-1)  # (B, T, 2H)
            scores = self.vector(torch.tanh(self.concat(pairs))).squeeze(-1)  # type: ignore[misc]
        weights = masked_softmax(scores, mask)
        return (weights[..., None] * memory).sum(1), weights


# ---------------------------------------------------------------------------------------------- decoder


class RNNDecoder(nn.Module):
    """Forecasts event types one step at a time from an encoded journey."""

    def __init__(self, spec: FeatureSpec, config: Seq2SeqConfig):
        super().__init__()
        H, L, V = config.hidden_size, config.num_layers, spec.event_type_vocab_size
        self.config = config
        self.is_lstm = config.cell == "lstm"
        self.token = nn.Embedding(V, H, padding_idx=0)
        reads_context = config.context_every_step or config.attention == "bahdanau"
        self.rnn = RNN_CELLS[config.cell](
            H * (2 if reads_context else 1), H, L, batch_first=True, dropout=config.dropout if L > 1 else 0.0
        )
        # a decoder starts from the encoder's own final state when shapes allow (Sutskever, Luong);
        # from tanh(W summary) for a bidirectional encoder or Cho's variant
        self.bridge = nn.Linear(H, L * H) if (config.bidirectional or config.context_every_step) else None
        self.attention: nn.Module | None = None
        if config.attention == "bahdanau":
            self.attention = BahdanauAttention(H)
        elif config.attention == "luong":
            self.attention = LuongAttention(H, config.luong_score)
            self.combine = nn.Linear(2 * H, H)  # h̃ = tanh(W[c; s])
        output_width = 2 * H if (config.context_every_step or config.attention == "bahdanau") else H
        self.output = nn.Linear(output_width, V)

    def initial_state(self, encoded: EncodedSequence) -> dict[str, torch.Tensor]:
        B, H, L = encoded.summary.shape[0], self.config.hidden_size, self.config.num_layers
        if self.bridge is not None:
            hidden = torch.tanh(self.bridge(encoded.summary)).view(B, L, H)
            cell = torch.zeros_like(hidden)
        else:
            hidden = encoded.final_state[0].transpose(0, 1)  # (B, L, H)
            cell = encoded.final_state[1].transpose(0, 1) if self.is_lstm else torch.zeros_like(hidden)
        return {
            "hidden": hidden,  # (B, L, H)
            "cell": cell,  # (B, L, H), zeros for a GRU
            "memory": encoded.states,  # (B, T, H)
            "memory_mask": encoded.mask,  # (B, T)
            "context": encoded.summary,  # (B, H) the fixed context
        }

    def step(self, tokens: torch.Tensor, state: dict[str, torch.Tensor], need_weights: bool = False) -> DecoderStep:
        """tokens (B,) -> next-token logits (B, V)."""
        x = self.token(tokens)  # (B, H)
        hidden, memory, mask = state["hidden"], state["memory"], state["memory_mask"]
        attentions: dict[str, torch.Tensor] = {}
        context = state["context"]
        if self.config.attention == "bahdanau":
            # score the previous decoder state against the journey, then read the context
            context, weights = self.attention(hidden[:, -1], memory, mask)  # type: ignore[misc]
            attentions["forecast/attention"] = weights  # (B, T)
        if self.config.context_every_step or self.config.attention == "bahdanau":
            x = torch.cat([x, context], dim=-1)
        rnn_state = hidden.transpose(0, 1).contiguous()  # (L, B, H)
        if self.is_lstm:
            rnn_state = (rnn_state, state["cell"].transpose(0, 1).contiguous())
        out, new_state = self.rnn(x[:, None], rnn_state)
        s = out[:, 0]  # (B, H) top layer
        if self.is_lstm:
            new_hidden, new_cell = (part.transpose(0, 1) for part in new_state)
        else:
            new_hidden, new_cell = new_state.transpose(0, 1), state["cell"]
        if self.config.attention == "luong":
            context, weights = self.attention(s, memory, mask)  # type: ignore[misc]
            attentions["forecast/attention"] = weights  # (B, T)
            logits = self.output(torch.tanh(self.combine(torch.cat([context, s], dim=-1))))
        elif self.config.context_every_step or self.config.attention == "bahdanau":
            logits = self.output(torch.cat([s, context], dim=-1))
        else:
            logits = self.output(s)
        new = dict(state, hidden=new_hidden, cell=new_cell)
        return DecoderStep(logits=logits, state=new, attentions=attentions if need_weights else {})

    def teacher_forced(
        self, encoded: EncodedSequence, targets: torch.Tensor, need_weights: bool = False
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """targets (B, K) -> logits (B, K, V), feeding the true previous token at every step."""
        inputs = teacher_forcing_inputs(targets)  # (B, K)
        state = self.initial_state(encoded)
        logits, attentions = [], []
        for k in range(inputs.shape[1]):
            step = self.step(inputs[:, k], state, need_weights)
            logits.append(step.logits)
            attentions.append(step.attentions)
            state = step.state
        stacked = {name: torch.stack([a[name] for a in attentions], 1) for name in attentions[0]} if need_weights else {}
        return torch.stack(logits, dim=1), stacked


# ---------------------------------------------------------------------------------------------- model


class Seq2Seq(JourneyModel):
    """RNN encoder (+ decoder for forecasts) with the shared task-query heads."""

    supported_tasks = frozenset(Task)

    def __init__(
        self,
        spec: FeatureSpec,
        config: Seq2SeqConfig | None = None,
        tasks: Iterable[Task | str] | None = None,
        model_name: str | None = None,
    ):
        config = config or Seq2SeqConfig()
        super().__init__(spec, tasks, model_name or _variant_name(config))
        self.config = config
        self.encoder = RNNEncoder(
            spec,
            config.field_dim,
            config.hidden_size,
            config.cell,
            config.num_layers,
            config.bidirectional,
            config.dropout,
            config.embedding_init,
        )
        self.heads = TaskHeads(spec, self.tasks, config)
        self.decoder = RNNDecoder(spec, config) if Task.FORECAST in self.tasks else None

    def encode(self, batch: SequenceBatch, output_attentions: bool = False) -> EncodedSequence:
        return self.encoder(batch)

    def forward(self, batch: SequenceBatch, output_attentions: bool = False) -> ModelOutput:
        encoded = self.encode(batch)
        output = self.heads(encoded, batch.next_item, output_attentions)
        if self.decoder is not None and batch.forecast is not None:
            output.forecast_logits, attentions = self.decoder.teacher_forced(encoded, batch.forecast, output_attentions)
            output.attentions.update(attentions)
        return output

    def start_decoding(self, batch: SequenceBatch) -> dict[str, torch.Tensor]:
        return self.decoder.initial_state(self.encode(batch))  # type: ignore[union-attr]

    def decode_step(self, tokens: torch.Tensor, state: dict[str, torch.Tensor], need_weights: bool = False) -> DecoderStep:
        return self.decoder.step(tokens, state, need_weights)  # type: ignore[union-attr]


def _variant_name(config: Seq2SeqConfig) -> str:
    if config.attention != "none":
        return f"{config.cell}-{config.attention}"
    return f"{config.cell}-cho" if config.context_every_step else config.cell


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
search at inference (:mod:`journey_model.models.decoding`). Teacher forcing computes what inference's
``step`` computes: one step at a time for Bahdanau, all K steps in one RNN call for the others (no step of
theirs reads the previous step's attention); a test holds the two equal.
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
    """Behaviours -> (B, T, H) RNN states (both directions merged into H) and a (B, H) summary.

    Every journey is read over its own events only: the forward direction stops at its last event and the
    backward direction starts there, as with a packed sequence. On CPU the RNN runs over the padded batch
    instead (each row's events reversed in place for the backward direction, the final states taken at each
    row's last event): the same computation, without the packed kernel's per-step slicing, whose backward pass
    zero-fills a full-size gradient buffer for every time step. An LSTM's final *cell* state is not in its
    outputs, so ``final_cell_state=True`` (a decoder starts from it) keeps an LSTM on the packed path.
    """

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
        final_cell_state: bool = True,
    ):
        super().__init__()
        H = hidden_size
        self.embedding = BehaviourEmbedding(spec, field_dim, H, embedding_init)
        self.rnn = RNN_CELLS[cell](
            H, H, num_layers, batch_first=True, bidirectional=bidirectional, dropout=dropout if num_layers > 1 else 0.0
        )
        self.bidirectional = bidirectional
        self.is_lstm = cell == "lstm"
        self.final_cell_state = final_cell_state
        self.merge = nn.Linear(2 * H, H) if bidirectional else None  # forward ⊕ backward -> H

    def forward(self, batch: SequenceBatch) -> EncodedSequence:
        mask = batch.mask  # (B, T)
        x = self.embedding(batch)  # (B, T, H)
        # an empty journey reads one zero vector (the embedding is zero at padding)
        lengths = batch.lengths.clamp(min=1)
        if x.device.type == "cpu" and not (self.is_lstm and self.final_cell_state):
            states, final_state = self._run_padded(x, lengths)
        else:
            states, final_state = self._run_packed(x, lengths)
        h_n = final_state[0]
        if self.merge is not None:
            states = torch.tanh(self.merge(states))
            summary = torch.tanh(self.merge(torch.cat([h_n[-2], h_n[-1]], dim=-1)))  # last layer, both directions
        else:
            summary = h_n[-1]
        states = states * mask[..., None].to(states.dtype)
        return EncodedSequence(states=states, mask=mask, summary=summary, final_state=final_state)

    def _run_packed(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Packing keeps padding out of the backward direction. -> states (B, T, dirs * H), (h_n,) / (h_n, c_n)."""
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        packed_states, final = self.rnn(packed)
        states, _ = pad_packed_sequence(packed_states, batch_first=True, total_length=x.shape[1])
        return states, final if isinstance(final, tuple) else (final,)  # each (layers * dirs, B, H)

    def _run_padded(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """The packed computation on the padded batch, layer by layer and direction by direction.

        -> states (B, T, dirs * H), zero at padding, and (h_n,): the state at each row's last event (forward) and
        at its first event (backward), (layers * dirs, B, H) in ``nn.RNN``'s order. No c_n: see the class.
        """
        rnn = self.rnn
        B, T, _ = x.shape
        H, layers, directions = rnn.hidden_size, rnn.num_layers, 2 if self.bidirectional else 1
        steps = torch.arange(T, device=x.device)[None, :]
        real = steps < lengths[:, None]  # (B, T)
        # each row's events in reverse order, its padding left in place: an involution of the time axis
        reverse = torch.where(real, lengths[:, None] - 1 - steps, steps)[..., None]  # (B, T, 1)
        last = (lengths - 1)[:, None, None].expand(B, 1, H)  # (B, 1, H)
        weights = rnn._flat_weights  # per layer, per direction: w_ih, w_hh (, b_ih, b_hh)
        per_direction = len(weights) // (layers * directions)
        h_n = []
        inputs = x
        for layer in range(layers):
            outputs = []
            for direction in range(directions):
                first = (layer * directions + direction) * per_direction
                params = weights[first : first + per_direction]
                sequence = inputs if direction == 0 else inputs.gather(1, reverse.expand_as(inputs))
                zeros = sequence.new_zeros(1, B, H)
                if self.is_lstm:
                    out, _, _ = torch.lstm(sequence, (zeros, zeros), params, rnn.bias, 1, 0.0, self.training, False, True)
                else:
                    out, _ = torch.gru(sequence, zeros, params, rnn.bias, 1, 0.0, self.training, False, True)
                h_n.append(out.gather(1, last)[:, 0])  # (B, H) after the row's last event in reading order
                outputs.append(out if direction == 0 else out.gather(1, reverse.expand_as(out)))
            inputs = torch.cat(outputs, dim=-1) if directions == 2 else outputs[0]
            if layer < layers - 1 and rnn.dropout and self.training:  # nn.RNN's dropout between layers
                inputs = nn.functional.dropout(inputs, rnn.dropout, training=True)
        states = inputs * real[..., None].to(inputs.dtype)  # zero at padding, as pad_packed_sequence leaves it
        return states, (torch.stack(h_n),)


# ---------------------------------------------------------------------------------------------- attention


class BahdanauAttention(nn.Module):
    """Additive score v·tanh(W s + U h_j) of a decoder state s against every encoder state h_j."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.query = nn.Linear(hidden_size, hidden_size, bias=False)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.score = nn.Linear(hidden_size, 1, bias=False)

    def forward(
        self, query: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor, keys: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """query (B, H), memory (B, T, H) -> context (B, H), weights (B, T). ``keys``: U h_j, computed once per
        journey by the decoder (:meth:`RNNDecoder.initial_state`) rather than at every step."""
        keys = self.key(memory) if keys is None else keys  # (B, T, H)
        scores = self.score(torch.tanh(self.query(query)[:, None] + keys)).squeeze(-1)  # (B, T)
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
        """query (B, H), memory (B, T, H) -> context (B, H), weights (B, T); or every step of a teacher-forced
        decoder at once: query (B, K, H) -> context (B, K, H), weights (B, K, T)."""
        if query.dim() == 3:
            return self._all_steps(query, memory, mask)
        if self.score_kind == "dot":
            scores = (memory * query[:, None]).sum(-1)  # (B, T)
        elif self.score_kind == "general":
            scores = (self.weight(memory) * query[:, None]).sum(-1)  # type: ignore[misc]
        else:
            pairs = torch.cat([query[:, None].expand_as(memory), memory], dim=-1)  # (B, T, 2H)
            scores = self.vector(torch.tanh(self.concat(pairs))).squeeze(-1)  # type: ignore[misc]
        weights = masked_softmax(scores, mask)
        return (weights[..., None] * memory).sum(1), weights

    def _all_steps(self, query: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.score_kind == "dot":
            scores = query @ memory.transpose(1, 2)  # (B, K, T)
        elif self.score_kind == "general":
            scores = query @ self.weight(memory).transpose(1, 2)  # type: ignore[misc]
        else:
            K, T = query.shape[1], memory.shape[1]
            pairs = torch.cat([query[:, :, None].expand(-1, -1, T, -1), memory[:, None].expand(-1, K, -1, -1)], dim=-1)
            scores = self.vector(torch.tanh(self.concat(pairs))).squeeze(-1)  # type: ignore[misc]  # (B, K, T)
        weights = masked_softmax(scores, mask)
        return weights @ memory, weights  # (B, K, H), (B, K, T)


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
        state = {
            "hidden": hidden,  # (B, L, H)
            "cell": cell,  # (B, L, H), zeros for a GRU
            "memory": encoded.states,  # (B, T, H)
            "memory_mask": encoded.mask,  # (B, T)
            "context": encoded.summary,  # (B, H) the fixed context
        }
        if self.config.attention == "bahdanau":
            state["memory_keys"] = self.attention.key(encoded.states)  # type: ignore[union-attr]  # (B, T, H) U h_j
        return state

    def step(self, tokens: torch.Tensor, state: dict[str, torch.Tensor], need_weights: bool = False) -> DecoderStep:
        """tokens (B,) -> next-token logits (B, V)."""
        x = self.token(tokens)  # (B, H)
        hidden, memory, mask = state["hidden"], state["memory"], state["memory_mask"]
        attentions: dict[str, torch.Tensor] = {}
        context = state["context"]
        if self.config.attention == "bahdanau":
            # score the previous decoder state against the journey, then read the context
            context, weights = self.attention(hidden[:, -1], memory, mask, state.get("memory_keys"))  # type: ignore[misc]
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
        """targets (B, K) -> logits (B, K, V), feeding the true previous token at every step.

        Where no step reads the previous step's attention (fixed context, Cho, Luong without input feeding), the
        RNN runs over the K steps in one call and attention scores them all at once: the computation of K calls
        of :meth:`step`, in fewer kernels. Bahdanau's attention needs the previous state, so it steps.
        """
        inputs = teacher_forcing_inputs(targets)  # (B, K)
        state = self.initial_state(encoded)
        if self.config.attention != "bahdanau":
            return self._all_steps(inputs, state, need_weights)
        logits, attentions = [], []
        for k in range(inputs.shape[1]):
            step = self.step(inputs[:, k], state, need_weights)
            logits.append(step.logits)
            attentions.append(step.attentions)
            state = step.state
        stacked = {name: torch.stack([a[name] for a in attentions], 1) for name in attentions[0]} if need_weights else {}
        return torch.stack(logits, dim=1), stacked

    def _all_steps(
        self, inputs: torch.Tensor, state: dict[str, torch.Tensor], need_weights: bool
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """:meth:`step` for every teacher-forced input at once (not for Bahdanau). inputs (B, K) -> (B, K, V)."""
        x = self.token(inputs)  # (B, K, H)
        context = state["context"]  # (B, H)
        if self.config.context_every_step:
            x = torch.cat([x, context[:, None].expand(-1, x.shape[1], -1)], dim=-1)
        rnn_state = state["hidden"].transpose(0, 1).contiguous()  # (L, B, H)
        if self.is_lstm:
            rnn_state = (rnn_state, state["cell"].transpose(0, 1).contiguous())
        s, _ = self.rnn(x, rnn_state)  # (B, K, H) top layer
        attentions: dict[str, torch.Tensor] = {}
        if self.config.attention == "luong":
            attended, weights = self.attention(s, state["memory"], state["memory_mask"])  # type: ignore[misc]
            if need_weights:
                attentions["forecast/attention"] = weights  # (B, K, T)
            logits = self.output(torch.tanh(self.combine(torch.cat([attended, s], dim=-1))))
        elif self.config.context_every_step:
            logits = self.output(torch.cat([s, context[:, None].expand_as(s)], dim=-1))
        else:
            logits = self.output(s)
        return logits, attentions


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
            # only a decoder started from the encoder's own final state reads an LSTM's c_n
            final_cell_state=Task.FORECAST in self.tasks and not (config.bidirectional or config.context_every_step),
        )
        self.heads = TaskHeads(spec, self.tasks, config)
        self.decoder = RNNDecoder(spec, config) if Task.FORECAST in self.tasks else None

    def encode(self, batch: SequenceBatch, output_attentions: bool = False) -> EncodedSequence:
        return self.encoder(batch)

    def forward(self, batch: SequenceBatch, output_attentions: bool = False) -> ModelOutput:
        encoded = self.encode(batch)
        output = self.heads(encoded, batch, output_attentions)
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


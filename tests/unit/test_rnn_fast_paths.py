"""The RNN models' fast paths compute what the plain ones do: same outputs and gradients for the same weights.

* :class:`~journey_model.models.seq2seq.RNNEncoder` on CPU runs the RNN over the padded batch (each row reversed
  in place for the backward direction) instead of a packed sequence;
* :class:`~journey_model.models.seq2seq.RNNDecoder` teacher-forces every variant but Bahdanau in one RNN call,
  and Bahdanau reuses its keys U h_j across steps.

The reference is the packed encoder and a decoder stepping through :meth:`RNNDecoder.step` one target at a time.
"""

from __future__ import annotations

import pytest
import torch
from test_models import SPEC, random_batch, widen

from journey_model.models import build_model
from journey_model.models.registry import supported_tasks
from journey_model.models.seq2seq import RNNDecoder, RNNEncoder
from journey_model.models.tasks import Task

torch.set_num_threads(1)

RNN_MODELS = ["gru", "lstm", "gru-cho", "gru-bahdanau", "lstm-bahdanau", "gru-luong", "lstm-luong", "gru-attn"]
VARIANTS = [(name, {}) for name in RNN_MODELS] + [
    ("gru-luong", {"luong_score": "dot"}),
    ("gru-luong", {"luong_score": "concat"}),
    ("lstm", {"num_layers": 2, "bidirectional": True}),
    ("gru", {"num_layers": 2}),
    ("gru-attn", {"num_layers": 2, "bidirectional": True}),
    ("gru-attn", {"bidirectional": False}),
]


def _stepwise_teacher_forced(self, encoded, targets, need_weights=False):  # noqa: ANN001, ANN202
    """The decoder as it was: :meth:`RNNDecoder.step` once per target."""
    from journey_model.models.decoding import teacher_forcing_inputs

    inputs = teacher_forcing_inputs(targets)
    state = self.initial_state(encoded)
    state.pop("memory_keys", None)  # Bahdanau recomputes its keys at every step
    logits, attentions = [], []
    for k in range(inputs.shape[1]):
        step = self.step(inputs[:, k], state, need_weights)
        logits.append(step.logits)
        attentions.append(step.attentions)
        state = step.state
    stacked = {name: torch.stack([a[name] for a in attentions], 1) for name in attentions[0]} if need_weights else {}
    return torch.stack(logits, dim=1), stacked


def _outputs_and_grads(model, batch, need_weights=True):  # noqa: ANN001, ANN202
    model.zero_grad(set_to_none=True)
    output = model(batch, output_attentions=need_weights)
    tensors = {name: value for name, value in vars(output).items() if isinstance(value, torch.Tensor)}
    tensors.update({f"attention/{k}": v for k, v in output.attentions.items()})
    total = sum(v.float().sum() for k, v in tensors.items() if v.requires_grad and not k.startswith("attention/"))
    total.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in tensors.items()}, grads


@pytest.mark.parametrize(("name", "overrides"), VARIANTS, ids=[f"{n}-{o}" for n, o in VARIANTS])
def test_fast_paths_match_packed_and_stepwise(name: str, overrides: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    tasks = sorted(t.value for t in supported_tasks(name))
    model = build_model(name, SPEC, tasks=tasks, field_dim=8, hidden_size=16, num_heads=2, dropout=0.0, **overrides)
    model.train()  # dropout 0: deterministic, and the training path (gradients) is what the fast paths speed up
    batch = random_batch(seed=3, lengths=(0, 3, 5, 8, 1, 6, 8, 2))
    fast, fast_grads = _outputs_and_grads(model, batch)
    with monkeypatch.context() as patch:
        patch.setattr(RNNEncoder, "_run_padded", RNNEncoder._run_packed)
        patch.setattr(RNNDecoder, "teacher_forced", _stepwise_teacher_forced)
        reference, reference_grads = _outputs_and_grads(model, batch)
    assert fast.keys() == reference.keys()
    if Task.FORECAST in model.tasks:
        assert "forecast_logits" in fast
    for key in reference:
        torch.testing.assert_close(fast[key], reference[key], rtol=1e-5, atol=1e-5, msg=f"{name} {key}")
    assert fast_grads.keys() == reference_grads.keys()
    for key in reference_grads:
        torch.testing.assert_close(fast_grads[key], reference_grads[key], rtol=1e-4, atol=1e-5, msg=f"{name} grad {key}")


@pytest.mark.parametrize(("cell", "bidirectional", "layers"), [("gru", True, 1), ("gru", False, 2), ("lstm", True, 2)])
def test_padded_encoder_equals_packed_and_ignores_padding(cell: str, bidirectional: bool, layers: int) -> None:
    torch.manual_seed(1)
    encoder = RNNEncoder(SPEC, 8, 16, cell, layers, bidirectional, final_cell_state=False).eval()
    batch = random_batch(seed=5, lengths=(0, 4, 7, 1, 7))
    x = encoder.embedding(batch)
    lengths = batch.lengths.clamp(min=1)
    states, (h_n,) = encoder._run_padded(x, lengths)
    packed_states, packed_final = encoder._run_packed(x, lengths)
    torch.testing.assert_close(states, packed_states, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(h_n, packed_final[0], rtol=1e-5, atol=1e-6)
    wide = widen(batch, 5)  # five more padding columns change nothing
    wide_states, (wide_h,) = encoder._run_padded(encoder.embedding(wide), wide.lengths.clamp(min=1))
    torch.testing.assert_close(wide_states[:, :7], states, rtol=1e-5, atol=1e-6)
    assert wide_states[:, 7:].abs().max() == 0
    torch.testing.assert_close(wide_h, h_n, rtol=1e-5, atol=1e-6)


def test_an_lstm_decoder_started_from_the_encoder_keeps_the_exact_cell_state() -> None:
    model = build_model("lstm", SPEC, tasks=["forecast"], field_dim=8, hidden_size=16, num_heads=2)
    assert model.encoder.final_cell_state  # the decoder reads c_n: the packed path, which returns it
    encoded = model.encoder(random_batch(seed=2))
    assert len(encoded.final_state) == 2
    outcome_only = build_model("lstm", SPEC, tasks=["outcome"], field_dim=8, hidden_size=16, num_heads=2)
    assert not outcome_only.encoder.final_cell_state

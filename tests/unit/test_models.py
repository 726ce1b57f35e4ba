"""Behaviour of the model zoo, transformers-style: a tiny FeatureSpec, a tiny config per model, real batches.

Every batch is built with :func:`journey_model.data.batch.collate_examples`, the contract every model reads.
Checked: output shapes for every model x task, attention rows summing to 1 over real keys, padding and batch
composition changing nothing, the causal mask hiding the future, fused and explicit attention agreeing,
every trainable model overfitting a tiny batch, count models fitting by counting, greedy vs beam decoding,
ATRank learning a planted ORDER signal, losses ignoring unknown targets, and clear errors.
"""

from __future__ import annotations

import dataclasses
import math
import random

import pytest
import torch

from journey_model.data.batch import SequenceBatch, collate_examples
from journey_model.data.features import BOS_ID, EOS_ID, OOV_ID, PAD_ID, BehaviourGroup, FeatureSpec
from journey_model.inference.attribution import attention_importance
from journey_model.models import ATRankConfig, ModelOutput, UnknownModelError, build_model, list_models
from journey_model.models.attention import (
    MINUTE_BUCKETS,
    RelativeTime,
    SameItemBias,
    TypePairBias,
    minute_buckets,
    rotary_time_tables,
    rotate,
)
from journey_model.models.base import LEGACY_TRAINING_FIELDS
from journey_model.models.heads import ItemHistory, NextItemScorer, RecencyBias
from journey_model.models.registry import config_fields, saved_before, supported_tasks
from journey_model.models.tasks import Task, UnsupportedTaskError
from journey_model.training.losses import (
    compute_losses,
    forecast_loss,
    next_event_loss,
    next_item_loss,
    outcome_loss,
)

torch.set_num_threads(1)

# ---------------------------------------------------------------------------------------------- fixtures

PAYMENT, TRANSFER, LOGIN, LOGOUT, VIEW, COMPLAINT = range(4, 10)
SPEC = FeatureSpec(
    event_type_vocab_size=10,  # <pad> <oov> <bos> <eos> + six types
    categorical_vocab_sizes={"item": 12, "channel": 5},
    numeric_fields=["amount"],
    num_time_buckets=14,
    behaviour_groups=[
        BehaviourGroup("money", [PAYMENT, TRANSFER], ["item", "channel"], ["amount"]),
        BehaviourGroup("session", [LOGIN, LOGOUT], ["channel"], []),
        BehaviourGroup("view+complaint", [VIEW, COMPLAINT], ["item"], []),
    ],
    outcome_names=["churn", "default"],
    item_field="item",
    forecast_steps=3,
)
CATEGORICAL = ["item", "channel"]
NUMERIC = ["amount"]
OUTCOMES = ["churn", "default"]

TINY_SEQUENCE = dict(field_dim=8, hidden_size=16, num_heads=2, dropout=0.0)
TINY: dict[str, dict[str, object]] = {name: dict(TINY_SEQUENCE) for name in list_models()}
TINY["bag"] = {}
TINY["markov"] = {}
TINY["most-frequent"] = {}
TINY["recent-items"] = {}
for _name in ("atrank", "transformer"):  # the network alone: ATRank's Wide & Deep default has tests of its own
    TINY[_name]["wide"] = False

COUNT_MODELS = ["markov", "most-frequent", "recent-items"]
TRAINABLE = [name for name in list_models() if name not in COUNT_MODELS]
FORECASTERS = [name for name in list_models() if Task.FORECAST in supported_tasks(name)]
WITH_ATTENTION = ["atrank", "transformer", "gru-bahdanau", "lstm-bahdanau", "gru-luong", "lstm-luong", "gru-attn", "gru"]


def make_example(rng: random.Random, length: int, customer: str = "c") -> dict[str, object]:
    """One encoded (customer, cut-off) with random events and every target."""
    types = [rng.choice([1, *range(4, 10)]) for _ in range(length)]
    return {
        "customer_id": customer,
        "event_type": types,
        "time_bucket": sorted((rng.randint(1, 13) for _ in range(length)), reverse=True),
        "time_gap": sorted((rng.choice([0.0, 60.0 * rng.random(), 86400.0 * 400 * rng.random()]) for _ in range(length)),
                           reverse=True),
        "cat_item": [rng.randint(1, 11) if t in (1, PAYMENT, TRANSFER, VIEW, COMPLAINT) else 0 for t in types],
        "cat_channel": [rng.randint(1, 4) if t in (1, PAYMENT, TRANSFER, LOGIN, LOGOUT) else 0 for t in types],
        "num_amount": [rng.gauss(0, 1) if t in (1, PAYMENT, TRANSFER) else float("nan") for t in types],
        "y_churn": rng.choice([0.0, 1.0, None]),
        "y_default": rng.choice([0.0, 1.0]),
        "next_event_type": rng.randint(4, 9),
        "next_item": rng.randint(1, 11),
        "forecast_event_type": [rng.randint(4, 9) for _ in range(rng.randint(0, 3))] + [EOS_ID],
    }


def collate(examples: list[dict[str, object]]) -> SequenceBatch:
    return collate_examples(examples, CATEGORICAL, NUMERIC, OUTCOMES)


def random_batch(seed: int = 0, lengths: tuple[int, ...] = (0, 3, 5, 8, 1, 6)) -> SequenceBatch:
    rng = random.Random(seed)
    return collate([make_example(rng, n, f"c{i}") for i, n in enumerate(lengths)])


def build(name: str, seed: int = 0, tasks=None, **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(name, SPEC, tasks=tasks, **{**TINY[name], **overrides})
    if not model.trainable:
        model.fit([random_batch(seed=s) for s in range(3)])
    return model.eval()


def widen(batch: SequenceBatch, extra: int) -> SequenceBatch:
    """The same batch with ``extra`` more padding columns on the right of every (B, T, …) tensor."""

    def pad(x: torch.Tensor) -> torch.Tensor:
        shape = (x.shape[0], extra, *x.shape[2:])
        return torch.cat([x, torch.zeros(shape, dtype=x.dtype)], dim=1)

    return dataclasses.replace(
        batch,
        event_type=pad(batch.event_type),
        time_bucket=pad(batch.time_bucket),
        time_gap=None if batch.time_gap is None else pad(batch.time_gap),
        categorical={k: pad(v) for k, v in batch.categorical.items()},
        numeric=pad(batch.numeric),
        numeric_mask=pad(batch.numeric_mask),
        mask=pad(batch.mask),
    )


def customer_outputs(output: ModelOutput, row: int, forecast_len: int) -> dict[str, torch.Tensor]:
    """Every prediction of one customer, for comparing the same customer across batches."""
    found = {}
    for name in ("outcome_logits", "next_event_logits", "next_item_logits", "representation"):
        value = getattr(output, name)
        if value is not None:
            found[name] = value[row]
    if output.forecast_logits is not None:
        found["forecast_logits"] = output.forecast_logits[row, :forecast_len]
    for name, value in output.task_representations.items():
        found[f"task/{name}"] = value[row]
    return found


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 1e-5) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=atol, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}")


# ---------------------------------------------------------------------------------------------- shapes


MODEL_TASKS = [(name, task) for name in list_models() for task in Task if task in supported_tasks(name)]


@pytest.mark.parametrize(("name", "task"), MODEL_TASKS, ids=[f"{n}-{t.value}" for n, t in MODEL_TASKS])
def test_output_shapes_for_every_model_and_task(name: str, task: Task) -> None:
    batch = random_batch()
    B, T = batch.event_type.shape
    K = batch.forecast.shape[1]
    model = build(name, tasks=[task])
    assert model.tasks == (task,)
    output = model(batch)
    expected = {
        Task.OUTCOME: ("outcome_logits", (B, len(OUTCOMES))),
        Task.NEXT_EVENT: ("next_event_logits", (B, SPEC.event_type_vocab_size)),
        Task.NEXT_ITEM: ("next_item_logits", (B, SPEC.categorical_vocab_sizes["item"])),
        Task.FORECAST: ("forecast_logits", (B, K, SPEC.event_type_vocab_size)),
    }
    for other, (field, shape) in expected.items():
        value = getattr(output, field)
        if other is task:
            assert value is not None and value.shape == shape, f"{name}: {field}"
            assert torch.isfinite(value).all()
        else:
            assert value is None, f"{name} built for {task} also produced {field}"
    if output.representation is not None:
        assert output.representation.shape == (B, TINY_SEQUENCE["hidden_size"])
    loss = compute_losses(output, batch)["loss"]
    assert torch.isfinite(loss)


def test_every_model_answers_every_task_it_supports_at_once() -> None:
    batch = random_batch()
    for name in list_models():
        model = build(name)
        assert set(model.tasks) == set(supported_tasks(name)), name
        losses = compute_losses(model(batch), batch)
        assert set(losses) == {t.value for t in model.tasks} | {"loss"}, name


def test_next_item_sampled_negatives_in_training_full_scores_in_eval() -> None:
    batch = random_batch()
    model = build("atrank", tasks=["next_item"], next_item_scoring="sampled", num_sampled_negatives=5)
    model.train()
    output = model(batch)
    assert output.next_item_logits is None and output.next_item_sampled_logits.shape == (batch.batch_size, 6)
    compute_losses(output, batch)["loss"].backward()
    model.eval()
    output = model(batch)
    assert output.next_item_sampled_logits is None and output.next_item_logits.shape == (batch.batch_size, 12)


def test_sampled_scoring_with_copying_masks_negatives_equal_to_the_target() -> None:
    batch = random_batch(lengths=(3, 5, 8, 6))
    model = build("atrank", tasks=["next_item"], next_item_scoring="sampled", num_sampled_negatives=40)
    model.train()
    torch.manual_seed(3)  # 40 draws from 11 ids: every target is drawn again as a negative
    logits = model(batch).next_item_sampled_logits  # (B, 1 + S) log-probabilities, target in column 0
    assert torch.isfinite(logits).all() and (logits <= 1e-5).all()
    assert (logits[:, 0] > -1e4).all()
    negatives = logits[:, 1:]
    assert (negatives < -1e30).sum(1).ge(1).all(), "a negative equal to the target must not compete with it"


def test_copying_spreads_the_pointer_over_the_journeys_own_items_only() -> None:
    torch.manual_seed(0)
    scorer = NextItemScorer(vocab_size=9, hidden_size=4, copy=True)
    with torch.no_grad():
        scorer.copy["gate"].bias.fill_(-50.0)  # g ≈ 0: the prediction is the copy alone
    history = ItemHistory(states=torch.randn(1, 5, 4), mask=torch.tensor([[True, True, True, True, False]]),
                          items=torch.tensor([[5, OOV_ID, 7, 5, 0]]))
    probs = scorer(torch.randn(1, 4), history=history)[0].exp()[0]  # (V,)
    copied = history.items[0, [0, 2, 3]]
    assert probs[[5, 7]].sum().item() == pytest.approx(1.0, abs=1e-5)
    assert probs[OOV_ID].item() < 1e-6 and probs[PAD_ID].item() == 0.0  # never copied
    assert probs[[i for i in range(9) if i not in copied.tolist()]].sum().item() < 1e-6


def test_sampled_scoring_copies_the_same_mass_as_full_scoring() -> None:
    torch.manual_seed(0)
    scorer = NextItemScorer(vocab_size=50, hidden_size=8, scoring="sampled", num_negatives=30, copy=True)
    with torch.no_grad():
        scorer.copy["gate"].bias.fill_(-50.0)  # g ≈ 0: both predictions are the copy alone
    history = ItemHistory(torch.randn(4, 6, 8), torch.ones(4, 6, dtype=torch.bool), torch.randint(2, 50, (4, 6)))
    u, target = torch.randn(4, 8), history.items[:, 2]
    torch.manual_seed(1)
    sampled = scorer.train()(u, target, history)[1]  # (B, 1 + S)
    torch.manual_seed(1)
    candidates = torch.cat([target[:, None], torch.randint(1, 50, (30,))[None].expand(4, -1)], dim=1)
    full = scorer.eval()(u, None, history)[0].gather(1, candidates)  # (B, 1 + S)
    kept = sampled > -1e30  # negatives equal to the target are masked in sampled scoring
    copied = kept & (full > -20)  # candidates in the history: their log copy mass, the same either way
    assert kept[:, 0].all() and copied[:, 0].all() and torch.allclose(sampled[copied], full[copied], atol=1e-4)
    assert (sampled[kept & ~copied] < -40).all() and (full[kept & ~copied] < -40).all()  # only g · softmax left


def fit_minibatches(model, train: SequenceBatch, steps: int, lr: float = 5e-3, batch_size: int = 64) -> None:
    """``steps`` Adam steps on random minibatches of ``train``; the model is left in eval mode."""
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        batch = train.take(torch.randint(0, train.batch_size, (batch_size,)))
        loss = compute_losses(model(batch), batch)["loss"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()


@pytest.mark.parametrize("name", [n for n in list_models() if "next_item_copy" in config_fields(n)])
def test_models_saved_before_copying_load_without_it(name: str) -> None:
    """A bundle from before ``next_item_copy`` lacks the field and the pointer's weights; it loads as it was built."""
    old = build_model(name, SPEC, tasks=["next_item"], **{**TINY[name], "next_item_copy": False})
    weights = {k: v for k, v in old.state_dict().items()}
    config = {k: v for k, v in dataclasses.asdict(old.config).items() if k != "next_item_copy"}
    loaded = build_model(name, SPEC, tasks=["next_item"], **{**saved_before(name), **config})
    loaded.load_state_dict(weights)  # strict: no pointer or gate weights are expected
    batch = random_batch()
    assert torch.equal(loaded.eval()(batch).next_item_logits, old.eval()(batch).next_item_logits)
    default = build(name, tasks=["next_item"])  # copying by default except in the reference preset
    assert any(".copy." in k for k in default.state_dict()) == default.config.next_item_copy == (name != "atrank-reference")


def _repeat_payee_examples(rng: random.Random, n: int) -> list[dict[str, object]]:
    """The next item is the payee of the customer's latest PAYMENT, among 400 items drawn at random."""
    examples = []
    for _ in range(n):
        length = rng.randint(5, 10)
        types = [rng.choice([PAYMENT, TRANSFER, VIEW, LOGIN]) for _ in range(length)]
        types[rng.randrange(length)] = PAYMENT
        items = [rng.randint(2, 399) if t != LOGIN else 0 for t in types]
        example = make_example(rng, length)
        example.update(event_type=types, cat_item=items, cat_channel=[1] * length, num_amount=[0.0] * length,
                       next_item=[i for t, i in zip(types, items) if t == PAYMENT][-1])
        examples.append(example)
    return examples


@pytest.mark.parametrize("name", ["atrank", "gru-attn"])
def test_copying_learns_to_pay_the_last_payee_again(name: str) -> None:
    """Payees are drawn anew for every customer, so only copying from the journey can name the next one."""
    spec = dataclasses.replace(SPEC, categorical_vocab_sizes={"item": 400, "channel": 5})
    rng = random.Random(0)
    train, test = collate(_repeat_payee_examples(rng, 512)), collate(_repeat_payee_examples(rng, 256))
    accuracy = {}
    for copy in (True, False):
        torch.manual_seed(0)
        model = build_model(name, spec, tasks=["next_item"], field_dim=8, hidden_size=32, num_heads=4,
                            next_item_copy=copy)
        fit_minibatches(model, train, steps=120)
        with torch.no_grad():
            logits = model(test).next_item_logits
        accuracy[copy] = (logits.argmax(-1) == test.next_item).float().mean().item()
        if copy:  # log-probabilities of a distribution that never names padding
            assert logits.logsumexp(-1).le(1e-4).all() and (logits[:, PAD_ID] < -1e30).all()
            # the attention explanation of the next item names the behaviour it was copied from
            with torch.no_grad():
                importance = attention_importance(model(test, output_attentions=True), test.mask)["next_item"]
            last_payment = torch.where(test.event_type == PAYMENT, torch.arange(test.event_type.shape[1]), -1).amax(1)
            found = (torch.as_tensor(importance).argmax(1) == last_payment).float().mean().item()
            assert found > 0.8, f"{name}: the last payment explains the next item for {found:.2f} of customers"
            assert torch.as_tensor(importance).sum(1).sub(1).abs().max() < 1e-4
    assert accuracy[True] > 0.8, f"{name} with copying: accuracy {accuracy[True]:.3f}"
    assert accuracy[False] < 0.2, f"{name} without copying: accuracy {accuracy[False]:.3f} (the items are random)"


# ---------------------------------------------------------------------------------------------- attention


def _check_rows(weights: torch.Tensor, key_mask: torch.Tensor, live_rows: torch.Tensor, label: str) -> None:
    """weights (B, [heads,] Q, Tk): zero on padded keys; rows sum to 1 where live, to 0 elsewhere."""
    shape = (key_mask.shape[0],) + (1,) * (weights.dim() - 2) + (key_mask.shape[1],)
    assert (weights * ~key_mask.view(shape)).abs().max() == 0, f"{label}: weight on a padded key"
    sums = weights.sum(-1)
    expected = live_rows.to(sums.dtype).expand_as(sums)
    torch.testing.assert_close(sums, expected, atol=1e-5, rtol=0, msg=lambda m: f"{label}: {m}")


@pytest.mark.parametrize("name", WITH_ATTENTION)
def test_attention_rows_sum_to_one_over_real_keys(name: str) -> None:
    batch = random_batch()
    mask = batch.mask
    has_events = batch.lengths > 0
    output = build(name)(batch, output_attentions=True)
    if name == "gru":
        assert set(output.attentions) == {f"task/{q}" for q in ["churn", "default", "next_event", "next_item"]} | {
            "copy/next_item"}
    assert output.attentions, name
    decoder_inputs = torch.cat([torch.full_like(batch.forecast[:, :1], BOS_ID), batch.forecast[:, :-1]], 1)
    for label, w in output.attentions.items():
        if label.startswith("self/"):  # (B, heads, T, T)
            _check_rows(w, mask, (mask & has_events[:, None])[:, None, :], label)
        elif label.startswith("task/"):  # (B, heads, T)
            _check_rows(w, mask, has_events[:, None], label)
        elif label == "pool":  # (B, T)
            _check_rows(w[:, None], mask, has_events[:, None], label)
        elif label == "forecast/attention":  # (B, K, T)
            _check_rows(w, mask, has_events[:, None], label)
        elif label.startswith("forecast/self/"):  # (B, heads, K, K)
            real = decoder_inputs != PAD_ID
            _check_rows(w, real, real[:, None, :], label)
            assert torch.triu(w, diagonal=1).abs().max() == 0, f"{label} sees later steps"
        elif label.startswith("forecast/cross/"):  # (B, heads, K, T)
            live = (decoder_inputs != PAD_ID) & has_events[:, None]
            _check_rows(w, mask, live[:, None, :], label)
        elif label == "copy/next_item":  # (B, T): the copied share 1 - g, spread over behaviours with a known item
            copyable = mask & (batch.categorical["item"] > 1)
            assert (w >= 0).all() and (w[~copyable] == 0).all(), label
            assert (w.sum(-1) <= 1 + 1e-5).all() and (w.sum(-1)[~copyable.any(-1)] == 0).all(), label
            assert (w.sum(-1)[copyable.any(-1)] > 0).all(), label
        else:
            raise AssertionError(f"unexpected attention name {label}")


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"positional_encoding": "sinusoidal", "num_blocks": 2},
        {"positional_encoding": "learned", "causal": True, "relu_projections": False},
    ],
    ids=["reference", "sinusoidal-2blocks", "learned-causal"],
)
@pytest.mark.parametrize("name", ["atrank", "transformer"])
def test_fused_and_explicit_attention_paths_agree(name: str, overrides: dict) -> None:
    batch = random_batch()
    model = build(name, **overrides)
    fused = model(batch, output_attentions=False)
    explicit = model(batch, output_attentions=True)
    assert not fused.attentions and explicit.attentions
    for row in range(batch.batch_size):
        assert_same(customer_outputs(fused, row, 99), customer_outputs(explicit, row, 99), atol=1e-5)


def test_a_learned_score_bias_takes_the_explicit_path_with_the_fused_paths_values_and_gradients() -> None:
    """A bias that needs its gradient is applied outside torch's fused kernels; the result, the gradients of
    queries, keys and values, and the zeroed dead rows are those of the fused path given the same bias as a
    constant, and the bias gets the scores' gradient."""
    from journey_model.models.attention import attention_mask, scaled_dot_product_attention

    torch.manual_seed(0)
    B, h, T, d = 3, 2, 6, 4
    key_mask = torch.tensor([[True] * 6, [True] * 3 + [False] * 3, [False] * 6])  # the last journey is empty
    allowed = attention_mask(key_mask, T, causal=False, causal_heads=0, num_heads=h)
    live = allowed.any(-1, keepdim=True) & key_mask[:, None, :, None]
    q, k, v = (torch.randn(B, h, T, d, requires_grad=True) for _ in range(3))
    bias = torch.randn(B, h, T, T)

    def run(learned: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b = bias.clone().requires_grad_(learned)
        out, _ = scaled_dot_product_attention(q, k, v, allowed, live, 0.0, False, b)
        grads = torch.autograd.grad((out * torch.arange(out.numel()).reshape(out.shape).sin()).sum(),
                                    [q, k, v, b] if learned else [q, k, v])
        return out, list(grads)

    fused, fused_grads = run(learned=False)
    explicit, explicit_grads = run(learned=True)
    torch.testing.assert_close(explicit, fused, atol=1e-5, rtol=1e-5)
    for a, b in zip(explicit_grads[:3], fused_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert explicit[2].abs().max() == 0 and explicit[1, :, 3:].abs().max() == 0  # dead rows
    bias_grad = explicit_grads[3]
    assert bias_grad[0].abs().max() > 0  # the bias learns from live rows ...
    assert bias_grad[1, :, :, 3:].abs().max() < 1e-7 and bias_grad[2].abs().max() == 0  # ... never from hidden keys


@pytest.mark.parametrize("mask", ["padding", "causal", "causal-heads"])
def test_a_pair_bias_through_the_fused_kernel_gives_the_dense_bias_values_and_gradients(mask: str) -> None:
    """The same-item bias's few pairs are corrected around torch's fused CPU kernel (no (B, h, T, T) tensor); the
    output and the gradients of queries, keys, values and the pairs' bias are those of the dense bias."""
    from journey_model.models.attention import PairBias, attention_mask, scaled_dot_product_attention

    torch.manual_seed(1)
    B, h, T, d = 3, 2, 7, 4
    key_mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3, [False] * 7])
    allowed = attention_mask(key_mask, T, causal=mask == "causal", causal_heads=1 if mask == "causal-heads" else 0,
                             num_heads=h)
    live = allowed.any(-1, keepdim=True) & key_mask[:, None, :, None]
    items = torch.tensor([[5, 6, 5, 7, 5, 6, 8], [9, 9, 4, 9, 0, 0, 0], [0] * 7])
    same = (items[:, :, None] == items[:, None, :]) & key_mask[:, :, None] & key_mask[:, None, :]
    same &= ~torch.eye(T, dtype=torch.bool)
    b, i, j = same.nonzero(as_tuple=True)
    q, k, v = (torch.randn(B, h, T, d, requires_grad=True) for _ in range(3))
    values = (torch.randn(b.shape[0], h) * 2).requires_grad_(True)  # large enough to move the weights
    weights = torch.randn(B, h, T, d)

    def run(sparse: bool) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        pairs = PairBias(b, i, j, values, (B, h, T, T))
        out, _ = scaled_dot_product_attention(q, k, v, allowed, live, 0.0, False, pairs if sparse else pairs.dense())
        return out, torch.autograd.grad((out * weights).sum(), [q, k, v, values])

    sparse, sparse_grads = run(sparse=True)
    dense, dense_grads = run(sparse=False)
    assert (sparse - run_unbiased(q, k, v, allowed, live)).abs().max() > 0.05  # the bias does move the output
    torch.testing.assert_close(sparse, dense, atol=1e-5, rtol=1e-4)
    for name, a, c in zip(["q", "k", "v", "bias"], sparse_grads, dense_grads, strict=True):
        torch.testing.assert_close(a, c, atol=1e-5, rtol=1e-4, msg=lambda m, n=name: f"d{n}: {m}")
    assert sparse[2].abs().max() == 0 and sparse[1, :, 4:].abs().max() == 0  # dead rows


def run_unbiased(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor,
                 live: torch.Tensor) -> torch.Tensor:
    from journey_model.models.attention import scaled_dot_product_attention

    return scaled_dot_product_attention(q, k, v, allowed, live)[0]


# ---------------------------------------------------------------------------------------------- invariances


@pytest.mark.parametrize("name", list_models())
def test_padding_changes_nothing(name: str) -> None:
    rng = random.Random(7)
    short, empty, long = make_example(rng, 3, "short"), make_example(rng, 0, "empty"), make_example(rng, 9, "long")
    long["forecast_event_type"] = [4, 5, 6, EOS_ID]
    model = build(name)
    for customer in (short, empty):
        alone = collate([customer])
        K = alone.forecast.shape[1]
        expected = customer_outputs(model(alone), 0, K)
        together = model(collate([long, customer]))
        assert_same(expected, customer_outputs(together, 1, K))
        wider = model(widen(alone, 4))
        assert_same(expected, customer_outputs(wider, 0, K))


@pytest.mark.parametrize("name", list_models())
def test_batch_composition_changes_nothing(name: str) -> None:
    rng = random.Random(3)
    examples = [make_example(rng, n, f"c{i}") for i, n in enumerate([4, 0, 7, 2, 5])]
    model = build(name)
    full = model(collate(examples))
    order = [3, 0, 4, 1]
    part = model(collate([examples[i] for i in order]))
    for new_row, old_row in enumerate(order):
        K = int(collate([examples[old_row]]).forecast.shape[1])
        assert_same(customer_outputs(full, old_row, K), customer_outputs(part, new_row, K))


def test_causal_mask_hides_the_future() -> None:
    rng = random.Random(5)
    example = make_example(rng, 6)
    changed = dict(example, event_type=list(example["event_type"]))
    changed["event_type"][4] = COMPLAINT if example["event_type"][4] != COMPLAINT else LOGIN
    for causal in (True, False):
        model = build("atrank", causal=causal, positional_encoding="learned", num_blocks=2)
        before = model.encode(collate([example])).states
        after = model.encode(collate([changed])).states
        earlier_same = torch.allclose(before[:, :4], after[:, :4], atol=1e-6)
        assert earlier_same == causal, f"causal={causal}"
        assert not torch.allclose(before[:, 4:], after[:, 4:], atol=1e-6)


def test_causal_blocks_mask_only_the_first_blocks() -> None:
    """causal_blocks=1: the first block's attention puts no weight on later behaviours, the second block's does."""
    example = make_example(random.Random(6), 6)
    model = build("atrank", causal_blocks=1, num_blocks=2).eval()
    attentions = model.encode(collate([example]), output_attentions=True).attentions
    later = torch.triu(torch.ones(6, 6, dtype=torch.bool), diagonal=1)
    assert attentions["self/block0"][..., later].abs().max() == 0
    assert attentions["self/block1"][..., later].min() > 0
    with pytest.raises(ValueError, match="causal_blocks = 3; expected 0 to num_blocks"):
        ATRankConfig(num_blocks=2, causal_blocks=3)


def test_causal_heads_look_back_while_the_others_see_everything() -> None:
    example = make_example(random.Random(7), 6)
    model = build("atrank", causal_heads=1, causal_blocks=0, num_blocks=2).eval()
    heads = model.config.num_heads
    attentions = model.encode(collate([example]), output_attentions=True).attentions
    later = torch.triu(torch.ones(6, 6, dtype=torch.bool), diagonal=1)
    for block in ("self/block0", "self/block1"):
        weights = attentions[block][0]  # (heads, T, T)
        assert weights[0][later].abs().max() == 0, block
        assert all(weights[h][later].min() > 0 for h in range(1, heads)), block
    # padding still changes nothing with a per-head mask
    padded = collate([example, make_example(random.Random(8), 9)])
    assert torch.allclose(model.encode(padded).states[0, :6], model.encode(collate([example])).states[0], atol=1e-5)
    with pytest.raises(ValueError, match="causal_heads = 5; expected 0 to num_heads"):
        ATRankConfig(num_heads=4, causal_heads=5)


def test_attention_dropout_apart_from_dropout() -> None:
    """attention_dropout=0 keeps the blocks' attention weights whole in training while dropout stays elsewhere."""
    batch = random_batch(seed=3)
    for attention_dropout, deterministic in ((None, False), (0.0, True)):
        model = build("atrank", dropout=0.5, residual_dropout=False, attention_dropout=attention_dropout).train()
        torch.manual_seed(0)
        first = model.encode(batch).states
        second = model.encode(batch).states
        assert torch.allclose(first, second) == deterministic, f"attention_dropout={attention_dropout}"
        assert model.encoder.blocks[0].attention.dropout == (0.5 if attention_dropout is None else 0.0)
        assert model.heads.attention.block.attention.dropout == 0.5  # the task queries' (Q x T) weights keep it


def shuffle_behaviours(example: dict, order: list[int]) -> dict:
    """The same behaviours (each with its type, time bucket and fields) in another order."""
    return {key: [value[i] for i in order] if key in ("event_type", "time_bucket") or key[:4] in ("cat_", "num_")
            else value for key, value in example.items()}


def test_without_positional_encoding_atrank_sees_order_only_through_time_buckets() -> None:
    """The reference has no positional encoding: shuffling behaviours (with their time buckets) changes nothing."""
    rng = random.Random(9)
    example = make_example(rng, 6)
    shuffled = shuffle_behaviours(example, [3, 0, 5, 1, 4, 2])
    for encoding, unchanged in (("none", True), ("sinusoidal", False)):
        model = build("atrank", positional_encoding=encoding, time_encoding="bucket", relative_time="none",
                      causal_blocks=0)  # no causal mask: order only through what is tested
        a = model(collate([example])).outcome_logits
        b = model(collate([shuffled])).outcome_logits
        assert torch.allclose(a, b, atol=1e-5) == unchanged, encoding


def test_relative_time_tells_the_order_of_behaviours_at_the_same_time_and_apart() -> None:
    """Without positions, a complaint then a fee and a fee then a complaint look alike unless the relative time
    (signed time between behaviours, the position breaking ties) tells them apart — as a bias or in content."""
    complaint_then_fee = {
        "event_type": [LOGIN, COMPLAINT, PAYMENT], "time_bucket": [6, 6, 6], "cat_item": [0, 3, 3],
        "cat_channel": [1, 0, 1], "num_amount": [float("nan"), float("nan"), 1.0],
    }
    fee_then_complaint = {key: [value[0], value[2], value[1]] for key, value in complaint_then_fee.items()}
    for gaps in ([40 * 86400.0, 40 * 86400.0, 40 * 86400.0], [50 * 86400.0, 41 * 86400.0, 40 * 86400.0]):
        for relative in ("none", "bias", "content"):
            model = build("atrank", positional_encoding="none", time_encoding="bucket", relative_time=relative,
                          causal_blocks=0)
            if relative != "none":  # the bias starts at zero: give it something to say
                torch.nn.init.normal_(model.encoder.relative_time.bias.weight, std=1.0)
            a = model(collate([dict(complaint_then_fee, time_gap=gaps)])).outcome_logits
            b = model(collate([dict(fee_then_complaint, time_gap=gaps)])).outcome_logits
            assert (not torch.allclose(a, b, atol=1e-5)) == (relative != "none"), (gaps, relative)


def test_relative_time_buckets_are_signed_and_logarithmic() -> None:
    relative = RelativeTime(num_heads=2, head_dim=4, num_buckets=20)
    gap = torch.tensor([[3600.0 * 24 * 30, 3600.0, 3600.0, 0.0]])  # 30 days ago, 1 h ago (twice), at the cut-off
    ids = relative.buckets(gap, gap)[0]
    middle = 20
    assert (ids.diagonal() == middle).all()  # each event with itself
    assert ids[1, 2] > middle > ids[2, 1]  # same time: the later position is later
    assert ids[0, 1] > middle and ids[1, 0] < middle  # signed: later and earlier
    assert ids[0, 1] - middle > ids[1, 3] - middle > 0  # a month is further than an hour
    q = torch.randn(1, 2, 4, 4)
    assert relative.score_bias(q, ids[None]).shape == (1, 2, 4, 4)
    weights = torch.softmax(torch.randn(1, 2, 4, 4), -1)
    term = relative.value_term(weights, ids[None])  # sum_j w_ij r_ij, computed per bucket
    expected = torch.einsum("bhij,ijd->bhid", weights, relative.values.weight[ids])
    torch.testing.assert_close(term, expected)


def test_rotary_time_scores_depend_on_the_time_between_behaviours_only() -> None:
    """With rotary time, qᵀk is the same when every behaviour moves by the same amount of time, and changes when
    one behaviour moves alone (and positions keep their own half of the pairs)."""
    torch.manual_seed(0)
    q, k = torch.randn(2, 4, 5, 16), torch.randn(2, 4, 5, 16)
    gaps = torch.tensor([[60.0, 30.0, 20.0, 3.0, 1.0], [9.0, 8.0, 7.0, 2.0, 0.5]]) * 86400.0

    def scores(gap: torch.Tensor) -> torch.Tensor:
        tables = rotary_time_tables(gap, 16, positions=True)
        return rotate(q, tables) @ rotate(k, tables).transpose(-1, -2)

    torch.testing.assert_close(scores(gaps + 11.5 * 86400.0), scores(gaps), atol=1e-3, rtol=1e-4)
    moved = gaps.clone()
    moved[:, 1] += 25 * 86400.0
    assert not torch.allclose(scores(moved), scores(gaps), atol=1e-2)
    # behaviours at one time: with positions their rotations still differ along the sequence, without they do not
    same_times = torch.full((1, 5), 86400.0)
    with_positions, _ = rotary_time_tables(same_times, 16, positions=True)
    time_only, _ = rotary_time_tables(same_times, 16, positions=False)
    assert not torch.allclose(with_positions[0, 0, 0], with_positions[0, 0, 1])
    assert torch.allclose(time_only[0, 0], time_only[0, 0, :1].expand(5, -1))
    with pytest.raises(ValueError, match="rotary_time needs hidden_size / num_heads divisible by 4"):
        ATRankConfig(hidden_size=24, num_heads=4, rotary_time=True)  # 6 dims a head


def test_rotary_time_tells_a_fee_two_weeks_after_a_complaint_from_one_six_weeks_after() -> None:
    """The late-fee rule's question, asked of the attention alone: the same behaviours in the same order, only the
    gap between complaint and fee differs; with rotary time the outcome differs, without it (the default) the
    two look alike to a model that reads time only through equal buckets."""
    example = {
        "event_type": [LOGIN, COMPLAINT, PAYMENT], "time_bucket": [6, 6, 6], "cat_item": [0, 3, 3],
        "cat_channel": [1, 0, 1], "num_amount": [float("nan"), float("nan"), 1.0],
    }
    near = [90 * 86400.0, 45 * 86400.0, 35 * 86400.0]
    far = [90 * 86400.0, 75 * 86400.0, 35 * 86400.0]
    torch.manual_seed(1)
    model = build("atrank", positional_encoding="none", time_encoding="bucket", rotary_time=True)
    a = model(collate([dict(example, time_gap=near)])).outcome_logits
    b = model(collate([dict(example, time_gap=far)])).outcome_logits
    assert not torch.allclose(a, b, atol=1e-5)
    plain = build("atrank", positional_encoding="none", time_encoding="bucket")
    assert torch.allclose(plain(collate([dict(example, time_gap=near)])).outcome_logits,
                          plain(collate([dict(example, time_gap=far)])).outcome_logits, atol=1e-6)


def test_linear_time_reads_the_time_between_two_behaviours_as_a_difference() -> None:
    """On log-minutes a fee 14 days after a complaint looks different 26 days ago than 60 days ago (a ratio);
    linear_time's tanh(days / 365) inputs see nearly the same step both times, and the default has none."""
    from journey_model.models.embedding import LINEAR_TIME_DAYS, ContinuousTime, log_minutes

    day = 86400.0
    gaps = torch.tensor([40.0, 26.0, 74.0, 60.0]) * day  # two complaint -> fee pairs, 14 days apart each
    with_linear = ContinuousTime(16, linear=True)
    assert with_linear.projection.in_features == 1 + 16 + len(LINEAR_TIME_DAYS)
    assert ContinuousTime(16).projection.in_features == 1 + 16
    step_log = log_minutes(gaps)
    assert abs((step_log[0] - step_log[1]) - (step_log[2] - step_log[3])) > 0.15  # the ratio moves with age
    yearly = LINEAR_TIME_DAYS.index(365.0)
    with torch.no_grad():  # read only the linear inputs: their weights 1, the rest 0
        with_linear.projection.weight.zero_()
        with_linear.projection.bias.zero_()
        with_linear.projection.weight[0, 1 + 16 + yearly] = 1.0
    code = with_linear(gaps)[:, 0]
    assert abs((code[0] - code[1]) - (code[2] - code[3])) < 0.05 * (code[0] - code[1]).abs()  # the same step
    assert code[0] - code[1] > 0.03  # 14 days is a visible step
    model = build("atrank", linear_time=True)
    assert model.encoder.embedding.continuous_time.linear_days == LINEAR_TIME_DAYS
    assert build("atrank").encoder.embedding.continuous_time.linear_days == ()  # off by default


def test_type_pair_bias_is_the_tables_entry_for_each_pair_and_starts_at_zero() -> None:
    bias = TypePairBias(num_types=6, num_heads=2)
    types = torch.tensor([[1, 4, 4, 0], [5, 2, 1, 3]])
    assert not bias(types, types).any()  # zero at first: a fresh model attends as without it
    torch.nn.init.normal_(bias.table)
    got = bias(types, types)  # (B, heads, T, T)
    expected = bias.table[:, types[:, :, None], types[:, None, :]].permute(1, 0, 2, 3)
    torch.testing.assert_close(got, expected)
    assert got.shape == (2, 2, 4, 4) and torch.equal(got[0, :, 1, 2], bias.table[:, 4, 4])


def test_type_pair_bias_moves_attention_by_types_and_stays_blind_to_order_alone() -> None:
    """With no positions and no relative time, the type-pair bias changes the scores (a fee may look for a
    complaint) but, being a function of the types only, never the order: shuffling changes nothing."""
    rng = random.Random(4)
    example = make_example(rng, 6)
    shuffled = shuffle_behaviours(example, [3, 0, 5, 1, 4, 2])
    model = build("atrank", positional_encoding="none", time_encoding="bucket", relative_time="none",
                  type_pair_bias=True, causal_blocks=0)
    before = model(collate([example])).outcome_logits
    torch.nn.init.normal_(model.encoder.type_pair.table, std=2.0)
    after = model(collate([example])).outcome_logits
    assert not torch.allclose(before, after, atol=1e-5)
    torch.testing.assert_close(model(collate([shuffled])).outcome_logits, after, atol=1e-5, rtol=0)
    assert build("atrank").encoder.type_pair is None  # off by default


def test_task_recency_is_the_tables_entry_for_each_age_bucket_and_starts_at_zero() -> None:
    bias = RecencyBias(num_queries=3, num_heads=2)
    gap = torch.tensor([[30.0, 86400.0, 2 * 365 * 86400.0, 0.0]])  # half a minute, a day, two years, padding
    assert minute_buckets(gap, 20).tolist() == [[0, 10, 19, 0]]  # log2(1 + minutes), capped at the last bucket
    assert not bias(gap).any()  # zero at first: a fresh model attends as without it
    torch.nn.init.normal_(bias.table)
    got = bias(gap)  # (B, heads, Q, T)
    assert got.shape == (1, 2, 3, 4)
    assert torch.equal(got[0, :, :, 1], bias.table[:, :, 10]) and torch.equal(got[0, :, :, 2], bias.table[:, :, 19])


def test_task_recency_moves_each_tasks_attention_by_age_and_padding_still_changes_nothing() -> None:
    """A bias that favours behaviours under a day old pulls every head of the task query onto them; the
    next-event query, with its own row of the table at zero, is not moved."""
    rng = random.Random(6)
    example = make_example(rng, 8)
    example["time_gap"] = [86400.0 * 90, 86400.0 * 60, 86400.0 * 30, 86400.0 * 9, 86400.0 * 3, 3600.0, 600.0, 60.0]
    model = build("atrank", tasks=["outcome", "next_event"], task_recency=True, time_encoding="bucket",
                  same_item_bias=False)
    batch = collate([example])
    before = model(batch, output_attentions=True)
    names = model.heads.attention.names
    churn = names.index("churn")
    with torch.no_grad():
        model.heads.attention.recency.table[:, churn, :11] = 10.0  # under ~1 day (bucket 10 = 17–34 hours)
        model.heads.attention.recency.table[:, churn, 11:] = -10.0
    after = model(batch, output_attentions=True)
    recent = torch.tensor(example["time_gap"]) < 86400.0
    assert before.attentions["task/churn"][0][:, recent].sum(-1).max() < 0.9  # content alone spreads it
    assert after.attentions["task/churn"][0][:, recent].sum(-1).min() > 0.999  # every head reads the recent ones
    torch.testing.assert_close(after.attentions["task/next_event"], before.attentions["task/next_event"])
    wider = model(widen(batch, 3))
    torch.testing.assert_close(wider.outcome_logits, after.outcome_logits, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="task_recency.*no time_gap.*journey prepare"):
        model(dataclasses.replace(batch, time_gap=None))


def test_same_item_bias_joins_behaviours_about_one_known_item_only() -> None:
    bias = SameItemBias(num_heads=2)
    items = torch.tensor([[5, 7, 5, OOV_ID, OOV_ID, PAD_ID]])
    known = torch.tensor([[True, True, True, False, False, False]])
    assert not bias(items, known).dense().any()  # zero at first
    with torch.no_grad():
        bias.weight.copy_(torch.tensor([1.5, -2.0]))
    pairs = bias(items, known)
    assert pairs.values.shape == (2, 2)  # the two matching pairs only, each with a value per head
    got = pairs.dense()  # (B, heads, T, T)
    same = torch.zeros(6, 6)
    same[0, 2] = same[2, 0] = 1.0  # <oov> and padding never match, nor a behaviour itself
    torch.testing.assert_close(got[0, 0], 1.5 * same)
    torch.testing.assert_close(got[0, 1], -2.0 * same)


def test_same_item_bias_by_time_weighs_a_repeat_by_the_time_between_the_two() -> None:
    bias = SameItemBias(num_heads=1, num_buckets=MINUTE_BUCKETS)
    items = torch.tensor([[5, 5, 5, 7]])
    known = torch.ones(1, 4, dtype=torch.bool)
    gap = torch.tensor([[86400.0 * 150, 86400.0 * 2, 86400.0 * 2 - 30.0, 60.0]])  # seconds before the cut-off
    assert not bias(items, known, gap).dense().any()  # zero at first
    with torch.no_grad():
        bias.weight.fill_(1.0)
        bias.by_time[0] = 2.0  # under a minute apart: 1 + 2
    got = bias(items, known, gap).dense()[0, 0]
    expected = torch.tensor([[0.0, 1.0, 1.0, 0.0], [1.0, 0.0, 3.0, 0.0], [1.0, 3.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(got, expected)
    with pytest.raises(ValueError, match="needs the behaviours' time_gap"):
        bias(items, known)
    assert build("atrank", same_item_bias=False).encoder.same_item is None  # the time part rides on the bias
    model = build("atrank", same_item_bias=True, same_item_time=True, time_encoding="bucket")
    assert model.encoder.same_item.by_time.shape == (MINUTE_BUCKETS, 2)
    with pytest.raises(ValueError, match="same_item_time.*no time_gap"):
        model(dataclasses.replace(random_batch(), time_gap=None))


def test_same_item_bias_tells_repeats_of_one_item_from_distinct_items_and_stays_blind_to_order() -> None:
    """With no positions and one time bucket, "three views of item 5" and "views of items 5, 6, 7" reach ATRank
    only through the items' embeddings; the bias moves the repeated journey's score and not the distinct one's
    (whose pairs never match), and shuffling either changes nothing."""
    def views(items: list[int]) -> dict[str, object]:
        example = make_example(random.Random(1), len(items))
        example.update(event_type=[VIEW] * len(items), time_bucket=[3] * len(items), cat_item=items,
                       cat_channel=[0] * len(items), num_amount=[float("nan")] * len(items))
        return example

    repeated, distinct = views([5, 5, 5, 2]), views([5, 6, 7, 2])
    model = build("atrank", positional_encoding="none", time_encoding="bucket", same_item_time=False, causal_blocks=0)
    before = {name: model(collate([ex])).outcome_logits for name, ex in (("repeated", repeated), ("distinct", distinct))}
    with torch.no_grad():
        model.encoder.same_item.weight.fill_(3.0)
    after = {name: model(collate([ex])).outcome_logits for name, ex in (("repeated", repeated), ("distinct", distinct))}
    assert not torch.allclose(before["repeated"], after["repeated"], atol=1e-4)
    torch.testing.assert_close(after["distinct"], before["distinct"])  # no pair matches
    shuffled = shuffle_behaviours(repeated, [3, 0, 2, 1])
    torch.testing.assert_close(model(collate([shuffled])).outcome_logits, after["repeated"], atol=1e-5, rtol=0)
    assert build("atrank").encoder.same_item.by_time is not None  # by default on, by time, where items are known
    no_item = dataclasses.replace(SPEC, item_field=None)
    assert build_model("atrank", no_item).encoder.same_item is None  # and off where they are not
    with pytest.raises(ValueError, match="same_item_bias needs an item field"):
        build_model("atrank", no_item, same_item_bias=True)


def test_stacked_and_bidirectional_rnn_variants_decode() -> None:
    batch = random_batch()
    for name, overrides in (("lstm", {"num_layers": 2}), ("gru-bahdanau", {"num_layers": 2}), ("gru", {"bidirectional": True})):
        model = build(name, **overrides)
        assert model(batch).forecast_logits.shape == (batch.batch_size, batch.forecast.shape[1], 10)
        assert model.forecast(batch, beam_size=2).tokens.shape == (batch.batch_size, SPEC.forecast_steps + 1)


def test_heterogeneous_groups_read_only_their_own_fields() -> None:
    """A login carries no item: its item id changes nothing. A payment's does. <oov> carries every field."""
    model = build("atrank")
    embedding = model.encoder.embedding
    base = {
        "event_type": [LOGIN, PAYMENT, 1],
        "time_bucket": [3, 2, 1],
        "time_gap": [900.0, 300.0, 60.0],
        "cat_item": [0, 5, 5],
        "cat_channel": [1, 1, 1],
        "num_amount": [float("nan"), 1.0, 1.0],
    }
    reference = embedding(collate([base]))
    for position, should_change in ((0, False), (1, True), (2, True)):
        items = list(base["cat_item"])
        items[position] = 7
        out = embedding(collate([dict(base, cat_item=items)]))
        changed = not torch.allclose(out[0, position], reference[0, position])
        assert changed == should_change, f"position {position}"
    padded = embedding(widen(collate([base]), 2))
    assert padded[0, 3:].abs().max() == 0


# ---------------------------------------------------------------------------------------------- learning


def _train(model, batch: SequenceBatch, steps: int, lr: float) -> tuple[float, float]:
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    first = last = 0.0
    for step in range(steps):
        loss = compute_losses(model(batch), batch)["loss"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        first = loss.item() if step == 0 else first
        last = loss.item()
    return first, last


@pytest.mark.parametrize("name", TRAINABLE)
def test_every_trainable_model_overfits_a_tiny_batch(name: str) -> None:
    batch = random_batch(seed=11, lengths=(4, 6, 3, 7, 5, 2, 6, 4))
    model = build(name)
    first, last = _train(model, batch, steps=60, lr=3e-2)
    assert last < 0.1 * first, f"{name}: loss {first:.3f} -> {last:.3f}"


def test_recent_items_counts_how_recent_the_next_item_was() -> None:
    """Next = the journey's second most recent distinct item (repeats inside the journey included), or item 7."""
    spec = dataclasses.replace(SPEC, categorical_vocab_sizes={"item": 60, "channel": 5})
    rng = random.Random(0)

    def examples(n: int) -> list[dict[str, object]]:
        out = []
        for i in range(n):
            items = [rng.randint(8, 59) for _ in range(rng.randint(3, 9))]
            items[-1] = items[-2] = items[-3] if rng.random() < 0.5 else items[-1]  # a repeated latest item
            distinct = list(dict.fromkeys(reversed(items)))
            example = make_example(rng, len(items))
            example.update(event_type=[PAYMENT] * len(items), cat_item=items,
                           next_item=distinct[1] if i % 4 and len(distinct) > 1 else 7)
            out.append(example)
        return out

    train, test = collate(examples(400)), collate(examples(200))
    model = build_model("recent-items", spec, tasks=["next_item"]).fit([train])
    assert model.rank_counts.argmax().item() == 2 and model.new_item_counts.argmax().item() == 7
    logits = model.eval()(test).next_item_logits
    repeats = test.next_item != 7  # three in four: the second most recent item comes first, item 7 second
    assert (logits.argmax(-1) == test.next_item)[repeats].all()
    assert (logits.topk(2).indices == test.next_item[:, None]).any(1).all()
    assert (logits[:, PAD_ID] < -1e30).all() and logits.logsumexp(-1).le(1e-4).all()
    padded = model(widen(test, 4)).next_item_logits
    assert torch.allclose(padded, logits)
    unknown = dataclasses.replace(test, next_item=torch.full_like(test.next_item, OOV_ID))  # a new, unknown item
    assert torch.isfinite(compute_losses(model(unknown), unknown)["loss"])


def _order_examples(rng: random.Random, n: int) -> list[dict[str, object]]:
    """label = 1 when a PAYMENT happens before a COMPLAINT; both occur once, among noise events."""
    examples = []
    for _ in range(n):
        length = rng.randint(4, 8)
        types = [rng.choice([TRANSFER, LOGIN, LOGOUT, VIEW]) for _ in range(length)]
        first, second = rng.sample(range(length), 2)
        types[first], types[second] = PAYMENT, COMPLAINT
        example = make_example(rng, length)
        example.update(
            event_type=types,
            time_bucket=[rng.randint(1, 13) for _ in types],  # recency tells nothing about order here
            cat_item=[1] * length,
            cat_channel=[1] * length,
            num_amount=[0.0] * length,
            y_churn=float(first < second),
            y_default=None,
        )
        examples.append(example)
    return examples


def test_atrank_learns_a_planted_order_signal() -> None:
    rng = random.Random(0)
    train = collate(_order_examples(rng, 512))
    test = collate(_order_examples(rng, 256))
    torch.manual_seed(0)
    model = build_model(
        "atrank", SPEC, tasks=["outcome"], field_dim=8, hidden_size=32, num_heads=4, positional_encoding="sinusoidal"
    )
    fit_minibatches(model, train, steps=150)
    with torch.no_grad():
        predicted = model(test).outcome_logits[:, 0] > 0
    accuracy = (predicted == (test.outcomes[:, 0] > 0.5)).float().mean().item()
    assert accuracy > 0.85, f"accuracy {accuracy:.3f} on the ORDER signal (chance 0.5)"


# ---------------------------------------------------------------------------------------------- count models


def test_markov_and_most_frequent_fit_by_counting() -> None:
    # a deterministic cycle PAYMENT -> LOGIN -> VIEW -> PAYMENT; after it, the journey ends
    cycle = [PAYMENT, LOGIN, VIEW]
    examples = []
    for start in range(3):
        types = [cycle[(start + i) % 3] for i in range(5)]
        example = make_example(random.Random(start), 5)
        example.update(
            event_type=types,
            next_event_type=cycle[(start + 5) % 3],
            forecast_event_type=[cycle[(start + 5 + i) % 3] for i in range(2)] + [EOS_ID],
        )
        examples.append(example)
    batch = collate(examples)
    markov = build_model("markov", SPEC)
    assert not markov.trainable and not list(markov.parameters())
    markov.update_counts(batch)
    assert int(markov.transitions[PAYMENT, LOGIN]) > 0 and int(markov.transitions[PAYMENT, VIEW]) == 0
    predicted = markov(batch).next_event_logits.argmax(-1)
    torch.testing.assert_close(predicted, batch.next_event_type)
    forecast = markov.forecast(batch, steps=4)
    expected_first = torch.tensor([cycle[(s + 5) % 3] for s in range(3)])
    torch.testing.assert_close(forecast.tokens[:, 0], expected_first)
    assert set(markov.state_dict()) == {"transitions", "destinations"}

    most = build_model("most-frequent", SPEC, count_history=False)
    most.fit([batch])
    counts = torch.bincount(batch.next_event_type, minlength=10)
    assert (most(batch).next_event_logits.argmax(-1) == counts.argmax()).all()
    assert most(batch).next_item_logits.shape == (3, 12)


# ---------------------------------------------------------------------------------------------- decoding


@pytest.mark.parametrize("name", FORECASTERS)
def test_greedy_equals_beam_of_one_and_beam_scores_are_model_scores(name: str) -> None:
    batch = random_batch(seed=2)
    model = build(name)
    steps = SPEC.forecast_steps + 1
    greedy = model.forecast(batch)
    beam1 = model.forecast(batch, beam_size=1)
    torch.testing.assert_close(greedy.tokens, beam1.tokens)
    torch.testing.assert_close(greedy.scores, beam1.scores, atol=1e-5, rtol=0)

    beam = model.forecast(batch, beam_size=3, output_attentions=True)
    B = batch.batch_size
    assert beam.tokens.shape == (B, steps) and beam.beams.shape == (B, 3, steps)
    assert (beam.beam_scores[:, :-1] >= beam.beam_scores[:, 1:]).all(), "beams are best first"
    for tokens in (beam.tokens, greedy.tokens):
        assert not torch.isin(tokens, torch.tensor([BOS_ID, 1])).any()
        eos_so_far = (tokens == EOS_ID).long().cumsum(1)
        after_eos = torch.cat([torch.zeros(B, 1, dtype=torch.long), eos_so_far[:, :-1]], dim=1) > 0
        assert (tokens[after_eos] == PAD_ID).all(), "padding after <eos>"
        assert (tokens[~after_eos] != PAD_ID).all(), "no padding up to <eos>"
    # re-score the best beam with teacher forcing: the same total log-probability
    rescored = model(dataclasses.replace(batch, forecast=beam.tokens)).forecast_logits.log_softmax(-1)
    token_scores = rescored.gather(-1, beam.tokens[..., None]).squeeze(-1)
    total = token_scores.masked_fill(beam.tokens == PAD_ID, 0.0).sum(1)
    torch.testing.assert_close(total, beam.scores, atol=1e-4, rtol=0)
    assert ((beam.tokens == EOS_ID).any(1) == beam.finished).all()
    if name in ("gru-bahdanau", "gru-luong", "lstm-luong", "lstm-bahdanau"):
        assert beam.attentions["forecast/attention"].shape == (B, steps, batch.event_type.shape[1])


# ---------------------------------------------------------------------------------------------- losses


def test_losses_ignore_unknown_targets() -> None:
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]], requires_grad=True)
    targets = torch.tensor([[1.0, float("nan")], [float("nan"), 0.0]])
    expected = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(3.0))) / 2
    assert outcome_loss(logits, targets).item() == pytest.approx(expected, rel=1e-5)
    nothing_known = outcome_loss(logits, torch.full((2, 2), float("nan")))
    nothing_known.backward()
    assert nothing_known.item() == 0.0 and logits.grad is not None

    scores = torch.randn(3, 6)
    known_only = next_event_loss(scores[:2], torch.tensor([4, 5]))
    assert next_event_loss(scores, torch.tensor([4, 5, 0])).item() == pytest.approx(known_only.item(), rel=1e-6)
    assert next_item_loss(None, torch.randn(3, 4), torch.zeros(3, dtype=torch.long)).item() == 0.0

    steps = torch.randn(2, 3, 8)
    targets = torch.tensor([[4, EOS_ID, 0], [5, 6, EOS_ID]])
    flat = next_event_loss(steps.reshape(6, 8)[[0, 1, 3, 4, 5]], targets.reshape(6)[[0, 1, 3, 4, 5]])
    assert forecast_loss(steps, targets).item() == pytest.approx(flat.item(), rel=1e-6)


# ---------------------------------------------------------------------------------------------- configs and errors


def test_reference_config_reproduces_the_reference_code() -> None:
    one = ATRankConfig.reference()
    multi = ATRankConfig.reference(multi_behaviour=True)
    assert (one.field_dim, one.hidden_size, one.num_heads, one.num_blocks) == (64, 128, 8, 1)
    assert multi.hidden_size == 256 and multi.dropout == 0.1 and one.dropout == 0.0
    assert one.layer_norm_eps == 1e-8 and one.embedding_init == "glorot" and one.positional_encoding == "none"
    # Its optimiser is the trainer's: the "atrank-reference" recipe (tests/test_training.py checks it).
    assert not LEGACY_TRAINING_FIELDS & {f.name for f in dataclasses.fields(one)}
    model = build_model("atrank", SPEC, config=ATRankConfig.reference())
    assert model.encoder.blocks[0].feed_forward.inner.out_features == 32  # H -> H/4 -> H
    assert model.encoder.blocks[0].attention_norm.eps == 1e-8


def test_luong_score_is_chosen_by_override() -> None:
    batch = random_batch()
    for score in ("dot", "general", "concat"):
        model = build("lstm-luong", luong_score=score)
        assert model.decoder.attention.score_kind == score
        assert model(batch).forecast_logits.shape[0] == batch.batch_size


def test_clear_errors() -> None:
    with pytest.raises(UnknownModelError, match="valid models: atrank, atrank-reference, gru"):
        build_model("atrnak", SPEC)
    with pytest.raises(UnsupportedTaskError, match=r"'markov' cannot answer task 'outcome'"):
        build_model("markov", SPEC, tasks=["outcome"])
    with pytest.raises(UnsupportedTaskError, match=r"'bag' cannot answer task 'forecast'"):
        build_model("bag", SPEC, tasks=["forecast"])
    with pytest.raises(UnsupportedTaskError, match=r"'bag' cannot answer task 'forecast'"):
        build_model("bag", SPEC).forecast(random_batch())
    with pytest.raises(UnsupportedTaskError, match="'atrank' cannot answer task 'forecast'.*'transformer'"):
        build_model("atrank", SPEC, **TINY_SEQUENCE).forecast(random_batch())
    with pytest.raises(UnsupportedTaskError, match="unknown task 'churn'"):
        build_model("gru", SPEC, tasks=["churn"])
    no_outcomes = dataclasses.replace(SPEC, outcome_names=[])
    with pytest.raises(UnsupportedTaskError, match="outcome_names"):
        build_model("atrank", no_outcomes, tasks=["outcome"])
    with pytest.raises(ValueError, match=r"unknown config fields \['hiden_size'\]"):
        build_model("atrank", SPEC, hiden_size=8)
    with pytest.raises(ValueError, match="cell is fixed to 'lstm'"):
        build_model("lstm-luong", SPEC, cell="gru")
    with pytest.raises(ValueError, match="luong_score = 'cosine'"):
        build_model("gru-luong", SPEC, luong_score="cosine")
    bad = random_batch()
    bad.categorical["item"][2, 1] = 40
    with pytest.raises(ValueError, match=r"categorical\['item'\]: id 40 at row 2 \(customer 'c2'\), position 1"):
        build("atrank")(bad)


def journeys_with_complaints(rng: random.Random, n: int) -> tuple[list[dict[str, object]], torch.Tensor]:
    """Random journeys; churn = two or more complaints (a count, in any order)."""
    examples = []
    for i in range(n):
        example = make_example(rng, rng.randint(3, 9), f"c{i}")
        complaints = rng.choice([0, 1, 2, 3])
        positions = rng.sample(range(len(example["event_type"])), min(complaints, len(example["event_type"])))
        example["event_type"] = [COMPLAINT if j in positions else (PAYMENT if t == COMPLAINT else t)
                                 for j, t in enumerate(example["event_type"])]
        examples.append(example)
    labels = torch.tensor([float(sum(t == COMPLAINT for t in ex["event_type"]) >= 2) for ex in examples])
    return examples, labels


@pytest.mark.parametrize("name", ["atrank", "gru-bahdanau", "gru-attn"])
def test_wide_outcomes_start_at_the_bias_then_add_the_totals_linearly_whatever_the_order(name: str) -> None:
    model = build(name, wide=True, wide_network_head=False, tasks=[Task.OUTCOME])
    batch = random_batch()
    torch.testing.assert_close(model(batch).outcome_logits, torch.zeros(6, 2))  # both parts silent at first
    with torch.no_grad():
        scores = model.scores if name == "gru-attn" else model.heads.scores
        scores.wide.event_type.weight[COMPLAINT, 0] = 1.0
    rng = random.Random(4)
    examples, _ = journeys_with_complaints(rng, 8)
    logits = model(collate(examples)).outcome_logits[:, 0]
    counts = torch.tensor([sum(t == COMPLAINT for t in ex["event_type"]) for ex in examples], dtype=torch.float32)
    torch.testing.assert_close(logits, torch.log1p(counts))  # the network's outcome weights are still zero
    reversed_ = [shuffle_behaviours(ex, list(range(len(ex["event_type"])))[::-1]) for ex in examples]
    torch.testing.assert_close(model(collate(reversed_)).outcome_logits[:, 0], logits)
    torch.testing.assert_close(model(widen(collate(examples), 3)).outcome_logits[:, 0], logits)  # padding: nothing


def test_wide_atrank_learns_a_planted_count_in_a_few_steps() -> None:
    torch.manual_seed(0)
    model = build_model("atrank", SPEC, tasks=[Task.OUTCOME], **{**TINY["atrank"], "wide": True}).train()
    rng = random.Random(11)
    train_examples, train_labels = journeys_with_complaints(rng, 128)
    test_examples, test_labels = journeys_with_complaints(rng, 128)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    batch = collate(train_examples)
    for _ in range(15):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(batch).outcome_logits[:, 0], train_labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    scores = model.eval()(collate(test_examples)).outcome_logits[:, 0]
    positives, negatives = scores[test_labels == 1], scores[test_labels == 0]
    auc = (positives[:, None] > negatives[None, :]).float().mean().item()
    assert auc > 0.9, auc  # held-out journeys ranked by their complaints, after 15 steps


def test_the_wide_network_head_gives_the_network_a_gradient_from_the_first_step() -> None:
    batch = random_batch()
    batch.outcomes = torch.tensor([[1.0, 0.0], [0.0, float("nan")]] * 3)

    def encoder_gradient(model: torch.nn.Module) -> float:
        model.zero_grad()
        compute_losses(model(batch), batch)["loss"].backward()
        return sum(p.grad.abs().sum().item() for n, p in model.named_parameters()
                   if n.startswith("encoder.") and p.grad is not None)

    torch.manual_seed(0)
    wide = build("atrank", wide=True, wide_network_head=False, tasks=[Task.OUTCOME]).train()
    assert encoder_gradient(wide) == 0.0  # combined scores only: the network's outcome weights start at zero
    torch.manual_seed(0)
    headed = build("atrank", wide=True, wide_network_head=True, tasks=[Task.OUTCOME]).train()
    assert encoder_gradient(headed) > 0.0
    output = headed(batch)
    assert not torch.allclose(output.outcome_logits, output.network_outcome_logits)  # two readouts of the network
    combined = outcome_loss(output.outcome_logits, batch.outcomes)
    network = outcome_loss(output.network_outcome_logits, batch.outcomes)
    training = compute_losses(output, batch)
    torch.testing.assert_close(training["outcome"], combined)
    torch.testing.assert_close(training["loss"], combined + network)  # trained beside the combined scores
    torch.testing.assert_close(compute_losses(output, batch, auxiliary=False)["loss"], combined)  # reported: the
    # predictions' loss alone, comparable with any other model's
    assert build("atrank", wide=False, tasks=[Task.OUTCOME]).heads.scores.network_outcome is None  # rides on wide


def test_default_atrank_is_wide_and_deep_with_the_networks_own_head_and_padding_changes_nothing() -> None:
    torch.manual_seed(3)
    model = build_model("atrank", SPEC, tasks=[Task.OUTCOME], **TINY_SEQUENCE).eval()
    scores = model.heads.scores
    assert scores.wide is not None and scores.network_outcome is not None
    with torch.no_grad():  # as after training: every part of the score speaks
        for table in [scores.outcome_weight, *(t.weight for t in scores.wide.tables())]:
            table.normal_()
    batch = random_batch()
    output = model(batch)
    assert output.outcome_logits.abs().min() > 0 and output.network_outcome_logits is not None
    padded = model(widen(batch, 4))
    torch.testing.assert_close(padded.outcome_logits, output.outcome_logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(padded.network_outcome_logits, output.network_outcome_logits, atol=1e-5, rtol=0)
    reference = build_model("atrank-reference", SPEC, tasks=[Task.OUTCOME])  # the reference code: no counts
    assert reference.heads.scores.wide is None and reference.encoder.same_item is None


def test_a_bag_saved_before_its_tables_moved_into_counts_loads() -> None:
    bag = build("bag")
    with torch.no_grad():
        bag.counts.event_type.weight[COMPLAINT] = 0.7
    old_keys = {key.removeprefix("counts."): value for key, value in bag.state_dict().items()}
    assert "event_type.weight" in old_keys
    fresh = build("bag")
    fresh.load_state_dict(old_keys)
    torch.testing.assert_close(fresh(random_batch()).outcome_logits, bag(random_batch()).outcome_logits)

"""Attributions (journey_model.inference.attribution) and reason codes (journey_model.inference.reason_codes).

Tiny models trained on a planted signal (churn = a complaint somewhere in the journey, default = a missed
payment) must put the planted event first far more often than chance with every method they support; padding
and absent events change nothing; integrated gradients agree with Captum's and are complete; reason codes map
hand-made events to the expected codes; methods a model cannot support fail with a clear error.
"""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from captum.attr import IntegratedGradients

from journey_model.data.batch import SequenceBatch, collate_examples
from journey_model.data.features import BehaviourGroup, FeatureSpec
from journey_model.data.preprocessing import Preprocessor
from journey_model.data.schema import ReasonCode
from journey_model.inference.attribution import (
    METHOD_ATTENTION,
    METHOD_INTEGRATED_GRADIENTS,
    METHOD_OCCLUSION,
    METHOD_ROLLOUT,
    METHOD_SCREENED_OCCLUSION,
    AttributionConfig,
    AttributionUnavailableError,
    attention_reads_events,
    attribute_batch,
    available_methods,
    check_method,
    default_method,
    embedding_modules,
    select_rows,
)
from journey_model.inference.explain import (
    REASON_CODE_TYPE,
    explain_rows,
    reason_codes_column,
    reason_text_column,
)
from journey_model.inference.reason_codes import EventFacts, reason_code_hits, reason_text
from journey_model.inference.scorer import Scorer
from journey_model.models import build_model
from journey_model.training.losses import compute_losses

torch.set_num_threads(1)

PAYMENT, TRANSFER, LOGIN, VIEW, MISSED, COMPLAINT = range(4, 10)
NOISE = [PAYMENT, TRANSFER, LOGIN, VIEW]
SPEC = FeatureSpec(
    event_type_vocab_size=10,
    categorical_vocab_sizes={"item": 8},
    numeric_fields=["amount"],
    num_time_buckets=14,
    behaviour_groups=[
        BehaviourGroup("money", [PAYMENT, TRANSFER, MISSED], ["item"], ["amount"]),
        BehaviourGroup("other", [LOGIN, VIEW, COMPLAINT], ["item"], []),
    ],
    outcome_names=["churn", "default"],
    item_field="item",
)
TINY = dict(field_dim=8, hidden_size=16, num_heads=2, dropout=0.0)
SIGNED = (METHOD_INTEGRATED_GRADIENTS, METHOD_OCCLUSION, METHOD_SCREENED_OCCLUSION)


def planted_example(rng: random.Random, customer: str) -> tuple[dict[str, object], dict[str, int | None]]:
    """A random journey with a complaint (churn) and / or a missed payment (default) planted at random places."""
    n = rng.randint(6, 14)
    types = [rng.choice(NOISE) for _ in range(n)]
    planted: dict[str, int | None] = {"churn": None, "default": None}
    for outcome, kind in (("churn", COMPLAINT), ("default", MISSED)):
        if rng.random() < 0.5:
            position = rng.randrange(len(types) + 1)
            types.insert(position, kind)
            planted = {k: (v + 1 if v is not None and v >= position else v) for k, v in planted.items()}
            planted[outcome] = position
    n = len(types)
    example = {
        "customer_id": customer,
        "event_type": types,
        "time_bucket": sorted((rng.randint(1, 13) for _ in range(n)), reverse=True),
        "cat_item": [rng.randint(1, 7) for _ in types],
        "num_amount": [rng.gauss(0, 1) if t in (PAYMENT, TRANSFER, MISSED) else float("nan") for t in types],
        "y_churn": float(planted["churn"] is not None),
        "y_default": float(planted["default"] is not None),
    }
    example["time_gap"] = [86400.0 * 2 ** (bucket - 1.5) for bucket in example["time_bucket"]]  # inside the bucket
    return example, planted


def collate(examples: list[dict[str, object]]) -> SequenceBatch:
    return collate_examples(examples, ["item"], ["amount"], ["churn", "default"])


def train_planted(name: str, steps: int = 150) -> torch.nn.Module:
    rng = random.Random(1)
    batch = collate([planted_example(rng, f"t{i}")[0] for i in range(512)])
    torch.manual_seed(0)
    model = build_model(name, SPEC, tasks=["outcome"], **({} if name == "bag" else TINY))
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(steps):
        index = torch.randint(0, batch.batch_size, (64,))
        part = select_rows(batch, index)
        loss = compute_losses(model(part), part)["loss"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


@pytest.fixture(scope="module")
def planted_models() -> dict[str, torch.nn.Module]:
    return {name: train_planted(name) for name in ("atrank", "atrank-reference", "gru-bahdanau", "bag")}


@pytest.fixture(scope="module")
def planted_test() -> tuple[list[dict[str, object]], list[dict[str, int | None]]]:
    rng = random.Random(7)
    pairs = [planted_example(rng, f"c{i}") for i in range(80)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


# ---------------------------------------------------------------------------------------------- right answers


def test_deep_atrank_is_explained_by_occlusion_the_reference_by_its_attention(planted_models):
    """Journey's default ATRank mixes events across two blocks: its task-query weights do not single out the
    planted event, so (screened) occlusion explains it by default; the one-block reference keeps its own
    attention."""
    assert not attention_reads_events(planted_models["atrank"])
    assert default_method(planted_models["atrank"]) == METHOD_SCREENED_OCCLUSION
    assert attention_reads_events(planted_models["atrank-reference"])
    assert default_method(planted_models["atrank-reference"]) == METHOD_ATTENTION


@pytest.mark.parametrize("name", ["atrank", "atrank-reference", "gru-bahdanau", "bag"])
def test_each_method_puts_the_planted_event_first_far_more_often_than_chance(planted_models, planted_test, name):
    model = planted_models[name]
    examples, planted = planted_test
    batch = collate(examples)
    usable = [m for m, why in available_methods(model).items() if why is None]
    assert METHOD_OCCLUSION in usable
    # pre-norm ATRank: integrated gradients are refused (test_integrated_gradients_are_refused_for_pre_norm_atrank)
    assert (METHOD_INTEGRATED_GRADIENTS in usable) == (name != "atrank")
    for method in usable:
        attributions, _ = attribute_batch(model, batch, method)
        for outcome in ("churn", "default"):
            task = outcome if outcome in attributions.importance else "all_tasks"
            rows = [b for b, p in enumerate(planted) if p[outcome] is not None]
            first = np.mean([attributions.ranking(task, b)[0] == planted[b][outcome] for b in rows])
            chance = np.mean([1 / int(batch.lengths[b]) for b in rows])
            if method == METHOD_ATTENTION and task == "all_tasks":
                continue  # one pooling weight for both outcomes cannot single out each outcome's own event
            if method in (METHOD_ATTENTION, METHOD_ROLLOUT) and not attention_reads_events(model):
                continue  # deep ATRank: its attention weights are not the events' weights (checked below)
            floor = 0.5 if method in SIGNED or name.startswith("atrank") else 2 * chance
            if not attention_reads_events(model) and method != default_method(model):
                # deep ATRank: integrated gradients along a path through two blocks find the planted event less
                # often (about a quarter of cases here) than occlusion, its default, which is held to the floor
                floor, chance_factor = 2 * chance, 2
            else:
                chance_factor = 3
            assert first > max(floor, chance_factor * chance), (
                f"{name} {method} {outcome}: first {first:.2f}, chance {chance:.2f}")
            if method in SIGNED:  # positive = pushes the probability up
                assert np.mean([attributions.of(task, b)[planted[b][outcome]] > 0 for b in rows]) > 0.8


def test_integrated_gradients_are_refused_for_pre_norm_atrank(planted_models, planted_test):
    """The default ATRank's output is nearly blind to the scale of all embeddings together (pre-norm blocks and a
    final LayerNorm), which is the path integrated gradients walk: on the planted journeys their ranking put the
    missed payment first in 0.14 of cases after 150 steps and 0.68 after 60, where occlusion did in all. Journey
    refuses the method for such a model, with the reason, instead of returning reasons that are wrong."""
    model = planted_models["atrank"]
    why = available_methods(model)[METHOD_INTEGRATED_GRADIENTS]
    assert why is not None and "pre-norm" in why and METHOD_OCCLUSION in why
    with pytest.raises(AttributionUnavailableError, match="pre-norm"):
        attribute_batch(model, collate(planted_test[0][:2]), METHOD_INTEGRATED_GRADIENTS)
    # the Transformer reads the journey through the same encoder, so it is refused for the same reason
    transformer = build_model("transformer", SPEC, tasks=["outcome"], **TINY)
    assert "pre-norm" in (available_methods(transformer)[METHOD_INTEGRATED_GRADIENTS] or "")
    reference = build_model("atrank-reference", SPEC, tasks=["outcome"], **TINY)
    assert available_methods(reference)[METHOD_INTEGRATED_GRADIENTS] is None  # post-norm: offered


def test_integrated_gradients_match_captum(planted_models, planted_test):
    model = planted_models["atrank-reference"]
    batch = collate(planted_test[0][:6])
    steps = 8
    ours, _ = attribute_batch(model, batch, METHOD_INTEGRATED_GRADIENTS, config=AttributionConfig(ig_steps=steps))
    embedding = embedding_modules(model)[0]
    with torch.no_grad():
        inputs = embedding(batch)
    replaced: dict[str, torch.Tensor] = {}
    handle = embedding.register_forward_hook(lambda module, args, output: replaced["value"])

    def forward(values: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        replaced["value"] = values
        return torch.sigmoid(model(select_rows(batch, rows)).outcome_logits)

    try:
        theirs = IntegratedGradients(forward).attribute(
            inputs, baselines=torch.zeros_like(inputs), target=0, additional_forward_args=(torch.arange(6),),
            n_steps=steps, method="riemann_middle").sum(-1).detach().numpy()
    finally:
        handle.remove()
    np.testing.assert_allclose(ours.importance["churn"], theirs, atol=1e-5)


def test_integrated_gradients_are_complete_for_a_recurrent_model(planted_models, planted_test):
    """Importances sum to p(journey) - p(every event embedding zeroed). (Not asserted for ATRank: its post-norm
    LayerNorm makes the output nearly invariant to the embedding's scale, so the path's change sits at alpha ~ 0.)"""
    model = planted_models["gru-bahdanau"]
    batch = collate(planted_test[0][:6])
    ours, _ = attribute_batch(model, batch, METHOD_INTEGRATED_GRADIENTS, config=AttributionConfig(ig_steps=128))
    blank = embedding_modules(model)[0].register_forward_hook(lambda module, args, output: torch.zeros_like(output))
    try:
        with torch.no_grad():
            p_blank = torch.sigmoid(model(batch).outcome_logits).numpy()
    finally:
        blank.remove()
    for j, outcome in enumerate(("churn", "default")):
        gap = ours.probabilities[outcome] - p_blank[:, j]
        np.testing.assert_allclose(ours.importance[outcome].sum(1), gap, atol=0.02)

# ---------------------------------------------------------------------------------------------- invariances


@pytest.mark.parametrize(("name", "method"), [("atrank", METHOD_ATTENTION), ("atrank", METHOD_ROLLOUT),
                                              ("atrank-reference", METHOD_INTEGRATED_GRADIENTS),
                                              ("atrank", METHOD_OCCLUSION), ("atrank", METHOD_SCREENED_OCCLUSION)])
def test_padding_changes_nothing(planted_models, planted_test, name, method):
    model = planted_models[name]
    examples = planted_test[0]
    short = min(range(len(examples)), key=lambda i: len(examples[i]["event_type"]))
    long = max(range(len(examples)), key=lambda i: len(examples[i]["event_type"]))
    alone, _ = attribute_batch(model, collate([examples[short]]), method)
    padded, _ = attribute_batch(model, collate([examples[short], examples[long]]), method)
    n = int(alone.lengths[0])
    assert int(padded.lengths[0]) == n
    for task in alone.importance:
        np.testing.assert_allclose(alone.of(task, 0), padded.of(task, 0), atol=1e-5)
        assert not padded.importance[task][0, n:].any()  # padding gets exactly nothing


def test_occluding_an_absent_event_changes_nothing(planted_models, planted_test):
    examples = planted_test[0][:8]
    batch = collate(examples)
    T = batch.mask.shape[1]
    for name, model in planted_models.items():
        rows = torch.arange(batch.batch_size)
        keep = torch.ones(batch.batch_size, T, dtype=torch.bool)
        keep[:, -1] = False  # the last column: padding for every customer shorter than T
        shorter = batch.lengths < T
        with torch.no_grad():
            before = model(batch).outcome_logits
            after = model(select_rows(batch, rows, keep)).outcome_logits
        torch.testing.assert_close(after[shorter], before[shorter], atol=1e-5, rtol=0, msg=name)
        occluded, _ = attribute_batch(model, batch, METHOD_OCCLUSION)
        for b in range(batch.batch_size):
            assert not occluded.importance["churn"][b, int(batch.lengths[b]):].any()


def test_occlusion_prunes_old_events_into_one_coalition(planted_models, planted_test):
    model = planted_models["gru-bahdanau"]
    batch = collate(planted_test[0][:10])
    full, _ = attribute_batch(model, batch, METHOD_OCCLUSION)
    pruned, _ = attribute_batch(model, batch, METHOD_OCCLUSION, config=AttributionConfig(recent_events=3))
    for b in range(batch.batch_size):
        n = int(batch.lengths[b])
        np.testing.assert_allclose(pruned.of("churn", b)[n - 3:], full.of("churn", b)[n - 3:], atol=1e-6)
        old = pruned.of("churn", b)[: n - 3]
        assert np.allclose(old, old[0])  # the coalition's drop, shared equally


@pytest.mark.parametrize("trained", [True, False])
def test_screened_occlusion_leaves_out_the_events_rollout_ranks_highest(planted_models, planted_test, trained):
    """Screened occlusion measures the very drops occlusion measures, on each outcome's top rollout events only
    (0 elsewhere) -- and on all of a customer's events when none of those picked raises any outcome (an untrained
    model's rollout says little, and that customer would get no reasons); screening every event is occlusion."""
    torch.manual_seed(5)  # an untrained model whose top rollout events raise neither outcome for 5 of 24 customers
    untrained = build_model("atrank", SPEC, tasks=["outcome"], wide=False, **TINY)  # Wide & Deep starts silent
    model = planted_models["atrank"] if trained else untrained.eval()
    batch = collate(planted_test[0][:24])
    full, _ = attribute_batch(model, batch, METHOD_OCCLUSION)
    rollout, _ = attribute_batch(model, batch, METHOD_ROLLOUT)
    k = 2
    screened, _ = attribute_batch(model, batch, METHOD_SCREENED_OCCLUSION, config=AttributionConfig(screen_events=k))
    assert screened.method == METHOD_SCREENED_OCCLUSION
    tasks = ("churn", "default")
    silent_rows = 0
    for b in range(batch.batch_size):
        n = int(batch.lengths[b])
        picked = sorted(set().union(*(np.argsort(-rollout.of(t, b), kind="stable")[:k].tolist() for t in tasks)))
        silent = not any((full.of(t, b)[picked] > 0).any() for t in tasks)
        silent_rows += silent
        for task in tasks:
            values, expected = screened.of(task, b), full.of(task, b).copy()
            if not silent:
                expected[[p for p in range(n) if p not in picked]] = 0.0
            np.testing.assert_allclose(values, expected, atol=1e-6)
    assert silent_rows < batch.batch_size if trained else 0 < silent_rows < batch.batch_size
    everything, _ = attribute_batch(model, batch, METHOD_SCREENED_OCCLUSION,
                                    config=AttributionConfig(screen_events=batch.mask.shape[1]))
    for task in tasks:
        np.testing.assert_allclose(everything.importance[task], full.importance[task], atol=1e-6)


# ---------------------------------------------------------------------------------------------- availability


def test_methods_a_model_cannot_support_fail_clearly(planted_models):
    bag = planted_models["bag"]
    assert available_methods(bag)[METHOD_OCCLUSION] is None
    with pytest.raises(AttributionUnavailableError, match="no attention over events"):
        check_method(bag, METHOD_ATTENTION)
    with pytest.raises(AttributionUnavailableError, match="no self-attention blocks"):
        check_method(planted_models["gru-bahdanau"], METHOD_ROLLOUT)
    with pytest.raises(AttributionUnavailableError, match="no self-attention blocks"):
        check_method(planted_models["gru-bahdanau"], METHOD_SCREENED_OCCLUSION)
    with pytest.raises(AttributionUnavailableError, match="unknown attribution method"):
        check_method(bag, "shap")
    markov = build_model("markov", SPEC)
    assert all(why is not None for why in available_methods(markov).values())
    with pytest.raises(AttributionUnavailableError, match="no outcome task"):
        attribute_batch(markov, collate([planted_example(random.Random(0), "m")[0]]), METHOD_OCCLUSION)


# ---------------------------------------------------------------------------------------------- reason codes


CHURN_CODES = [
    ReasonCode("FEE_AFTER_COMPLAINT", "fee", "a fee charged within two weeks of a complaint", after="complaint",
               after_within_days=14, within_days=120),
    ReasonCode("COMPLAINT_RECENT", "complaint", "a complaint in the last four months", within_days=120),
    ReasonCode("FEE_RECENT", "fee", "a fee charged in the last four months", within_days=120),
    ReasonCode("RISKY_SPENDING", "card_payment", "gambling or cash-advance spending", items=["gambling"]),
]


def facts(rows: list[tuple[str, str | None, float, float]]) -> EventFacts:
    types, items, low, high = zip(*rows, strict=True)
    return EventFacts(list(types), list(items), np.array(low), np.array(high))


def test_reason_codes_of_a_hand_made_journey():
    journey = facts([
        ("login", None, 31, 63),  # 0
        ("complaint", None, 15, 31),  # 1
        ("fee", None, 7, 15),  # 2: within 14 days after the complaint (buckets allow a gap of 0)
        ("card_payment", "gambling", 3, 7),  # 3
        ("card_payment", "groceries", 3, 7),  # 4
        ("login", None, 0, 1),  # 5
    ])
    importance = np.array([0.01, 0.20, 0.30, 0.05, 0.04, -0.5])
    hits = reason_code_hits(importance, journey, CHURN_CODES)
    assert [h.code for h in hits] == ["FEE_AFTER_COMPLAINT", "COMPLAINT_RECENT", "RISKY_SPENDING"]
    assert hits[0].events == [2] and abs(hits[0].weight - 0.30) < 1e-12
    assert hits[0].sentence == "a fee charged within two weeks of a complaint"
    # an unmatched event gets EVENT_<TYPE>; negative importances never become reasons
    alone = reason_code_hits(np.array([0.0, 0.0, 0.0, 0.0, 0.9, -0.5]), journey, CHURN_CODES)
    assert [h.code for h in alone] == ["EVENT_CARD_PAYMENT"]
    # an importance within float noise of zero is no reason either (nor an event of one)
    noisy = reason_code_hits(np.array([3e-8, 0.0, 0.0, 0.0, 0.9, 2e-3]), journey, CHURN_CODES)
    assert [(h.code, h.events) for h in noisy] == [("EVENT_CARD_PAYMENT", [4]), ("EVENT_LOGIN", [5])]
    # a fee before the complaint, or long after it, is only a recent fee
    reversed_order = facts([("fee", None, 15, 31), ("complaint", None, 7, 15)])
    assert reason_code_hits(np.array([0.5, 0.1]), reversed_order, CHURN_CODES)[0].code == "FEE_RECENT"
    late = facts([("complaint", None, 63, 127), ("fee", None, 3, 7)])
    assert reason_code_hits(np.array([0.1, 0.5]), late, CHURN_CODES)[0].code == "FEE_RECENT"
    # too old for every window: the complaint of 200+ days falls back to the generic code
    old = facts([("complaint", None, 255, 511)])
    assert reason_code_hits(np.array([0.4]), old, CHURN_CODES)[0].code == "EVENT_COMPLAINT"
    # codes with the same name sum their events; at most three distinct codes are kept
    two_complaints = facts([("complaint", None, 7, 15), ("complaint", None, 3, 7), ("login", None, 0, 1),
                            ("transfer_in", None, 0, 1), ("fee", None, 0, 1)])
    hits = reason_code_hits(np.array([0.2, 0.2, 0.3, 0.1, 0.05]), two_complaints, CHURN_CODES)
    assert [h.code for h in hits] == ["COMPLAINT_RECENT", "EVENT_LOGIN", "EVENT_TRANSFER_IN"]
    assert hits[0].events == [0, 1] and abs(hits[0].weight - 0.4) < 1e-12
    text = reason_text({"churn": hits, "default": []})
    assert text == ("churn: COMPLAINT_RECENT — a complaint in the last four months; EVENT_LOGIN — login activity; "
                    "EVENT_TRANSFER_IN — transfer in activity")


# ---------------------------------------------------------------------------------------------- explain


@pytest.fixture(scope="module")
def prepared_rows(synthetic_journeys):
    ds = synthetic_journeys(400, seed=5, max_len=40) / "ds"
    rows = pq.read_table(sorted((ds / "test").glob("*.parquet"))[0])
    return Preprocessor.load(ds), rows.slice(0, 12)


@pytest.mark.parametrize(("name", "method"), [("atrank", METHOD_SCREENED_OCCLUSION), ("atrank-reference", METHOD_ATTENTION),
                                              ("gru-attn", METHOD_OCCLUSION), ("bag", METHOD_INTEGRATED_GRADIENTS)])
def test_explain_rows_gives_the_default_methods_importances_reasons_and_reason_codes(prepared_rows, name, method):
    preprocessor, rows = prepared_rows
    torch.manual_seed(0)
    scorer = Scorer(build_model(name, preprocessor.feature_spec(), tasks=["outcome"],
                                **({} if name == "bag" else TINY)), preprocessor)
    assert default_method(scorer) == method
    frame, explanations = explain_rows(scorer, rows)
    plain = scorer.score_rows(rows)
    for outcome in preprocessor.outcome_names:
        np.testing.assert_allclose(frame[f"p_{outcome}"].to_numpy(), plain[f"p_{outcome}"].to_numpy(), atol=1e-5)
    declared = {o: {c.code for c in spec.reasons} for o, spec in preprocessor.dataset.outcomes.items()}
    assert declared["churn"] and declared["default"] and declared["uptake"]
    for explanation, n in zip(explanations, frame["n_events"], strict=True):
        assert explanation.method == method
        assert len(explanation.event_type) == len(explanation.item) == len(explanation.days_before_cutoff) == n
        assert all(len(values) == n for values in explanation.attention.values())
        assert set(explanation.reason_codes) == set(preprocessor.outcome_names)
        for outcome, hits in explanation.reason_codes.items():
            codes = [h.code for h in hits]
            assert len(codes) == len(set(codes)) <= 3
            assert all(c in declared[outcome] or c.startswith("EVENT_") for c in codes)
            assert [h.weight for h in hits] == sorted((h.weight for h in hits), reverse=True)
            assert all(h.weight > 0 and h.events for h in hits)
    assert reason_text_column(explanations).type == pa.string()
    assert reason_codes_column(explanations).type == pa.list_(REASON_CODE_TYPE)
    _, lean = explain_rows(scorer, rows, with_events=False)
    assert [e.reason_codes for e in lean] == [e.reason_codes for e in explanations]
    assert [e.reason_text for e in lean] == [e.reason_text for e in explanations]
    if name == "bag":
        with pytest.raises(AttributionUnavailableError, match="no attention"):
            explain_rows(scorer, rows, method=METHOD_ATTENTION)

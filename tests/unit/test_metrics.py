"""Tests of journey_model.training.metrics: hand-computed values, NaN handling, ATRank's ties-are-misses AUC, accumulators."""

from __future__ import annotations

import math
import re
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import binary_calibration_error, multiclass_accuracy

from journey_model.data.features import EVENT_TYPE_SPECIAL_IDS, FIELD_SPECIAL_IDS, BehaviourGroup, FeatureSpec
from journey_model.models import build_model
from journey_model.models.tasks import Task
from journey_model.training.metrics import (
    ForecastMetrics,
    NextEventMetrics,
    OutcomeMetrics,
    SampledAUCMetrics,
    binary_log_loss,
    binary_pr_auc,
    binary_roc_auc,
    calibration_curve,
    exclude_special_ids,
    expected_calibration_error,
    forecast_lengths,
    forecast_step_accuracy,
    hit_rate_at_k,
    mean_reciprocal_rank,
    ndcg_at_k,
    next_event_accuracy,
    outcome_curves,
    outcome_metrics,
    peer_ranking_metrics,
    per_customer_sampled_auc,
    prefix_metric_keys,
    sample_negative_ids,
    sequence_edit_distance,
    target_ranks,
)
from journey_model.training.module import JourneyModule

NAN = float("nan")


def assert_same_values(a: dict[str, float], b: dict[str, float]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if math.isnan(b[key]):
            assert math.isnan(a[key]), key
        else:
            assert a[key] == pytest.approx(b[key], abs=1e-9), key


# ---------------------------------------------------------------------------------------------------- outcomes


def test_roc_auc_perfect_reversed_known_fraction_and_ties():
    targets = torch.tensor([0.0, 0.0, 1.0, 1.0])
    assert binary_roc_auc(torch.tensor([0.1, 0.2, 0.8, 0.9]), targets) == pytest.approx(1.0)
    assert binary_roc_auc(torch.tensor([0.9, 0.8, 0.2, 0.1]), targets) == pytest.approx(0.0)
    # positives {0.35, 0.8} vs negatives {0.1, 0.4}: 3 of 4 pairs ordered correctly
    assert binary_roc_auc(torch.tensor([0.1, 0.4, 0.35, 0.8]), targets) == pytest.approx(3 / 4, abs=1e-6)
    # a tied pair counts one half: positive 0.5 vs negatives {0.5, 0.2} -> (0.5 + 1) / 2
    assert binary_roc_auc(torch.tensor([0.5, 0.5, 0.2]), torch.tensor([1.0, 0.0, 0.0])) == pytest.approx(
        0.75, abs=1e-6
    )


def test_pr_auc_log_loss_hand_computed_and_logits_agree_with_probabilities():
    probs = torch.tensor([0.1, 0.4, 0.35, 0.8], dtype=torch.float64)
    targets = torch.tensor([0.0, 0.0, 1.0, 1.0])
    # ranked 0.8(+) 0.4(-) 0.35(+) 0.1(-): AP = 0.5 * 1 + 0.5 * 2/3
    assert binary_pr_auc(probs, targets) == pytest.approx(5 / 6, abs=1e-6)
    expected_loss = -(math.log(0.9) + math.log(0.6) + math.log(0.35) + math.log(0.8)) / 4
    assert binary_log_loss(probs, targets) == pytest.approx(expected_loss, rel=1e-12)
    logits = torch.log(probs / (1 - probs))
    assert binary_log_loss(logits, targets, from_logits=True) == pytest.approx(expected_loss, rel=1e-12)
    assert binary_roc_auc(logits, targets, from_logits=True) == pytest.approx(binary_roc_auc(probs, targets))
    # a confident miss is clipped, not infinite
    assert binary_log_loss(torch.tensor([0.0]), torch.tensor([1.0])) == pytest.approx(-math.log(1e-15))


def test_ece_zero_when_every_bin_is_calibrated_and_hand_value_otherwise():
    # 0.25 predicted for 4 customers of whom 1 is positive, 0.75 for 4 of whom 3 are
    probs = torch.tensor([0.25] * 4 + [0.75] * 4)
    calibrated = torch.tensor([1.0, 0, 0, 0, 1, 1, 1, 0])
    assert expected_calibration_error(probs, calibrated, n_bins=10) == pytest.approx(0.0, abs=1e-12)
    # everyone positive: |1 - 0.25| and |1 - 0.75| weighted 1/2 each
    assert expected_calibration_error(probs, torch.ones(8), n_bins=10) == pytest.approx(0.5)
    curve = calibration_curve(probs, calibrated, n_bins=4)
    np.testing.assert_allclose(curve.bin_edges, [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_array_equal(curve.count, [0, 4, 0, 4])
    np.testing.assert_allclose(curve.observed_rate[[1, 3]], [0.25, 0.75])
    assert np.isnan(curve.mean_predicted[0]) and np.isnan(curve.observed_rate[2])


def test_ece_matches_torchmetrics_below_one_and_one_joins_the_last_bin():
    generator = torch.Generator().manual_seed(3)
    probs = torch.rand(500, generator=generator, dtype=torch.float64) * 0.999
    targets = (torch.rand(500, generator=generator, dtype=torch.float64) < probs).double()
    for n_bins in (5, 10, 15):
        ours = expected_calibration_error(probs, targets, n_bins=n_bins)
        theirs = float(binary_calibration_error(probs, targets.long(), n_bins=n_bins, norm="l1"))
        assert ours == pytest.approx(theirs, abs=1e-9)
    assert calibration_curve(torch.tensor([1.0, 0.95]), torch.tensor([1.0, 1.0]), n_bins=10).count[-1] == 2


def test_unknown_targets_are_ignored_whatever_their_scores():
    probs = torch.tensor([0.1, 0.4, 0.35, 0.8])
    targets = torch.tensor([0.0, 0.0, 1.0, 1.0])
    padded_probs = torch.tensor([0.1, 0.99, 0.4, NAN, 0.35, 0.8, 0.0])
    padded_targets = torch.tensor([0.0, NAN, 0.0, NAN, 1.0, 1.0, NAN])
    for metric in (binary_roc_auc, binary_pr_auc, binary_log_loss, expected_calibration_error):
        assert metric(padded_probs, padded_targets) == pytest.approx(metric(probs, targets)), metric.__name__
    curves = outcome_curves(padded_probs, padded_targets)
    assert (curves.n_known, curves.n_positive) == (4, 2)


def test_degenerate_outcomes_give_nan_without_exception_or_warning():
    one_class = torch.tensor([1.0, 1.0, NAN])
    nobody = torch.tensor([NAN, NAN, NAN])
    probs = torch.tensor([0.2, 0.9, 0.5])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(binary_roc_auc(probs, one_class))
        assert math.isnan(binary_pr_auc(probs, one_class))
        assert binary_log_loss(probs, one_class) == pytest.approx(-(math.log(0.2) + math.log(0.9)) / 2)
        assert expected_calibration_error(probs, one_class) == pytest.approx(((1 - 0.2) + (1 - 0.9)) / 2)
        for metric in (binary_roc_auc, binary_pr_auc, binary_log_loss, expected_calibration_error):
            assert math.isnan(metric(probs, nobody)), metric.__name__
            assert math.isnan(metric(torch.empty(0), torch.empty(0))), metric.__name__
        curves = outcome_curves(probs, one_class)
        assert curves.roc is None and curves.precision_recall is None
        assert curves.calibration.count.sum() == 2
        values = outcome_metrics(probs[:, None], nobody[:, None], ["churn"])
    assert values["n/churn"] == 0 and all(math.isnan(v) for k, v in values.items() if k != "n/churn")


def test_bad_outcome_inputs_name_the_row():
    with pytest.raises(ValueError, match=r"targets row 1 is 2\.0.*expected 0, 1 or NaN"):
        binary_roc_auc(torch.tensor([0.1, 0.2]), torch.tensor([0.0, 2.0]))
    with pytest.raises(ValueError, match=r"scores row 0 is 1\.5.*probability in \[0, 1\]"):
        binary_log_loss(torch.tensor([1.5, 0.2]), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"scores row 1 is nan where the target is known"):
        binary_pr_auc(torch.tensor([0.1, NAN]), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"outcome 'default': targets row 2"):
        outcome_metrics(torch.zeros(3, 2), torch.tensor([[0.0, 0], [1, 1], [0, 5]]), ["churn", "default"])


def test_roc_and_pr_curve_data_for_a_perfect_ranking():
    curves = outcome_curves(torch.tensor([0.1, 0.2, 0.8, 0.9]), torch.tensor([0.0, 0.0, 1.0, 1.0]), n_bins=2)
    roc = curves.roc
    assert roc is not None and curves.precision_recall is not None
    assert len(roc.false_positive_rate) == len(roc.true_positive_rate) == len(roc.thresholds)
    reaches_top_left = (roc.false_positive_rate == 0) & (roc.true_positive_rate == 1)
    assert reaches_top_left.any()
    pr = curves.precision_recall
    assert ((pr.recall == 1) & (pr.precision == 1)).any()  # every positive found before any negative
    np.testing.assert_array_equal(curves.calibration.count, [2, 2])


def test_outcome_accumulator_over_batches_equals_one_shot():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(90, 2, generator=generator)
    targets = (torch.rand(90, 2, generator=generator) < torch.sigmoid(logits)).float()
    targets[torch.rand(90, 2, generator=generator) < 0.2] = NAN
    accumulator = OutcomeMetrics(["churn", "default"], from_logits=True, n_bins=7)
    for start in range(0, 90, 25):
        accumulator.update(logits[start : start + 25], targets[start : start + 25])
    expected = outcome_metrics(logits, targets, ["churn", "default"], n_bins=7, from_logits=True)
    assert_same_values(accumulator.compute(), expected)
    assert expected["n/churn"] == float((~torch.isnan(targets[:, 0])).sum())
    np.testing.assert_allclose(
        accumulator.curves()["default"].calibration.count,
        outcome_curves(logits[:, 1], targets[:, 1], n_bins=7, from_logits=True).calibration.count,
    )
    accumulator.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchmetrics warns about compute() before update()
        assert math.isnan(accumulator.compute()["auc/churn"])


def test_outcome_accumulator_rejects_probabilities_outside_unit_interval():
    accumulator = OutcomeMetrics(["churn"], from_logits=False)
    with pytest.raises(ValueError, match=r"outcome 'churn': scores row 1 is -2\.0"):
        accumulator.update(torch.tensor([[0.3], [-2.0]]), torch.tensor([[1.0], [0.0]]))


# ---------------------------------------------------------------------------------------------------- next event


def test_ranks_ties_count_against_the_target_and_unknown_is_zero():
    logits = torch.tensor([[0.0, 1.0, 5.0, 3.0], [0.0, 2.0, 2.0, 2.0], [9.0, 1.0, 1.0, 1.0]])
    assert target_ranks(logits, torch.tensor([3, 1, 0])).tolist() == [2, 3, 0]


def test_hr_ndcg_mrr_hand_computed_and_unknown_targets_ignored():
    # target ranks 1, 2 and 4 (row 4 is unknown)
    logits = torch.tensor(
        [
            [0.0, 0.1, 0.2, 0.3, 0.9, 0.5],
            [0.0, 0.1, 0.2, 0.3, 0.9, 0.5],
            [0.0, 0.1, 0.2, 0.3, 0.9, 0.5],
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        ]
    )
    targets = torch.tensor([4, 5, 2, 0])
    assert target_ranks(logits, targets).tolist() == [1, 2, 4, 0]
    assert hit_rate_at_k(logits, targets, 1) == pytest.approx(1 / 3)
    assert hit_rate_at_k(logits, targets, 2) == pytest.approx(2 / 3)
    assert ndcg_at_k(logits[1:2], targets[1:2], 10) == pytest.approx(1 / math.log2(3))
    assert ndcg_at_k(logits, targets, 3) == pytest.approx((1 + 1 / math.log2(3) + 0) / 3)
    assert mean_reciprocal_rank(logits, targets) == pytest.approx((1 + 1 / 2 + 1 / 4) / 3)
    assert next_event_accuracy(logits, targets) == pytest.approx(1 / 3)
    unknown = torch.zeros(4, dtype=torch.int64)
    for value in (
        hit_rate_at_k(logits, unknown, 1),
        ndcg_at_k(logits, unknown, 1),
        mean_reciprocal_rank(logits, unknown),
    ):
        assert math.isnan(value)
    assert math.isnan(next_event_accuracy(logits, unknown))


def test_excluding_special_ids_removes_them_from_the_ranking():
    logits = torch.tensor([[9.0, 8.0, 7.0, 6.0, 1.0, 2.0]])
    assert target_ranks(logits, torch.tensor([5])).tolist() == [5]
    masked = exclude_special_ids(logits)
    assert target_ranks(masked, torch.tensor([5])).tolist() == [1]
    assert target_ranks(masked, torch.tensor([1])).tolist() == [6]  # an excluded target ranks last
    assert logits[0, 0] == 9.0  # the input is untouched
    assert target_ranks(exclude_special_ids(logits, FIELD_SPECIAL_IDS), torch.tensor([5])).tolist() == [3]
    with pytest.raises(ValueError, match="outside the vocabulary"):
        exclude_special_ids(torch.zeros(2, 3), EVENT_TYPE_SPECIAL_IDS)


def test_accuracy_agrees_with_torchmetrics():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(200, 12, generator=generator)
    targets = torch.randint(0, 12, (200,), generator=generator)
    theirs = multiclass_accuracy(logits, targets, num_classes=12, average="micro", ignore_index=0)
    assert next_event_accuracy(logits, targets) == pytest.approx(float(theirs), abs=1e-6)


def test_bad_next_event_inputs_name_the_row():
    with pytest.raises(ValueError, match=r"targets row 1 is 7; expected an id in \[0, 5\)"):
        target_ranks(torch.zeros(2, 5), torch.tensor([1, 7]))
    logits = torch.zeros(2, 5)
    logits[1, 3] = NAN
    with pytest.raises(ValueError, match="logits row 1 holds NaN"):
        mean_reciprocal_rank(logits, torch.tensor([4, 4]))


def test_next_event_accumulator_over_batches_equals_one_shot():
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(70, 15, generator=generator)
    logits[:, :4] += 3.0  # specials would win if they were ranked
    targets = torch.randint(4, 15, (70,), generator=generator)
    targets[::7] = 0
    negatives = sample_negative_ids(targets, 15, excluded_ids=EVENT_TYPE_SPECIAL_IDS, generator=generator)
    accumulator = NextEventMetrics(excluded_ids=EVENT_TYPE_SPECIAL_IDS, ks=(1, 5), target_name="next_event")
    for start in range(0, 70, 20):
        part = slice(start, start + 20)
        accumulator.update(logits[part], targets[part], negative_ids=negatives[part])
    values = accumulator.compute()
    masked = exclude_special_ids(logits)
    known = targets != 0
    expected = {
        "acc/next_event": next_event_accuracy(masked, targets),
        "hr_at_1/next_event": hit_rate_at_k(masked, targets, 1),
        "ndcg_at_1/next_event": ndcg_at_k(masked, targets, 1),
        "hr_at_5/next_event": hit_rate_at_k(masked, targets, 5),
        "ndcg_at_5/next_event": ndcg_at_k(masked, targets, 5),
        "mrr/next_event": mean_reciprocal_rank(masked, targets),
        "mrr_at_1/next_event": peer_ranking_metrics(logits, targets, (1,), excluded_ids=EVENT_TYPE_SPECIAL_IDS)[
            "mrr_at_1"],
        "mrr_at_5/next_event": peer_ranking_metrics(logits, targets, (5,), excluded_ids=EVENT_TYPE_SPECIAL_IDS)[
            "mrr_at_5"],
        "n_ranked/next_event": float(known.sum()),
        "unseen_targets/next_event": 0.0,
        "unrankable_share/next_event": 0.0,  # targets are real ids or unknown (0), never a special id
        "sampled_auc/next_event": per_customer_sampled_auc(
            logits.gather(1, targets[:, None])[known, 0], logits.gather(1, negatives[:, None])[known, 0]
        ),
        "n_sampled/next_event": float(known.sum()),
    }
    assert_same_values(values, expected)
    assert values["hr_at_1/next_event"] > 0  # specials did not take every top position


# ---------------------------------------------------------------------------------------------------- sampled AUC


def test_per_customer_sampled_auc_counts_ties_as_misses():
    positive = torch.tensor([2.0, 1.0, 1.0, 0.5])
    negative = torch.tensor([1.0, 1.0, 3.0, 0.4])
    assert per_customer_sampled_auc(positive, negative) == pytest.approx(2 / 4)
    assert per_customer_sampled_auc(torch.ones(5), torch.ones(5)) == 0.0
    assert math.isnan(per_customer_sampled_auc(torch.empty(0), torch.empty(0)))
    with pytest.raises(ValueError, match="row 1 has a NaN score"):
        per_customer_sampled_auc(torch.tensor([1.0, NAN]), torch.tensor([0.0, 0.0]))
    accumulator = SampledAUCMetrics()
    accumulator.update(positive[:3], negative[:3])
    accumulator.update(positive[3:], negative[3:])
    assert accumulator.compute() == {"sampled_auc": 0.5, "n_sampled": 4.0}


def test_sampled_negatives_skip_positive_specials_and_history_and_are_reproducible():
    positives = torch.randint(4, 12, (4000,), generator=torch.Generator().manual_seed(0))
    history = torch.tensor([[5, 6, 0]]).expand(4000, -1)
    draw = sample_negative_ids(
        positives,
        12,
        excluded_ids=EVENT_TYPE_SPECIAL_IDS,
        generator=torch.Generator().manual_seed(7),
        history_ids=history,
    )
    assert not (draw == positives).any()
    assert not torch.isin(draw, torch.tensor([0, 1, 2, 3, 5, 6])).any()
    again = sample_negative_ids(
        positives,
        12,
        excluded_ids=EVENT_TYPE_SPECIAL_IDS,
        generator=torch.Generator().manual_seed(7),
        history_ids=history,
    )
    assert torch.equal(draw, again)
    # uniform over what is left: for positive 4 the candidates are 7..11, each about a fifth
    counts = torch.bincount(draw[positives == 4], minlength=12)[7:].double()
    assert counts.sum() > 300 and (counts / counts.sum() - 0.2).abs().max() < 0.08


def test_sampled_negative_found_when_one_id_is_left_and_impossible_rows_raise():
    vocab = 1000
    history = torch.arange(2, vocab - 1)[None, :]  # only id vocab - 1 remains once 0, 1 and the positive go
    draw = sample_negative_ids(
        torch.tensor([2]),
        vocab,
        excluded_ids=FIELD_SPECIAL_IDS,
        generator=torch.Generator().manual_seed(0),
        history_ids=history,
    )
    assert draw.tolist() == [vocab - 1]
    with pytest.raises(ValueError, match="row 1 has no id left to sample"):
        sample_negative_ids(
            torch.tensor([4, 5]),
            6,
            excluded_ids=EVENT_TYPE_SPECIAL_IDS,
            generator=torch.Generator().manual_seed(0),
            history_ids=torch.tensor([[0, 0], [4, 0]]),
        )
    with pytest.raises(ValueError, match=r"row 0 holds an id outside the vocabulary \[0, 6\)"):
        sample_negative_ids(
            torch.tensor([6]), 6, excluded_ids=EVENT_TYPE_SPECIAL_IDS, generator=torch.Generator()
        )


# ---------------------------------------------------------------------------------------------------- forecast

LETTERS = {c: i + 4 for i, c in enumerate("abcdefghijklmnopqrstuvwxyz")}


def encode(words: list[str], width: int) -> torch.Tensor:
    """Words as event-type ids, each followed by <eos> then padding."""
    rows = torch.zeros(len(words), width, dtype=torch.int64)
    for b, word in enumerate(words):
        ids = [LETTERS[c] for c in word] + [3]
        rows[b, : len(ids)] = torch.tensor(ids)
    return rows


def levenshtein(a: list[int], b: list[int]) -> int:
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        current = [i]
        for j, y in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def test_edit_distance_of_known_pairs():
    predicted = encode(["kitten", "flaw", "", "abc", "same"], 9)
    target = encode(["sitting", "lawn", "abc", "", "same"], 8)
    assert sequence_edit_distance(predicted, target).tolist() == [3, 2, 3, 3, 0]
    assert forecast_lengths(target).tolist() == [7, 4, 3, 0, 4]
    # ids after <eos> or padding are not part of the sequence
    noisy = predicted.clone()
    noisy[2, 1:] = 9
    assert sequence_edit_distance(noisy, target)[2] == 3


def test_edit_distance_matches_reference_on_random_sequences():
    generator = torch.Generator().manual_seed(5)
    predicted = torch.randint(4, 8, (60, 7), generator=generator)
    target = torch.randint(4, 8, (60, 5), generator=generator)
    pred_len = torch.randint(0, 8, (60,), generator=generator)
    target_len = torch.randint(0, 6, (60,), generator=generator)
    predicted[torch.arange(7)[None, :] >= pred_len[:, None]] = 0
    target[torch.arange(5)[None, :] >= target_len[:, None]] = 0
    expected = [
        levenshtein(predicted[b, : pred_len[b]].tolist(), target[b, : target_len[b]].tolist())
        for b in range(60)
    ]
    assert sequence_edit_distance(predicted, target).tolist() == expected


def test_step_accuracy_counts_only_real_steps_and_ends_predictions_at_eos():
    predicted = torch.tensor([[5, 6, 7, 3], [4, 3, 5, 6], [4, 4, 4, 4]])
    target = torch.tensor([[5, 7, 3, 0], [4, 5, 6, 3], [0, 0, 0, 0]])
    # step 1: both right; step 2: 6!=7, and row 1's forecast ended; step 3: row 1 only, ended; step 4: nobody
    accuracy = forecast_step_accuracy(predicted, target)
    assert accuracy[:3].tolist() == [1.0, 0.0, 0.0] and math.isnan(accuracy[3])
    assert forecast_step_accuracy(predicted[:, :1], target)[:2].tolist() == [1.0, 0.0]


def test_forecast_accumulator_over_batches_equals_one_shot_and_skips_unknown_rows():
    predicted = encode(["kitten", "flaw", "", "abc", "same", "xyz"], 9)
    target = encode(["sitting", "lawn", "abc", "", "same", "xyz"], 9)
    target[5] = 0  # unknown forecast
    whole = ForecastMetrics(n_steps=8)
    whole.update(predicted, target)
    values = whole.compute()
    assert values["n_forecast"] == 5
    assert values["edit_distance"] == pytest.approx((3 + 2 + 3 + 3 + 0) / 5)
    assert values["edit_distance_norm"] == pytest.approx((3 / 7 + 2 / 4 + 3 / 3 + 3 / 3 + 0) / 5)
    # step 1 real for sitting, lawn, abc, same: k==s? no, f==l? no, ''==a? no, s==s yes
    assert values["step_acc/1"] == pytest.approx(1 / 4)
    assert values["step_acc/7"] == pytest.approx(0.0) and math.isnan(values["step_acc/8"])
    batched = ForecastMetrics(n_steps=8)
    batched.update(predicted[:2], target[:2, :8])
    batched.update(predicted[2:4, :5], target[2:4, :4])
    batched.update(predicted[4:], target[4:])
    assert_same_values(batched.compute(), values)
    with pytest.raises(ValueError, match="target_ids row 0 has 7 real steps.*n_steps=4"):
        ForecastMetrics(n_steps=4).update(predicted, target)


# ---------------------------------------------------------------------------------------------------- keys


def test_prefixed_keys_are_valid_mlflow_metric_names():
    outcomes = OutcomeMetrics(["churn"], from_logits=True)
    outcomes.update(torch.tensor([[0.3], [-1.0]]), torch.tensor([[1.0], [0.0]]))
    next_event = NextEventMetrics(excluded_ids=FIELD_SPECIAL_IDS, target_name="next_item")
    next_event.update(torch.randn(3, 20), torch.tensor([5, 0, 7]), negative_ids=torch.tensor([9, 9, 9]))
    forecast = ForecastMetrics(n_steps=2)
    forecast.update(encode(["ab"], 3), encode(["ba"], 3))
    keys = {**outcomes.compute(), **next_event.compute(), **forecast.compute()}
    assert {"auc/churn", "hr_at_10/next_item", "ndcg_at_10/next_item", "mrr/next_item", "step_acc/1"} <= set(
        keys
    )
    prefixed = prefix_metric_keys(keys, "val/")
    assert set(prefixed) == {f"val/{key}" for key in keys}
    mlflow_rule = re.compile(
        r"^[/\w.\- :]*$"
    )  # mlflow.utils.validation.validate_param_and_metric_name (POSIX)
    assert all(mlflow_rule.match(key) for key in prefixed)
    with pytest.raises(ValueError, match="non-empty stage name"):
        prefix_metric_keys(keys, "/")


def test_oov_targets_are_left_out_of_ranking_and_sampled_auc():
    """An <oov> target would otherwise 'win' every sampled comparison through the model's <oov> logit."""
    metric = NextEventMetrics(excluded_ids=(0, 1), target_name="item")
    logits = torch.zeros(3, 50)
    logits[:, 1] = 5.0  # the model bets on <oov>
    logits[2, 7] = 1.0  # and ranks item 7 first among real items for the last customer
    metric.update(logits, torch.tensor([1, 1, 7]), negative_ids=torch.tensor([9, 8, 8]))
    values = metric.compute()
    assert values["n_ranked/item"] == 1.0 and values["unrankable_share/item"] == pytest.approx(2 / 3)
    assert values["sampled_auc/item"] == 1.0 and values["hr_at_1/item"] == 1.0


def test_peer_ranking_metrics_hand_computed_with_fair_ties_and_unseen_targets():
    logits = torch.tensor([
        [0.0, 0.0, 0.9, 0.5, 0.5, 0.1],  # target 3: one id above, tied with id 4 -> rank 2 or 3, each 1/2
        [0.0, 0.0, 0.9, 0.5, 0.5, 0.1],  # target 2: rank 1
        [0.0, 9.0, 0.9, 0.5, 0.5, 0.1],  # target 1 = <oov>: an item unseen in training
        [0.0, 0.0, 0.9, 0.5, 0.5, 0.1],  # target 0: unknown, always left out
    ])
    targets = torch.tensor([3, 2, 1, 0])
    got = peer_ranking_metrics(logits, targets, (1, 2, 3), excluded_ids=FIELD_SPECIAL_IDS)
    l3, l4 = 1 / math.log2(3), 1 / math.log2(4)
    expected = {
        "hr_at_1": (0 + 1) / 2, "hr_at_2": (0.5 + 1) / 2, "hr_at_3": (1 + 1) / 2,
        "ndcg_at_1": (0 + 1) / 2, "ndcg_at_2": (0.5 * l3 + 1) / 2, "ndcg_at_3": (0.5 * (l3 + l4) + 1) / 2,
        "mrr_at_1": (0 + 1) / 2, "mrr_at_2": (0.5 * 0.5 + 1) / 2, "mrr_at_3": (0.5 * (1 / 2 + 1 / 3) + 1) / 2,
        "n_ranked": 2.0, "n_unseen": 1.0,
    }
    assert got == pytest.approx(expected)
    missed = peer_ranking_metrics(logits, targets, (1, 2, 3), excluded_ids=FIELD_SPECIAL_IDS, unseen_as_miss=True)
    assert missed["n_ranked"] == 3.0 and missed["n_unseen"] == 1.0
    for key in ("hr_at_3", "ndcg_at_2", "mrr_at_3"):
        assert missed[key] == pytest.approx(expected[key] * 2 / 3)


def test_peer_ranking_metrics_give_a_constant_scorer_what_a_random_order_earns():
    logits = torch.full((2, 6), 0.3)
    got = peer_ranking_metrics(logits, torch.tensor([5, 2]), (1, 2), excluded_ids=FIELD_SPECIAL_IDS)
    # 4 real ids tied: each rank 1..4 with probability 1/4.
    assert got["hr_at_1"] == pytest.approx(0.25) and got["hr_at_2"] == pytest.approx(0.5)
    assert got["mrr_at_2"] == pytest.approx((1 + 1 / 2) / 4)
    assert got["ndcg_at_2"] == pytest.approx((1 + 1 / math.log2(3)) / 4)
    nothing = peer_ranking_metrics(logits, torch.tensor([0, 1]), (1,), excluded_ids=FIELD_SPECIAL_IDS)
    assert math.isnan(nothing["hr_at_1"]) and nothing["n_unseen"] == 1.0
    with pytest.raises(ValueError, match="positive cut-offs"):
        peer_ranking_metrics(logits, torch.tensor([5, 2]), (0,))


def test_peer_ranking_metrics_agree_with_the_plain_ones_without_ties():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 30, generator=generator)
    targets = torch.randint(2, 30, (64,), generator=generator)
    got = peer_ranking_metrics(logits, targets, (5, 30), excluded_ids=FIELD_SPECIAL_IDS)
    plain = exclude_special_ids(logits, FIELD_SPECIAL_IDS)
    assert got["hr_at_5"] == pytest.approx(hit_rate_at_k(plain, targets, 5))
    assert got["ndcg_at_5"] == pytest.approx(ndcg_at_k(plain, targets, 5))
    assert got["mrr_at_30"] == pytest.approx(mean_reciprocal_rank(plain, targets))


# ---------------------------------------------------------------------------------------------------- module path

TIE_LOGITS = [
    [0.0, 0.0, 0.9, 0.5, 0.5, 0.1],  # target 3: one id above, tied with id 4 -> rank 2 or 3, each 1/2
    [0.0, 0.0, 0.9, 0.5, 0.5, 0.1],  # target 2: rank 1
    [0.0, 9.0, 0.9, 0.5, 0.5, 0.1],  # target 1 = <oov>: unseen in training
    [0.0, 0.0, 0.9, 0.5, 0.5, 0.1],  # target 0: unknown, always left out
]


def _module_ranking(unseen_as_miss: bool) -> dict[str, float]:
    """Hand-made logits through JourneyModule's test-metric path (what `journey train` / `compare` log)."""
    spec = FeatureSpec(
        event_type_vocab_size=8, categorical_vocab_sizes={"item": 6}, numeric_fields=[], num_time_buckets=6,
        behaviour_groups=[BehaviourGroup("all", [4, 5, 6, 7], ["item"], [])], outcome_names=[], item_field="item",
    )
    model = build_model("atrank", spec, tasks=[Task.NEXT_EVENT, Task.NEXT_ITEM], field_dim=4, hidden_size=8,
                        num_heads=2)
    module = JourneyModule(model, unseen_as_miss=unseen_as_miss)
    items = torch.tensor(TIE_LOGITS)
    # Event types reserve 0..3: the same scores shifted two columns right, targets shifted by two.
    events = torch.cat([torch.zeros(4, 2), items], dim=1)
    events[2, 1] = 9.0  # the model bets on <oov> for the unseen type
    output = SimpleNamespace(outcome_logits=None, next_event_logits=events, next_item_logits=items)
    batch = SimpleNamespace(outcomes=None, forecast=None, next_event_type=torch.tensor([5, 4, 1, 0]),
                            next_item=torch.tensor([3, 2, 1, 0]))
    module._update_metrics("test", output, batch)
    values = {**module.metrics["test_next_event"].compute(), **module.metrics["test_next_item"].compute()}
    return prefix_metric_keys(values, "test")


def test_the_module_logs_peer_ranking_metrics_hand_computed():
    got = _module_ranking(unseen_as_miss=False)
    l3, l4 = 1 / math.log2(3), 1 / math.log2(4)
    expected = {  # two ranked targets: one at rank 1, one tied over ranks 2 and 3
        "hr_at_1": (0 + 1) / 2, "hr_at_5": (1 + 1) / 2, "hr_at_10": 1.0,
        "ndcg_at_1": (0 + 1) / 2, "ndcg_at_5": (0.5 * (l3 + l4) + 1) / 2,
        "mrr_at_1": (0 + 1) / 2, "mrr_at_5": (0.5 * (1 / 2 + 1 / 3) + 1) / 2,
        "mrr_at_10": (0.5 * (1 / 2 + 1 / 3) + 1) / 2, "mrr": (0.5 * (1 / 2 + 1 / 3) + 1) / 2,
        "acc": 0.5, "n_ranked": 2.0, "unseen_targets": 1.0,
    }
    for suffix in ("", "/item"):
        for key, value in expected.items():
            assert got[f"test/{key}{suffix}"] == pytest.approx(value), f"{key}{suffix}"
    assert got["test/unseen_targets/item"] == 1.0 and got["test/unrankable_share/item"] == pytest.approx(1 / 3)


def test_unseen_as_miss_lowers_the_module_hit_rate_when_unseen_targets_exist():
    dropped, missed = _module_ranking(unseen_as_miss=False), _module_ranking(unseen_as_miss=True)
    for suffix in ("", "/item"):
        assert missed[f"test/n_ranked{suffix}"] == 3.0 and missed[f"test/unseen_targets{suffix}"] == 1.0
        for key in ("hr_at_1", "hr_at_10", "ndcg_at_5", "mrr_at_10", "mrr", "acc"):
            assert missed[f"test/{key}{suffix}"] == pytest.approx(dropped[f"test/{key}{suffix}"] * 2 / 3)
            assert missed[f"test/{key}{suffix}"] < dropped[f"test/{key}{suffix}"]

"""Calibrated outcome probabilities and operating points (journey_model.models.calibration) and their bundle."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pytest

from journey_model.data.prepare import read_split
from journey_model.data.preprocessing import Preprocessor
from journey_model.inference.batch_scoring import output_schema
from journey_model.inference.scorer import Scorer, bundle_hash
from journey_model.models import build_model
from journey_model.models.calibration import (
    CALIBRATION_FILE,
    Calibration,
    CalibrationError,
    OperatingPolicy,
    choose_operating_point,
    expected_calibration_error,
    fit_calibration,
    fit_isotonic,
    fit_outcome,
    lift_at,
    log_loss,
    reliability_curve,
    transform,
)

SMALL_MODEL = {"hidden_size": 16, "num_heads": 2, "field_dim": 8}


def miscalibrated(n: int = 20_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true probability, labels drawn from it, over-confident-low scores true_p ** 3)."""
    rng = np.random.default_rng(seed)
    true_p = rng.beta(1.2, 3.0, size=n)
    labels = (rng.random(n) < true_p).astype(np.float64)
    return true_p, labels, true_p**3


@pytest.mark.parametrize("method", ["auto", "platt", "isotonic"])
def test_calibration_lowers_ece_and_log_loss_on_held_out_rows(method):
    _, labels, scores = miscalibrated(seed=1)
    _, held_labels, held_scores = miscalibrated(seed=2)
    entry = fit_outcome(scores, labels, method, policy=None)
    assert entry.method == ("isotonic" if method == "isotonic" else entry.method)
    assert entry.method != "identity"
    calibrated = entry.apply(held_scores)
    assert expected_calibration_error(held_scores, held_labels) > 0.15
    assert expected_calibration_error(calibrated, held_labels) < 0.03
    assert log_loss(calibrated, held_labels) < log_loss(held_scores, held_labels) - 0.1
    assert entry.ece_after < entry.ece_before and entry.logloss_after < entry.logloss_before
    if method == "auto":  # every candidate was scored out of fold; the winner beats the raw scores there
        assert set(entry.cross_fitted_logloss) == {"identity", "platt", "isotonic"}
        assert entry.cross_fitted_logloss[entry.method] < entry.cross_fitted_logloss["identity"] - 0.1


def test_already_calibrated_scores_keep_identity_and_too_few_positives_fall_back():
    kept = []
    for seed in range(10):
        rng = np.random.default_rng(seed)
        true_p = rng.uniform(0.3, 0.7, size=400)
        labels = (rng.random(400) < true_p).astype(np.float64)
        kept.append(fit_outcome(true_p, labels, "auto").method)
    assert kept.count("identity") >= 9, kept  # honest scores: noise does not buy a fitted map
    few = np.zeros(400)
    few[:3] = 1.0
    entry = fit_outcome(true_p, few, "auto")
    assert entry.method == "identity" and "rarer class" in entry.note
    some = np.zeros(400)
    some[:10] = 1.0
    entry = fit_outcome(true_p, some, "isotonic")  # asked for isotonic, too few positives for it: Platt
    assert entry.method == "platt" and "isotonic not tried" in entry.note


def test_isotonic_is_monotone_clipped_and_ignores_unknown_labels():
    _, labels, scores = miscalibrated(n=5000, seed=4)
    labels[::7] = np.nan
    params = fit_isotonic(*(a[~np.isnan(labels)] for a in (scores, labels)))
    assert np.all(np.diff(params["x"]) > 0) and np.all(np.diff(params["y"]) >= 0)
    grid = np.linspace(0, 1, 2001)
    mapped = transform("isotonic", params, grid)
    assert np.all(np.diff(mapped) >= 0)
    assert mapped.min() >= 1e-6 and mapped.max() <= 1 - 1e-6
    entry = fit_outcome(scores, labels, "isotonic")
    assert entry.n == int((~np.isnan(labels)).sum())


def test_json_round_trip_scores_identically_and_nan_stays_nan():
    _, labels, scores = miscalibrated(n=6000, seed=5)
    matrix = np.stack([scores, np.sqrt(scores)], axis=1)
    targets = np.stack([labels, labels], axis=1)
    calibration = fit_calibration(matrix, targets, ["churn", "default"], policy="capacity:10%")
    text = calibration.dumps()
    json.loads(text)  # strict JSON, no NaN
    again = Calibration.from_json(json.loads(text))
    probe = np.r_[np.linspace(0, 1, 101), np.nan]
    for name in ("churn", "default"):
        np.testing.assert_array_equal(again.apply(name, probe), calibration.apply(name, probe))
        assert math.isnan(again.apply(name, probe)[-1])
        assert not again.flag(name, again.apply(name, probe))[-1]  # a customer without a score is never flagged
    assert again.to_json() == calibration.to_json()
    assert set(again.describe()) == {"churn", "default"}


def test_capacity_policy_flags_the_requested_share():
    rng = np.random.default_rng(6)
    p = rng.random(1000)
    y = (rng.random(1000) < p).astype(float)
    point = choose_operating_point(p, y, "capacity:10%")
    assert point.flagged_share == pytest.approx(0.10)
    assert int(point.flags(p).sum()) == 100
    assert point.threshold == pytest.approx(np.sort(p)[-100])
    assert point.policy == "capacity:10%" and OperatingPolicy.parse("capacity:0.1") == OperatingPolicy.parse("capacity:10%")
    assert point.precision == pytest.approx(y[p >= point.threshold].mean())


def test_precision_policy_takes_the_lowest_threshold_that_reaches_it_or_warns():
    # scores 1..10 (descending = better); positives at ranks 1, 2, 4, 5, 8
    p = np.arange(10, 0, -1) / 10.0
    y = np.array([1, 1, 0, 1, 1, 0, 0, 1, 0, 0], dtype=float)
    point = choose_operating_point(p, y, "precision:0.6")
    # flagging the top 5 gives 4/5 = 0.8, top 8 gives 5/8 = 0.625, top 9 gives 5/9 < 0.6: the cut is at 0.3
    assert point.threshold == pytest.approx(0.3)
    assert point.precision == pytest.approx(5 / 8) and point.recall == pytest.approx(1.0)
    assert point.warning is None
    assert choose_operating_point(p, y, "precision:0.95").threshold == pytest.approx(0.9)  # the top 2 are right
    # the best precision of any cut is 4/5 = 0.8 (the top 5): 0.9 is unreachable; the best F1 = 2 tp / (k + 5)
    # is 0.8 at k = 5 (k = 4 and k = 10 give 0.67) -> threshold 0.6
    y = np.array([0, 1, 1, 1, 1, 0, 0, 0, 0, 1], dtype=float)
    unreachable = choose_operating_point(p, y, "precision:0.9")
    assert unreachable.threshold == pytest.approx(0.6)
    assert "not reached" in unreachable.warning and "best-F1" in unreachable.warning


def test_cost_policy_minimises_the_expected_cost():
    p = np.arange(10, 0, -1) / 10.0
    y = np.array([1, 1, 0, 1, 1, 0, 0, 1, 0, 0], dtype=float)
    # cost(k flagged) = c * missed positives + false alarms
    for ratio in (1.0, 2.0, 10.0, 0.1):
        costs = [ratio * (y.sum() - y[:k].sum()) + (k - y[:k].sum()) for k in range(11)]
        best_k = int(np.argmin(costs))
        point = choose_operating_point(p, y, f"cost:{ratio:g}")
        flagged = int(point.flags(p).sum())
        assert flagged == best_k, (ratio, costs)
    # the best-scored customer is a negative and an alarm costs 10 misses: flagging nobody is cheapest
    nobody = choose_operating_point(p, np.r_[0.0, 1.0, np.zeros(8)], "cost:0.1")
    assert nobody.threshold is None and not nobody.flags(p).any() and nobody.flagged_share == 0.0


def test_policy_text_is_checked():
    assert OperatingPolicy.parse("capacity:5%") == OperatingPolicy("capacity", 0.05)
    assert OperatingPolicy.parse("precision:60%") == OperatingPolicy("precision", 0.6)
    assert str(OperatingPolicy.parse("cost:10")) == "cost:10"
    for bad in ("capacity:150%", "top:5%", "precision:0", "cost:-1", "capacity"):
        with pytest.raises(CalibrationError):
            OperatingPolicy.parse(bad)


def test_ece_bins_and_lift():
    p = np.array([0.05, 0.15, 0.85, 0.95])
    y = np.array([0.0, 0.0, 1.0, 1.0])
    assert expected_calibration_error(p, y, n_bins=10) == pytest.approx(0.10)
    assert expected_calibration_error(p, y, n_bins=2, strategy="mass") == pytest.approx(0.10)
    curve = reliability_curve(p, y, n_bins=2, strategy="mass")
    assert curve.count.tolist() == [2, 2] and curve.observed_rate.tolist() == [0.0, 1.0]
    scores = np.arange(100, 0, -1) / 100.0
    labels = np.zeros(100)
    labels[:5] = 1.0
    labels[50:55] = 1.0  # prevalence 0.1; the top decile holds 5 of 10 positives -> lift 5
    assert lift_at(scores, labels) == pytest.approx(5.0)
    tied = np.r_[np.ones(20), np.zeros(80)]  # a tie across the decile cut: its positive rate counts
    assert lift_at(tied, np.r_[np.ones(5), np.zeros(95)]) == pytest.approx((5 / 20) / 0.05)


# ------------------------------------------------------------------------------------------ the bundle


@pytest.fixture(scope="module")
def prepared(synthetic_journeys):
    return synthetic_journeys(1500, seed=3, max_len=60) / "ds"  # the dataset test_training.py builds


def test_a_calibrated_bundle_saves_loads_and_scores_identically(prepared, tmp_path):
    preprocessor = Preprocessor.load(prepared)
    model = build_model("atrank", preprocessor.feature_spec(), tasks=["outcome"], **SMALL_MODEL)
    plain = Scorer(model, preprocessor, batch_size=64)
    names = list(preprocessor.outcome_names)
    validation = read_split(prepared, "val")
    raw = plain.score_rows(validation)
    labels = np.array([[np.nan if v is None else v for v in validation.column(f"y_{n}").to_pylist()] for n in names]).T
    calibration = fit_calibration(raw[[f"p_{n}" for n in names]].to_numpy(), labels, names, method="platt",
                                  policy="capacity:20%")
    scorer = Scorer(model, preprocessor, batch_size=64, calibration=calibration)
    assert scorer.output_columns[-len(names):] == [f"flag_{n}" for n in names]
    folder = scorer.save(tmp_path / "bundle")
    assert (folder / CALIBRATION_FILE).exists()
    loaded = Scorer.load(folder, batch_size=64)
    assert loaded.calibration.to_json() == calibration.to_json()
    assert loaded.describe()["calibration"]["churn"]["policy"] == "capacity:20%"
    test = read_split(prepared, "test")
    before, after = scorer.score_rows(test), loaded.score_rows(test)
    assert list(after.columns) == loaded.output_columns
    for name in names:
        np.testing.assert_array_equal(after[f"p_{name}"], before[f"p_{name}"])
        raw_test = plain.score_rows(test)[f"p_{name}"].to_numpy()
        np.testing.assert_allclose(after[f"p_{name}"], calibration.apply(name, raw_test), rtol=1e-12)
        threshold = calibration.outcomes[name].operating_point.threshold
        assert after[f"flag_{name}"].dtype == bool
        np.testing.assert_array_equal(after[f"flag_{name}"], after[f"p_{name}"] >= threshold)
    schema = output_schema(loaded, top_reasons=0)  # batch scoring writes the flags as booleans
    assert [schema.field(f"flag_{n}").type for n in names] == [pa.bool_()] * len(names)
    # on validation the capacity policy flags its share of the customers
    flagged = loaded.score_rows(validation)["flag_churn"].mean()
    assert flagged == pytest.approx(0.20, abs=0.01)
    # the bundle's hash covers the calibration: another calibration is another model version
    first = bundle_hash(folder)
    Scorer(model, preprocessor, calibration=fit_calibration(labels * 0.5 + 0.25, labels, names)).save(folder)
    assert bundle_hash(folder) != first
    Scorer(model, preprocessor).save(folder)  # saved without calibration: no stale calibration.json
    assert not (folder / CALIBRATION_FILE).exists() and Scorer.load(folder).calibration is None


def test_apply_columns_keeps_nan_unflagged():
    _, labels, scores = miscalibrated(n=3000, seed=7)
    calibration = fit_calibration(scores[:, None], labels[:, None], ["churn"], policy="capacity:10%")
    columns = {"customer_id": ["a", "b", "c"], "p_churn": np.array([0.9, np.nan, 1e-4], dtype=np.float32)}
    calibration.apply_columns(columns, ["churn"])
    assert list(columns) == ["customer_id", "p_churn", "flag_churn"]
    assert math.isnan(columns["p_churn"][1]) and columns["flag_churn"].tolist() == [True, False, False]


def test_the_fit_does_not_depend_on_the_order_of_the_rows():
    """Several processes gather validation rows in another order than one process: same calibration."""
    rng = np.random.default_rng(7)
    truth = rng.random(3000)
    labels = (rng.random(3000) < truth).astype(float)
    scores = truth ** 3
    shuffled = rng.permutation(3000)
    first = fit_calibration(scores[:, None], labels[:, None], ["churn"])
    second = fit_calibration(scores[shuffled][:, None], labels[shuffled][:, None], ["churn"])
    assert first.to_json() == second.to_json()

"""The one training path end to end: synthetic journeys -> prepare -> train -> test metrics (real files)."""

from __future__ import annotations

import json

import pytest

from journey_model.cli import main as journey
from journey_model.training import TrainConfig, train

SMALL_MODEL = {"hidden_size": 32, "num_heads": 4, "field_dim": 16}


@pytest.fixture(scope="module")
def prepared(synthetic_journeys):
    return synthetic_journeys(1500, seed=3, max_len=60) / "ds"


def test_atrank_learns_the_planted_outcomes_well_above_chance(prepared, tmp_path):
    result = train(TrainConfig(data_dir=str(prepared), model="atrank", tasks=["outcome"], max_epochs=4,
                               batch_size=32, progress=False, output_dir=str(tmp_path), model_overrides=SMALL_MODEL),
                   metrics_out=tmp_path / "metrics.json")
    assert result.tasks == ["outcome"] and result.epochs >= 1
    assert result.test_metrics["test/auc/default"] > 0.8
    assert result.test_metrics["test/auc/churn"] > 0.6
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["test_metrics"]["test/auc/default"] == pytest.approx(result.test_metrics["test/auc/default"])
    assert result.best_checkpoint and result.events_per_second and result.events_per_second > 0


def test_cli_trains_a_count_baseline_and_writes_metrics(prepared, tmp_path, capsys):
    out = tmp_path / "markov.json"
    code = journey(["-q", "train", "--data", str(prepared), "--model", "markov", "--task", "next_event",
                    "--output-dir", str(tmp_path), "--metrics-out", str(out)])
    assert code == 0
    metrics = json.loads(out.read_text())["test_metrics"]
    # A first-order Markov chain ranks the next event far better than a uniform guess over the ~14 real
    # types (HR@5 = 5/14 = 0.36, MRR = 0.23 for uniform ranking).
    assert metrics["test/hr_at_5"] > 0.6
    assert metrics["test/mrr"] > 0.3
    assert "test/mrr" in capsys.readouterr().out


def test_cli_explains_a_pairing_that_makes_no_sense(prepared, tmp_path, capsys):
    code = journey(["-q", "train", "--data", str(prepared), "--model", "markov", "--task", "outcome",
                    "--output-dir", str(tmp_path)])
    assert code == 1
    assert "model 'markov' cannot answer task 'outcome'" in capsys.readouterr().err


def test_the_reference_preset_is_a_model_name(prepared):
    """`--model atrank-reference` builds ATRank with the reference code's sizes, init and optimiser."""
    from journey_model.models import ATRankConfig, build_model
    from journey_model.preprocessing import Preprocessor

    model = build_model("atrank-reference", Preprocessor.load(prepared).feature_spec())
    assert model.config == ATRankConfig.reference(multi_behaviour=True)
    assert (model.config.optimizer, model.config.learning_rate, model.config.layer_norm_eps) == ("sgd", 1.0, 1e-8)


def test_compare_hands_each_model_the_overrides_its_config_has(prepared, tmp_path):
    """One override set for the zoo: markov ignores hidden_size but does take count_history."""
    from journey_model.compare import compare_models
    from journey_model.models.registry import config_fields

    assert "count_history" in config_fields("markov") and "hidden_size" not in config_fields("markov")

    def markov_mrr(count_history: bool) -> float:
        base = TrainConfig(data_dir=str(prepared), tasks=["next_event"], progress=False, output_dir=str(tmp_path),
                           model_overrides={"hidden_size": 16, "count_history": count_history})
        row = compare_models(["markov"], base, progress_print=False).rows[0]
        assert row.skipped is None
        return row.metrics["mrr"]

    assert markov_mrr(True) != markov_mrr(False)

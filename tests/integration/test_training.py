"""The one training path end to end: synthetic journeys -> prepare -> train -> test metrics (real files)."""

from __future__ import annotations

import json
from dataclasses import fields, replace

import pytest
import torch

from journey_model.data.prepare import read_split
from journey_model.data.preprocessing import Preprocessor
from journey_model.inference.scorer import MODEL_CONFIG_FILE, Scorer, read_bundle, seal_bundle
from journey_model.models import ATRankConfig, build_model, list_models
from journey_model.models.base import LEGACY_TRAINING_FIELDS
from journey_model.models.registry import MODELS
from journey_model.training.checkpoints import load_checkpoint
from journey_model.training.config import ConfigError
from journey_model.training.module import JourneyModule
from journey_model.training.recipes import (
    RECIPES,
    TrainingRecipe,
    recipe_for,
    resolve_recipe,
    split_overrides,
)
from journey_model.training.train import TrainConfig, TrainResult, train
from pipelines import compare
from pipelines.cli import main as journey

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
    # the checkpoint knows the recipe it was trained with
    recipe = load_checkpoint(result.best_checkpoint)["hyper_parameters"]["recipe"]
    assert recipe == {"optimizer": "adam", "learning_rate": 1e-3, "lr_decay_step": None, "lr_after_decay": None,
                      "grad_clip_norm": 5.0, "weight_decay": 0.0}


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
    """`--model atrank-reference` builds ATRank with the reference code's sizes and init, trained by its optimiser."""
    model = build_model("atrank-reference", Preprocessor.load(prepared).feature_spec())
    assert model.config == ATRankConfig.reference(multi_behaviour=True) and model.config.layer_norm_eps == 1e-8
    module = JourneyModule(model)  # no recipe given: the model name's
    setup = module.configure_optimizers()
    optimizer, schedule = setup["optimizer"], setup["lr_scheduler"]["scheduler"]
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["lr"] == 1.0
    assert [schedule.lr_lambdas[0](s) for s in (0, 335_999, 336_000)] == [1.0, 1.0, pytest.approx(0.1)]
    assert module.recipe.grad_clip_norm == 5.0


def test_model_configs_hold_the_architecture_and_every_model_has_a_recipe():
    assert set(RECIPES) == set(list_models())
    for name, entry in MODELS.items():
        assert not LEGACY_TRAINING_FIELDS & {f.name for f in fields(entry.config_class)}, name
    # the settings every model trained with before recipes existed
    assert recipe_for("atrank") == TrainingRecipe("adam", 1e-3, None, None, 5.0, 0.0) == recipe_for("gru-luong")
    assert recipe_for("atrank-reference") == TrainingRecipe("sgd", 1.0, 336_000, 0.1, 5.0, 0.0)
    assert recipe_for("bag") == TrainingRecipe("adam", 1e-2, None, None, 5.0, 0.0)
    assert recipe_for("markov").grad_clip_norm is None  # counted, never clipped
    with pytest.raises(ValueError, match="optimizer = 'lamb'"):
        TrainingRecipe(optimizer="lamb")


def test_set_overrides_reach_the_recipe_or_the_model_config():
    recipe, architecture = split_overrides("bag", {"learning_rate": 0.1, "categorical_fields": ["item"]})
    assert recipe == {"learning_rate": 0.1} and architecture == {"categorical_fields": ["item"]}
    assert resolve_recipe("bag", recipe) == TrainingRecipe(learning_rate=0.1)
    # the trainer's --lr and gradient_clip_val win; the decay target stays absolute
    resolved = resolve_recipe("atrank-reference", {"learning_rate": 0.5}, learning_rate=2.0, gradient_clip_val=1.0)
    assert (resolved.learning_rate, resolved.lr_after_decay, resolved.grad_clip_norm) == (2.0, 0.1, 1.0)
    with pytest.raises(ValueError, match=r"model 'atrank': unknown config fields \['hiden_size'\]; ATRankConfig has .*"
                                         r"TrainingRecipe has \['optimizer'"):
        split_overrides("atrank", {"hiden_size": 8, "learning_rate": 0.1})
    with pytest.raises(ValueError, match=r"\['batch_size'\].*data.batch_size \(--batch-size\)"):
        split_overrides("gru", {"batch_size": 32})


def test_cli_set_reaches_the_recipe_and_names_unknown_fields(prepared, tmp_path, capsys):
    code = journey(["-q", "train", "--data", str(prepared), "--model", "atrank", "--set", "hiden_size=8",
                    "--output-dir", str(tmp_path), "--no-track"])
    assert code != 0 and "unknown config fields ['hiden_size']" in capsys.readouterr().err
    result = train(TrainConfig(data_dir=str(prepared), model="bag", tasks=["outcome"], max_epochs=1, batch_size=64,
                               limit_train_batches=2, progress=False, output_dir=str(tmp_path),
                               model_overrides={"optimizer": "sgd", "learning_rate": 0.3, "weight_decay": 0.01}))
    optimizer = result.module.configure_optimizers()
    assert isinstance(optimizer, torch.optim.SGD)
    assert (optimizer.defaults["lr"], optimizer.defaults["weight_decay"]) == (0.3, 0.01)


def test_bundles_saved_with_training_settings_in_their_config_still_load(prepared, tmp_path):
    preprocessor = Preprocessor.load(prepared)
    model = build_model("atrank", preprocessor.feature_spec(), tasks=["outcome"], **SMALL_MODEL)
    folder = Scorer(model, preprocessor).save(tmp_path / "bundle")
    files = list(read_bundle(folder))

    def rewrite(description: dict) -> None:  # a hand-edited model.json, the manifest sealed again
        (folder / MODEL_CONFIG_FILE).write_text(json.dumps(description))
        seal_bundle(folder, files)

    description = json.loads((folder / MODEL_CONFIG_FILE).read_text())
    description["config"].update(optimizer="adam", learning_rate=1e-3, lr_decay_step=None, lr_after_decay=None,
                                 grad_clip_norm=5.0, batch_size=64, weight_decay=0.0)  # as bundles held them before
    rewrite(description)
    loaded = Scorer.load(folder)
    assert loaded.model.config == model.config
    torch.testing.assert_close(loaded.model.state_dict(), model.state_dict())
    description["config"]["hiden_size"] = 8  # anything else unknown still fails
    rewrite(description)
    with pytest.raises(ValueError, match=r"unknown config fields \['hiden_size'\]"):
        Scorer.load(folder)


def test_compare_hands_each_model_the_overrides_its_config_has(prepared, tmp_path):
    """One override set for the zoo: markov ignores hidden_size but does take count_history."""
    from journey_model.models.registry import config_fields
    from pipelines.compare import compare_models

    assert "count_history" in config_fields("markov") and "hidden_size" not in config_fields("markov")

    def markov_mrr(count_history: bool) -> float:
        base = TrainConfig(data_dir=str(prepared), tasks=["next_event"], progress=False, output_dir=str(tmp_path),
                           model_overrides={"hidden_size": 16, "count_history": count_history})
        row = compare_models(["markov"], base, progress_print=False).rows[0]
        assert row.skipped is None
        return row.metrics["mrr"]

    assert markov_mrr(True) != markov_mrr(False)


def test_compare_hands_recipe_fields_to_every_model(prepared, tmp_path, monkeypatch):
    handed: dict[str, dict] = {}

    def fake_train(config: TrainConfig) -> TrainResult:
        handed[config.model] = dict(config.model_overrides)
        return TrainResult(config.model, ["outcome"], {}, {}, None, 0.0, 0, 0, validation_value=0.0)

    monkeypatch.setattr(compare, "tracked_train", fake_train)
    base = TrainConfig(data_dir=str(prepared), tasks=["outcome"], progress=False, output_dir=str(tmp_path), track=False,
                       model_overrides={"hidden_size": 16, "learning_rate": 0.05, "count_history": False})
    compare.compare_models(["atrank", "bag"], base, progress_print=False)
    assert handed == {"atrank": {"hidden_size": 16, "learning_rate": 0.05}, "bag": {"learning_rate": 0.05}}


def test_training_calibrates_the_outcomes_and_the_bundle_carries_it(prepared, tmp_path):
    with pytest.raises(ConfigError, match="task.operating_policy = 'top:5%'"):
        train(TrainConfig(data_dir=str(prepared), model="bag", operating_policy="top:5%", output_dir=str(tmp_path)))
    result = train(TrainConfig(data_dir=str(prepared), model="bag", tasks=["outcome"], max_epochs=1, batch_size=64,
                               progress=False, output_dir=str(tmp_path), operating_policy="capacity:10%"),
                   metrics_out=tmp_path / "metrics.json")
    preprocessor = Preprocessor.load(prepared)
    names = list(preprocessor.outcome_names)
    assert set(result.calibration.outcomes) == set(names)
    for name in names:
        entry = result.calibration.outcomes[name]
        assert entry.method in ("identity", "platt", "isotonic") and entry.n > 0
        assert entry.logloss_after <= entry.logloss_before + 1e-9  # fitted by log-loss on these rows
        point = entry.operating_point
        assert point.policy == "capacity:10%" and point.flagged_share == pytest.approx(0.10, abs=0.02)
        assert result.val_metrics[f"val/op_flagged/{name}"] == point.flagged_share
        for key in ("ece", "ece_raw", "logloss", "logloss_raw", "op_precision", "op_recall", "lift10"):
            assert f"test/{key}/{name}" in result.test_metrics
        assert result.test_metrics[f"test/op_flagged/{name}"] == pytest.approx(0.10, abs=0.05)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["calibration"] == json.loads(result.calibration.dumps())
    # the Scorer's raw probabilities are the ones the calibration was fitted on: on validation its flags
    # cover the policy's share, and the bundle scores the same after a round trip
    folder = Scorer(result.module.model, preprocessor, calibration=result.calibration).save(tmp_path / "bundle")
    scores = Scorer.load(folder).score_rows(read_split(prepared, "val"))
    for name in names:
        assert scores[f"flag_{name}"].mean() == pytest.approx(
            result.calibration.outcomes[name].operating_point.flagged_share, abs=0.01)


def test_max_time_stops_training_and_says_why_and_predictions_are_written(prepared, tmp_path, capsys):
    import pyarrow.parquet as pq

    predictions = tmp_path / "predictions.parquet"
    code = journey(["-q", "train", "--data", str(prepared), "--model", "atrank", "--task", "outcome,next_event",
                    "--max-epochs", "100", "--max-time", "1", "--batch-size", "16", "--set", "hidden_size=16",
                    "--set", "num_heads=2", "--set", "field_dim=8", "--output-dir", str(tmp_path), "--no-track",
                    "--metrics-out", str(tmp_path / "m.json"), "--predictions-out", str(predictions)])
    assert code == 0
    out = capsys.readouterr().out
    assert "stopped by --max-time: the wall-clock budget of 1 (1 s) ran out" in out
    written = json.loads((tmp_path / "m.json").read_text())
    assert written["stopped_by"] == "max_time" and written["epochs"] < 100
    table = pq.read_table(predictions)
    test = read_split(prepared, "test", columns=["customer_id", "cutoff"])
    assert table.column("customer_id").to_pylist() == test.column("customer_id").to_pylist()
    assert table.column("cutoff").equals(test.column("cutoff"))
    assert set(table.column_names) == {"customer_id", "cutoff", "p_churn", "p_default", "p_uptake",
                                       "next_event_top_ids", "next_event_top_p"}  # no event values, no labels
    p = table.column("p_default").to_numpy()
    assert ((p >= 0) & (p <= 1)).all()
    top = table.column("next_event_top_p").to_pylist()[0]
    assert len(top) == 10 and top == sorted(top, reverse=True) and sum(top) <= 1 + 1e-6
    with pytest.raises(ConfigError, match="max_time"):
        TrainConfig(data_dir=str(prepared), max_time="twenty minutes")
    assert TrainConfig(data_dir=str(prepared), max_time="00:20:00").max_time == "00:20:00"


def test_metrics_out_history_has_seconds_per_epoch(prepared, tmp_path):
    result = train(TrainConfig(data_dir=str(prepared), model="bag", tasks=["outcome"], max_epochs=2, patience=5,
                               batch_size=64, progress=False, output_dir=str(tmp_path)),
                   metrics_out=tmp_path / "metrics.json")
    history = json.loads((tmp_path / "metrics.json").read_text())["history"]
    assert [row["epoch"] for row in history] == [0.0, 1.0] and result.stopped_by == "max_epochs"
    for row in history:
        assert 0 < row["time/train_s"] <= row["time/epoch_s"]


def test_compare_skips_a_model_that_is_the_same_network_and_writes_predictions_per_model(prepared, tmp_path):
    import pyarrow.parquet as pq

    from journey_model.models.registry import same_network
    from journey_model.training.datamodule import JourneyDataModule

    assert same_network("transformer", ["outcome", "next_event"]) == "atrank"
    assert same_network("transformer", ["outcome", "forecast"]) is None and same_network("atrank", ["outcome"]) is None
    spec = JourneyDataModule(str(prepared)).feature_spec
    torch.manual_seed(0)
    atrank = build_model("atrank", spec, tasks=["outcome"])
    torch.manual_seed(0)
    transformer = build_model("transformer", spec, tasks=["outcome"])
    assert [(k, v.shape) for k, v in atrank.state_dict().items()] == \
        [(k, v.shape) for k, v in transformer.state_dict().items()]

    base = TrainConfig(data_dir=str(prepared), tasks=["outcome"], max_epochs=1, limit_train_batches=2, progress=False,
                       output_dir=str(tmp_path), track=False, model_overrides=SMALL_MODEL)
    comparison = compare.compare_models(["transformer", "atrank", "bag"], base, progress_print=False,
                                        predictions_dir=tmp_path / "predictions")
    rows = {row.model: row for row in comparison.rows}
    assert rows["transformer"].skipped == "same network as atrank for outcome"
    assert "skipped: same network as atrank for outcome" in comparison.table(["auc/churn"])
    assert rows["atrank"].skipped is None and rows["bag"].skipped is None
    assert sorted(p.name for p in (tmp_path / "predictions").iterdir()) == ["atrank.parquet", "bag.parquet"]
    assert "p_churn" in pq.read_table(tmp_path / "predictions" / "bag.parquet").column_names
    # alone, or on forecasts, the transformer is trained
    alone = compare.compare_models(["transformer"], replace(base, output_dir=str(tmp_path / "alone")),
                                   progress_print=False)
    assert alone.rows[0].skipped is None


def test_count_baselines_count_only_targets_on_every_event_data_unless_told(prepared, tmp_path):
    from journey_model.data.prepare import PrepareConfig, prepare
    from journey_model.data.preprocessing import PreprocessingConfig
    from journey_model.training.recipes import data_defaults

    assert data_defaults("markov", "every-event") == {"count_history": False}
    assert data_defaults("markov", "labels") == {} and data_defaults("atrank", "every-event") == {}
    every = tmp_path / "every"
    prepare(PrepareConfig(events_dir=str(prepared.parent / "synth"), out_dir=str(every), cutoff_strategy="every-event",
                          max_examples_per_customer=3, preprocessing=PreprocessingConfig(max_len=30)), progress=False)

    def count_history(data: str, overrides: dict) -> bool:
        result = train(TrainConfig(data_dir=data, model="markov", tasks=["next_event"], progress=False,
                                   output_dir=str(tmp_path / "runs"), model_overrides=overrides))
        return result.module.model.config.count_history

    assert count_history(str(every), {}) is False
    assert count_history(str(every), {"count_history": True}) is True
    assert count_history(str(prepared), {}) is True

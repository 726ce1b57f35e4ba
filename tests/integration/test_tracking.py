"""MLflow as the record of truth, against a real SQLite store in tmp: what a run logs, the registered model
scoring raw events in a fresh process, promotion by the validation metric, comparisons under one parent run,
and the typed config behind `journey train`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from journey_model.data.preprocessing import Preprocessor
from journey_model.inference.scorer import Scorer
from journey_model.tracking import plots
from journey_model.tracking.pyfunc import input_example_events, load_scorer
from journey_model.tracking.registry import PromotionError, promote, register_run_model
from journey_model.tracking.runs import tracked_train
from journey_model.tracking.store import mlflow_scope, registered_model_name
from journey_model.training.config import ConfigError, TrainConfig, load_config
from pipelines.cli import main as journey

TINY_MODEL = {"hidden_size": 16, "num_heads": 2, "field_dim": 8}
MODEL_NAME = registered_model_name("synth_bank", "outcome")


@pytest.fixture(scope="module")
def prepared(synthetic_journeys):
    return synthetic_journeys(400, seed=5, max_len=40)


FIGURE_TEXTS: dict[str, list[str]] = {}  # every text of every figure the tracked run drew, by file name


@pytest.fixture(scope="module")
def tracked(prepared):
    """One tracked, registered training run in a fresh SQLite store."""
    store = f"sqlite:///{prepared / 'store' / 'mlflow.db'}"
    config = TrainConfig(data_dir=str(prepared / "ds"), model="atrank", tasks=["outcome"], max_epochs=2,
                         batch_size=32, threads=1, progress=False, output_dir=str(prepared / "runs"),
                         model_overrides=dict(TINY_MODEL), track=True, tracking_uri=store,
                         system_metrics_interval_s=0.5)
    environment = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL")}
    save_figure = plots.save_figure

    def reading_texts(fig, path):  # noqa: ANN001, ANN202
        FIGURE_TEXTS[Path(path).name] = plots.figure_texts(fig)
        return save_figure(fig, path)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plots, "save_figure", reading_texts)
        result = tracked_train(config)
    # A library call leaves MLflow's process-wide settings as it found them.
    assert {k: os.environ.get(k) for k in environment} == environment
    return result, store, config


def test_a_run_records_config_metrics_plots_preprocessing_and_environment(tracked, prepared):
    result, store, config = tracked
    client = MlflowClient(store)
    run = client.get_run(result.run_id)
    experiment = client.get_experiment(run.info.experiment_id)
    assert run.info.status == "FINISHED" and experiment.name == "journey-synth_bank-outcome"
    # Artifacts beside the store, never in ./mlruns.
    assert experiment.artifact_location == (prepared / "store" / "mlartifacts" / experiment.name).as_uri()
    params = run.data.params
    assert params["data.batch_size"] == "32" and params["model.model_overrides.hidden_size"] == "16"
    assert params["model_config.hidden_size"] == "16" and params["trainer.max_epochs"] == "2"
    # architecture and training recipe are logged apart; the recipe as resolved (atrank's: Adam 1e-3, clip 5)
    assert "model_config.learning_rate" not in params
    assert (params["recipe.optimizer"], params["recipe.learning_rate"], params["recipe.grad_clip_norm"]) == (
        "adam", "0.001", "5.0")
    metrics = run.data.metrics
    assert len(client.get_metric_history(result.run_id, "val/loss")) == 2  # per epoch
    assert metrics["test/auc/default"] == pytest.approx(result.test_metrics["test/auc/default"])
    assert metrics["best/val/loss"] == pytest.approx(result.validation_value)
    assert metrics["train/epoch_events_per_s"] > 0 and metrics["train/epoch_sequences_per_s"] > 0
    assert any(key.startswith("system/cpu_utilization") for key in metrics)
    preprocessor = Preprocessor.load(prepared / "ds")
    assert run.data.tags["journey.data_hash"] == preprocessor.input_hash
    artifacts = Path(mlflow.artifacts.download_artifacts(run_id=result.run_id, tracking_uri=store,
                                                         dst_path=str(prepared / "downloaded")))
    for name in ("config.yaml", "test_metrics.json", "preprocessing/preprocessing.json", "preprocessing/manifest.json",
                 "environment/environment.json", "environment/installed-packages.txt", "plots/learning_curves.png",
                 "plots/roc_pr.png", "plots/calibration.png", "plots/attention.png",
                 "plots/reliability_before_after.png", "calibration.json"):
        assert (artifacts / name).stat().st_size > 0, name
    # calibration: fitted on validation, logged as in the bundle, its test figures in the run's metrics
    assert json.loads((artifacts / "calibration.json").read_text()) == result.calibration.to_json()
    for key in ("test/ece/churn", "test/ece_raw/churn", "test/op_precision/churn", "test/lift10/churn"):
        if np.isfinite(result.test_metrics[key]):
            assert metrics[key] == pytest.approx(result.test_metrics[key]), key
    assert load_config(artifacts / "config.yaml") == config  # the saved config is the resolved config
    assert Preprocessor.load(artifacts / "preprocessing").artifact_hash == preprocessor.artifact_hash
    environment = json.loads((artifacts / "environment" / "environment.json").read_text())
    assert environment["packages"]["torch"].startswith("2.13.0")
    assert json.loads((artifacts / "test_metrics.json").read_text()) == result.test_metrics


def test_the_model_is_registered_with_signature_data_hash_and_pinned_torch(tracked, prepared):
    result, store, _ = tracked
    client = MlflowClient(store)
    version = client.get_model_version(MODEL_NAME, result.registered_version)
    assert result.registered_model == MODEL_NAME and version.run_id == result.run_id
    assert version.tags["data_hash"] == Preprocessor.load(prepared / "ds").input_hash
    assert version.tags["git_commit"] and version.tags["validation_metric"] == "val/loss"
    assert float(version.tags["validation_value"]) == pytest.approx(result.validation_value)
    with mlflow_scope(store):
        model = mlflow.models.get_model_info(f"models:/{MODEL_NAME}/{result.registered_version}")
    inputs = {c["name"]: c for c in model.signature.inputs.to_dict()}
    assert {"customer_id", "ts", "event_type", "cutoff"} <= set(inputs) and not inputs["cutoff"]["required"]
    assert [c["name"] for c in model.signature.outputs.to_dict()][:3] == ["customer_id", "cutoff", "n_events"]
    with mlflow_scope(store):
        folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=result.model_uri))
    assert "torch==2.13.0" in (folder / "requirements.txt").read_text().splitlines()
    assert (folder / "constraints.txt").read_text().strip() == "torch==2.13.0"
    assert (folder / "artifacts" / "bundle" / "bundle.json").exists()  # the contract batch scoring relies on
    assert (folder / "artifacts" / "bundle" / "calibration.json").exists()
    outputs = [c["name"] for c in model.signature.outputs.to_dict()]
    assert {"flag_churn", "flag_default", "flag_uptake"} <= set(outputs)


def test_no_training_customer_reaches_the_run_the_model_or_the_plots(tracked, prepared):
    """Customer ids, amounts and labels stay in the data: the input example is made up from the schema, the
    attention plot shows "example 1…n" with the model's scores, and no artifact names a training customer."""
    result, store, _ = tracked
    events = pd.read_parquet(prepared / "synth" / "events")
    ids = set(events["customer_id"])
    with mlflow_scope(store):
        model = Path(mlflow.artifacts.download_artifacts(artifact_uri=result.model_uri,
                                                         dst_path=str(prepared / "privacy" / "model")))
    run = Path(mlflow.artifacts.download_artifacts(run_id=result.run_id, tracking_uri=store,
                                                   dst_path=str(prepared / "privacy" / "run")))
    files = [p for p in [*model.rglob("*"), *run.rglob("*")] if p.is_file() and "code" not in p.parts]
    assert any(p.name == "input_example.json" for p in files) and any(p.name == "attention.png" for p in files)
    for path in files:
        found = {token.decode() for token in re.findall(rb"C[0-9]{8}", path.read_bytes())}
        assert not found & ids, f"{path} holds training customer ids {sorted(found & ids)[:3]}"
    example = json.loads((model / "input_example.json").read_text())
    frame = pd.DataFrame(example["data"], columns=example["columns"])
    assert set(frame["customer_id"]) == {"example-1", "example-2"}
    assert set(frame["amount"]) <= {float(10 * k) for k in range(1, 13)}  # round, made-up amounts
    assert set(frame["item"]) == {"example"}  # no category value seen in training
    shown = pd.DataFrame(input_example_events(Preprocessor.load(prepared / "ds")))
    assert list(shown.columns) == example["columns"]  # built from the preprocessing artifact alone
    texts = [t for name in ("attention.png", "roc_pr.png", "calibration.png", "learning_curves.png")
             for t in FIGURE_TEXTS[name]]
    assert not [t for t in texts if set(re.findall(r"C[0-9]{8}", t)) & ids]
    titles = [t for t in FIGURE_TEXTS["attention.png"] if "behaviours" in t]
    assert titles and all(re.match(r"example \d+: ", t) for t in titles)
    assert not [t for t in titles if "y=" in t]  # no true label


def _raw_events(prepared: Path) -> pd.DataFrame:
    """Three customers' raw canonical events; two of them with a cut-off, one scored 'now'."""
    events = pd.read_parquet(prepared / "synth" / "events")
    chosen = events["customer_id"].drop_duplicates().iloc[:3].tolist()
    events = events[events["customer_id"].isin(chosen)].copy()
    events["cutoff"] = pd.Series(pd.NaT, index=events.index, dtype="datetime64[us, UTC]")
    events.loc[events["customer_id"] == chosen[0], "cutoff"] = pd.Timestamp("2024-07-01", tz="UTC")
    events.loc[events["customer_id"] == chosen[1], "cutoff"] = pd.Timestamp("2024-10-01", tz="UTC")
    return events


FRESH_PROCESS = """
import json, sys
import mlflow, pandas as pd
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model(sys.argv[2])
scores = model.predict(pd.read_parquet(sys.argv[3]))
scores.to_json(sys.argv[4], orient="records", date_format="iso", date_unit="us")
print(json.dumps({"journey_model": sys.modules["journey_model"].__file__}))
"""


def test_the_registered_model_scores_raw_events_in_a_fresh_process(tracked, prepared, tmp_path):
    result, store, _ = tracked
    events = _raw_events(prepared)
    events.to_parquet(tmp_path / "events.parquet")
    uri = f"models:/{MODEL_NAME}/{result.registered_version}"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI")}
    env.update(BENTOML_DO_NOT_TRACK="True", MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    done = subprocess.run([sys.executable, "-c", FRESH_PROCESS, store, uri, str(tmp_path / "events.parquet"),
                           str(tmp_path / "scores.json")], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    # The model brings its own code: the fresh process imported journey_model from the model folder.
    assert "/artifacts/code/journey_model/" in json.loads(done.stdout.strip().splitlines()[-1])["journey_model"]
    fresh = pd.read_json(tmp_path / "scores.json", orient="records")
    trained = Scorer(result.module.model.cpu(), Preprocessor.load(prepared / "ds"),
                     calibration=result.calibration).score_events(events)
    assert list(fresh["customer_id"]) == list(trained["customer_id"]) and len(fresh) == 3
    for column in ("p_churn", "p_default", "p_uptake"):
        np.testing.assert_allclose(fresh[column].to_numpy(), trained[column].to_numpy(), rtol=1e-5)
        flag = column.replace("p_", "flag_")
        assert fresh[flag].tolist() == trained[flag].tolist()  # the calibrated model's operating points
    assert pd.Timestamp(fresh["cutoff"][0]) == pd.Timestamp("2024-07-01", tz="UTC")
    # load_scorer resolves registry URIs and bare logged-model ids to the same Scorer; text timestamps (as JSON
    # requests carry them) score like timestamps, text without a zone read as UTC.
    with mlflow_scope(store):
        as_text = events.assign(ts=events["ts"].dt.strftime("%Y-%m-%dT%H:%M:%S.%f"),
                                cutoff=events["cutoff"].dt.strftime("%Y-%m-%dT%H:%M:%S%z"))
        from_text = mlflow.pyfunc.load_model(uri).predict(as_text)
        np.testing.assert_allclose(from_text["p_churn"], trained["p_churn"], rtol=1e-6)
        for any_uri in (uri, result.model_uri, result.model_uri.removeprefix("models:/")):
            scores = load_scorer(any_uri).score_events(events)
            np.testing.assert_allclose(scores["p_default"], trained["p_default"], rtol=1e-6)


def _candidate(client: MlflowClient, experiment_id: str, model_uri: str, name: str, value: float,
               metric: str = "val/loss", mode: str = "min", data_hash: str = "abc") -> str:
    """A run with a given validation value whose model is registered as a new version of ``name``."""
    run = client.create_run(experiment_id, tags={"journey.validation_metric": metric, "journey.validation_mode": mode,
                                                 "journey.validation_value": repr(value), "journey.data_hash": data_hash})
    client.set_terminated(run.info.run_id)
    return str(register_run_model(model_uri, name, run.info.run_id, client).version)


def test_promotion_moves_the_champion_only_when_the_candidate_is_better(tracked, capsys):
    result, store, _ = tracked
    client = MlflowClient(store)
    experiment = client.get_run(result.run_id).info.experiment_id
    name = "journey-promotion-test"
    first = _candidate(client, experiment, result.model_uri, name, 0.40)
    decision = promote(name, client=client)
    assert decision.promoted and "there was no champion yet" in decision.message
    worse = _candidate(client, experiment, result.model_uri, name, 0.45)
    decision = promote(name, client=client)
    assert not decision.promoted and decision.candidate_version == worse and "kept" in decision.message
    assert str(client.get_model_version_by_alias(name, "champion").version) == first
    tie = _candidate(client, experiment, result.model_uri, name, 0.40)
    assert not promote(name, tie, client=client).promoted  # a tie keeps the champion
    better = _candidate(client, experiment, result.model_uri, name, 0.35, data_hash="other")
    decision = promote(name, client=client)
    assert decision.promoted and decision.champion_version == first and "different data" in decision.message
    assert str(client.get_model_version_by_alias(name, "champion").version) == better
    assert client.get_model_version(name, better).tags["promoted_over"] == first
    # The command line says so either way, and exits 0.
    assert journey(["promote", "--name", name, "--version", worse, "--tracking-uri", store]) == 0
    assert f"kept {name} v{better} as @champion" in capsys.readouterr().out
    other = _candidate(client, experiment, result.model_uri, name, 0.99, metric="val/auc/churn", mode="max")
    with pytest.raises(PromotionError, match="cannot be compared"):
        promote(name, other, client=client)
    assert str(client.get_model_version_by_alias(name, "champion").version) == better


def test_promotion_reports_the_operating_points_and_can_decide_on_one(tracked):
    result, store, _ = tracked
    client = MlflowClient(store)
    experiment = client.get_run(result.run_id).info.experiment_id
    name = "journey-operating-point-test"

    def candidate(loss: float, precision: float, recall: float, lift: float) -> str:
        version = _candidate(client, experiment, result.model_uri, name, loss)
        run_id = client.get_model_version(name, version).run_id
        for key, value in (("op_precision", precision), ("op_recall", recall), ("lift10", lift)):
            client.log_metric(run_id, f"test/{key}/churn", value)
        return version

    first = candidate(0.40, 0.50, 0.20, 2.0)
    assert "churn precision 0.500, recall 0.200, lift10 2.000" in promote(name, client=client).message
    second = candidate(0.45, 0.70, 0.25, 3.0)
    decision = promote(name, client=client)  # worse validation loss: kept, but the figures are shown side by side
    assert not decision.promoted
    assert "churn precision 0.700 vs 0.500, recall 0.250 vs 0.200, lift10 3.000 vs 2.000" in decision.message
    assert decision.candidate_operating == {"op_precision/churn": 0.70, "op_recall/churn": 0.25, "lift10/churn": 3.0}
    assert decision.champion_operating["op_precision/churn"] == 0.50
    decision = promote(name, second, client=client, by="op_precision/churn")  # decided at the operating point
    assert decision.promoted and decision.metric == "test/op_precision/churn" and decision.mode == "max"
    assert str(client.get_model_version_by_alias(name, "champion").version) == second != first
    with pytest.raises(PromotionError, match="no test/op_precision/default metric"):
        promote(name, first, client=client, by="op_precision/default")
    with pytest.raises(PromotionError, match="FIGURE/OUTCOME"):
        promote(name, first, client=client, by="auc/churn")


def test_compare_trains_each_model_under_one_parent_run_and_registers_the_best(prepared, tmp_path, capsys):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = journey(["-q", "compare", "--data", str(prepared / "ds"), "--models", "atrank,bag,markov", "--task",
                    "outcome", "--max-epochs", "1", "--batch-size", "32", "--threads", "1", "--set", "hidden_size=16",
                    "--set", "num_heads=2", "--set", "field_dim=8", "--no-plots", "--no-system-metrics",
                    "--output-dir", str(tmp_path / "runs"), "--tracking-uri", store])
    assert code == 0
    printed = capsys.readouterr().out
    assert "skipped: answers none of ['outcome']" in printed  # markov cannot answer outcomes: said, not hidden
    header = next(line for line in printed.splitlines() if line.startswith("model ")).split()
    assert header[:4] == ["model", "auc/churn", "auc/default", "auc/uptake"]
    assert {"val/loss", "events/s", "params"} <= set(header)
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("journey-synth_bank-outcome")
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if r.info.run_name == "compare outcome")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.info.run_name for r in children) == ["atrank", "bag"]
    table = client.download_artifacts(parent.info.run_id, "comparison.txt", str(tmp_path))
    assert "atrank" in Path(table).read_text() and "bag" in Path(table).read_text()
    assert parent.data.metrics["atrank/parameters"] > parent.data.metrics["bag/parameters"]
    best = min(children, key=lambda r: r.data.metrics["best/val/loss"])
    versions = client.search_model_versions(f"name = '{MODEL_NAME}'")
    assert [v.run_id for v in versions] == [best.info.run_id]  # only the best model is registered
    assert parent.data.tags["journey.best_model"] == best.info.run_name


def test_train_help_lists_every_option_with_its_default(capsys):
    with pytest.raises(SystemExit) as exit_info:
        journey(["train", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for f in fields(TrainConfig):
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        assert flag in text, flag
    assert text.count("(default:") >= len(fields(TrainConfig))
    assert "[epochs]" in text and "[customers]" in text and "[seconds]" in text  # units


def test_config_file_sections_overrides_and_errors(prepared, tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({
        "data": {"data_dir": str(prepared / "ds"), "batch_size": 16},
        "model": {"model": "gru-bahdanau", "model_overrides": {"hidden_size": 32}},
        "trainer": {"max_epochs": 7, "lr_schedule": "cosine"},
    }))
    config = load_config(path, max_epochs=2)
    assert (config.model, config.batch_size, config.max_epochs, config.lr_schedule) == ("gru-bahdanau", 16, 2, "cosine")
    flat = tmp_path / "flat.yaml"
    flat.write_text("data_dir: somewhere\nmax_epochs: 3\nmodel_overrides: {hidden_size: 8}\n")
    assert load_config(flat).model_overrides == {"hidden_size": 8}
    path.write_text("trainer: {max_epoch: 3}\n")
    with pytest.raises(ConfigError, match=r"run\.yaml: unknown key trainer\.max_epoch"):
        load_config(path)
    path.write_text("data: {data_dir: x}\ntrainer: {max_epochs: many}\n")
    with pytest.raises(ConfigError, match=r"run\.yaml, trainer\.max_epochs: max_epochs = 'many'; expected int"):
        load_config(path)
    path.write_text("data: {data_dir: x}\ntrainer: {lr_schedule: sawtooth}\n")
    with pytest.raises(ConfigError, match="trainer.lr_schedule = 'sawtooth'; expected one of"):
        load_config(path)

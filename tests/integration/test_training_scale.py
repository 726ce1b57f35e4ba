"""Training that scales and survives: DDP on 2 CPU processes (gloo) and resuming an interrupted run.

Real files throughout: synthetic journeys, a prepared dataset, checkpoints and a SQLite MLflow store in tmp.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import replace

import pytest
from lightning.pytorch.callbacks import Callback
from mlflow.tracking import MlflowClient

from journey_model.tracking.runs import tracked_train as train
from journey_model.training.datamodule import LengthBucketBatchSampler, RankSliceBatchSampler
from journey_model.training.train import TrainConfig, _precision
from pipelines.cli import main as journey

TINY_MODEL = {"hidden_size": 16, "num_heads": 2, "field_dim": 8}


@pytest.fixture(scope="module")
def prepared(synthetic_journeys):
    return synthetic_journeys(400, seed=11, max_len=40) / "ds"


def tiny_config(prepared, tmp_path, **changes) -> TrainConfig:
    base = TrainConfig(data_dir=str(prepared), model="atrank", tasks=["outcome"], max_epochs=2, patience=5,
                       batch_size=32, threads=1, progress=False, output_dir=str(tmp_path / "runs"),
                       model_overrides=dict(TINY_MODEL))
    return replace(base, **changes)


class Interrupt(RuntimeError):
    """Stands in for a crash or a pre-empted machine."""


class InterruptAtEpoch(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        if trainer.current_epoch == self.epoch:
            raise Interrupt(f"interrupted at the start of epoch {self.epoch}")


def test_every_process_gets_its_share_of_the_same_global_batches():
    lengths = [5, 1, 9, 3, 7, 2, 8, 4, 6, 10, 11]
    one = LengthBucketBatchSampler(lengths, batch_size=4, seed=3)
    single = list(RankSliceBatchSampler(one))
    shares = [list(RankSliceBatchSampler(LengthBucketBatchSampler(lengths, batch_size=4, seed=3), r, 2)) for r in (0, 1)]
    assert len(shares[0]) == len(shares[1]) == len(single)  # every process steps as often as one process would
    for batch, first, second in zip(single, *shares):
        assert sorted(first + second) == sorted(batch)  # together exactly the customers of that global batch


def test_resume_from_the_last_checkpoint_reproduces_the_uninterrupted_run(prepared, tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # Dropout makes training draw random numbers: the resumed epochs must draw the same ones.
    tracked = {"track": True, "tracking_uri": store, "log_model": False, "plots": False, "system_metrics": False,
               "model_overrides": {**TINY_MODEL, "dropout": 0.3}, "lr_schedule": "cosine", "warmup_steps": 3}
    whole = train(tiny_config(prepared, tmp_path / "whole", **tracked))

    config = tiny_config(prepared, tmp_path / "interrupted", **tracked)
    with pytest.raises(Interrupt):
        train(config, callbacks=[InterruptAtEpoch(1)])
    checkpoint_dir = tmp_path / "interrupted" / "runs" / "atrank"
    assert (checkpoint_dir / "last.ckpt").exists() and (checkpoint_dir / "config.yaml").exists()
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("journey-synth_bank-outcome").experiment_id])
    interrupted = next(r for r in runs if r.info.run_id != whole.run_id)
    assert interrupted.info.status == "FAILED"

    resumed = train(replace(config, resume="last"))
    assert resumed.run_id == interrupted.info.run_id  # the same MLflow run continues
    assert client.get_run(resumed.run_id).info.status == "FINISHED"
    assert whole.history[-1]["train/lr"] < whole.history[0]["train/lr"]  # the cosine schedule decays
    assert resumed.epochs == whole.epochs == 2
    assert [row["epoch"] for row in resumed.history] == [0.0, 1.0]  # curves survive the interruption
    for key, value in whole.test_metrics.items():
        assert resumed.test_metrics[key] == pytest.approx(value, rel=1e-6, abs=1e-7), key
    assert resumed.validation_value == pytest.approx(whole.validation_value, rel=1e-6)
    for before, after in zip(whole.history, resumed.history):
        assert after["val/loss"] == pytest.approx(before["val/loss"], rel=1e-6)
        assert after["train/loss"] == pytest.approx(before["train/loss"], rel=1e-6)
    val_loss = client.get_metric_history(resumed.run_id, "val/loss")
    assert len(val_loss) == 2  # one point per epoch, across the interruption


def test_gpu_runs_default_to_bf16_mixed_precision_and_cpu_runs_to_float32():
    assert _precision(TrainConfig(data_dir="x", accelerator="gpu")) == "bf16-mixed"
    assert _precision(TrainConfig(data_dir="x", accelerator="cpu")) == "32-true"
    assert _precision(TrainConfig(data_dir="x", accelerator="gpu", precision="16-mixed")) == "16-mixed"


def test_bf16_mixed_precision_path_runs_on_cpu(prepared, tmp_path):
    """The GPU default (bf16 autocast) exercised on CPU: finite losses, metrics computed in float32."""
    result = train(tiny_config(prepared, tmp_path, precision="bf16-mixed", max_epochs=1))
    assert math.isfinite(result.test_metrics["test/loss"]) and 0.0 <= result.test_metrics["test/auc/default"] <= 1.0


def test_resume_without_a_checkpoint_says_where_it_looked(prepared, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at .*last.ckpt"):
        train(tiny_config(prepared, tmp_path, resume="last"))


def test_a_corrupted_checkpoint_refuses_to_resume_with_one_line_naming_it(prepared, tmp_path, capsys):
    """4 KB zeroed in the middle of last.ckpt, or the file cut short: `journey train --resume last` refuses it."""
    config = tiny_config(prepared, tmp_path, max_epochs=1)
    train(config)
    run_dir = tmp_path / "runs" / "atrank"
    assert {p.name for p in run_dir.iterdir()} >= {"last.ckpt", "last.ckpt.sha256", "best.ckpt", "best.ckpt.sha256"}
    intact = (run_dir / "last.ckpt").read_bytes()
    zeroed = bytearray(intact)
    zeroed[len(intact) // 2 - 2048:len(intact) // 2 + 2048] = bytes(4096)
    command = ["-q", "train", "--data", str(prepared), "--model", "atrank", "--task", "outcome", "--max-epochs", "2",
               "--output-dir", str(tmp_path / "runs"), "--no-track", "--resume", "last", "--set", "hidden_size=16",
               "--set", "num_heads=2", "--set", "field_dim=8", "--threads", "1"]
    for damaged in (bytes(zeroed), intact[: len(intact) // 2]):
        (run_dir / "last.ckpt").write_bytes(damaged)
        assert journey(command) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err
        assert f"{run_dir / 'last.ckpt'}: corrupted or changed since it was written" in err
    (run_dir / "last.ckpt").write_bytes(intact)
    (run_dir / "last.ckpt.sha256").unlink()  # a checkpoint nobody can vouch for is not resumed either
    assert journey(command) == 1
    assert "last.ckpt.sha256" in capsys.readouterr().err


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_matches_one_process(prepared, tmp_path):
    """`journey train --devices 2` on CPU: Lightning launches the second process (gloo); same results as one."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = ["--data", str(prepared), "--model", "atrank", "--task", "outcome", "--max-epochs", "2",
              "--batch-size", "32", "--threads", "1", "--set", "hidden_size=16", "--set", "num_heads=2",
              "--set", "field_dim=8", "--set", "dropout=0.0", "--accelerator", "cpu"]
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "True", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    ddp = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "-q", "train", *common, "--devices", "2",
         "--output-dir", str(tmp_path / "ddp"), "--metrics-out", str(tmp_path / "ddp.json"),
         "--tracking-uri", store, "--no-log-model", "--no-plots", "--system-metrics-interval-s", "1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    distributed = json.loads((tmp_path / "ddp.json").read_text())
    single = train(TrainConfig(data_dir=str(prepared), model="atrank", tasks=["outcome"], max_epochs=2, batch_size=32,
                               threads=1, accelerator="cpu", progress=False, output_dir=str(tmp_path / "single"),
                               model_overrides={**TINY_MODEL, "dropout": 0.0}))
    assert distributed["global_rank"] == 0 and distributed["epochs"] == single.epochs == 2
    # Each step of the two processes covers the global batch one process trains on, with gradients weighted by
    # share, and evaluation gathers every customer once: the same numbers up to float summation order.
    for key, value in single.test_metrics.items():
        assert distributed["test_metrics"][key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
    for one, two in zip(single.history, distributed["history"]):
        assert two["val/loss"] == pytest.approx(one["val/loss"], rel=1e-4)
        assert two["train/loss"] == pytest.approx(one["train/loss"], rel=1e-4)
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("journey-synth_bank-outcome").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # only the global-zero process records
    assert runs[0].data.metrics["test/loss"] == pytest.approx(distributed["test_metrics"]["test/loss"])

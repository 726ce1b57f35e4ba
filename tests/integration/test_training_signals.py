"""Long jobs tell what they do and what stopped them: progress lines without a terminal, and a SIGTERM'd
`journey train` / `journey compare` exits 143 saying which model and epoch it interrupted, its MLflow runs KILLED."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from journey_model.training.progress import wants_progress_log
from journey_model.training.train import TrainConfig, train

TINY = {"hidden_size": 16, "num_heads": 2, "field_dim": 8}


@pytest.fixture(scope="module")
def prepared(synthetic_journeys):
    return synthetic_journeys(400, seed=5, max_len=40) / "ds"


class _Tty:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_progress_lines_when_no_terminal_shows_bars(prepared, tmp_path, caplog):
    assert wants_progress_log(True, 30, (_Tty(True), _Tty(False)))  # output piped to a file
    assert wants_progress_log(False, 30, (_Tty(True), _Tty(True)))  # -q: no bars
    assert not wants_progress_log(True, 30, (_Tty(True), _Tty(True)))  # a terminal shows the bars
    assert not wants_progress_log(False, -1, (_Tty(False), _Tty(False)))  # -1: never
    with caplog.at_level(logging.INFO, logger="journey_model.training.progress"):
        train(TrainConfig(data_dir=str(prepared), model="atrank", tasks=["outcome"], max_epochs=1, batch_size=32,
                          limit_train_batches=3, progress=False, progress_interval=0, output_dir=str(tmp_path),
                          model_overrides=TINY))
    lines = [r.getMessage() for r in caplog.records if r.name == "journey_model.training.progress"]
    assert [line.split(",")[1].strip() for line in lines[:3]] == ["step 1/3 (33%)", "step 2/3 (67%)", "step 3/3 (100%)"]
    assert all(line.startswith("train atrank: epoch 1/1") and "samples/s" in line and "epoch ETA" in line
               for line in lines[:3])
    assert lines[3].startswith("train atrank: epoch 1 done in") and "val/loss" in lines[3]


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "True", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    return subprocess.Popen([sys.executable, "-m", "pipelines.cli", "-q", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _terminate_when(process: subprocess.Popen, marker: str, timeout: float = 240) -> tuple[str, str]:
    """Read stderr until a line holds ``marker`` (training has started), SIGTERM the job, return its output."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        seen.append(line)
        if marker in line:
            process.send_signal(signal.SIGTERM)
            break
    else:
        process.kill()
    out, err = process.communicate(timeout=120)
    return out, "".join(seen) + err


def _runs(uri: str) -> dict[str, str]:
    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return {run.info.run_name: run.info.status for run in client.search_runs(experiments)}


def test_sigterm_stops_train_with_exit_143_a_message_and_a_killed_run(prepared, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    process = _start(["train", "--data", str(prepared), "--model", "atrank", "--task", "outcome", "--max-epochs",
                      "200", "--batch-size", "8", "--progress-interval", "0", "--threads", "1", "--output-dir",
                      str(tmp_path / "runs"), "--tracking-uri", uri, "--set", "hidden_size=16", "--set",
                      "num_heads=2", "--set", "field_dim=8"], tmp_path)
    out, err = _terminate_when(process, "train atrank: epoch")
    assert process.returncode == 143, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("journey train: terminated by SIGTERM: interrupted while"), err
    assert "atrank at epoch" in last and "marked KILLED" in last and "Traceback" not in err
    assert out == ""
    assert _runs(uri) == {"atrank": "KILLED"}


def test_sigterm_stops_compare_with_exit_143_naming_the_model_and_killed_runs(prepared, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    process = _start(["compare", "--data", str(prepared), "--models", "bag,atrank", "--task", "outcome",
                      "--max-epochs", "2", "--batch-size", "8", "--progress-interval", "0", "--threads", "1",
                      "--output-dir", str(tmp_path / "runs"), "--tracking-uri", uri, "--json",
                      str(tmp_path / "comparison.json"), "--set", "hidden_size=16", "--set", "num_heads=2",
                      "--set", "field_dim=8"], tmp_path)
    # bag trains its 2 epochs and finishes; atrank is stopped in its first epochs
    out, err = _terminate_when(process, "train atrank: epoch")
    assert process.returncode == 143, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("journey compare: terminated by SIGTERM: interrupted while"), err
    assert "compare stopped while training atrank; finished before: ['bag']" in last
    assert "marked KILLED" in last and "Traceback" not in err
    assert "auc/churn" not in out and not (tmp_path / "comparison.json").exists()  # no table, no JSON
    runs = _runs(uri)
    assert runs == {"bag": "FINISHED", "atrank": "KILLED", "compare outcome": "KILLED"}

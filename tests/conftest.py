"""Shared test set-up: every test gets its own MLflow store and BentoML home, never the project's `work/`."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")


@pytest.fixture(autouse=True)
def isolated_tracking(tmp_path, monkeypatch):
    """A throw-away SQLite MLflow store per test, so `journey train` (which tracks by default) writes there."""
    if "MLFLOW_TRACKING_URI" not in os.environ:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    yield

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


@pytest.fixture(scope="session")
def synthetic_journeys(tmp_path_factory):
    """Build (once per session and settings) synthetic journeys and their prepared dataset.

    ``synthetic_journeys(customers, seed, max_len)`` returns a folder holding ``synth/`` (canonical events,
    labels, ground truth) and ``ds/`` (the point-in-time dataset: labels cut-offs, out-of-time split).
    """
    from journey_model.data.prepare import PrepareConfig, prepare
    from journey_model.data.preprocessing import PreprocessingConfig
    from journey_model.data.synth import generate

    built: dict[tuple[int, int, int], object] = {}

    def build(customers: int, seed: int, max_len: int):
        key = (customers, seed, max_len)
        if key not in built:
            root = tmp_path_factory.mktemp(f"journeys-{customers}-{seed}-{max_len}")
            generate(root / "synth", customers=customers, seed=seed, progress=False)
            prepare(PrepareConfig(events_dir=str(root / "synth"), out_dir=str(root / "ds"), cutoff_strategy="labels",
                                  label_horizon_days=30, preprocessing=PreprocessingConfig(max_len=max_len)),
                    progress=False)
            built[key] = root
        return built[key]

    return build

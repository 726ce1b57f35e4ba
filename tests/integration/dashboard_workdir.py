"""A small working directory as `journey demo` leaves it, for the dashboard's tests (built once per session).

The tiny trained ATRank bundle of :func:`test_batch_scoring.tiny_model` is logged as an MLflow pyfunc in the
workdir's own store (``WORKDIR/mlflow.db``), registered as ``journey-synth_bank-outcome`` with test metrics, a
calibration plot and the registry tags `journey train` writes, aliased ``champion``, and batch-scored through
``models:/journey-synth_bank-outcome@champion`` at two cut-offs: ``scores-2024-09/`` (the earlier) and
``scores/`` (the later), so the customer view has a "what changed".
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import mlflow
from mlflow import MlflowClient
from test_batch_scoring import tiny_model

from journey_model.inference.batch_scoring import BatchScoringConfig, score_batch
from journey_model.inference.scorer import Scorer
from journey_model.tracking.loading import open_model
from journey_model.tracking.pyfunc import log_journey_model
from journey_model.tracking.store import mlflow_scope

REGISTERED = "journey-synth_bank-outcome"
CUTOFFS = {"scores-2024-09": "2024-09-01", "scores": "2024-10-01"}  # earlier run first
DATA_HASH = "d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f"
DONE = ".built"


def build_workdir(root: Path, model_root: Path) -> Path:
    """``root`` holding scores (two cut-offs), the events they scored and a registry with a champion."""
    if (root / DONE).exists():
        return root
    model = tiny_model(model_root)
    root.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri  # open_model reads models:/ URIs from here
    try:
        with mlflow_scope(uri), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            experiment = mlflow.create_experiment(REGISTERED, artifact_location=(root / "mlartifacts").as_uri())
            with mlflow.start_run(experiment_id=experiment) as run:
                info = log_journey_model(Scorer.load(model.bundle), input_example=None)
                mlflow.log_metrics({"test/auc/churn": 0.71, "test/auc/default": 0.93, "test/auc/uptake": 0.81,
                                    "test/ece/churn": 0.021, "best/val/loss": 0.2})
                figure, axis = plt.subplots(figsize=(3, 3))
                axis.plot([0, 1], [0, 1], "--", color="grey")
                axis.plot([0.1, 0.5, 0.9], [0.12, 0.45, 0.85], "o-")
                axis.set_title("calibration")
                mlflow.log_figure(figure, "plots/calibration.png")
                plt.close(figure)
            client = MlflowClient(uri, registry_uri=uri)
            client.create_registered_model(REGISTERED)
            tags = {"model": "atrank", "data_hash": DATA_HASH, "preprocessing_hash": "tinyprep",
                    "run_id": run.info.run_id,
                    "validation_metric": "val/loss", "validation_mode": "min", "validation_value": "0.2"}
            version = client.create_model_version(REGISTERED, source=info.model_uri, run_id=run.info.run_id, tags=tags)
            client.set_registered_model_alias(REGISTERED, "champion", version.version)
            for folder, cutoff in CUTOFFS.items():
                score_batch(BatchScoringConfig(model=f"models:/{REGISTERED}@champion", events_dir=str(model.synth),
                                               out_dir=str(root / folder), cutoff=cutoff, progress=False),
                            opener=open_model)
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved
    (root / DONE).write_text("ok")
    return root

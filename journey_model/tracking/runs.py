"""Everything one training run records in MLflow, and ``tracked_train``: training with that record.

**A run** (:class:`RunTracker`, handed to :func:`journey_model.training.train.train` as its recorder and
opened on the global-zero process):

* params: the resolved config (``data.batch_size``, ``model.model_overrides.hidden_size`` …) and the model's
  full config (``model_config.*``); tags: dataset, task, model, data hash, preprocessing hash, git commit;
* metrics: per-step and per-epoch training and validation metrics (Lightning's MLflow logger), system metrics
  (CPU, memory, GPU), the test metrics, ``best/val/*`` of the restored best model, time and size;
* artifacts: ``config.yaml``, ``preprocessing/preprocessing.json`` (+ the dataset manifest),
  ``environment/`` (versions, hardware, installed packages), ``test_metrics.json``, ``plots/`` (learning
  curves, ROC / PR, calibration, reliability before / after calibration, attention heatmap of sampled test
  customers), ``calibration.json`` (the fitted calibration and operating points, as in the model bundle);
* the model: an MLflow pyfunc (:mod:`journey_model.tracking.pyfunc`) that scores raw events, with signature
  and input example, registered as ``journey-<dataset>-<task>`` (:mod:`journey_model.tracking.registry`).

A resumed run continues the same MLflow run (its id travels in the checkpoint). A run that fails or is
interrupted ends as FAILED / KILLED, and nothing is registered. The store itself (URIs, experiments, scoping)
is :mod:`journey_model.tracking.store`.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import platform
import subprocess
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, is_dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import lightning as L
import mlflow
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import MLFlowLogger
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from journey_model.data.preprocessing import Preprocessor
from journey_model.inference.scorer import Scorer
from journey_model.models.base import JourneyModel
from journey_model.models.calibration import CALIBRATION_FILE, expected_calibration_error, reliability_curve
from journey_model.tracking import plots
from journey_model.tracking.pyfunc import input_example_events, log_journey_model
from journey_model.tracking.registry import RUN_TAG_PREFIX, register_run_model
from journey_model.tracking.store import (
    ensure_experiment,
    experiment_name,
    mlflow_scope,
    quiet_mlflow_output,
    registered_model_name,
    resolve_tracking_uri,
    task_label,
)
from journey_model.training.config import TrainConfig
from journey_model.training.datamodule import JourneyDataModule
from journey_model.training.module import JourneyModule
from journey_model.training.recipes import TrainingRecipe
from journey_model.training.train import TrainResult, train

PROJECT_DIR = Path(__file__).resolve().parents[2]  # the checkout holding the code (for its git commit)
log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ environment


def git_commit(folder: Path = PROJECT_DIR) -> tuple[str | None, bool | None]:
    """(commit, has uncommitted changes) of the git checkout holding the code, or (None, None)."""
    try:
        commit = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
        return commit, bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


def environment_facts(threads: int | None = None, trainer: L.Trainer | None = None) -> dict[str, Any]:
    """Versions, hardware and run topology: enough to tell two environments apart."""
    packages = {}
    for name in ("torch", "lightning", "mlflow", "numpy", "pandas", "pyarrow", "torchmetrics", "journey"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    commit, dirty = git_commit()
    facts: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": threads or torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "cuda_version": torch.version.cuda,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "packages": packages,
        "git_commit": commit,
        "git_dirty": dirty,
        "malloc_env": {k: os.environ.get(k) for k in ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_")},
    }
    if trainer is not None:
        facts.update(accelerator=type(trainer.accelerator).__name__, strategy=type(trainer.strategy).__name__,
                     world_size=trainer.world_size, num_nodes=trainer.num_nodes,
                     precision=str(trainer.precision))
    return facts


def installed_packages() -> str:
    """``name==version`` of every installed distribution (a ``pip freeze`` without running pip)."""
    lines = {f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions() if d.metadata["Name"]}
    return "\n".join(sorted(lines, key=str.lower)) + "\n"


# ------------------------------------------------------------------------------------------ the run


class RunScopedMLFlowLogger(MLFlowLogger):
    """Lightning's MLflow logger writing into a run whose lifetime :class:`RunTracker` owns.

    Lightning ends a logger's run when fit ends; here the run stays open for testing, plots and the model,
    and :class:`RunTracker` ends it with the right status.
    """

    def finalize(self, status: str = "success") -> None:
        return None


class RunTracker:
    """One MLflow run of :func:`journey_model.training.train.train`, as a context manager on the global-zero process."""

    def __init__(self, config: TrainConfig, dataset: str, tasks: list[str], resume_run_id: str | None = None) -> None:
        self.config = config
        self.dataset = dataset
        self.task = task_label(tasks)
        self.tracking_uri = resolve_tracking_uri(config.tracking_uri)
        self.experiment_name = config.experiment or experiment_name(dataset, self.task)
        self.resume_run_id = resume_run_id
        self.resumed = False
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        quiet_mlflow_output()
        self.client = MlflowClient(self.tracking_uri)

    def _existing_run(self, run_id: str | None) -> bool:
        if not run_id:
            return False
        try:
            self.client.get_run(run_id)
            return True
        except MlflowException:
            log.warning("run %s from the checkpoint is not in %s; recording the resumed run as a new run",
                        run_id, self.tracking_uri)
            return False

    def __enter__(self) -> RunTracker:
        interval = self.config.system_metrics_interval_s if self.config.system_metrics else None
        self._scope = ExitStack()
        self._scope.enter_context(mlflow_scope(self.tracking_uri, interval))
        try:
            self._start()
        except BaseException:
            self._scope.close()
            raise
        return self

    def _start(self) -> None:
        self.experiment_id = ensure_experiment(self.experiment_name, self.tracking_uri, self.config.artifact_location)
        self.resumed = self._existing_run(self.resume_run_id)
        parent = mlflow.active_run()
        if parent is not None and parent.info.experiment_id != self.experiment_id:
            raise ValueError(f"a run in experiment {self.experiment_name!r} cannot nest under the active run "
                             f"{parent.info.run_id} of experiment {parent.info.experiment_id}")
        run = mlflow.start_run(
            run_id=self.resume_run_id if self.resumed else None,
            experiment_id=None if self.resumed else self.experiment_id,
            run_name=None if self.resumed else (self.config.run_name or self.config.model),
            nested=parent is not None, log_system_metrics=self.config.system_metrics,
        )
        self.run_id = run.info.run_id

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: Any) -> bool:
        if kind is None:
            status = "FINISHED"
        elif issubclass(kind, (KeyboardInterrupt, SystemExit)):
            status = "KILLED"
        else:
            status = "FAILED"
        try:
            mlflow.end_run(status)
        finally:
            self._scope.close()
        if error is not None and status == "KILLED":
            error.add_note(f"MLflow run {self.run_id} ({self.config.model}) marked KILLED")
        return False

    def lightning_logger(self) -> MLFlowLogger:
        return RunScopedMLFlowLogger(tracking_uri=self.tracking_uri, run_id=self.run_id,
                                     experiment_name=self.experiment_name)

    # ---------------------------------------------------------------------- before training
    def log_setup(self, config: TrainConfig, preprocessor: Preprocessor, model: JourneyModel,
                  threads: int | None = None, trainer: L.Trainer | None = None,
                  recipe: TrainingRecipe | None = None) -> None:
        """Tags, params (``model_config.*`` the architecture, ``recipe.*`` the training recipe as resolved),
        the resolved config, the preprocessing artifact and the environment."""
        commit, dirty = git_commit()
        tags = {
            "dataset": self.dataset, "task": self.task, "model": config.model,
            "data_hash": preprocessor.input_hash or "unknown", "preprocessing_hash": preprocessor.artifact_hash,
            "git_commit": commit or "unknown", "git_dirty": str(dirty),
        }
        mlflow.set_tags({RUN_TAG_PREFIX + k: v for k, v in tags.items()})
        if commit:
            mlflow.set_tag("mlflow.source.git.commit", commit)
        params = config.flat_params()
        model_config = getattr(model, "config", None)
        if model_config is not None and is_dataclass(model_config):
            params.update({f"model_config.{k}": str(v) for k, v in asdict(model_config).items()})
        if recipe is not None:
            params.update({f"recipe.{k}": str(v) for k, v in asdict(recipe).items()})
        params.update({"data.dataset": self.dataset, "data.hash": tags["data_hash"],
                       "data.preprocessing_hash": tags["preprocessing_hash"]})
        self._log_params(params)
        with tempfile.TemporaryDirectory(prefix="journey-run-") as tmp:
            folder = Path(tmp)
            name = "config.yaml" if not self.resumed else f"config-resumed-{len(self._resumed_configs()) + 1}.yaml"
            config.save(folder / name)
            mlflow.log_artifact(str(folder / name))
            (folder / "preprocessing").mkdir()
            preprocessor.save(folder / "preprocessing")
            mlflow.log_artifacts(str(folder / "preprocessing"), "preprocessing")
            manifest = Path(config.data_dir) / "manifest.json"
            if manifest.exists():
                mlflow.log_artifact(str(manifest), "preprocessing")
            environment = folder / "environment"
            environment.mkdir()
            (environment / "environment.json").write_text(json.dumps(environment_facts(threads, trainer), indent=1))
            (environment / "installed-packages.txt").write_text(installed_packages())
            mlflow.log_artifacts(str(environment), "environment")

    def _resumed_configs(self) -> list[str]:
        return [a.path for a in self.client.list_artifacts(self.run_id) if a.path.startswith("config-resumed-")]

    def _log_params(self, params: dict[str, str]) -> None:
        """Params are write-once in MLflow: a resumed run logs only the keys it did not have."""
        if self.resumed:
            existing = self.client.get_run(self.run_id).data.params
            changed = sorted(k for k, v in params.items() if k in existing and existing[k] != v[:6000])
            if changed:
                mlflow.set_tag("journey.resumed_changed_params", ", ".join(changed)[:5000])
            params = {k: v for k, v in params.items() if k not in existing}
        mlflow.log_params({k: v[:6000] for k, v in params.items()})

    # ---------------------------------------------------------------------- after testing
    def log_result(self, result: TrainResult, module: JourneyModule, data: JourneyDataModule) -> None:
        """Summary metrics, test metrics, plots, the pyfunc model and its registration; fills ``result``."""
        summary = {f"best/{k}": v for k, v in result.val_metrics.items() if np.isfinite(v)}
        summary.update(train_seconds=result.seconds, parameters=float(result.parameters), epochs=float(result.epochs))
        mlflow.log_metrics(summary)
        mlflow.log_dict(result.test_metrics, "test_metrics.json")
        if result.calibration is not None:
            # After Lightning logged the raw test metrics: test/ece/… now describe the calibrated scores.
            # MLflow shows a metric's value at its highest step: log at the step Lightning used, so the calibrated
            # value (logged later) is the one shown, not the raw one.
            added = ("/ece/", "/ece_raw/", "/logloss/", "/logloss_raw/", "/op_", "/lift10/")
            for key, value in result.test_metrics.items():
                if any(part in key for part in added) and np.isfinite(value):
                    step = max((m.step for m in self.client.get_metric_history(self.run_id, key)), default=0)
                    mlflow.log_metric(key, value, step=step)
            mlflow.log_dict(result.calibration.to_json(), CALIBRATION_FILE)
        if result.validation_value is not None:
            mlflow.set_tags({RUN_TAG_PREFIX + "validation_metric": result.validation_metric,
                             RUN_TAG_PREFIX + "validation_mode": self.config.monitor_mode,
                             RUN_TAG_PREFIX + "validation_value": repr(result.validation_value)})
        model = copy.deepcopy(module.model).cpu().float().eval()
        scorer = Scorer(model, data.preprocessor, calibration=result.calibration)
        if self.config.plots:
            self._log_plots(result, module, data, scorer)
        result.run_id = self.run_id
        if not self.config.log_model:
            return
        example = input_example_events(data.preprocessor)
        info = log_journey_model(scorer, example, metadata_tags={"run_id": self.run_id, "task": self.task})
        result.model_uri = info.model_uri
        mlflow.set_tag(RUN_TAG_PREFIX + "model_uri", info.model_uri)
        if self.config.register and result.validation_value is not None:
            name = registered_model_name(self.dataset, self.task)
            version = register_run_model(info.model_uri, name, self.run_id, self.client)
            result.registered_model, result.registered_version = name, str(version.version)

    def _log_plots(self, result: TrainResult, module: JourneyModule, data: JourneyDataModule, scorer: Scorer) -> None:
        with tempfile.TemporaryDirectory(prefix="journey-plots-") as tmp:
            folder = Path(tmp)
            drawn = [
                plots.plot_learning_curves(result.history, folder / "learning_curves.png"),
                plots.plot_roc_pr(module.test_curves, folder / "roc_pr.png"),
                plots.plot_calibration(module.test_curves, folder / "calibration.png"),
                self._reliability_plot(result, module, data, folder / "reliability_before_after.png"),
                self._attention_plot(data, scorer, folder / "attention.png"),
            ]
            for path in drawn:
                if path is not None:
                    mlflow.log_artifact(str(path), "plots")

    def _reliability_plot(self, result: TrainResult, module: JourneyModule, data: JourneyDataModule,
                          path: Path) -> Path | None:
        """Test-split reliability of the raw and the calibrated probabilities (per-bin aggregates only)."""
        test = module.outcome_predictions.get("test")
        if result.calibration is None or test is None:
            return None
        probabilities = torch.sigmoid(torch.as_tensor(test[0]).float()).double().numpy()
        curves, ece = {}, {}
        for j, name in enumerate(data.preprocessor.outcome_names):
            raw, labels = probabilities[:, j], test[1][:, j]
            calibrated = result.calibration.apply(name, raw)
            curves[name] = (reliability_curve(raw, labels), reliability_curve(calibrated, labels))
            ece[name] = (expected_calibration_error(raw, labels), expected_calibration_error(calibrated, labels))
        return plots.plot_reliability_before_after(curves, ece, path)

    def _attention_plot(self, data: JourneyDataModule, scorer: Scorer, path: Path) -> Path | None:
        """Attention of a few test customers drawn with the run's seed (positives first, when outcomes exist)."""
        test = data.datasets.get("test")
        if test is None or len(test) == 0 or self.config.attention_customers < 1:
            return None
        rng = np.random.default_rng(self.config.seed)
        indices = rng.permutation(len(test))[: self.config.attention_customers * 8]
        examples = [test[int(i)] for i in indices]
        outcome_columns = [f"y_{name}" for name in data.preprocessor.outcome_names]

        def positives(example: dict[str, Any]) -> int:
            values = [example.get(c) for c in outcome_columns]
            return sum(1 for v in values if v is not None and v == v and v > 0.5)  # v == v: not NaN

        examples.sort(key=lambda ex: -positives(ex))  # stable: random order among equals
        examples = examples[: self.config.attention_customers]
        batch = data.collate(examples)
        with torch.no_grad():
            output = scorer.model(batch, output_attentions=True)
        if not output.attentions:
            return None
        vocabulary = data.preprocessor.vocabularies["event_type"]
        names = [vocabulary.decode(row[: int(n)].tolist()) for row, n in zip(batch.event_type, batch.lengths)]
        # Anonymous panels ("example 1" …): the model's scores only, never a customer id or a true label.
        titles = []
        for i in range(len(examples)):
            parts = []
            if output.outcome_logits is not None:
                probabilities = torch.sigmoid(output.outcome_logits[i].float())
                parts = [f"{name} p={probabilities[j]:.2f}" for j, name in enumerate(data.preprocessor.outcome_names)]
            titles.append(", ".join(parts))
        return plots.plot_attention(output.attentions, batch.lengths.tolist(), names, path, titles)


def tracked_train(config: TrainConfig, metrics_out: str | Path | None = None,
                  callbacks: Sequence[Callback] = (), predictions_out: str | Path | None = None) -> TrainResult:
    """:func:`journey_model.training.train.train` recorded in MLflow by :class:`RunTracker` when ``config.track``."""
    return train(config, metrics_out=metrics_out, callbacks=callbacks, recorder=RunTracker,
                 predictions_out=predictions_out)


__all__ = ["RunTracker", "environment_facts", "git_commit", "tracked_train"]

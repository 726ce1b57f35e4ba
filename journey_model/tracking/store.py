"""Where Journey's MLflow records live: the store, experiments, names, and a scoped tracking URI.

**The store.** Embedded by default: a SQLite tracking store ``work/mlflow.db`` and an artifact folder
``work/mlartifacts`` under the current working directory (no server). Any ``MLFLOW_TRACKING_URI`` (or
``--tracking-uri``) works the same way. Experiments are created with an explicit artifact location (MLflow
would otherwise write to ``./mlruns``) and named by dataset and task: ``journey-<dataset>-<task>``, the same
name the model is registered under (:func:`registered_model_name`).

This module imports MLflow and nothing of Lightning, so serving and batch scoring can open ``models:/`` URIs
without the trainer.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.tracking._tracking_service import utils as tracking_service

DEFAULT_STORE = Path("work") / "mlflow.db"  # relative to the working directory
DEFAULT_ARTIFACTS_NAME = "mlartifacts"  # beside a SQLite store
log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ store


def resolve_tracking_uri(uri: str | None = None) -> str:
    """``uri``, else ``$MLFLOW_TRACKING_URI``, else the embedded SQLite store ``work/mlflow.db``."""
    if uri:
        return uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{DEFAULT_STORE.resolve()}"


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, or None for other stores."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri.removeprefix("sqlite:///").split("?")[0])
    return None


def default_artifact_location(tracking_uri: str, experiment: str, explicit: str | None = None) -> str | None:
    """Where a new experiment's artifacts go: ``explicit``, or ``mlartifacts/<experiment>/`` beside a SQLite
    database. For a tracking server (http…) None lets the server decide (its ``--default-artifact-root``)."""
    if explicit:
        return explicit if "://" in explicit else Path(explicit).resolve().as_uri()
    database = sqlite_path(tracking_uri)
    if database is not None:
        return (database.parent / DEFAULT_ARTIFACTS_NAME / experiment).resolve().as_uri()
    return None


def task_label(tasks: list[str] | None) -> str:
    """``["outcome"]`` -> ``"outcome"``; several tasks joined by ``+``; None -> ``"all"``."""
    return "+".join(tasks) if tasks else "all"


def experiment_name(dataset: str, task: str) -> str:
    """Experiments are named like the registered model: ``journey-<dataset>-<task>``."""
    return registered_model_name(dataset, task)


def ensure_experiment(name: str, tracking_uri: str, artifact_location: str | None = None) -> str:
    """The id of experiment ``name``, created with an explicit artifact location when it is new."""
    if database := sqlite_path(tracking_uri):
        database.parent.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri)
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        if existing.lifecycle_stage == "deleted":
            client.restore_experiment(existing.experiment_id)
        return existing.experiment_id
    try:
        return client.create_experiment(name, artifact_location=default_artifact_location(tracking_uri, name, artifact_location))
    except MlflowException:  # created meanwhile by another process
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def ui_command(tracking_uri: str) -> str:
    """The command that opens the MLflow UI on this store."""
    database = sqlite_path(tracking_uri)
    if database is None:
        return f"open {tracking_uri} in a browser (a tracking server)"
    artifacts = database.parent / DEFAULT_ARTIFACTS_NAME
    return (f"mlflow ui --backend-store-uri {tracking_uri} --default-artifact-root {artifacts} "
            "--host 127.0.0.1 --port 5000")


def quiet_mlflow_output() -> None:
    """No per-run INFO lines from MLflow (store creation, system-metrics thread) in a pipeline's output."""
    for name in ("mlflow.system_metrics", "mlflow.store.db.utils", "mlflow.pyfunc", "mlflow.models"):
        logging.getLogger(name).setLevel(logging.WARNING)


SCOPED_ENVIRONMENT = ("MLFLOW_TRACKING_URI", "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL",
                      "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")


@contextmanager
def mlflow_scope(tracking_uri: str, system_metrics_interval_s: float | None = None) -> Iterator[None]:
    """Point MLflow's fluent API at ``tracking_uri`` for a block, then put back what was there before.

    ``mlflow.set_tracking_uri`` (and the system-metrics interval) also write environment variables for
    subprocesses to inherit; a library call must not leave them behind for the rest of the process.
    """
    saved_uri = getattr(tracking_service, "_tracking_uri", None)
    saved_environment = {name: os.environ.get(name) for name in SCOPED_ENVIRONMENT}
    mlflow.set_tracking_uri(tracking_uri)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no download bars in logs
    if system_metrics_interval_s is not None:
        mlflow.set_system_metrics_sampling_interval(system_metrics_interval_s)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved_uri)  # None unsets it again
        for name, value in saved_environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value



@contextmanager
def parent_run(tracking_uri: str | None, experiment: str, run_name: str,
               artifact_location: str | None = None) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run that training runs nest under (``journey compare``); FAILED / KILLED if the block raises."""
    uri = resolve_tracking_uri(tracking_uri)
    quiet_mlflow_output()
    with mlflow_scope(uri):
        experiment_id = ensure_experiment(experiment, uri, artifact_location)
        run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name)
        try:
            yield run
        except (KeyboardInterrupt, SystemExit) as error:
            mlflow.end_run("KILLED")
            error.add_note(f"MLflow parent run {run.info.run_id} ({run_name}) marked KILLED")
            raise
        except BaseException:
            mlflow.end_run("FAILED")
            raise
        mlflow.end_run("FINISHED")




def registered_model_name(dataset: str, task: str) -> str:
    """The registry name of a model of ``task`` trained on ``dataset``: ``journey-<dataset>-<task>``."""
    return f"journey-{dataset}-{task}"


__all__ = ["default_artifact_location", "ensure_experiment", "experiment_name", "mlflow_scope", "parent_run",
           "quiet_mlflow_output", "registered_model_name", "resolve_tracking_uri", "sqlite_path", "task_label",
           "ui_command"]

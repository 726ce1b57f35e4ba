"""Typed configs of the `journey` subcommands that belong to the pipelines layer: compare, promote, demo, models,
monitor.

Like every subcommand's config they are plain dataclasses whose fields carry their help text
(:func:`journey_model.core.settings.option`), so :mod:`pipelines.cli` generates the options, ``--config`` and
``--print-config`` from them. They live apart from :mod:`pipelines.compare` and :mod:`pipelines.demo`, which
import MLflow and Lightning, so that building the parser stays instant.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from journey_model.core.settings import ConfigError, option
from journey_model.training.config import SECTIONS, TrainConfig

DEFAULT_MODELS = ["atrank", "gru-bahdanau", "lstm-luong", "transformer", "bag", "markov"]


@dataclass(kw_only=True)
class CompareOptions:
    """Which models are compared and what the table shows."""

    models: list[str] = option(factory=lambda: list(DEFAULT_MODELS), help="comma-separated model names",
                               metavar="MODEL,…")
    metrics: list[str] | None = option(
        None, "comma-separated test-metric columns of the table; none = per task, e.g. auc/<outcome>")
    comparison_json: str | None = option(None, "also write the table as JSON here", flag="--json")


@dataclass(kw_only=True)
class CompareConfig(CompareOptions, TrainConfig):
    """`journey compare`: the comparison's own options and the training config every model shares."""

    def train_config(self) -> TrainConfig:
        """The training part, shared by every model of the comparison."""
        return TrainConfig(**{f.name: getattr(self, f.name) for f in fields(TrainConfig)})


# `journey compare --config` reads the sections of a training config, plus its own.
COMPARE_SECTIONS: dict[str, type] = {"compare": CompareOptions, **SECTIONS}


@dataclass
class PromoteConfig:
    """Which registered version may take which alias."""

    name: str | None = option(None, "registered model, e.g. journey-synth_bank-outcome (or give --dataset and --task)")
    dataset: str | None = option(None, "dataset name (DatasetConfig.name), with --task")
    task: str | None = option(None, "task label, e.g. outcome or next_event+next_item, with --dataset")
    version: str | None = option(None, "candidate version; none = the newest")
    alias: str = option("champion", "alias to move")
    by: str | None = option(
        None, "decide by an operating-point figure of the test split instead of the validation metric, e.g. "
        "op_precision/churn, op_recall/churn or lift10/churn (higher is better); none = the validation metric",
        metavar="FIGURE/OUTCOME")
    tracking_uri: str | None = option(
        None, "MLflow tracking URI; none = $MLFLOW_TRACKING_URI, else sqlite:///work/mlflow.db")

    def __post_init__(self) -> None:
        if self.by is not None and not self.by.startswith(("op_precision/", "op_recall/", "lift10/")):
            raise ConfigError(f"--by {self.by!r}: expected op_precision/OUTCOME, op_recall/OUTCOME or lift10/OUTCOME")
        if not self.name and not (self.dataset and self.task):
            raise ConfigError("give --name, or --dataset and --task")


@dataclass
class DemoConfig:
    """The main job on built-in synthetic data; everything goes into the working folder."""

    workdir: str = option("work", "where data, runs, results and the MLflow store (mlflow.db, mlartifacts/) go")
    customers: int = option(5000, "synthetic customers [customers]")
    seed: int = option(0, "seed of the synthetic data and of training")
    max_epochs: int = option(5, "epochs at most per model [epochs]")
    models: list[str] = option(factory=lambda: list(DEFAULT_MODELS), help="comma-separated models to compare",
                               metavar="MODEL,…")
    tracking_uri: str | None = option(
        None, "MLflow tracking URI; none = $MLFLOW_TRACKING_URI, else sqlite:///WORKDIR/mlflow.db")


@dataclass
class MonitorConfig:
    """A stability report between a reference batch-scoring run and a current one."""

    reference: str = option(help="the reference scoring run: a `journey score --out` folder (part-*.parquet, "
                            "_manifest.json)", metavar="SCORES_DIR")
    current: str = option(help="the current scoring run, compared with the reference", metavar="SCORES_DIR")
    events: str | None = option(
        None, "canonical event folder both runs scored (the events before each run's cut-off are read); none = "
        "each run's own --events from its manifest, where it still exists", metavar="EVENTS_DIR")
    threshold: float = option(0.25, "alert (exit status 3) when any PSI is above this [PSI]")
    bins: int = option(10, "quantile bins of the reference for the score and input-length PSI [bins]")
    epsilon: float = option(1e-4, "bin shares below this are raised to it, so an empty bin stays finite [share]")
    window_days: int | None = option(None, "event-type mix, OOV and missing fields over the last N days before "
                                     "each cut-off only; none = the whole history [days]")
    out: str | None = option(None, "the JSON report (the PNG goes beside it); none = "
                             "WORKDIR/monitoring/<reference cut-off>_vs_<current cut-off>.json, WORKDIR being the "
                             "folder that holds the current run", metavar="FILE")
    track: bool = option(False, "also log the report to MLflow (params, PSI and shares as metrics, JSON and PNG)")
    experiment: str = option("journey-monitoring", "MLflow experiment of --track")
    tracking_uri: str | None = option(
        None, "MLflow tracking URI (--track, and models:/ URIs of the manifests); none = $MLFLOW_TRACKING_URI, "
        "else sqlite:///work/mlflow.db")
    batch_rows: int = option(500_000, "events per record batch while streaming the events [rows]")

    def __post_init__(self) -> None:
        if not self.threshold > 0 or self.bins < 2 or not 0 < self.epsilon < 0.01:
            raise ConfigError(f"threshold ({self.threshold}) must be > 0, bins ({self.bins}) >= 2 and epsilon "
                              f"({self.epsilon}) in (0, 0.01)")
        if self.window_days is not None and self.window_days < 1 or self.batch_rows < 1:
            raise ConfigError(f"window_days ({self.window_days}) and batch_rows ({self.batch_rows}) must be >= 1")


@dataclass
class ModelsConfig:
    """Which models of the zoo are listed."""

    task: str | None = option(None, "only the models that answer this task: outcome, next_event, next_item or "
                              "forecast; none = every model")


__all__ = ["COMPARE_SECTIONS", "DEFAULT_MODELS", "CompareConfig", "CompareOptions", "DemoConfig", "ModelsConfig",
           "MonitorConfig", "PromoteConfig"]

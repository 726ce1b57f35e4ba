"""Typed configuration of a training run: data, model, task, trainer and tracking sections, one YAML file.

Each section is a dataclass whose fields carry their help text and unit (:func:`option`), so one definition
gives the defaults, the YAML keys, every ``journey train --help`` line and the ``config.yaml`` saved with
each run. :class:`TrainConfig` is the union of the five sections: flat in Python
(``TrainConfig(data_dir=..., max_epochs=3)``), grouped by section in YAML::

    data:    {data_dir: work/data/prepared, batch_size: 64}
    model:   {model: atrank, model_overrides: {hidden_size: 64, num_heads: 4}}
    task:    {tasks: [outcome], monitor: val/loss, monitor_mode: min}
    trainer: {max_epochs: 20, lr_schedule: cosine, warmup_steps: 100, devices: 1}
    tracking: {track: true, experiment: null}

A flat YAML mapping of the same field names is accepted too. Precedence, lowest first: the dataclass
defaults, the command line's own defaults (tracking is on for `journey train`), the ``--config`` file, the
options given on the command line. Values are checked against the field types; a wrong key or value names
the file, the key and what was expected. A saved ``config.yaml`` loads back to the same config. The
machinery (options, YAML, precedence, ``--print-config``) is :mod:`journey_model.core.settings`, the same for
every `journey` subcommand; this module holds what is particular to training.

Lightning ``Trainer`` arguments that Journey does not set itself travel in ``trainer.trainer_options``
(``--trainer-option KEY=VALUE``); :func:`check_trainer_options` refuses the ones Journey sets from its own
fields and, given the Trainer's signature, unknown ones.

This module only needs the standard library and PyYAML, so building the CLI parser stays instant.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Collection
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from journey_model.core.files import write_text_atomic
from journey_model.core.settings import ConfigError, Settings, check_choice, key_values, option

LR_SCHEDULES = ("model", "constant", "cosine", "linear")
MONITOR_MODES = ("min", "max")
CALIBRATION_METHODS = ("auto", "platt", "isotonic", "none")  # journey_model.models.calibration.METHODS


# lightning.Trainer arguments that Journey sets itself, and the Journey option that sets each.
JOURNEY_TRAINER_ARGUMENTS: dict[str, str] = {
    "accelerator": "--accelerator (trainer.accelerator)",
    "devices": "--devices (trainer.devices)",
    "num_nodes": "--num-nodes (trainer.num_nodes)",
    "strategy": "--strategy (trainer.strategy)",
    "precision": "--precision (trainer.precision)",
    "max_epochs": "--max-epochs (trainer.max_epochs)",
    "max_time": "--max-time (trainer.max_time)",
    "gradient_clip_val": "--gradient-clip-val (trainer.gradient_clip_val)",
    "limit_train_batches": "--limit-train-batches (trainer.limit_train_batches)",
    "limit_val_batches": "--limit-val-batches (trainer.limit_val_batches)",
    "deterministic": "--deterministic (trainer.deterministic)",
    "enable_progress_bar": "--progress / --no-progress or -q (trainer.progress)",
    "default_root_dir": "--output-dir (trainer.output_dir)",
    "callbacks": "--monitor, --monitor-mode and --patience (checkpointing and early stopping are Journey's own)",
    "logger": "--track / --no-track and the tracking section (Journey logs to MLflow itself)",
    "use_distributed_sampler": "--batch-size (Journey's data module shards each batch itself)",
}


def check_trainer_options(options: dict[str, Any], accepted: Collection[str] | None = None) -> dict[str, Any]:
    """``options`` if each key may go to ``lightning.Trainer``; else a :class:`ConfigError` naming the key.

    Keys Journey sets from its own fields are refused with the option to use instead. ``accepted`` (the
    Trainer's argument names, from its signature at train time) also refuses keys the Trainer does not take.
    """
    for key in options:
        if key in JOURNEY_TRAINER_ARGUMENTS:
            raise ConfigError(f"trainer.trainer_options: {key!r} is set by Journey; use {JOURNEY_TRAINER_ARGUMENTS[key]}")
        if accepted is not None and key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise ConfigError(f"trainer.trainer_options: {key!r} is not an argument of lightning.Trainer{hint}")
    return options


def parse_duration(text: str | float, where: str = "duration") -> float:
    """Seconds of a duration given as seconds (``90``, ``1.5``), ``HH:MM:SS`` or ``DD:HH:MM:SS``."""
    value = str(text).strip()
    try:
        seconds = float(value)
    except ValueError:
        parts = value.split(":")
        if len(parts) not in (3, 4) or not all(p.strip().isdigit() for p in parts):
            raise ConfigError(f"{where} = {text!r}; expected seconds (90, 1.5), HH:MM:SS or DD:HH:MM:SS") from None
        days, hours, minutes, secs = ([0] * (4 - len(parts))) + [int(p) for p in parts]
        seconds = float(((days * 24 + hours) * 60 + minutes) * 60 + secs)
    if not seconds > 0 or seconds == float("inf"):
        raise ConfigError(f"{where} = {text!r}; expected a positive, finite duration")
    return seconds


@dataclass(kw_only=True)
class DataConfig:
    """Which prepared dataset and how it is batched."""

    data_dir: str = option(help="folder written by `journey prepare`", flag="--data")
    batch_size: int = option(64, "customers per optimiser step, summed over all devices [customers]")
    eval_batch_size: int | None = option(None, "customers per evaluation batch; none = 2 x batch_size [customers]")
    num_workers: int = option(0, "DataLoader worker processes per device [processes]")
    length_bucketing: bool = option(True, "batch customers of similar journey length together (less padding)")

    def check_data(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"data.batch_size = {self.batch_size}; expected a positive number of customers")


@dataclass(kw_only=True)
class ModelConfig:
    """Which model of the zoo, and the fields of its own config that differ from the defaults."""

    model: str = option("atrank", "model name; see `journey models`")
    model_overrides: dict[str, Any] = option(
        factory=dict, help="model config fields (hidden_size=64) or training recipe fields (learning_rate=0.01, "
        "optimizer=sgd); repeat --set FIELD=VALUE", flag="--set",
        repeat=True, metavar="FIELD=VALUE", parse=key_values("--set", "hidden_size=64", "FIELD=VALUE"))

    def check_model(self) -> None:
        if not isinstance(self.model_overrides, dict):
            raise ConfigError(f"model.model_overrides = {self.model_overrides!r}; expected a mapping FIELD: VALUE")


@dataclass(kw_only=True)
class TaskConfig:
    """What the model is trained to answer and which validation metric decides."""

    tasks: list[str] | None = option(
        None, "comma-separated tasks: outcome, next_event, next_item, forecast; none = every task the model "
        "and data support", flag="--task")
    monitor: str = option("val/loss", "validation metric for early stopping, the best checkpoint and promotion")
    monitor_mode: str = option("min", "whether the monitor improves downwards (min) or upwards (max)",
                               choices=MONITOR_MODES)
    calibration: str = option(
        "auto", "calibration of outcome probabilities, fitted on the validation split: auto (Platt, isotonic or "
        "none, whichever has the lower cross-fitted log-loss), platt, isotonic or none", choices=CALIBRATION_METHODS)
    operating_policy: str = option(
        "capacity:10%", "where flag_<outcome> cuts, chosen on validation: capacity:N% (flag the top N %), "
        "precision:P (lowest threshold with that precision), cost:C (a missed positive costs C false alarms), "
        "or none (no flags)")
    unseen_as_miss: bool = option(
        False, "count next-event / next-item targets unseen in training (<oov>) as misses in acc, HR@k, NDCG@k "
        "and MRR (the peers' full-ranking convention); by default they are dropped and counted "
        "(test/unseen_targets), which flatters every model")

    def check_task(self) -> None:
        check_choice("task", "monitor_mode", self.monitor_mode, MONITOR_MODES)
        check_choice("task", "calibration", self.calibration, CALIBRATION_METHODS)
        if not self.monitor.startswith("val/"):
            raise ConfigError(f"task.monitor = {self.monitor!r}; expected a validation metric such as val/loss")


@dataclass(kw_only=True)
class TrainerConfig:
    """How Lightning trains: budget, optimisation, hardware, checkpoints."""

    # 20: on the synthetic bank ATRank and the recurrent baselines stopped early after 9-16 epochs (best at 6-13;
    # benchmarks/results/atrank_headline_16epochs_*.json); at 8 one ATRank seed in ten had not learnt the order rule
    max_epochs: int = option(20, "upper bound on training epochs; early stopping usually ends sooner [epochs]")
    max_time: str | None = option(
        None, "wall-clock budget of training: seconds (90, 1.5) or HH:MM:SS or DD:HH:MM:SS; training stops at "
        "the first optimiser step past it and the best validated checkpoint is tested; none = no budget "
        "(`journey compare`: the budget of each model)", metavar="DURATION")
    patience: int = option(3, "validation epochs without improvement of the monitor before stopping [epochs]")
    learning_rate: float | None = option(None, "initial learning rate; none = the model's training recipe (journey_model/training/recipes.py)", flag="--lr")
    lr_schedule: str = option(
        "model", "model (the training recipe's step decay), constant, cosine or linear (decay after warm-up)",
        choices=LR_SCHEDULES)
    warmup_steps: int = option(0, "linear warm-up of cosine / linear schedules [optimiser steps]")
    min_lr_ratio: float = option(0.0, "final learning rate of cosine / linear, as a fraction of the initial")
    gradient_clip_val: float | None = option(
        None, "clip gradients to this global L2 norm; none = the training recipe's grad_clip_norm")
    seed: int = option(0, "seeds torch, numpy, python, weights and the data order")
    accelerator: str = option("auto", "cpu, gpu or auto (a GPU when one is visible)")
    devices: int | str = option(1, "devices per node: a count, auto, or GPU ids like 0,1 [devices]")
    num_nodes: int = option(1, "machines in a DDP run [nodes]")
    strategy: str = option("auto", "auto (DDP that tolerates unused parameters when devices x nodes > 1), ddp, "
                           "ddp_spawn, or any Lightning strategy name")
    precision: str | None = option(None, "none = bf16-mixed on GPU, 32-true on CPU; or any Lightning precision")
    threads: int | None = option(
        None, "torch CPU threads per process; none = 1 per process on CPU (measured fastest: "
        "benchmarks/bench_training_throughput.py), torch's default on GPU [threads]")
    limit_train_batches: int | float | None = option(
        None, "train on this many batches (int) or this share (float) per epoch; for smoke tests")
    limit_val_batches: int | float | None = option(None, "the same for validation batches")
    output_dir: str = option("work/runs", "checkpoints and config.yaml go under OUTPUT_DIR/MODEL/")
    resume: str | None = option(
        None, "continue an interrupted run: 'last' (OUTPUT_DIR/MODEL/last.ckpt) or a checkpoint path")
    deterministic: bool = option(False, "Lightning's deterministic mode (reproducible GPU kernels, slower)")
    progress: bool = option(True, "progress bars on stderr")
    progress_interval: float = option(30.0, "seconds between progress log lines (epoch, step, samples/s, ETA) when "
                                      "progress bars are off or the output is not a terminal; 0 = every step, "
                                      "-1 = never [s]")
    trainer_options: dict[str, Any] = option(
        factory=dict, help="any other lightning.Trainer argument, e.g. accumulate_grad_batches=2 (repeat "
        "--trainer-option KEY=VALUE; the value is read as YAML)", flag="--trainer-option", repeat=True,
        metavar="KEY=VALUE", parse=key_values("--trainer-option", "accumulate_grad_batches=2"))

    def check_trainer(self) -> None:
        check_choice("trainer", "lr_schedule", self.lr_schedule, LR_SCHEDULES)
        if self.max_epochs < 0 or self.patience < 0:
            raise ConfigError(f"trainer.max_epochs = {self.max_epochs}, trainer.patience = {self.patience}; "
                              "expected numbers >= 0")
        if self.max_time is not None:
            parse_duration(self.max_time, "trainer.max_time")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"trainer.threads = {self.threads}; expected at least 1 thread")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"trainer.min_lr_ratio = {self.min_lr_ratio}; expected a fraction in [0, 1]")
        if not isinstance(self.trainer_options, dict):
            raise ConfigError(f"trainer.trainer_options = {self.trainer_options!r}; expected a mapping KEY: VALUE")
        check_trainer_options(self.trainer_options)


@dataclass(kw_only=True)
class TrackingConfig:
    """Where the run is recorded (MLflow) and what is recorded."""

    track: bool = option(False, "record the run in MLflow (params, metrics, plots, model)", cli_default=True)
    tracking_uri: str | None = option(
        None, "MLflow tracking URI; none = $MLFLOW_TRACKING_URI, else sqlite:///work/mlflow.db (embedded)")
    artifact_location: str | None = option(
        None, "artifact folder of a new experiment; none = mlartifacts/ beside a SQLite store")
    experiment: str | None = option(None, "MLflow experiment; none = journey-<dataset>-<task>")
    run_name: str | None = option(None, "MLflow run name; none = the model name")
    register: bool = option(True, "register the logged model as journey-<dataset>-<task>")
    log_model: bool = option(True, "log the MLflow pyfunc model (raw events in, scores out)")
    plots: bool = option(True, "log learning curves, ROC / PR / calibration and attention plots")
    attention_customers: int = option(4, "test customers drawn for the attention heatmap [customers]")
    system_metrics: bool = option(True, "log CPU / memory / GPU use while the run is open")
    system_metrics_interval_s: float = option(10.0, "sampling interval of the system metrics [seconds]")

    def check_tracking(self) -> None:
        if self.system_metrics_interval_s <= 0:
            raise ConfigError("tracking.system_metrics_interval_s must be a positive number of seconds")


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "task": TaskConfig,
    "trainer": TrainerConfig,
    "tracking": TrackingConfig,
}


@dataclass(kw_only=True)
class TrainConfig(DataConfig, ModelConfig, TaskConfig, TrainerConfig, TrackingConfig):
    """One training run: every section's fields, flat (``TrainConfig(data_dir=..., max_epochs=3)``)."""

    def __post_init__(self) -> None:
        if isinstance(self.tasks, str):
            self.tasks = [t.strip() for t in self.tasks.split(",") if t.strip()]
        if isinstance(self.devices, str) and self.devices.strip().isdigit():
            self.devices = int(self.devices)
        self.check_data()
        self.check_model()
        self.check_task()
        self.check_trainer()
        self.check_tracking()

    def sections(self) -> dict[str, dict[str, Any]]:
        """The config grouped as in YAML: ``{"data": {...}, "model": {...}, ...}``."""
        return TRAIN_SETTINGS.dump(self)

    def flat_params(self) -> dict[str, str]:
        """``section.field`` -> value as text, for MLflow params (model overrides one key each)."""
        params: dict[str, str] = {}
        for section, values in self.sections().items():
            for key, value in values.items():
                if isinstance(value, dict):
                    for sub, item in sorted(value.items()):
                        params[f"{section}.{key}.{sub}"] = str(item)
                    continue
                params[f"{section}.{key}"] = str(value)
        return params

    def save(self, path: str | Path) -> Path:
        """Write the resolved config as sectioned YAML, atomically; :func:`load_config` reads it back."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, TRAIN_SETTINGS.to_yaml(self))
        return path




TRAIN_SETTINGS = Settings(TrainConfig, SECTIONS)
FIELDS: dict[str, Any] = {f.name: f for f in fields(TrainConfig)}


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The checked flat values of a YAML config file (sectioned or flat)."""
    return TRAIN_SETTINGS.read_file(path)


def load_config(path: str | Path, **overrides: Any) -> TrainConfig:
    """A :class:`TrainConfig` from a YAML file, with keyword overrides on top."""
    values = read_config_file(path)
    values.update({k: TRAIN_SETTINGS.coerce(k, v, "override") for k, v in overrides.items()})
    if "data_dir" not in values:
        raise ConfigError(f"{path}: data.data_dir is required (or pass --data)")
    return TrainConfig(**values)


def add_config_arguments(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    """``--config``, ``--print-config`` and one option per field, grouped by section, with help, unit and default."""
    Settings(TrainConfig, SECTIONS, exclude=exclude).add_arguments(parser)


def config_from_args(args: argparse.Namespace, **fixed: Any) -> TrainConfig:
    """The run's config: field defaults < the CLI's defaults < ``--config`` < options given < ``fixed``."""
    return TRAIN_SETTINGS.from_args(args, **fixed)


__all__ = [
    "ConfigError", "DataConfig", "ModelConfig", "TaskConfig", "TrainerConfig", "TrackingConfig", "TrainConfig",
    "SECTIONS", "TRAIN_SETTINGS", "JOURNEY_TRAINER_ARGUMENTS", "add_config_arguments", "check_trainer_options",
    "config_from_args", "load_config", "parse_duration", "read_config_file", "option",
]

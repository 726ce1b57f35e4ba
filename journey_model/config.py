"""Typed configuration of a training run: data, model, task, trainer and tracking sections, one YAML file.

Each section is a dataclass whose fields carry their help text and unit (:func:`option`), so one definition
gives the defaults, the YAML keys, every ``journey train --help`` line and the ``config.yaml`` saved with
each run. :class:`TrainConfig` is the union of the five sections: flat in Python
(``TrainConfig(data_dir=..., max_epochs=3)``), grouped by section in YAML::

    data:    {data_dir: work/data/prepared, batch_size: 64}
    model:   {model: atrank, model_overrides: {hidden_size: 64, num_heads: 4}}
    task:    {tasks: [outcome], monitor: val/loss, monitor_mode: min}
    trainer: {max_epochs: 10, lr_schedule: cosine, warmup_steps: 100, devices: 1}
    tracking: {track: true, experiment: null}

A flat YAML mapping of the same field names is accepted too. Precedence, lowest first: the dataclass
defaults, the command line's own defaults (tracking is on for `journey train`), the ``--config`` file, the
options given on the command line. Values are checked against the field types; a wrong key or value names
the file, the key and what was expected. A saved ``config.yaml`` loads back to the same config.

This module only needs the standard library and PyYAML, so building the CLI parser stays instant.
"""

from __future__ import annotations

import argparse
import os
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

import yaml

LR_SCHEDULES = ("model", "constant", "cosine", "linear")
MONITOR_MODES = ("min", "max")


class ConfigError(ValueError):
    """A configuration key or value that cannot be used; the message names where it came from."""


def option(default: Any = MISSING, help: str = "", *, factory: Any = None, flag: str | None = None,
           cli_default: Any = MISSING) -> Any:
    """A dataclass field with its help text (what it is and its unit) and, optionally, its CLI flag.

    ``cli_default`` is the value the command line starts from when it differs from the library default.
    """
    metadata = {"help": help}
    if flag:
        metadata["flag"] = flag
    if cli_default is not MISSING:
        metadata["cli_default"] = cli_default
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    if default is MISSING:
        return field(metadata=metadata)
    return field(default=default, metadata=metadata)


def _check_choice(section: str, name: str, value: object, choices: tuple[object, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{section}.{name} = {value!r}; expected one of {list(choices)}")


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
        factory=dict, help="model config fields, e.g. hidden_size=64 (repeat --set FIELD=VALUE)", flag="--set")

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
    monitor_mode: str = option("min", "whether the monitor improves downwards (min) or upwards (max)")

    def check_task(self) -> None:
        _check_choice("task", "monitor_mode", self.monitor_mode, MONITOR_MODES)
        if not self.monitor.startswith("val/"):
            raise ConfigError(f"task.monitor = {self.monitor!r}; expected a validation metric such as val/loss")


@dataclass(kw_only=True)
class TrainerConfig:
    """How Lightning trains: budget, optimisation, hardware, checkpoints."""

    max_epochs: int = option(10, "upper bound on training epochs; early stopping usually ends sooner [epochs]")
    patience: int = option(3, "validation epochs without improvement of the monitor before stopping [epochs]")
    learning_rate: float | None = option(None, "initial learning rate; none = the model config's", flag="--lr")
    lr_schedule: str = option(
        "model", "model (the model config's step decay), constant, cosine or linear (decay after warm-up)")
    warmup_steps: int = option(0, "linear warm-up of cosine / linear schedules [optimiser steps]")
    min_lr_ratio: float = option(0.0, "final learning rate of cosine / linear, as a fraction of the initial")
    gradient_clip_val: float | None = option(
        None, "clip gradients to this global L2 norm; none = the model config's grad_clip_norm")
    seed: int = option(0, "seeds torch, numpy, python, weights and the data order")
    accelerator: str = option("auto", "cpu, gpu or auto (a GPU when one is visible)")
    devices: int | str = option(1, "devices per node: a count, auto, or GPU ids like 0,1 [devices]")
    num_nodes: int = option(1, "machines in a DDP run [nodes]")
    strategy: str = option("auto", "auto (DDP that tolerates unused parameters when devices x nodes > 1), ddp, "
                           "ddp_spawn, or any Lightning strategy name")
    precision: str | None = option(None, "none = bf16-mixed on GPU, 32-true on CPU; or any Lightning precision")
    threads: int | None = option(
        None, "torch CPU threads per process; none = torch's default (one per core / process under CPU DDP) [threads]")
    limit_train_batches: int | float | None = option(
        None, "train on this many batches (int) or this share (float) per epoch; for smoke tests")
    limit_val_batches: int | float | None = option(None, "the same for validation batches")
    output_dir: str = option("work/runs", "checkpoints and config.yaml go under OUTPUT_DIR/MODEL/")
    resume: str | None = option(
        None, "continue an interrupted run: 'last' (OUTPUT_DIR/MODEL/last.ckpt) or a checkpoint path")
    deterministic: bool = option(False, "Lightning's deterministic mode (reproducible GPU kernels, slower)")
    progress: bool = option(True, "progress bars on stderr")

    def check_trainer(self) -> None:
        _check_choice("trainer", "lr_schedule", self.lr_schedule, LR_SCHEDULES)
        if self.max_epochs < 0 or self.patience < 0:
            raise ConfigError(f"trainer.max_epochs = {self.max_epochs}, trainer.patience = {self.patience}; "
                              "expected numbers >= 0")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"trainer.threads = {self.threads}; expected at least 1 thread")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"trainer.min_lr_ratio = {self.min_lr_ratio}; expected a fraction in [0, 1]")


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
        values = asdict(self)
        return {name: {f.name: values[f.name] for f in fields(cls)} for name, cls in SECTIONS.items()}

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
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(yaml.safe_dump(self.sections(), sort_keys=False))
        os.replace(tmp, path)
        return path


# ------------------------------------------------------------------------------------------ reading values

FIELDS: dict[str, Any] = {f.name: f for f in fields(TrainConfig)}
_HINTS = get_type_hints(TrainConfig)


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def coerce_value(name: str, value: Any, where: str) -> Any:
    """``value`` checked (and, from text, converted) to field ``name``'s type; errors say ``where``."""
    hint = _HINTS[name]
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(f"{where}: {name} may not be empty; expected {_type_name(hint)}")
    errors = []
    for kind in [o for o in options if o is not type(None)]:
        origin = typing.get_origin(kind)
        if kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0", "on", "off"):
                return value.lower() in ("true", "yes", "1", "on")
        elif kind is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                return int(value)
        elif kind is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
        elif kind is str:
            if isinstance(value, (str, int, float)) and not isinstance(value, bool):
                return str(value)
        elif origin is list:
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if isinstance(value, (list, tuple)):
                return [str(v) for v in value]
        elif origin is dict:
            if isinstance(value, dict):
                return dict(value)
        errors.append(_type_name(kind))
    raise ConfigError(f"{where}: {name} = {value!r}; expected {' or '.join(errors) or _type_name(hint)}")


def values_from_mapping(data: Any, where: str) -> dict[str, Any]:
    """Sectioned or flat YAML content -> flat ``{field: value}``, each key and value checked."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of sections ({', '.join(SECTIONS)}) or fields")
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key in SECTIONS and isinstance(value, dict):
            allowed = {f.name for f in fields(SECTIONS[key])}
            for name, item in value.items():
                if name not in allowed:
                    raise ConfigError(f"{where}: unknown key {key}.{name}; section {key!r} has {sorted(allowed)}")
                values[name] = coerce_value(name, item, f"{where}, {key}.{name}")
        elif key in SECTIONS and value is None:
            continue
        elif key in FIELDS:
            values[key] = coerce_value(key, value, f"{where}, {key}")
        else:
            raise ConfigError(f"{where}: unknown key {key!r}; expected sections {list(SECTIONS)} or fields "
                              f"{sorted(FIELDS)}")
    return values


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The checked flat values of a YAML config file (sectioned or flat)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from error
    return values_from_mapping(data, str(path))


def load_config(path: str | Path, **overrides: Any) -> TrainConfig:
    """A :class:`TrainConfig` from a YAML file, with keyword overrides on top."""
    values = read_config_file(path)
    values.update({k: coerce_value(k, v, "override") for k, v in overrides.items()})
    if "data_dir" not in values:
        raise ConfigError(f"{path}: data.data_dir is required (or pass --data)")
    return TrainConfig(**values)


# ------------------------------------------------------------------------------------------ command line


def _flag(f: Any) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _default_text(f: Any) -> str:
    default = f.metadata.get("cli_default", f.default if f.default is not MISSING else MISSING)
    if f.default_factory is not MISSING:  # type: ignore[misc]
        default = f.default_factory()  # type: ignore[misc]
    if default is MISSING:
        return "required unless in --config"
    if default is None:
        return "none"
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, dict):
        return "none" if not default else ", ".join(f"{k}={v}" for k, v in default.items())
    return str(default)


def add_config_arguments(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    """One option per config field, grouped by section, each with its help, unit and default."""
    parser.add_argument("--config", help="YAML file with data / model / task / trainer / tracking sections (or "
                        "flat fields); options given on the command line override it")
    for section, cls in SECTIONS.items():
        group = parser.add_argument_group(f"{section} ({cls.__doc__.strip().rstrip('.')})")
        for f in fields(cls):
            if f.name in exclude:
                continue
            text = f"{f.metadata['help']} (default: {_default_text(f)})"
            if f.name == "model_overrides":
                group.add_argument(_flag(f), dest=f.name, action="append", default=None, metavar="FIELD=VALUE",
                                   help=text)
            elif _HINTS[f.name] is bool:
                group.add_argument(_flag(f), dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                                   help=text)
            else:
                group.add_argument(_flag(f), dest=f.name, default=None, metavar=f.name.upper(), help=text)


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected FIELD=VALUE, e.g. hidden_size=64")
    key, text = item.split("=", 1)
    return key.strip(), yaml.safe_load(text)


def config_from_args(args: argparse.Namespace, **fixed: Any) -> TrainConfig:
    """The run's config: field defaults < the CLI's defaults < ``--config`` < options given < ``fixed``."""
    values: dict[str, Any] = {f.name: f.metadata["cli_default"] for f in FIELDS.values() if "cli_default" in f.metadata}
    overrides: dict[str, Any] = {}
    if getattr(args, "config", None):
        from_file = read_config_file(args.config)
        overrides.update(from_file.pop("model_overrides", {}) or {})
        values.update(from_file)
    for name in FIELDS:
        given = getattr(args, name, None)
        if given is None:
            continue
        if name == "model_overrides":
            overrides.update(dict(_parse_override(item) for item in given))
        else:
            values[name] = coerce_value(name, given, _flag(FIELDS[name]))
    values["model_overrides"] = overrides
    values.update(fixed)
    if not values.get("data_dir"):
        raise ConfigError("--data is required (or data.data_dir in --config)")
    return TrainConfig(**values)


__all__ = [
    "ConfigError", "DataConfig", "ModelConfig", "TaskConfig", "TrainerConfig", "TrackingConfig", "TrainConfig",
    "SECTIONS", "add_config_arguments", "config_from_args", "load_config", "read_config_file", "option",
]

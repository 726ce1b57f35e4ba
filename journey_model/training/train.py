"""``train(config) -> TrainResult``: one training path for every model and task.

It uses Lightning fully: ``accelerator="auto"`` (the same command on CPU and GPU), bf16 mixed precision on
GPU, ``devices`` / ``num_nodes`` / DDP (Lightning's own launcher re-runs the command once per extra device),
early stopping on a validation metric, the best checkpoint restored before testing, resuming from the last
checkpoint, gradient clipping, learning-rate schedules, progress bars.

**DDP splits batches, not the data set.** Every process walks the same global batches (``batch_size``
customers, length-bucketed, reshuffled each epoch) and takes its share of each, so N devices average
gradients over exactly the customers one process would see in that step (:class:`RankSliceBatchSampler`);
validation and test metrics are gathered across processes.

**Recording is a hook, not a dependency.** ``train(config, recorder=...)`` accepts any :class:`RunRecorder`
(a context manager that gives a Lightning logger, logs the setup and the result); this layer never imports
MLflow. :func:`journey_model.tracking.runs.tracked_train` is ``train`` with MLflow's tracker on the
global-zero process — what `journey train`, `journey compare` and `journey demo` run.
"""

from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, Timer
from lightning.pytorch.loggers import Logger

from journey_model.core.files import write_json_atomic
from journey_model.data.prepare import prepared_cutoff_strategy
from journey_model.data.preprocessing import Preprocessor
from journey_model.models import build_model
from journey_model.models.base import JourneyModel
from journey_model.models.calibration import Calibration, CalibrationError, OperatingPolicy, fit_calibration
from journey_model.models.tasks import parse_task
from journey_model.training.checkpoints import (
    CHECKSUM_SUFFIX,
    VerifiedCheckpoint,
    load_checkpoint,
    verify_checkpoint,
)
from journey_model.training.config import ConfigError, TrainConfig, check_trainer_options, parse_duration
from journey_model.training.datamodule import JourneyDataModule
from journey_model.training.metrics import prefix_metric_keys
from journey_model.training.module import CHECKPOINT_RUN_KEY, EpochHistory, JourneyModule
from journey_model.training.predictions import write_predictions
from journey_model.training.progress import ProgressLog, wants_progress_log
from journey_model.training.recipes import TrainingRecipe, data_defaults, resolve_recipe, split_overrides

__all__ = ["RunRecorder", "TrainConfig", "TrainResult", "train", "trainer_kwargs"]



class RunRecorder(Protocol):
    """What records a run (MLflow's :class:`journey_model.tracking.runs.RunTracker`); opened on global rank 0."""

    run_id: str | None

    def __enter__(self) -> RunRecorder: ...

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> bool: ...

    def lightning_logger(self) -> Logger: ...

    def log_setup(self, config: TrainConfig, preprocessor: Preprocessor, model: JourneyModel, threads: int | None = None,
                  trainer: L.Trainer | None = None, recipe: TrainingRecipe | None = None) -> None: ...

    def log_result(self, result: TrainResult, module: JourneyModule, data: JourneyDataModule) -> None: ...


# (config, dataset name, task names, MLflow run id of the checkpoint resumed from) -> a recorder
RecorderFactory = Callable[[TrainConfig, str, list[str], str | None], RunRecorder]


@dataclass
class TrainResult:
    model_name: str
    tasks: list[str]
    test_metrics: dict[str, float]
    val_metrics: dict[str, float]  # validation metrics of the restored best model
    best_checkpoint: str | None
    seconds: float
    parameters: int
    epochs: int
    events_per_second: float | None = None  # training throughput at the end of training
    validation_metric: str = "val/loss"  # the monitor: early stopping, best checkpoint, promotion
    validation_value: float | None = None  # its value for the best model
    dataset: str = ""  # DatasetConfig name of the training data
    run_id: str | None = None  # MLflow run, when tracked
    model_uri: str | None = None  # the logged MLflow model (models:/m-...), when tracked
    registered_model: str | None = None  # journey-<dataset>-<task>, when registered
    registered_version: str | None = None
    global_rank: int = 0  # 0 on the process that reports; DDP workers return results too
    stopped_by: str | None = None  # why training ended: max_time, early_stopping or max_epochs (None: not trained)
    stop_reason: str | None = None  # the same in one sentence, e.g. "the --max-time budget of 2 s ran out …"
    history: list[dict[str, float]] = field(default_factory=list, repr=False)  # learning curves per epoch
    module: JourneyModule | None = field(default=None, repr=False)
    # fitted on validation (None: no outcome task, or calibration = none with operating_policy = none);
    # the Scorer bundle of this model carries it as calibration.json
    calibration: Calibration | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        calibration = self.calibration
        self.calibration = None  # asdict would copy its arrays field by field
        try:
            data = asdict(self)
        finally:
            self.calibration = calibration
        data.pop("module")
        data["calibration"] = calibration.to_json() if calibration is not None else None
        return data


def _precision(config: TrainConfig) -> str:
    if config.precision:
        return config.precision
    return "bf16-mixed" if _uses_gpu(config) else "32-true"


def _uses_gpu(config: TrainConfig) -> bool:
    return config.accelerator in ("gpu", "cuda") or (config.accelerator == "auto" and torch.cuda.is_available())


def _device_count(config: TrainConfig) -> int | None:
    if isinstance(config.devices, int):
        return config.devices
    if isinstance(config.devices, str) and "," in config.devices:
        return len([d for d in config.devices.split(",") if d.strip()])
    return None


def _strategy(config: TrainConfig) -> str:
    if config.strategy != "auto":
        return config.strategy
    devices = _device_count(config)
    # Lightning's subprocess launcher: the same command is started once per extra device (and per node). Zoo
    # models hold parameters a task may not use (heads, item embeddings), which plain "ddp" rejects.
    distributed = (devices and devices > 1) or config.num_nodes > 1
    return "ddp_find_unused_parameters_true" if distributed else "auto"


# Torch threads per training process on CPU, unless `--threads N` says otherwise: chosen by measurement.
# benchmarks/bench_training_throughput.py (benchmarks/results/training_throughput.json, "threads_malloc_load")
# timed training steps (batch 64, T <= 100, H 64) of atrank, gru-attn, lstm-luong and gru-bahdanau at 1 and 2
# threads (2 = torch's own default there, one per core) on 2 cores shared with other jobs (load average 6-10):
# one thread was 7-55x faster (atrank 0.73 s vs 5.2 s a step, gru-attn 0.20 vs 3.2 s), and 4-22x faster with a
# competing CPU-bound process (load 10-13). Journey's steps are many small kernels, so a second intra-op thread
# adds synchronisation, and waiting for a core that another process holds stalls every op. Each CPU DDP
# process takes one thread too. Not measured on machines with more cores: pass --threads there to try more.
CPU_DEFAULT_THREADS = 1


def _set_threads(config: TrainConfig) -> int:
    """Apply ``config.threads``; on CPU without it, :data:`CPU_DEFAULT_THREADS` per process (torch's default on GPU)."""
    if config.threads:
        torch.set_num_threads(config.threads)
    elif not _uses_gpu(config):
        torch.set_num_threads(CPU_DEFAULT_THREADS)
    return torch.get_num_threads()


def resolve_resume(resume: str | None, run_dir: Path) -> str | None:
    """The checkpoint to resume from: ``"last"`` = ``run_dir/last.ckpt``, a folder's last.ckpt, or a file;
    checked against its sha256 sidecar (a :class:`~journey_model.training.checkpoints.CheckpointError` if not)."""
    if not resume:
        return None
    path = run_dir / "last.ckpt" if resume == "last" else Path(resume)
    if path.is_dir():
        path = path / "last.ckpt"
    if not path.is_file():
        raise FileNotFoundError(f"trainer.resume = {resume!r}: no checkpoint at {path} (an interrupted run leaves "
                                "OUTPUT_DIR/MODEL/last.ckpt after its first validated epoch)")
    verify_checkpoint(path)
    return str(path)


def checkpoint_run_id(path: str | None) -> str | None:
    """The MLflow run id a checkpoint was written under, if any."""
    if not path:
        return None
    checkpoint = load_checkpoint(path)
    return (checkpoint.get(CHECKPOINT_RUN_KEY) or {}).get("mlflow_run_id")


def _clear_checkpoints(run_dir: Path) -> None:
    """A fresh run starts from an empty checkpoint folder, so 'best' and 'last' are always this run's."""
    for stale in [*run_dir.glob("*.ckpt"), *run_dir.glob("*.ckpt" + CHECKSUM_SUFFIX)]:
        stale.unlink()


def operating_policy(config: TrainConfig) -> OperatingPolicy | None:
    """``config.operating_policy`` parsed (None for ``none``); a :class:`ConfigError` names the field."""
    if config.operating_policy.strip().lower() == "none":
        return None
    try:
        return OperatingPolicy.parse(config.operating_policy)
    except CalibrationError as error:
        raise ConfigError(f"task.operating_policy = {config.operating_policy!r}: {error}") from error


def calibrate(config: TrainConfig, module: JourneyModule, outcome_names: Sequence[str],
              policy: OperatingPolicy | None) -> tuple[Calibration | None, dict[str, float], dict[str, float]]:
    """Calibration and operating points fitted on the validation predictions of ``module`` as it is now (the
    restored best model), with its test-split metrics (``test/ece/…``, ``test/op_precision/…``) and the
    operating points' validation figures (``val/op_precision/…``).

    ``test/ece/<outcome>`` and ``test/logloss/<outcome>`` then describe the calibrated scores the model's
    bundle outputs; the raw model's are kept as ``test/ece_raw/…`` and ``test/logloss_raw/…``.
    """
    validation = module.outcome_predictions.get("val")
    if validation is None or not outcome_names or (config.calibration == "none" and policy is None):
        return None, {}, {}
    logits, labels = validation
    calibration = fit_calibration(logits, labels, outcome_names, method=config.calibration, policy=policy,
                                  from_logits=True, seed=config.seed)
    val_metrics: dict[str, float] = {}
    for name, entry in calibration.outcomes.items():
        point = entry.operating_point
        if point is not None:
            val_metrics.update({f"val/op_precision/{name}": point.precision, f"val/op_recall/{name}": point.recall,
                                f"val/op_flagged/{name}": point.flagged_share,
                                f"val/lift10/{name}": point.lift_top_decile})
    test_metrics: dict[str, float] = {}
    test = module.outcome_predictions.get("test")
    if test is not None:
        probabilities = torch.sigmoid(torch.as_tensor(test[0]).float()).double().numpy()  # as the Scorer computes
        test_metrics = prefix_metric_keys(calibration.evaluate(probabilities, test[1], outcome_names), "test")
    return calibration, val_metrics, test_metrics


def _quiet_validate(trainer: L.Trainer, module: JourneyModule, data: JourneyDataModule) -> dict[str, float]:
    """Validation metrics of ``module`` as it is now, without adding points to the run's learning curves."""
    loggers, trainer.loggers = trainer.loggers, []
    try:
        results = trainer.validate(module, datamodule=data, verbose=False)
    finally:
        trainer.loggers = loggers
    return {k: float(v) for k, v in (results[0] if results else {}).items()}


def _stop_reason(config: TrainConfig, trainer: L.Trainer, early: EarlyStopping, epochs: int) -> tuple[str, str]:
    """Why ``trainer.fit`` ended: ``(max_time | early_stopping | max_epochs, one sentence)``."""
    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    remaining = timer.time_remaining() if timer is not None else None
    if remaining is not None and remaining <= 0:
        return "max_time", (f"stopped by --max-time: the wall-clock budget of {config.max_time} "
                            f"({parse_duration(config.max_time):g} s) ran out after {epochs} complete epoch(s)")
    if early.stopped_epoch > 0:
        return "early_stopping", (f"stopped early: {config.monitor} did not improve for {config.patience} "
                                  f"validation epoch(s) (epoch {early.stopped_epoch})")
    return "max_epochs", f"ran the {config.max_epochs} epoch(s) of --max-epochs"


# Every argument lightning.Trainer takes: trainer.trainer_options is checked against them before a run starts.
TRAINER_ARGUMENTS = frozenset(inspect.signature(L.Trainer.__init__).parameters) - {"self"}


def trainer_kwargs(config: TrainConfig, *, callbacks: Sequence[Callback] = (), gradient_clip_val: float | None = None,
                   trainable: bool = True) -> dict[str, Any]:
    """The arguments of ``L.Trainer`` for ``config``: Journey's own settings, then ``config.trainer_options``.

    An option Journey sets from one of its fields, or one the Trainer does not take, is a :class:`ConfigError`.
    """
    options = check_trainer_options(config.trainer_options, TRAINER_ARGUMENTS)
    own = dict(
        accelerator=config.accelerator, devices=config.devices, num_nodes=config.num_nodes,
        strategy=_strategy(config), precision=_precision(config),
        max_epochs=config.max_epochs if trainable else 0, callbacks=list(callbacks),
        max_time=timedelta(seconds=parse_duration(config.max_time)) if config.max_time and trainable else None,
        logger=False, gradient_clip_val=gradient_clip_val, enable_progress_bar=config.progress, enable_model_summary=False,
        limit_train_batches=config.limit_train_batches, limit_val_batches=config.limit_val_batches,
        deterministic=config.deterministic, use_distributed_sampler=False,
        default_root_dir=str(Path(config.output_dir) / config.model),
    )
    return {**own, **options}  # options cannot replace a field-backed argument: check_trainer_options refused those


def train(config: TrainConfig, metrics_out: str | Path | None = None, callbacks: Sequence[Callback] = (),
          recorder: RecorderFactory | None = None, predictions_out: str | Path | None = None) -> TrainResult:
    """Train ``config.model`` on ``config.data_dir``, evaluate on the test split, return the metrics.

    ``callbacks`` are extra Lightning callbacks (tests use one to interrupt a run). ``predictions_out``: a
    Parquet file for the test examples' predictions (:mod:`journey_model.training.predictions`). With ``config.track``,
    the global-zero process records the run with ``recorder(config, dataset, tasks, resumed_run_id)``
    (:func:`journey_model.tracking.runs.tracked_train` passes MLflow's).
    """
    if config.track and recorder is None:
        raise ConfigError("tracking.track is on but no recorder was given: record runs with "
                          "journey_model.tracking.runs.tracked_train (or set track=False)")
    check_trainer_options(config.trainer_options, TRAINER_ARGUMENTS)  # before any data is read
    policy = operating_policy(config)
    started = time.perf_counter()
    threads = _set_threads(config)
    L.seed_everything(config.seed, workers=True, verbose=False)
    data = JourneyDataModule(config.data_dir, batch_size=config.batch_size, eval_batch_size=config.eval_batch_size,
                             num_workers=config.num_workers, length_bucketing=config.length_bucketing,
                             seed=config.seed)
    tasks = [parse_task(t) for t in config.tasks] if config.tasks else None
    # One --set list: the recipe's fields tune the training, the others the model config (the architecture).
    recipe_overrides, architecture = split_overrides(config.model, config.model_overrides)
    architecture = {**data_defaults(config.model, prepared_cutoff_strategy(config.data_dir)), **architecture}
    model = build_model(config.model, data.feature_spec, tasks=tasks, **architecture)
    recipe = resolve_recipe(config.model, recipe_overrides, learning_rate=config.learning_rate,
                            gradient_clip_val=config.gradient_clip_val)
    module = JourneyModule(model, recipe=recipe, seed=config.seed,
                           lr_schedule=config.lr_schedule, warmup_steps=config.warmup_steps,
                           min_lr_ratio=config.min_lr_ratio, run_config=config.sections(),
                           unseen_as_miss=config.unseen_as_miss)
    run_dir = Path(config.output_dir) / config.model
    resume_from = resolve_resume(config.resume, run_dir)
    checkpoint = VerifiedCheckpoint(dirpath=run_dir, monitor=config.monitor, mode=config.monitor_mode,
                                    save_last=True, filename="best", enable_version_counter=False)
    history = EpochHistory()
    early = EarlyStopping(monitor=config.monitor, mode=config.monitor_mode, patience=config.patience)
    # progress lines when no terminal shows the bars; always: a note of what an interruption stopped
    progress_log = ProgressLog(config.model, config.progress_interval
                               if wants_progress_log(config.progress, config.progress_interval) else None)
    trainer = L.Trainer(**trainer_kwargs(config, callbacks=[checkpoint, early, history, progress_log, *callbacks],
                                         gradient_clip_val=recipe.grad_clip_norm, trainable=model.trainable))
    is_zero = trainer.is_global_zero
    if is_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        if resume_from is None:
            _clear_checkpoints(run_dir)
        config.save(run_dir / "config.yaml")
    task_names = [t.value for t in model.tasks]
    dataset = data.preprocessor.dataset.name
    tracker = None
    if config.track and is_zero:
        tracker = recorder(config, dataset, task_names, checkpoint_run_id(resume_from))
    with tracker or contextlib.nullcontext():
        if tracker is not None:
            trainer.loggers = [tracker.lightning_logger()]
            module.tracking_run_id = tracker.run_id
            tracker.log_setup(config, data.preprocessor, model, threads=threads, trainer=trainer, recipe=recipe)
        data.setup()
        epochs, best, throughput, stopped_by, stop_reason = 0, None, None, None, None
        if model.trainable:
            trainer.fit(module, datamodule=data, ckpt_path=resume_from, weights_only=True)
            epochs = trainer.current_epoch
            stopped_by, stop_reason = _stop_reason(config, trainer, early, epochs)
            throughput = trainer.callback_metrics.get("train/events_per_s")
            best = checkpoint.best_model_path or None
            if best:
                module.load_state_dict(load_checkpoint(best)["state_dict"])
        else:
            model.fit(data.full_train_dataloader())  # count-based baselines: one counting pass
        val_metrics = _quiet_validate(trainer, module, data)
        test = trainer.test(module, datamodule=data, verbose=False)
        test_metrics = {k: float(v) for k, v in (test[0] if test else {}).items()}
        calibration, calibration_val, calibration_test = calibrate(config, module, model.spec.outcome_names, policy)
        val_metrics.update(calibration_val)
        test_metrics.update(calibration_test)
        result = TrainResult(
            model_name=config.model, tasks=task_names, test_metrics=test_metrics, val_metrics=val_metrics,
            best_checkpoint=best, seconds=time.perf_counter() - started,
            parameters=sum(p.numel() for p in model.parameters() if p.requires_grad), epochs=epochs,
            events_per_second=float(throughput) if throughput is not None else None,
            validation_metric=config.monitor, validation_value=val_metrics.get(config.monitor), dataset=dataset,
            global_rank=trainer.global_rank, history=list(history.epochs), module=module, calibration=calibration,
            stopped_by=stopped_by, stop_reason=stop_reason,
        )
        if tracker is not None:
            tracker.log_result(result, module, data)
    if predictions_out and is_zero:
        write_predictions(predictions_out, model, data, calibration)
    if metrics_out and is_zero:
        path = Path(metrics_out)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, result.to_json())
    return result

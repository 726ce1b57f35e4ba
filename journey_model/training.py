"""One training path for every model and task: a thin LightningModule and ``train(config) -> TrainResult``.

:class:`JourneyModule` wraps any model of the zoo (:func:`journey_model.models.build_model`) with one
``model_step`` shared by train / val / test, logs ``train/loss``, ``val/auc/<outcome>``, ``val/hr_at_10``…
(the names are the MLflow keys), throughput (``train/sequences_per_s``, ``train/events_per_s``) and the
learning rate, and evaluates forecasts by greedy decoding. Count-based baselines (``markov``,
``most-frequent``) are fitted by one counting pass over the training data, then evaluated by the same loops.

``train`` is the importable entry point behind `journey train`, `journey compare` and `journey demo`. It uses
Lightning fully: ``accelerator="auto"`` (the same command on CPU and GPU), bf16 mixed precision on GPU,
``devices`` / ``num_nodes`` / DDP (Lightning's own launcher re-runs the command once per extra device), early
stopping on a validation metric, the best checkpoint restored before testing, resuming from the last
checkpoint, gradient clipping, learning-rate schedules, progress bars.

Two choices make results independent of how a run was executed:

* **DDP splits batches, not the data set.** Every process walks the same global batches
  (``batch_size`` customers, length-bucketed, reshuffled each epoch) and takes its share of each, so N
  devices average gradients over exactly the customers one process would see in that step
  (:class:`RankSliceBatchSampler`); validation and test metrics are gathered across processes.
* **Each epoch is reseeded from (seed, epoch)** (dropout, negative sampling), and optimiser, scheduler,
  early-stopping and learning-curve state travel in the checkpoint, so a run resumed from its last
  checkpoint reproduces the metrics of an uninterrupted one.

With ``config.track`` the run is recorded in MLflow by :class:`journey_model.tracking.RunTracker` (on the
global-zero process only): params, per-epoch and system metrics, plots, the preprocessing artifact, the
environment and the pyfunc model, registered as ``journey-<dataset>-<task>``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from torchmetrics import MeanMetric

from journey_model.batch import EVENT_TYPE_SPECIAL_IDS, FIELD_SPECIAL_IDS, PAD_ID, SequenceBatch
from journey_model.config import TrainConfig
from journey_model.datamodule import JourneyDataModule
from journey_model.metrics import (
    ForecastMetrics,
    NextEventMetrics,
    OutcomeCurves,
    OutcomeMetrics,
    prefix_metric_keys,
    sample_negative_ids,
)
from journey_model.models import build_model
from journey_model.models.base import JourneyModel
from journey_model.tasks import Task, compute_losses, parse_task

STAGES = ("train", "val", "test")
CHECKPOINT_RUN_KEY = "journey_run"  # checkpoint entry holding the MLflow run id, so a resume continues the run

# Known, harmless warnings of the pinned Lightning / torch versions; everything else still shows.
warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")
warnings.filterwarnings("ignore", message=".*You have overridden `transfer_batch_to_device`.*")
warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")
warnings.filterwarnings("ignore", message=".*does not have many workers which may be a bottleneck.*")
warnings.filterwarnings("ignore", message=".*overridden `on_before_batch_transfer` in `LightningModule` but have passed in a.*")
warnings.filterwarnings("ignore", message=".*is smaller than the logging interval.*")

__all__ = ["JourneyModule", "TrainConfig", "TrainResult", "train"]


def reseed(seed: int, epoch: int) -> None:
    """Seed python, numpy and torch from (seed, epoch): an epoch's randomness never depends on the past."""
    value = (seed * 1_000_003 + epoch) % 2**32
    random.seed(value)
    np.random.seed(value)  # noqa: NPY002 - the global generator is what third-party code draws from
    torch.manual_seed(value)


class JourneyModule(L.LightningModule):
    """Any Journey model + its tasks, trained and evaluated the same way."""

    def __init__(
        self,
        model: JourneyModel,
        learning_rate: float | None = None,
        seed: int = 0,
        lr_schedule: str = "model",
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.0,
        run_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        settings = getattr(model, "config", None)
        self.optimizer_name = getattr(settings, "optimizer", "adam")
        self.learning_rate = learning_rate or getattr(settings, "learning_rate", 1e-3)
        self.weight_decay = getattr(settings, "weight_decay", 0.0)
        self.lr_decay_step = getattr(settings, "lr_decay_step", None)
        self.lr_after_decay = getattr(settings, "lr_after_decay", None)
        self.lr_schedule = lr_schedule
        self.warmup_steps = warmup_steps
        self.min_lr_ratio = min_lr_ratio
        self.seed = seed
        if run_config is not None:  # every checkpoint knows the run's config
            self.save_hyperparameters({"config": run_config}, logger=False)
        spec = model.spec
        self.tasks = model.tasks
        self.metrics = torch.nn.ModuleDict()
        for stage in ("val", "test"):
            if Task.OUTCOME in self.tasks:
                self.metrics[f"{stage}_outcome"] = OutcomeMetrics(spec.outcome_names, from_logits=True)
            if Task.NEXT_EVENT in self.tasks:
                self.metrics[f"{stage}_next_event"] = NextEventMetrics(excluded_ids=EVENT_TYPE_SPECIAL_IDS)
            if Task.NEXT_ITEM in self.tasks:
                self.metrics[f"{stage}_next_item"] = NextEventMetrics(excluded_ids=FIELD_SPECIAL_IDS, target_name="item")
            if Task.FORECAST in self.tasks:
                self.metrics[f"{stage}_forecast"] = ForecastMetrics(spec.forecast_steps)
        # Evaluation losses as example-weighted means whose sums are gathered across DDP processes (Lightning's
        # own sync would average the processes' means, which differs when their shares differ in size).
        self.eval_losses = torch.nn.ModuleDict({
            f"{stage}_{name}": MeanMetric() for stage in ("val", "test") for name in ("loss", *[t.value for t in self.tasks])
        })
        self._negative_generator = torch.Generator().manual_seed(seed)
        self.tracking_run_id: str | None = None  # set by train() when the run is recorded in MLflow
        self.test_curves: dict[str, OutcomeCurves] = {}  # ROC / PR / calibration data of the last test epoch
        self._epoch_started = 0.0
        self._train_seconds = 0.0  # time spent in this epoch's training batches so far
        self._seen = {"sequences": 0, "events": 0}
        self._pending_counts = (0, 0)  # (sequences, events) of the batch about to be trained on
        self._epoch_loss_sum: torch.Tensor | float = 0.0
        self._epoch_loss_count = 0

    # ------------------------------------------------------------------ Lightning plumbing
    def transfer_batch_to_device(self, batch: SequenceBatch, device: torch.device, dataloader_idx: int) -> SequenceBatch:
        return batch.to(device)

    def on_before_batch_transfer(self, batch: SequenceBatch, dataloader_idx: int) -> SequenceBatch:
        # Count on the host, before the batch moves, so throughput never forces a device sync.
        if self._trainer is not None and self.trainer.training:
            self._pending_counts = (batch.batch_size, int(batch.lengths.sum()))
        return batch

    def forward(self, batch: SequenceBatch, output_attentions: bool = False):  # noqa: ANN201 - ModelOutput
        return self.model(batch, output_attentions=output_attentions)

    @property
    def _distributed(self) -> bool:
        return self._trainer is not None and self.trainer.world_size > 1

    def configure_optimizers(self):  # noqa: ANN201 - Lightning's optimizer config
        params = [p for p in self.parameters() if p.requires_grad]
        if self.optimizer_name == "sgd":
            optimizer = torch.optim.SGD(params, lr=self.learning_rate, weight_decay=self.weight_decay)
        elif self.optimizer_name == "adamw":
            optimizer = torch.optim.AdamW(params, lr=self.learning_rate, weight_decay=self.weight_decay)
        else:
            optimizer = torch.optim.Adam(params, lr=self.learning_rate, weight_decay=self.weight_decay)
        factor = self._lr_factor()
        if factor is None:
            return optimizer
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def _lr_factor(self) -> Callable[[int], float] | None:
        """Multiplier of the initial learning rate at optimiser step s, or None for a constant rate."""
        if self.lr_schedule == "constant":
            return None
        if self.lr_schedule == "model":  # the model config's single step decay (ATRank's schedule)
            if not (self.lr_decay_step and self.lr_after_decay is not None):
                return None
            ratio, step = self.lr_after_decay / self.learning_rate, self.lr_decay_step
            return lambda s: 1.0 if s < step else ratio
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup, floor, cosine = min(self.warmup_steps, total - 1), self.min_lr_ratio, self.lr_schedule == "cosine"

        def factor(s: int) -> float:
            if s < warmup:
                return (s + 1) / warmup
            progress = min(1.0, (s - warmup) / max(1, total - warmup))
            shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if cosine else 1.0 - progress
            return floor + (1.0 - floor) * shape

        return factor

    # ------------------------------------------------------------------ the one step
    def model_step(self, batch: SequenceBatch, stage: str) -> torch.Tensor:
        output = self.model(batch)
        losses = compute_losses(output, batch)
        size = batch.batch_size
        for name, value in losses.items():
            key = f"{stage}/loss" if name == "loss" else f"{stage}/loss_{name}"
            if stage == "train":
                self.log(key, value, batch_size=size, prog_bar=name == "loss", on_epoch=True, on_step=True)
            else:
                mean = self.eval_losses[f"{stage}_{name}"]
                mean.update(value.detach().float(), weight=size)
                self.log(key, mean, batch_size=size, prog_bar=name == "loss", on_epoch=True, on_step=False)
        if stage != "train":
            self._update_metrics(stage, output, batch)
        return losses["loss"]

    def _update_metrics(self, stage: str, output, batch: SequenceBatch) -> None:  # noqa: ANN001
        if output.outcome_logits is not None and batch.outcomes is not None:
            self.metrics[f"{stage}_outcome"].update(output.outcome_logits.float(), batch.outcomes)
        if output.next_event_logits is not None and batch.next_event_type is not None:
            self.metrics[f"{stage}_next_event"].update(output.next_event_logits.float(), batch.next_event_type)
        if output.next_item_logits is not None and batch.next_item is not None:
            logits = output.next_item_logits.float()
            negatives = None
            if logits.shape[1] > len(FIELD_SPECIAL_IDS) + 1:  # two real items at least: every positive has a negative
                # Rows with an unknown target (0) are skipped by the metric; the first real id stands in for them.
                positives = batch.next_item.where(batch.next_item != PAD_ID, len(FIELD_SPECIAL_IDS))
                negatives = sample_negative_ids(positives.cpu(), logits.shape[1], excluded_ids=FIELD_SPECIAL_IDS,
                                                generator=self._negative_generator).to(logits.device)
            self.metrics[f"{stage}_next_item"].update(logits, batch.next_item, negatives)
        if Task.FORECAST in self.tasks and batch.forecast is not None and stage == "test":
            predicted = self.model.forecast(batch).tokens
            self.metrics[f"{stage}_forecast"].update(predicted, batch.forecast)

    def on_train_batch_start(self, batch: SequenceBatch, batch_idx: int) -> None:
        if batch_idx == 0:  # here, not at epoch start: creating the epoch's data iterator draws from the RNG
            reseed(self.seed, self.current_epoch)

    def on_train_epoch_start(self) -> None:
        self._epoch_started = time.perf_counter()
        self._train_seconds = 0.0
        self._seen = {"sequences": 0, "events": 0}
        self._epoch_loss_sum, self._epoch_loss_count = 0.0, 0

    def training_step(self, batch: SequenceBatch, batch_idx: int) -> torch.Tensor:
        loss = self.model_step(batch, "train")
        sequences, events = self._pending_counts
        self._seen["sequences"] += sequences
        self._seen["events"] += events
        self._epoch_loss_sum = self._epoch_loss_sum + loss.detach() * batch.batch_size
        self._epoch_loss_count += batch.batch_size
        if self._distributed:
            loss = self._weight_by_share(loss, batch.batch_size)
        elapsed = self._train_seconds = time.perf_counter() - self._epoch_started
        if elapsed > 0:
            # Every process trains on its share of the same global batches in lockstep: scale to the whole run.
            world = self.trainer.world_size
            self.log("train/sequences_per_s", world * self._seen["sequences"] / elapsed, batch_size=batch.batch_size)
            self.log("train/events_per_s", world * self._seen["events"] / elapsed, batch_size=batch.batch_size,
                     prog_bar=True)
        if self.trainer.lr_scheduler_configs or batch_idx == 0:
            self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=batch.batch_size)
        return loss

    def on_train_epoch_end(self) -> None:
        elapsed = self._train_seconds  # the epoch's training batches, without its validation
        if elapsed > 0 and self._seen["sequences"]:
            world = self.trainer.world_size
            self.log("train/epoch_sequences_per_s", world * self._seen["sequences"] / elapsed)
            self.log("train/epoch_events_per_s", world * self._seen["events"] / elapsed)

    def _weight_by_share(self, loss: torch.Tensor, share: int) -> torch.Tensor:
        """Scale this process's mean loss by its share of the global batch.

        DDP averages gradients over processes; weighting by share makes that average the gradient of the
        global batch's mean loss even when the shares are unequal (the last batch of an epoch), as one process
        would compute it.
        """
        total = self.trainer.strategy.reduce(torch.tensor(float(share), device=loss.device), reduce_op="sum")
        return loss * (share * self.trainer.world_size / total)

    def train_epoch_loss(self) -> float:
        """Mean training loss of the current (or last) epoch over every process (call it on all of them)."""
        totals = torch.tensor([float(self._epoch_loss_sum), float(self._epoch_loss_count)], dtype=torch.float64)
        if self._distributed:
            totals = self.trainer.strategy.reduce(totals.to(self.device), reduce_op="sum").cpu()
        return float(totals[0] / totals[1]) if totals[1] else math.nan

    def on_validation_epoch_start(self) -> None:
        self._negative_generator.manual_seed(self.seed)

    def on_test_epoch_start(self) -> None:
        self._negative_generator.manual_seed(self.seed)

    def validation_step(self, batch: SequenceBatch, batch_idx: int) -> None:
        self.model_step(batch, "val")

    def test_step(self, batch: SequenceBatch, batch_idx: int) -> None:
        self.model_step(batch, "test")

    def _log_epoch_metrics(self, stage: str) -> None:
        for name, metric in self.metrics.items():
            if not name.startswith(stage) or not metric.update_called:
                continue
            values = {k: v for k, v in metric.compute().items() if not math.isnan(v)}  # gathered across processes
            self.log_dict(prefix_metric_keys(values, stage), sync_dist=False)
            if stage == "test" and isinstance(metric, OutcomeMetrics):
                with metric.sync_context(should_sync=self._distributed):
                    self.test_curves = metric.curves()
            metric.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_RUN_KEY] = {"mlflow_run_id": self.tracking_run_id}


class EpochHistory(Callback):
    """Per-epoch training loss, learning rate and validation metrics: the learning curves.

    Recorded when each epoch's validation ends (before the checkpoint of that epoch is written) and kept in
    checkpoints, so a resumed run's curves cover the epochs before the interruption too.
    """

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        row = {"epoch": float(trainer.current_epoch), "train/loss": pl_module.train_epoch_loss()}
        if trainer.optimizers:
            row["train/lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
        row.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")})
        self.epochs = [e for e in self.epochs if e["epoch"] != row["epoch"]] + [row]

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epochs = list(state_dict.get("epochs", []))


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
    history: list[dict[str, float]] = field(default_factory=list, repr=False)  # learning curves per epoch
    module: JourneyModule | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("module")
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


def _set_threads(config: TrainConfig) -> int:
    """Apply ``config.threads``; under CPU DDP, share the cores between the processes by default."""
    if config.threads:
        torch.set_num_threads(config.threads)
    elif not _uses_gpu(config) and (_device_count(config) or 1) > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // (_device_count(config) or 1)))
    return torch.get_num_threads()


def resolve_resume(resume: str | None, run_dir: Path) -> str | None:
    """The checkpoint to resume from: ``"last"`` = ``run_dir/last.ckpt``, a folder's last.ckpt, or a file."""
    if not resume:
        return None
    path = run_dir / "last.ckpt" if resume == "last" else Path(resume)
    if path.is_dir():
        path = path / "last.ckpt"
    if not path.is_file():
        raise FileNotFoundError(f"trainer.resume = {resume!r}: no checkpoint at {path} (an interrupted run leaves "
                                "OUTPUT_DIR/MODEL/last.ckpt after its first validated epoch)")
    return str(path)


def checkpoint_run_id(path: str | None) -> str | None:
    """The MLflow run id a checkpoint was written under, if any."""
    if not path:
        return None
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    return (checkpoint.get(CHECKPOINT_RUN_KEY) or {}).get("mlflow_run_id")


def _clear_checkpoints(run_dir: Path) -> None:
    """A fresh run starts from an empty checkpoint folder, so 'best' and 'last' are always this run's."""
    for stale in run_dir.glob("*.ckpt"):
        stale.unlink()


def _quiet_validate(trainer: L.Trainer, module: JourneyModule, data: JourneyDataModule) -> dict[str, float]:
    """Validation metrics of ``module`` as it is now, without adding points to the run's learning curves."""
    loggers, trainer.loggers = trainer.loggers, []
    try:
        results = trainer.validate(module, datamodule=data, verbose=False)
    finally:
        trainer.loggers = loggers
    return {k: float(v) for k, v in (results[0] if results else {}).items()}


def train(config: TrainConfig, metrics_out: str | Path | None = None,
          callbacks: Sequence[Callback] = ()) -> TrainResult:
    """Train ``config.model`` on ``config.data_dir``, evaluate on the test split, return the metrics.

    ``callbacks`` are extra Lightning callbacks (tests use one to interrupt a run). With ``config.track``,
    the global-zero process records the run in MLflow and, with ``config.register``, registers the model.
    """
    started = time.perf_counter()
    threads = _set_threads(config)
    L.seed_everything(config.seed, workers=True, verbose=False)
    data = JourneyDataModule(config.data_dir, batch_size=config.batch_size, eval_batch_size=config.eval_batch_size,
                             num_workers=config.num_workers, length_bucketing=config.length_bucketing,
                             seed=config.seed)
    tasks = [parse_task(t) for t in config.tasks] if config.tasks else None
    model = build_model(config.model, data.feature_spec, tasks=tasks, **config.model_overrides)
    module = JourneyModule(model, learning_rate=config.learning_rate, seed=config.seed,
                           lr_schedule=config.lr_schedule, warmup_steps=config.warmup_steps,
                           min_lr_ratio=config.min_lr_ratio, run_config=config.sections())
    run_dir = Path(config.output_dir) / config.model
    resume_from = resolve_resume(config.resume, run_dir)
    checkpoint = ModelCheckpoint(dirpath=run_dir, monitor=config.monitor, mode=config.monitor_mode,
                                 save_last=True, filename="best", enable_version_counter=False)
    history = EpochHistory()
    early = EarlyStopping(monitor=config.monitor, mode=config.monitor_mode, patience=config.patience)
    clip = config.gradient_clip_val if config.gradient_clip_val is not None else getattr(model.config, "grad_clip_norm", None)
    trainer = L.Trainer(
        accelerator=config.accelerator, devices=config.devices, num_nodes=config.num_nodes,
        strategy=_strategy(config), precision=_precision(config),
        max_epochs=config.max_epochs if model.trainable else 0, callbacks=[checkpoint, early, history, *callbacks],
        logger=False, gradient_clip_val=clip, enable_progress_bar=config.progress, enable_model_summary=False,
        limit_train_batches=config.limit_train_batches, limit_val_batches=config.limit_val_batches,
        deterministic=config.deterministic, use_distributed_sampler=False, default_root_dir=str(run_dir),
    )
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
        from journey_model.tracking import RunTracker

        tracker = RunTracker(config, dataset=dataset, tasks=task_names, resume_run_id=checkpoint_run_id(resume_from))
    with tracker or contextlib.nullcontext():
        if tracker is not None:
            trainer.loggers = [tracker.lightning_logger()]
            module.tracking_run_id = tracker.run_id
            tracker.log_setup(config, data.preprocessor, model, threads=threads, trainer=trainer)
        data.setup()
        epochs, best, throughput = 0, None, None
        if model.trainable:
            trainer.fit(module, datamodule=data, ckpt_path=resume_from)
            epochs = trainer.current_epoch
            throughput = trainer.callback_metrics.get("train/events_per_s")
            best = checkpoint.best_model_path or None
            if best:
                module.load_state_dict(torch.load(best, map_location="cpu", weights_only=False)["state_dict"])
        else:
            model.fit(data.full_train_dataloader())  # count-based baselines: one counting pass
        val_metrics = _quiet_validate(trainer, module, data)
        test = trainer.test(module, datamodule=data, verbose=False)
        test_metrics = {k: float(v) for k, v in (test[0] if test else {}).items()}
        result = TrainResult(
            model_name=config.model, tasks=task_names, test_metrics=test_metrics, val_metrics=val_metrics,
            best_checkpoint=best, seconds=time.perf_counter() - started,
            parameters=sum(p.numel() for p in model.parameters() if p.requires_grad), epochs=epochs,
            events_per_second=float(throughput) if throughput is not None else None,
            validation_metric=config.monitor, validation_value=val_metrics.get(config.monitor), dataset=dataset,
            global_rank=trainer.global_rank, history=list(history.epochs), module=module,
        )
        if tracker is not None:
            tracker.log_result(result, module, data)
    if metrics_out and is_zero:
        path = Path(metrics_out)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(result.to_json(), indent=1))
        os.replace(tmp, path)
    return result

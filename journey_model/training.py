"""One training path for every model and task: a thin LightningModule and ``train(config) -> TrainResult``.

:class:`JourneyModule` wraps any model of the zoo (:func:`journey_model.models.build_model`) with one
``model_step`` shared by train / val / test, logs ``train/loss``, ``val/auc/<outcome>``, ``val/hr_at_10``…
(the names become MLflow keys later), and evaluates forecasts by greedy decoding. Count-based baselines
(``markov``, ``most-frequent``) are fitted by one counting pass over the training data, then evaluated
by the same test loop as everyone else.

``train`` is the importable entry point the ``journey train`` command calls: it builds the datamodule and
model, trains with early stopping on a validation metric, restores the best checkpoint, evaluates on the
test split and returns the metrics (optionally written as JSON).
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from journey_model.batch import SequenceBatch
from journey_model.datamodule import JourneyDataModule
from journey_model.metrics import (
    EVENT_TYPE_SPECIAL_IDS,
    FIELD_SPECIAL_IDS,
    ForecastMetrics,
    NextEventMetrics,
    OutcomeMetrics,
    prefix_metric_keys,
    sample_negative_ids,
)
from journey_model.models import build_model
from journey_model.models.base import JourneyModel
from journey_model.tasks import Task, compute_losses, parse_task

STAGES = ("train", "val", "test")

# Known, harmless warnings of the pinned Lightning / torch versions; everything else still shows.
warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")
warnings.filterwarnings("ignore", message=".*You have overridden `transfer_batch_to_device`.*")
warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")
warnings.filterwarnings("ignore", message=".*does not have many workers which may be a bottleneck.*")


class JourneyModule(L.LightningModule):
    """Any Journey model + its tasks, trained and evaluated the same way."""

    def __init__(self, model: JourneyModel, learning_rate: float | None = None, seed: int = 0) -> None:
        super().__init__()
        self.model = model
        settings = getattr(model, "config", None)
        self.optimizer_name = getattr(settings, "optimizer", "adam")
        self.learning_rate = learning_rate or getattr(settings, "learning_rate", 1e-3)
        self.weight_decay = getattr(settings, "weight_decay", 0.0)
        self.lr_decay_step = getattr(settings, "lr_decay_step", None)
        self.lr_after_decay = getattr(settings, "lr_after_decay", None)
        self.seed = seed
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
        self._negative_generator = torch.Generator().manual_seed(seed)
        self._started = 0.0
        self._seen = {"sequences": 0, "events": 0}

    # ------------------------------------------------------------------ Lightning plumbing
    def transfer_batch_to_device(self, batch: SequenceBatch, device: torch.device, dataloader_idx: int) -> SequenceBatch:
        return batch.to(device)

    def forward(self, batch: SequenceBatch, output_attentions: bool = False):  # noqa: ANN201 - ModelOutput
        return self.model(batch, output_attentions=output_attentions)

    def configure_optimizers(self):  # noqa: ANN201 - Lightning's optimizer config
        params = [p for p in self.parameters() if p.requires_grad]
        if self.optimizer_name == "sgd":
            optimizer = torch.optim.SGD(params, lr=self.learning_rate, weight_decay=self.weight_decay)
        elif self.optimizer_name == "adamw":
            optimizer = torch.optim.AdamW(params, lr=self.learning_rate, weight_decay=self.weight_decay)
        else:
            optimizer = torch.optim.Adam(params, lr=self.learning_rate, weight_decay=self.weight_decay)
        if self.lr_decay_step and self.lr_after_decay is not None:
            ratio = self.lr_after_decay / self.learning_rate
            step = self.lr_decay_step
            schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 if s < step else ratio)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
        return optimizer

    # ------------------------------------------------------------------ the one step
    def model_step(self, batch: SequenceBatch, stage: str) -> torch.Tensor:
        output = self.model(batch)
        losses = compute_losses(output, batch)
        size = batch.batch_size
        for name, value in losses.items():
            key = f"{stage}/loss" if name == "loss" else f"{stage}/loss_{name}"
            self.log(key, value, batch_size=size, prog_bar=name == "loss", on_epoch=True, on_step=stage == "train")
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
            known = batch.next_item.clone()
            known[known == 0] = FIELD_SPECIAL_IDS[-1] + 1 if logits.shape[1] > 2 else 0
            negatives = sample_negative_ids(
                known.cpu(), logits.shape[1], excluded_ids=FIELD_SPECIAL_IDS, generator=self._negative_generator
            ).to(logits.device) if logits.shape[1] > 3 else None
            self.metrics[f"{stage}_next_item"].update(logits, batch.next_item, negatives)
        if Task.FORECAST in self.tasks and batch.forecast is not None and stage == "test":
            predicted = self.model.forecast(batch).tokens
            self.metrics[f"{stage}_forecast"].update(predicted, batch.forecast)

    def training_step(self, batch: SequenceBatch, batch_idx: int) -> torch.Tensor:
        loss = self.model_step(batch, "train")
        self._seen["sequences"] += batch.batch_size
        self._seen["events"] += int(batch.lengths.sum())
        elapsed = time.perf_counter() - self._started
        if elapsed > 0:
            self.log("train/sequences_per_s", self._seen["sequences"] / elapsed, batch_size=batch.batch_size)
            self.log("train/events_per_s", self._seen["events"] / elapsed, batch_size=batch.batch_size)
        return loss

    def on_train_start(self) -> None:
        self._started = time.perf_counter()

    def validation_step(self, batch: SequenceBatch, batch_idx: int) -> None:
        self.model_step(batch, "val")

    def test_step(self, batch: SequenceBatch, batch_idx: int) -> None:
        self.model_step(batch, "test")

    def _log_epoch_metrics(self, stage: str) -> None:
        for name, metric in self.metrics.items():
            if not name.startswith(stage) or not metric.update_called:
                continue
            values = {k: v for k, v in metric.compute().items() if not math.isnan(v)}
            self.log_dict(prefix_metric_keys(values, stage), sync_dist=False)
            metric.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")


@dataclass
class TrainConfig:
    """One training run: data, model, tasks and the trainer's budget."""

    data_dir: str  # a folder written by `journey prepare`
    model: str = "atrank"  # a name from journey_model.models.list_models()
    tasks: list[str] | None = None  # None = every task the model and data support
    model_overrides: dict[str, Any] = field(default_factory=dict)  # model config fields, e.g. hidden_size
    max_epochs: int = 10  # upper bound; early stopping usually ends sooner
    batch_size: int = 64  # customers per batch
    learning_rate: float | None = None  # None = the model config's
    patience: int = 3  # validation epochs without improvement before stopping
    monitor: str = "val/loss"  # validation metric for early stopping and the best checkpoint
    monitor_mode: str = "min"  # "min" or "max"
    seed: int = 0  # seeds torch, numpy, python and the data order
    num_workers: int = 0  # DataLoader worker processes
    accelerator: str = "auto"  # "cpu", "gpu" or "auto"
    devices: int | str = 1  # devices per node
    precision: str | None = None  # None: bf16-mixed on GPU, 32 on CPU
    gradient_clip_val: float | None = None  # None = the model config's grad_clip_norm
    limit_train_batches: int | float | None = None  # for smoke tests
    output_dir: str = "work/runs"  # checkpoints go under <output_dir>/<model>/
    progress: bool = True


@dataclass
class TrainResult:
    model_name: str
    tasks: list[str]
    test_metrics: dict[str, float]
    val_metrics: dict[str, float]
    best_checkpoint: str | None
    seconds: float
    parameters: int
    epochs: int
    events_per_second: float | None = None  # training throughput at the end of training
    module: JourneyModule | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("module")
        return data


def _precision(config: TrainConfig) -> str:
    if config.precision:
        return config.precision
    gpu = config.accelerator in ("gpu", "cuda") or (config.accelerator == "auto" and torch.cuda.is_available())
    return "bf16-mixed" if gpu else "32-true"


def train(config: TrainConfig, metrics_out: str | Path | None = None) -> TrainResult:
    """Train ``config.model`` on ``config.data_dir``, evaluate on the test split, return the metrics."""
    started = time.perf_counter()
    L.seed_everything(config.seed, workers=True, verbose=False)
    data = JourneyDataModule(config.data_dir, batch_size=config.batch_size, num_workers=config.num_workers,
                             seed=config.seed)
    tasks = [parse_task(t) for t in config.tasks] if config.tasks else None
    model = build_model(config.model, data.feature_spec, tasks=tasks, **config.model_overrides)
    module = JourneyModule(model, learning_rate=config.learning_rate, seed=config.seed)
    run_dir = Path(config.output_dir) / config.model
    checkpoint = ModelCheckpoint(dirpath=run_dir, monitor=config.monitor, mode=config.monitor_mode,
                                 save_last=True, filename="best")
    callbacks = [checkpoint, EarlyStopping(monitor=config.monitor, mode=config.monitor_mode, patience=config.patience)]
    clip = config.gradient_clip_val if config.gradient_clip_val is not None else getattr(model.config, "grad_clip_norm", None)
    trainer = L.Trainer(
        accelerator=config.accelerator, devices=config.devices, precision=_precision(config),
        max_epochs=config.max_epochs if model.trainable else 0, callbacks=callbacks, logger=False,
        gradient_clip_val=clip, enable_progress_bar=config.progress, enable_model_summary=False,
        limit_train_batches=config.limit_train_batches, deterministic=False, use_distributed_sampler=False,
        default_root_dir=str(run_dir),
    )
    data.setup()
    epochs = 0
    val_metrics: dict[str, float] = {}
    if model.trainable:
        trainer.fit(module, datamodule=data)
        epochs = trainer.current_epoch
        val_metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        throughput = trainer.callback_metrics.get("train/events_per_s")
        best = checkpoint.best_model_path or None
        if best:
            module.load_state_dict(torch.load(best, map_location="cpu", weights_only=False)["state_dict"])
    else:
        model.fit(data.train_dataloader())  # count-based baselines: one counting pass
        best, throughput = None, None
    test = trainer.test(module, datamodule=data, verbose=False)
    test_metrics = {k: float(v) for k, v in (test[0] if test else {}).items()}
    result = TrainResult(
        model_name=config.model, tasks=[t.value for t in model.tasks], test_metrics=test_metrics,
        val_metrics=val_metrics, best_checkpoint=best, seconds=time.perf_counter() - started,
        parameters=sum(p.numel() for p in model.parameters() if p.requires_grad), epochs=epochs,
        events_per_second=float(throughput) if throughput is not None else None, module=module,
    )
    if metrics_out:
        Path(metrics_out).parent.mkdir(parents=True, exist_ok=True)
        Path(metrics_out).write_text(json.dumps(result.to_json(), indent=1))
    return result

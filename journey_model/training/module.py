"""The LightningModule that trains and evaluates any model of the zoo, and its learning-curve callback.

:class:`JourneyModule` wraps any model (:func:`journey_model.models.build_model`) with one ``model_step``
shared by train / val / test, logs ``train/loss``, ``val/auc/<outcome>``, ``val/hr_at_10``… (the names are
the MLflow keys), throughput (``train/sequences_per_s``, ``train/events_per_s``) and the learning rate, and
evaluates forecasts by greedy decoding. Count-based baselines (``markov``, ``most-frequent``) are fitted by
one counting pass over the training data, then evaluated by the same loops.

Each epoch is reseeded from (seed, epoch) (dropout, negative sampling), and optimiser, scheduler,
early-stopping and learning-curve state travel in the checkpoint, so a run resumed from its last checkpoint
reproduces the metrics of an uninterrupted one.
"""

from __future__ import annotations

import math
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from torchmetrics import MeanMetric

from journey_model.data.batch import SequenceBatch
from journey_model.data.features import EVENT_TYPE_SPECIAL_IDS, FIELD_SPECIAL_IDS, PAD_ID
from journey_model.models.base import JourneyModel
from journey_model.models.tasks import Task
from journey_model.training.losses import compute_losses
from journey_model.training.metrics import (
    ForecastMetrics,
    NextEventMetrics,
    OutcomeCurves,
    OutcomeMetrics,
    prefix_metric_keys,
    sample_negative_ids,
)
from journey_model.training.recipes import TrainingRecipe, recipe_for

STAGES = ("train", "val", "test")
CHECKPOINT_RUN_KEY = "journey_run"  # checkpoint entry holding the MLflow run id, so a resume continues the run

# Known, harmless warnings of the pinned Lightning / torch versions; everything else still shows.
warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")
warnings.filterwarnings("ignore", message=".*You have overridden `transfer_batch_to_device`.*")
warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")
warnings.filterwarnings("ignore", message=".*does not have many workers which may be a bottleneck.*")
warnings.filterwarnings("ignore", message=".*overridden `on_before_batch_transfer` in `LightningModule` but have passed in a.*")
warnings.filterwarnings("ignore", message=".*is smaller than the logging interval.*")


def reseed(seed: int, epoch: int) -> None:
    """Seed python, numpy and torch from (seed, epoch): an epoch's randomness never depends on the past."""
    value = (seed * 1_000_003 + epoch) % 2**32
    random.seed(value)
    np.random.seed(value)  # noqa: NPY002 - the global generator is what third-party code draws from
    torch.manual_seed(value)


class JourneyModule(L.LightningModule):
    """Any Journey model + its tasks, trained and evaluated the same way.

    ``recipe`` says how to optimise (optimiser, learning rate, its step decay, weight decay); None = the
    model name's default (:func:`~journey_model.training.recipes.recipe_for`).
    ``unseen_as_miss``: next-event / next-item targets unseen in training (<oov>) count as misses in the ranking
    metrics instead of being dropped (and counted in ``<stage>/unseen_targets``).
    """

    def __init__(
        self,
        model: JourneyModel,
        recipe: TrainingRecipe | None = None,
        seed: int = 0,
        lr_schedule: str = "model",
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.0,
        run_config: dict[str, Any] | None = None,
        unseen_as_miss: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.recipe = recipe if recipe is not None else recipe_for(model.model_name)
        self.lr_schedule = lr_schedule
        self.warmup_steps = warmup_steps
        self.min_lr_ratio = min_lr_ratio
        self.seed = seed
        if run_config is not None:  # every checkpoint knows the run's config and the recipe it trained with
            self.save_hyperparameters({"config": run_config, "recipe": asdict(self.recipe)}, logger=False)
        spec = model.spec
        self.tasks = model.tasks
        self.metrics = torch.nn.ModuleDict()
        for stage in ("val", "test"):
            if Task.OUTCOME in self.tasks:
                self.metrics[f"{stage}_outcome"] = OutcomeMetrics(spec.outcome_names, from_logits=True)
            if Task.NEXT_EVENT in self.tasks:
                self.metrics[f"{stage}_next_event"] = NextEventMetrics(
                    excluded_ids=EVENT_TYPE_SPECIAL_IDS, unseen_as_miss=unseen_as_miss)
            if Task.NEXT_ITEM in self.tasks:
                self.metrics[f"{stage}_next_item"] = NextEventMetrics(
                    excluded_ids=FIELD_SPECIAL_IDS, target_name="item", unseen_as_miss=unseen_as_miss)
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
        # (logits, targets) of the last validation / test epoch, gathered over processes: calibration is fitted
        # on the restored best model's validation predictions and measured on its test predictions
        self.outcome_predictions: dict[str, tuple[np.ndarray, np.ndarray]] = {}
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
        recipe = self.recipe
        if recipe.optimizer == "sgd":
            optimizer = torch.optim.SGD(params, lr=recipe.learning_rate, weight_decay=recipe.weight_decay)
        elif recipe.optimizer == "adamw":
            optimizer = torch.optim.AdamW(params, lr=recipe.learning_rate, weight_decay=recipe.weight_decay)
        else:
            optimizer = torch.optim.Adam(params, lr=recipe.learning_rate, weight_decay=recipe.weight_decay)
        factor = self._lr_factor()
        if factor is None:
            return optimizer
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def _lr_factor(self) -> Callable[[int], float] | None:
        """Multiplier of the initial learning rate at optimiser step s, or None for a constant rate."""
        if self.lr_schedule == "constant":
            return None
        if self.lr_schedule == "model":  # the recipe's single step decay (ATRank's schedule)
            recipe = self.recipe
            if not (recipe.lr_decay_step and recipe.lr_after_decay is not None):
                return None
            ratio, step = recipe.lr_after_decay / recipe.learning_rate, recipe.lr_decay_step
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
        losses = compute_losses(output, batch, auxiliary=stage == "train")  # val/test: the predictions' loss
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
        if elapsed > 0 and self._throughput_due(batch_idx):
            # Every process trains on its share of the same global batches in lockstep: scale to the whole run.
            world = self.trainer.world_size
            self.log("train/sequences_per_s", world * self._seen["sequences"] / elapsed, batch_size=batch.batch_size)
            self.log("train/events_per_s", world * self._seen["events"] / elapsed, batch_size=batch.batch_size,
                     prog_bar=True)
        if self.trainer.lr_scheduler_configs or batch_idx == 0:
            self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=batch.batch_size)
        return loss

    def _throughput_due(self, batch_idx: int) -> bool:
        """Whether this batch logs the running throughput: every ``log_every_n_steps`` batches and an epoch's last.
        Each ``self.log`` costs Lightning's bookkeeping about 0.6 ms of CPU, a fifth of a bag-of-events step's own
        arithmetic on Berka (benchmarks/bench_training_overhead.py); the epoch's throughput is logged at its end."""
        every = max(1, self.trainer.log_every_n_steps)
        return (batch_idx + 1) % every == 0 or batch_idx + 1 >= self.trainer.num_training_batches

    def on_train_epoch_end(self) -> None:
        elapsed = self._train_seconds  # the epoch's training batches, without its validation
        if elapsed > 0 and self._seen["sequences"]:
            world = self.trainer.world_size
            self.log("train/epoch_sequences_per_s", world * self._seen["sequences"] / elapsed)
            self.log("train/epoch_events_per_s", world * self._seen["events"] / elapsed)

    @property
    def epoch_started(self) -> float:
        """``time.perf_counter()`` when the current (or last) training epoch started; 0 before any."""
        return self._epoch_started

    @property
    def train_seconds(self) -> float:
        """Seconds spent in the current (or last) epoch's training batches."""
        return self._train_seconds

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
            if isinstance(metric, OutcomeMetrics):
                with metric.sync_context(should_sync=self._distributed):
                    if stage == "test":
                        self.test_curves = metric.curves()
                    scores, targets = metric.pairs()
                    self.outcome_predictions[stage] = (scores.cpu().numpy(), targets.cpu().numpy())
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
        if isinstance(pl_module, JourneyModule) and pl_module.epoch_started:
            # wall time of the epoch: its training batches, and training plus validation
            row["time/train_s"] = pl_module.train_seconds
            row["time/epoch_s"] = time.perf_counter() - pl_module.epoch_started
        if trainer.optimizers:
            row["train/lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
        row.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")})
        self.epochs = [e for e in self.epochs if e["epoch"] != row["epoch"]] + [row]

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epochs = list(state_dict.get("epochs", []))

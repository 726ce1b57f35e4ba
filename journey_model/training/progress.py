"""Progress as log lines, for runs whose output is not a terminal (a batch job, a pipeline, ``nohup``).

Progress bars redraw one line of a terminal; written to a file or a pipe they are noise, and with ``-q`` there
are none — a long epoch then says nothing for as long as it lasts. :class:`ProgressLog` logs one line every
``interval_s`` seconds of training instead (logger ``journey_model.training.progress``, INFO, which the
`journey` command prints on stderr)::

    train atrank: epoch 2/20, step 150/400 (38%), 1,234 samples/s, epoch ETA 0:03:22, loss 0.1834

and one line at the end of each epoch with its time and validation metric. Only the global-zero process logs.
:func:`wants_progress_log` says when :func:`journey_model.training.train.train` adds it.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)


def wants_progress_log(progress_bars: bool, interval_s: float | None, streams: tuple[Any, ...] | None = None) -> bool:
    """Log progress lines when progress bars are off or stdout / stderr is not a terminal (``interval_s`` < 0 or
    None: never)."""
    if interval_s is None or interval_s < 0:
        return False
    streams = (sys.stdout, sys.stderr) if streams is None else streams
    terminal = all(getattr(stream, "isatty", lambda: False)() for stream in streams)
    return not progress_bars or not terminal


def _duration(seconds: float) -> str:
    return str(timedelta(seconds=int(max(0.0, seconds)))) if math.isfinite(seconds) else "?"


class ProgressLog(Callback):
    """Logs epoch, step / steps, samples/s and the epoch's ETA every ``interval_s`` seconds (0: every step;
    None: no lines). Whatever the interval, an interruption (SIGTERM, Ctrl-C, an error) gets a note saying
    what was interrupted: the model, the stage, the epoch and the step (``BaseException.add_note``; the
    `journey` command prints it)."""

    def __init__(self, name: str, interval_s: float | None = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.interval_s = interval_s
        self.clock = clock
        self._epoch_started = self._last = 0.0
        self._samples = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_started = self._last = self.clock()
        self._samples = 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._samples += int(getattr(batch, "batch_size", 0) or 0)
        now = self.clock()
        if self.interval_s is None or not trainer.is_global_zero or now - self._last < self.interval_s:
            return
        self._last = now
        log.info(self.line(trainer, batch_idx + 1, now))

    def line(self, trainer: pl.Trainer, step: int, now: float) -> str:
        """One progress line at ``step`` (1-based) of the current epoch."""
        elapsed = max(now - self._epoch_started, 1e-9)
        total = trainer.num_training_batches
        epochs = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs >= 0 else "?"
        text = f"train {self.name}: epoch {trainer.current_epoch + 1}/{epochs}, step {step:,}"
        if isinstance(total, int) and total > 0:
            eta = (total - step) * elapsed / step
            text += f"/{total:,} ({step / total:.0%}), {self._samples / elapsed:,.0f} samples/s, epoch ETA {_duration(eta)}"
        else:
            text += f", {self._samples / elapsed:,.0f} samples/s"
        loss = trainer.callback_metrics.get("train/loss_step", trainer.callback_metrics.get("train/loss"))
        if loss is not None:
            text += f", loss {float(loss):.4f}"
        return text

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        stage = trainer.state.stage.value if trainer.state.stage is not None else "training"
        epochs = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs >= 0 else "?"
        note = (f"interrupted while {stage} {self.name} at epoch {trainer.current_epoch + 1}/{epochs}, "
                f"global step {trainer.global_step:,}")
        if note not in getattr(exception, "__notes__", []):
            exception.add_note(note)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.interval_s is None or trainer.sanity_checking or not trainer.is_global_zero or not self._epoch_started:
            return
        if trainer.state.fn != "fit":  # the re-validation of the restored best model is not an epoch
            return
        metrics = ", ".join(f"{key} {float(value):.4f}" for key, value in sorted(trainer.callback_metrics.items())
                            if key.startswith("val/") and key.count("/") == 1)
        log.info(f"train {self.name}: epoch {trainer.current_epoch + 1} done in "
                 f"{_duration(self.clock() - self._epoch_started)}{', ' + metrics if metrics else ''}")


__all__ = ["ProgressLog", "wants_progress_log"]

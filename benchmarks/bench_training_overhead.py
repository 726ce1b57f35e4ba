"""What `journey train` costs beyond the model's own arithmetic, per epoch: Lightning's per-step bookkeeping,
data loading, validation and checkpoints.

``bench_training_throughput.py`` times a bare training step (forward, loss, backward, clipping, optimiser) and
leaves the trainer out. On small data the trainer is most of an epoch: Berka's loan-default epochs are two
batches, and the peers table compares CPU seconds per epoch. This benchmark trains each model with
:func:`journey_model.training.train.train` on a prepared dataset and splits every epoch's CPU time
(``time.process_time``) into

* ``train_batches`` — from each training batch's start hook to its end hook: the step with Lightning's
  per-step work (logging, hooks, the optimiser closure);
* ``between_batches`` — from one batch's end to the next one's start: loading and collating the batch;
* ``validation`` — the validation epoch (hooks ``on_validation_epoch_start`` to ``_end``);
* ``after_validation`` — from there to the training epoch's end: checkpoints (``best``, ``last``, their
  SHA-256) and early stopping;

beside ``bare_step``: the same batches through forward, loss, backward, clipping and Adam in a plain loop.

Each (tree, model) cell runs in a fresh child process; with ``--trees A B`` (folders holding a
``journey_model/``), the cells alternate between the trees ``--repeats`` times, so load drifts hit both.

    .venv/bin/python benchmarks/bench_training_overhead.py --data work/berka_prepared_0 --models bag atrank \\
        --trees /tmp/before . --repeats 3 --out benchmarks/results/training_overhead.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WIDTH = {"hidden_size": 64, "num_heads": 4, "field_dim": 16}  # the peers' width


def child(data: str, model: str, epochs: int, out: str) -> None:
    """One cell, run in a child process whose ``sys.path`` starts at the tree under test."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    import torch
    from lightning.pytorch.callbacks import Callback

    from journey_model.models import build_model
    from journey_model.training.datamodule import JourneyDataModule
    from journey_model.training.losses import compute_losses
    from journey_model.training.train import TrainConfig, train

    torch.set_num_threads(1)

    class Phases(Callback):
        def __init__(self) -> None:
            self.totals = dict.fromkeys(("train_batches", "between_batches", "validation", "after_validation"), 0.0)
            self.mark: dict[str, float] = {}
            self.epochs = 0

        def on_train_epoch_start(self, trainer, module) -> None:  # noqa: ANN001
            self.mark["last"] = time.process_time()
            self.mark.pop("validated", None)

        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:  # noqa: ANN001
            self.mark["batch"] = time.process_time()
            self.totals["between_batches"] += self.mark["batch"] - self.mark["last"]

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
            self.mark["last"] = time.process_time()
            self.totals["train_batches"] += self.mark["last"] - self.mark["batch"]

        def on_validation_epoch_start(self, trainer, module) -> None:  # noqa: ANN001
            self.mark["validation"] = time.process_time()

        def on_validation_epoch_end(self, trainer, module) -> None:  # noqa: ANN001
            self.mark["validated"] = time.process_time()
            if not trainer.sanity_checking:
                self.totals["validation"] += self.mark["validated"] - self.mark["validation"]

        def on_train_epoch_end(self, trainer, module) -> None:  # noqa: ANN001
            if "validated" in self.mark:
                self.totals["after_validation"] += time.process_time() - self.mark["validated"]
            self.epochs += 1

    overrides = WIDTH if model != "bag" else {}
    phases = Phases()
    train(TrainConfig(data_dir=data, model=model, tasks=["outcome"], max_epochs=epochs, patience=10**6,
                      batch_size=64, seed=0, threads=1, progress=False, track=False,
                      output_dir=str(Path(out).with_suffix("")) + "_runs", model_overrides=dict(overrides)),
          callbacks=[phases])
    data_module = JourneyDataModule(data, batch_size=64, seed=0)
    data_module.setup("fit")
    net = build_model(model, data_module.feature_spec, tasks=["outcome"], **overrides).train()
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3)
    batches = list(data_module.train_dataloader())
    started = time.process_time()
    for _ in range(epochs):
        for batch in batches:
            loss = compute_losses(net(batch), batch)["loss"]
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
            optimiser.step()
    bare = (time.process_time() - started) / epochs
    per_epoch = {k: 1000 * v / phases.epochs for k, v in phases.totals.items()}
    Path(out).write_text(json.dumps({"ms_per_epoch": {**{k: round(v, 2) for k, v in per_epoch.items()},
                                                      "bare_step": round(1000 * bare, 2)},
                                     "steps_per_epoch": len(batches), "load": os.getloadavg()[0]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="a folder written by `journey prepare` (labels cut-offs); required")
    parser.add_argument("--models", nargs="+", default=["bag", "atrank"])
    parser.add_argument("--trees", nargs="+", default=[str(REPO)], help="folders holding journey_model/ to compare")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=None)
    parser.add_argument("--child", nargs=4, metavar=("DATA", "MODEL", "EPOCHS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]), args.child[3])
        return
    if not args.data:
        parser.error("--data is required: a folder written by `journey prepare`")
    cells, started = [], time.time()
    scratch = Path(tempfile.mkdtemp(prefix="training_overhead_"))  # each cell's checkpoints and record; removed at the end
    for repeat in range(args.repeats):
        trees = args.trees if repeat % 2 == 0 else list(reversed(args.trees))
        for model in args.models:
            for tree in trees:
                out = scratch / f"{args.trees.index(tree)}_{model}_{repeat}.json"
                env = {**os.environ, "PYTHONPATH": str(Path(tree).resolve()), "MALLOC_MMAP_MAX_": "0",
                       "MALLOC_TRIM_THRESHOLD_": "68719476736"}
                done = subprocess.run([sys.executable, __file__, "--child", str(Path(args.data).resolve()), model,
                                       str(args.epochs), str(out)], env=env, capture_output=True, text=True)
                if done.returncode:
                    shutil.rmtree(scratch, ignore_errors=True)
                    sys.exit(f"{model} @ {tree} failed ({done.returncode}):\n{done.stderr[-3000:]}")
                cell = {"tree": str(Path(tree).resolve()), "model": model, "repeat": repeat, **json.loads(out.read_text())}
                cells.append(cell)
                print(json.dumps(cell), flush=True)
    summary = {}
    for cell in cells:
        key = f"{cell['model']} @ {cell['tree']}"
        for phase, ms in cell["ms_per_epoch"].items():
            summary.setdefault(key, {}).setdefault(phase, []).append(ms)
    table = {key: {phase: round(min(values), 2) for phase, values in phases.items()} for key, phases in summary.items()}
    print(json.dumps(table, indent=1))
    shutil.rmtree(scratch, ignore_errors=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"data": args.data, "epochs": args.epochs, "cpus": os.cpu_count(),
                                              "wall_s": round(time.time() - started), "best_of_repeats_ms": table,
                                              "cells": cells}, indent=1))


if __name__ == "__main__":
    main()

"""pytorch-lifestream peer: a supervised sequence encoder on the exported outcome examples; runs in .venvs/lifestream.

Reads only the files of ``export.py lifestream`` (``DATA/NAME/{train,val,test}.parquet`` and ``export.json``):
Journey's examples (same customers, same split, same encoded inputs: event type, categorical ids, Journey's
transformed numerics, log time gap to the cut-off). The model is ptls's own encoder stack, ``TrxEncoder``
(embeddings of every categorical field, numerics as they are, projected to the hidden width) -> ``RnnSeqEncoder`` (GRU, last step) or
``TransformerSeqEncoder`` (mean of the outputs), then a linear head with a sigmoid on the binary outcome. The
training loop is plain torch (Adam, binary cross-entropy), early stopping and the best model on the validation
loss (Journey's default monitor), ``--patience`` epochs; test ROC-AUC and PR-AUC with scikit-learn.

Cost: per training epoch (the pass over the training examples, validation excluded) wall and CPU seconds
(``time.process_time``) and ``os.getloadavg()``; the run's CPU seconds from ``resource.getrusage``.

Usage::

    .venvs/lifestream/bin/python benchmarks/peers/run_lifestream.py --data EXPORT_DIR --name berka \\
        --encoder rnn --seed 0 --epochs 10 --out result.json
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from ptls.data_load.padded_batch import PaddedBatch
from ptls.data_load.utils import collate_feature_dict
from ptls.nn import RnnSeqEncoder, TransformerSeqEncoder, TrxEncoder
from sklearn.metrics import average_precision_score, roc_auc_score


def rusage_cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def records(frame: pd.DataFrame, label: str, cat: list[str], num: list[str]) -> list[dict]:
    """ptls feature dicts: one per example, sequences as tensors, the label as a scalar target."""
    out = []
    for row in frame.itertuples(index=False):
        row = row._asdict()
        rec = {c: torch.as_tensor(np.array(row[c], dtype=np.int64)) for c in ["event_type", *cat]}
        for c in num:
            rec[c] = torch.as_tensor(np.array(row[c], dtype=np.float32))
        rec["log_gap"] = torch.as_tensor(np.log1p(np.array(row["time_gap"], dtype=np.float32) / 86400.0))
        rec["target"] = torch.tensor(float(row[label]))
        out.append(rec)
    return out


class Model(torch.nn.Module):
    def __init__(self, encoder: str, vocab: dict[str, int], cat: list[str], num: list[str], hidden: int) -> None:
        super().__init__()
        trx = TrxEncoder(embeddings={c: {"in": vocab[c], "out": 16} for c in ["event_type", *cat]},
                         numeric_values={**{c: "identity" for c in num}, "log_gap": "identity"},
                         linear_projection_size=hidden)  # both encoders read width-`hidden` inputs
        if encoder == "rnn":
            self.seq = RnnSeqEncoder(trx_encoder=trx, hidden_size=hidden, type="gru")
        else:
            self.seq = TransformerSeqEncoder(trx_encoder=trx, input_size=None, n_heads=4, dim_hidden=hidden,
                                             n_layers=2, is_reduce_sequence=True)
        self.head = torch.nn.Linear(self.seq.embedding_size, 1)

    def forward(self, batch: PaddedBatch) -> torch.Tensor:
        return self.head(self.seq(batch))[:, 0]


def batches(data: list[dict], size: int, rng: np.random.Generator | None):
    order = rng.permutation(len(data)) if rng is not None else np.arange(len(data))
    for i in range(0, len(data), size):
        chunk = [data[j] for j in order[i:i + size]]
        targets = torch.stack([r["target"] for r in chunk])
        x = collate_feature_dict([{k: v for k, v in r.items() if k != "target"} for r in chunk])
        yield x, targets


def evaluate(model: Model, data: list[dict], size: int) -> tuple[float, np.ndarray, np.ndarray]:
    model.eval()
    losses, scores, labels = [], [], []
    with torch.no_grad():
        for x, y in batches(data, size, None):
            logits = model(x)
            losses.append(float(torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="sum")))
            scores.append(torch.sigmoid(logits).numpy())
            labels.append(y.numpy())
    return sum(losses) / max(len(data), 1), np.concatenate(scores), np.concatenate(labels)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--label", default=None, help="label column (default: the export's first y_ column)")
    parser.add_argument("--encoder", choices=["rnn", "transformer"], default="rnn")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    began_wall, began_cpu = time.perf_counter(), rusage_cpu()

    folder = args.data / args.name
    export = json.loads((folder / "export.json").read_text())
    label = args.label or export["labels"][0]
    cat = [c for c in export["sequences"] if c.startswith("cat_")]
    num = [c for c in export["sequences"] if c.startswith("num_")]
    data = {}
    for split in ("train", "val", "test"):
        frame = pd.read_parquet(folder / f"{split}.parquet")
        data[split] = records(frame[frame[label].notna()], label, cat, num)
    model = Model(args.encoder, export["vocabulary_sizes"], cat, num, args.hidden)
    optimiser = torch.optim.Adam(model.parameters(), lr=args.lr)
    epochs, best, best_state, stale = [], math.inf, copy.deepcopy(model.state_dict()), 0
    for _ in range(args.epochs):
        model.train()
        wall, cpu = time.perf_counter(), time.process_time()
        for x, y in batches(data["train"], args.batch_size, rng):
            optimiser.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
            loss.backward()
            optimiser.step()
        record = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu,
                  "loadavg": list(os.getloadavg())}
        val_loss, _, _ = evaluate(model, data["val"], 2 * args.batch_size)
        record["val_loss"] = val_loss
        epochs.append(record)
        if val_loss < best:
            best, best_state, stale = val_loss, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= args.patience:
                break
    model.load_state_dict(best_state)
    _, scores, labels = evaluate(model, data["test"], 2 * args.batch_size)
    both = len(set(labels.tolist())) == 2
    result = {
        "library": "pytorch-lifestream", "model": f"ptls-{args.encoder}", "seed": args.seed, "label": label,
        "max_epochs": args.epochs, "patience": args.patience, "batch_size": args.batch_size, "hidden": args.hidden,
        "threads": args.threads, "epochs": len(epochs), "epoch_times": epochs,
        "cpu_s_per_epoch": sum(e["cpu_s"] for e in epochs) / max(len(epochs), 1),
        "wall_s_per_epoch": sum(e["wall_s"] for e in epochs) / max(len(epochs), 1),
        "test": {"auc": float(roc_auc_score(labels, scores)) if both else float("nan"),
                 "pr_auc": float(average_precision_score(labels, scores)) if both else float("nan"),
                 "n": int(len(labels)), "positives": int(labels.sum())},
        "best_val_loss": best, "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "run_wall_s": time.perf_counter() - began_wall, "run_cpu_s": rusage_cpu() - began_cpu,
        "loadavg_end": list(os.getloadavg()), "torch": torch.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("model", "seed", "epochs", "cpu_s_per_epoch", "test")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

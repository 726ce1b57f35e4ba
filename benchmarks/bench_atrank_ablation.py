"""ATRank's switchable additions, compared rather than assumed: positional encodings, causal mask, depth.

Trains each variant of ATRank on the same prepared synthetic journeys with the same budget and prints the
outcome AUCs. The reference model (no positional encoding, one block, no causal mask) sees order only
through log2 time buckets, so two events in the same bucket (a complaint and a fee 10 days apart, 40 days
before the cut-off) are unordered to it; positional encodings restore that order.

    .venv/bin/python benchmarks/bench_atrank_ablation.py --customers 6000 --epochs 6 \
        --out benchmarks/results/atrank_ablation.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from journey_model.data.prepare import MANIFEST_FILE, PrepareConfig, prepare
from journey_model.data.preprocessing import PreprocessingConfig
from journey_model.data.synth import generate
from journey_model.training.train import TrainConfig, train

BASE = {"hidden_size": 64, "num_heads": 4, "field_dim": 16}
VARIANTS = {
    "reference (no PE, 1 block)": {},
    "sinusoidal PE": {"positional_encoding": "sinusoidal"},
    "learned PE": {"positional_encoding": "learned"},
    "learned PE + causal": {"positional_encoding": "learned", "causal": True},
    "learned PE, 2 blocks": {"positional_encoding": "learned", "num_blocks": 2},
}
KEYS = ["test/auc/churn", "test/auc/default", "test/auc/uptake"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=6000)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(2)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="journey-ablation-"))
    if not (work / "synth" / "synth_report.json").exists():
        generate(work / "synth", args.customers, seed=0, progress=False)
    if not (work / "ds" / MANIFEST_FILE).exists():
        prepare(PrepareConfig(events_dir=str(work / "synth"), out_dir=str(work / "ds"), cutoff_strategy="labels",
                              label_horizon_days=30, preprocessing=PreprocessingConfig(max_len=100)), progress=False)
    results = []
    for name, overrides in VARIANTS.items():
        started = time.perf_counter()
        result = train(TrainConfig(data_dir=str(work / "ds"), model="atrank", tasks=["outcome"],
                                   max_epochs=args.epochs, patience=3, progress=False,
                                   output_dir=str(work / "runs"), model_overrides={**BASE, **overrides}))
        row = {"variant": name, **{k.removeprefix("test/"): round(result.test_metrics[k], 4) for k in KEYS},
               "epochs": result.epochs, "seconds": round(time.perf_counter() - started)}
        results.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n{'variant':<28} {'auc/churn':>9} {'auc/default':>11} {'auc/uptake':>10} {'s':>5}")
    for row in results:
        print(f"{row['variant']:<28} {row['auc/churn']:>9.3f} {row['auc/default']:>11.3f} "
              f"{row['auc/uptake']:>10.3f} {row['seconds']:>5}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

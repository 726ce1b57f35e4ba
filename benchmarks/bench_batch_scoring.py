"""Benchmark `journey score` (local engine): customers/s and peak RSS at 10k, 100k (and 1M) customers.

    .venv/bin/python benchmarks/bench_batch_scoring.py                       # 10k and 100k customers
    .venv/bin/python benchmarks/bench_batch_scoring.py --sizes 10000,100000,1000000 --out benchmarks/results/batch_scoring.json

Input: the built-in synthetic bank (about 145 events per customer; ``journey synth``), generated once per
size under ``--workdir``. Model: ATRank at its default (reference) size, trained for a few batches on 2,000
synthetic customers — scoring speed does not depend on how well a model was trained — or ``--model``.
Each size is scored in a fresh process (so its peak RSS is its own) with top reasons (the attention
forward pass) and, with ``--no-reasons-too``, also without. Peak RSS should stay flat as the input grows:
the scoring pass holds one spill partition (2M events) at a time.

Sizes whose scoring would take longer than ``--max-minutes`` are not run but extrapolated from the
largest size measured (customers/s and peak RSS carried over), and marked so in the results.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

BENCH_MODEL_STEPS = 20  # training batches of the benchmark model


def build_model(workdir: Path) -> Path:
    """ATRank (default size) trained for a few batches on 2,000 synthetic customers; returns the bundle."""
    bundle = workdir / "model" / "bundle"
    if (bundle / "bundle.json").exists():
        return bundle
    from journey_model.data.prepare import PrepareConfig, prepare
    from journey_model.data.preprocessing import Preprocessor
    from journey_model.data.synth import generate
    from journey_model.inference.scorer import Scorer
    from journey_model.training.train import TrainConfig, train

    root = workdir / "model"
    generate(root / "synth", customers=2000, seed=1, progress=False)
    prepare(PrepareConfig(events_dir=str(root / "synth"), out_dir=str(root / "prepared"), cutoff_strategy="labels",
                          label_horizon_days=30), progress=False)
    result = train(TrainConfig(data_dir=str(root / "prepared"), model="atrank", max_epochs=1,
                               limit_train_batches=BENCH_MODEL_STEPS, progress=False, output_dir=str(root / "runs")))
    Scorer(result.module.model, Preprocessor.load(root / "prepared")).save(bundle)
    return bundle


def synth_events(workdir: Path, customers: int) -> Path:
    folder = workdir / f"synth_{customers}"
    if not (folder / "dataset.yaml").exists():
        from journey_model.data.synth import generate

        generate(folder, customers=customers, seed=7, progress=False)
    return folder


def run_one(model: str, events: str, out: str, top_reasons: int, torch_threads: int) -> None:
    """Runs in the child process: score once, print the report as JSON."""
    from dataclasses import asdict

    from journey_model.inference.batch_scoring import BatchScoringConfig, score_batch

    report = score_batch(BatchScoringConfig(model=model, events_dir=events, out_dir=out, cutoff="2025-01-01",
                                            top_reasons=top_reasons, torch_threads=torch_threads,
                                            progress=False), overwrite=True)
    print(json.dumps(asdict(report)))


def measure(model: Path, events: Path, out: Path, top_reasons: int, torch_threads: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)  # a finished job in the folder would be kept, not redone
    started = time.perf_counter()
    child = subprocess.run([sys.executable, __file__, "--child", str(model), str(events), str(out), str(top_reasons),
                            str(torch_threads)], check=True, capture_output=True, text=True)
    report = json.loads(child.stdout.strip().splitlines()[-1])
    report["process_seconds"] = time.perf_counter() - started  # with interpreter start and imports
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="customers per run, comma-separated")
    parser.add_argument("--workdir", default="work/bench_batch_scoring", help="synthetic data and outputs")
    parser.add_argument("--model", help="a model bundle or MLflow URI (default: build the benchmark model)")
    parser.add_argument("--no-reasons-too", action="store_true", help="also score each size without reasons")
    parser.add_argument("--max-minutes", type=float, default=10.0,
                        help="extrapolate sizes whose estimated scoring time is longer (default: %(default)s)")
    parser.add_argument("--torch-threads", type=int, default=1, help="intra-op threads; 0 = all cores (default: 1)")
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_one(args.child[0], args.child[1], args.child[2], int(args.child[3]), int(args.child[4]))
        return

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    model = Path(args.model) if args.model else build_model(workdir)
    results = []
    variants = [3, 0] if args.no_reasons_too else [3]
    for size in sorted(int(float(s)) for s in args.sizes.split(",")):
        for top_reasons in variants:
            measured = [r for r in results if r["top_reasons"] == top_reasons and not r["extrapolated"]]
            if measured:
                rate = measured[-1]["customers_per_second"]
                if size / rate / 60 > args.max_minutes:
                    last = measured[-1]
                    results.append({"customers": size, "top_reasons": top_reasons, "extrapolated": True,
                                    "customers_per_second": rate, "seconds": size / rate,
                                    "peak_rss_mb": last["peak_rss_mb"],
                                    "note": f"estimated from the {last['customers']:,}-customer run"})
                    print(f"{size:>9,} customers, reasons={top_reasons}: estimated {size / rate / 60:.0f} min "
                          f"at {rate:,.0f} customers/s (not run)", flush=True)
                    continue
            events = synth_events(workdir, size)
            report = measure(model, events, workdir / f"scores_{size}_{top_reasons}", top_reasons, args.torch_threads)
            row = {"customers": report["customers"], "top_reasons": top_reasons, "extrapolated": False,
                   "events": report["events"], "seconds": report["seconds"],
                   "customers_per_second": report["customers_per_second"], "peak_rss_mb": report["peak_rss_mb"],
                   "partitions": report["partitions"], "process_seconds": report["process_seconds"],
                   "torch_threads": args.torch_threads or "default"}
            results.append(row)
            print(f"{row['customers']:>9,} customers ({row['events']:,} events), reasons={top_reasons}: "
                  f"{row['seconds']:.1f} s, {row['customers_per_second']:,.0f} customers/s, "
                  f"peak RSS {row['peak_rss_mb']:,.0f} MiB", flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"model": str(model), "results": results}, indent=1))


if __name__ == "__main__":
    main()

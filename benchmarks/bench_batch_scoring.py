"""Benchmark `journey score` (local engine): customers/s and peak RSS at 10k, 100k (and 1M) customers.

    .venv/bin/python benchmarks/bench_batch_scoring.py                       # 10k and 100k customers
    .venv/bin/python benchmarks/bench_batch_scoring.py --sizes 10000,100000,1000000 --out benchmarks/results/batch_scoring.json
    .venv/bin/python benchmarks/bench_batch_scoring.py --sizes 100000 --workers 1,2 --no-reasons-too --raw-forward
    .venv/bin/python benchmarks/bench_batch_scoring.py --sizes 1000000 --workers 2 --engines local,spark \
        --max-minutes 90 --raw-forward --out benchmarks/results/batch_scoring_1m.json

Input: the built-in synthetic bank (about 145 events per customer; ``journey synth``), generated once per
size under ``--workdir``. Model: ATRank at its default (reference) size, trained for a few batches on 2,000
synthetic customers — scoring speed does not depend on how well a model was trained — or ``--model``.
Each size is scored in a fresh process (so its peak RSS is its own) with top reasons (the attention
forward pass) and, with ``--no-reasons-too``, also without. Peak RSS should stay flat as the input grows:
the scoring pass holds one spill partition (2M events) at a time (one per worker with ``--workers``).
Peak RSS is measured twice: the job's own report (its process plus each worker's own peak) and, sampled here
every 0.2 s with psutil, the largest sum of the RSS of the scoring process and all its children at one time.
``--raw-forward`` also times :meth:`Scorer.forward` alone on already-encoded customers at the scorer's batch
size (one process, ``--torch-threads`` threads) for the ratio scoring / raw forward; with N workers the
ratio is taken against N times the one-process figure (N cores each running the forward alone) and against
N processes timed side by side over the same window (``scoring_to_raw_forward_side_by_side``: what the cores
give together when all are busy, which on shared vCPUs is less than N times one).

Sizes whose scoring would take longer than ``--max-minutes`` are not run but extrapolated from the
largest size measured (customers/s and peak RSS carried over), and marked so in the results.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

BENCH_MODEL_STEPS = 20  # training batches of the benchmark model


ARCHITECTURES = {
    "default": {},  # today's ATRank default
    # the one-block ATRank of the reference's sizes that was the default before the time-aware blocks
    # (and that scored the Spark 1M run in benchmarks/results/batch_scoring_1m_spark.json)
    # (its switches are ATRankConfig.SAVED_BEFORE, added in build_model; these are its sizes)
    "one-block": {"field_dim": 64, "hidden_size": 128, "num_heads": 8, "num_blocks": 1, "dropout": 0.0,
                  "positional_encoding": "none"},
}


def build_model(workdir: Path, architecture: str = "default") -> Path:
    """ATRank (``architecture``) trained for a few batches on 2,000 synthetic customers; returns the bundle."""
    root = workdir / ("model" if architecture == "default" else f"model-{architecture}")
    bundle = root / "bundle"
    if (bundle / "bundle.json").exists():
        return bundle
    from journey_model.data.prepare import PrepareConfig, prepare
    from journey_model.data.preprocessing import Preprocessor
    from journey_model.data.synth import generate
    from journey_model.inference.scorer import Scorer
    from journey_model.models.atrank import ATRankConfig
    from journey_model.training.train import TrainConfig, train

    generate(root / "synth", customers=2000, seed=1, progress=False)
    prepare(PrepareConfig(events_dir=str(root / "synth"), out_dir=str(root / "prepared"), cutoff_strategy="labels",
                          label_horizon_days=30), progress=False)
    result = train(TrainConfig(data_dir=str(root / "prepared"), model="atrank", max_epochs=1,
                               model_overrides=({**ATRankConfig.SAVED_BEFORE, **ARCHITECTURES[architecture]}
                                                if architecture != "default" else {}),
                               limit_train_batches=BENCH_MODEL_STEPS, progress=False, output_dir=str(root / "runs")))
    Scorer(result.module.model, Preprocessor.load(root / "prepared")).save(bundle)
    return bundle


def synth_events(workdir: Path, customers: int) -> Path:
    folder = workdir / f"synth_{customers}"
    if not (folder / "dataset.yaml").exists():
        from journey_model.data.synth import generate

        generate(folder, customers=customers, seed=7, progress=False)
    return folder


def run_one(model: str, events: str, out: str, top_reasons: int, torch_threads: int, workers: int,
            engine: str = "local", explain: str = "flagged", reason_method: str = "auto") -> None:
    """Runs in the child process: score once, print the report as JSON."""
    from dataclasses import asdict

    from journey_model.inference.batch_scoring import BatchScoringConfig, score_batch

    report = score_batch(BatchScoringConfig(model=model, events_dir=events, out_dir=out, cutoff="2025-01-01",
                                            top_reasons=top_reasons, torch_threads=torch_threads,
                                            workers=workers, engine=engine, spark_master="local[2]",
                                            explain=explain, reason_method=reason_method, progress=False),
                           overwrite=True)
    print(json.dumps(asdict(report)))


def tree_rss_mb(process: psutil.Process) -> float:
    """RSS of a process and all its children now [MiB]."""
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.Error:  # ended meanwhile
            pass
    return total / 2**20


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def measure(model: Path, events: Path, out: Path, top_reasons: int, torch_threads: int, workers: int,
            engine: str = "local", explain: str = "flagged", reason_method: str = "auto") -> dict:
    shutil.rmtree(out, ignore_errors=True)  # a finished job in the folder would be kept, not redone
    load_before = os.getloadavg()
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, __file__, "--child", str(model), str(events), str(out),
                              str(top_reasons), str(torch_threads), str(workers), engine, explain, reason_method],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process, peak_tree = psutil.Process(child.pid), 0.0
    while child.poll() is None:
        try:
            peak_tree = max(peak_tree, tree_rss_mb(process))
        except psutil.Error:
            pass
        time.sleep(0.2)
    stdout, stderr = child.communicate()
    if child.returncode:
        raise SystemExit(f"scoring failed ({child.returncode}):\n{stderr[-3000:]}")
    report = json.loads(stdout.strip().splitlines()[-1])
    report["process_seconds"] = time.perf_counter() - started  # with interpreter start and imports
    report["peak_rss_sum_mb"] = peak_tree
    report["output_mb"] = folder_mb(out)
    report["input_mb"] = folder_mb(events / "events")
    report["load_average_before"] = load_before
    return report


def raw_forward(model: Path, events: Path, torch_threads: int, customers: int = 2048, seconds: float = 10.0,
                start_at: float | None = None) -> dict:
    """Customers/s of Scorer.forward alone on encoded customers of ``events`` at the scorer's batch size
    (timed from ``start_at``, a ``time.time()``, when given: processes started together time the same window)."""
    import pandas as pd
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    import torch

    from journey_model.data.sequences import encode_examples
    from journey_model.inference.scorer import Scorer

    if torch_threads:
        torch.set_num_threads(torch_threads)
    scorer = Scorer.load(model)
    table = pq.read_table(sorted((events / "events").glob("*.parquet"))[0])
    ids = pc.unique(table.column("customer_id")).slice(0, customers)
    table = table.filter(pc.is_in(table.column("customer_id"), ids))
    frame = table.to_pandas()
    frame = frame[frame["ts"] < "2025-01-01"].assign(cutoff=pd.Timestamp("2025-01-01", tz="UTC"))
    events_table, examples = scorer.examples_from_events(frame)
    rows = encode_examples(scorer.preprocessor, events_table, examples).to_pylist()
    batch = scorer.batch_size
    batches = [rows[i:i + batch] for i in range(0, len(rows) - batch + 1, batch)]
    scorer.forward(batches[0])
    if start_at is not None:
        time.sleep(max(0.0, start_at - time.time()))
    passes, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or passes < 3:
        scorer.forward(batches[passes % len(batches)])
        passes += 1
    rate = batch * passes / (time.perf_counter() - started)
    mean_events = sum(r["length"] for r in rows) / len(rows)
    return {"batch": batch, "customers_per_second": rate, "torch_threads": torch_threads or "default",
            "mean_input_events": mean_events}


def raw_forward_side_by_side(model: Path, events: Path, torch_threads: int, processes: int) -> dict:
    """Summed customers/s of ``processes`` raw forwards timed over the same window: what the cores give together
    (two vCPUs rarely give twice one), the denominator for a job of that many workers."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    start_at = time.time() + 30.0  # after every process has loaded the model and encoded its customers
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        runs = list(pool.map(raw_forward, [model] * processes, [events] * processes, [torch_threads] * processes,
                             [2048] * processes, [10.0] * processes, [start_at] * processes))
    return {**runs[0], "processes": processes, "customers_per_second": sum(r["customers_per_second"] for r in runs),
            "per_process": [r["customers_per_second"] for r in runs]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="customers per run, comma-separated")
    parser.add_argument("--workdir", default="work/bench_batch_scoring", help="synthetic data and outputs")
    parser.add_argument("--model", help="a model bundle or MLflow URI (default: build the benchmark model)")
    parser.add_argument("--architecture", choices=sorted(ARCHITECTURES), default="default",
                        help="the benchmark model's ATRank architecture when --model is not given (default: today's "
                             "default; one-block: the earlier one-block ATRank of the Spark 1M run)")
    parser.add_argument("--no-reasons-too", action="store_true", help="also score each size without reasons")
    parser.add_argument("--no-reasons-only", action="store_true", help="score each size without reasons only")
    parser.add_argument("--max-minutes", type=float, default=10.0,
                        help="extrapolate sizes whose estimated scoring time is longer (default: %(default)s)")
    parser.add_argument("--torch-threads", type=int, default=1, help="intra-op threads; 0 = all cores (default: 1)")
    parser.add_argument("--workers", default="1", help="worker processes of the local engine, comma-separated "
                        "to compare (e.g. 1,2; default: %(default)s)")
    parser.add_argument("--engines", default="local", help="local, spark (Spark local[2], one task per core; "
                        "--workers is ignored there) or both, comma-separated (default: %(default)s)")
    parser.add_argument("--raw-forward", action="store_true",
                        help="also time Scorer.forward alone at the scorer's batch size (the ratio's denominator)")
    parser.add_argument("--explain", default="flagged", choices=["flagged", "all"],
                        help="who gets reasons in the runs with reasons (default: %(default)s, as journey score)")
    parser.add_argument("--reason-methods", default="auto", help="attribution methods of the runs with reasons, "
                        "comma-separated to compare (default: %(default)s = the model's own)")
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--child", nargs=9, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_one(args.child[0], args.child[1], args.child[2], int(args.child[3]), int(args.child[4]),
                int(args.child[5]), args.child[6], args.child[7], args.child[8])
        return

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    model = Path(args.model) if args.model else build_model(workdir, args.architecture)
    results = []
    variants = [0] if args.no_reasons_only else [3, 0] if args.no_reasons_too else [3]
    worker_counts = [int(w) for w in args.workers.split(",")]
    runs = [(engine, workers) for engine in args.engines.split(",")
            for workers in (worker_counts if engine == "local" else [2])]  # Spark local[2]: two tasks at a time
    methods = args.reason_methods.split(",")
    for size in sorted(int(float(s)) for s in args.sizes.split(",")):
        for top_reasons, method in [(t, m) for t in variants for m in (methods if t else ["-"])]:
            for engine, workers in runs:
                measured = [r for r in results if r["top_reasons"] == top_reasons and r["workers"] == workers
                            and r["engine"] == engine and r.get("reason_method") == method
                            and not r["extrapolated"]]
                if measured:
                    rate = measured[-1]["customers_per_second"]
                    if size / rate / 60 > args.max_minutes:
                        last = measured[-1]
                        results.append({"customers": size, "top_reasons": top_reasons, "workers": workers,
                                        "engine": engine, "reason_method": method, "extrapolated": True,
                                        "customers_per_second": rate,
                                        "seconds": size / rate, "peak_rss_mb": last["peak_rss_mb"],
                                        "note": f"estimated from the {last['customers']:,}-customer run"})
                        print(f"{size:>9,} customers, {engine}, reasons={top_reasons}, workers={workers}: estimated "
                              f"{size / rate / 60:.0f} min at {rate:,.0f} customers/s (not run)", flush=True)
                        continue
                events = synth_events(workdir, size)
                report = measure(model, events, workdir / f"scores_{size}_{top_reasons}_{engine}_{workers}",
                                 top_reasons, args.torch_threads, workers, engine, args.explain,
                                 "auto" if method == "-" else method)
                row = {"customers": report["customers"], "top_reasons": top_reasons, "engine": engine,
                       "workers": workers, "extrapolated": False, "events": report["events"],
                       "reason_method": method, "reasons_by": report.get("reason_method"),
                       "explain": args.explain if top_reasons else None,
                       "seconds": report["seconds"], "customers_per_second": report["customers_per_second"],
                       "peak_rss_mb": report["peak_rss_mb"], "peak_rss_sum_mb": report["peak_rss_sum_mb"],
                       "partitions": report["partitions"], "partitioning": report.get("partitioning", "spill"),
                       "process_seconds": report["process_seconds"],
                       "input_mb": report["input_mb"], "output_mb": report["output_mb"],
                       "torch_threads": args.torch_threads or "default",
                       "load_average_before": report["load_average_before"]}
                results.append(row)
                print(f"{row['customers']:>9,} customers ({row['events']:,} events), {engine}, reasons={top_reasons} "
                      f"({row['reasons_by']}, explain {row['explain']}), "
                      f"workers={workers}, {row['partitions']} partitions ({row['partitioning']}): {row['seconds']:.1f} s, {row['customers_per_second']:,.0f} customers/s, "
                      f"peak RSS {row['peak_rss_mb']:,.0f} MiB (report), {row['peak_rss_sum_mb']:,.0f} MiB "
                      f"(sum over processes, sampled), output {row['output_mb']:,.0f} MiB; load before "
                      f"{row['load_average_before']}", flush=True)
    raw = None
    if args.raw_forward:
        events = synth_events(workdir, max(int(float(s)) for s in args.sizes.split(",")))
        raw = raw_forward(model, events, args.torch_threads)
        print(f"raw forward at batch {raw['batch']}: {raw['customers_per_second']:,.0f} customers/s "
              f"({raw['mean_input_events']:.0f} input events per customer)", flush=True)
        together = {}
        for n in sorted({r["workers"] for r in results if r["workers"] > 1}):
            together[n] = raw_forward_side_by_side(model, events, args.torch_threads, n)
            print(f"raw forward, {n} processes side by side: {together[n]['customers_per_second']:,.0f} customers/s "
                  f"({', '.join(f'{v:,.0f}' for v in together[n]['per_process'])})", flush=True)
        raw["side_by_side"] = {str(n): r for n, r in together.items()}
        for row in results:
            row["scoring_to_raw_forward"] = row["customers_per_second"] / (raw["customers_per_second"] * row["workers"])
            if row["workers"] in together:  # the same number of processes forwarding at once: the cores' real total
                row["scoring_to_raw_forward_side_by_side"] = (row["customers_per_second"]
                                                              / together[row["workers"]]["customers_per_second"])
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"model": str(model), "results": results, "raw_forward": raw,
                                              "cores": os.cpu_count()}, indent=1))


if __name__ == "__main__":
    main()

"""Benchmark `journey prepare`: events/s and peak RSS at 1M, 10M and 30M synthetic events.

Each size runs in a fresh process so its peak RSS is its own. The event log is random canonical events
(100 events per customer on average, spread over a year and over 8 Parquet parts per 10M events) — the
cost of `prepare` depends on the number of events and examples, not on what the events mean.

    .venv/bin/python benchmarks/bench_prepare.py                 # 1M and 10M
    .venv/bin/python benchmarks/bench_prepare.py --sizes 1e6,1e7,3e7 --out benchmarks/results/prepare.json

Peak RSS should stay flat as the input grows: the build pass holds one spill partition
(``--events-per-partition``) at a time, never the whole input.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from journey_model.data.schema import DatasetConfig, conform_table

EVENT_TYPES = np.array(["login", "card_payment", "transfer_out", "transfer_in", "fee", "product_view", "complaint"])
PROBS = np.array([0.35, 0.3, 0.1, 0.08, 0.05, 0.1, 0.02])


def write_random_events(folder: Path, n_events: int, seed: int = 0, part_events: int = 1_250_000) -> None:
    dataset = DatasetConfig(name="bench")
    (folder / "events").mkdir(parents=True, exist_ok=True)
    dataset.save(folder / "dataset.yaml")
    n_customers = max(1, n_events // 100)
    rng = np.random.default_rng(seed)
    start = np.datetime64("2024-01-01", "us").astype(np.int64)
    for part, offset in enumerate(range(0, n_events, part_events)):
        n = min(part_events, n_events - offset)
        table = pa.table({
            "customer_id": pc.cast(pa.array(rng.integers(0, n_customers, n)), pa.string()),
            "ts": pa.array(start + rng.integers(0, 365 * 86_400 * 10**6, n), pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            "event_type": pa.array(rng.choice(EVENT_TYPES, n, p=PROBS)),
            "item": pc.cast(pa.array(rng.zipf(1.5, n) % 5000), pa.string()),
            "channel": pa.array(rng.choice(np.array(["app", "web", "branch"]), n)),
            "amount": pa.array(rng.lognormal(3, 1.5, n)),
        })
        pq.write_table(conform_table(table, dataset), folder / "events" / f"part-{part:05d}.parquet")


def run_one(events_dir: Path, out_dir: Path, events_per_partition: int) -> dict:
    """Runs in the child process: prepare once, report speed and this process's peak RSS."""
    from journey_model.data.prepare import PrepareConfig, prepare
    from journey_model.data.preprocessing import PreprocessingConfig

    config = PrepareConfig(
        events_dir=str(events_dir), out_dir=str(out_dir), cutoff_strategy="dates",
        cutoff_dates=["2024-07-01", "2024-09-01", "2024-11-01", "2024-12-01"],
        horizon_targets={"complains": ["complaint", 30]}, events_per_partition=events_per_partition,
        preprocessing=PreprocessingConfig(max_len=100, keep_event_ids=False),
    )
    report = prepare(config, overwrite=True, progress=False)
    return {
        "events": report.events,
        "examples": sum(report.examples.values()),
        "seconds": round(report.seconds, 2),
        "events_per_second": round(report.events_per_second),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "partitions": report.partitions,
        "output_mb": round(sum(f.stat().st_size for f in out_dir.rglob("*.parquet")) / 2**20),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1e6,1e7", help="comma-separated event counts (default: %(default)s)")
    parser.add_argument("--events-per-partition", type=int, default=2_000_000)
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    parser.add_argument("--child", nargs=2, metavar=("EVENTS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(Path(args.child[0]), Path(args.child[1]), args.events_per_partition)))
        return

    scratch = Path(args.workdir or tempfile.mkdtemp(prefix="journey-bench-"))
    results = []
    for size in [int(float(s)) for s in args.sizes.split(",")]:
        events_dir, out_dir = scratch / f"events-{size}", scratch / f"prepared-{size}"
        generated = time.perf_counter()
        if not (events_dir / "dataset.yaml").exists():
            write_random_events(events_dir, size)
        generated = time.perf_counter() - generated
        child = subprocess.run(
            [sys.executable, __file__, "--events-per-partition", str(args.events_per_partition),
             "--child", str(events_dir), str(out_dir)],
            check=True, capture_output=True, text=True,
        )
        result = json.loads(child.stdout.strip().splitlines()[-1]) | {"generate_seconds": round(generated, 1)}
        results.append(result)
        print(f"{size:>12,} events: {result['seconds']:>7.1f} s  {result['events_per_second']:>10,} events/s  "
              f"peak RSS {result['peak_rss_mb']:>6,} MB  examples {result['examples']:,}  "
              f"({result['partitions']} partitions, output {result['output_mb']} MB)", flush=True)
        shutil.rmtree(out_dir, ignore_errors=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1))
    if not args.workdir:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Benchmark of ``journey synth`` (journey_model.data.synth.generate): throughput, peak memory and disk size.

Each size runs in a fresh Python process so its peak RSS (``resource.getrusage``) is its own; the last size's
rate is extrapolated to 1M customers (memory is bounded by one part of ``--chunk`` customers, so the peak RSS
should stay flat as the customer count grows).

    .venv/bin/python benchmarks/bench_synth.py                      # 10k and 100k customers
    .venv/bin/python benchmarks/bench_synth.py --sizes 1000000      # the real thing (a few minutes)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run_one(customers: int, out: Path, chunk: int, seed: int) -> dict:
    """Generate ``customers`` into ``out`` in this process and measure it."""
    from journey_model.data import synth

    rss_before = _peak_rss_mib()
    began = time.perf_counter()
    report = synth.generate(out, customers, seed=seed, chunk_customers=chunk, progress=False)
    seconds = time.perf_counter() - began
    disk = sum(path.stat().st_size for path in out.rglob("*") if path.is_file())
    return {
        "customers": customers,
        "events": report.events,
        "parts": report.parts,
        "seconds": seconds,
        "customers_per_s": customers / seconds,
        "events_per_s": report.events / seconds,
        "peak_rss_mib": _peak_rss_mib(),
        "rss_after_imports_mib": rss_before,
        "disk_mib": disk / 2**20,
        "label_rates": report.label_rates,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000], help="customer counts")
    parser.add_argument("--chunk", type=int, default=20_000, help="customers per events part")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="folder for the outputs (default: a temp dir)")
    parser.add_argument("--single", type=int, default=None, help=argparse.SUPPRESS)  # child process mode
    args = parser.parse_args(argv)

    if args.single is not None:
        print(json.dumps(run_one(args.single, args.out, args.chunk, args.seed)))
        return

    with tempfile.TemporaryDirectory(prefix="bench_synth_") as scratch:
        root = args.out or Path(scratch)
        results = []
        for size in args.sizes:
            command = [
                sys.executable,
                __file__,
                "--single",
                str(size),
                "--out",
                str(root / f"synth_{size}"),
                "--chunk",
                str(args.chunk),
                "--seed",
                str(args.seed),
            ]
            finished = subprocess.run(command, capture_output=True, text=True)
            if finished.returncode != 0:
                sys.exit(f"bench_synth: {size:,} customers failed:\n{finished.stderr}")
            results.append(json.loads(finished.stdout.strip().splitlines()[-1]))

    header = f"{'customers':>10} {'events':>12} {'seconds':>8} {'cust/s':>9} {'events/s':>11} {'peak RSS':>10} {'disk':>9}"
    print(header)
    for r in results:
        print(
            f"{r['customers']:>10,} {r['events']:>12,} {r['seconds']:>8.1f} {r['customers_per_s']:>9,.0f} "
            f"{r['events_per_s']:>11,.0f} {r['peak_rss_mib']:>7.0f} MiB {r['disk_mib']:>5.0f} MiB"
        )
    last = results[-1]
    target = 1_000_000
    scale = target / last["customers"]
    print(
        f"extrapolated to {target:,} customers: ~{target / last['customers_per_s'] / 60:.1f} min, "
        f"~{last['events'] * scale / 1e6:.0f}M events, ~{last['disk_mib'] * scale / 1024:.1f} GiB on disk, "
        f"peak RSS ~{last['peak_rss_mib']:.0f} MiB (bounded by one part of {args.chunk:,} customers)"
    )
    print(f"RSS after imports, before generating: {last['rss_after_imports_mib']:.0f} MiB")
    print("label rates:", {k: round(v, 3) for k, v in last["label_rates"].items()})


if __name__ == "__main__":
    main()

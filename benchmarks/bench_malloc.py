"""Does glibc's malloc tuning speed Journey up? The same training and batch scoring, with and without it.

``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736`` keep large freed buffers in the process instead of
returning them to the OS (../shared/STACK_NOTES.md measured a 7x faster matrix product with them). Each run is a
fresh process; the Makefile exports the settings, so this script starts its children with a clean environment
for the "off" runs.

    .venv/bin/python benchmarks/bench_malloc.py --data work/data/prepared --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

TUNED = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "68719476736"}


def timed(command: list[str], tuned: bool) -> float:
    env = {k: v for k, v in os.environ.items() if k not in TUNED}
    if tuned:
        env.update(TUNED)
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="work/data/prepared", help="a prepared dataset (from `make demo`)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    journey = [sys.executable, "-m", "pipelines.cli", "-q"]
    scratch = Path("work/bench_malloc")
    commands = {
        "train atrank, 3 epochs": journey + ["train", "--data", args.data, "--model", "atrank", "--task", "outcome",
                                             "--max-epochs", "3", "--no-track", "--threads", "1",
                                             "--output-dir", str(scratch / "runs"), "--set", "hidden_size=64",
                                             "--set", "num_heads=4", "--set", "field_dim=16"],
    }
    results = []
    for name, command in commands.items():
        for tuned in (False, True):
            seconds = [timed(command, tuned) for _ in range(args.repeats)]
            row = {"job": name, "malloc_tuned": tuned, "seconds": [round(s, 1) for s in seconds],
                   "best": round(min(seconds), 1)}
            results.append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

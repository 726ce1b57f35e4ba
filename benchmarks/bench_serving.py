"""Benchmark the online API: latency p50/p99 and throughput at 1, 8 and 64 concurrent clients for customers
of 50 and 500 events, and served throughput against raw forward throughput at the same batch size.

    .venv/bin/python benchmarks/bench_serving.py --out benchmarks/results/serving.json

1. Model: ATRank at its default (reference) size trained for a few batches on 2,000 synthetic customers
   (speed does not depend on accuracy; ``benchmarks/bench_batch_scoring.py`` builds the same), or ``--model``.
2. ``journey serve`` on 127.0.0.1 (a free port), stopped by its PID at the end.
3. For each (events per customer, concurrent clients): every client sends one-customer ``/predict``
   requests back to back for ``--seconds``; latency is per request, throughput is customers answered per
   second of wall time. The server's ``/metadata`` batching counters give the mean batch (customers per
   forward pass) of that run.
4. Raw forward throughput: :meth:`Scorer.forward` on already-encoded examples at that mean batch size in
   this process (no HTTP, no parsing, no encoding). Ratio = served / raw.

The clients (one asyncio loop) run on the same machine as the server, so they take CPU from it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_batch_scoring import build_model  # noqa: E402 - the same benchmark model

from serving.process import free_port, running_server  # noqa: E402

CUTOFF = pd.Timestamp("2025-01-01", tz="UTC")


def customers_of_length(events: pd.DataFrame, length: int, count: int) -> list[dict]:
    """``count`` API customers of exactly ``length`` events: a real journey, repeated a year earlier as needed."""
    payloads = []
    for customer_id, rows in list(events.groupby("customer_id", sort=False))[:count]:
        pieces, shift = [], 0
        while sum(len(p) for p in pieces) < length:
            pieces.insert(0, rows.assign(ts=rows["ts"] - pd.Timedelta(days=366 * shift)))
            shift += 1
        history = pd.concat(pieces).tail(length)
        payload_events = []
        for row in history.drop(columns="customer_id").to_dict("records"):
            event = {k: v for k, v in row.items() if v is not None and not (isinstance(v, float) and np.isnan(v))}
            event["ts"] = row["ts"].isoformat()
            payload_events.append(event)
        payloads.append({"customer_id": str(customer_id), "cutoff": CUTOFF.isoformat(), "events": payload_events})
    return payloads


async def load(url: str, payloads: list[dict], clients: int, seconds: float) -> dict:
    """``clients`` concurrent clients, one customer per request, back to back for ``seconds``."""
    import aiohttp

    bodies = [json.dumps({"customers": [p]}).encode() for p in payloads]
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, headers={"Content-Type": "application/json"}) as session:
        async def client(index: int) -> None:
            nonlocal errors
            i = index
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                async with session.post(f"{url}/predict", data=bodies[i % len(bodies)]) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - started)
                i += clients

        started = time.perf_counter()
        await asyncio.gather(*[client(i) for i in range(clients)])
        wall = time.perf_counter() - started
    values = np.array(latencies) * 1000
    return {"requests": len(latencies), "errors": errors, "wall_seconds": wall,
            "customers_per_second": len(latencies) / wall, "p50_ms": float(np.percentile(values, 50)),
            "p99_ms": float(np.percentile(values, 99))}


def raw_forward(bundle: Path, payloads: list[dict], batch: int, threads: int = 1, seconds: float = 3.0) -> float:
    """Customers/s of Scorer.forward alone on encoded examples, ``batch`` customers per pass."""
    import torch

    from journey_model.data.sequences import encode_examples
    from journey_model.inference.scorer import Scorer

    torch.set_num_threads(threads)  # as the server's worker (journey serve --torch-threads, default 1)
    scorer = Scorer.load(bundle)
    rows = []
    for p in payloads:
        frame = pd.DataFrame(p["events"]).assign(customer_id=p["customer_id"])
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
        frame["cutoff"] = CUTOFF
        table, examples = scorer.examples_from_events(frame)
        rows += encode_examples(scorer.preprocessor, table, examples).to_pylist()
    examples = [rows[i % len(rows)] for i in range(batch)]
    scorer.forward(examples)
    passes, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or passes < 3:
        scorer.forward(examples)
        passes += 1
    return batch * passes / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="work/bench_batch_scoring", help="benchmark model and data")
    parser.add_argument("--model", help="a model bundle (default: build the benchmark model)")
    parser.add_argument("--seconds", type=float, default=10.0, help="load duration per setting (default: %(default)s)")
    parser.add_argument("--events", default="50,500", help="events per customer, comma-separated (default: %(default)s)")
    parser.add_argument("--clients", default="1,8,64", help="concurrent clients, comma-separated (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes (default: %(default)s)")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    sizes = [int(n) for n in args.events.split(",")]
    client_counts = [int(n) for n in args.clients.split(",")]

    import httpx

    workdir = Path(args.workdir)
    bundle = Path(args.model) if args.model else build_model(workdir)
    events = pq.read_table(workdir / "model" / "synth" / "events").to_pandas() if not args.model else None
    if events is None:
        raise SystemExit("--model needs synthetic events too; run without --model once to build them")
    payloads = {n: customers_of_length(events, n, 64) for n in sizes}

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, BENTOML_DO_NOT_TRACK="True", BENTOML_HOME=str(workdir / "bentoml_home"))
    command = [sys.executable, "-m", "pipelines.cli", "serve", "--model", str(bundle), "--port", str(port),
               "--max-events", "1000", "--workers", str(args.workers)]
    results = []
    with running_server(command, url, workdir / "server.log", env=env, timeout_s=180):
        for length in sizes:
            asyncio.run(load(url, payloads[length], 4, 2.0))  # warm-up
            for clients in client_counts:
                before = httpx.get(f"{url}/metadata").json()["batching"]
                row = asyncio.run(load(url, payloads[length], clients, args.seconds))
                after = httpx.get(f"{url}/metadata").json()["batching"]
                passes = after["passes"] - before["passes"]
                row.update(events_per_customer=length, clients=clients,
                           mean_batch=(after["customers"] - before["customers"]) / passes if passes else 0.0)
                results.append(row)
                print(f"{length:>4} events, {clients:>2} clients: p50 {row['p50_ms']:7.1f} ms  p99 {row['p99_ms']:7.1f} ms"
                      f"  {row['customers_per_second']:7.1f} customers/s  mean batch {row['mean_batch']:5.1f}"
                      f"  errors {row['errors']}", flush=True)

    for row in results:  # raw forward passes run after the server stopped, so they have the CPU alone
        batch = max(1, round(row["mean_batch"]))
        row["raw_forward_batch"] = batch
        row["raw_forward_customers_per_second"] = raw_forward(bundle, payloads[row["events_per_customer"]], batch)
        row["served_to_raw"] = row["customers_per_second"] / row["raw_forward_customers_per_second"]
        print(f"{row['events_per_customer']:>4} events, {row['clients']:>2} clients: raw forward at batch {batch}: "
              f"{row['raw_forward_customers_per_second']:7.1f} customers/s -> served/raw {row['served_to_raw']:.2f}",
              flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"model": str(bundle), "seconds_per_setting": args.seconds,
                                              "workers": args.workers, "results": results}, indent=1))


if __name__ == "__main__":
    main()

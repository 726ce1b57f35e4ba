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

``--forms rows,columns`` sends each customer's events as rows (a list of events) and/or in the columnar form
(one array per field); ``--workers`` sets the server's worker processes. Every result records the 1-minute
load average before and after it (the machine's other work shows there), and the CPU time the server's
processes used per customer (``server_cpu_ms_per_customer``), which that other work inflates far less than
wall-clock throughput. First, in this process, the CPU cost of the request checks alone per one-customer
request (JSON body -> canonical events) by the pydantic path and the bulk path (``--checks-only``: just that).

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


def columnar(payload: dict) -> dict:
    """The same customer with its events in the columnar form: one array per field (null where absent)."""
    names = sorted(set().union(*payload["events"]))
    return {**payload, "events": {name: [event.get(name) for event in payload["events"]] for name in names}}


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


def server_cpu(process) -> float:
    """CPU seconds (user + system) the server and its workers have used so far: the cost of the requests,
    which other work on a shared machine does not inflate the way it does wall-clock throughput."""
    import psutil

    total = 0.0
    root = psutil.Process(process.pid)
    for p in [root, *root.children(recursive=True)]:
        try:
            times = p.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


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


def request_cpu(bundle: Path, payloads: list[dict], seconds: float = 2.0) -> dict[str, float]:
    """CPU microseconds per one-customer request of the checks alone, in this process (thread CPU time, so the
    machine's other work hardly shows): JSON body -> validated customers -> canonical events and examples.
    ``pydantic`` is the path before the bulk checks (an Event object per event, then parse_customers);
    ``bulk rows`` / ``bulk columns`` the path /predict takes now for the two request forms."""
    from pydantic import BaseModel

    from journey_model.inference.scorer import Scorer
    from serving.bulk import PredictCustomers
    from serving.config import ServingConfig
    from serving.requests import InputContract, parse_bulk, parse_customers
    from serving.schemas import CustomerEvents

    class Full(BaseModel):
        customers: list[CustomerEvents]

    class Bulk(BaseModel):
        customers: PredictCustomers

    contract = InputContract(Scorer.load(bundle).preprocessor)
    config = ServingConfig(max_events_per_customer=100_000)
    paths = {
        "pydantic": (Full, [json.dumps({"customers": [p]}).encode() for p in payloads], parse_customers),
        "bulk rows": (Bulk, [json.dumps({"customers": [p]}).encode() for p in payloads], parse_bulk),
        "bulk columns": (Bulk, [json.dumps({"customers": [columnar(p)]}).encode() for p in payloads], parse_bulk),
    }
    result = {}
    for name, (model, bodies, parse) in paths.items():
        count, started = 0, time.thread_time()
        while time.thread_time() - started < seconds:
            parse(model.model_validate_json(bodies[count % len(bodies)]).customers, contract, config)
            count += 1
        result[name] = 1e6 * (time.thread_time() - started) / count
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="work/bench_batch_scoring", help="benchmark model and data")
    parser.add_argument("--model", help="a model bundle (default: build the benchmark model)")
    parser.add_argument("--seconds", type=float, default=10.0, help="load duration per setting (default: %(default)s)")
    parser.add_argument("--events", default="50,500", help="events per customer, comma-separated (default: %(default)s)")
    parser.add_argument("--clients", default="1,8,64", help="concurrent clients, comma-separated (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes (default: %(default)s)")
    parser.add_argument("--forms", default="rows", help="request forms, comma-separated: rows, columns "
                        "(default: %(default)s)")
    parser.add_argument("--checks-only", action="store_true", help="only the in-process CPU cost of the checks "
                        "per request (no server)")
    parser.add_argument("--label", default="", help="a label stored with the results (e.g. before/after)")
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
    forms = args.forms.split(",")

    checks = {}
    for length in sizes:
        checks[length] = request_cpu(bundle, payloads[length])
        print(f"{length:>4} events: checks CPU per request " + ", ".join(f"{k} {v:,.0f} µs" for k, v in
                                                                   checks[length].items()), flush=True)
    if args.checks_only:
        if args.out:
            Path(args.out).write_text(json.dumps({"command": " ".join([".venv/bin/python", *sys.argv]),
                                                  "load_1min": os.getloadavg()[0], "checks_cpu_us": checks}, indent=1))
        return
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, BENTOML_DO_NOT_TRACK="True", BENTOML_HOME=str(workdir / "bentoml_home"))
    command = [sys.executable, "-m", "pipelines.cli", "serve", "--model", str(bundle), "--port", str(port),
               "--max-events", "1000", "--workers", str(args.workers)]
    results = []
    with running_server(command, url, workdir / "server.log", env=env, timeout_s=180) as server:
        for form in forms:
            for length in sizes:
                sent = payloads[length] if form == "rows" else [columnar(p) for p in payloads[length]]
                asyncio.run(load(url, sent, 4, 2.0))  # warm-up
                for clients in client_counts:
                    load_before = os.getloadavg()[0]
                    before = httpx.get(f"{url}/metadata").json()["batching"]
                    cpu_before, client_before = server_cpu(server), time.process_time()
                    row = asyncio.run(load(url, sent, clients, args.seconds))
                    cpu, client_cpu = server_cpu(server) - cpu_before, time.process_time() - client_before
                    after = httpx.get(f"{url}/metadata").json()["batching"]
                    passes = after["passes"] - before["passes"]
                    row.update(form=form, events_per_customer=length, clients=clients,
                               mean_batch=(after["customers"] - before["customers"]) / passes if passes else 0.0,
                               load_1min=[load_before, os.getloadavg()[0]],
                               server_cpu_ms_per_customer=1000 * cpu / max(1, row["requests"]),
                               client_cpu_ms_per_customer=1000 * client_cpu / max(1, row["requests"]))
                    results.append(row)
                    print(f"{form:>7} {length:>4} events, {clients:>2} clients: p50 {row['p50_ms']:7.1f} ms  p99 "
                          f"{row['p99_ms']:7.1f} ms  {row['customers_per_second']:7.1f} customers/s  mean batch "
                          f"{row['mean_batch']:5.1f}  server CPU {row['server_cpu_ms_per_customer']:.2f} ms/customer  errors "
                          f"{row['errors']}  load {row['load_1min'][0]:.1f}-{row['load_1min'][1]:.1f}", flush=True)

    raw: dict[tuple[int, int], float] = {}
    for row in results:  # raw forward passes run after the server stopped, so they have the CPU alone
        batch = max(1, round(row["mean_batch"]))
        row["raw_forward_batch"] = batch
        key = (row["events_per_customer"], batch)  # measured once per size and batch, shared by the forms
        if key not in raw:
            raw[key] = raw_forward(bundle, payloads[row["events_per_customer"]], batch)
        row["raw_forward_customers_per_second"] = raw[key]
        row["served_to_raw"] = row["customers_per_second"] / row["raw_forward_customers_per_second"]
        print(f"{row['form']:>7} {row['events_per_customer']:>4} events, {row['clients']:>2} clients: raw forward at batch {batch}: "
              f"{row['raw_forward_customers_per_second']:7.1f} customers/s -> served/raw {row['served_to_raw']:.2f}",
              flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({
            "model": str(bundle), "seconds_per_setting": args.seconds, "workers": args.workers, "label": args.label,
            "command": " ".join([".venv/bin/python", *sys.argv]), "cpus": os.cpu_count(), "results": results,
            "checks_cpu_us_per_request": {str(n): v for n, v in checks.items()},
        }, indent=1))


if __name__ == "__main__":
    main()

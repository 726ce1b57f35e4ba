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
   this process (no HTTP, no parsing, no encoding), one torch thread. Ratio = served / raw.

``--forms rows,columns`` sends each customer's events as rows (a list of events) and/or in the columnar form
(one array per field); ``--workers`` sets the server's worker processes. Every result records the 1-minute
load average before and after it (the machine's other work shows there), and the CPU time the server's
processes used per customer (``server_cpu_ms_per_customer``), which that other work inflates far less than
wall-clock throughput. First, in this process, the CPU cost of the request checks alone per one-customer
request (JSON body -> canonical events) by the pydantic path and the bulk path (``--checks-only``: just that).

``--customers-per-request N`` makes every request carry N customers (throughput and server CPU are per
customer). ``--service`` measures several services side by side, all started first and each setting run on
each in turn: ``journey`` (this checkout's serving/), ``before`` (``--baseline``'s copy of serving/),
``NAME=DIR`` (serving/ from folder DIR, e.g. a variant), ``floor`` (``benchmarks/serving_floor.py``: BentoML
with the same settings, no model, a constant answer: the per-request ceiling of any one-customer /predict;
``--floor`` adds it) and ``split`` (``benchmarks/serving_split``: BentoML's batchable model service behind a
validating front service). The floor has no batch of its own: its ratio is taken against the raw forward at the
mean batch a model service reached in the same setting. ``--py-spy`` records each worker during each setting
and stores the self-time shares by module; ``--append`` adds the run to the ``--out`` file's ``runs``.

    .venv/bin/python benchmarks/bench_serving.py --events 100 --clients 8,64 --service journey,floor,split \
        --out benchmarks/results/serving_overhead.json --append

The clients (one asyncio loop) run on the same machine as the server, so they take CPU from it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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


async def load(url: str, payloads: list[dict], clients: int, seconds: float, per_request: int = 1) -> dict:
    """``clients`` concurrent clients, ``per_request`` customers per request, back to back for ``seconds``."""
    import aiohttp

    bodies = [json.dumps({"customers": [payloads[(i + k) % len(payloads)] for k in range(per_request)]}).encode()
              for i in range(0, len(payloads) * per_request, per_request)]
    latencies: list[float] = []
    errors = 0
    statuses: dict[int, int] = {}
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
                    statuses[response.status] = statuses.get(response.status, 0) + 1
                    if response.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - started)
                i += clients

        started = time.perf_counter()
        await asyncio.gather(*[client(i) for i in range(clients)])
        wall = time.perf_counter() - started
    values = np.array(latencies) * 1000
    answered = len(latencies) - errors  # throughput counts answered (200) requests only
    return {"requests": len(latencies), "customers": answered * per_request, "errors": errors,
            "statuses": {str(k): v for k, v in sorted(statuses.items())}, "wall_seconds": wall,
            "customers_per_second": answered * per_request / wall, "requests_per_second": answered / wall,
            "p50_ms": float(np.percentile(values, 50)), "p99_ms": float(np.percentile(values, 99))}


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


def raw_forward(bundle: Path, payloads: list[dict], batch: int, threads: int = 1,
                seconds: float = 3.0) -> tuple[float, float]:
    """Customers/s of Scorer.forward alone on encoded examples, ``batch`` customers per pass, and its CPU ms
    per customer."""
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
    passes, started, cpu_started = 0, time.perf_counter(), time.thread_time()
    while time.perf_counter() - started < seconds or passes < 3:
        scorer.forward(examples)
        passes += 1
    # thread CPU (one torch thread runs on this thread): steadier than wall time on a busy machine
    return batch * passes / (time.perf_counter() - started), 1000 * (time.thread_time() - cpu_started) / (batch * passes)


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


SERVICES = ("journey", "before", "floor", "split")
BENCHMARKS = Path(__file__).resolve().parent
ROOT = BENCHMARKS.parent


def server_command(service: str, bundle: Path, port: int, workers: int, baseline: str | None,
                   env: dict[str, str]) -> tuple[list[str], dict[str, str], Path]:
    """Command line, environment and working directory that start ``service`` on 127.0.0.1:``port``.

    ``journey``: ``journey serve`` (serving/ of this checkout); ``before``: the same from ``--baseline``, a folder
    holding another copy of ``serving/`` (journey_model and pipelines from this checkout); ``floor``:
    benchmarks/serving_floor.py (no model); ``split``: benchmarks/serving_split (BentoML batching behind a
    validating front service)."""
    from journey_model.core.resources import tune_malloc_for_children

    journey = [sys.executable, "-m", "pipelines.cli", "serve", "--model", str(bundle), "--port", str(port),
               "--max-events", "1000", "--workers", str(workers)]
    bentoml = [sys.executable, "-m", "bentoml", "serve", "--host", "127.0.0.1", "--port", str(port)]
    if service == "journey":
        return journey, env, ROOT
    if service == "before" or "=" in service:  # before (--baseline) or NAME=DIR: serving/ from another folder
        folder = service.split("=", 1)[1] if "=" in service else baseline
        if not folder:
            raise SystemExit("--service before needs --baseline DIR (a folder holding a copy of serving/)")
        return journey, dict(env, PYTHONPATH=str(ROOT)), Path(folder).resolve()
    if service == "floor":
        return [*bentoml, "serving_floor:FloorService", "--working-dir", str(BENCHMARKS)], env, ROOT
    if service == "split":
        split_env = dict(env, PYTHONPATH=str(ROOT), JOURNEY_MODEL_URI=str(bundle), JOURNEY_MAX_EVENTS="1000")
        tune_malloc_for_children(split_env)  # as journey serve does for its server
        return [*bentoml, "service:Front", "--working-dir", str(BENCHMARKS / "serving_split")], split_env, ROOT
    raise SystemExit(f"unknown service {service!r}: one of {', '.join(SERVICES)}")


def batching_counters(service: str, url: str) -> tuple[int, int] | None:
    """(forward passes, customers scored) so far, from the service's own counters; None for the floor."""
    import httpx

    if service in ("journey", "before") or "=" in service:
        stats = httpx.get(f"{url}/metadata").json()["batching"]
        return stats["passes"], stats["customers"]
    if service == "split":
        stats = httpx.post(f"{url}/metadata_batching", json={}).json()
        return stats["passes"], stats["customers"]
    return None


PROFILE_GROUPS = (  # the module of a sample's innermost frame -> the part of the request path it belongs to
    ("model forward (torch, journey_model.models/inference)", r"torch/|journey_model/models|journey_model/inference"),
    ("encode_examples (journey_model.data)", r"journey_model/data"),
    ("pyarrow (checks' and encoding's column work)", r"pyarrow"),
    ("serving/ (checks, guard, batcher, service)", r"serving/"),
    ("pydantic (body decode + validation, answers)", r"pydantic"),
    ("bentoml", r"bentoml"),
    ("starlette/fastapi", r"starlette|fastapi"),
    ("uvicorn/h11", r"uvicorn|h11"),
    ("logging (access log)", r"logging/"),
    ("opentelemetry/prometheus", r"opentelemetry|prometheus|trace/"),
    ("asyncio/selectors (event loop, socket send/receive)", r"asyncio|selectors"),
    ("threads (executor hand-off)", r"threading|concurrent"),
    ("numpy/pandas", r"numpy|pandas"),
)


def profile_shares(raw: Path) -> dict:
    """Shares of py-spy's non-idle samples (``--format raw``) by the module of the innermost frame (self time),
    and the ten innermost frames with most samples."""
    import collections
    import re

    groups: collections.Counter = collections.Counter()
    frames: collections.Counter = collections.Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        stack, count = line.rsplit(" ", 1)
        leaf = stack.split(";")[-1]
        total += int(count)
        groups[next((g for g, pattern in PROFILE_GROUPS if re.search(pattern, leaf)), "other")] += int(count)
        frames[leaf] += int(count)
    return {"samples": total, "self_share_by_module": {g: n / total for g, n in groups.most_common()},
            "top_frames": {f: n / total for f, n in frames.most_common(10)}} if total else {"samples": 0}


def start_py_spy(server, seconds: float, out: Path) -> list:
    """py-spy record (raw format, non-blocking) on each worker process of ``server`` for ``seconds``."""
    import subprocess

    import psutil

    spy = Path(sys.executable).with_name("py-spy")
    spies = []
    for child in psutil.Process(server.pid).children(recursive=True):
        path = out.with_name(f"{out.name}_{child.pid}.txt")
        spies.append((child.pid, path, subprocess.Popen(
            [str(spy), "record", "--pid", str(child.pid), "-d", str(max(1, int(seconds))), "-r", "100", "--format",
             "raw", "--nonblocking", "-o", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)))
    return spies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="work/bench_batch_scoring", help="benchmark model and data")
    parser.add_argument("--model", help="a model bundle (default: build the benchmark model)")
    parser.add_argument("--architecture", default="default", help="the benchmark model's ATRank architecture "
                        "when --model is not given: default or one-block (bench_batch_scoring.py's)")
    parser.add_argument("--seconds", type=float, default=10.0, help="load duration per setting (default: %(default)s)")
    parser.add_argument("--events", default="50,500", help="events per customer, comma-separated (default: %(default)s)")
    parser.add_argument("--clients", default="1,8,64", help="concurrent clients, comma-separated (default: %(default)s)")
    parser.add_argument("--customers-per-request", type=int, default=1, help="customers each request carries "
                        "(default: %(default)s)")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes (default: %(default)s)")
    parser.add_argument("--forms", default="rows", help="request forms, comma-separated: rows, columns "
                        "(default: %(default)s)")
    parser.add_argument("--service", default="journey", help="services to measure side by side, comma-separated: "
                        "journey (serving/), before (--baseline's serving/), floor (benchmarks/serving_floor.py), "
                        "split (benchmarks/serving_split), NAME=DIR (serving/ from folder DIR, e.g. a variant); "
                        "all are started, each setting runs on each in turn "
                        "(default: %(default)s)")
    parser.add_argument("--floor", action="store_true", help="measure the floor service too (as --service ...,floor)")
    parser.add_argument("--baseline", help="for --service before: a folder holding another copy of serving/")
    parser.add_argument("--py-spy", action="store_true", help="profile the server's workers with py-spy during each "
                        "setting and store the shares (inflates the server CPU figures a little)")
    parser.add_argument("--checks-only", action="store_true", help="only the in-process CPU cost of the checks "
                        "per request (no server)")
    parser.add_argument("--label", default="", help="a label stored with the results (e.g. before/after)")
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--append", action="store_true", help="add this run to the --out file's 'runs' list")
    args = parser.parse_args()
    sizes = [int(n) for n in args.events.split(",")]
    client_counts = [int(n) for n in args.clients.split(",")]
    services = args.service.split(",") + (["floor"] if args.floor and "floor" not in args.service.split(",") else [])
    per_request = args.customers_per_request

    workdir = Path(args.workdir)
    bundle = (Path(args.model) if args.model else build_model(workdir, args.architecture)).resolve()
    model_root = workdir / ("model" if args.architecture == "default" else f"model-{args.architecture}")
    events = pq.read_table(model_root / "synth" / "events").to_pandas() if not args.model else None
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
    env = dict(os.environ, BENTOML_DO_NOT_TRACK="True", MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
               BENTOML_HOME=str(workdir.resolve() / "bentoml_home"))
    results = []
    spy_dir = workdir / "py_spy"
    spy_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        servers = {}
        for service in services:  # all started first; an idle one costs next to nothing
            port = free_port()
            command, service_env, cwd = server_command(service, bundle, port, args.workers, args.baseline, env)
            url = f"http://127.0.0.1:{port}"
            server = stack.enter_context(running_server(command, url, workdir.resolve() / f"server_{service.split('=')[0]}.log",
                                                        env=service_env, cwd=cwd, timeout_s=240))
            servers[service] = (url, server)
        for form in forms:
            for length in sizes:
                sent = payloads[length] if form == "rows" else [columnar(p) for p in payloads[length]]
                for url, _ in servers.values():
                    asyncio.run(load(url, sent, 4, 2.0, per_request))  # warm-up
                for clients in client_counts:
                    for service, (url, server) in servers.items():
                        load_before = os.getloadavg()[0]
                        before = batching_counters(service, url)
                        spies = start_py_spy(server, args.seconds, spy_dir / f"{service.split('=')[0]}_{length}_{clients}") \
                            if args.py_spy else []
                        cpu_before, client_before = server_cpu(server), time.process_time()
                        row = asyncio.run(load(url, sent, clients, args.seconds, per_request))
                        cpu, client_cpu = server_cpu(server) - cpu_before, time.process_time() - client_before
                        after = batching_counters(service, url)
                        passes = after[0] - before[0] if after else 0
                        row.update(service=service, form=form, events_per_customer=length, clients=clients,
                                   customers_per_request=per_request,
                                   mean_batch=(after[1] - before[1]) / passes if passes else None,
                                   load_1min=[load_before, os.getloadavg()[0]],
                                   server_cpu_ms_per_customer=1000 * cpu / max(1, row["customers"]),
                                   client_cpu_ms_per_customer=1000 * client_cpu / max(1, row["customers"]))
                        if spies:
                            row["py_spy"] = {}
                            for pid, path, spy in spies:
                                spy.wait()
                                if path.exists():
                                    row["py_spy"][str(pid)] = profile_shares(path)
                        results.append(row)
                        batch = f"{row['mean_batch']:5.1f}" if row["mean_batch"] is not None else "    -"
                        print(f"{service.split('=')[0]:>8} {form:>7} {length:>4} events, {clients:>2} clients x {per_request}: p50 "
                              f"{row['p50_ms']:7.1f} ms  p99 {row['p99_ms']:7.1f} ms  "
                              f"{row['customers_per_second']:7.1f} customers/s  mean batch {batch}  server CPU "
                              f"{row['server_cpu_ms_per_customer']:.2f} ms/customer  errors {row['errors']}  load "
                              f"{row['load_1min'][0]:.1f}-{row['load_1min'][1]:.1f}", flush=True)

    raw: dict[tuple[int, int], tuple[float, float]] = {}
    for row in results:  # raw forward passes run after the servers stopped, so they have the CPU alone
        if row["mean_batch"] is None:  # the floor: the batch a model service reached in the same setting
            batches = [r["mean_batch"] for r in results if r["mean_batch"] is not None and all(
                r[k] == row[k] for k in ("form", "events_per_customer", "clients"))]
            mean_batch = batches[0] if batches else per_request
        else:
            mean_batch = row["mean_batch"]
        batch = max(1, round(mean_batch))
        row["raw_forward_batch"] = batch
        key = (row["events_per_customer"], batch)  # measured once per size and batch, shared by the forms
        if key not in raw:
            raw[key] = raw_forward(bundle, payloads[row["events_per_customer"]], batch)
        row["raw_forward_customers_per_second"], row["raw_forward_cpu_ms_per_customer"] = raw[key]
        row["served_to_raw"] = row["customers_per_second"] / row["raw_forward_customers_per_second"]
        # the same ratio from CPU time, which the machine's other work inflates far less: raw forward CPU per
        # customer / server CPU per customer (1.0 = serving costs nothing beyond the forward pass)
        row["raw_to_server_cpu"] = row["raw_forward_cpu_ms_per_customer"] / row["server_cpu_ms_per_customer"]
        print(f"{row['service'].split('=')[0]:>8} {row['form']:>7} {row['events_per_customer']:>4} events, {row['clients']:>2} "
              f"clients: raw forward at batch {batch}: {row['raw_forward_customers_per_second']:7.1f} customers/s "
              f"({row['raw_forward_cpu_ms_per_customer']:.2f} CPU ms/customer) -> served/raw {row['served_to_raw']:.2f}, "
              f"raw/server CPU {row['raw_to_server_cpu']:.2f}", flush=True)
    if args.out:
        run = {
            "model": str(bundle), "architecture": args.architecture, "services": services,
            "seconds_per_setting": args.seconds, "workers": args.workers, "label": args.label,
            "customers_per_request": per_request, "command": " ".join([".venv/bin/python", *sys.argv]),
            "cpus": os.cpu_count(), "results": results,
            "checks_cpu_us_per_request": {str(n): v for n, v in checks.items()},
        }
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if args.append and out.exists():
            document = json.loads(out.read_text())
            document.setdefault("runs", []).append(run)
        else:
            document = {"runs": [run]} if args.append else run
        out.write_text(json.dumps(document, indent=1))


if __name__ == "__main__":
    main()

"""Reliability evidence for the online API (issue 11): sections run one after another against one real server.

    .venv/bin/python benchmarks/bench_reliability.py --only load,largest --out benchmarks/results/reliability.json

Sections (``--only`` picks some; each writes its own key of the ``--out`` JSON, keeping the others' keys):

* ``load`` — ``--clients`` (64) keep-alive clients (one httpx connection pool, as many connections as clients)
  send one-customer ``/predict`` requests back to back for ``--seconds`` (60), each client pausing now and then
  (``--idle-every``/``--idle-s``: its connection sits idle 0.6-1.2 × idle-s, as between bursts of real traffic;
  the pool drops connections idle over 5 s, httpx's default): requests,
  errors by kind (ReadError, RemoteProtocolError, …, non-200), p50 and p99 latency. ``--keep-alive`` sets the
  server's idle keep-alive timeout (``JOURNEY_KEEP_ALIVE``); ``--keep-alive 5`` is uvicorn's default, the old
  setting, for comparison.
* ``largest`` — latency and worker RSS (peak, sampled every 10 ms, and after) of the largest requests inside the
  limits — the body limit filled with realistic events, and with the smallest events the API takes (the most
  objects per byte) — and of oversized ones: a 200 MB Content-Length (413 before reading) and a streamed body
  past the limit.

Model: ATRank at its reference size (``benchmarks/bench_batch_scoring.py`` builds it in ``--workdir``). The
server is ``journey serve`` with the default limits on 127.0.0.1, stopped by its PID at the end; the clients
run on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import psutil
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_batch_scoring import build_model  # noqa: E402 - the same benchmark model
from bench_serving import CUTOFF, customers_of_length  # noqa: E402

from serving.config import ServingConfig  # noqa: E402

SECTIONS: dict[str, Callable[[argparse.Namespace, str, psutil.Process, list[dict]], dict]] = {}


def section(name: str):
    def register(function):
        SECTIONS[name] = function
        return function
    return register


# ---------------------------------------------------------------------------------------------- load
@section("load")
def run_load(args: argparse.Namespace, url: str, server: psutil.Process, payloads: list[dict]) -> dict:
    bodies = [json.dumps({"customers": [p]}).encode() for p in payloads]
    result = asyncio.run(_load(url, bodies, args.clients, args.seconds, args.idle_every, args.idle_s))
    result.update(clients=args.clients, seconds=args.seconds, keep_alive_s=args.keep_alive,
                  events_per_customer=args.events, idle_every=args.idle_every, idle_s=args.idle_s)
    print(f"load: {result['requests']} requests, {result['errors']} errors {result['errors_by_kind']}, "
          f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, {result['requests_per_second']:.1f} req/s "
          f"(keep-alive {args.keep_alive} s)", flush=True)
    return result


async def _load(url: str, bodies: list[bytes], clients: int, seconds: float, idle_every: int,
                idle_s: float) -> dict:
    # httpx's default pool idle expiry (5 s) is uvicorn's default keep-alive timeout: the race this measures.
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients, keepalive_expiry=5.0)
    latencies: list[float] = []
    errors: Counter = Counter()
    stop = time.monotonic() + seconds
    headers = {"Content-Type": "application/json"}

    async def client(index: int, http: httpx.AsyncClient) -> None:
        rng = random.Random(index)
        sent = 0
        while time.monotonic() < stop:
            started = time.perf_counter()
            try:
                response = await http.post(f"{url}/predict", content=bodies[rng.randrange(len(bodies))],
                                           headers=headers)
                if response.status_code != 200:
                    errors[f"HTTP {response.status_code}"] += 1
                else:
                    latencies.append(time.perf_counter() - started)
            except httpx.HTTPError as error:
                errors[type(error).__name__] += 1
            sent += 1
            if idle_every and sent % idle_every == 0:  # this client's connection idles, as between bursts
                await asyncio.sleep(rng.uniform(0.6, 1.2) * idle_s)

    async with httpx.AsyncClient(limits=limits, timeout=120) as http:
        started = time.perf_counter()
        await asyncio.gather(*[client(i, http) for i in range(clients)])
        wall = time.perf_counter() - started
    ms = np.array(latencies) * 1000 if latencies else np.array([0.0])
    total = len(latencies) + sum(errors.values())
    return {"requests": total, "errors": sum(errors.values()), "errors_by_kind": dict(errors),
            "error_rate": sum(errors.values()) / total if total else 0.0, "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "requests_per_second": total / wall}


# ---------------------------------------------------------------------------------------------- largest
@section("largest")
def run_largest(args: argparse.Namespace, url: str, server: psutil.Process, payloads: list[dict]) -> dict:
    config = ServingConfig.from_env()
    limit = config.max_body_bytes
    worker = _worker(server)
    rows = {}
    realistic = _fill(payloads, limit, config)
    minimal = _fill([{"customer_id": "C", "cutoff": CUTOFF.isoformat(),
                      "events": [{"ts": 1700000000, "event_type": "login"}]}], limit, config)
    for name, body in (("largest realistic", realistic), ("largest smallest-events", minimal)):
        rows[name] = _measure(worker, lambda body=body: httpx.post(f"{url}/predict", content=body, timeout=600,
                                                                     headers={"Content-Type": "application/json"}))
        rows[name].update(body_mb=len(body) / 2**20, events=body.count(b'"event_type"'))
    rows["200 MB Content-Length"] = _measure(worker, lambda: _announce(url, 200 * 2**20))
    rows["200 MB Content-Length"]["body_mb"] = 200.0

    def streamed() -> httpx.Response:
        chunk = b" " * 2**20
        return httpx.post(f"{url}/predict", content=(chunk for _ in range(200)), timeout=600,
                          headers={"Content-Type": "application/json"})

    rows["200 MB streamed (chunked)"] = _measure(worker, streamed)
    rows["200 MB streamed (chunked)"]["body_mb"] = 200.0
    for name, row in rows.items():
        print(f"{name:28s} body {row['body_mb']:6.1f} MB  events {row.get('events', 0):>8}  -> {row['status']} in "
              f"{row['seconds']:6.2f} s  worker RSS {row['rss_before_mb']:6.0f} -> peak {row['rss_peak_mb']:6.0f} "
              f"-> after {row['rss_after_mb']:6.0f} MB", flush=True)
    return {"max_body_mb": config.max_body_mb, "max_inflight_mb": config.max_inflight_mb, "requests": rows}


def _fill(customers: list[dict], limit: int, config: ServingConfig) -> bytes:
    """The largest /predict body under ``limit`` bytes within the customer and event limits."""
    per_customer = min(config.max_events_per_customer, max(1, 2 * limit // (len(customers) * 40)))
    template = []
    for i in range(config.max_customers_per_request):
        source = customers[i % len(customers)]
        events = (source["events"] * (per_customer // len(source["events"]) + 1))[:per_customer]
        template.append({**source, "customer_id": f"{source['customer_id']}-{i}", "events": events})
    low, high = 1, config.max_customers_per_request * per_customer
    best = b""
    while low <= high:  # events in all, spread over the customers, so that the body just fits
        middle = (low + high) // 2
        share, extra = divmod(middle, len(template))
        body = json.dumps({"customers": [{**c, "events": c["events"][:share + (i < extra)]}
                                         for i, c in enumerate(template) if share + (i < extra)]}).encode()
        if len(body) <= limit:
            best, low = body, middle + 1
        else:
            high = middle - 1
    return best


def _announce(url: str, size: int) -> httpx.Response:
    """A request announcing ``size`` bytes that sends only its first bytes (a client without 100-continue)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {size}\r\n\r\n".encode() + b'{"customers": [' + b" " * 65536)
        answer = sock.recv(65536)
    return httpx.Response(int(answer.split(b" ")[1]))


def _measure(worker: psutil.Process, request: Callable[[], httpx.Response]) -> dict:
    before = worker.memory_info().rss
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], worker.memory_info().rss)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.perf_counter()
    try:
        status = request().status_code
    except httpx.HTTPError as error:
        status = type(error).__name__
    seconds = time.perf_counter() - started
    time.sleep(1.0)
    done.set()
    sampler.join()
    return {"status": status, "seconds": seconds, "rss_before_mb": before / 2**20, "rss_peak_mb": peak[0] / 2**20,
            "rss_after_mb": worker.memory_info().rss / 2**20}


def _worker(server: psutil.Process) -> psutil.Process:
    """The API worker: the server's descendant process holding the most memory (it has the model)."""
    children = server.children(recursive=True)
    return max(children, key=lambda p: p.memory_info().rss) if children else server


# ---------------------------------------------------------------------------------------------- main
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SECTIONS), help="sections to run (default: %(default)s)")
    parser.add_argument("--workdir", default="work/bench_batch_scoring", help="benchmark model and data")
    parser.add_argument("--clients", type=int, default=64, help="load: concurrent keep-alive clients")
    parser.add_argument("--seconds", type=float, default=60.0, help="load: duration (default: %(default)s)")
    parser.add_argument("--events", type=int, default=50, help="load: events per customer (default: %(default)s)")
    parser.add_argument("--idle-every", type=int, default=20, help="load: a client idles after this many "
                        "requests; 0: never (default: %(default)s)")
    parser.add_argument("--idle-s", type=float, default=5.0, help="load: how long it idles (default: %(default)s)")
    parser.add_argument("--keep-alive", type=int, default=ServingConfig.keep_alive,
                        help="server keep-alive timeout, JOURNEY_KEEP_ALIVE (default: %(default)s)")
    parser.add_argument("--out", help="merge the results into this JSON file (one key per section)")
    args = parser.parse_args()
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown sections {sorted(unknown)}; known: {sorted(SECTIONS)}")

    workdir = Path(args.workdir)
    bundle = build_model(workdir)
    events = pq.read_table(workdir / "model" / "synth" / "events").to_pandas()
    payloads = customers_of_length(events, args.events, 64)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, BENTOML_DO_NOT_TRACK="True", BENTOML_HOME=str(workdir / "bentoml_home"),
               JOURNEY_KEEP_ALIVE=str(args.keep_alive))
    log = open(workdir / "reliability_server.log", "w")  # noqa: SIM115 - closed after the server stops
    process = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "serve", "--model", str(bundle), "--port",
                                str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    results: dict = {}
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start; see {workdir / 'reliability_server.log'}")
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        for name in chosen:
            results[name] = SECTIONS[name](args, url, psutil.Process(process.pid), payloads)
    finally:
        os.kill(process.pid, signal.SIGTERM)
        process.wait(60)
        log.close()
    load_average = os.getloadavg()
    for value in results.values():
        value["machine"] = {"cpus": os.cpu_count(), "load_average_1_5_15": load_average}
    if args.out:
        out = Path(args.out)
        merged = json.loads(out.read_text()) if out.exists() else {}
        merged.update(results)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(merged, indent=1))


if __name__ == "__main__":
    main()

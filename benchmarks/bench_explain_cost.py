"""What an explanation costs at the API: `/explain` p50 against `/predict` p50 for 100-event customers, per model,
with each model family's default attribution method (issue 9's target: `/explain` ≤ 3 × `/predict`).

    .venv/bin/python benchmarks/bench_explain_cost.py --workdir work --out benchmarks/results/explain_cost.json

Models: every trained bundle of the demo in ``--workdir`` (its MLflow artifacts), found as
``bench_explanations.py`` finds them. Per model: ``journey serve`` on 127.0.0.1 (a free port, one worker),
one client sending one-customer requests back to back — ``--requests`` to `/predict`, then as many to
`/explain`, over the same customers (real journeys of the demo's synthetic bank, cut to 100 events) — then the
server is stopped by its PID. The client runs on the same machine and takes CPU from the server; the load
average is printed and saved.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_explanations import find_bundles  # noqa: E402 - the demo's bundles, as the explanation benchmark finds them
from bench_serving import customers_of_length  # noqa: E402

from journey_model.inference.attribution import default_method  # noqa: E402
from journey_model.inference.scorer import Scorer  # noqa: E402
from serving.process import free_port, running_server  # noqa: E402


def time_requests(client, url: str, payloads: list[dict], requests: int) -> list[float]:
    latencies = []
    for i in range(requests):
        body = {"customers": [payloads[i % len(payloads)]]}
        started = time.perf_counter()
        response = client.post(url, json=body)
        latencies.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"{url}: {response.status_code} {response.text[:300]}")
    return latencies


def measure(bundle: Path, payloads: list[dict], requests: int, workdir: Path) -> dict:
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, BENTOML_DO_NOT_TRACK="True", BENTOML_HOME=str(workdir / "bentoml_home"))
    command = [sys.executable, "-m", "pipelines.cli", "serve", "--model", str(bundle), "--port", str(port),
               "--max-events", "1000"]
    with running_server(command, url, workdir / f"server-{bundle.parent.name}.log", env=env, timeout_s=180), \
            httpx.Client(timeout=120) as client:
        time_requests(client, f"{url}/predict", payloads, 10)  # warm-up
        time_requests(client, f"{url}/explain", payloads, 5)
        predict = time_requests(client, f"{url}/predict", payloads, requests)
        explain = time_requests(client, f"{url}/explain", payloads, requests)
    p50_predict, p50_explain = float(np.median(predict)), float(np.median(explain))
    return {"predict_p50_ms": p50_predict, "explain_p50_ms": p50_explain, "ratio": p50_explain / p50_predict,
            "predict_p99_ms": float(np.percentile(predict, 99)), "explain_p99_ms": float(np.percentile(explain, 99))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="work", help="a `journey demo` working folder")
    parser.add_argument("--models", help="comma-separated model names (default: every bundle found)")
    parser.add_argument("--events", type=int, default=100, help="events per customer (default: %(default)s)")
    parser.add_argument("--requests", type=int, default=60, help="requests per endpoint (default: %(default)s)")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    workdir = Path(args.workdir)
    events = pq.read_table(workdir / "data" / "synth" / "events").to_pandas()
    events = events[events["ts"] < pd.Timestamp("2024-12-01", tz="UTC")]
    payloads = customers_of_length(events, args.events, 30)
    bundles = find_bundles(workdir, workdir / "data" / "prepared")
    if args.models:
        bundles = {name: path for name, path in bundles.items() if name in args.models.split(",")}
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} on {os.cpu_count()} cores", flush=True)
    results = []
    for name, bundle in bundles.items():
        method = default_method(Scorer.load(bundle))
        row = {"model": name, "method": method, "events_per_customer": args.events,
               **measure(bundle, payloads, args.requests, workdir)}
        results.append(row)
        print(f"{name:14s} {method:22s} /predict p50 {row['predict_p50_ms']:6.1f} ms  /explain p50 "
              f"{row['explain_p50_ms']:6.1f} ms  ratio {row['ratio']:.2f}", flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"load_average": load, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()

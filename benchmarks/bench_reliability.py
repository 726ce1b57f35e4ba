"""Reliability evidence for the online API (issue 11): sections run one after another against one real server.

    .venv/bin/python benchmarks/bench_reliability.py --only load,largest --out benchmarks/results/reliability.json
    .venv/bin/python benchmarks/bench_reliability.py --only fuzz,kill-resume --out benchmarks/results/reliability.json

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
* ``fuzz`` — schemathesis 4.32 (its own venv, ``.venvs/schemathesis``, made on first use as the hardening test
  makes it) against its own ``journey serve`` started with a bearer token (``JOURNEY_API_TOKEN``) and the
  default limits: every operation of ``/docs.json``, all checks, phases examples, coverage and fuzzing, at most
  ``--fuzz-examples`` (100) cases per operation and phase, fixed ``--seed``; cases, failures and errors per
  operation from its JUnit and JSON reports. As in the hardening test, 400/409/413 count as accepted answers to
  schema-valid data (the schema cannot say that events must precede the cut-off, that an update needs a held
  state, or what the limits are).
* ``kill-resume`` — ``journey score`` and ``journey prepare`` (subprocesses, small ``--events-per-partition``
  so there are many partitions) on a synthetic folder of ``--kill-customers`` (3,000) customers, each run once
  uninterrupted (the reference) and then killed with SIGKILL ``--kills`` (9) times at random moments — a random
  delay after the process first touches its output folder (import time excluded), spread so that the kills fall
  over the whole job (the spill, the partitions, the manifest) — and resumed each time with the same command until
  one run finishes. After every kill: no file under a real name is partial (every visible Parquet and JSON file
  reads whole). At the end: scoring — every customer with an event before the cut-off exactly once (lost,
  doubled, unexpected), every output row identical to the reference's (mismatches); prepare — the dataset equal to
  the reference row for row (rows of each split as sorted multisets: lost, doubled, mismatches) with the same
  ``preprocessing.json``; and no temporaries (``.*.tmp``) or work folder left.

Model: ATRank at its reference size (``benchmarks/bench_batch_scoring.py`` builds it in ``--workdir``). The
server is ``journey serve`` with the default limits on 127.0.0.1 (a free port), stopped by its PID at the end;
the clients run on the same machine. ``load`` and ``largest`` share one server; ``fuzz`` starts its own (with
the token); ``kill-resume`` needs none.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_batch_scoring import build_model  # noqa: E402 - the same benchmark model
from bench_serving import CUTOFF, customers_of_length  # noqa: E402

from serving.config import ServingConfig  # noqa: E402
from serving.process import free_port, running_server  # noqa: E402

SECTIONS: dict[str, Callable[..., dict]] = {}
SHARED_SERVER: set[str] = set()  # sections run against the one shared server: f(args, url, server, payloads)
ROOT = Path(__file__).resolve().parents[1]


def section(name: str, shared_server: bool = True):
    """Register a section; without the shared server it is called as f(args, workdir, bundle)."""
    def register(function):
        SECTIONS[name] = function
        if shared_server:
            SHARED_SERVER.add(name)
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


# ---------------------------------------------------------------------------------------------- fuzz
ST_VENV = ROOT / ".venvs" / "schemathesis"  # the hardening test's venv (gitignored), schemathesis 4.32
FUZZ_TOKEN = "bench-reliability-token"


def schemathesis() -> Path:
    """``st`` of schemathesis 4.32 in its own venv, made on first use (as the hardening test makes it)."""
    st = ST_VENV / "bin" / "st"
    if not st.exists():
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(ST_VENV)], check=True, capture_output=True, timeout=120)
        subprocess.run([str(ST_VENV / "bin" / "pip"), "install", "-q", "schemathesis==4.32.*"], check=True,
                       timeout=600)
    return st


@section("fuzz", shared_server=False)
def run_fuzz(args: argparse.Namespace, workdir: Path, bundle: Path) -> dict:
    st = schemathesis()
    version = subprocess.run([str(st), "--version"], capture_output=True, text=True).stdout.strip().split()[-1]
    folder = (workdir / "fuzz").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "schemathesis.toml"
    config.write_text('[checks.positive_data_acceptance]\nexpected-statuses = ["2xx", "400", "409", "413"]\n')
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, BENTOML_DO_NOT_TRACK="True", BENTOML_HOME=str(workdir / "bentoml_home"),
               JOURNEY_API_TOKEN=FUZZ_TOKEN)
    command = [str(st), "--config-file", str(config), "run", f"{url}/docs.json", "--checks", "all",
               "--max-examples", str(args.fuzz_examples), "--phases", "examples,coverage,fuzzing",
               "--header", f"Authorization: Bearer {FUZZ_TOKEN}", "--request-timeout", "60", "--seed",
               str(args.seed), "--workers", "2", "--no-color", "--report", "junit,ndjson,json",
               "--report-dir", str(folder / "report")]
    with running_server([sys.executable, "-m", "pipelines.cli", "serve", "--model", str(bundle), "--port",
                         str(port)], url, folder / "server.log", env=env, cwd=ROOT, timeout_s=180):
        started = time.perf_counter()
        run = subprocess.run(command, capture_output=True, text=True, cwd=folder,
                             env={**os.environ, "SCHEMATHESIS_HOOKS": ""})
        seconds = time.perf_counter() - started
    (folder / "schemathesis.out").write_text(run.stdout + run.stderr)
    reports = folder / "report"
    summary = json.loads(max(reports.glob("json-*.json")).read_text())
    operations = _fuzz_operations(max(reports.glob("ndjson-*.ndjson")))
    result = {"schemathesis": version, "exit_status": run.returncode, "seconds": seconds,
              "max_examples": args.fuzz_examples, "seed": args.seed, "token": True,
              "phases": "examples,coverage,fuzzing", "checks": "all",
              "operations_tested": summary["operations"]["tested"], "test_cases": summary["test_cases"],
              "unique_failures": len(summary["failures"]), "errors": len(summary["errors"]),
              "failures_detail": summary["failures"][:20], "errors_detail": summary["errors"][:20],
              "warnings": {k: v for k, v in summary["warnings"].items() if v}, "operations": operations}
    print(f"fuzz: schemathesis {version}, exit {run.returncode}, {seconds:.0f} s, "
          f"{summary['test_cases']['generated']} cases, {summary['test_cases']['with_failures']} with failures, "
          f"{len(summary['errors'])} errors", flush=True)
    for label, row in operations.items():
        print(f"  {label:16s} cases {row['cases']:5d}  failed {row['cases_failed']:3d}  "
              f"failed checks {row['failed_checks'] or '-'}  statuses {row['statuses']}", flush=True)
    return result


def _fuzz_operations(ndjson: Path) -> dict[str, dict]:
    """Cases, cases with a failed check, failed checks by name and answered statuses, per operation (all phases)."""
    operations: dict[str, dict] = {}
    with open(ndjson) as lines:
        for line in lines:
            event = json.loads(line)
            finished = event.get("ScenarioFinished")
            if finished is None:
                continue
            recorder = finished["recorder"]
            row = operations.setdefault(recorder["label"], {"cases": 0, "cases_by_phase": {}, "cases_failed": 0,
                                                            "failed_checks": Counter(), "statuses": Counter(),
                                                            "scenarios_not_passed": 0})
            cases = len(recorder.get("cases") or {})  # a skipped scenario (no examples in the schema) has none
            row["cases"] += cases
            row["cases_by_phase"][finished["phase"]] = row["cases_by_phase"].get(finished["phase"], 0) + cases
            row["scenarios_not_passed"] += finished["status"] not in ("success", "skip")
            for checks in (recorder.get("checks") or {}).values():
                failed = [check["name"] for check in checks if check["status"] == "failure"]
                row["cases_failed"] += bool(failed)
                row["failed_checks"].update(failed)
            for interaction in (recorder.get("interactions") or {}).values():
                response = interaction.get("response")
                row["statuses"][str(response["status_code"]) if response else "no response"] += 1
    return {label: {**row, "failed_checks": dict(row["failed_checks"]), "statuses": dict(sorted(row["statuses"].items()))}
            for label, row in sorted(operations.items())}


# ---------------------------------------------------------------------------------------------- kill-resume
KILL_CUTOFF = "2024-10-01"  # inside the synthetic year: events after it are ignored, late joiners have no history


@section("kill-resume", shared_server=False)
def run_kill_resume(args: argparse.Namespace, workdir: Path, bundle: Path) -> dict:
    folder = (workdir / "kill_resume").resolve()
    synth = folder / f"synth_{args.kill_customers}"
    if not (synth / "dataset.yaml").exists():
        subprocess.run(_journey("synth", "--out", str(synth), "--customers", str(args.kill_customers), "--seed", "5"),
                       check=True, capture_output=True, cwd=ROOT)
    partitioning = ["--events-per-partition", str(args.events_per_partition)]
    jobs = {  # name: (command for an output folder, the file that marks it complete)
        "score": (lambda out: _journey("score", "--model", str(bundle.resolve()), "--events", str(synth), "--out",
                                      str(out), "--cutoff", KILL_CUTOFF, "--no-progress", *partitioning), "_manifest.json"),
        "prepare": (lambda out: _journey("prepare", "--events", str(synth), "--out", str(out), "--label-horizon-days",
                                         "30", *partitioning), "manifest.json"),
    }
    rng = random.Random(args.seed)
    result = {"customers": args.kill_customers, "events_per_partition": args.events_per_partition,
              "cutoff": KILL_CUTOFF}
    for name, (command, marker) in jobs.items():
        reference, killed = folder / f"{name}_reference", folder / f"{name}_killed"
        row = _kill_and_resume(command, marker, reference, killed, args.kills, rng)
        row.update(_compare_scores(synth, reference, killed) if name == "score" else _compare_prepared(reference, killed))
        row["leftovers"] = _leftovers(killed)
        result[name] = row
        print(f"kill-resume {name}: {row['kills']} kills ({row['kills_by_phase']}), {row['resumes']} resumes "
              f"({row['resumes_failed']} failed: {row['resume_errors']}), "
              f"lost {row['lost']}, doubled {row['doubled']}, mismatches {row['mismatches']}, partial visible files "
              f"after kills {row['partial_visible_after_kills']}, leftovers {row['leftovers']}; reference "
              f"{row['reference_seconds']:.1f} s, killed+resumed {row['killed_total_seconds']:.1f} s in all, last "
              f"resume {row['last_resume_seconds']:.1f} s", flush=True)
    return result


def _journey(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "pipelines.cli", *arguments]


def _activity(out: Path, since: float) -> bool:
    """Whether anything under ``out`` (itself included) was created, changed or removed after ``since``."""
    if not out.exists():
        return False
    try:
        return any(path.stat().st_mtime >= since for path in (out, *out.rglob("*")))
    except FileNotFoundError:  # a file renamed or removed while we looked: activity
        return True


def _phase(out: Path, marker: str) -> str:
    """Where a job was when it was killed, from what it had written: starting, scan/spill (no part marked
    done yet), parts, finished (its manifest written)."""
    if (out / marker).exists():
        return "finished"
    work = out / "_work"
    if not work.exists():
        return "starting"
    return "parts" if any(work.glob("done-*.json")) else "scan/spill"


def _parts_started(out: Path) -> bool:
    """The job is past its scan/spill (which a resumed run redoes): a part is marked done."""
    return any((out / "_work").glob("done-*.json")) or any(out.glob("*manifest.json"))


def _run(command: list[str], out: Path, kill_after: float | None) -> dict:
    """Run ``command``; SIGKILL its process group ``kill_after`` s after it first touches ``out`` (None: never).

    Returns how it ended ("killed" or "exited"), its wall time, when it first touched ``out`` and when its first
    part was marked done (both from its start).
    """
    since = time.time() - 0.01
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    touched = parts = kill_at = None
    while process.poll() is None:
        now = time.perf_counter()
        if touched is None and _activity(out, since):
            touched = now - started
            if kill_after is not None:
                kill_at = now + kill_after
        if touched is not None and parts is None and _parts_started(out):
            parts = now - started
        if kill_at is not None and now >= kill_at:
            os.killpg(process.pid, signal.SIGKILL)  # the job's own process group: it and any child
            process.wait()
            return {"ended": "killed", "seconds": time.perf_counter() - started, "touched": touched, "parts": parts}
        time.sleep(0.02)
    stderr = process.stderr.read().strip()
    return {"ended": "exited" if process.returncode == 0 else "failed", "exit_status": process.returncode,
            "seconds": time.perf_counter() - started, "touched": touched, "parts": parts,
            **({"error": stderr[-500:]} if process.returncode else {})}


def _kill_and_resume(command: Callable[[Path], list[str]], marker: str, reference: Path, killed: Path, kills: int,
                     rng: random.Random) -> dict:
    """Kill moments: a random delay after the run first touches its folder (imports excluded), up to the time
    left of the scan/spill (redone by a resumed run, taken from the reference) plus 2/K of the rest of the
    job, so that the K kills fall in the scan and over the parts and the end alike; the first one always falls
    in the scan."""
    for out in (reference, killed):
        if out.exists():
            shutil.rmtree(out)
    first = _run(command(reference), reference, None)
    if first["ended"] != "exited":
        raise SystemExit(f"{' '.join(command(reference))} failed: {first.get('error')}")
    touched = first["touched"] or 0.0
    work = first["seconds"] - touched  # the job's own work, import time excluded
    scan = min(work, (first["parts"] or first["seconds"]) - touched)  # to the first part marked done
    window = 2.0 * (work - scan) / max(kills, 1)
    runs, partial = [], 0
    for index in range(kills):  # the first kill in the scan/spill, the others over the rest
        delay = rng.uniform(0.0, scan if index == 0 else window + (0.0 if _parts_started(killed) else scan))
        run = _run(command(killed), killed, delay)
        run.update(kill_delay_s=delay, phase=_phase(killed, marker) if run["ended"] == "killed" else "exited")
        runs.append(run)
        if run["ended"] != "killed":  # finished before its kill, or refused to resume (reported)
            break
        partial += len(_partial_visible(killed))  # no file under a real name may be partial after a kill
    if not runs or runs[-1]["ended"] == "killed":
        runs.append({**_run(command(killed), killed, None), "kill_delay_s": None, "phase": "exited"})
    kill_runs = [run for run in runs if run["ended"] == "killed"]
    failed = [run for run in runs if run["ended"] == "failed"]
    return {"kills": len(kill_runs), "resumes": len(runs) - 1, "resumes_failed": len(failed),
            "resume_errors": [run["error"] for run in failed],
            "kills_by_phase": dict(Counter(run["phase"] for run in kill_runs)),
            "partial_visible_after_kills": partial, "reference_seconds": first["seconds"],
            "reference_work_seconds": work, "reference_scan_seconds": scan,
            "killed_total_seconds": sum(run["seconds"] for run in runs), "last_resume_seconds": runs[-1]["seconds"],
            "runs": runs}


def _partial_visible(out: Path) -> list[str]:
    """Files under real (not hidden, not temporary) names that do not read whole: Parquet and JSON."""
    bad = []
    for path in out.rglob("*"):
        if path.is_dir() or path.name.startswith("."):
            continue
        try:
            if path.suffix == ".parquet":
                pq.read_table(path)
            elif path.suffix == ".json":
                json.loads(path.read_text())
        except Exception:  # noqa: BLE001 - any failure to read is a partial file
            bad.append(str(path.relative_to(out)))
    return bad


def _leftovers(out: Path) -> dict:
    return {"temporaries": sorted(str(p.relative_to(out)) for p in out.rglob(".*.tmp")),
            "work_folder": (out / "_work").exists(), "partial_visible": _partial_visible(out)}


def _rows(folder: Path) -> list[dict]:
    return [row for part in sorted(folder.glob("part-*.parquet")) for row in pq.read_table(part).to_pylist()]


def _line(row: dict) -> str:
    """A row as canonical JSON: equal rows give equal lines (NaN included)."""
    return json.dumps(row, sort_keys=True, default=str)


def _compare_scores(synth: Path, reference: Path, killed: Path) -> dict:
    """Customers with history exactly once, and each one's output row equal to the uninterrupted run's."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    events = ds.dataset(synth / "events").to_table(columns=["customer_id", "ts"])
    before = pc.less(events.column("ts"), pa.scalar(datetime.fromisoformat(KILL_CUTOFF).replace(tzinfo=UTC),
                                                    events.schema.field("ts").type))
    with_history = set(pc.unique(events.filter(before).column("customer_id")).to_pylist())
    expected = {row["customer_id"]: _line(row) for row in _rows(reference)}
    got = _rows(killed)
    ids = Counter(row["customer_id"] for row in got)
    return {"customers_in_events": len(pc.unique(events.column("customer_id"))),
            "customers_with_history": len(with_history), "reference_rows": len(expected),
            "reference_equals_history": set(expected) == with_history, "rows": len(got),
            "customers_scored": len(ids), "lost": len(with_history - set(ids)),
            "doubled": sum(n - 1 for n in ids.values() if n > 1), "unexpected": len(set(ids) - with_history),
            "mismatches": sum(expected.get(row["customer_id"]) != _line(row) for row in got
                              if row["customer_id"] in expected)}


def _without(value, keys: set[str]):
    """``value`` (parsed JSON) with the given keys removed at every depth."""
    if isinstance(value, dict):
        return {k: _without(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [_without(v, keys) for v in value]
    return value


def _compare_prepared(reference: Path, killed: Path) -> dict:
    """Each split equal to the uninterrupted run's as a sorted list of rows (a multiset)."""
    result: dict = {"splits": {}, "lost": 0, "doubled": 0, "mismatches": 0}
    for split in ("train", "val", "test"):
        expected, got = Counter(map(_line, _rows(reference / split))), Counter(map(_line, _rows(killed / split)))
        lost, extra = expected - got, got - expected
        doubled = sum(min(got[line] - expected[line], got[line] - 1) for line in extra if expected[line] or got[line] > 1)
        row = {"rows": sum(got.values()), "reference_rows": sum(expected.values()), "lost": sum(lost.values()),
               "doubled": doubled, "mismatches": sum(extra.values()) - doubled,
               "identical_sorted": sorted(expected.elements()) == sorted(got.elements())}
        result["splits"][split] = row
        for key in ("lost", "doubled", "mismatches"):
            result[key] += row[key]
    # the artifact records its own output folder (and its hash covers it): equal but for that
    result["preprocessing_identical_but_out_dir"] = all(
        _without(json.loads((folder / "preprocessing.json").read_text()), {"out_dir", "artifact_hash"})
        == _without(json.loads((reference / "preprocessing.json").read_text()), {"out_dir", "artifact_hash"})
        for folder in (killed,))
    return result


# ---------------------------------------------------------------------------------------------- main
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
    parser.add_argument("--fuzz-examples", type=int, default=100,
                        help="fuzz: schemathesis --max-examples, cases per operation (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=11, help="fuzz and kill-resume: random seed "
                        "(default: %(default)s)")
    parser.add_argument("--kills", type=int, default=9, help="kill-resume: SIGKILLs per job (default: %(default)s)")
    parser.add_argument("--kill-customers", type=int, default=3000,
                        help="kill-resume: synthetic customers (default: %(default)s)")
    parser.add_argument("--events-per-partition", type=int, default=10000,
                        help="kill-resume: --events-per-partition of both jobs (default: %(default)s)")
    parser.add_argument("--out", help="merge the results into this JSON file (one key per section)")
    args = parser.parse_args()
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown sections {sorted(unknown)}; known: {sorted(SECTIONS)}")

    workdir = Path(args.workdir)
    bundle = build_model(workdir)
    results: dict = {}
    shared = [name for name in chosen if name in SHARED_SERVER]
    if shared:
        events = pq.read_table(workdir / "model" / "synth" / "events").to_pandas()
        payloads = customers_of_length(events, args.events, 64)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = dict(os.environ, BENTOML_DO_NOT_TRACK="True", BENTOML_HOME=str(workdir / "bentoml_home"),
                   JOURNEY_KEEP_ALIVE=str(args.keep_alive))
        with running_server([sys.executable, "-m", "pipelines.cli", "serve", "--model", str(bundle), "--port",
                             str(port)], url, workdir / "reliability_server.log", env=env, timeout_s=180) as process:
            for name in shared:
                results[name] = SECTIONS[name](args, url, psutil.Process(process.pid), payloads)
    for name in chosen:
        if name not in SHARED_SERVER:
            results[name] = SECTIONS[name](args, workdir, bundle)
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

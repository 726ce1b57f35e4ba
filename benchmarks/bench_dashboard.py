"""How fast the dashboard's queries answer at scale: one customer among 1M scored, the portfolio over 100k.

Synthesizes (numpy, seconds not hours) a scoring run of 1M customers in batch scoring's exact output schema —
scores with ineligible customers (null score, rule and sentence), flags, next-event forecasts and top reasons,
spread over parts by customer hash as `journey score` spreads them — plus a canonical event log of those
customers (synth's behaviour types, ~30 events each, written in customer order like `journey synth`), and a
100k-customer run over the same events. Then times, through :class:`dashboard.data.ScoreStore` (what the app
calls):

* **customer**: the customer's rows in every run + all its events + the timeline frame, for random ids among
  1M (cold store, then warm); with ``--model`` also the per-event explanation by that model (warm);
* **portfolio**: counts, the score histogram split by segment, the per-segment table, the ineligible rules and
  the top 50 of the ranked list over 100k (and, for reference, over 1M); the one-time segment profile build
  is reported separately.

    .venv/bin/python benchmarks/bench_dashboard.py [--customers 1000000] [--out /tmp/journey-bench-dashboard]
        [--model models:/journey-synth_bank-outcome@champion --tracking-uri sqlite:///$PWD/work/mlflow.db]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dashboard.data import Filters, ScoreStore
from dashboard.explaining import explain_customer
from journey_model.inference.explain import REASON_TYPE
from journey_model.tracking.loading import open_model
from journey_model.tracking.store import mlflow_scope

TYPES = np.array(["login", "card_payment", "transfer_in", "transfer_out", "salary", "fee", "complaint",
                  "call_centre", "product_view", "product_application", "missed_payment", "account_open"])
TYPE_P = np.array([0.34, 0.3, 0.08, 0.08, 0.05, 0.03, 0.01, 0.02, 0.05, 0.01, 0.01, 0.02])
ITEMS = np.array(["groceries", "fuel", "restaurants", "travel", "credit_card", "personal_loan", "mortgage",
                  "savings_account", "overdraft", "current_account"])
CHANNELS = np.array(["app", "web", "branch", "pos"])
OUTCOMES = ("churn", "default", "uptake")
BUCKETS = np.array(["0-1 days", "1-3 days", "3-7 days", "7-15 days", "15-31 days", "31-63 days", "63-127 days"])
CUTOFF = pd.Timestamp("2024-12-01", tz="UTC")
START = pd.Timestamp("2024-01-01", tz="UTC")
EVENTS_PER_CUSTOMER = 30


def customer_ids(n: int) -> pa.Array:
    return pa.array(np.char.add("C", np.char.zfill(np.arange(n).astype(str), 8)).astype(object), pa.string())


def write_events(folder: Path, n: int, rng: np.random.Generator, chunk: int = 100_000) -> int:
    """Canonical events of customers 0..n-1 in customer order, one part per ``chunk`` customers."""
    (folder / "events").mkdir(parents=True, exist_ok=True)
    ids = customer_ids(n)
    span = (CUTOFF + pd.Timedelta(days=31) - START).value // 1000  # µs, a month past the cut-off
    total = 0
    for part, first in enumerate(range(0, n, chunk)):
        count = min(chunk, n - first)
        per = rng.poisson(EVENTS_PER_CUSTOMER, count) + 1
        owner = np.repeat(np.arange(first, first + count), per)
        ts = START.value // 1000 + rng.integers(0, span, len(owner))
        order = np.lexsort((ts, owner))
        owner, ts = owner[order], ts[order]
        kind = rng.choice(len(TYPES), len(owner), p=TYPE_P)
        table = pa.table({
            "customer_id": ids.take(pa.array(owner)),
            "ts": pa.array(ts, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            "event_type": pa.array(TYPES[kind].astype(object), pa.string()),
            "event_id": pa.array(np.char.add("e", np.arange(total, total + len(owner)).astype(str)).astype(object)),
            "item": pa.array(ITEMS[rng.integers(0, len(ITEMS), len(owner))].astype(object), pa.string()),
            "channel": pa.array(CHANNELS[rng.choice(4, len(owner), p=[0.6, 0.3, 0.05, 0.05])].astype(object)),
            "device": pa.nulls(len(owner), pa.string()),
            "amount": pa.array(np.round(rng.lognormal(3.5, 1.0, len(owner)), 2)),
            "balance": pa.nulls(len(owner), pa.float64()),
        })
        pq.write_table(table, folder / "events" / f"part-{part:05d}.parquet", row_group_size=250_000)
        total += len(owner)
    return total


def reasons(n: int, rng: np.random.Generator) -> pa.Array:
    per_row = 3 * len(OUTCOMES)
    total = n * per_row
    structs = pa.StructArray.from_arrays([
        pa.array(np.tile(np.repeat(np.array(OUTCOMES, dtype=object), 3), n), pa.string()),
        pa.array(TYPES[rng.integers(0, len(TYPES), total)].astype(object), pa.string()),
        pa.array(BUCKETS[rng.integers(0, len(BUCKETS), total)].astype(object), pa.string()),
        pa.array(rng.random(total) / 3),
        pa.array(rng.integers(1, 20, total).astype(np.int32)),
    ], fields=list(REASON_TYPE))
    return pa.ListArray.from_arrays(pa.array(np.arange(0, total + 1, per_row, dtype=np.int32)), structs)


def write_scores(folder: Path, events: Path, customers: np.ndarray, rng: np.random.Generator, parts: int) -> None:
    """A finished scoring run in batch scoring's schema, customers spread over ``parts`` by hash."""
    folder.mkdir(parents=True, exist_ok=True)
    n = len(customers)
    columns: dict[str, pa.Array] = {
        "customer_id": customer_ids(int(customers.max()) + 1).take(pa.array(customers)),
        "cutoff": pa.array(np.full(n, CUTOFF.value // 1000), pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "model_name": pa.array(["journey-synth_bank-outcome"] * n), "model_version": pa.array(["1"] * n),
        "n_events": pa.array(np.minimum(rng.poisson(EVENTS_PER_CUSTOMER, n), 100).astype(np.int32)),
    }
    closed = rng.random(n) < 0.06
    for outcome, (a, b) in zip(OUTCOMES, [(1.2, 8.0), (0.6, 30.0), (1.0, 6.0)], strict=True):
        p = rng.beta(a, b, n)
        columns[f"p_{outcome}"] = pa.array(np.where(closed, np.nan, p), from_pandas=True)
        columns[f"ineligible_{outcome}"] = pa.array(np.where(closed, "account closed on 2024-10-03", None))
        columns[f"flag_{outcome}"] = pa.array(np.where(closed, False, p >= np.quantile(p, 0.9)))
    for k in (1, 2, 3):
        columns[f"next_event_{k}"] = pa.array(TYPES[rng.integers(0, len(TYPES), n)].astype(object), pa.string())
        columns[f"p_next_event_{k}"] = pa.array(rng.random(n) / (k + 1))
    for outcome in OUTCOMES:
        columns[f"ineligible_rule_{outcome}"] = pa.array(np.where(closed, "account_closed", None))
    columns["top_reasons"] = reasons(n, rng)
    table = pa.table(columns)
    bucket = (pd.util.hash_array(np.asarray(customers)) % parts).astype(np.int64)
    for part in range(parts):
        rows = np.flatnonzero(bucket == part)
        pq.write_table(table.take(pa.array(rows)), folder / f"part-{part:05d}.parquet")
    manifest = {"model_name": "journey-synth_bank-outcome", "model_version": "1", "cutoff": "2024-12-01T00:00:00Z",
                "customers": n, "files": [f"part-{p:05d}.parquet" for p in range(parts)],
                "config": {"events_dir": str(events), "model": "models:/journey-synth_bank-outcome@champion"},
                "model_uri": "models:/journey-synth_bank-outcome@champion"}
    (folder / "_manifest.json").write_text(json.dumps(manifest, indent=1))


def timed(function, repeat: int = 1) -> tuple[float, object]:  # noqa: ANN001
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def open_customer(store: ScoreStore, customer: str) -> pd.DataFrame:
    """What the customer view reads before drawing: its rows in every run, its events, the timeline frame."""
    rows = store.customer_runs(customer)
    run, row = rows[-1]
    events = store.customer_events(run, customer).to_pandas()
    return events[events["ts"] < pd.Timestamp(row["cutoff"])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--portfolio-customers", type=int, default=100_000)
    parser.add_argument("--out", default="/tmp/journey-bench-dashboard")
    parser.add_argument("--lookups", type=int, default=20)
    parser.add_argument("--model", default=None, help="also time the per-event explanation with this model URI")
    parser.add_argument("--tracking-uri", default=None)
    args = parser.parse_args()
    rng = np.random.default_rng(7)
    out = Path(args.out)
    big, small, events = out / f"w{args.customers}", out / f"w{args.portfolio_customers}", out / "data"
    if not (big / "scores" / "_manifest.json").exists():
        started = time.perf_counter()
        n_events = write_events(events, args.customers, rng)
        write_scores(big / "scores", events, np.arange(args.customers), rng, parts=8)
        write_scores(small / "scores", events, np.sort(rng.choice(args.customers, args.portfolio_customers,
                                                                  replace=False)), rng, parts=2)
        print(f"generated {args.customers:,} scored customers and {n_events:,} events in "
              f"{time.perf_counter() - started:.0f} s under {out}")
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"machine: {os.cpu_count()} cores; uptime: {load}")

    for label, root in ((f"{args.portfolio_customers:,}", small), (f"{args.customers:,}", big)):
        build, store = timed(lambda root=root: ScoreStore(root))
        profiles, _ = timed(lambda store=store: store.dimensions(0))
        cold, result = timed(lambda store=store: store.portfolio(0, "churn", Filters(), "channel", top=50))
        warm, _ = timed(lambda store=store: store.portfolio(0, "churn", Filters(), "channel", top=50), repeat=3)
        filtered, _ = timed(lambda store=store: store.portfolio(
            0, "churn", Filters({"channel": ["web"]}, 0.2, flagged_only=True), "activity", top=50), repeat=3)
        print(f"portfolio over {label} customers: {cold:.2f} s first, {warm:.2f} s again, {filtered:.2f} s "
              f"filtered (segment profiles: {profiles:.1f} s once, cached; store {build:.2f} s); "
              f"{result.eligible:,} eligible")

    store = ScoreStore(big)
    picks = [f"C{i:08d}" for i in rng.integers(0, args.customers, args.lookups)]
    first, _ = timed(lambda: open_customer(store, picks[0]))
    times = [timed(lambda c=c: open_customer(store, c))[0] for c in picks[1:]]
    print(f"customer among {args.customers:,}: {first:.2f} s first, median {statistics.median(times):.2f} s, "
          f"max {max(times):.2f} s over {len(times)} more ids")
    if args.model:
        uri = args.tracking_uri or f"sqlite:///{Path('work/mlflow.db').resolve()}"
        with mlflow_scope(uri):
            scorer, identity = open_model(args.model)
        explained = []
        for customer in picks[:5]:
            run, row = store.customer_runs(customer)[-1]
            explained.append(timed(lambda c=customer, r=run, w=row: explain_customer(
                scorer, store.customer_events(r, c), c, pd.Timestamp(w["cutoff"])))[0])
        print(f"  + explanation by {identity.name} v{identity.version} ({identity.architecture}, default method): "
              f"median {statistics.median(explained):.2f} s over {len(explained)} customers")


if __name__ == "__main__":
    main()

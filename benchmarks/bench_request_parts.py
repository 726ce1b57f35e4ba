"""Where a /predict request's server CPU goes, step by step, in this process (no HTTP).

The API's scoring path is :class:`serving.service.JourneyScoring`: the checks (JSON body -> canonical events,
``parse``), then on the batch thread ``encode_examples`` -> ``Scorer.forward`` (collate + the model) -> score
columns -> the response. This times each step on the same customers (thread CPU time, so the machine's other work
hardly shows), and the model's own parts (embedding, one attention block, the task heads), at each batch size:
what a pass of ``--batches`` customers costs per customer. ``--torch-profile`` adds torch's operator table for the
model at the first batch size.

    .venv/bin/python benchmarks/bench_request_parts.py --events 100 --batches 1,4,64 \\
        --out benchmarks/results/request_parts.json

The model and customers are ``bench_serving.py``'s (built on first use under ``--workdir``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_batch_scoring import build_model  # noqa: E402 - the same benchmark model
from bench_serving import customers_of_length  # noqa: E402 - the same customers

from journey_model.data.sequences import encode_examples  # noqa: E402
from journey_model.models.attention import rotary_tables  # noqa: E402
from serving.bulk import validate_customers  # noqa: E402
from serving.config import ServingConfig  # noqa: E402
from serving.requests import ParsedRequest  # noqa: E402
from serving.service import JourneyScoring  # noqa: E402


def cpu_ms(step: Callable[[], object], seconds: float) -> float:
    """Thread CPU milliseconds per call of ``step``, over at least ``seconds`` of CPU (after one warm-up call)."""
    step()
    calls, started = 0, time.thread_time()
    while time.thread_time() - started < seconds or calls < 3:
        step()
        calls += 1
    return 1000 * (time.thread_time() - started) / calls


def parts(scoring: JourneyScoring, bodies: list[list[dict]], batch: int, seconds: float) -> dict[str, float]:
    """CPU ms per customer of each step for passes of ``batch`` one-customer requests."""
    sent = [bodies[i % len(bodies)] for i in range(batch)]
    parsed = [scoring.parse(validate_customers(body)) for body in sent]
    raw_bodies = [json.dumps({"customers": body}).encode() for body in sent]

    def encode() -> pa.Table:
        return encode_examples(scoring.preprocessor, *_tables(parsed))

    encoded_table = encode()
    rows = encoded_table.to_pylist()
    scorer, model = scoring.scorer, scoring.scorer.model
    collated = scorer.collate(rows)
    _, output = scorer.forward(rows)
    encoder = model.encoder
    with torch.inference_mode():
        states = encoder.embedding(collated)
        encoded = encoder(collated)
        rotary = rotary_tables(states.shape[1], encoder.config.hidden_size // encoder.config.num_heads, states.device) \
            if encoder.config.positional_encoding == "rotary" else None
        block = encoder.blocks[0]
        steps: dict[str, Callable[[], object]] = {
            "JSON decoding and checks": lambda: [scoring.parse(validate_customers(json.loads(raw)["customers"]))
                                                 for raw in raw_bodies],
            "encode_examples": encode,
            "to_pylist": encoded_table.to_pylist,
            "collate": lambda: scorer.collate(rows),
            "Scorer.forward (collate + model)": lambda: scorer.forward(rows),
            "model": lambda: model(collated),
            "model: embedding": lambda: encoder.embedding(collated),
            "model: one attention block": lambda: block(states, states, key_mask=collated.mask,
                                                        query_mask=collated.mask, rotary=rotary),
            "model: task heads": lambda: model.heads(encoded, collated.next_item),
            "score columns": lambda: scorer.score_columns(rows, collated, output),
            "score (the batch thread's whole pass)": lambda: scoring.score(parsed),
        }
        return {name: cpu_ms(step, seconds) / batch for name, step in steps.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="work/bench_batch_scoring", help="benchmark model and data")
    parser.add_argument("--events", type=int, default=100, help="events per customer")
    parser.add_argument("--batches", default="1,4,64", help="customers per pass, comma-separated")
    parser.add_argument("--seconds", type=float, default=2.0, help="CPU seconds per step and batch size")
    parser.add_argument("--torch-profile", action="store_true", help="torch's operator table at the first batch size")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as a server worker (journey serve --torch-threads, default 1)
    workdir = Path(args.workdir)
    bundle = build_model(workdir, "default").resolve()
    events = pq.read_table(workdir / "model" / "synth" / "events").to_pandas()
    bodies = [[customer] for customer in customers_of_length(events, args.events, 64)]
    scoring = JourneyScoring(ServingConfig(model_uri=str(bundle)))
    batches = [int(b) for b in args.batches.split(",")]
    table = {}
    for batch in batches:
        table[batch] = parts(scoring, bodies, batch, args.seconds)
        print(f"\nbatch {batch}: CPU ms per customer ({args.events}-event customers, load "
              f"{os.getloadavg()[0]:.1f})", flush=True)
        for name, ms in table[batch].items():
            print(f"  {name:<40} {ms:8.3f}", flush=True)
    if args.torch_profile:
        from torch.profiler import ProfilerActivity, profile

        parsed = [scoring.parse(validate_customers(body)) for body in bodies[:batches[0]]]
        rows = encode_examples(scoring.preprocessor, *_tables(parsed)).to_pylist()
        collated = scoring.scorer.collate(rows)
        with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as profiler:
            for _ in range(50):
                scoring.scorer.model(collated)
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    if args.out:
        Path(args.out).write_text(json.dumps({
            "command": " ".join([".venv/bin/python", *sys.argv]), "events_per_customer": args.events,
            "load_1min": os.getloadavg()[0], "cpu_ms_per_customer": table}, indent=1))


def _tables(parsed: list[ParsedRequest]) -> tuple[pa.Table, pa.Table]:
    """Parsed requests' canonical events and examples, concatenated, as ``JourneyScoring.score`` takes them."""
    return pa.concat_tables([r.events for r in parsed]), pa.concat_tables([r.examples for r in parsed])


if __name__ == "__main__":
    main()

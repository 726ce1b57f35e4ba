"""Training throughput: torch threads, glibc malloc settings, and a (T, H) grid with analytic FLOPs.

What one training step costs — forward, the training losses of every task the model supports, backward,
gradient clipping and the model's own optimiser (:func:`journey_model.training.recipes.recipe_for`) — at the
batch size `journey train` uses (64 customers). Lightning's per-step bookkeeping is left out: it is the same for
every model and setting. Batches are synthetic, with the demo data's vocabularies and behaviour groups.

Three modes:

``--threads-mode`` (the default): models atrank, gru-attn, lstm-luong, gru-bahdanau at 1 vs 2 torch threads
(vs torch's own default when it differs), with and without ``MALLOC_MMAP_MAX_=0
MALLOC_TRIM_THRESHOLD_=68719476736``, under the machine's own ("light") load and with a competing CPU-bound
process that the benchmark starts ("heavy"). Every cell is a fresh child process (glibc reads the malloc
variables at start-up only); the cells are interleaved and repeated in reversed order, so slow drifts of the
shared machine's load hit every setting alike. ``os.getloadavg()`` is recorded beside every timing.

``--grid``: atrank, gru-attn, lstm-luong on full-length batches of T = 50, 200, 1000 events and width
H = 64, 128, 256: samples/s, events/s, ms/step, peak RSS, analytic FLOPs per step (the matmuls' formula below;
backward = 2x forward, so a step is 3x forward) and the achieved FLOP/s. On CUDA it runs under bf16 autocast and
reports the model FLOPs utilisation (MFU) against ``--peak-tflops`` (H200 bf16 dense: 989). A cell whose
predicted time exceeds ``--cell-budget`` is skipped and marked.

``--profile``: cProfile and torch.profiler tables of one model's training step (T = 50, H = 64 by default).

    .venv/bin/python benchmarks/bench_training_throughput.py                 # threads x malloc x load
    .venv/bin/python benchmarks/bench_training_throughput.py --grid          # the (T, H) grid
    .venv/bin/python benchmarks/bench_training_throughput.py --profile --models gru-attn
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"
TUNED = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "68719476736"}
THREAD_MODELS = ["atrank", "gru-attn", "lstm-luong", "gru-bahdanau"]
GRID_MODELS = ["atrank", "gru-attn", "lstm-luong"]
GRID_T = [50, 200, 1000]
GRID_H = [64, 128, 256]
BATCH_SIZE = 64  # TrainConfig.batch_size's default: customers per optimiser step


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ---------------------------------------------------------------------------------------------- inputs


def demo_spec():  # noqa: ANN201
    """The FeatureSpec of `make demo`'s prepared bank data (vocabularies, groups, targets), written out."""
    from journey_model.data.features import BehaviourGroup, FeatureSpec

    return FeatureSpec(
        event_type_vocab_size=18,
        categorical_vocab_sizes={"item": 58, "channel": 9, "device": 5},
        numeric_fields=["amount", "balance"],
        num_time_buckets=14,
        behaviour_groups=[
            BehaviourGroup("login", [4], ["channel", "device"], []),
            BehaviourGroup("payments", [5, 6, 7], ["item", "channel"], ["amount", "balance"]),
            BehaviourGroup("views", [8, 9], ["item", "channel", "device"], []),
            BehaviourGroup("salary", [10], [], ["amount", "balance"]),
            BehaviourGroup("fee", [11], ["item"], ["amount", "balance"]),
            BehaviourGroup("service", [12, 13, 14, 15], ["item", "channel"], []),
            BehaviourGroup("arrears", [16, 17], ["item"], ["amount"]),
        ],
        outcome_names=["churn", "default", "uptake"],
        item_field="item",
        forecast_steps=5,
    )


def synthetic_batch(spec, batch_size: int, T: int, min_length: int | None = None, seed: int = 0):  # noqa: ANN001, ANN201
    """B random journeys of ``min_length``..T events (all T when ``min_length`` is None) with every target."""
    import torch

    from journey_model.data.batch import SequenceBatch
    from journey_model.data.features import EOS_ID

    g = torch.Generator().manual_seed(seed)
    B = batch_size
    if min_length is None:
        lengths = torch.full((B,), T, dtype=torch.long)
    else:
        lengths = torch.randint(min_length, T + 1, (B,), generator=g)
    mask = torch.arange(T)[None, :] < lengths[:, None]
    V = spec.event_type_vocab_size
    event_type = torch.randint(4, V, (B, T), generator=g) * mask
    time_bucket = torch.randint(1, spec.num_time_buckets, (B, T), generator=g).sort(dim=1, descending=True).values * mask
    categorical = {name: torch.randint(2, size, (B, T), generator=g) * mask
                   for name, size in spec.categorical_vocab_sizes.items()}
    F = len(spec.numeric_fields)
    numeric = torch.randn(B, T, F, generator=g) * mask[..., None]
    numeric_mask = mask[..., None].float().expand(B, T, F).contiguous()
    K = spec.forecast_steps
    forecast = torch.cat([torch.randint(4, V, (B, K), generator=g), torch.full((B, 1), EOS_ID)], dim=1)
    return SequenceBatch(
        event_type=event_type, time_bucket=time_bucket, categorical=categorical, numeric=numeric,
        numeric_mask=numeric_mask, mask=mask, lengths=lengths,
        outcomes=torch.randint(0, 2, (B, len(spec.outcome_names)), generator=g).float(),
        next_event_type=torch.randint(4, V, (B,), generator=g),
        next_item=torch.randint(2, spec.categorical_vocab_sizes[spec.item_field], (B,), generator=g),
        forecast=forecast,
        time_gap=torch.rand(B, T, generator=g).mul(1e6).sort(dim=1, descending=True).values * mask,
        customer_id=[f"c{b}" for b in range(B)],
    )


def build_trainable(name: str, spec, hidden_size: int, seed: int = 0):  # noqa: ANN001, ANN201
    """(model in train mode with every task it supports, its recipe's optimiser, the recipe's clip norm)."""
    import torch

    from journey_model.models import build_model
    from journey_model.models.registry import supported_tasks
    from journey_model.training.recipes import recipe_for

    torch.manual_seed(seed)
    heads = 4 if hidden_size % 4 == 0 else 1
    model = build_model(name, spec, tasks=sorted(t.value for t in supported_tasks(name)),
                        hidden_size=hidden_size, num_heads=heads)
    model.train()
    recipe = recipe_for(name)
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = {"sgd": torch.optim.SGD, "adamw": torch.optim.AdamW}.get(recipe.optimizer, torch.optim.Adam)(
        params, lr=recipe.learning_rate, weight_decay=recipe.weight_decay)
    return model, optimiser, recipe.grad_clip_norm


def training_step(model, optimiser, clip, batch, autocast_device: str | None = None) -> float:  # noqa: ANN001
    """One optimiser step, as JourneyModule.training_step + Lightning's optimisation loop do it."""
    import contextlib

    import torch

    from journey_model.training.losses import compute_losses

    context = (torch.autocast(autocast_device, dtype=torch.bfloat16) if autocast_device
               else contextlib.nullcontext())
    optimiser.zero_grad(set_to_none=True)
    with context:
        output = model(batch)
        loss = compute_losses(output, batch)["loss"]
    loss.backward()
    if clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimiser.step()
    return float(loss.detach())


# ---------------------------------------------------------------------------------------------- FLOPs
#
# Forward FLOPs of the matmuls (2 per multiply-add) for B journeys of T events, hidden width H, field width D;
# element-wise work, softmaxes and embedding look-ups are left out. Backward costs 2x forward, so a training
# step is 3x forward. Per model:
#   behaviour embedding:  2 B T d_in H                 (d_in = the width of each event's group projection)
#   ATRank block:         3 x 2 B T H^2 (Q, K, V) + 2 x 2 B T^2 H (scores, weighted values) + 2 x 2 B T H F
#                         (feed-forward, F = H // 4)
#   task queries (Q):     2 B Q H^2 + 2 x 2 B T H^2 (K, V) + 2 x 2 B Q T H + 2 x 2 B Q H F_task
#   outputs:              2 B H (V_event + V_item + n_outcomes)
#   GRU layer:            2 B T (3H in + 3H H) per direction;   LSTM: 2 B T (4H in + 4H H)
#   gru-attn:             bi-GRU + merge 2 B T 2H H + pooling 2 B T H^2 + 2 B T H + outputs
#   lstm-luong:           LSTM + task queries + decoder over K steps: LSTM step 2 B (4H H + 4H H),
#                         Luong "general" 2 B H^2 + 2 x 2 B T H, combine 2 B 2H H, output 2 B H V_event
#   gru-bahdanau:         bi-GRU + merge + task queries + decoder: key(memory) 2 B T H^2 once, per step
#                         query 2 B H^2 + 2 B T H (score) + 2 B T H (context), GRU step 2 B (3H 2H + 3H H),
#                         output 2 B 2H V_event


def forward_flops(name: str, model, batch) -> dict[str, float]:  # noqa: ANN001
    """Analytic forward FLOPs of one batch, by part (the formulas above, with the model's own sizes)."""
    B, T = batch.event_type.shape
    spec = model.spec
    config = model.config
    H = config.hidden_size
    real = batch.mask
    encoder = model.encoder
    embedding = encoder.embedding
    group = embedding.group_of_type[batch.event_type]
    d_in = 0.0
    for index, projection in enumerate(embedding.projections):
        d_in += float(((group == index) & real).sum()) * projection.in_features
    parts = {"embedding": 2.0 * d_in * H}
    Tm = float(real.sum()) / B  # mean real length (the RNNs are packed; attention runs over the padded T)
    V_e = spec.event_type_vocab_size
    V_i = spec.categorical_vocab_sizes[spec.item_field]
    n_out = len(spec.outcome_names)
    outputs = 2.0 * B * H * (V_e + V_i + n_out)

    def task_queries() -> float:
        Q = len(model.heads.attention.names)
        F = config.task_ffn_width
        return 2.0 * B * Q * H * H + 4.0 * B * T * H * H + 4.0 * B * Q * T * H + 4.0 * B * Q * H * F

    def rnn(cell: str, width_in: int, directions: int, steps: float) -> float:
        gates = 3 if cell == "gru" else 4
        return directions * 2.0 * B * steps * gates * H * (width_in + H)

    if name == "atrank":
        F = config.ffn_width
        per_block = 6.0 * B * T * H * H + 4.0 * B * T * T * H + 4.0 * B * T * H * F
        if config.output_projection:
            per_block += 2.0 * B * T * H * H
        parts["self_attention"] = config.num_blocks * per_block
        parts["task_queries"] = task_queries()
        parts["outputs"] = outputs
    elif name == "gru-attn":
        parts["rnn"] = rnn("gru", H, 2, Tm)
        parts["merge"] = 2.0 * B * T * 2 * H * H + 2.0 * B * 2 * H * H
        parts["pooling"] = 2.0 * B * T * H * H + 2.0 * B * T * H + 2.0 * B * T * H
        parts["outputs"] = outputs
    elif name in ("lstm-luong", "gru-bahdanau"):
        cell = config.cell
        K = batch.forecast.shape[1]
        directions = 2 if config.bidirectional else 1
        parts["rnn"] = rnn(cell, H, directions, Tm)
        if config.bidirectional:
            parts["merge"] = 2.0 * B * T * 2 * H * H + 2.0 * B * 2 * H * H
        parts["task_queries"] = task_queries()
        parts["outputs"] = outputs
        if config.attention == "luong":
            step = rnn(cell, H, 1, 1) + 2.0 * B * H * H + 4.0 * B * T * H + 2.0 * B * 2 * H * H + 2.0 * B * H * V_e
            parts["decoder"] = K * step
        else:
            step = rnn(cell, 2 * H, 1, 1) + 2.0 * B * H * H + 4.0 * B * T * H + 2.0 * B * 2 * H * V_e
            parts["decoder"] = 2.0 * B * T * H * H + K * step
    else:
        raise ValueError(f"no FLOP formula for {name!r}")
    parts["total"] = sum(parts.values())
    return parts


def counted_forward_flops(model, batch) -> float | None:  # noqa: ANN001
    """torch's FlopCounterMode over one forward (matmuls and attention; not the fused RNN kernels)."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        counter = FlopCounterMode(display=False)
        with counter:  # not under no_grad: the counter's module hooks want autograd
            model(batch)
        return float(counter.get_total_flops())
    except Exception:  # noqa: BLE001 - a cross-check only
        return None


# ---------------------------------------------------------------------------------------------- one child


def time_steps(model, optimiser, clip, batch, min_seconds: float, max_steps: int, warmup: int,  # noqa: ANN001
               device: str = "cpu", slow_step_s: float = 3.0) -> dict[str, object]:
    import torch

    autocast = "cuda" if device == "cuda" else None

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    started = time.perf_counter()
    for _ in range(warmup):
        training_step(model, optimiser, clip, batch, autocast)
    sync()
    warmup_s = time.perf_counter() - started
    load_before = load()
    times: list[float] = []
    cpu_times: list[float] = []  # this process's CPU time: what the step costs, whatever the wait for a core
    while len(times) < max_steps and (sum(times) < min_seconds or len(times) < 2):
        if times and times[0] > slow_step_s:  # one step this slow says enough, and more would take minutes
            break
        t0, c0 = time.perf_counter(), time.process_time()
        training_step(model, optimiser, clip, batch, autocast)
        sync()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    B = batch.batch_size
    events = float(batch.mask.sum())
    median = sorted(times)[len(times) // 2]
    return {
        "steps": len(times), "warmup_s": round(warmup_s, 3),
        "ms_per_step": round(1000 * median, 2), "ms_per_step_mean": round(1000 * sum(times) / len(times), 2),
        "ms_per_step_min": round(1000 * min(times), 2),
        "cpu_ms_per_step": round(1000 * sorted(cpu_times)[len(cpu_times) // 2], 2),
        "samples_per_s": round(B / median, 1), "events_per_s": round(events / median, 0),
        "load_before": load_before, "load_after": load(),
    }


def child_threads(args: argparse.Namespace) -> dict[str, object]:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    spec = demo_spec()
    batch = synthetic_batch(spec, BATCH_SIZE, args.length, min_length=args.length // 2, seed=1)
    rows = {}
    for name in args.models:
        model, optimiser, clip = build_trainable(name, spec, args.hidden)
        rows[name] = time_steps(model, optimiser, clip, batch, args.min_seconds, args.max_steps, warmup=1)
    return {"threads": torch.get_num_threads(), "malloc_tuned": os.environ.get("MALLOC_MMAP_MAX_") == "0",
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), "models": rows}


def child_cell(args: argparse.Namespace) -> dict[str, object]:
    import torch

    device = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    if device == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    spec = demo_spec()
    name, T, H = args.models[0], args.length, args.hidden
    batch = synthetic_batch(spec, BATCH_SIZE, T, seed=1)
    model, optimiser, clip = build_trainable(name, spec, H)
    flops = forward_flops(name, model, batch)
    counted = counted_forward_flops(model, batch)
    model.train()
    batch = batch.to(device)
    model.to(device)
    # one step first: when it alone eats the budget, report it as the estimate and stop
    t0 = time.perf_counter()
    training_step(model, optimiser, clip, batch, "cuda" if device == "cuda" else None)
    if device == "cuda":
        torch.cuda.synchronize()
    first = time.perf_counter() - t0
    row: dict[str, object] = {"device": device, "threads": torch.get_num_threads(),
                              "first_step_s": round(first, 3)}
    if first * 3 > args.cell_budget:
        row.update(skipped=f"first step took {first:.1f} s: 3 steps would exceed the {args.cell_budget:.0f} s cell budget",
                   ms_per_step=round(1000 * first, 1))
    else:
        steps = max(2, min(args.max_steps, int((args.cell_budget - first) / max(first, 1e-4)) - 1))
        row.update(time_steps(model, optimiser, clip, batch, min(args.min_seconds, args.cell_budget / 2), steps,
                              warmup=1 if device == "cpu" else 3, device=device))
    step_flops = 3.0 * flops["total"]
    seconds = row["ms_per_step"] / 1000  # type: ignore[operator]
    row.update(
        forward_flops=flops, forward_flops_counted=counted, step_flops=step_flops,
        achieved_gflops=round(step_flops / seconds / 1e9, 2),
        # torch's own count covers model options the formula leaves out (e.g. a relative-time term), not LSTM kernels
        achieved_gflops_counted=round(3.0 * counted / seconds / 1e9, 2) if counted else None,
        # per second of this process's CPU time: the rate of the core while it ran, whatever the machine's load
        achieved_gflops_cpu_time=round(step_flops / (row["cpu_ms_per_step"] / 1000) / 1e9, 2)  # type: ignore[operator]
        if row.get("cpu_ms_per_step") else None,
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        peak_rss_delta_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss_start, 1),
    )
    if device == "cuda":
        row["mfu"] = round(step_flops / seconds / (args.peak_tflops * 1e12), 5)
        row["cuda_peak_mem_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        row["precision"] = "bf16 autocast"
    return row


# ---------------------------------------------------------------------------------------------- parents


def run_child(extra: list[str], tuned: bool, timeout: float, root: Path = ROOT) -> dict[str, object]:
    """This script as a fresh process (``root``: the source tree it imports Journey from)."""
    env = {k: v for k, v in os.environ.items() if k not in TUNED}
    if tuned:
        env.update(TUNED)
    script = root / "benchmarks" / Path(__file__).name
    command = [sys.executable, str(script), *extra]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=root)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


class CompetingLoad:
    """A CPU-bound busy loop in its own process, for the "heavy" condition."""

    def __init__(self, processes: int):
        self.processes = processes
        self.children: list[subprocess.Popen] = []

    def __enter__(self) -> CompetingLoad:
        for _ in range(self.processes):
            self.children.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
        time.sleep(1.0)
        return self

    def __exit__(self, *exc: object) -> None:
        for child in self.children:
            child.terminate()
        for child in self.children:
            child.wait()


def threads_mode(args: argparse.Namespace) -> None:
    import torch

    default = torch.get_num_threads()
    settings = [1, 2] + ([default] if default not in (1, 2) else [])
    cells = [(t, tuned) for t in settings for tuned in (False, True)]
    runs: list[dict[str, object]] = []
    started = time.perf_counter()
    for repeat in range(args.repeats):
        order = cells if repeat % 2 == 0 else list(reversed(cells))
        for condition in ("light", "heavy"):
            with CompetingLoad(args.load_processes if condition == "heavy" else 0):
                for threads, tuned in order:
                    extra = ["--child-threads", "--threads", str(threads), "--length", str(args.length),
                             "--hidden", str(args.hidden), "--min-seconds", str(args.min_seconds),
                             "--max-steps", str(args.max_steps), "--models", *args.models]
                    result = run_child(extra, tuned, timeout=600)
                    result.update(condition=condition, repeat=repeat, requested_threads=threads, malloc_tuned=tuned)
                    runs.append(result)
                    summary = {m: (r["ms_per_step"], r["load_before"][0]) for m, r in result.get("models", {}).items()}
                    print(json.dumps({"condition": condition, "threads": threads, "malloc": tuned, "repeat": repeat,
                                      "ms_per_step,load1": summary, "error": result.get("error")}), flush=True)
    table = summarise_threads(runs, args.models)
    report = {
        "benchmark": "training step (forward + losses + backward + clip + optimiser), one fresh process per cell",
        "machine": {"cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_default_threads": default,
                    "python": platform.python_version()},
        "batch_size": BATCH_SIZE, "length": args.length, "lengths": f"uniform {args.length // 2}..{args.length}",
        "hidden_size": args.hidden, "heavy_load": f"{args.load_processes} competing `while True: pass` process(es)",
        "seconds": round(time.perf_counter() - started, 1), "summary": table, "runs": runs,
    }
    out = Path(args.out or RESULTS / "training_throughput.json")
    existing = json.loads(out.read_text()) if out.exists() else {}
    existing["threads_malloc_load"] = report
    out.write_text(json.dumps(existing, indent=1))
    print(json.dumps(table, indent=1))
    print(f"wrote {out}")


def summarise_threads(runs: list[dict[str, object]], models: list[str]) -> list[dict[str, object]]:
    """Per condition x threads x malloc x model: the best (min over repeats) ms/step and the loads seen."""
    rows = []
    keys = sorted({(r["condition"], r["requested_threads"], r["malloc_tuned"]) for r in runs})
    for condition, threads, tuned in keys:
        for name in models:
            found = [r["models"][name] for r in runs if "models" in r and r["condition"] == condition
                     and r["requested_threads"] == threads and r["malloc_tuned"] == tuned]
            if not found:
                continue
            best = min(found, key=lambda r: r["ms_per_step"])
            rows.append({
                "condition": condition, "threads": threads, "malloc_tuned": tuned, "model": name,
                "ms_per_step": best["ms_per_step"], "ms_per_step_all": [f["ms_per_step"] for f in found],
                "samples_per_s": best["samples_per_s"], "events_per_s": best["events_per_s"],
                "load1_seen": [f["load_before"][0] for f in found],
            })
    return rows


def before_after_mode(args: argparse.Namespace) -> None:
    """The same cells from an older copy of the source tree (``--before-after DIR``, holding journey_model/) and
    from this one, alternately, so both see the same load."""
    import shutil

    before = Path(args.before_after).resolve()
    (before / "benchmarks").mkdir(exist_ok=True)
    shutil.copy(Path(__file__), before / "benchmarks" / Path(__file__).name)  # imports from its own tree
    extra = ["--child-threads", "--threads", str(args.threads), "--length", str(args.length), "--hidden",
             str(args.hidden), "--min-seconds", str(args.min_seconds), "--max-steps", str(args.max_steps),
             "--models", *args.models]
    runs = []
    for repeat in range(args.repeats):
        for label, root in (("before", before), ("after", ROOT)) if repeat % 2 == 0 else (("after", ROOT), ("before", before)):
            result = run_child(extra, tuned=True, timeout=600, root=root)
            result.update(version=label, repeat=repeat)
            runs.append(result)
            print(json.dumps({"version": label, "repeat": repeat, "error": result.get("error"),
                              "ms_per_step,load1": {m: (r["ms_per_step"], r["load_before"][0])
                                                    for m, r in result.get("models", {}).items()}}), flush=True)
    summary = []
    for name in args.models:
        row: dict[str, object] = {"model": name}
        for label in ("before", "after"):
            found = [r["models"][name] for r in runs if r["version"] == label and "models" in r]
            row[f"{label}_ms_per_step"] = min(f["ms_per_step"] for f in found) if found else None
            row[f"{label}_all"] = [f["ms_per_step"] for f in found]
            cpu = sorted(f["cpu_ms_per_step"] for f in found)
            row[f"{label}_cpu_ms_per_step_median"] = cpu[len(cpu) // 2] if cpu else None
            row[f"{label}_load1"] = [f["load_before"][0] for f in found]
        if row["before_ms_per_step"] and row["after_ms_per_step"]:
            row["speed_up"] = round(row["before_ms_per_step"] / row["after_ms_per_step"], 2)  # type: ignore[operator]
            row["cpu_speed_up"] = round(row["before_cpu_ms_per_step_median"]  # type: ignore[operator]
                                        / row["after_cpu_ms_per_step_median"], 2)
        summary.append(row)
    out = Path(args.out or RESULTS / "training_throughput.json")
    existing = json.loads(out.read_text()) if out.exists() else {}
    existing[f"{args.label}_before_after"] = {
        "benchmark": f"training step, before vs after {args.what}, alternated; speed_up from the best wall time, "
                     "cpu_speed_up from the median process CPU time (robust to the machine's load)",
        "threads": args.threads, "length": args.length, "lengths": f"uniform {args.length // 2}..{args.length}",
        "hidden_size": args.hidden, "batch_size": BATCH_SIZE, "malloc_tuned": True,
        "summary": summary, "runs": runs,
    }
    out.write_text(json.dumps(existing, indent=1))
    print(json.dumps(summary, indent=1))


def grid_mode(args: argparse.Namespace) -> None:
    import torch

    cuda = torch.cuda.is_available() and not args.cpu
    rows: list[dict[str, object]] = []
    started = time.perf_counter()
    def cost(name: str, T: int, H: int) -> float:  # the dominant terms of forward_flops, for predictions
        return T * H * H + (T * T * H if name == "atrank" else 0)

    for name in args.models:
        measured: tuple[int, int, float] | None = None  # (T, H, s/step) of this model's last measured cell
        for H in args.grid_h:
            for T in args.grid_t:
                row: dict[str, object] = {"model": name, "T": T, "H": H, "batch_size": BATCH_SIZE}
                if time.perf_counter() - started > args.total_budget:
                    row["skipped"] = f"the {args.total_budget:.0f} s total budget was spent"
                    rows.append(row)
                    continue
                if measured is not None:
                    predicted = measured[2] * cost(name, T, H) / cost(name, measured[0], measured[1])
                    if 3 * predicted > args.cell_budget:
                        row.update(predicted_ms_per_step=round(1000 * predicted),
                                   skipped=f"predicted {predicted:.1f} s/step from T={measured[0]} H={measured[1]}: "
                                           f"3 steps would exceed the {args.cell_budget:.0f} s cell budget")
                        rows.append(row)
                        print(json.dumps({k: row.get(k) for k in ("model", "T", "H", "skipped")}), flush=True)
                        continue
                extra = ["--child-cell", "--models", name, "--length", str(T), "--hidden", str(H),
                         "--threads", str(args.threads), "--cell-budget", str(args.cell_budget),
                         "--min-seconds", str(args.min_seconds), "--max-steps", str(args.max_steps),
                         "--peak-tflops", str(args.peak_tflops)] + (["--cpu"] if args.cpu else [])
                row["load_before"] = load()
                result = run_child(extra, tuned=True, timeout=args.cell_budget + 60)
                row.update(result)
                if "ms_per_step" in result:
                    measured = (T, H, float(result["ms_per_step"]) / 1000)
                rows.append(row)
                print(json.dumps({k: row.get(k) for k in ("model", "T", "H", "ms_per_step", "samples_per_s",
                                                          "events_per_s", "achieved_gflops", "mfu", "peak_rss_mb",
                                                          "load_before", "skipped", "error")}), flush=True)
    report = {
        "benchmark": "training step on full-length synthetic batches; FLOPs analytic (3x forward matmuls)",
        "device": "cuda" if cuda else "cpu", "threads": args.threads if not cuda else None,
        "malloc_tuned": True, "peak_tflops": args.peak_tflops if cuda else None,
        "cpu_count": os.cpu_count(), "torch": torch.__version__,
        "cell_budget_s": args.cell_budget, "seconds": round(time.perf_counter() - started, 1), "cells": rows,
    }
    out = Path(args.out or RESULTS / "training_throughput.json")
    existing = json.loads(out.read_text()) if out.exists() else {}
    existing["grid_cuda" if cuda else "grid_cpu"] = report
    out.write_text(json.dumps(existing, indent=1))
    plot(existing, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


def plot(report: dict[str, object], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grids = [(key, report[key]) for key in ("grid_cpu", "grid_cuda") if key in report]
    if not grids:
        return
    fig, axes = plt.subplots(len(grids), 2, figsize=(12, 4.5 * len(grids)), squeeze=False)
    for row_axes, (key, grid) in zip(axes, grids):
        cells = [c for c in grid["cells"] if "ms_per_step" in c and "skipped" not in c and "error" not in c]
        for name in sorted({c["model"] for c in cells}):
            for H, style in zip(GRID_H, ("-", "--", ":")):
                mine = sorted((c for c in cells if c["model"] == name and c["H"] == H), key=lambda c: c["T"])
                if not mine:
                    continue
                label = f"{name} H={H}"
                row_axes[0].plot([c["T"] for c in mine], [c["events_per_s"] for c in mine], style, marker="o",
                                 label=label, color=f"C{sorted({c['model'] for c in cells}).index(name)}")
                y = [c.get("mfu", 0) * 100 for c in mine] if key == "grid_cuda" else [c["achieved_gflops"] for c in mine]
                row_axes[1].plot([c["T"] for c in mine], y, style, marker="o", label=label,
                                 color=f"C{sorted({c['model'] for c in cells}).index(name)}")
        where = "GPU, bf16" if key == "grid_cuda" else f"CPU, {grid.get('threads')} thread(s)"
        row_axes[0].set(xscale="log", yscale="log", xlabel="events per journey T", ylabel="events / s",
                        title=f"training throughput ({where}, batch {BATCH_SIZE})")
        row_axes[1].set(xscale="log", xlabel="events per journey T",
                        ylabel="MFU % of bf16 peak" if key == "grid_cuda" else "achieved GFLOP/s (analytic)",
                        title="model FLOPs utilisation" if key == "grid_cuda" else "achieved FLOP rate")
        skipped = [f"{c['model']} T={c['T']} H={c['H']}" for c in grid["cells"] if "skipped" in c or "error" in c]
        if skipped:
            note = textwrap.fill("skipped (cell budget): " + ", ".join(skipped), width=80)
            row_axes[0].set_title(row_axes[0].get_title() + "\n" + note, fontsize=8)
        for ax in row_axes:
            ax.grid(alpha=0.3)
        row_axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def profile_mode(args: argparse.Namespace) -> None:
    import cProfile
    import pstats

    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(args.threads or 1)
    spec = demo_spec()
    batch = synthetic_batch(spec, BATCH_SIZE, args.length, min_length=args.length // 2, seed=1)
    for name in args.models:
        model, optimiser, clip = build_trainable(name, spec, args.hidden)
        row = time_steps(model, optimiser, clip, batch, args.min_seconds, args.max_steps, warmup=3)
        print(f"== {name} T={args.length} H={args.hidden} threads={torch.get_num_threads()}: "
              f"{row['ms_per_step']} ms/step (min {row['ms_per_step_min']}), load {row['load_before']}")
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(5):
            training_step(model, optimiser, clip, batch)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(args.top)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(5):
                training_step(model, optimiser, clip, batch)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--threads-mode", action="store_true", help="threads x malloc x load (the default)")
    mode.add_argument("--grid", action="store_true", help="the (T, H) grid with FLOPs")
    mode.add_argument("--profile", action="store_true", help="cProfile + torch.profiler of one training step")
    mode.add_argument("--before-after", metavar="DIR", default=None,
                      help="time --models from an older source tree DIR and from this one, alternately")
    mode.add_argument("--child-threads", action="store_true", help=argparse.SUPPRESS)
    mode.add_argument("--child-cell", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--models", nargs="+", default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (grid, profile; 0 = torch's default)")
    parser.add_argument("--length", type=int, default=100, help="T of the threads / profile batches (max_len's default)")
    parser.add_argument("--hidden", type=int, default=64, help="H of the threads / profile models (the default)")
    parser.add_argument("--repeats", type=int, default=2, help="threads mode: rounds, alternately reversed")
    parser.add_argument("--load-processes", type=int, default=1, help="competing busy processes under heavy load")
    parser.add_argument("--min-seconds", type=float, default=2.0, help="timed seconds per model / cell at least")
    parser.add_argument("--max-steps", type=int, default=40)
    parser.add_argument("--grid-t", type=int, nargs="+", default=GRID_T)
    parser.add_argument("--grid-h", type=int, nargs="+", default=GRID_H)
    parser.add_argument("--cell-budget", type=float, default=40.0, help="grid: seconds a cell may take")
    parser.add_argument("--total-budget", type=float, default=780.0, help="grid: seconds for the whole grid")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="bf16 dense peak for MFU (H200: 989)")
    parser.add_argument("--cpu", action="store_true", help="grid on CPU even where CUDA is available")
    parser.add_argument("--top", type=int, default=25, help="profile: rows of each table")
    parser.add_argument("--out", default=None)
    parser.add_argument("--label", default="rnn", help="before-after: the record's name, <label>_before_after")
    parser.add_argument("--what", default="the RNN encoder / decoder fast paths",
                        help="before-after: what changed between the two trees")
    args = parser.parse_args()
    if args.child_threads or args.child_cell:
        result = child_threads(args) if args.child_threads else child_cell(args)
        print(json.dumps(result))
        return
    if args.grid:
        args.models = args.models or GRID_MODELS
        grid_mode(args)
    elif args.before_after:
        args.models = args.models or ["gru-attn", "gru", "lstm-luong", "gru-bahdanau", "atrank"]
        before_after_mode(args)
    elif args.profile:
        args.models = args.models or ["gru-attn", "lstm-luong", "gru-bahdanau"]
        profile_mode(args)
    else:
        args.models = args.models or THREAD_MODELS
        threads_mode(args)


if __name__ == "__main__":
    random.seed(0)
    main()

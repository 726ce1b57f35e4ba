"""`journey demo`: Journey's main job end to end on the embedded default — built-in synthetic journeys.

synth -> prepare (point-in-time, out-of-time split) -> train ATRank and baselines on the planted outcomes
(churn, default, product uptake) with the same budget -> one comparison table and a plot. Everything lands
in one working folder; no server, no account, no download. Each step is skipped when its complete output
is already there, so a re-run (or a run after an interruption) picks up where the last one stopped.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from journey_model.compare import compare_models
from journey_model.prepare import MANIFEST_FILE, PrepareConfig, prepare
from journey_model.preprocessing import PreprocessingConfig
from journey_model.synth import generate
from journey_model.training import TrainConfig

DEMO_MODELS = ["atrank", "gru-bahdanau", "bag"]
OUTCOME_KEYS = ["auc/churn", "auc/default", "auc/uptake"]


def run_demo(workdir: Path, customers: int = 5000, seed: int = 0, max_epochs: int = 5, progress: bool = True) -> Path:
    """Run the main job in ``workdir``; returns the path of the comparison JSON."""
    started = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    events_dir, prepared_dir = workdir / "data" / "synth", workdir / "data" / "prepared"
    results_dir = workdir / "results"

    print(f"[1/3] synthetic journeys: {customers:,} customers -> {events_dir}", flush=True)
    if (events_dir / "synth_report.json").exists():
        print("      already there, kept", flush=True)
    else:
        print(generate(events_dir, customers, seed, progress=progress).summary(), flush=True)

    print(f"[2/3] point-in-time examples -> {prepared_dir}", flush=True)
    if (prepared_dir / MANIFEST_FILE).exists():
        print("      already there, kept", flush=True)
    else:
        report = prepare(PrepareConfig(
            events_dir=str(events_dir), out_dir=str(prepared_dir), cutoff_strategy="labels",
            label_horizon_days=30, preprocessing=PreprocessingConfig(max_len=100),
        ), progress=progress)
        print(report.summary(), flush=True)

    print(f"[3/3] train and compare {', '.join(DEMO_MODELS)} on the outcome task ({max_epochs} epochs at most)",
          flush=True)
    comparison = compare_models(DEMO_MODELS, TrainConfig(
        data_dir=str(prepared_dir), tasks=["outcome"], max_epochs=max_epochs, batch_size=64, patience=2,
        seed=seed, progress=progress, output_dir=str(workdir / "runs"),
        model_overrides={"hidden_size": 64, "num_heads": 4, "field_dim": 16},
    ))
    results_dir.mkdir(parents=True, exist_ok=True)
    comparison.save(results_dir / "comparison.json")
    plot = comparison.plot(OUTCOME_KEYS, results_dir / "comparison.png")
    print("\nTest-set results (out-of-time: the last cut-off month):")
    print(comparison.table(OUTCOME_KEYS + ["pr_auc/churn"]))
    print(f"\nDone in {time.perf_counter() - started:.0f} s. Results: {results_dir / 'comparison.json'}, plot: {plot}")
    print(json.dumps({"workdir": str(workdir)}))
    return results_dir / "comparison.json"

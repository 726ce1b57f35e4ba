"""`journey demo`: Journey's main job end to end on the embedded default — built-in synthetic journeys.

synth -> prepare (point-in-time, out-of-time split) -> train ATRank and the baselines on the planted outcomes
(churn, default, product uptake) with the same budget, each a nested MLflow run under one comparison run ->
register the best model by its validation metric as ``journey-synth_bank-outcome`` and promote it to
``@champion`` only if it beats the current champion -> (batch-score the held-back month: a hook, see
:func:`batch_score_held_back_month`, batch scoring of the month after the test month) -> print the table and where to look (the MLflow UI command).

Everything lands in one working folder (``work/`` by default): data, checkpoints, results and the embedded
MLflow store (``work/mlflow.db`` + ``work/mlartifacts``; ``MLFLOW_TRACKING_URI`` overrides it). No server, no
account, no download. The synthetic and prepared data are kept when already complete, so a re-run goes
straight to training; each re-run adds a new comparison run and a new model version, and the champion moves
only when the new best model beats it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
from mlflow.tracking import MlflowClient

from journey_model.data.prepare import DATASET_FORMAT, PrepareConfig, prepare, prepared_format
from journey_model.data.preprocessing import PreprocessingConfig
from journey_model.data.synth import generate
from journey_model.inference.batch_scoring import BatchScoringConfig, ranked, read_scores, score_batch
from journey_model.tracking.loading import open_model
from journey_model.tracking.registry import promote
from journey_model.tracking.store import ui_command
from journey_model.training.train import TrainConfig
from pipelines.compare import compare_models
from pipelines.configs import DEFAULT_MODELS

DEMO_MODELS = list(DEFAULT_MODELS)  # atrank, gru-bahdanau, lstm-luong, transformer, bag, markov
OUTCOME_KEYS = ["auc/churn", "auc/default", "auc/uptake"]
DEMO_MODEL_SIZE = {"hidden_size": 64, "num_heads": 4, "field_dim": 16}
# One torch thread per process: on 2 shared cores an ATRank epoch measured 5 s with one thread and 50 s with two.
DEMO_THREADS = 1


def demo_tracking_uri(workdir: Path) -> str:
    """``$MLFLOW_TRACKING_URI``, else the embedded store of the working folder: ``<workdir>/mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(workdir / 'mlflow.db').resolve()}"


def batch_score_held_back_month(model_uri: str, events_dir: Path, out_dir: Path, tracking_uri: str) -> Path:
    """Score every customer at the first cut-off after the test month — a month no model has seen labels for.

    Uses :func:`journey_model.inference.batch_scoring.score_batch` with the registered champion (``model_uri``), writing
    Parquet parts and ``_manifest.json`` to ``out_dir``; prints the job's summary and the riskiest customers.
    """


    last_cutoff = pq.read_table(events_dir / "labels.parquet", columns=["cutoff"]).column("cutoff").to_pandas().max()
    held_back = (last_cutoff + pd.DateOffset(months=1)).strftime("%Y-%m-%d")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per file is noise here
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    try:
        report = score_batch(BatchScoringConfig(model=model_uri, events_dir=str(events_dir), out_dir=str(out_dir),
                                                cutoff=held_back, progress=False), overwrite=True,
                             opener=open_model)
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous
    print(report.summary(), flush=True)
    print_ranked(out_dir, held_back)
    return out_dir


def print_ranked(scores_dir: Path, cutoff: str, top: int = 5) -> None:
    """The first outcome's ranked list of a scoring run: eligible customers only (the already-lost have no score)."""
    scores = read_scores(scores_dir).to_pandas()
    outcomes = [c[2:] for c in scores.columns if c.startswith("p_") and not c.startswith("p_next_event_")]
    if outcomes:
        listed = ranked(scores, outcomes[0], top=top)
        shown = ["customer_id", *(f"p_{name}" for name in outcomes)]
        shown += [c for c in (f"flag_{outcomes[0]}",) if c in listed.columns]
        print(f"      highest p_{outcomes[0]} at {cutoff} (eligible customers):")
        print(listed[shown].to_string(index=False), flush=True)


def run_demo(workdir: Path, customers: int = 5000, seed: int = 0, max_epochs: int = 5, progress: bool = True,
             models: list[str] | None = None, tracking_uri: str | None = None) -> Path:
    """Run the main job in ``workdir``; returns the path of the comparison JSON."""


    started = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    events_dir, prepared_dir = workdir / "data" / "synth", workdir / "data" / "prepared"
    results_dir = workdir / "results"
    tracking_uri = tracking_uri or demo_tracking_uri(workdir)
    models = models or DEMO_MODELS

    print(f"[1/6] synthetic journeys: {customers:,} customers -> {events_dir}", flush=True)
    if (events_dir / "synth_report.json").exists():
        print("      already there, kept", flush=True)
    else:
        print(generate(events_dir, customers, seed, progress=progress).summary(), flush=True)

    print(f"[2/6] point-in-time examples -> {prepared_dir}", flush=True)
    found = prepared_format(prepared_dir)
    if found == DATASET_FORMAT:
        print("      already there, kept", flush=True)
    else:
        if found is not None:
            print(f"      prepared by an older Journey (format {found}, now {DATASET_FORMAT}): rebuilt", flush=True)
        report = prepare(PrepareConfig(
            events_dir=str(events_dir), out_dir=str(prepared_dir), cutoff_strategy="labels",
            label_horizon_days=30, preprocessing=PreprocessingConfig(max_len=100),
        ), overwrite=found is not None, progress=progress)
        print(report.summary(), flush=True)

    print(f"[3/6] train and compare {', '.join(models)} on the outcome task ({max_epochs} epochs at most), "
          f"tracked in {tracking_uri}", flush=True)
    comparison = compare_models(models, TrainConfig(
        data_dir=str(prepared_dir), tasks=["outcome"], max_epochs=max_epochs, batch_size=64, patience=2,
        seed=seed, progress=progress, output_dir=str(workdir / "runs"), model_overrides=dict(DEMO_MODEL_SIZE),
        threads=DEMO_THREADS, track=True, tracking_uri=tracking_uri, register=True,
    ), metric_keys=OUTCOME_KEYS + ["pr_auc/churn"])
    results_dir.mkdir(parents=True, exist_ok=True)
    comparison.save(results_dir / "comparison.json")
    plot = comparison.plot(OUTCOME_KEYS, results_dir / "comparison.png")

    print("[4/6] register the best model by validation loss and promote it if it beats the champion", flush=True)
    champion_uri = None
    if comparison.registered_model:
        best = comparison.best("min", ["outcome"])
        print(f"      best: {best.model} (val/loss {best.validation_value:.4f}) -> "
              f"{comparison.registered_model} v{comparison.registered_version}", flush=True)
        client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
        decision = promote(comparison.registered_model, comparison.registered_version, client=client)
        print(f"      {decision.message}", flush=True)
        champion_uri = f"models:/{comparison.registered_model}@champion"
    else:
        print("      no model could be registered (see the table)", flush=True)

    print("[5/6] batch-score the held-back month", flush=True)
    if champion_uri:
        batch_score_held_back_month(champion_uri, events_dir, workdir / "scores", tracking_uri)

    print("[6/6] where to look", flush=True)
    print("\nTest-set results (out-of-time: the last cut-off month):")
    print(comparison.table(OUTCOME_KEYS + ["pr_auc/churn"]))
    print(f"\nDone in {time.perf_counter() - started:.0f} s.")
    print(f"  table:     {results_dir / 'comparison.json'} (plot {plot})")
    print(f"  MLflow UI: {ui_command(tracking_uri)}")
    if champion_uri:
        print(f"  champion:  {champion_uri}  — mlflow.pyfunc.load_model(uri).predict(events) scores raw events")
    print(json.dumps({"workdir": str(workdir), "tracking_uri": tracking_uri, "champion": champion_uri}))
    return results_dir / "comparison.json"

"""Are the explanations right? Attributions checked against the synthetic bank's planted causes.

The synthetic generator (``journey synth``) writes ``ground_truth.parquet``: for each (customer, cut-off, outcome)
whose label a planted rule caused (``role = cause``, e.g. churn = complaint, then a fee, then fading logins), the
ids of the events that caused it. A case is such a row with label 1 in the val or test split, whose model input
(the most recent ``max_len`` events before the cut-off, prepared with ``keep_event_ids``) holds at least one
causing event. Per model x outcome x attribution method:

* ``precision@k`` = causing events among the top k / min(k, causing events in the input) (normalised: 1.0 is
  reachable for a case with 2 causes at k = 3); ``hits/k`` = causing events among the top k / k (plain);
  ``hit-rate@k`` = share of cases with at least one causing event in the top k; each with the random-ranking
  baseline beside it (exact expectations: hypergeometric);
* deletion curve: probability drop when the top-k attributed events are removed (k = 1..5) vs k random events;
* cost: ms per customer at 100 events, one customer per call (the API's /explain vs /predict) and 64 per call
  (batch scoring), vs a plain forward pass;
* the model's own AUC on the cases vs the rule's decoys (``role = decoy``, label 0), and precision@3 on the
  cases the model catches (scored above the 90th percentile of the decoys), so that "the model misses the rule"
  is told apart from "the explainer misses".

Uses the demo's data and trained bundles when present (``make demo``: ``work/data/synth``,
``work/data/prepared``, bundles under ``work/mlartifacts/*/models/*/artifacts/artifacts/bundle`` or
``work/runs/**/bundle``); else builds them (``--build``: synth 3,000 customers, prepare, train each model a few
epochs without tracking, into ``--workdir``):

    .venv/bin/python benchmarks/bench_explanations.py --max-cases 150 --out benchmarks/results/explanations.json
    .venv/bin/python benchmarks/bench_explanations.py --build --workdir /tmp/bench-explain --epochs 4
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch

from journey_model.data.prepare import MANIFEST_FILE, PrepareConfig, prepare
from journey_model.data.preprocessing import PreprocessingConfig, Preprocessor
from journey_model.data.synth import generate
from journey_model.inference.attribution import (
    METHODS,
    POOLED_TASK,
    AttributionConfig,
    attribute_batch,
    available_methods,
    select_rows,
)
from journey_model.inference.scorer import LEGACY_MODEL_FILE, MODEL_CONFIG_FILE, Scorer
from journey_model.inference.scorer import MANIFEST_FILE as BUNDLE_MANIFEST
from journey_model.training.train import TrainConfig, train

KS = (1, 3, 5)
DELETION_KS = (1, 2, 3, 4, 5)
RANDOM_DRAWS = 3
BUILD_MODELS = ("atrank", "transformer", "gru-bahdanau", "lstm-luong", "bag")


# ---------------------------------------------------------------------------------------------- data and models


def find_bundles(work: Path, prepared: Path) -> dict[str, Path]:
    """The newest bundle folder per model name under ``work`` fitted on ``prepared`` (same preprocessing
    artifact): version 2 (bundle.json) or the demo's version 1 (model.pt). Other benchmarks' bundles are skipped."""
    expected = Preprocessor.load(prepared).artifact_hash
    found: dict[str, tuple[float, Path]] = {}
    for marker in [*work.rglob(BUNDLE_MANIFEST), *work.rglob(LEGACY_MODEL_FILE)]:
        folder = marker.parent
        if not (folder / "preprocessing.json").exists() or Preprocessor.load(folder).artifact_hash != expected:
            continue
        if marker.name == BUNDLE_MANIFEST:
            name = json.loads((folder / MODEL_CONFIG_FILE).read_text())["model_name"]
        else:
            name = torch.load(marker, map_location="cpu", weights_only=True)["model_name"]
        stamp = marker.stat().st_mtime
        if name not in found or stamp > found[name][0]:
            found[name] = (stamp, folder)
    return {name: folder for name, (_, folder) in sorted(found.items())}


def build_everything(work: Path, customers: int, epochs: int) -> None:
    """Synth, prepare and train the benchmark's models into ``work`` (bundles in work/runs/<model>/bundle)."""
    if not (work / "synth" / "synth_report.json").exists():
        generate(work / "synth", customers, seed=0, progress=False)
    if not (work / "prepared" / MANIFEST_FILE).exists():
        prepare(PrepareConfig(events_dir=str(work / "synth"), out_dir=str(work / "prepared"), cutoff_strategy="labels",
                              label_horizon_days=30, preprocessing=PreprocessingConfig(max_len=100)), progress=False)
    for name in BUILD_MODELS:
        bundle = work / "runs" / name / "bundle"
        if (bundle / "bundle.json").exists():
            continue
        result = train(TrainConfig(data_dir=str(work / "prepared"), model=name, tasks=["outcome"], max_epochs=epochs,
                                   patience=2, progress=False, track=False, output_dir=str(work / "runs"),
                                   model_overrides={} if name == "bag" else {"hidden_size": 64, "num_heads": 4,
                                                                             "field_dim": 16}))
        Scorer(result.module.model, Preprocessor.load(work / "prepared")).save(bundle)  # type: ignore[union-attr]


def load_cases(synth: Path, prepared: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(cases, decoys): ground-truth rows of the val and test splits joined to their prepared example rows."""
    truth = pd.read_parquet(synth / "ground_truth.parquet")
    rows = pd.concat([pq.read_table(p).to_pandas() for split in ("val", "test")
                      for p in sorted((prepared / split).glob("*.parquet"))], ignore_index=True)
    if "event_id" not in rows.columns:
        raise SystemExit(f"{prepared}: prepared rows carry no event_id (prepare with keep_event_ids on)")
    rows["row"] = np.arange(len(rows))
    joined = truth.merge(rows[["customer_id", "cutoff", "row", "event_id"]], on=["customer_id", "cutoff"])
    joined["causes_in_input"] = [
        [p for p, eid in enumerate(list(ids)) if eid in set(cause)] for ids, cause in
        zip(joined["event_id"], joined["event_ids"], strict=True)
    ]
    cases = joined[(joined["role"] == "cause") & (joined["label"] == 1)
                   & (joined["causes_in_input"].map(len) > 0)].reset_index(drop=True)
    decoys = joined[(joined["role"] == "decoy") & (joined["label"] == 0)].reset_index(drop=True)
    cases.attrs["rows"] = rows
    return cases, decoys


# ---------------------------------------------------------------------------------------------- metrics


def random_expectations(n: int, c: int, k: int) -> tuple[float, float, float]:
    """Expected (hits / min(k, c), hits / k, P(hit >= 1)) of a random ranking of n events with c causes."""
    k = min(k, n)
    hits = k * c / n
    miss_all = math.comb(n - c, k) / math.comb(n, k) if n - c >= k else 0.0
    return hits / min(k, c), hits / k, 1.0 - miss_all


def ranking_metrics(order: np.ndarray, causes: set[int], k: int) -> tuple[float, float, float]:
    top = set(order[:k].tolist())
    hits = len(top & causes)
    return hits / min(k, len(causes)), hits / k, float(hits > 0)


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    if not len(positive) or not len(negative):
        return float("nan")
    scores = np.concatenate([positive, negative])
    ranks = pd.Series(scores).rank().to_numpy()
    return float((ranks[: len(positive)].sum() - len(positive) * (len(positive) + 1) / 2) / (len(positive) * len(negative)))


def deletion_drops(scorer: Scorer, batch, column: int, orders: list[np.ndarray], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(cases, len(DELETION_KS)) probability drops removing the top-k events vs k random events (mean of draws)."""
    rng = np.random.default_rng(seed)
    T = batch.mask.shape[1]
    rows, keeps, kinds = [], [], []
    for b, order in enumerate(orders):
        n = int(batch.lengths[b])
        for i, k in enumerate(DELETION_KS):
            keep = torch.ones(T, dtype=torch.bool)
            keep[torch.as_tensor(order[:k])] = False
            rows.append(b), keeps.append(keep), kinds.append((b, i, 0))
            for _ in range(RANDOM_DRAWS):
                keep = torch.ones(T, dtype=torch.bool)
                keep[torch.as_tensor(rng.choice(n, size=min(k, n), replace=False))] = False
                rows.append(b), keeps.append(keep), kinds.append((b, i, 1))
    with torch.no_grad():
        base = torch.sigmoid(scorer.model(batch).outcome_logits[:, column]).numpy()
        p = []
        for start in range(0, len(rows), 1024):
            variant = select_rows(batch, torch.tensor(rows[start:start + 1024]), torch.stack(keeps[start:start + 1024]))
            p.append(torch.sigmoid(scorer.model(variant).outcome_logits[:, column]).numpy())
    p = np.concatenate(p)
    top = np.zeros((len(orders), len(DELETION_KS)))
    random = np.zeros((len(orders), len(DELETION_KS)))
    for (b, i, kind), value in zip(kinds, p, strict=True):
        if kind == 0:
            top[b, i] = base[b] - value
        else:
            random[b, i] += (base[b] - value) / RANDOM_DRAWS
    return top, random


def timing(scorer: Scorer, examples: list[dict], method: str | None, per_call: int, repeats: int,
           config: AttributionConfig | None = None) -> float:
    """Median ms per customer of ``method`` (None = plain forward) over calls of ``per_call`` customers,
    every outcome explained (as batch scoring and the API do)."""
    batch = scorer.collate(examples[:per_call])
    attribute_batch(scorer.model, batch, method, config=config) if method else scorer.model(batch)  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        if method is None:
            with torch.no_grad():
                scorer.model(batch)
        else:
            attribute_batch(scorer.model, batch, method, config=config)
        times.append(time.perf_counter() - started)
    return 1000 * float(np.median(times)) / len(examples[:per_call])


# ---------------------------------------------------------------------------------------------- main


def evaluate_model(name: str, scorer: Scorer, cases: pd.DataFrame, decoys: pd.DataFrame, rows: pd.DataFrame,
                   max_cases: int, methods: list[str], config: AttributionConfig, repeats: int) -> list[dict]:
    outcomes = list(scorer.preprocessor.outcome_names)
    usable = [m for m in methods if available_methods(scorer)[m] is None]
    example_columns = [c for c in rows.columns if c != "row"]
    results = []
    long_examples = rows[rows["length"] >= 100][example_columns].head(64).to_dict("records")
    cost = {"forward_1": timing(scorer, long_examples, None, 1, repeats),
            "forward_64": timing(scorer, long_examples, None, 64, max(3, repeats // 5))}
    for method in usable:
        cost[f"{method}_1"] = timing(scorer, long_examples, method, 1, repeats, config)
        cost[f"{method}_64"] = timing(scorer, long_examples, method, 64, max(3, repeats // 5), config)
    print(f"{name}: cost ms/customer {json.dumps({k: round(v, 2) for k, v in cost.items()})}", flush=True)
    for task in outcomes:
        task_cases = cases[cases["target"] == task].head(max_cases)
        task_decoys = decoys[decoys["target"] == task]
        if task_cases.empty:
            continue
        column = outcomes.index(task)
        examples = rows.iloc[task_cases["row"].to_numpy()][example_columns].to_dict("records")
        batch = scorer.collate(examples)
        decoy_batch = scorer.collate(rows.iloc[task_decoys["row"].to_numpy()][example_columns].to_dict("records"))
        with torch.no_grad():
            p_cases = torch.sigmoid(scorer.model(batch).outcome_logits[:, column]).numpy()
            p_decoys = torch.sigmoid(scorer.model(decoy_batch).outcome_logits[:, column]).numpy()
        caught = p_cases > np.quantile(p_decoys, 0.9) if len(p_decoys) else np.ones(len(p_cases), bool)
        causes = [set(c) for c in task_cases["causes_in_input"]]
        n_events = batch.lengths.numpy()
        randoms = {k: np.array([random_expectations(int(n), len(c), k) for n, c in zip(n_events, causes, strict=True)])
                   for k in KS}
        for method in usable:
            started = time.perf_counter()
            attributions, _ = attribute_batch(scorer.model, batch, method, tasks=[task] if method not in (
                "attention", "attention-rollout") else None, config=config)
            seconds = time.perf_counter() - started
            key = task if task in attributions.importance else POOLED_TASK
            orders = [np.lexsort((-np.arange(int(n)), -attributions.importance[key][b, : int(n)]))
                      for b, n in enumerate(n_events)]
            row = {"model": name, "task": task, "method": method, "cases": len(task_cases),
                   "model_auc_cases_vs_decoys": round(auc(p_cases, p_decoys), 4),
                   "cases_caught_by_model": int(caught.sum()), "seconds": round(seconds, 2)}
            for k in KS:
                metrics = np.array([ranking_metrics(order, c, k) for order, c in zip(orders, causes, strict=True)])
                row[f"precision@{k}"] = round(float(metrics[:, 0].mean()), 4)
                row[f"hits/k@{k}"] = round(float(metrics[:, 1].mean()), 4)
                row[f"hit_rate@{k}"] = round(float(metrics[:, 2].mean()), 4)
                row[f"random_precision@{k}"] = round(float(randoms[k][:, 0].mean()), 4)
                row[f"random_hits/k@{k}"] = round(float(randoms[k][:, 1].mean()), 4)
                row[f"random_hit_rate@{k}"] = round(float(randoms[k][:, 2].mean()), 4)
                if k == 3:
                    row["precision@3_caught"] = round(float(metrics[caught, 0].mean()), 4) if caught.any() else None
            top, random = deletion_drops(scorer, batch, column, orders, seed=0)
            row["deletion_top"] = [round(float(v), 4) for v in top.mean(0)]
            row["deletion_random"] = [round(float(v), 4) for v in random.mean(0)]
            row["ms_per_customer_1"] = round(cost[f"{method}_1"], 2)
            row["ms_per_customer_64"] = round(cost[f"{method}_64"], 3)
            row["forward_ms_1"] = round(cost["forward_1"], 2)
            row["forward_ms_64"] = round(cost["forward_64"], 3)
            row["cost_ratio_1"] = round(cost[f"{method}_1"] / cost["forward_1"], 2)
            row["cost_ratio_64"] = round(cost[f"{method}_64"] / cost["forward_64"], 2)
            results.append(row)
            print(json.dumps({k: v for k, v in row.items() if not k.startswith("random_h")}), flush=True)
    return results


def markdown(results: list[dict]) -> str:
    lines = ["| model | task | method | AUC cases/decoys | p@1 | p@3 (rand) | p@3 caught | hits/k@3 (rand) | hit@3 (rand) "
             "| p@5 | deletion top-1/3/5 (rand) | ms 1 cust (fwd) | × fwd 1 | × fwd 64 |",
             "|" + "---|" * 14]
    for r in results:
        lines.append(
            f"| {r['model']} | {r['task']} | {r['method']} | {r['model_auc_cases_vs_decoys']:.2f} | {r['precision@1']:.2f} "
            f"| {r['precision@3']:.2f} ({r['random_precision@3']:.2f}) | {r['precision@3_caught'] if r['precision@3_caught'] is not None else '-'} "
            f"| {r['hits/k@3']:.2f} ({r['random_hits/k@3']:.2f}) | {r['hit_rate@3']:.2f} ({r['random_hit_rate@3']:.2f}) "
            f"| {r['precision@5']:.2f} | {r['deletion_top'][0]:.3f}/{r['deletion_top'][2]:.3f}/{r['deletion_top'][4]:.3f} "
            f"({r['deletion_random'][0]:.3f}/{r['deletion_random'][2]:.3f}/{r['deletion_random'][4]:.3f}) "
            f"| {r['ms_per_customer_1']:.1f} ({r['forward_ms_1']:.1f}) | {r['cost_ratio_1']:.1f} | {r['cost_ratio_64']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="work", help="holds data/synth, data/prepared and the bundles")
    parser.add_argument("--build", action="store_true", help="build synth + prepared + models into --workdir")
    parser.add_argument("--customers", type=int, default=3000, help="--build: synthetic customers")
    parser.add_argument("--epochs", type=int, default=4, help="--build: training epochs per model")
    parser.add_argument("--models", default="", help="comma-separated model names (default: every bundle found)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--max-cases", type=int, default=150, help="cases per outcome")
    parser.add_argument("--ig-steps", type=int, default=AttributionConfig.ig_steps)
    parser.add_argument("--recent-events", type=int, default=AttributionConfig.recent_events)
    parser.add_argument("--screen-events", type=int, default=AttributionConfig.screen_events,
                        help="screened-occlusion: events per outcome (largest rollout weight) left out one by one")
    parser.add_argument("--repeats", type=int, default=15, help="timing repetitions (one customer per call)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/explanations.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    work = Path(args.workdir)
    if args.build:
        build_everything(work, args.customers, args.epochs)
        synth, prepared = work / "synth", work / "prepared"
    else:
        synth, prepared = work / "data" / "synth", work / "data" / "prepared"
    bundles = find_bundles(work, prepared)
    if args.models:
        bundles = {n: f for n, f in bundles.items() if n in args.models.split(",")}
    if not bundles:
        raise SystemExit(f"no model bundles under {work}; run `make demo` or pass --build")
    cases, decoys = load_cases(synth, prepared)
    rows = cases.attrs["rows"]
    print(f"cases per outcome: {cases.groupby('target').size().to_dict()}; decoys: "
          f"{decoys.groupby('target').size().to_dict()}; models: {list(bundles)}", flush=True)
    config = AttributionConfig(ig_steps=args.ig_steps, recent_events=args.recent_events,
                               screen_events=args.screen_events)
    results = []
    for name, folder in bundles.items():
        scorer = Scorer.load(folder)  # a version-1 bundle (model.pt) loads with weights_only=True
        results += evaluate_model(name, scorer, cases, decoys, rows, args.max_cases, args.methods.split(","),
                                  config, args.repeats)
    table = markdown(results)
    print(table)
    payload = {"settings": {**vars(args), "bundles": {n: str(f) for n, f in bundles.items()}},
               "definitions": {
                   "precision@k": "causing events in the top k / min(k, causing events in the input), mean over cases",
                   "hits/k@k": "causing events in the top k / k (plain precision), mean over cases",
                   "hit_rate@k": "share of cases with >= 1 causing event in the top k",
                   "random_*": "exact expectation of a uniformly random ranking (hypergeometric)",
                   "deletion_top / deletion_random": "mean p(full) - p(without the top-k / k random events), k=1..5",
                   "precision@3_caught": "precision@3 on cases the model scores above the 90th percentile of decoys",
                   "ms_per_customer_1 / _64": "median ms per customer, 1 or 64 customers of 100 events per call",
               },
               "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()

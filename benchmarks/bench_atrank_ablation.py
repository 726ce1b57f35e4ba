"""ATRank's default against its levers and the zoo: outcome AUCs and how well each planted rule is told apart
from its decoys, mean ± std over seeds.

Data: the built-in synthetic bank (``journey_model.data.synth``), prepared with labels cut-offs (30-day label
horizon, ``max_len`` 100) and a customer split (10 % validation, 20 % test customers, all their cut-offs) so that
the test set holds enough planted cases. Every variant and baseline trains on the same examples with the same
budget (``--epochs``, early stopping on validation loss, patience 3) and the trainer's defaults otherwise.

Reported per model, on the test customers:

* ``auc/<outcome>`` — ROC-AUC of the outcome over every test example;
* ``sep/<rule> vs <decoy>`` — ROC-AUC of the outcome's score between the rule's planted cases (label 1) and one
  kind of decoy (label 0; the same events in another order or at another time). ``churn_decoy_fee_before_complaint``
  is the order rule: the same complaint and fee, reversed;
* ``seconds`` — wall time of the training run (the machine's load is recorded beside it).

Variants are ATRank's default with one lever switched back to the reference (leave-one-out), the reference
itself (``atrank-reference``'s architecture with Adam), and the zoo's recurrent encoders.

    .venv/bin/python benchmarks/bench_atrank_ablation.py --customers 6000 --epochs 8 --seeds 0,1,2 \\
        --out benchmarks/results/atrank_ablation.json
    .venv/bin/python benchmarks/bench_atrank_ablation.py --customers 800 --epochs 1 --seeds 0 --only default  # smoke
    # merge result files into one table, with each variant minus gru-bahdanau paired by seed (t-test)
    .venv/bin/python benchmarks/bench_atrank_ablation.py --results A.json B.json --paired-against gru-bahdanau
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
from sklearn.metrics import roc_auc_score

from journey_model.data.prepare import MANIFEST_FILE, PrepareConfig, prepare
from journey_model.data.preprocessing import PreprocessingConfig, Preprocessor
from journey_model.data.synth import generate
from journey_model.data.synth.rules import DECOYS, RULES
from journey_model.inference.scorer import Scorer
from journey_model.models.atrank import ATRankConfig
from journey_model.training.train import TrainConfig, train

WIDTH = {"hidden_size": 64, "num_heads": 4, "field_dim": 16}  # one width for every model of the table
REFERENCE = {k: v for k, v in vars(ATRankConfig.reference()).items()
             if k not in ("hidden_size", "num_heads", "field_dim")}
# name -> (model, overrides): the default, the default with one lever back at the reference, the reference
VARIANTS: dict[str, tuple[str, dict]] = {
    "default": ("atrank", {}),
    "previous default (no causal block, attention-weight dropout 0.1)": ("atrank", {"causal_blocks": 0,
                                                                                 "attention_dropout": None}),
    "- continuous time (log2 day buckets)": ("atrank", {"time_encoding": "bucket"}),
    "+ relative time (TiSASRec keys/values + bias)": ("atrank", {"relative_time": "content"}),
    "+ relative time bias only": ("atrank", {"relative_time": "bias"}),
    "- rotary positions (none)": ("atrank", {"positional_encoding": "none"}),
    "- rotary positions (learned table)": ("atrank", {"positional_encoding": "learned"}),
    "- pre-norm (post-norm)": ("atrank", {"norm_first": False}),
    "- 2 blocks (1 block)": ("atrank", {"num_blocks": 1}),
    "- wide FFN, GELU, head mixing": ("atrank", {"ffn_ratio": 0.25, "activation": "relu", "output_projection": False,
                                                "relu_projections": True}),
    "+ causal mask": ("atrank", {"causal": True}),
    "+ causal first block (the second sees the whole journey)": ("atrank", {"causal_blocks": 1}),
    "+ half the heads causal (look back), every block": ("atrank", {"causal_heads": 2}),
    "+ rotary time (half the rotary pairs turn with time)": ("atrank", {"rotary_time": True}),
    "+ linear time (tanh of days / 30 and / 365 beside log-minutes)": ("atrank", {"linear_time": True}),
    "+ task recency (the task queries' bias per age bucket)": ("atrank", {"task_recency": True}),
    "the default before 2026-12-04 (no same-item bias, no wide)": ("atrank", {"same_item_bias": False,
                                                                            "wide": False}),
    "- same-item bias by time": ("atrank", {"same_item_bias": False}),
    "- wide with the network's own head": ("atrank", {"wide": False}),
    "+ same-item bias (per head, between behaviours about one item)": ("atrank", {"same_item_bias": True,
                                                                                "same_item_time": False}),
    "+ same-item bias by time (per head and log2-minute bucket between the two)": ("atrank", {
        "same_item_bias": True, "same_item_time": True}),
    "+ wide (Wide & Deep: the bag's counts beside the network, its outcome weights from zero)": ("atrank", {
        "wide": True, "wide_network_head": False}),
    "+ wide with the network's own head (deep supervision beside the combined scores)": ("atrank", {
        "wide": True, "wide_network_head": True}),
    "+ same-item bias by time, + wide with the network's own head": ("atrank", {
        "same_item_bias": True, "same_item_time": True, "wide": True, "wide_network_head": True}),
    "+ dropout 0.2": ("atrank", {"dropout": 0.2}),
    "- attention-weight dropout (sub-layer dropout stays)": ("atrank", {"attention_dropout": 0.0}),
    "+ AdamW, weight decay 0.05": ("atrank", {"optimizer": "adamw", "weight_decay": 0.05}),
    "reference architecture": ("atrank", REFERENCE),
    "gru-bahdanau": ("gru-bahdanau", {}),
    "lstm-luong": ("lstm-luong", {}),
    "gru-attn": ("gru-attn", {}),
    "bag": ("bag", {}),
    # schedule levers: the default architecture trained with another schedule (TRAINING below); about 66
    # optimiser steps an epoch here, so 8 epochs plan ~524 steps
    "+ warm-up and cosine decay": ("atrank", {}),
    "+ relative time, warm-up 300 steps, cosine decay, lr 3e-3": ("atrank", {"relative_time": "content"}),
    "+ relative time, warm-up 262 steps (half), cosine decay, lr 3e-3": ("atrank", {"relative_time": "content"}),
    "+ relative time, type-pair bias, warm-up 262 steps, cosine, lr 3e-3": ("atrank", {"relative_time": "content",
                                                                                     "type_pair_bias": True}),
}
# variant -> TrainConfig fields other than the trainer's defaults (Adam 1e-3, constant, clip 5)
TRAINING: dict[str, dict] = {
    "+ warm-up and cosine decay": {"lr_schedule": "cosine", "warmup_steps": 300},
    "+ relative time, warm-up 300 steps, cosine decay, lr 3e-3": {"lr_schedule": "cosine", "warmup_steps": 300,
                                                                  "learning_rate": 3e-3},
    "+ relative time, warm-up 262 steps (half), cosine decay, lr 3e-3": {"lr_schedule": "cosine", "warmup_steps": 262,
                                                                         "learning_rate": 3e-3},
    "+ relative time, type-pair bias, warm-up 262 steps, cosine, lr 3e-3": {"lr_schedule": "cosine",
                                                                            "warmup_steps": 262, "learning_rate": 3e-3},
}


def build_data(work: Path, customers: int) -> Path:
    synth, prepared = work / "synth", work / "prepared"
    if not (synth / "synth_report.json").exists():
        generate(synth, customers, seed=0, progress=False)
    if not (prepared / MANIFEST_FILE).exists():
        prepare(PrepareConfig(events_dir=str(synth), out_dir=str(prepared), cutoff_strategy="labels",
                              label_horizon_days=30, split="customer", val_fraction=0.1, test_fraction=0.2,
                              preprocessing=PreprocessingConfig(max_len=100)), progress=False)
    return prepared


def test_scores(scorer: Scorer, prepared: Path) -> pd.DataFrame:
    """Every test example's outcome probabilities (uncalibrated sigmoid), with customer_id and cutoff."""
    rows = pq.read_table(prepared / "test").to_pandas()
    outcomes = list(scorer.preprocessor.outcome_names)
    probabilities = []
    scorer.model.eval()
    with torch.no_grad():
        for start in range(0, len(rows), 512):
            batch = scorer.collate(rows.iloc[start:start + 512].to_dict("records"))
            probabilities.append(torch.sigmoid(scorer.model(batch).outcome_logits).numpy())
    scores = pd.DataFrame(np.concatenate(probabilities), columns=[f"p_{o}" for o in outcomes])
    scores[["customer_id", "cutoff"]] = rows[["customer_id", "cutoff"]]
    for o in outcomes:
        scores[f"y_{o}"] = rows[f"y_{o}"].to_numpy()
    return scores


def separation(scores: pd.DataFrame, truth: pd.DataFrame) -> dict[str, float]:
    """ROC-AUC between each rule's planted cases (label 1) and each kind of its decoys (label 0)."""
    joined = truth.merge(scores, on=["customer_id", "cutoff"])
    result = {}
    for target, rule in RULES.items():
        mine = joined[joined["target"] == target]
        cases = mine[(mine["rule"] == rule) & (mine["label"] == 1)][f"p_{target}"]
        for decoy in DECOYS[target]:
            negatives = mine[(mine["rule"] == decoy) & (mine["label"] == 0)][f"p_{target}"]
            if len(cases) and len(negatives):
                y = np.r_[np.ones(len(cases)), np.zeros(len(negatives))]
                result[f"sep/{decoy}"] = float(roc_auc_score(y, np.r_[cases, negatives]))
        result[f"n_cases/{target}"] = int(len(cases))
    return result


def outcome_aucs(scores: pd.DataFrame) -> dict[str, float]:
    result = {}
    for column in [c for c in scores.columns if c.startswith("y_")]:
        name = column.removeprefix("y_")
        known = scores[column].notna()
        result[f"auc/{name}"] = float(roc_auc_score(scores.loc[known, column], scores.loc[known, f"p_{name}"]))
    return result


def run_one(prepared: Path, truth: pd.DataFrame, model: str, overrides: dict, seed: int, epochs: int,
            work: Path, training: dict | None = None) -> dict:
    load = os.getloadavg()[0]
    started = time.perf_counter()
    result = train(TrainConfig(data_dir=str(prepared), model=model, tasks=["outcome"], max_epochs=epochs,
                               patience=3, progress=False, track=False, seed=seed, threads=1,
                               output_dir=str(work / "runs"),
                               model_overrides={} if model == "bag" else {**WIDTH, **overrides},
                               **(training or {})))
    seconds = time.perf_counter() - started
    scorer = Scorer(result.module.model, Preprocessor.load(prepared))  # type: ignore[union-attr]
    scores = test_scores(scorer, prepared)
    return {**outcome_aucs(scores), **separation(scores, truth), "epochs": result.epochs,
            "stopped_by": result.stopped_by, "seconds": round(seconds, 1), "load": round(load, 2)}


def summarise(rows: list[dict]) -> dict[str, dict[str, list[float]]]:
    """variant -> metric -> [mean, std] over seeds."""
    table: dict[str, dict[str, list[float]]] = {}
    for variant in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == variant]
        metrics = [k for k in mine[0] if k.startswith(("auc/", "sep/")) or k == "seconds"]
        table[variant] = {k: [float(np.mean([r[k] for r in mine if k in r])),
                              float(np.std([r[k] for r in mine if k in r]))] for k in metrics}
        table[variant]["seeds"] = [float(len(mine)), 0.0]
    return table


def print_table(table: dict[str, dict[str, list[float]]]) -> str:
    columns = sorted({k for row in table.values() for k in row if k.startswith(("auc/", "sep/"))})
    short = {c: c.replace("sep/churn_decoy_", "sep/c:").replace("sep/default_decoy_", "sep/d:")
             .replace("sep/uptake_decoy_", "sep/u:") for c in columns}
    lines = [f"{'model':<38}" + "".join(f"{short[c]:>22}" for c in columns) + f"{'s':>8}"]
    for variant, row in table.items():
        cells = "".join(f"{row[c][0]:>14.3f} ± {row[c][1]:.3f}" if c in row else f"{'-':>22}" for c in columns)
        lines.append(f"{variant:<38}{cells}{row['seconds'][0]:>8.0f}")
    return "\n".join(lines)


def paired(rows: list[dict], against: str) -> str:
    """Each variant minus ``against`` on the seeds both ran (same data, same budget): mean difference and a
    paired t-test per metric; a table in Markdown."""
    from scipy.stats import ttest_rel

    base = {r["seed"]: r for r in rows if r["variant"] == against}
    metrics = [k for k in next(iter(base.values())) if k.startswith(("auc/", "sep/"))] if base else []
    lines = []
    for variant in dict.fromkeys(r["variant"] for r in rows):
        if variant == against:
            continue
        mine = {r["seed"]: r for r in rows if r["variant"] == variant and r["seed"] in base}
        if len(mine) < 2:
            continue
        seeds = sorted(mine)
        lines.append(f"\n{variant} − {against}, seeds {','.join(map(str, seeds))}\n\n"
                     f"| metric | {variant} | {against} | paired difference | p |\n| --- | ---: | ---: | ---: | ---: |")
        for metric in metrics:
            a = np.array([mine[s][metric] for s in seeds if metric in mine[s]])
            b = np.array([base[s][metric] for s in seeds if metric in mine[s]])
            p_value = float(ttest_rel(a, b).pvalue) if len(a) > 1 and np.any(a != b) else 1.0
            lines.append(f"| {metric} | {a.mean():.3f} ± {a.std():.3f} | {b.mean():.3f} ± {b.std():.3f} | "
                         f"{(a - b).mean():+.3f} | {'< 0.01' if p_value < 0.01 else f'{p_value:.2f}'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=6000)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--only", nargs="*", help="variant names to run (default: all)")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--previous", nargs="*", default=[],
                        help="logs of earlier runs of this script on the same --workdir: their printed rows are kept "
                        "and those (variant, seed) pairs not run again")
    parser.add_argument("--results", nargs="*", default=[],
                        help="result files of this script (--out) to merge into one table; runs nothing new")
    parser.add_argument("--paired-against", default=None,
                        help="also print each variant minus this one, paired by seed, with a paired t-test")
    parser.add_argument("--order", choices=("variant", "seed"), default="variant",
                        help="run every seed of a variant before the next (variant) or seed by seed (seed)")
    args = parser.parse_args()
    if args.results:
        rows = [r for path in args.results for r in json.loads(Path(path).read_text())["runs"]
                if not args.only or r["variant"] in args.only]
        print(print_table(summarise(rows)))
        if args.paired_against:
            print(paired(rows, args.paired_against))
        return
    torch.set_num_threads(1)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="journey-ablation-"))
    prepared = build_data(work, args.customers)
    truth = pd.read_parquet(work / "synth" / "ground_truth.parquet")
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = [json.loads(line) for log in args.previous for line in Path(log).read_text().splitlines()
            if line.startswith("{")]
    rows = [r for r in rows if r["variant"] in VARIANTS and (not args.only or r["variant"] in args.only)]
    done = {(r["variant"], r["seed"]) for r in rows}
    names = [v for v in VARIANTS if not args.only or v in args.only]
    if args.only:
        names.sort(key=args.only.index)
    plan = ([(v, s) for v in names for s in seeds] if args.order == "variant" else
            [(v, s) for s in seeds for v in names])
    for variant, seed in plan:
        if (variant, seed) in done:
            continue
        model, overrides = VARIANTS[variant]
        row = {"variant": variant, "model": model, "seed": seed,
               **run_one(prepared, truth, model, overrides, seed, args.epochs, work, TRAINING.get(variant))}
        rows.append(row)
        print(json.dumps(row), flush=True)
    rows.sort(key=lambda r: (list(VARIANTS).index(r["variant"]), r["seed"]))
    table = summarise(rows)
    text = print_table(table)
    if args.paired_against:
        text += "\n" + paired(rows, args.paired_against)
    print("\n" + text)
    if args.out:
        Path(args.out).write_text(json.dumps({"customers": args.customers, "epochs": args.epochs, "seeds": seeds,
                                              "width": WIDTH, "runs": rows, "table": table, "text": text}, indent=1))


if __name__ == "__main__":
    main()

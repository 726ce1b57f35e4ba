"""Berka loan default: training and size levers of ATRank over many customer splits, paired against the bag.

On Berka (``bench_peers.py --parts berka``) every split trains on 66–91 loans, and the zoo's bag-of-events
logistic regression leads every sequence model, Journey's and the peers'. This benchmark asks whether a lever
of the trainer or of ATRank's size closes that gap. Each variant trains on the same customer splits as
``bench_peers.py`` (``prepare_berka``: labels cut-offs, customer split salted by the seed, ``max_len`` 50, the
peers' width H 64, 4 heads, fields of 16) with the same budget (10 epochs, patience 3) unless the variant
changes it, and is reported as mean ± std of the test ROC-AUC and as the paired difference to ``--against``
(same split) with a paired t-test.

``--summaries`` adds logistic regressions (scikit-learn, L2, C = 1) on per-customer summaries of the prepared
inputs, fitted on training + validation customers: log1p counts of each event type and categorical value, and
the mean / min / last value of each numeric field. They say where the signal is: if a linear model on a
summary matches the bag, the label depends on the journey's totals, not on its order.

    .venv/bin/python benchmarks/bench_berka_levers.py --summaries \\
        --out benchmarks/results/berka_levers.json        # ~8 min on 2 cores
    .venv/bin/python benchmarks/bench_berka_levers.py --seeds 0 1 --only atrank bag   # smoke

Needs ``../shared/data/berka`` (read in place, never copied into the project).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE / "peers"))

from bench_peers import BERKA_LOANS, BERKA_TRANS, OVERRIDES, prepare_berka  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
BUDGET = {"max_epochs": 10, "patience": 3}  # bench_peers.py's Berka budget
# name -> (model, --set overrides, trainer fields): one lever at a time on the bench's ATRank
VARIANTS: dict[str, tuple[str, dict, dict]] = {
    "atrank": ("atrank", OVERRIDES, {}),
    "bag": ("bag", {}, {}),
    "bag, 20 epochs, patience 5": ("bag", {}, {"max_epochs": 20, "patience": 5}),
    "atrank, its own width (fields of 32)": ("atrank", {}, {}),
    "+ task recency": ("atrank", {**OVERRIDES, "task_recency": True}, {}),
    "the default before 2026-12-04": ("atrank", {**OVERRIDES, "same_item_bias": False, "wide": False}, {}),
    "- same-item bias by time": ("atrank", {**OVERRIDES, "same_item_bias": False}, {}),
    "- wide with the network's own head": ("atrank", {**OVERRIDES, "wide": False}, {}),
    "+ same-item bias": ("atrank", {**OVERRIDES, "same_item_bias": True, "same_item_time": False}, {}),
    "+ same-item bias by time": ("atrank", {**OVERRIDES, "same_item_bias": True, "same_item_time": True}, {}),
    "+ wide (Wide & Deep)": ("atrank", {**OVERRIDES, "wide": True, "wide_network_head": False}, {}),
    "+ wide with the network's own head": ("atrank", {**OVERRIDES, "wide": True, "wide_network_head": True}, {}),
    "+ same-item bias by time, + wide with the network's own head": ("atrank", {
        **OVERRIDES, "same_item_bias": True, "same_item_time": True, "wide": True, "wide_network_head": True}, {}),
    "+ dropout 0.3": ("atrank", {**OVERRIDES, "dropout": 0.3}, {}),
    "+ AdamW, weight decay 0.05": ("atrank", {**OVERRIDES, "optimizer": "adamw", "weight_decay": 0.05}, {}),
    "+ one block": ("atrank", {**OVERRIDES, "num_blocks": 1}, {}),
    "+ H 32": ("atrank", {**OVERRIDES, "hidden_size": 32}, {}),
    "+ lr 3e-3": ("atrank", {**OVERRIDES, "learning_rate": 3e-3}, {}),
    "+ lr 3e-4, 30 epochs, patience 5": ("atrank", {**OVERRIDES, "learning_rate": 3e-4},
                                         {"max_epochs": 30, "patience": 5}),
    "+ 30 epochs, patience 5": ("atrank", OVERRIDES, {"max_epochs": 30, "patience": 5}),
    "+ batch 16": ("atrank", OVERRIDES, {"batch_size": 16}),
    "+ warm-up-free cosine decay": ("atrank", OVERRIDES, {"lr_schedule": "cosine"}),
    "+ early stopping on validation AUC, 30 epochs, patience 5": (
        "atrank", OVERRIDES, {"max_epochs": 30, "patience": 5, "monitor": "val/auc/default", "monitor_mode": "max"}),
}


def run_variant(job: tuple[str, int, str]) -> dict:
    """One (variant, split) training run in a worker process -> its record."""
    name, seed, work = job
    warnings.filterwarnings("ignore")
    import logging

    logging.disable(logging.WARNING)
    from journey_model.training.train import TrainConfig, train

    model, overrides, trainer = VARIANTS[name]
    prepared = Path(work) / f"berka_prepared_{seed}"
    config = TrainConfig(**{
        "data_dir": str(prepared), "model": model, "tasks": ["outcome"], "batch_size": 64, "seed": seed,
        "threads": 1, "progress": False, "track": False, "model_overrides": dict(overrides),
        "output_dir": str(Path(work) / "runs" / f"{os.getpid()}"), **BUDGET, **trainer,
    })
    cpu = time.process_time()
    result = train(config)
    return {"variant": name, "seed": seed, "auc": result.test_metrics.get("test/auc/default", math.nan),
            "epochs": result.epochs, "cpu_s": time.process_time() - cpu, "load": os.getloadavg()[0]}


def summaries(split_dir: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-customer summaries of one prepared split: {group: (n, features)} and the default labels. Count columns
    follow the prepared folder's vocabularies, so every split of it has the same columns."""
    import pyarrow.parquet as pq

    table = pq.read_table(split_dir).to_pandas()
    vocabularies = json.loads((split_dir.parent / "preprocessing.json").read_text())["vocabularies"]
    ids = [c for c in table.columns if c == "event_type" or c.startswith("cat_")]
    numeric = [c for c in table.columns if c.startswith("num_")]
    sizes = {c: len(vocabularies[c.removeprefix("cat_")]) for c in ids}
    counts = np.stack([np.concatenate([np.log1p(np.bincount(np.asarray(row[c], dtype=np.int64), minlength=sizes[c]))
                                       for c in ids]) for _, row in table.iterrows()])
    def last(values: np.ndarray) -> float:
        present = values[~np.isnan(values)]
        return float(present[-1]) if present.size else math.nan

    with warnings.catch_warnings():  # a field absent from a whole journey: NaN, then 0 (the standardised mean)
        warnings.simplefilter("ignore", RuntimeWarning)
        stats = {kind: np.nan_to_num(np.stack([[fn(np.asarray(row[c], dtype=np.float64)) for c in numeric]
                                               for _, row in table.iterrows()]))
                 for kind, fn in (("mean", np.nanmean), ("min", np.nanmin), ("last", last))}
    groups = {"counts": counts, "numeric means": stats["mean"],
              "numeric mean, min, last": np.hstack([stats["mean"], stats["min"], stats["last"]]),
              "counts + numeric means (the bag's inputs)": np.hstack([counts, stats["mean"]]),
              "counts + numeric mean, min, last": np.hstack([counts, stats["mean"], stats["min"], stats["last"]])}
    return groups, table["y_default"].to_numpy()


def summary_rows(work: Path, seeds: list[int]) -> list[dict]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    rows = []
    for seed in seeds:
        prepared = work / f"berka_prepared_{seed}"
        parts = {split: summaries(prepared / split) for split in ("train", "val", "test")}
        y_fit = np.concatenate([parts["train"][1], parts["val"][1]])
        for group in parts["train"][0]:
            fit = np.vstack([parts["train"][0][group], parts["val"][0][group]])
            scaler = StandardScaler().fit(fit)
            model = LogisticRegression(C=1.0, max_iter=2000).fit(scaler.transform(fit), y_fit)
            scores = model.predict_proba(scaler.transform(parts["test"][0][group]))[:, 1]
            rows.append({"variant": f"logistic regression on {group}", "seed": seed,
                         "auc": float(roc_auc_score(parts["test"][1], scores)), "epochs": None, "cpu_s": None})
    return rows


def table(rows: list[dict], against: str) -> list[dict]:
    from scipy import stats

    by = {}
    for r in rows:
        by.setdefault(r["variant"], {})[r["seed"]] = r
    reference = by.get(against, {})
    out = []
    for name, runs in by.items():
        aucs = np.array([runs[s]["auc"] for s in sorted(runs)])
        common = sorted(set(runs) & set(reference))
        diff = np.array([runs[s]["auc"] - reference[s]["auc"] for s in common])
        paired = name != against and len(common) > 1
        cpu = [r["cpu_s"] for r in runs.values() if r["cpu_s"] is not None]
        out.append({"variant": name, "splits": len(aucs), "auc_mean": float(aucs.mean()),
                    "auc_std": float(aucs.std(ddof=1)) if len(aucs) > 1 else 0.0,
                    "minus_reference": float(diff.mean()) if paired else None,
                    "p": float(stats.ttest_rel([runs[s]["auc"] for s in common],
                                               [reference[s]["auc"] for s in common]).pvalue) if paired else None,
                    "cpu_s_per_run": float(np.mean(cpu)) if cpu else None})
    return out


def markdown(rows: list[dict], against: str) -> str:
    lines = [f"| variant | splits | test AUC | − {against}, paired (p) | CPU s a run |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        diff = "–" if r["minus_reference"] is None else f"{r['minus_reference']:+.3f} ({r['p']:.2f})"
        cpu = "–" if r["cpu_s_per_run"] is None else f"{r['cpu_s_per_run']:.1f}"
        lines.append(f"| {r['variant']} | {r['splits']} | {r['auc_mean']:.3f} ± {r['auc_std']:.3f} | {diff} | {cpu} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(20)), help="customer splits")
    parser.add_argument("--only", nargs="+", choices=list(VARIANTS), default=None, help="variants to run")
    parser.add_argument("--against", default="bag", help="the paired reference variant (default: %(default)s)")
    parser.add_argument("--summaries", action="store_true", help="also logistic regressions on summaries")
    parser.add_argument("--lanes", type=int, default=2, help="training runs at a time, one thread each")
    parser.add_argument("--workdir", default="work/berka_levers")
    parser.add_argument("--out", default=None, help="results JSON (a .md table is written beside it)")
    args = parser.parse_args()
    if not (BERKA_TRANS.exists() and BERKA_LOANS.exists()):
        sys.exit(f"bench_berka_levers: needs {BERKA_TRANS} and {BERKA_LOANS} (the shared Berka data); not found")
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        if not (work / f"berka_prepared_{seed}" / "manifest.json").exists():
            prepare_berka(work, seed)
    names = args.only or list(VARIANTS)
    if args.against not in names:
        names.append(args.against)
    started, rows = time.time(), []
    with ProcessPoolExecutor(args.lanes) as pool:
        for name in names:
            done = list(pool.map(run_variant, [(name, seed, str(work)) for seed in args.seeds]))
            rows += done
            aucs = [r["auc"] for r in done]
            print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.1f}] {name}: AUC {np.mean(aucs):.3f} "
                  f"± {np.std(aucs, ddof=1) if len(aucs) > 1 else 0:.3f}", flush=True)
    if args.summaries:
        rows += summary_rows(work, args.seeds)
    summary = table(rows, args.against)
    text = markdown(summary, args.against)
    print(text)
    if args.out:
        out = Path(args.out)
        report = {"seeds": args.seeds, "against": args.against, "budget": BUDGET, "width": OVERRIDES,
                  "wall_s": time.time() - started, "cpus": os.cpu_count(), "table": summary, "runs": rows}
        out.write_text(json.dumps(report, indent=1))
        out.with_suffix(".md").write_text(f"# Berka levers ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n\n"
                                          f"{text}\n")


if __name__ == "__main__":
    main()

"""Journey vs. its peers, side by side: same data, same split, same budget, several seeds, one table.

Run from Journey's venv (the peers run as subprocesses in their own venvs, made by ``setup_envs.sh``):

1. **Taobao next item** (``/work/shared/data/taobao_userbehavior/UserBehavior_first_users.csv``, the first
   ``--users`` customers, 0 = all; then the peers' usual k-core filter, ``--min-interactions`` 5: only users and
   items with at least 5 interactions, so that test targets are items a model can have seen — without it 79–87 %
   of this sample's targets are items seen once or never, and every model scores 0):
   ``ingest`` (``taobao.yaml``) -> ``prepare`` (every-event cut-offs, every event kept,
   ``--split leave-last-out``: each customer's last event is the test target, the one before the validation
   target; ``max_len`` 50, hour time buckets) -> ``export.py recbole`` -> Journey's ``atrank`` and ``gru-attn``
   (``journey train`` in Python: :func:`journey_model.training.train.train`, task ``next_item``,
   ``unseen_as_miss``) and RecBole's SASRec, GRU4Rec, BERT4Rec (``run_recbole.py``). Metric: HR@10, NDCG@10,
   MRR@10 on the test targets, full ranking over every item, an item Journey's vocabulary does not know
   (``<oov>``) counted as a miss for everybody. Two counted baselines stand beside the models and are not
   "Journey's best": ``most-frequent`` (the floor) and ``recent-items`` (the customer's own items, most recent
   first; on repeat-heavy data a bar every model has to clear).
2. **Berka loan default** (``trans_PARTIAL_first3MiB.asc`` + ``loan.asc``): ``ingest`` -> ``prepare`` (labels
   cut-offs at each loan date, customer split with validation 20 % / test 30 % of the accounts, the split salted
   by the seed, so each seed is another split — the same one for every model) -> ``export.py lifestream`` ->
   Journey's ``atrank`` and ``gru-attn`` (task ``outcome``) and pytorch-lifestream's GRU (``RnnSeqEncoder``) and
   Transformer (``TransformerSeqEncoder``) encoders with a linear head (``run_lifestream.py``). Metric: test
   ROC-AUC.

Lanes share the two cores: Journey's runs in this process, the peers' runs as subprocesses from
``--peer-lanes`` more threads, so each side competes with the other and with whatever else runs on the machine
alike (CPU seconds, not wall seconds, are the cost figure for that reason).

Same for everybody: ``--epochs`` max epochs, ``--patience`` (early stopping on each library's usual validation
signal: Journey and lifestream val loss, RecBole val NDCG@10), batch size 64 customers/sequences, hidden width
64, ``torch.set_num_threads(1)``, the seeds ``--seeds``. Training cost: CPU seconds of the training pass per epoch
(``time.process_time`` around each epoch, validation excluded), with ``os.getloadavg()`` beside every timing.

Writes ``benchmarks/results/peers.json`` (every run's record) and ``benchmarks/results/peers.md`` (the table).

Commands (2 shared CPU cores)::

    bash benchmarks/peers/setup_envs.sh
    nohup nice -n 5 .venv/bin/python benchmarks/peers/bench_peers.py > work/bench_peers.log 2>&1 &   # ~27 min
    .venv/bin/python benchmarks/peers/bench_peers.py --rebuild          # rewrite peers.md from peers.json
    .venv/bin/python benchmarks/peers/bench_peers.py --users 200 --epochs 1 --berka-epochs 2 --seeds 0 \
        --results /tmp/peers_smoke --workdir /tmp/peers_smoke_work      # smoke, ~4 min

The first measured run (``benchmarks/results/peers.*``) was ``--users 120 --min-interactions 0 --epochs 2
--berka-epochs 10 --seeds 0 1 2 --peer-lanes 2`` (1-min load 7.6-11.6 from other jobs on the 2 cores while it
ran); ``peers_taobao_kcore.*`` is ``--parts taobao --epochs 10`` before next items were copied,
``peers_taobao_kcore_copy.*`` the same with today's defaults, ``peers_berka_20seeds.*`` ``--parts berka --seeds 0 … 19``
(README, "Peers side by side").
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from export import export_lifestream, export_recbole  # noqa: E402
from lightning.pytorch.callbacks import Callback  # noqa: E402

from journey_model.core.settings import key_values  # noqa: E402
from journey_model.data.ingest import ingest  # noqa: E402
from journey_model.data.prepare import PrepareConfig, prepare  # noqa: E402
from journey_model.data.preprocessing import PreprocessingConfig  # noqa: E402
from journey_model.models.registry import config_fields  # noqa: E402
from journey_model.training.recipes import RECIPE_FIELDS  # noqa: E402
from journey_model.training.train import TrainConfig, train  # noqa: E402

DATA = Path("/work/shared/data")
TAOBAO_CSV = DATA / "taobao_userbehavior" / "UserBehavior_first_users.csv"
BERKA_TRANS, BERKA_LOANS = DATA / "berka" / "trans_PARTIAL_first3MiB.asc", DATA / "berka" / "loan.asc"
MAPPINGS = REPO / "journey_model" / "data" / "mappings"
RESULTS = REPO / "benchmarks" / "results"
RECBOLE_PY, LIFESTREAM_PY = REPO / ".venvs" / "recbole" / "bin" / "python", REPO / ".venvs" / "lifestream" / "bin" / "python"
HERE = Path(__file__).resolve().parent
JOURNEY_MODELS = ["atrank", "gru-attn"]
COUNTED_BASELINES = ["most-frequent", "recent-items"]  # listed beside the models, never "Journey's best"
OUTCOME_BASELINES = ["bag"]  # Berka: the bag-of-events logistic regression, only when asked for with --only
RECBOLE_MODELS = ["SASRec", "GRU4Rec", "BERT4Rec"]
LIFESTREAM_MODELS = ["rnn", "transformer"]
OVERRIDES = {"hidden_size": 64, "num_heads": 4, "field_dim": 16}
RANK_KEYS = ("hr_at_10", "ndcg_at_10", "mrr_at_10")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.1f}] {message}", flush=True)


class EpochCpu(Callback):
    """Wall and CPU seconds (``time.process_time``) of each training pass: from the epoch's start to its last
    training batch's end — loading, collating, the steps and Lightning's per-step work, as the peers' own loops
    time theirs; validation, checkpoints and early stopping, which come after the last batch, are left out."""

    def __init__(self) -> None:
        self.epochs: list[dict] = []
        self._start = self._last = None

    def on_train_epoch_start(self, trainer, module) -> None:  # noqa: ANN001
        self._start = self._last = (time.perf_counter(), time.process_time())

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self._last = (time.perf_counter(), time.process_time())

    def on_train_epoch_end(self, trainer, module) -> None:  # noqa: ANN001
        if self._start is None:
            return
        self.epochs.append({"wall_s": self._last[0] - self._start[0], "cpu_s": self._last[1] - self._start[1],
                            "loadavg": list(os.getloadavg())})
        self._start = None


# ---- data
def prepare_taobao(work: Path, users: int, min_interactions: int = 0, no_repeats: bool = False) -> Path:
    """The first ``users`` customers of the Taobao file (0: all) -> leave-last-out next-item examples; the
    prepared dir. ``min_interactions`` > 0 keeps only users and items with at least that many interactions,
    filtered in turn until both hold (the k-core filter of the peers' benchmarks, RecBole's
    ``user_inter_num_interval`` / ``item_inter_num_interval``), so that test targets are items a model can know.
    ``no_repeats`` keeps only each customer's first interaction with an item (before the k-core filter), as in
    rating logs where nobody rates a movie twice: every target is then an item new to the customer."""
    subset = work / "taobao_subset.csv"
    with TAOBAO_CSV.open() as source, subset.open("w", newline="") as sink:
        reader, writer = csv.reader(source), csv.writer(sink)
        writer.writerow(next(reader))
        seen: list[str] = []
        for row in reader:
            if not seen or row[0] != seen[-1]:
                seen.append(row[0])
                if users and len(seen) > users:
                    break
            writer.writerow(row)
    if no_repeats:
        first_interactions(subset)
    if min_interactions:
        k_core(subset, min_interactions)
    ingest([subset], MAPPINGS / "taobao.yaml", work / "taobao_events", progress=False)
    report = prepare(PrepareConfig(
        events_dir=str(work / "taobao_events"), out_dir=str(work / "taobao_prepared"), cutoff_strategy="every-event",
        split="leave-last-out", forecast_horizon_days=1.0,
        preprocessing=PreprocessingConfig(max_len=50, time_unit="hour"),
    ), overwrite=True, progress=False)
    log(report.summary())
    return work / "taobao_prepared"


def first_interactions(path: Path) -> None:
    """Rewrite an interactions CSV (user, item, ..., timestamp) keeping each (user, item) pair's earliest row."""
    import pandas as pd

    rows = pd.read_csv(path, dtype=str)
    user, item, when = rows.columns[0], rows.columns[1], rows.columns[-1]
    earliest = rows.assign(_t=pd.to_numeric(rows[when])).sort_values("_t", kind="stable")
    kept = earliest.drop_duplicates([user, item], keep="first").sort_index().drop(columns="_t")
    kept.to_csv(path, index=False)
    log(f"first interactions only: kept {len(kept):,} of {len(rows):,} events")


def k_core(path: Path, k: int) -> None:
    """Rewrite an interactions CSV (user, item, ...) keeping users and items with >= k rows, to a fixed point."""
    import pandas as pd

    rows = pd.read_csv(path, dtype=str)
    user, item = rows.columns[:2]
    before = (len(rows), rows[user].nunique(), rows[item].nunique())
    while True:
        kept = rows[rows.groupby(item)[user].transform("size") >= k]
        kept = kept[kept.groupby(user)[item].transform("size") >= k]
        if len(kept) == len(rows):
            break
        rows = kept
    rows.to_csv(path, index=False)
    log(f"{k}-core: kept {len(rows):,} of {before[0]:,} events, {rows[user].nunique():,} of {before[1]:,} users, "
        f"{rows[item].nunique():,} of {before[2]:,} items")


def prepare_berka(work: Path, seed: int) -> Path:
    """Berka loans -> point-in-time default examples, customer split salted by ``seed``; the prepared dir."""
    if not (work / "berka_events").exists():
        ingest([BERKA_TRANS], MAPPINGS / "berka.yaml", work / "berka_events", progress=False)
        ingest([BERKA_LOANS], MAPPINGS / "berka_loans.yaml", work / "berka_loans", progress=False)
    out = work / f"berka_prepared_{seed}"
    report = prepare(PrepareConfig(
        events_dir=str(work / "berka_events"), out_dir=str(out), cutoff_strategy="labels",
        labels_path=str(work / "berka_loans" / "labels.parquet"), split="customer", label_horizon_days=0,
        val_fraction=0.2, test_fraction=0.3, seed=seed, preprocessing=PreprocessingConfig(max_len=50),
    ), overwrite=True, progress=False)
    log(report.summary())
    return out


# ---- runs
def run_journey(prepared: Path, model: str, task: str, seed: int, args: argparse.Namespace, work: Path) -> dict:
    accepted = config_fields(model) | RECIPE_FIELDS
    config = TrainConfig(
        data_dir=str(prepared), model=model, tasks=[task], max_epochs=args.epochs, patience=args.patience,
        batch_size=args.batch_size, seed=seed, threads=1, progress=False, track=False, unseen_as_miss=True,
        output_dir=str(work / "runs" / f"{task}_{seed}"),
        model_overrides={k: v for k, v in OVERRIDES.items() if k in accepted},
    )
    timer = EpochCpu()
    wall, cpu = time.perf_counter(), time.process_time()
    result = train(config, callbacks=[timer])
    epochs = timer.epochs
    test = result.test_metrics
    record = {"library": "journey", "model": model, "seed": seed, "task": task, "max_epochs": args.epochs,
              "epochs": len(epochs), "epoch_times": epochs, "parameters": result.parameters,
              "cpu_s_per_epoch": sum(e["cpu_s"] for e in epochs) / max(len(epochs), 1),
              "wall_s_per_epoch": sum(e["wall_s"] for e in epochs) / max(len(epochs), 1),
              "run_wall_s": time.perf_counter() - wall, "run_cpu_s": time.process_time() - cpu,
              "loadavg_end": list(os.getloadavg())}
    if task == "next_item":
        record["test_peer"] = {k: test.get(f"test/{k}/item", math.nan) for k in RANK_KEYS}
        record["test_peer"]["n_ranked"] = test.get("test/n_ranked/item")
        record["test_peer"]["n_unseen"] = test.get("test/unseen_targets/item")
    else:
        record["test"] = {"auc": test.get("test/auc/default", math.nan), "pr_auc": test.get("test/pr_auc/default")}
    return record


def run_peer(python: Path, script: str, arguments: list[str], out: Path) -> dict:
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONWARNINGS": "ignore"}
    # the same niceness as this process (inherited): start the whole benchmark with `nice -n 5`
    command = [str(python), str(HERE / script), *arguments, "--threads", "1", "--out", str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{script} {' '.join(arguments)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(out.read_text())


def guarded(what: str, records: list[dict], call) -> None:  # noqa: ANN001
    began = time.perf_counter()
    try:
        record = call()
    except Exception as error:  # noqa: BLE001 - a failed run is a row, the others still run
        log(f"FAILED {what}: {type(error).__name__}: {str(error)[:2000]}")
        records.append({"what": what, "failed": f"{type(error).__name__}: {str(error)[:500]}"})
        return
    record["what"] = what
    records.append(record)
    metric = record.get("test_peer") or record.get("test")
    log(f"{what}: {record['epochs']} epochs, {record['cpu_s_per_epoch']:.1f} CPU s/epoch, "
        f"{time.perf_counter() - began:.0f} s; {json.dumps(metric)}")


# ---- table
def _ms(values: list[float], digits: int = 4) -> str:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def summarise(records: list[dict]) -> dict:
    """Per (data, model): mean and std of the metric and the CPU s/epoch over seeds; the goal's verdicts."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in records:
        if "failed" in r:
            continue
        data = "taobao" if ("test_peer" in r) else "berka"
        groups.setdefault((data, r["library"], r["model"]), []).append(r)
    rows = []
    for (data, library, model), runs in groups.items():
        metric = [r["test_peer"]["ndcg_at_10"] if data == "taobao" else r["test"]["auc"] for r in runs]
        row = {"data": data, "library": library, "model": model, "seeds": [r["seed"] for r in runs],
               "epochs": [r["epochs"] for r in runs],
               "cpu_s_per_epoch": [r["cpu_s_per_epoch"] for r in runs],
               "loadavg_1min": [e["loadavg"][0] for r in runs for e in r["epoch_times"]],
               "metric": "ndcg_at_10" if data == "taobao" else "auc", "values": metric}
        if data == "taobao":
            for k in RANK_KEYS:
                row[k] = [r["test_peer"][k] for r in runs]
        rows.append(row)
    verdicts = {}
    for data, primary in (("taobao", "ndcg_at_10"), ("berka", "auc")):
        def mean(values: list[float]) -> float:
            values = [v for v in values if v is not None and not math.isnan(v)]
            return statistics.mean(values) if values else math.nan
        mine = [r for r in rows if r["data"] == data and r["library"] == "journey"
                and r["model"] not in COUNTED_BASELINES]
        peers = [r for r in rows if r["data"] == data and r["library"] != "journey"]
        if not mine or not peers:
            continue
        # best by the metric; a tie goes to the cheaper model (for the peer: the stricter cost bar)
        def rank(r: dict) -> tuple[float, float]:
            return (mean(r["values"]), -mean(r["cpu_s_per_epoch"]))
        best_mine, best_peer = max(mine, key=rank), max(peers, key=rank)
        ratio = mean(best_mine["cpu_s_per_epoch"]) / mean(best_peer["cpu_s_per_epoch"])
        verdicts[data] = {
            "metric": primary, "journey_best": best_mine["model"], "journey_value": mean(best_mine["values"]),
            "peer_best": best_peer["model"], "peer_value": mean(best_peer["values"]),
            "cpu_ratio_journey_over_peer": ratio,
            "goal_quality": mean(best_mine["values"]) >= mean(best_peer["values"]), "goal_cost": ratio <= 0.5,
            "all_zero": all(v == 0 for r in mine + peers for v in r["values"]),
        }
    checks = [r["split_check"] for r in records if "split_check" in r]
    split_check = {"recbole_runs_checked": len(checks),
                   "target_mismatches": sum(c[s]["mismatches"] for c in checks for s in c)}
    return {"rows": rows, "verdicts": verdicts, "split_check": split_check}


def markdown(summary: dict, settings: dict) -> str:
    lines = [f"# Journey vs. peers ({settings['date']})", "",
             f"Settings: {json.dumps({k: v for k, v in settings.items() if k != 'date'})}", "",
             f"Split check (RecBole's LS held-out targets vs. Journey's leave-last-out targets): "
             f"{json.dumps(summary['split_check'])}", ""]
    for data, title, cols in (
        ("taobao", "Taobao next item (leave-last-out, full ranking, <oov> target = miss)", RANK_KEYS),
        ("berka", "Berka loan default (customer split per seed)", ("auc",)),
    ):
        rows = [r for r in summary["rows"] if r["data"] == data]
        if not rows:
            continue
        verdict = summary["verdicts"].get(data, {})
        peer_cpu = None
        if verdict:
            peer_cpu = statistics.mean(next(r for r in rows if r["model"] == verdict["peer_best"])["cpu_s_per_epoch"])
        lines += [f"## {title}", "",
                  "| library | model | " + " | ".join(f"{c.upper().replace('_AT_', '@')}" for c in cols)
                  + " | CPU s/epoch | ÷ best peer's | epochs | load (1 min) |",
                  "|---|---|" + "---|" * len(cols) + "---|---|---|---|"]
        for r in sorted(rows, key=lambda r: (r["library"] != "journey", r["model"])):
            values = [_ms(r[c]) for c in cols] if data == "taobao" else [_ms(r["values"], 3)]
            cpu = statistics.mean(r["cpu_s_per_epoch"])
            ratio = f"{cpu / peer_cpu:.2f}" if peer_cpu and r["model"] not in COUNTED_BASELINES else "-"
            load = r["loadavg_1min"]
            lines.append(f"| {r['library']} | {r['model']} | " + " | ".join(values)
                         + f" | {_ms(r['cpu_s_per_epoch'], 2)} | {ratio} | {','.join(map(str, r['epochs']))} | "
                         + (f"{min(load):.1f}–{max(load):.1f}" if load else "-") + " |")
        if verdict:
            lines += ["", f"Goal (Journey's best ≥ best peer on {verdict['metric']}, at ≤ 0.5× its CPU s/epoch): "
                      f"Journey {verdict['journey_best']} {verdict['journey_value']:.4f} vs. "
                      f"{verdict['peer_best']} {verdict['peer_value']:.4f} — quality "
                      f"{'met' if verdict['goal_quality'] else 'NOT met'}; CPU ratio "
                      f"{verdict['cpu_ratio_journey_over_peer']:.2f} — cost "
                      f"{'met' if verdict['goal_cost'] else 'NOT met'}."
                      + (" Every model scored 0 on every seed: at this size the quality comparison says nothing."
                         if verdict.get("all_zero") else ""), ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=0, help="first N Taobao customers, 0 = all (default: %(default)s)")
    parser.add_argument("--min-interactions", type=int, default=5,
                        help="Taobao: keep users and items with at least this many interactions (k-core), 0 = "
                             "every event (default: %(default)s)")
    parser.add_argument("--no-repeats", action="store_true",
                        help="Taobao: keep each customer's first interaction with an item only, so that no target "
                             "repeats an item of the customer's history (like a ratings log)")
    parser.add_argument("--epochs", type=int, default=10, help="Taobao: max epochs for every model (default: %(default)s)")
    parser.add_argument("--berka-epochs", type=int, default=10, help="max epochs on Berka (default: %(default)s)")
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="+", metavar="MODEL",
                        help="run only these models (e.g. SASRec atrank; lifestream's: rnn transformer)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="a config field for Journey's models on top of the common width, e.g. causal_blocks=0")
    parser.add_argument("--parts", nargs="+", default=["taobao", "berka"], choices=["taobao", "berka"])
    parser.add_argument("--peer-lanes", type=int, default=2,
                        help="peer runs at a time, beside Journey's lane (default: %(default)s)")
    parser.add_argument("--rebuild", action="store_true",
                        help="only rewrite peers.md (and the summary in peers.json) from the runs in peers.json")
    parser.add_argument("--workdir", type=Path, help="data, exports and checkpoints (default: a temporary folder, deleted at the end)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    if args.rebuild:
        payload = json.loads((args.results / "peers.json").read_text())
        summary = summarise(payload["runs"])
        payload.update(summary)
        (args.results / "peers.json").write_text(json.dumps(payload, indent=1, default=str))
        (args.results / "peers.md").write_text(markdown(summary, payload["settings"]))
        print((args.results / "peers.md").read_text())
        return 0
    OVERRIDES.update(key_values("--set", "causal_blocks=0", "FIELD=VALUE")(args.set))
    torch.set_num_threads(1)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    # absolute: the RecBole runner works in a folder of its own and reads the export by this path
    work = (args.workdir or Path(tempfile.mkdtemp(prefix="bench_peers_"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    settings = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "taobao_users": args.users,
                "journey_overrides": dict(OVERRIDES),
                "taobao_min_interactions": args.min_interactions, "taobao_no_repeats": args.no_repeats,
                "max_epochs_taobao": args.epochs, "max_epochs_berka": args.berka_epochs, "patience": args.patience,
                "batch_size": args.batch_size, "hidden": 64, "torch_threads": 1, "seeds": args.seeds,
                "torch": torch.__version__, "cpus": os.cpu_count(), "peer_lanes": args.peer_lanes}
    records: list[dict] = []
    began = time.perf_counter()
    out_json, out_md = args.results / "peers.json", args.results / "peers.md"

    saving = threading.Lock()

    def save() -> None:
        with saving:
            _save()

    def _save() -> None:
        args.results.mkdir(parents=True, exist_ok=True)
        done = list(records)
        summary = summarise(done)
        payload = {"settings": settings, "wall_s": time.perf_counter() - began, **summary, "runs": done}
        for path, text in ((out_json, json.dumps(payload, indent=1, default=str)), (out_md, markdown(summary, settings))):
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_text(text)
            os.replace(tmp, path)

    def wanted(models: list[str]) -> list[str]:
        return [m for m in models if not args.only or m in args.only]

    # Two lanes on the two cores: Journey's runs here, the peers' runs (one at a time) in a second thread.
    lane = ThreadPoolExecutor(max_workers=args.peer_lanes)
    peer_jobs = []

    def peer_job(what: str, records: list[dict], call) -> None:  # noqa: ANN001
        guarded(what, records, call)
        save()

    if "taobao" in args.parts:
        prepared = prepare_taobao(work, args.users, args.min_interactions, args.no_repeats)
        exported = export_recbole(prepared, work / "export", "taobao")
        settings["taobao_export"] = {k: exported[k] for k in ("customers", "interactions", "items_in_vocabulary",
                                                              "test_targets_oov")}
        log(f"exported: {json.dumps(settings['taobao_export'])}")
        for seed in args.seeds:
            for model in wanted(RECBOLE_MODELS):
                peer_jobs.append(lane.submit(peer_job, f"taobao recbole {model} seed {seed}", records, partial(
                    run_peer, RECBOLE_PY, "run_recbole.py",
                    ["--data", str(work / "export"), "--name", "taobao", "--model", model, "--seed", str(seed),
                     "--epochs", str(args.epochs), "--patience", str(args.patience),
                     "--batch-size", str(args.batch_size), "--hidden", "64"],
                    work / "peer_runs" / f"taobao_{model}_{seed}.json")))
        for seed in args.seeds:
            for model in wanted([*COUNTED_BASELINES, *JOURNEY_MODELS]):
                guarded(f"taobao journey {model} seed {seed}", records,
                        partial(run_journey, prepared, model, "next_item", seed, args, work))
            save()
    if "berka" in args.parts:
        for seed in args.seeds:
            prepared = prepare_berka(work, seed)
            exported = export_lifestream(prepared, work / "export", f"berka_{seed}")
            settings.setdefault("berka_split", {})[seed] = {"examples": exported["examples"],
                                                            "positives": exported["positives"]}
            log(f"berka seed {seed}: {json.dumps(exported['examples'])} positives {json.dumps(exported['positives'])}")
            for encoder in wanted(LIFESTREAM_MODELS):
                peer_jobs.append(lane.submit(peer_job, f"berka lifestream {encoder} seed {seed}", records, partial(
                    run_peer, LIFESTREAM_PY, "run_lifestream.py",
                    ["--data", str(work / "export"), "--name", f"berka_{seed}", "--encoder", encoder,
                     "--seed", str(seed), "--epochs", str(args.berka_epochs), "--patience", str(args.patience),
                     "--batch-size", str(args.batch_size), "--hidden", "64"],
                    work / "peer_runs" / f"berka_{encoder}_{seed}.json")))
            for model in wanted(JOURNEY_MODELS) + [m for m in OUTCOME_BASELINES if args.only and m in args.only]:
                guarded(f"berka journey {model} seed {seed}", records,
                        partial(run_journey, prepared, model, "outcome", seed, replace_epochs(args), work))
            save()
    for job in peer_jobs:
        job.result()
    lane.shutdown()
    save()
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    log(f"done in {time.perf_counter() - began:.0f} s; wrote {out_json} and {out_md}")
    print(out_md.read_text())
    return 0


def replace_epochs(args: argparse.Namespace) -> argparse.Namespace:
    """The Berka budget: ``--berka-epochs`` max epochs instead of ``--epochs``."""
    return argparse.Namespace(**{**vars(args), "epochs": args.berka_epochs})


if __name__ == "__main__":
    sys.exit(main())

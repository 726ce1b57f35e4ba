"""Benchmark the model zoo: every model, same data, same budget, one table per task (issue 3's evidence).

Two data sets, each trained through :func:`pipelines.compare.compare_models` (the same path as
`journey train`), so every model sees the same prepared examples, epochs, batch size and early stopping:

* **Synthetic bank** (:mod:`journey_model.data.synth`, planted order- and time-dependent causes of churn, default
  and product uptake): ``synth.generate`` -> ``prepare`` (labels cut-offs, 30-day label horizon, time split:
  validation = second-last cut-off, test = last cut-off, ``max_len`` 100) -> every model of
  :func:`journey_model.models.list_models` on the ``outcome`` task, then on the ``next_event`` task. Models
  that cannot answer a task are listed as skipped with the reason. Results:
  ``benchmarks/results/models_synth_outcome.{json,png}`` and ``models_synth_next_event.{json,png}``.
* **Taobao UserBehavior** (real data, ``/work/shared/data/taobao_userbehavior/UserBehavior_first_users.csv``;
  skipped with a message when the file is absent): ``ingest`` with ``journey_model/data/mappings/taobao.yaml`` -> ``prepare``
  (every event a cut-off, the 30 most recent per user, time split: validation from 2017-12-02, test from
  2017-12-03, ``max_len`` 50, hour time buckets) -> atrank, gru, markov, most-frequent on ``next_event``
  and on ``next_item``. Results: ``benchmarks/results/models_taobao_next_event.{json,png}`` and
  ``models_taobao_next_item.{json,png}``.

Each data set also gets ``models_<data>_run.json``: the settings, wall times and the printed tables. The
JSON tables are :meth:`Comparison.save`'s format (one object per model: model, tasks, metrics, seconds,
parameters, epochs, events_per_second, skipped). A model whose training raises is recorded as skipped with
``failed: <error>`` (traceback in the log) instead of ending the whole run. Every output file is written to
a temporary name in the results folder, then renamed, so a killed run never leaves a half-written file.

Commands (2 shared CPU cores; the synthetic part takes roughly 25 minutes with the defaults)::

    nohup .venv/bin/python benchmarks/bench_models.py synth > work/bench_models_synth.log 2>&1 &
    nohup .venv/bin/python benchmarks/bench_models.py taobao > work/bench_models_taobao.log 2>&1 &
    .venv/bin/python benchmarks/bench_models.py synth --customers 600 --epochs 1 --models atrank bag  # smoke

``--seeds 0,1,2`` runs every model once per seed on data drawn once and writes
``models_<data>_<task>_seeds.json`` (every seed's rows, mean ± std per model). ``synth-sessions`` is the sub-day
rhythm task: the synthetic bank with every-event cut-offs (20 per customer, customer split), next behaviour,
where what comes next depends on the last minutes (a browsing session, a payment's follow-ups) as well as on
the last months::

    nohup .venv/bin/python benchmarks/bench_models.py synth-sessions --customers 2000 --seeds 0,1,2 > work/sessions.log 2>&1 &
    nohup .venv/bin/python benchmarks/bench_models.py taobao --seeds 0,1,2 > work/taobao_seeds.log 2>&1 &

Options: ``--customers`` (synthetic customers), ``--epochs`` (the same ``max_epochs`` for every model),
``--models`` (default: all), ``--tasks``, ``--workdir`` (data and checkpoints; default a temporary folder,
deleted at the end), ``--results`` (default ``benchmarks/results``), ``--threads`` (torch CPU threads,
default 1: on 2 busy shared cores, two threads ran an ATRank epoch ~20x slower than one thread did).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from journey_model.core.settings import key_values
from journey_model.data.ingest import ingest
from journey_model.data.prepare import PrepareConfig, prepare
from journey_model.data.preprocessing import PreprocessingConfig
from journey_model.data.synth import generate
from journey_model.models import list_models
from journey_model.training.train import TrainConfig
from pipelines.compare import Comparison, ComparisonRow, compare_models

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
TAOBAO_CSV = Path("/work/shared/data/taobao_userbehavior/UserBehavior_first_users.csv")
TAOBAO_MAPPING = REPO_ROOT / "journey_model" / "data" / "mappings" / "taobao.yaml"
TAOBAO_MODELS = ["atrank", "gru", "markov", "most-frequent"]

# Metric columns of each task's table (test metrics, keys without "test/").
METRIC_KEYS: dict[str, list[str]] = {
    "outcome": ["auc/churn", "auc/default", "auc/uptake", "pr_auc/churn"],
    "next_event": ["acc", "hr_at_5", "mrr"],
    "next_item": ["acc/item", "hr_at_10/item", "mrr/item", "sampled_auc/item"],
    "forecast": ["step_acc/1", "step_acc/3", "step_acc/5", "edit_distance_norm"],
}
# Model config overrides shared by every neural model (compare_models drops them for bag and the counts).
MODEL_OVERRIDES = {"hidden_size": 64, "num_heads": 4, "field_dim": 16}


@dataclass
class BenchSettings:
    """One benchmark run's budget: identical for every model of a table."""

    max_epochs: int = 8  # epochs at most per model (early stopping may end sooner)
    batch_size: int = 64  # customers (examples) per batch
    patience: int = 3  # validation epochs without improvement of val/loss before stopping
    seed: int = 0  # data order and initialisation
    model_overrides: dict[str, object] = field(default_factory=lambda: dict(MODEL_OVERRIDES))  # config fields


def _quiet_lightning() -> None:
    """Keep the log readable: Lightning's per-run banners and known warnings are noise here."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*transfer_batch_to_device.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")


def _write_atomic(path: Path, write) -> None:  # noqa: ANN001 - write(tmp_path) -> None
    """Call ``write`` on a temporary file beside ``path`` (same suffix), then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the folder's usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_comparison(comparison: Comparison, metric_keys: list[str], results_dir: Path, stem: str) -> list[Path]:
    """Write ``<stem>.json`` (Comparison.save format) and ``<stem>.png`` (bar chart) atomically."""
    json_path, png_path = results_dir / f"{stem}.json", results_dir / f"{stem}.png"
    _write_atomic(json_path, comparison.save)
    if any(not row.skipped for row in comparison.rows):
        _write_atomic(png_path, lambda tmp: comparison.plot(metric_keys, tmp))
        return [json_path, png_path]
    return [json_path]


def compare_each(models: list[str], base: TrainConfig) -> Comparison:
    """:func:`compare_models` one model at a time, so a model that fails becomes a ``failed:`` row."""
    comparison = Comparison()
    for name in models:
        try:
            comparison.rows.extend(compare_models([name], base).rows)
        except Exception as error:  # noqa: BLE001 - recorded in the table, traceback in the log
            print(f"  FAILED {name}: {type(error).__name__}: {error}", flush=True)
            traceback.print_exc(file=sys.stdout)
            comparison.rows.append(ComparisonRow(name, [], {}, 0.0, 0, 0,
                                                 skipped=f"failed: {type(error).__name__}: {error}"[:200]))
    return comparison


def run_task(prepared: Path, task: str, models: list[str], settings: BenchSettings, runs_dir: Path) -> Comparison:
    """Train ``models`` on ``task`` of the prepared data with ``settings``; print and return the comparison."""
    base = TrainConfig(
        data_dir=str(prepared), tasks=[task], max_epochs=settings.max_epochs, batch_size=settings.batch_size,
        patience=settings.patience, seed=settings.seed, progress=False, output_dir=str(runs_dir / task),
        model_overrides=dict(settings.model_overrides),
    )
    print(f"\n== {task}: {len(models)} models, max_epochs={settings.max_epochs}, batch {settings.batch_size}, "
          f"patience {settings.patience}", flush=True)
    began = time.perf_counter()
    comparison = compare_each(models, base)
    print(f"== {task} done in {time.perf_counter() - began:.0f} s\n", flush=True)
    print(comparison.table(METRIC_KEYS[task]), flush=True)
    return comparison


def prepare_synth(workdir: Path, customers: int, seed: int = 0) -> Path:
    """Synthetic bank events -> point-in-time outcome examples (labels cut-offs, time split); the prepared dir."""
    events_dir, prepared = workdir / "synth", workdir / "synth_prepared"
    began = time.perf_counter()
    print(generate(events_dir, customers=customers, seed=seed, progress=False).summary(), flush=True)
    report = prepare(PrepareConfig(
        events_dir=str(events_dir), out_dir=str(prepared), cutoff_strategy="labels", label_horizon_days=30,
        preprocessing=PreprocessingConfig(max_len=100),
    ), overwrite=True, progress=False)
    print(report.summary(), flush=True)
    print(f"data ready in {time.perf_counter() - began:.0f} s", flush=True)
    return prepared


def prepare_synth_sessions(workdir: Path, customers: int, seed: int = 0) -> Path:
    """Synthetic bank events -> every-event next-behaviour examples (the 20 most recent cut-offs per customer,
    customer split): the next event depends on the last minutes (browsing sessions, a card payment's
    follow-ups) as much as on the last months — the sub-day rhythm task. The prepared dir."""
    events_dir, prepared = workdir / "synth_sessions", workdir / "synth_sessions_prepared"
    began = time.perf_counter()
    print(generate(events_dir, customers=customers, seed=seed, progress=False).summary(), flush=True)
    report = prepare(PrepareConfig(
        events_dir=str(events_dir), out_dir=str(prepared), cutoff_strategy="every-event",
        max_examples_per_customer=20, split="customer", val_fraction=0.1, test_fraction=0.2,
        preprocessing=PreprocessingConfig(max_len=100),
    ), overwrite=True, progress=False)
    print(report.summary(), flush=True)
    print(f"data ready in {time.perf_counter() - began:.0f} s", flush=True)
    return prepared


def prepare_taobao(workdir: Path, csv: Path = TAOBAO_CSV) -> Path:
    """Taobao CSV -> canonical events -> every-event next-behaviour examples (time split); the prepared dir."""
    events_dir, prepared = workdir / "taobao", workdir / "taobao_prepared"
    began = time.perf_counter()
    print(ingest([csv], TAOBAO_MAPPING, events_dir, progress=False).summary(), flush=True)
    report = prepare(PrepareConfig(
        events_dir=str(events_dir), out_dir=str(prepared), cutoff_strategy="every-event",
        max_examples_per_customer=30, split="time", val_from="2017-12-02", test_from="2017-12-03",
        forecast_horizon_days=1.0, preprocessing=PreprocessingConfig(max_len=50, time_unit="hour"),
    ), overwrite=True, progress=False)
    print(report.summary(), flush=True)
    print(f"data ready in {time.perf_counter() - began:.0f} s", flush=True)
    return prepared


def _run_record(name: str, settings: BenchSettings, extra: dict, tables: dict[str, str], seconds: float) -> dict:
    return {"data": name, "settings": settings.__dict__, **extra, "wall_seconds": round(seconds, 1),
            "torch_threads": torch.get_num_threads(), "tables": tables}


def bench_synth(workdir: Path, results_dir: Path, customers: int, settings: BenchSettings,
                models: list[str] | None = None, tasks: list[str] | None = None) -> dict[str, Comparison]:
    """The synthetic-bank benchmark: one comparison per task, saved as models_synth_<task>.{json,png}."""
    began = time.perf_counter()
    models = models or list_models()
    prepared = prepare_synth(workdir, customers, settings.seed)
    comparisons, tables, written = {}, {}, []
    for task in tasks or ["outcome", "next_event"]:
        comparison = run_task(prepared, task, models, settings, workdir / "runs_synth")
        comparisons[task], tables[task] = comparison, comparison.table(METRIC_KEYS[task])
        written += save_comparison(comparison, METRIC_KEYS[task], results_dir, f"models_synth_{task}")
    seconds = time.perf_counter() - began
    record = _run_record("synth_bank", settings, {"customers": customers, "models": models}, tables, seconds)
    run_file = results_dir / "models_synth_run.json"
    _write_atomic(run_file, lambda tmp: tmp.write_text(json.dumps(record, indent=1)))
    print(f"\nsynthetic benchmark: {seconds:.0f} s; wrote {', '.join(str(p) for p in [*written, run_file])}")
    return comparisons


def bench_taobao(workdir: Path, results_dir: Path, settings: BenchSettings, models: list[str] | None = None,
                 tasks: list[str] | None = None, csv: Path = TAOBAO_CSV) -> dict[str, Comparison]:
    """The Taobao benchmark: one comparison per task, saved as models_taobao_<task>.{json,png}."""
    if not csv.exists():
        print(f"taobao: {csv} is absent; skipping the real-data benchmark")
        return {}
    began = time.perf_counter()
    models = models or TAOBAO_MODELS
    prepared = prepare_taobao(workdir, csv)
    comparisons, tables, written = {}, {}, []
    for task in tasks or ["next_event", "next_item"]:
        comparison = run_task(prepared, task, models, settings, workdir / "runs_taobao")
        comparisons[task], tables[task] = comparison, comparison.table(METRIC_KEYS[task])
        written += save_comparison(comparison, METRIC_KEYS[task], results_dir, f"models_taobao_{task}")
    seconds = time.perf_counter() - began
    record = _run_record("taobao", settings, {"csv": str(csv), "models": models}, tables, seconds)
    run_file = results_dir / "models_taobao_run.json"
    _write_atomic(run_file, lambda tmp: tmp.write_text(json.dumps(record, indent=1)))
    print(f"\ntaobao benchmark: {seconds:.0f} s; wrote {', '.join(str(p) for p in [*written, run_file])}")
    return comparisons


SESSIONS_MODELS = ["atrank", "atrank-reference", "gru", "lstm-luong", "gru-bahdanau", "markov", "most-frequent"]


def summarise_seeds(per_seed: dict[int, Comparison], metric_keys: list[str]) -> dict[str, dict[str, list[float]]]:
    """model -> metric -> [mean, std] over the seeds (skipped rows left out)."""
    import numpy as np

    summary: dict[str, dict[str, list[float]]] = {}
    for comparison in per_seed.values():
        for row in comparison.rows:
            if row.skipped:
                continue
            for key in [*metric_keys, "seconds"]:
                value = row.seconds if key == "seconds" else row.metrics.get(key)
                if value is not None:
                    summary.setdefault(row.model, {}).setdefault(key, []).append(float(value))
    return {model: {k: [float(np.mean(v)), float(np.std(v)), len(v)] for k, v in metrics.items()}
            for model, metrics in summary.items()}


def bench_seeds(name: str, prepared_of, results_dir: Path, settings: BenchSettings, seeds: list[int],  # noqa: ANN001
                models: list[str], tasks: list[str], workdir: Path) -> dict:
    """Every task and model once per seed (data drawn once, the seed sets order and initialisation); writes
    ``models_<name>_<task>_seeds.json`` with every seed's rows and mean ± std per model."""
    from dataclasses import asdict, replace

    began = time.perf_counter()
    prepared = prepared_of(workdir)
    record: dict = {"data": name, "settings": settings.__dict__, "seeds": seeds, "models": models, "tasks": {}}
    for task in tasks:
        per_seed = {seed: run_task(prepared, task, models, replace(settings, seed=seed), workdir / f"runs_{seed}")
                    for seed in seeds}
        summary = summarise_seeds(per_seed, METRIC_KEYS[task])
        lines = [f"{'model':<18}" + "".join(f"{k:>20}" for k in METRIC_KEYS[task] if any(k in m for m in
                                                                                          summary.values()))]
        for model, metrics in summary.items():
            lines.append(f"{model:<18}" + "".join(f"{metrics[k][0]:>12.3f} ± {metrics[k][1]:.3f}"
                                                  for k in METRIC_KEYS[task] if k in metrics))
        table = "\n".join(lines)
        print(f"\n{name} {task}, {len(seeds)} seeds (mean ± std):\n{table}", flush=True)
        record["tasks"][task] = {"summary": summary, "table": table,
                                 "rows": {str(seed): [asdict(r) for r in c.rows] for seed, c in per_seed.items()}}
        record["wall_seconds"] = round(time.perf_counter() - began, 1)
        record["load_average"] = os.getloadavg()
        out = results_dir / f"models_{name}_{task}_seeds.json"
        _write_atomic(out, lambda tmp, data=dict(record): tmp.write_text(json.dumps(data, indent=1)))
        print(f"wrote {out}", flush=True)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", choices=["synth", "taobao", "all", "synth-sessions"],
                        help="which benchmark to run (synth-sessions: every-event next behaviour on the synthetic "
                             "bank, the sub-day rhythm task; always with --seeds)")
    parser.add_argument("--customers", type=int, default=6000, help="synthetic customers (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=8, help="max_epochs for every model (default: %(default)s)")
    parser.add_argument("--patience", type=int, default=3, help="early-stopping patience (default: %(default)s)")
    parser.add_argument("--models", nargs="+", help="model names (default: all for synth, "
                        f"{' '.join(TAOBAO_MODELS)} for taobao)")
    parser.add_argument("--tasks", nargs="+", help="tasks (default: outcome next_event for synth, "
                        "next_event next_item for taobao)")
    parser.add_argument("--workdir", type=Path, help="data and checkpoints (default: a temporary folder)")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="output folder (default: %(default)s)")
    parser.add_argument("--seeds", help="comma-separated seeds: run every model once per seed and write "
                        "models_<data>_<task>_seeds.json with mean ± std (default: one run, seed 0)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads; 1 is far faster on a busy shared CPU (default: %(default)s)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="a model config field for every model of the run, on top of the common width, e.g. "
                             "--set causal_blocks=1 (repeat for several)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    _quiet_lightning()
    settings = BenchSettings(max_epochs=args.epochs, patience=args.patience)
    settings.model_overrides.update(key_values("--set", "causal_blocks=1", "FIELD=VALUE")(args.set))
    with tempfile.TemporaryDirectory(prefix="bench_models_") as scratch:
        workdir = args.workdir or Path(scratch)
        if args.seeds or args.data == "synth-sessions":
            seeds = [int(s) for s in (args.seeds or "0,1,2").split(",")]
            preparers = {
                "synth": (lambda w: prepare_synth(w, args.customers), ["outcome", "next_event"], list_models()),
                "synth-sessions": (lambda w: prepare_synth_sessions(w, args.customers), ["next_event"],
                                   SESSIONS_MODELS),
                "taobao": (prepare_taobao, ["next_event", "next_item"], TAOBAO_MODELS),
            }
            for name in (["synth", "taobao"] if args.data == "all" else [args.data]):
                if name == "taobao" and not TAOBAO_CSV.exists():
                    print(f"taobao: {TAOBAO_CSV} is absent; skipping the real-data benchmark")
                    continue
                prepared_of, tasks, models = preparers[name]
                bench_seeds(name.replace("-", "_"), prepared_of, args.results, settings, seeds,
                            args.models or models, args.tasks or tasks, workdir)
            return 0
        if args.data in ("synth", "all"):
            bench_synth(workdir, args.results, args.customers, settings, args.models, args.tasks)
        if args.data in ("taobao", "all"):
            bench_taobao(workdir, args.results, settings, args.models, args.tasks)
    return 0


if __name__ == "__main__":
    sys.exit(main())

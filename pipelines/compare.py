"""Train several models on the same prepared data with the same budget and put their results in one table.

Used by `journey compare`, `journey demo` and ``benchmarks/bench_models.py``. Each model is trained by
:func:`journey_model.training.train.train` — the same path as `journey train` — on the same tasks, epochs and batch
size, and reported with its test metrics, its validation metric (the one that picks the best model), training
time, throughput and parameters. Models that cannot answer a task are skipped with the reason, so is a model
that builds the same network as another one compared on the task (``transformer`` is ``atrank`` outside
forecasts: :func:`journey_model.models.registry.same_network`), and a model
whose training fails becomes a ``failed: …`` row; nothing is left out silently.

With tracking on, every model is a nested MLflow run under one parent run (``compare <task>``), the parent
logs the table (text, JSON, an MLflow table and a bar chart) and per-model summary metrics, and the best model
by the validation metric is registered as ``journey-<dataset>-<task>`` (promotion is a separate, explicit
step: `journey promote`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

from journey_model.core.files import write_json_atomic
from journey_model.data.preprocessing import Preprocessor
from journey_model.models.registry import config_fields, same_network, supported_tasks
from journey_model.models.tasks import parse_task
from journey_model.tracking.plots import plt, save_figure
from journey_model.tracking.registry import register_run_model
from journey_model.tracking.runs import tracked_train
from journey_model.tracking.store import experiment_name, parent_run, registered_model_name, task_label
from journey_model.training.recipes import RECIPE_FIELDS
from journey_model.training.train import TrainConfig, TrainResult

# Test-metric columns of the table per task (keys without "test/"); outcome columns are per outcome name.
TASK_METRICS: dict[str, list[str]] = {
    "next_event": ["acc", "hr_at_5", "mrr"],
    "next_item": ["acc/item", "hr_at_10/item", "ndcg_at_10/item", "mrr_at_10/item"],
    "forecast": ["step_acc/1", "edit_distance_norm"],
}
log = logging.getLogger(__name__)


def metric_keys_for(tasks: list[str] | None, outcome_names: list[str]) -> list[str]:
    """The table's test-metric columns for ``tasks`` (every task when None)."""
    keys: list[str] = []
    for task in tasks or ["outcome", *TASK_METRICS]:
        keys += [f"auc/{name}" for name in outcome_names] if task == "outcome" else TASK_METRICS.get(task, [])
    return keys


@dataclass
class ComparisonRow:
    model: str
    tasks: list[str]
    metrics: dict[str, float]  # test metrics, keys without the "test/" prefix
    seconds: float  # training and evaluation wall time [s]
    parameters: int
    epochs: int
    events_per_second: float | None = None  # training throughput, events per second
    skipped: str | None = None  # why the model was not trained (or "failed: …")
    validation_metric: str | None = None  # the metric that picks the best model, e.g. val/loss
    validation_value: float | None = None  # its value for the model's best checkpoint
    run_id: str | None = None  # MLflow run of this model, when tracked
    model_uri: str | None = None  # its logged MLflow model, when tracked


@dataclass
class Comparison:
    rows: list[ComparisonRow] = field(default_factory=list)
    registered_model: str | None = None  # where the best model was registered, when tracked
    registered_version: str | None = None
    parent_run_id: str | None = None

    def table(self, metric_keys: list[str]) -> str:
        """A fixed-width text table: one row per model, the chosen metrics, the validation metric, time and size."""
        validation = next((r.validation_metric for r in self.rows if r.validation_metric), None)
        header = ["model", *metric_keys, *([validation] if validation else []), "train s", "events/s", "params"]
        lines = [header]
        for row in self.rows:
            if row.skipped:
                lines.append([row.model, f"skipped: {row.skipped}"])
                continue
            cells = [row.model]
            for key in metric_keys:
                value = row.metrics.get(key)
                cells.append("-" if value is None or math.isnan(value) else f"{value:.3f}")
            if validation:
                cells.append("-" if row.validation_value is None else f"{row.validation_value:.4f}")
            cells += [f"{row.seconds:.0f}", f"{row.events_per_second:,.0f}" if row.events_per_second else "-",
                      f"{row.parameters:,}"]
            lines.append(cells)
        full = [line for line in lines if len(line) == len(header)]  # skipped rows' reasons may overflow
        widths = [max(len(line[i]) for line in (full if i else lines)) for i in range(len(header))]
        return "\n".join("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip() for line in lines)

    def best(self, mode: str = "min", tasks: list[str] | None = None) -> ComparisonRow | None:
        """The trained row with the best validation value (only rows answering exactly ``tasks``, if given)."""
        candidates = [r for r in self.rows if not r.skipped and r.validation_value is not None
                      and not math.isnan(r.validation_value) and (tasks is None or sorted(r.tasks) == sorted(tasks))]
        if not candidates:
            return None
        pick = min if mode == "min" else max
        return pick(candidates, key=lambda r: r.validation_value)

    def to_json(self) -> list[dict]:
        return [row.__dict__ for row in self.rows]

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, self.to_json())

    def plot(self, metric_keys: list[str], path: str | Path) -> Path:
        """Bar chart of the chosen metrics per model, saved as PNG."""

        rows = [r for r in self.rows if not r.skipped]
        fig, axes = plt.subplots(1, len(metric_keys), figsize=(4 * len(metric_keys), 0.45 * len(rows) + 1.5),
                                 squeeze=False)
        for ax, key in zip(axes[0], metric_keys):
            values = [r.metrics.get(key, float("nan")) for r in rows]
            bars = ax.barh([r.model for r in rows], values, color="#4477aa")
            ax.bar_label(bars, labels=[f"{v:.3f}" for v in values], padding=2, fontsize=8)
            ax.set_title(key)
            ax.invert_yaxis()
            ax.set_xlim(0, 1)
        fig.tight_layout()
        return save_figure(fig, path)


def _row_from_result(name: str, result: TrainResult) -> ComparisonRow:
    metrics = {k.removeprefix("test/"): v for k, v in result.test_metrics.items()}
    return ComparisonRow(name, result.tasks, metrics, result.seconds, result.parameters, result.epochs,
                         events_per_second=result.events_per_second, validation_metric=result.validation_metric,
                         validation_value=result.validation_value, run_id=result.run_id, model_uri=result.model_uri)


def compare_models(models: list[str], base: TrainConfig, progress_print: bool = True,
                   metric_keys: list[str] | None = None, predictions_dir: str | Path | None = None) -> Comparison:
    """Train each model with ``base``'s data, tasks and budget; rows in the order given.

    ``predictions_dir``: each trained model's test predictions go to ``predictions_dir/<model>.parquet``.

    With ``base.track``: one parent MLflow run, a nested run per model, the table logged on the parent and,
    with ``base.register``, the best model by ``base.monitor`` registered.
    """
    comparison = Comparison()
    requested = [parse_task(t) for t in base.tasks] if base.tasks else None
    preprocessor = Preprocessor.load(base.data_dir)
    keys = metric_keys or metric_keys_for(base.tasks, preprocessor.outcome_names)
    parent = contextlib.nullcontext()
    experiment = None
    if base.track:

        experiment = base.experiment or experiment_name(preprocessor.dataset.name, task_label(base.tasks))
        parent = parent_run(base.tracking_uri, experiment, f"compare {task_label(base.tasks)}", base.artifact_location)
    with parent as run:
        comparison.parent_run_id = run.info.run_id if run is not None else None
        for name in models:
            tasks = supported_tasks(name)
            usable = [t for t in requested if t in tasks] if requested else None
            if requested and not usable:
                comparison.rows.append(ComparisonRow(name, [], {}, 0.0, 0, 0,
                                                     skipped=f"answers none of {[t.value for t in requested]}"))
                continue
            twin = same_network(name, usable or tasks)
            if twin is not None and twin != name and twin in models:
                on = "+".join(t.value for t in (usable or sorted(tasks, key=lambda t: t.value)))
                comparison.rows.append(ComparisonRow(name, [], {}, 0.0, 0, 0,
                                                     skipped=f"same network as {twin} for {on}"))
                continue
            config = replace(base, model=name, tasks=[t.value for t in usable] if usable else None,
                             output_dir=str(Path(base.output_dir) / "compare"), experiment=experiment,
                             register=False, run_name=name)
            # One override set serves the whole zoo: each model takes the fields its config has (hidden_size
            # for the neural ones, count_history for the counting ones) and ignores the rest; training recipe
            # fields (learning_rate, optimizer, ...) reach every model.
            accepted = config_fields(name) | RECIPE_FIELDS
            config = replace(config, model_overrides={k: v for k, v in base.model_overrides.items() if k in accepted})
            try:
                extra = {"predictions_out": Path(predictions_dir) / f"{name}.parquet"} if predictions_dir else {}
                result = tracked_train(config, **extra)
            except (KeyboardInterrupt, SystemExit) as error:  # SIGTERM, Ctrl-C: stop the comparison, say where
                done = [row.model for row in comparison.rows if not row.skipped]
                error.add_note(f"compare stopped while training {name}; finished before: {done or 'none'}")
                raise
            except Exception as error:  # noqa: BLE001 - becomes a visible row, the others still train
                log.exception("training %s failed", name)
                comparison.rows.append(ComparisonRow(name, [], {}, 0.0, 0, 0,
                                                     skipped=f"failed: {type(error).__name__}: {error}"[:200]))
                continue
            comparison.rows.append(_row_from_result(name, result))
            if progress_print:
                value = "-" if result.validation_value is None else f"{result.validation_value:.4f}"
                print(f"  trained {name:<14} in {result.seconds:5.0f} s  ({result.validation_metric} {value})"
                      + (f"; {result.stop_reason}" if result.stopped_by == "max_time" else ""), flush=True)
        if run is not None:
            _log_comparison(comparison, base, keys, preprocessor.dataset.name)
    return comparison


def _log_comparison(comparison: Comparison, base: TrainConfig, keys: list[str], dataset: str) -> None:
    """The table, per-model summary metrics and the plot on the parent run; register the best model."""


    mlflow.log_params({"compare.models": ",".join(r.model for r in comparison.rows),
                       "compare.tasks": task_label(base.tasks), "compare.monitor": base.monitor,
                       **{f"base.{k}": v[:6000] for k, v in base.flat_params().items()
                          if k not in ("model.model", "tracking.run_name")}})
    summary = {}
    for row in comparison.rows:
        if row.skipped:
            continue
        summary.update({f"{row.model}/test/{k}": row.metrics[k] for k in keys if k in row.metrics
                        and not math.isnan(row.metrics[k])})
        summary.update({f"{row.model}/train_seconds": row.seconds, f"{row.model}/parameters": float(row.parameters)})
        if row.events_per_second:
            summary[f"{row.model}/events_per_s"] = row.events_per_second
        if row.validation_value is not None:
            summary[f"{row.model}/{row.validation_metric}"] = row.validation_value
    mlflow.log_metrics(summary)
    table = comparison.table(keys)
    mlflow.log_text(table + "\n", "comparison.txt")
    mlflow.log_dict(comparison.to_json(), "comparison.json")
    mlflow.log_table(pd.DataFrame([{"model": r.model, "skipped": r.skipped or "", "seconds": r.seconds,
                                    "events_per_s": r.events_per_second, "parameters": r.parameters,
                                    "validation": r.validation_value, **{k: r.metrics.get(k) for k in keys}}
                                   for r in comparison.rows]), "comparison_table.json")
    if any(not r.skipped for r in comparison.rows) and keys:
        with tempfile.TemporaryDirectory(prefix="journey-compare-") as tmp:
            mlflow.log_artifact(str(comparison.plot(keys, Path(tmp) / "comparison.png")))
    trained = [r for r in comparison.rows if not r.skipped]
    # Validation values are comparable only between models answering the same tasks.
    best = comparison.best(base.monitor_mode, base.tasks or (trained[0].tasks if trained else None))
    if best is None:
        return
    mlflow.set_tags({"journey.best_model": best.model, "journey.best_run_id": best.run_id or ""})
    if base.register and base.log_model and best.model_uri and best.run_id:
        name = registered_model_name(dataset, task_label(best.tasks))
        version = register_run_model(best.model_uri, name, best.run_id, MlflowClient(mlflow.get_tracking_uri()))
        comparison.registered_model, comparison.registered_version = name, str(version.version)
        mlflow.set_tags({"journey.registered_model": name, "journey.registered_version": str(version.version)})

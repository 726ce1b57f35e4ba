"""A monitoring report as a picture and as an MLflow run (`journey monitor --track`).

:func:`report_figure` draws the report (:func:`plot_report` writes it as the report's PNG): the PSI of every
index as bars against the alert threshold, then the reference and current distributions each PSI was computed
from (score histograms over the reference's quantile bins, the input length, the event-type mix). Only shares are drawn: no customer id, no single customer's value.
:func:`log_report` records the report in an MLflow experiment (``journey-monitoring`` by default): the cut-offs,
runs and models as params, every PSI and share as metrics, the JSON and the PNG as artifacts, and an ``alert`` tag.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import mlflow
import numpy as np

from journey_model.inference.monitoring import MonitoringReport
from journey_model.tracking.plots import plt, save_figure
from journey_model.tracking.store import (
    ensure_experiment,
    mlflow_scope,
    quiet_mlflow_output,
    resolve_tracking_uri,
)

EXPERIMENT = "journey-monitoring"
MAX_CATEGORIES = 20  # event types drawn at most (the most frequent in either run)


def report_figure(report: MonitoringReport) -> plt.Figure:
    """PSI bars against the threshold, then one panel per distribution (reference vs current shares)."""
    indices = report.indices()
    panels = list(report.distributions.items())
    columns = 3
    rows = 1 + math.ceil(len(panels) / columns)
    fig = plt.figure(figsize=(5 * columns, 3.4 * rows))
    grid = fig.add_gridspec(rows, columns)
    bars = fig.add_subplot(grid[0, :])
    names = list(indices) or ["(none)"]
    values = [indices.get(n, 0.0) for n in names]
    colours = ["tab:red" if v > report.threshold else "tab:blue" for v in values]
    bars.barh(names, values, color=colours)
    bars.axvline(report.threshold, color="black", linestyle="--", label=f"alert threshold {report.threshold:g}")
    bars.invert_yaxis()
    bars.set_xlabel("PSI")
    bars.set_title(f"Stability {report.reference['cutoff']} (reference) -> {report.current['cutoff']} (current)")
    bars.legend(loc="lower right")
    for i, (name, distribution) in enumerate(panels):
        axis = fig.add_subplot(grid[1 + i // columns, i % columns])
        labels, ref, cur = distribution.labels, distribution.reference, distribution.current
        if len(labels) > MAX_CATEGORIES:
            keep = np.sort(np.argsort(-np.maximum(ref, cur), kind="stable")[:MAX_CATEGORIES])
            labels, ref, cur = [labels[k] for k in keep], ref[keep], cur[keep]
        x = np.arange(len(labels))
        axis.bar(x - 0.2, ref, width=0.4, label="reference", color="tab:grey")
        axis.bar(x + 0.2, cur, width=0.4, label="current", color="tab:orange")
        axis.set_xticks(x, labels, rotation=60, ha="right", fontsize=7)
        axis.set_ylabel("share")
        axis.set_title(f"{name}: PSI {distribution.psi:.3f}", color="tab:red" if distribution.psi > report.threshold
                       else "black")
        axis.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_report(report: MonitoringReport, path: str | Path) -> Path:
    """The report's PNG at ``path`` (:func:`report_figure`), written atomically."""
    return save_figure(report_figure(report), path)


def report_metrics(report: MonitoringReport) -> dict[str, float]:
    """MLflow metrics: ``psi/<index>``, and per run ``<run>/eligible_share/<outcome>``, ``…/flagged_share/…``,
    ``…/customers``, ``…/oov_rate/<field>``, ``…/missing_field_rate/<field>`` where known."""
    metrics = {f"psi/{name}": value for name, value in report.indices().items()}
    for side in ("reference", "current"):
        facts: dict[str, Any] = getattr(report, side)
        for group in ("eligible_share", "flagged_share", "oov_rate", "missing_field_rate"):
            for key, value in (facts.get(group) or {}).items():
                if value is not None:
                    metrics[f"{side}/{group}/{key}"] = float(value)
        for key in ("customers", "events_before_cutoff"):
            if facts.get(key) is not None:
                metrics[f"{side}/{key}"] = float(facts[key])
    return metrics


def log_report(report: MonitoringReport, json_path: str | Path, png_path: str | Path | None = None, *,
               tracking_uri: str | None = None, experiment: str = EXPERIMENT) -> str:
    """Record the report as one MLflow run; returns its id."""
    uri = resolve_tracking_uri(tracking_uri)
    quiet_mlflow_output()
    with mlflow_scope(uri):
        experiment_id = ensure_experiment(experiment, uri)
        name = f"{report.reference['cutoff']} -> {report.current['cutoff']}"
        with mlflow.start_run(experiment_id=experiment_id, run_name=name) as run:
            mlflow.log_params({
                "threshold": report.threshold,
                "reference.cutoff": report.reference["cutoff"], "current.cutoff": report.current["cutoff"],
                "reference.scores": report.reference["scores"], "current.scores": report.current["scores"],
                "reference.model": f"{report.reference['model_name']} v{report.reference['model_version']}",
                "current.model": f"{report.current['model_name']} v{report.current['model_version']}",
                **{f"method.{k}": v for k, v in report.method.items()},
            })
            mlflow.log_metrics(report_metrics(report))
            mlflow.set_tags({"alert": str(bool(report.alerts())).lower(), "alerts": ",".join(report.alerts()),
                             "kind": "journey-monitoring"})
            mlflow.log_artifact(str(json_path))
            if png_path is not None and Path(png_path).exists():
                mlflow.log_artifact(str(png_path))
            return run.info.run_id


__all__ = ["EXPERIMENT", "log_report", "plot_report", "report_figure", "report_metrics"]

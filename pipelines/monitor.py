"""`journey monitor`: the stability report of a current scoring run against a reference one, written and tracked.

:func:`run_monitor` is what the subcommand runs (and what a notebook or a scheduler's Python calls): the report
from :func:`journey_model.inference.monitoring.monitor`, with each run's model opened through
:func:`journey_model.tracking.loading.open_model` for the OOV and missing-field rates; the JSON written where the
dashboard's Stability view reads it (``WORKDIR/monitoring/``), the PNG beside it, and with ``track`` one MLflow run.
The caller exits with :attr:`MonitoringReport.exit_status` (3 when any PSI is above the threshold).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from journey_model.core.files import write_text_atomic
from journey_model.inference.monitoring import MonitoringReport, monitor
from journey_model.tracking.loading import open_model
from journey_model.tracking.monitoring import log_report, plot_report
from journey_model.tracking.store import mlflow_scope, resolve_tracking_uri
from pipelines.configs import MonitorConfig

MONITORING_DIR = "monitoring"  # WORKDIR/monitoring/*.json: what the dashboard's Stability view reads


@dataclass
class MonitorResult:
    report: MonitoringReport
    json_path: Path
    png_path: Path
    run_id: str | None = None


def default_report_path(config: MonitorConfig, report: MonitoringReport) -> Path:
    """``WORKDIR/monitoring/<reference>_vs_<current>.json``, WORKDIR being the folder holding the current run."""
    return Path(config.current).resolve().parent / MONITORING_DIR / report.default_name()


def run_monitor(config: MonitorConfig) -> MonitorResult:
    """Make the report, write its JSON and PNG, and log it to MLflow when ``config.track``."""
    with mlflow_scope(resolve_tracking_uri(config.tracking_uri)):  # where models:/ URIs of the manifests live
        report = monitor(config.reference, config.current, events_dir=config.events, threshold=config.threshold,
                         bins=config.bins, epsilon=config.epsilon, window_days=config.window_days,
                         opener=open_model, batch_rows=config.batch_rows)
    json_path = Path(config.out) if config.out else default_report_path(config, report)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(json_path, report.to_json() + "\n")
    png_path = plot_report(report, json_path.with_suffix(".png"))
    run_id = None
    if config.track:
        run_id = log_report(report, json_path, png_path, tracking_uri=config.tracking_uri,
                            experiment=config.experiment)
    return MonitorResult(report, json_path, png_path, run_id)


__all__ = ["MONITORING_DIR", "MonitorResult", "default_report_path", "run_monitor"]

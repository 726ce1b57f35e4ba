"""The models view's facts, read from the MLflow registry: champion and candidates, metrics, plots, lineage.

Every version of every registered ``journey-*`` model is a candidate; the one the ``champion`` alias points at
is the champion. Per version: the registry tags `journey train` writes (model, data hash, preprocessing hash,
the validation metric it was selected on), its run's test and validation metrics (AUC, PR-AUC, ECE, and gains,
lift or operating-point metrics where the run logged them) and the run's ``plots/`` (calibration, ROC/PR …).
Lineage reads data hash -> run -> version -> alias.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from journey_model.tracking.store import quiet_mlflow_output, sqlite_path

CHAMPION = "champion"
MODEL_PREFIX = "journey-"
# Run metrics shown per version: the test and best-validation numbers of these families.
METRIC_FAMILIES = ("auc", "pr_auc", "ece", "logloss", "brier", "lift", "gain", "gains", "precision", "recall",
                   "threshold", "operating", "prevalence", "loss")
OPERATING_POINT = re.compile(r"(lift|gain|threshold|operating|precision_at|recall_at|top_)", re.IGNORECASE)


@dataclass
class ModelVersionFacts:
    name: str
    version: str
    aliases: list[str]
    run_id: str | None
    tags: dict[str, str]
    metrics: dict[str, float] = field(default_factory=dict)
    plots: list[str] = field(default_factory=list)  # artifact paths under plots/
    created: pd.Timestamp | None = None

    @property
    def is_champion(self) -> bool:
        return CHAMPION in self.aliases


def registry_available(tracking_uri: str) -> bool:
    """Whether there is a store to read (a SQLite file that exists, or any other URI)."""
    database = sqlite_path(tracking_uri)
    return database is None or database.exists()


def client_for(tracking_uri: str) -> MlflowClient:
    quiet_mlflow_output()
    return MlflowClient(tracking_uri, registry_uri=tracking_uri)


def model_versions(client: MlflowClient) -> list[ModelVersionFacts]:
    """Every version of every registered ``journey-*`` model, newest first, with its run's metrics and plots."""
    found = []
    for model in client.search_registered_models():
        if not model.name.startswith(MODEL_PREFIX):
            continue
        aliases: dict[str, list[str]] = {}
        for alias, version in (model.aliases or {}).items():
            aliases.setdefault(str(version), []).append(alias)
        for version in client.search_model_versions(f"name='{model.name}'"):
            facts = ModelVersionFacts(model.name, str(version.version), sorted(aliases.get(str(version.version), [])),
                                      version.run_id, dict(version.tags or {}),
                                      created=pd.Timestamp(version.creation_timestamp, unit="ms", tz="UTC"))
            if version.run_id:
                try:
                    run = client.get_run(version.run_id)
                    facts.metrics = {k: v for k, v in run.data.metrics.items() if _shown(k)}
                    facts.plots = [a.path for a in client.list_artifacts(version.run_id, "plots")
                                   if a.path.endswith((".png", ".svg", ".jpg"))]
                except MlflowException:
                    pass  # a version whose run was deleted still has its tags
            found.append(facts)
    return sorted(found, key=lambda f: (f.name, -int(f.version) if f.version.isdigit() else 0))


def _shown(metric: str) -> bool:
    prefix, _, rest = metric.partition("/")
    if metric.startswith("best/val/"):
        rest = metric.removeprefix("best/val/")
    elif prefix not in ("test", "val"):
        return False
    return rest.split("/")[0] in METRIC_FAMILIES or bool(OPERATING_POINT.search(rest))


def metrics_table(versions: list[ModelVersionFacts], split: str = "test") -> pd.DataFrame:
    """One row per version: its ``split`` metrics (``test`` or ``best/val``) with the prefix dropped."""
    rows = []
    prefix = split.rstrip("/") + "/"
    for v in versions:
        row: dict[str, Any] = {"model": v.name, "version": v.version, "aliases": ", ".join(v.aliases),
                               "architecture": v.tags.get("model", "")}
        row.update({k.removeprefix(prefix): value for k, value in sorted(v.metrics.items()) if k.startswith(prefix)
                    and not k.removeprefix(prefix).startswith(("n/", "prevalence/"))})
        rows.append(row)
    return pd.DataFrame(rows)


def operating_point_metrics(version: ModelVersionFacts) -> dict[str, float]:
    """Gains / lift / threshold metrics at the operating point, where the run logged them."""
    return {k: v for k, v in sorted(version.metrics.items()) if OPERATING_POINT.search(k.split("/", 1)[-1])}


def lineage(versions: list[ModelVersionFacts]) -> pd.DataFrame:
    """data hash -> run -> version -> alias, one row per version."""
    return pd.DataFrame([{
        "training data hash": v.tags.get("data_hash", "")[:16],
        "preprocessing hash": v.tags.get("preprocessing_hash", ""),
        "run": (v.run_id or "")[:12],
        "model": v.name,
        "version": v.version,
        "aliases": ", ".join(v.aliases) or "—",
        "architecture": v.tags.get("model", ""),
        "selected on": f"{v.tags.get('validation_metric', '')} = {float(v.tags['validation_value']):.4f}"
        if v.tags.get("validation_value") else "",
        "registered": v.created.strftime("%Y-%m-%d %H:%M") if v.created is not None else "",
    } for v in versions])


def lineage_graph(versions: list[ModelVersionFacts]) -> str:
    """The lineage as Graphviz DOT (Streamlit draws it in the browser; no Graphviz install needed)."""
    lines = ["digraph lineage {", "rankdir=LR;", 'node [shape=box, style="rounded,filled", fillcolor="#f0f2f6", '
             'fontname="sans-serif", fontsize=10];']
    for v in versions:
        data = f"data {v.tags.get('data_hash', '?')[:10]}"
        run = f"run {(v.run_id or '?')[:8]}"
        version = f"{v.name} v{v.version}"
        lines.append(f'"{data}" -> "{run}" -> "{version}";')
        for alias in v.aliases:
            lines.append(f'"@{alias}" [fillcolor="#ffd8a8"];')
            lines.append(f'"{version}" -> "@{alias}";')
    lines.append("}")
    return "\n".join(lines)


def download_plot(client: MlflowClient, run_id: str, path: str, into: Path) -> Path:
    """A run's plot artifact as a local file under ``into`` (downloaded once)."""
    target = into / run_id / path
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        client.download_artifacts(run_id, path, str(into / run_id / Path(path).parent))
    return target


__all__ = ["CHAMPION", "ModelVersionFacts", "client_for", "download_plot", "lineage", "lineage_graph",
           "metrics_table", "model_versions", "operating_point_metrics", "registry_available"]

"""`journey dashboard` options: one typed dataclass, like every subcommand's (:mod:`journey_model.core.settings`).

The Streamlit process gets them as environment variables (``JOURNEY_DASHBOARD_*``), so the app script reads
the same config whether `journey dashboard` started it or ``streamlit run dashboard/app.py`` did.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from journey_model.core.settings import Settings, option

MONITORING_DIR = "monitoring"  # WORKDIR/monitoring/*.json: the stability reports the dashboard reads


@dataclass
class DashboardConfig:
    """Where the dashboard reads from and where it listens."""

    workdir: str = option("work", "working directory `journey demo` wrote: scores*/ (batch scoring), data/ (events), "
                          "mlflow.db (registry), monitoring/ (stability reports)", env="JOURNEY_DASHBOARD_WORKDIR")
    host: str = option("127.0.0.1", "address to listen on", env="JOURNEY_DASHBOARD_HOST")
    port: int = option(8501, "port to listen on", env="JOURNEY_DASHBOARD_PORT")
    tracking_uri: str | None = option(None, "MLflow tracking URI of the registry; none = $MLFLOW_TRACKING_URI, else "
                                      "sqlite:///WORKDIR/mlflow.db", env="JOURNEY_DASHBOARD_TRACKING_URI")

    @property
    def root(self) -> Path:
        return Path(self.workdir).expanduser().resolve()

    def resolved_tracking_uri(self) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        if os.environ.get("MLFLOW_TRACKING_URI"):
            return os.environ["MLFLOW_TRACKING_URI"]
        return f"sqlite:///{self.root / 'mlflow.db'}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DashboardConfig:
        return cls(**SETTINGS.env_values(os.environ if environ is None else environ))

    def to_env(self) -> dict[str, str]:
        values = {f.metadata["env"]: str(getattr(self, f.name)) for f in fields(self)
                  if getattr(self, f.name) is not None}
        values["JOURNEY_DASHBOARD_WORKDIR"] = str(self.root)  # the server may start in another directory
        return values


SETTINGS = Settings(DashboardConfig)

__all__ = ["MONITORING_DIR", "SETTINGS", "DashboardConfig"]

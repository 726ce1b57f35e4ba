"""The stability view's input: monitoring reports (JSON) in ``WORKDIR/monitoring/``.

A report compares a reference scoring run with a current one (PSI of each score, of the event-type mix and of
the input length; OOV and missing-field rates; volumes; eligible share). `journey monitor` is to write them
there (``<reference cut-off>_vs_<current cut-off>.json``, a PNG figure beside it); without one the view says how to
make one. The reader is deliberately tolerant: it flattens a report's numbers to ``dotted.key -> value``; the
stability indices are the numbers under ``psi`` (else every key with ``psi`` in it), alerting above the report's
own ``threshold`` (or ``alert_threshold``), else 0.25. Reports are ordered by ``current_cutoff`` where they have
one (month over month), else by file time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from dashboard.config import MONITORING_DIR

DEFAULT_PSI_ALERT = 0.25
HOW_TO = ("No monitoring report yet. `journey monitor --reference WORKDIR/scores-<earlier> --current WORKDIR/scores` "
          f"writes one to `WORKDIR/{MONITORING_DIR}/` (JSON and a PNG). It needs two scoring runs: score another "
          "cut-off with `journey score --cutoff DATE --out WORKDIR/scores-DATE` first.")


@dataclass
class Report:
    path: Path
    content: dict[str, Any]

    @property
    def name(self) -> str:
        for key in ("current_cutoff", "cutoff", "current", "created"):
            value = self.content.get(key)
            if isinstance(value, str):
                return value
        return self.path.stem

    @property
    def threshold(self) -> float:
        for key in ("threshold", "alert_threshold", "psi_threshold"):
            value = self.content.get(key)
            if isinstance(value, int | float):
                return float(value)
        return DEFAULT_PSI_ALERT

    def numbers(self) -> dict[str, float]:
        return flatten(self.content)

    @property
    def figure(self) -> Path | None:
        png = self.path.with_suffix(".png")
        return png if png.exists() else None

    @property
    def order(self) -> str:
        value = self.content.get("current_cutoff")
        return value if isinstance(value, str) else ""

    def psi(self) -> dict[str, float]:
        if isinstance(self.content.get("psi"), dict):
            return flatten(self.content["psi"])
        return {k: v for k, v in self.numbers().items() if "psi" in k.lower()}

    def alerts(self) -> dict[str, float]:
        return {k: v for k, v in self.psi().items() if v > self.threshold}


def flatten(value: Any, prefix: str = "") -> dict[str, float]:
    """Every number of a JSON document, keyed by its dotted path (booleans left out)."""
    found: dict[str, float] = {}
    if isinstance(value, dict):
        for key, inner in value.items():
            found.update(flatten(inner, f"{prefix}{key}."))
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            found.update(flatten(inner, f"{prefix}{i}."))
    elif isinstance(value, int | float) and not isinstance(value, bool):
        found[prefix.rstrip(".")] = float(value)
    return found


def find_reports(root: Path) -> list[Report]:
    """The monitoring reports of a working directory, oldest first (unreadable files are skipped)."""
    folder = root / MONITORING_DIR
    reports = []
    for path in sorted(folder.glob("**/*.json"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []:
        try:
            content = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(content, dict):
            reports.append(Report(path, content))
    return sorted(reports, key=lambda r: r.order)  # stable: file time where no cut-off says otherwise


def psi_over_time(reports: list[Report]) -> pd.DataFrame:
    """Month over month: one row per report, one column per stability index."""
    return pd.DataFrame([{"report": r.name, **r.psi()} for r in reports]).set_index("report") if reports else \
        pd.DataFrame()


__all__ = ["DEFAULT_PSI_ALERT", "HOW_TO", "Report", "find_reports", "flatten", "psi_over_time"]

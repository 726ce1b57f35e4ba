"""`journey monitor`: how far a current batch-scoring run has moved from a reference one (plain numpy / pyarrow).

A report compares two finished scoring runs (``part-*.parquet`` + ``_manifest.json``, as `journey score` writes
them) and, when the canonical events are at hand, the events each run scored:

* **PSI of each score** ``p_<outcome>``, over the customers eligible for that outcome in each run (an ineligible
  customer has no score). The bins are the reference's deciles (``bins`` quantile bins; tied quantiles merge, so a
  score with a spike gets fewer, wider bins); both runs are counted in the same bins.
* **PSI of the input length** (``n_events``, the events the model saw per customer), binned the same way.
* **PSI of the event-type mix**: the share of each event type among the events strictly before each run's cut-off
  (optionally only the last ``window_days`` days), one category per type.
* **OOV and missing-field rates** of those events against the model that scored the run (its vocabularies and the
  fields each behaviour type carries); reported as unavailable, with the reason, when the model cannot be opened.
* **Volumes** (customers scored, customers without history, events before the cut-off), the **eligible share**
  and the **flagged share** (flagged among eligible, at the model's operating point) per outcome.

PSI is ``sum((c - r) * ln(c / r))`` over bins, with ``r`` and ``c`` the reference and current shares; a share
below ``epsilon`` (default 1e-4) is raised to it, so an empty bin gives a large but finite term. Rules of thumb:
below 0.1 stable, 0.1-0.25 a moderate shift, above 0.25 a shift worth acting on (the default alert threshold).

Why numpy rather than a monitoring library: PSI is a few lines; evidently 0.7 would pull in many dependencies
(its own plotting and web stack) for it; and a report must give the same numbers every time it is rerun on
the same runs, which plain quantiles and counts do. Events are streamed in record batches
with a pyarrow dataset filter on the cut-off, so memory is bounded by one batch, not by the event log.

This module opens no model itself: :func:`monitor` takes an ``opener`` (``journey monitor`` passes
:func:`journey_model.tracking.loading.open_model`), so inference never imports MLflow.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from journey_model.core.files import reading
from journey_model.data.eligibility import ineligible_reason_column
from journey_model.data.schema import EVENT_TYPE, TIMESTAMP, TIMESTAMP_TYPE
from journey_model.data.sequences import MICROS_PER_DAY

MANIFEST_FILE = "_manifest.json"  # what `journey score` writes beside its parts (batch_scoring.MANIFEST_FILE)
SCORE_PARTS = "part-*.parquet"
DEFAULT_THRESHOLD = 0.25
DEFAULT_BINS = 10
DEFAULT_EPSILON = 1e-4
ALERT_EXIT = 3  # `journey monitor`'s exit status when a PSI is above the threshold
REPORT_KIND = "journey-monitoring"
INPUT_LENGTH = "n_events"
NOT_EVENT_FILES = ("labels.parquet", "ground_truth.parquet")

# An opener turns a model reference into (scorer, identity); only ``scorer.preprocessor`` is used here.
ModelOpener = Callable[[str], tuple[Any, Any]]


class MonitoringError(ValueError):
    """A scoring run or event folder that a report cannot be made from; the message names it."""


# ------------------------------------------------------------------------------------------ PSI


@dataclass
class Distribution:
    """Reference and current shares over the same bins (what the PSI is computed from, and what is drawn)."""

    labels: list[str]  # one per bin: "[0.12, 0.31)" or an event type
    reference: np.ndarray  # shares, summing to 1
    current: np.ndarray
    psi: float


def psi_of(reference: np.ndarray, current: np.ndarray, epsilon: float = DEFAULT_EPSILON) -> float:
    """PSI of two share vectors over the same bins; shares below ``epsilon`` are raised to it."""
    r = np.clip(np.asarray(reference, dtype=np.float64), epsilon, None)
    c = np.clip(np.asarray(current, dtype=np.float64), epsilon, None)
    return float(np.sum((c - r) * np.log(c / r)))


def quantile_edges(reference: np.ndarray, bins: int = DEFAULT_BINS) -> np.ndarray:
    """The inner edges of ``bins`` quantile bins of ``reference`` (ties merged); bin i is [edge i-1, edge i)."""
    return np.unique(np.quantile(reference, np.linspace(0.0, 1.0, bins + 1)[1:-1]))


def numeric_distribution(reference: Any, current: Any, bins: int = DEFAULT_BINS,
                         epsilon: float = DEFAULT_EPSILON) -> Distribution | None:
    """PSI of a numeric column, binned at the reference's quantiles (NaN left out); None if either side is empty."""
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
    if not ref.size or not cur.size:
        return None
    edges = quantile_edges(ref, bins)
    shares = [np.bincount(np.searchsorted(edges, x, side="right"), minlength=edges.size + 1) / x.size
              for x in (ref, cur)]
    bounds = [-math.inf, *edges.tolist(), math.inf]
    labels = [f"[{low:.4g}, {high:.4g})" for low, high in zip(bounds[:-1], bounds[1:], strict=True)]
    return Distribution(labels, shares[0], shares[1], psi_of(shares[0], shares[1], epsilon))


def categorical_distribution(reference: dict[str, int], current: dict[str, int],
                             epsilon: float = DEFAULT_EPSILON) -> Distribution | None:
    """PSI of two category counts (every category of either side is a bin); None if either side is empty."""
    total_ref, total_cur = sum(reference.values()), sum(current.values())
    if not total_ref or not total_cur:
        return None
    labels = sorted(set(reference) | set(current))
    ref = np.array([reference.get(k, 0) for k in labels], dtype=np.float64) / total_ref
    cur = np.array([current.get(k, 0) for k in labels], dtype=np.float64) / total_cur
    return Distribution(labels, ref, cur, psi_of(ref, cur, epsilon))


# ------------------------------------------------------------------------------------------ scoring runs


@dataclass
class ScoringRun:
    """One finished scoring job: its folder, its manifest (empty for a folder marked by ``_SUCCESS`` alone) and parts."""

    path: Path
    manifest: dict[str, Any]
    files: list[Path]

    @classmethod
    def open(cls, folder: str | Path) -> ScoringRun:
        path = Path(folder)
        manifest_path = path / MANIFEST_FILE
        if not manifest_path.is_file() and not (path / "_SUCCESS").is_file():
            raise MonitoringError(f"{path}: not a finished scoring run (no {MANIFEST_FILE}); "
                                  "expected the --out folder of `journey score`")
        manifest: dict[str, Any] = {}
        if manifest_path.is_file():
            with reading(manifest_path):
                manifest = json.loads(manifest_path.read_text())
        files = sorted(path.glob(SCORE_PARTS))
        if not files:
            raise MonitoringError(f"{path}: a scoring run without {SCORE_PARTS} files")
        return cls(path, manifest, files)

    @property
    def cutoff(self) -> pd.Timestamp | None:
        """The run's cut-off; None for 'last-event' runs (each customer just after its last event)."""
        text = self.manifest.get("cutoff")
        if not text or text == "last-event":
            return None
        stamp = pd.Timestamp(text)
        return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")

    @property
    def cutoff_text(self) -> str:
        """The cut-off as a short ISO string: ``2024-12-01`` at midnight, else ``2024-12-01T06:00:00Z``."""
        stamp = self.cutoff
        if stamp is None:
            return str(self.manifest.get("cutoff") or "unknown")
        if stamp == stamp.normalize():
            return stamp.strftime("%Y-%m-%d")
        return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")

    def model_reference(self) -> str | None:
        """The model version that scored the run (``models:/NAME/VERSION``: an alias may have moved since)."""
        uri = str(self.manifest.get("model_uri") or (self.manifest.get("config") or {}).get("model") or "")
        name, version = self.manifest.get("model_name"), self.manifest.get("model_version")
        if uri.startswith("models:/") and "@" in uri and name and version:
            return f"models:/{name}/{version}"
        return uri or None

    def events_dir(self) -> Path | None:
        """The event folder the run scored (the manifest's ``config.events_dir``), when it is still there."""
        configured = (self.manifest.get("config") or {}).get("events_dir")
        if not configured:
            return None
        given = Path(configured)
        candidates = [given] if given.is_absolute() else [Path.cwd() / given, self.path.parent.parent / given]
        return next((c for c in candidates if event_parts(c)), None)

    def columns(self) -> list[str]:
        return list(pq.read_schema(self.files[0]).names)

    def outcomes(self) -> list[str]:
        """The outcomes scored: ``p_<outcome>`` columns that are not next-event probabilities."""
        return [c[2:] for c in self.columns() if c.startswith("p_") and not c.startswith("p_next_event_")]

    def read(self, columns: list[str]) -> pd.DataFrame:
        """Only ``columns`` (those present) of every part; no customer id is read."""
        present = [c for c in columns if c in self.columns()]
        frames = []
        for path in self.files:
            with reading(path):
                frames.append(pq.read_table(path, columns=present).to_pandas())
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=present)


def find_scoring_runs(root: str | Path) -> list[ScoringRun]:
    """Finished scoring runs under a working folder (``scores*/`` and ``scores/*/``), oldest cut-off first."""
    root = Path(root)
    runs = []
    for folder in sorted({*root.glob("scores*"), *root.glob("scores/*")}):
        if folder.is_dir() and (folder / MANIFEST_FILE).is_file() and any(folder.glob(SCORE_PARTS)):
            runs.append(ScoringRun.open(folder))
    floor = pd.Timestamp.min.tz_localize("UTC")
    return sorted(runs, key=lambda r: (r.cutoff if r.cutoff is not None else floor, str(r.path)))


def event_parts(folder: str | Path) -> list[Path]:
    """The canonical event parts of an event folder (``DIR/events/*.parquet`` or ``DIR/*.parquet``)."""
    folder = Path(folder)
    for where in (folder / "events", folder):
        parts = sorted(p for p in where.glob("*.parquet") if p.name not in NOT_EVENT_FILES) if where.is_dir() else []
        if parts:
            return parts
    return []


# ------------------------------------------------------------------------------------------ events


@dataclass
class EventProfile:
    """What the events before one cut-off look like: counts only, no customer."""

    events: int = 0
    event_types: Counter = field(default_factory=Counter)
    oov: dict[str, list[int]] | None = None  # field -> [out-of-vocabulary values, non-null values]
    missing: dict[str, list[int]] | None = None  # field -> [null values, events whose type carries the field]

    def oov_rates(self) -> dict[str, float | None] | None:
        if self.oov is None:
            return None
        return {name: (bad / seen if seen else None) for name, (bad, seen) in self.oov.items()}

    def missing_rates(self) -> dict[str, float | None] | None:
        if self.missing is None:
            return None
        return {name: (bad / carried if carried else None) for name, (bad, carried) in self.missing.items()}


def _count(mask: pa.Array | pa.ChunkedArray) -> int:
    return int(pc.sum(pc.cast(mask, pa.int64())).as_py() or 0)


def event_profile(files: list[Path], cutoff: pd.Timestamp | None, preprocessor: Any = None,
                  window_days: int | None = None, batch_rows: int = 500_000) -> EventProfile:
    """Stream the events before ``cutoff`` (all of them for None; the last ``window_days`` days if given) and
    count event types, and — with the model's ``preprocessor`` — OOV values and missing fields."""
    dataset = ds.dataset([str(f) for f in files], format="parquet")
    names = set(dataset.schema.names)
    if EVENT_TYPE not in names or TIMESTAMP not in names:
        raise MonitoringError(f"{files[0].parent}: event files without {EVENT_TYPE!r} and {TIMESTAMP!r} columns")
    condition = None
    if cutoff is not None:
        end = int(cutoff.value // 1000)
        condition = ds.field(TIMESTAMP) < pa.scalar(end, pa.int64()).cast(TIMESTAMP_TYPE)
        if window_days:
            start = pa.scalar(end - window_days * MICROS_PER_DAY, pa.int64()).cast(TIMESTAMP_TYPE)
            condition = condition & (ds.field(TIMESTAMP) >= start)
    categorical: list[str] = []
    numeric: list[str] = []
    profile = EventProfile()
    if preprocessor is not None:
        config = preprocessor.dataset
        categorical = [f for f in config.categorical_fields if f in preprocessor.vocabularies]
        numeric = list(config.numeric_fields)
        profile.oov = {name: [0, 0] for name in [EVENT_TYPE, *categorical]}
        profile.missing = {name: [0, 0] for name in [*categorical, *numeric]}
    columns = [EVENT_TYPE, *[c for c in categorical + numeric if c in names]]
    for batch in _batches(dataset, columns, condition, batch_rows):
        types = batch.column(EVENT_TYPE)
        profile.events += batch.num_rows
        for value in pc.value_counts(types).to_pylist():
            profile.event_types[str(value["values"])] += int(value["counts"])
        if preprocessor is not None:
            _count_fields(profile, preprocessor, batch, categorical, numeric)
    return profile


def _batches(dataset: ds.Dataset, columns: list[str], condition: Any, batch_rows: int) -> Iterator[pa.RecordBatch]:
    try:
        yield from dataset.to_batches(columns=columns, filter=condition, batch_size=batch_rows,
                                      batch_readahead=1, fragment_readahead=1)
    except (OSError, pa.ArrowInvalid) as error:
        raise MonitoringError(f"events: cannot read the event files: {error}") from error


def _count_fields(profile: EventProfile, preprocessor: Any, batch: pa.RecordBatch, categorical: list[str],
                  numeric: list[str]) -> None:
    """OOV values (against the model's vocabularies) and nulls among the events whose type carries a field."""
    assert profile.oov is not None and profile.missing is not None
    types = batch.column(EVENT_TYPE)
    vocabularies = preprocessor.vocabularies
    type_vocabulary = vocabularies[EVENT_TYPE]
    known = pa.array(type_vocabulary.tokens[type_vocabulary.num_reserved:], pa.string())
    profile.oov[EVENT_TYPE][0] += _count(pc.invert(pc.is_in(types, value_set=known)))
    profile.oov[EVENT_TYPE][1] += batch.num_rows
    config = preprocessor.dataset
    present_types = [str(t) for t in pc.unique(types).to_pylist()]
    for name in categorical + numeric:
        carriers = [t for t in present_types if name in sum(config.fields_of(t), [])]
        carried = pc.is_in(types, value_set=pa.array(carriers, pa.string()))
        carried_count = _count(carried)
        if not carried_count:
            continue
        if name not in batch.schema.names:  # the column is absent: every carried value is missing
            profile.missing[name][0] += carried_count
            profile.missing[name][1] += carried_count
            continue
        values = batch.column(name)
        valid = pc.is_valid(values)
        if name in numeric and pa.types.is_floating(values.type):
            valid = pc.and_(valid, pc.invert(pc.is_nan(values)))
        profile.missing[name][0] += _count(pc.and_(carried, pc.invert(valid)))
        profile.missing[name][1] += carried_count
        if name in categorical:
            vocabulary = vocabularies[name]
            value_set = pa.array(vocabulary.tokens[vocabulary.num_reserved:], pa.string())
            text = values if values.type == pa.string() else pc.cast(values, pa.string())
            in_vocabulary = pc.is_in(text, value_set=value_set)
            observed = pc.and_(carried, valid)
            profile.oov[name][0] += _count(pc.and_(observed, pc.invert(in_vocabulary)))
            profile.oov[name][1] += _count(observed)


# ------------------------------------------------------------------------------------------ the report


@dataclass
class MonitoringReport:
    """A stability report; :meth:`to_dict` is the JSON `journey monitor` writes (no customer id anywhere)."""

    threshold: float
    reference: dict[str, Any]  # per run: folder, model, cut-off, volumes, shares, rates
    current: dict[str, Any]
    psi: dict[str, Any]  # {"score": {outcome: psi}, "input_length": psi, "event_type_mix": psi | None}
    method: dict[str, Any]
    change: dict[str, Any]
    distributions: dict[str, Distribution] = field(default_factory=dict)  # for the figure; not in the JSON
    created: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))

    def indices(self) -> dict[str, float]:
        """Every PSI computed, named ``score/<outcome>``, ``input_length``, ``event_type_mix``."""
        found = {f"score/{k}": v for k, v in self.psi["score"].items() if v is not None}
        found.update({k: v for k, v in self.psi.items() if k != "score" and v is not None})
        return found

    def alerts(self) -> dict[str, float]:
        """The indices above the threshold, largest first."""
        above = {k: v for k, v in self.indices().items() if v > self.threshold}
        return dict(sorted(above.items(), key=lambda kv: -kv[1]))

    @property
    def exit_status(self) -> int:
        return ALERT_EXIT if self.alerts() else 0

    def summary(self) -> str:
        """One line: which PSI are above the threshold, or the largest one."""
        span = f"{self.reference['cutoff']} -> {self.current['cutoff']}"
        alerts = self.alerts()
        if alerts:
            named = ", ".join(f"{k} {v:.3f}" for k, v in alerts.items())
            return f"ALERT: PSI above {self.threshold:g} ({span}): {named}"
        indices = self.indices()
        if not indices:
            return f"no PSI could be computed ({span})"
        name, value = max(indices.items(), key=lambda kv: kv[1])
        return f"stable: every PSI at or below {self.threshold:g} ({span}); largest {name} {value:.3f}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": REPORT_KIND,
            "created": self.created,
            "threshold": self.threshold,
            "reference_cutoff": self.reference["cutoff"],
            "current_cutoff": self.current["cutoff"],
            "alert": bool(self.alerts()),
            "alerts": list(self.alerts()),
            "psi": self.psi,
            "reference": self.reference,
            "current": self.current,
            "change": self.change,
            "method": self.method,
        }

    def to_json(self) -> str:
        return json.dumps(_plain(self.to_dict()), indent=1, allow_nan=False)

    def default_name(self) -> str:
        """``<reference cut-off>_vs_<current cut-off>.json`` (``:`` replaced, for every filesystem)."""
        return f"{self.reference['cutoff']}_vs_{self.current['cutoff']}".replace(":", "") + ".json"


def _plain(value: Any) -> Any:
    """JSON-ready: numpy numbers as Python numbers, NaN as null."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _run_facts(run: ScoringRun, scores: pd.DataFrame, outcomes: list[str]) -> dict[str, Any]:
    manifest = run.manifest
    events = manifest.get("events")
    after = manifest.get("events_after_cutoff")
    eligible, flagged, ineligible = {}, {}, {}
    for outcome in outcomes:
        column = scores[f"p_{outcome}"] if f"p_{outcome}" in scores else pd.Series(dtype=float)
        is_eligible = column.notna()
        eligible[outcome] = float(is_eligible.mean()) if len(column) else None
        flags = scores.get(f"flag_{outcome}")
        n_eligible = int(is_eligible.sum())
        flagged[outcome] = (float(flags[is_eligible].fillna(False).astype(bool).sum()) / n_eligible
                            if flags is not None and n_eligible else None)
        reasons = scores.get(ineligible_reason_column(outcome))
        ineligible[outcome] = (manifest.get("ineligible") or {}).get(outcome) or (
            {} if reasons is None else {"customers": int(reasons.notna().sum())})
    lengths = scores[INPUT_LENGTH] if INPUT_LENGTH in scores else pd.Series(dtype=float)
    return {
        "scores": str(run.path),
        "cutoff": run.cutoff_text,
        "model_name": manifest.get("model_name") or _first(scores, "model_name"),
        "model_version": manifest.get("model_version") or _first(scores, "model_version"),
        "model_uri": run.model_reference(),
        "customers": int(manifest.get("customers", len(scores))),
        "skipped_no_history": manifest.get("skipped_no_history"),
        "events_before_cutoff": (int(events) - int(after or 0)) if events is not None else None,
        "mean_input_length": float(lengths.mean()) if len(lengths) else None,
        "eligible_share": eligible,
        "flagged_share": flagged,
        "ineligible": ineligible,
    }


def _first(scores: pd.DataFrame, column: str) -> Any:
    return str(scores[column].iloc[0]) if column in scores and len(scores) else None


def _open_preprocessor(reference: str | None, opener: ModelOpener | None, cache: dict[str, Any]) -> tuple[Any, str | None]:
    """(the model's preprocessor, None) or (None, why it is unavailable)."""
    if opener is None:
        return None, "no model opener given"
    if not reference:
        return None, "the scoring manifest names no model"
    if reference not in cache:
        try:
            scorer, _ = opener(reference)
            cache[reference] = (scorer.preprocessor, None)
        except Exception as error:  # noqa: BLE001 - any failure to open makes the rates unavailable, not the report
            cache[reference] = (None, f"model {reference}: {type(error).__name__}: {' '.join(str(error).split())}")
    return cache[reference]


def _ratio(current: Any, reference: Any) -> float | None:
    if current is None or reference in (None, 0):
        return None
    return float(current) / float(reference)


def _difference(current: dict[str, Any], reference: dict[str, Any]) -> dict[str, float | None]:
    return {k: (None if current.get(k) is None or reference.get(k) is None else float(current[k] - reference[k]))
            for k in reference}


def monitor(reference: str | Path | ScoringRun, current: str | Path | ScoringRun, *,
            events_dir: str | Path | None = None, threshold: float = DEFAULT_THRESHOLD, bins: int = DEFAULT_BINS,
            epsilon: float = DEFAULT_EPSILON, window_days: int | None = None, opener: ModelOpener | None = None,
            batch_rows: int = 500_000) -> MonitoringReport:
    """The stability report of ``current`` against ``reference`` (two `journey score` output folders).

    ``events_dir``: the canonical events both runs scored (each run's events are those before its own cut-off);
    None = each run's own event folder from its manifest, where it still exists (else no event-type PSI and no
    OOV / missing-field rates). ``opener`` opens the model of each run for the OOV and missing-field rates.
    """
    runs = [r if isinstance(r, ScoringRun) else ScoringRun.open(r) for r in (reference, current)]
    outcomes = [o for o in runs[0].outcomes() if o in runs[1].outcomes()]
    wanted = [INPUT_LENGTH, "model_name", "model_version"] + [
        f"{prefix}{o}" for o in outcomes for prefix in ("p_", "flag_", "ineligible_")]
    frames = [run.read(wanted) for run in runs]
    facts = [_run_facts(run, frame, outcomes) for run, frame in zip(runs, frames, strict=True)]

    distributions: dict[str, Distribution] = {}
    psi: dict[str, Any] = {"score": {}}
    for outcome in outcomes:
        found = numeric_distribution(frames[0][f"p_{outcome}"], frames[1][f"p_{outcome}"], bins, epsilon)
        psi["score"][outcome] = found.psi if found else None
        if found:
            distributions[f"score/{outcome}"] = found
    length = numeric_distribution(frames[0].get(INPUT_LENGTH, []), frames[1].get(INPUT_LENGTH, []), bins, epsilon)
    psi["input_length"] = length.psi if length else None
    if length:
        distributions["input_length"] = length

    cache: dict[str, Any] = {}
    profiles: list[EventProfile | None] = []
    sources: list[str | None] = []
    for run, fact in zip(runs, facts, strict=True):
        folder = Path(events_dir) if events_dir is not None else run.events_dir()
        files = event_parts(folder) if folder is not None else []
        if events_dir is not None and not files:
            raise MonitoringError(f"--events {events_dir}: no event Parquet files (expected DIR/events/*.parquet)")
        preprocessor, why = _open_preprocessor(fact["model_uri"], opener, cache)
        if not files:
            profiles.append(None)
            sources.append(None)
            why = "no event folder (give --events)"
        else:
            profiles.append(event_profile(files, run.cutoff, preprocessor, window_days, batch_rows))
            sources.append(str(folder))
        profile = profiles[-1]
        fact["events_folder"] = sources[-1]
        fact["events_read"] = profile.events if profile else None
        fact["event_type_share"] = ({k: v / profile.events for k, v in sorted(profile.event_types.items())}
                                    if profile and profile.events else None)
        fact["oov_rate"] = profile.oov_rates() if profile else None
        fact["missing_field_rate"] = profile.missing_rates() if profile else None
        fact["rates_unavailable"] = why if fact["oov_rate"] is None else None

    mix = None
    if profiles[0] is not None and profiles[1] is not None:
        mix = categorical_distribution(dict(profiles[0].event_types), dict(profiles[1].event_types), epsilon)
    psi["event_type_mix"] = mix.psi if mix else None
    if mix:
        distributions["event_type_mix"] = mix

    change = {
        "customers_ratio": _ratio(facts[1]["customers"], facts[0]["customers"]),
        "events_ratio": _ratio(facts[1]["events_before_cutoff"], facts[0]["events_before_cutoff"]),
        "eligible_share_difference": _difference(facts[1]["eligible_share"], facts[0]["eligible_share"]),
        "flagged_share_difference": _difference(facts[1]["flagged_share"], facts[0]["flagged_share"]),
    }
    method = {
        "bins": bins, "min_share": epsilon,  # not "epsilon": the dashboard reads keys with "psi" as PSI
        "binning": "quantiles of the reference (ties merged)",
        "scores": "eligible customers only (a NaN score = not eligible)",
        "events": "events strictly before each run's cut-off"
                  + (f", last {window_days} days" if window_days else ", whole history"),
        "window_days": window_days,
    }
    return MonitoringReport(threshold=threshold, reference=facts[0], current=facts[1], psi=psi, method=method,
                            change=change, distributions=distributions)


__all__ = ["ALERT_EXIT", "DEFAULT_BINS", "DEFAULT_EPSILON", "DEFAULT_THRESHOLD", "Distribution", "EventProfile",
           "ModelOpener", "MonitoringError", "MonitoringReport", "ScoringRun", "categorical_distribution",
           "event_parts", "event_profile", "find_scoring_runs", "monitor", "numeric_distribution", "psi_of",
           "quantile_edges"]

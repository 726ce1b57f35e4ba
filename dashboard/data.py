"""What the dashboard's views read: scoring runs, segments, the portfolio and one customer, straight from Parquet.

**Scoring runs.** Every folder ``WORKDIR/scores*/`` or ``WORKDIR/scores/*/`` holding ``_manifest.json`` and
``part-*.parquet`` (what `journey score` and `journey demo` write) is one run: one cut-off, one model version.
Two runs of the same customers at successive cut-offs give the customer view its "what changed".

**Queries, not data frames.** The portfolio is answered by DuckDB over the run's Parquet parts (aggregates,
histograms and the top of the ranked list; only those few rows come back to Python), one customer by a
filter that Parquet row-group statistics prune (scores with DuckDB, events with a pyarrow dataset filter), so
neither loads the scored population into memory (``benchmarks/bench_dashboard.py`` times both at 1M customers).

**Segments.** A customer's segment comes from the events before the run's cut-off: the main channel, the last
product applied for (or opened), a ``segment`` column where the events carry one, and an activity band from
the scores' ``n_events``. The per-customer profile is computed once per (events, cut-off) and kept in
``WORKDIR/dashboard/profiles-<key>.parquet``.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from journey_model.core.files import atomic_path
from journey_model.core.fingerprint import fingerprint
from journey_model.data.eligibility import ineligible_reason_column, ineligible_rule_column

SCORES_MANIFEST = "_manifest.json"  # journey_model.inference.batch_scoring.MANIFEST_FILE (that module loads torch)
SCORE_PARTS = "part-*.parquet"
CACHE_DIR = "dashboard"  # WORKDIR/dashboard/: the per-customer profiles
# Batch-scoring output's reasons, best first: reason codes (list<struct task, code, sentence, weight, events>),
# a readable string ("churn: CODE — sentence; … | default: …") by the names it has had, the event groups.
REASON_CODES_COLUMN = "reason_codes"
REASON_TEXT_COLUMNS = ("reasons", "reason_text", "reason_sentences")
PRODUCT_EVENT_TYPES = ("product_application", "account_open")
ACTIVITY_DAYS = 90  # activity: events in the 90 days before the cut-off (without events: the model's input length)
ACTIVITY_BANDS = ((10, "1 · under 10 events"), (30, "2 · 10–29 events"), (60, "3 · 30–59 events"))
ACTIVITY_TOP = "4 · 60+ events"
SEGMENT_LABELS = {"segment": "segment", "channel": "main channel", "product": "last product applied for",
                  "activity": "activity"}
NO_SCORES = "run `journey demo` or `journey score` first"


class DashboardDataError(ValueError):
    """The working directory lacks what a view needs (no scores, no events); the message says what to run."""


# ------------------------------------------------------------------------------------------ scoring runs


@dataclass(frozen=True)
class ScoringRun:
    """One finished batch-scoring job: its folder, manifest and parts."""

    path: Path
    manifest: dict[str, Any]
    files: tuple[Path, ...]

    @property
    def cutoff(self) -> pd.Timestamp | None:
        """The run's cut-off (None for a run scored just after each customer's last event)."""
        text = self.manifest.get("cutoff")
        if not text or text == "last-event":
            return None
        return pd.Timestamp(text).tz_convert("UTC") if pd.Timestamp(text).tzinfo else pd.Timestamp(text, tz="UTC")

    @property
    def model_name(self) -> str:
        return str(self.manifest.get("model_name", ""))

    @property
    def model_version(self) -> str:
        return str(self.manifest.get("model_version", ""))

    @property
    def label(self) -> str:
        when = self.cutoff.strftime("%Y-%m-%d") if self.cutoff is not None else "last event"
        return f"{when} · {self.model_name} v{self.model_version} · {self.path.name}"

    def events_dir(self, root: Path) -> Path | None:
        """The canonical events the run scored (``config.events_dir`` of the manifest, found from here)."""
        configured = (self.manifest.get("config") or {}).get("events_dir")
        candidates = []
        if configured:
            given = Path(configured)
            candidates += [given] if given.is_absolute() else [Path.cwd() / given, root.parent / given, root / given]
        candidates += [root / "data" / "synth"]
        for folder in candidates:
            if list(event_parts(folder)):
                return folder.resolve()
        return None


def event_parts(folder: Path) -> list[Path]:
    """The canonical event Parquet parts of an events folder (``events/part-*.parquet``) or of the folder itself."""
    for where in (folder / "events", folder):
        parts = sorted(where.glob("*.parquet")) if where.is_dir() else []
        parts = [p for p in parts if p.name not in ("labels.parquet", "ground_truth.parquet")]
        if parts:
            return parts
    return []


def find_scoring_runs(root: Path) -> list[ScoringRun]:
    """Finished scoring runs under ``root`` (``scores*/``, ``scores/*/``), oldest cut-off first."""
    folders = sorted({*root.glob("scores*"), *root.glob("scores/*")})
    runs = []
    for folder in folders:
        manifest = folder / SCORES_MANIFEST
        files = tuple(sorted(folder.glob(SCORE_PARTS)))
        if folder.is_dir() and manifest.is_file() and files:
            runs.append(ScoringRun(folder.resolve(), json.loads(manifest.read_text()), files))
    floor = pd.Timestamp.min.tz_localize("UTC")
    return sorted(runs, key=lambda r: (r.cutoff if r.cutoff is not None else floor, r.path.stat().st_mtime))


def require_scores(root: Path) -> list[ScoringRun]:
    """The scoring runs under ``root``; a :class:`DashboardDataError` saying what to run when there are none."""
    if not root.is_dir():
        raise DashboardDataError(f"workdir {root} does not exist: {NO_SCORES}")
    runs = find_scoring_runs(root)
    if not runs:
        raise DashboardDataError(f"no batch-scoring output under {root} (scores/_manifest.json): {NO_SCORES}")
    return runs


# ------------------------------------------------------------------------------------------ columns


def outcomes_of(columns: Iterable[str]) -> list[str]:
    """Outcome names of a scores table: its ``p_<outcome>`` columns (forecast columns excluded)."""
    return [c[2:] for c in columns if c.startswith("p_") and not c.startswith("p_next_")]


def forecast_steps(columns: Iterable[str]) -> list[int]:
    """The k of the ``next_event_<k>`` columns, in order."""
    steps = [c.removeprefix("next_event_") for c in columns if c.startswith("next_event_")]
    return sorted(int(k) for k in steps if k.isdigit())


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def activity_band(n_events: float) -> str:
    for upper, label in ACTIVITY_BANDS:
        if n_events < upper:
            return label
    return ACTIVITY_TOP


def _activity_sql(column: str) -> str:
    cases = " ".join(f"WHEN {column} < {upper} THEN '{label}'" for upper, label in ACTIVITY_BANDS)
    return f"CASE {cases} ELSE '{ACTIVITY_TOP}' END"


def reasons_sentence(reasons: Sequence[dict[str, Any]] | None, task: str) -> str:
    """``top_reasons`` of one task as one line: '3 × complaint 3-7 days before; 1 × fee …'."""
    parts = [f"{r['events']} × {r['event_type']} {r['time_bucket']} before" for r in (reasons or [])
             if r.get("task") == task]
    return "; ".join(parts)


def text_for(text: str | None, outcome: str) -> str:
    """The ``outcome: …`` part of a reasons string ('churn: A — a; B — b | default: …'), without the prefix."""
    for part in (text or "").split(" | "):
        if part.startswith(f"{outcome}: "):
            return part.removeprefix(f"{outcome}: ")
    return ""


def outcome_reasons(row: dict[str, Any], outcome: str) -> str:
    """One readable line of why ``row`` scored as it did for ``outcome``: the reason codes' sentences, else the
    reasons string's part, else the event groups (what the ranked list shows)."""
    codes = [r for r in (row.get(REASON_CODES_COLUMN) or []) if r.get("task") == outcome]
    if codes:
        return "; ".join(f"{r['sentence']} ({r['code']})" for r in codes)
    text = next((row[c] for c in REASON_TEXT_COLUMNS if isinstance(row.get(c), str)), None)
    if text:
        return text_for(text, outcome)
    return reasons_sentence(row.get("top_reasons"), outcome)


# ------------------------------------------------------------------------------------------ the store


@dataclass
class Filters:
    """The portfolio's filters: segment values to keep (dimension -> values; empty keeps all), a score floor,
    and whether only customers flagged at the model's operating point count."""

    segments: dict[str, list[str]] = field(default_factory=dict)
    min_score: float = 0.0
    flagged_only: bool = False


@dataclass
class Portfolio:
    """One outcome of one run: what the portfolio view shows."""

    outcome: str
    scored: int  # customers in the run
    eligible: int  # of them with a score for the outcome
    selected: int  # eligible customers passing the filters
    flagged: int | None  # selected and flagged at the operating point (None: the run has no flag column)
    ineligible_by_rule: pd.DataFrame  # rule, customers
    histogram: pd.DataFrame  # bin_start, bin_end, group, customers
    by_segment: pd.DataFrame  # group, customers, mean, p50, p90, flagged share
    ranked: pd.DataFrame  # the top of the ranked list
    dimension: str | None  # the segment dimension the histogram and table are split by
    threshold: float | None = None  # the operating point: the lowest score flagged (None: no flag column)


class ScoreStore:
    """DuckDB views over a working directory's scoring runs (and their segment profiles)."""

    def __init__(self, root: Path, runs: list[ScoringRun] | None = None) -> None:
        self.root = Path(root).resolve()
        self.runs = runs if runs is not None else require_scores(self.root)
        self._con = duckdb.connect(":memory:")
        self._con.execute("SET TimeZone = 'UTC'")
        self._lock = threading.Lock()
        self._profiles: dict[int, str | None] = {}
        self.columns: list[list[str]] = []
        for i, run in enumerate(self.runs):
            files = ", ".join(f"'{p.as_posix()}'" for p in run.files)
            self._con.execute(f"CREATE VIEW run_{i} AS SELECT * FROM read_parquet([{files}], union_by_name = true)")
            self.columns.append([row[0] for row in self._con.execute(f"DESCRIBE run_{i}").fetchall()])

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        return self._con.cursor()  # one per call: Streamlit runs each session in its own thread

    # ---------------------------------------------------------------- segments

    def profiles_view(self, run: int) -> str | None:
        """The name of a view with one row per customer of run ``run``: its segment columns (None: no events)."""
        with self._lock:
            if run not in self._profiles:
                path = self._profile_file(self.runs[run])
                name = None
                if path is not None:
                    name = f"profiles_{run}"
                    self._con.execute(f"CREATE OR REPLACE VIEW {name} AS "
                                      f"SELECT * FROM read_parquet('{path.as_posix()}')")
                self._profiles[run] = name
            return self._profiles[run]

    def _profile_file(self, run: ScoringRun) -> Path | None:
        events = run.events_dir(self.root)
        if events is None:
            return None
        parts = event_parts(events)
        schema = pq.read_schema(parts[0])
        key = fingerprint({"files": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in parts],
                           "cutoff": str(run.cutoff), "version": 1})
        path = self.root / CACHE_DIR / f"profiles-{key}.parquet"
        if path.exists():
            return path
        columns = ["customer_id"]
        if "segment" in schema.names:
            columns.append("coalesce(mode(segment), 'unknown') AS segment")
        if "channel" in schema.names:
            columns.append("coalesce(mode(channel), 'none') AS channel")
        if "item" in schema.names:
            types = ", ".join(f"'{t}'" for t in PRODUCT_EVENT_TYPES)
            columns.append(f"coalesce(arg_max(item, ts) FILTER (WHERE event_type IN ({types})), 'none') AS product")
        last = "$cutoff" if run.cutoff is not None else "(SELECT max(ts) FROM events)"
        recent = f"count(*) FILTER (WHERE ts >= {last} - INTERVAL {ACTIVITY_DAYS} DAY)"
        columns.append(f"{_activity_sql(recent)} AS activity")
        files = ", ".join(f"'{p.as_posix()}'" for p in parts)
        where = "WHERE ts < $cutoff" if run.cutoff is not None else ""
        params = {"cutoff": run.cutoff.to_pydatetime()} if run.cutoff is not None else {}
        table = self._cursor().sql(
            f"WITH events AS (SELECT * FROM read_parquet([{files}])) SELECT {', '.join(columns)} FROM events {where} "
            "GROUP BY customer_id", params=params).to_arrow_table()
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as temporary:
            pq.write_table(table, temporary)
        return path

    def dimensions(self, run: int) -> list[str]:
        """The segment dimensions run ``run`` can be split by (``activity`` always; the others from events)."""
        view = self.profiles_view(run)
        found = []
        if view is not None:
            names = [row[0] for row in self._cursor().execute(f"DESCRIBE {view}").fetchall()]
            found = [d for d in ("segment", "channel", "product", "activity") if d in names]
        if "activity" not in found and "n_events" in self.columns[run]:
            found.append("activity")
        return found

    def _base(self, run: int) -> str:
        """SQL of run ``run``'s scores with the segment columns."""
        view = self.profiles_view(run)
        if view is None:
            activity = f", {_activity_sql('s.n_events')} AS activity" if "n_events" in self.columns[run] else ""
            return f"(SELECT s.*{activity} FROM run_{run} s)"
        picked = "".join(f", coalesce(p.{d}, 'unknown') AS {d}" for d in self.dimensions(run))
        return f"(SELECT s.*{picked} FROM run_{run} s LEFT JOIN {view} p USING (customer_id))"

    def segment_values(self, run: int, dimension: str) -> list[str]:
        query = f"SELECT DISTINCT {quote(dimension)} FROM {self._base(run)} ORDER BY 1"
        rows = self._cursor().execute(query).fetchall()
        return [r[0] for r in rows if r[0] is not None]

    # ---------------------------------------------------------------- portfolio

    def _where(self, run: int, outcome: str, filters: Filters) -> tuple[str, list[Any]]:
        score = quote(f"p_{outcome}")
        clauses, params = [f"{score} IS NOT NULL", f"NOT isnan({score})", f"{score} >= ?"], [float(filters.min_score)]
        for dimension, values in filters.segments.items():
            if values:
                clauses.append(f"{quote(dimension)} IN ({', '.join('?' for _ in values)})")
                params += list(values)
        flag = f"flag_{outcome}"
        if filters.flagged_only and flag in self.columns[run]:
            clauses.append(f"{quote(flag)}")
        return " AND ".join(clauses), params

    def portfolio(self, run: int, outcome: str, filters: Filters | None = None, dimension: str | None = None,
                  top: int = 100, bins: int = 40) -> Portfolio:
        """The eligible population's score distribution and the top of the ranked list for one outcome."""
        filters = filters or Filters()
        columns = self.columns[run]
        if f"p_{outcome}" not in columns:
            raise DashboardDataError(f"{self.runs[run].path.name}: no scores for {outcome!r}")
        base = self._base(run)
        where, params = self._where(run, outcome, filters)
        score = quote(f"p_{outcome}")
        flag = f"flag_{outcome}"
        has_flag = flag in columns
        cur = self._cursor()
        scored, eligible = cur.execute(f"SELECT count(*), count({score}) FILTER (WHERE NOT isnan({score})) "
                                       f"FROM run_{run}").fetchone()
        flagged_sql = f"count(*) FILTER (WHERE {quote(flag)})" if has_flag else "NULL"
        selected, flagged = cur.execute(f"SELECT count(*), {flagged_sql} FROM {base} WHERE {where}", params).fetchone()

        rule = ineligible_rule_column(outcome)
        if rule in columns:
            ineligible = cur.execute(f"SELECT {quote(rule)} AS rule, count(*) AS customers FROM run_{run} "
                                     f"WHERE {score} IS NULL OR isnan({score}) GROUP BY 1 ORDER BY 2 DESC").df()
        else:
            ineligible = cur.execute(f"SELECT 'no score' AS rule, count(*) AS customers FROM run_{run} "
                                     f"WHERE {score} IS NULL OR isnan({score}) HAVING count(*) > 0").df()

        group = quote(dimension) if dimension else "'all'"
        histogram = cur.execute(
            f"SELECT least(floor({score} * {bins}), {bins - 1}) / {bins} AS bin_start, {group} AS \"group\", "
            f"count(*) AS customers FROM {base} WHERE {where} GROUP BY ALL ORDER BY 1, 2", params).df()
        histogram["bin_end"] = histogram["bin_start"] + 1 / bins
        flagged_share = f"avg(CASE WHEN {quote(flag)} THEN 1.0 ELSE 0.0 END)" if has_flag else "NULL"
        by_segment = cur.execute(
            f"SELECT {group} AS \"group\", count(*) AS customers, avg({score}) AS mean, "
            f"quantile_cont({score}, 0.5) AS p50, quantile_cont({score}, 0.9) AS p90, "
            f"{flagged_share} AS flagged_share FROM {base} WHERE {where} GROUP BY 1 ORDER BY 2 DESC", params).df()
        ranked = self.ranked(run, outcome, filters, limit=top)
        threshold = None
        if has_flag:
            threshold = cur.execute(f"SELECT min({score}) FROM run_{run} WHERE {quote(flag)}").fetchone()[0]
        return Portfolio(outcome, int(scored), int(eligible), int(selected), None if flagged is None else int(flagged),
                         ineligible, histogram, by_segment, ranked, dimension, threshold)

    def ranked(self, run: int, outcome: str, filters: Filters | None = None, limit: int | None = 100) -> pd.DataFrame:
        """Eligible customers passing the filters, highest score first (ties by id): rank, id, score, flag,
        reasons, segments."""
        filters = filters or Filters()
        columns = self.columns[run]
        where, params = self._where(run, outcome, filters)
        score = quote(f"p_{outcome}")
        picked = ["customer_id", f"{score} AS score"]
        if f"flag_{outcome}" in columns:
            picked.append(f"{quote('flag_' + outcome)} AS flag")
        text = next((c for c in REASON_TEXT_COLUMNS if c in columns), None)
        task = outcome.replace("'", "''")
        if REASON_CODES_COLUMN in columns:
            picked.append(f"array_to_string(list_transform(list_filter({REASON_CODES_COLUMN}, lambda r: r.task = "
                          f"'{task}'), lambda r: r.sentence || ' (' || r.code || ')'), '; ') AS reasons")
        elif text:
            picked.append(f"list_transform(list_filter(string_split({quote(text)}, ' | '), lambda s: starts_with(s, "
                          f"'{task}: ')), lambda s: s[{len(task) + 3}:])[1] AS reasons")
        elif "top_reasons" in columns:
            picked.append("array_to_string(list_transform(list_filter(top_reasons, lambda r: r.task = "
                          f"'{task}'), lambda r: r.events || ' × ' || r.event_type || ' ' || r.time_bucket "
                          "|| ' before'), '; ') AS reasons")
        picked += [quote(d) for d in self.dimensions(run)]
        if "n_events" in columns:
            picked.append("n_events")
        order = f"ORDER BY {score} DESC, customer_id"
        limit_sql = f"LIMIT {int(limit)}" if limit is not None else ""
        frame = self._cursor().execute(
            f"SELECT {', '.join(picked)} FROM {self._base(run)} WHERE {where} {order} {limit_sql}", params).df()
        frame.insert(0, "rank", range(1, len(frame) + 1))
        return frame

    def ranked_csv(self, run: int, outcome: str, filters: Filters | None = None) -> bytes:
        """The whole filtered ranked list as CSV (the export)."""
        return self.ranked(run, outcome, filters, limit=None).to_csv(index=False).encode()

    # ---------------------------------------------------------------- one customer

    def customer_runs(self, customer_id: str) -> list[tuple[int, dict[str, Any]]]:
        """Every run that scored ``customer_id``, with its row (oldest cut-off first)."""
        found = []
        for i in range(len(self.runs)):
            cursor = self._cursor()
            row = cursor.execute(f"SELECT * FROM run_{i} WHERE customer_id = ? LIMIT 1", [customer_id]).fetchone()
            if row is not None:
                found.append((i, dict(zip([d[0] for d in cursor.description], row, strict=True))))
        return found

    def customer_ids(self, run: int, prefix: str = "", limit: int = 20) -> list[str]:
        rows = self._cursor().execute(f"SELECT customer_id FROM run_{run} WHERE starts_with(customer_id, ?) "
                                      f"ORDER BY customer_id LIMIT {int(limit)}", [prefix]).fetchall()
        return [r[0] for r in rows]

    def customer_events(self, run: int, customer_id: str) -> pa.Table:
        """The customer's canonical events (all of them, oldest first), read with a row-group-pruned filter."""
        events = self.runs[run].events_dir(self.root)
        if events is None:
            raise DashboardDataError(f"the events run {self.runs[run].path.name} scored are not found "
                                     f"(manifest config.events_dir); the timeline needs them")
        dataset = ds.dataset([str(p) for p in event_parts(events)], format="parquet")
        table = dataset.to_table(filter=ds.field("customer_id") == customer_id)
        return table.sort_by([("ts", "ascending")])


def value(row: dict[str, Any], column: str) -> Any:
    """``row[column]``, None where it is missing, null or NaN."""
    v = row.get(column)
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def changes(previous: dict[str, Any], current: dict[str, Any], outcomes: Sequence[str]) -> pd.DataFrame:
    """Per outcome, what changed between two scorings of a customer: score, eligibility, flag, top reason."""
    rows = []
    for outcome in outcomes:
        before, after = value(previous, f"p_{outcome}"), value(current, f"p_{outcome}")
        rows.append({
            "outcome": outcome,
            "previous score": before,
            "score": after,
            "change": None if before is None or after is None else after - before,
            "previous flag": value(previous, f"flag_{outcome}"),
            "flag": value(current, f"flag_{outcome}"),
            "previous eligibility": value(previous, ineligible_reason_column(outcome)) or "eligible",
            "eligibility": value(current, ineligible_reason_column(outcome)) or "eligible",
            "previous top reason": reasons_sentence(previous.get("top_reasons"), outcome).split("; ")[0],
            "top reason": reasons_sentence(current.get("top_reasons"), outcome).split("; ")[0],
        })
    return pd.DataFrame(rows)


__all__ = ["CACHE_DIR", "NO_SCORES", "REASON_TEXT_COLUMNS", "SCORES_MANIFEST", "SEGMENT_LABELS",
           "DashboardDataError", "Filters", "Portfolio", "ScoreStore", "ScoringRun", "activity_band", "changes",
           "event_parts", "find_scoring_runs", "forecast_steps", "outcome_reasons", "outcomes_of",
           "reasons_sentence", "require_scores", "text_for", "value"]

"""`journey score`: batch scoring of every customer in an event folder, locally or on Spark.

The local engine runs in two passes with memory bounded by one partition, not by the input (the shape of
`journey prepare`):

1. **Spill.** Stream the canonical event parts in record batches and write every event into one of N
   partitions by a hash of its customer id, so that each customer's events end up in one partition.
   Skipped when the input already is partitioned by customer (``partitioning="auto"``, the default): when the
   customer-id ranges of the input's row groups (their Parquet statistics, read from the footers) do not
   overlap, no customer spans two row groups, so consecutive row groups of one file, up to
   ``events_per_partition`` events, are scored as partitions as they are (the report and manifest say
   ``"partitioning": "input"`` instead of ``"spill"``; events after the cut-off are then counted per partition).
   Scores agree with the spilled job's to float32 rounding (other customers share a batch, so other padding).
2. **Score.** For each partition: sort by customer (no copy when it is sorted already), cut it into chunks of
   ``chunk_customers`` customers, and score each chunk with the same code as the online API
   (:func:`score_events_table`: canonical events -> :func:`~journey_model.data.sequences.encode_examples` ->
   :meth:`Scorer.score_rows`, or :func:`journey_model.inference.explain.explain_rows` when top reasons are asked
   for). The partition's rows go to a hidden temporary file that is renamed to ``part-NNNNN.parquet`` when
   the partition is complete, then a done-marker is written. With ``workers`` > 1 the partitions are scored
   side by side in spawned worker processes, each loading a saved copy of the model once and holding one
   partition at a time; each publishes and marks done its own partitions, and the job's process sums their
   counts and moves the progress bar as partitions finish. The parts are the same as with one process.

An interrupted job run again with the same model, input, cut-off and options skips the partitions already
marked done and redoes the others (a redone partition replaces its part atomically), so no customer is
missing or written twice. The cut-off "now" is fixed when the job starts and kept for the resumed run.

The Spark engine (:func:`score_spark`) runs the same per-customer scoring with
``groupBy(bucket).applyInArrow`` over customer-hash buckets: the model bundle is shipped to the executors
with ``SparkContext.addFile`` and loaded once per Python worker; Spark writes the output with its own
commit protocol (``_SUCCESS`` marks a complete job).
"""

from __future__ import annotations

import copy
import logging
import math
import multiprocessing
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from journey_model.core.files import READ_ERRORS, atomic_path, read_error_message, reading, write_json_atomic
from journey_model.core.fingerprint import fingerprint
from journey_model.core.jobs import ResumableJob
from journey_model.core.pseudonyms import key_from_env, key_id, pseudonymise
from journey_model.core.resources import peak_rss_mb
from journey_model.core.settings import option
from journey_model.data.eligibility import count_ineligible, ineligible_rule_column, merge_counts
from journey_model.data.partitioning import (
    customer_ranges,
    event_files,
    partition_count,
    read_partition,
    spill_by_customer,
    total_rows_of,
)
from journey_model.data.prepare_spark import open_session
from journey_model.data.schema import CUSTOMER_ID, TIMESTAMP, TIMESTAMP_TYPE, conform_table
from journey_model.data.sequences import CUTOFF, encode_examples, timestamps_to_micros
from journey_model.inference.attribution import (
    METHODS,
    AttributionUnavailableError,
    check_method,
    default_method,
)
from journey_model.inference.explain import (
    REASON_CODE_TYPE,
    REASON_TYPE,
    explain_rows,
    reason_codes_column,
    reason_text_column,
    reasons_column,
)
from journey_model.inference.scorer import ModelIdentity, Scorer, ScoringError, open_bundle

log = logging.getLogger(__name__)

MANIFEST_FILE = "_manifest.json"
EXPLAIN_CHOICES = ("flagged", "all", "none")
REASON_METHOD_AUTO = "auto"  # the model's own default attribution method, as the API and the dashboard use
REASON_METHOD_CHOICES = (REASON_METHOD_AUTO, *METHODS)
JOB_FILE = "job.json"  # the job state: cut-off, spill done, partition count
CUTOFF_NOW = "now"
CUTOFF_LAST_EVENT = "last-event"
ENGINES = ("local", "spark")
MAX_DEFAULT_WORKERS = 8  # the default --workers: the usable cores, at most this many
PARTITIONING_AUTO = "auto"
PARTITIONING_SPILL = "spill"
PARTITIONING_CHOICES = (PARTITIONING_AUTO, PARTITIONING_SPILL)
INPUT_PARTITIONS = "input"  # the report's partitioning when the input's row groups were scored as they are


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and taskset narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_workers() -> int:
    return max(1, min(usable_cores(), MAX_DEFAULT_WORKERS))


ModelOpener = Callable[[str], tuple[Scorer, ModelIdentity]]  # --model -> (scorer, identity)


class BatchScoringError(ValueError):
    """Options, input or output that a scoring job cannot use; the message says which and why."""


@dataclass
class BatchScoringConfig:
    """One batch scoring job."""

    model: str = option(help="model bundle folder or MLflow model URI (models:/NAME@champion)")
    events_dir: str = option(help="folder with events/part-*.parquet (from ingest or synth), or the parts themselves",
                             flag="--events")
    out_dir: str = option(help="output folder: part-*.parquet and _manifest.json", flag="--out")
    cutoff: str = option(CUTOFF_NOW, "score as of this ISO date/time (UTC if no offset), 'now' (job start; kept on "
                         "resume) or 'last-event' (just after each customer's last event)")
    top_reasons: int = option(3, "reasons per task in the output; 0 = none (one plain forward pass, faster)")
    explain: str = option(
        "flagged", "which customers get reasons: 'flagged' (flagged on any outcome at the model's operating point — "
        "the lists a team works; every customer when the model has no operating point), 'all', or 'none'. "
        "Reasons cost up to ~20 forward passes per customer for recurrent models (occlusion)",
        choices=EXPLAIN_CHOICES)
    reason_method: str = option(
        REASON_METHOD_AUTO, "how reasons are found: 'auto' = the model's default attribution method (the one the API "
        "and the dashboard use, so a customer gets the same reasons everywhere), or a method by name; see the "
        "README's Explanations for what each costs and how often it finds the planted causes",
        choices=REASON_METHOD_CHOICES)
    chunk_customers: int = option(1024, "customers scored together; bounds the scoring pass's memory [customers]")
    events_per_partition: int = option(2_000_000, "events per spill partition / Spark group; bounds memory and "
                                       "resume granularity [events]")
    batch_rows: int = option(500_000, "rows per record batch while spilling [rows]")
    partitioning: str = option(
        PARTITIONING_AUTO, "local engine: 'auto' scores the input's own row groups as partitions (no spill pass) "
        "when their customer-id ranges (Parquet statistics) show that no customer spans two of them and none "
        "holds more than events_per_partition events, else spills by customer hash; 'spill' always spills",
        choices=PARTITIONING_CHOICES)
    engine: str = option("local", "local: streaming in this process; spark: applyInArrow on a Spark session",
                         choices=ENGINES)
    spark_master: str | None = option(None, "Spark master when no session runs; none = local[2]")
    torch_threads: int = option(1, "intra-op threads of the local engine (per worker process); 0 = all cores. "
                                "One was fastest on a shared 2-core machine; raise it on a dedicated many-core one "
                                "(Spark tasks use 1) [threads]")
    workers: int = option(factory=default_workers,
                          help="local engine: processes scoring spill partitions side by side, each holding one "
                          f"partition and the model; 1 = score in this process. Default: the usable cores (at most "
                          f"{MAX_DEFAULT_WORKERS}) [processes]")
    pseudonymise: bool = option(False, "the events hold raw customer ids: score and write them as keyed pseudonyms "
                                "(the key from {KEY_ENV}, as `journey ingest --pseudonymise` writes them)")
    progress: bool = option(True, "progress bars on stderr (-q turns them off)")

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise BatchScoringError(f"engine {self.engine!r}: expected one of {list(ENGINES)}")
        if self.partitioning not in PARTITIONING_CHOICES:
            raise BatchScoringError(f"partitioning {self.partitioning!r}: expected one of {list(PARTITIONING_CHOICES)}")
        if self.explain not in EXPLAIN_CHOICES:
            raise BatchScoringError(f"explain {self.explain!r}: expected one of {list(EXPLAIN_CHOICES)}")
        if self.reason_method not in REASON_METHOD_CHOICES:
            raise BatchScoringError(f"reason_method {self.reason_method!r}: expected one of "
                                    f"{list(REASON_METHOD_CHOICES)}")
        if self.explain == "none":
            self.top_reasons = 0
        if self.pseudonymise and self.engine != "local":
            raise BatchScoringError("pseudonymise works with the local engine; for Spark, pseudonymise at ingest "
                                    "(journey ingest --pseudonymise)")
        if self.workers < 1:
            raise BatchScoringError(f"workers ({self.workers}) must be >= 1")
        if self.chunk_customers < 1 or self.events_per_partition < 1 or self.top_reasons < 0:
            raise BatchScoringError(
                f"chunk_customers ({self.chunk_customers}) and events_per_partition ({self.events_per_partition}) "
                f"must be >= 1, top_reasons ({self.top_reasons}) >= 0"
            )
        if self.cutoff not in (CUTOFF_NOW, CUTOFF_LAST_EVENT):
            resolve_cutoff(self.cutoff)  # fail early on an unparseable date


@dataclass
class BatchScoringReport:
    """What a scoring job wrote and skipped, with its speed and memory."""

    out_dir: str
    model_name: str
    model_version: str
    cutoff: str  # the cut-off used: an ISO time, or "last-event"
    customers: int  # customers scored and written
    skipped_no_history: int  # customers with no event before the cut-off (not scored, counted)
    events: int  # events read
    events_after_cutoff: int  # events at or after the cut-off (not used)
    partitions: int
    resumed_partitions: int  # partitions already done by an earlier, interrupted run
    seconds: float
    customers_per_second: float
    peak_rss_mb: float  # this process's, plus each worker process's own peak (an upper bound of their sum)
    engine: str = "local"
    files: list[str] = field(default_factory=list)
    ineligible: dict[str, dict[str, int]] = field(default_factory=dict)  # outcome -> rule -> customers not scored
    # how the local engine cut the input: "spill" (by customer hash) or "input" (the input's own row groups, no
    # spill: no customer spans two of them); "spark" for the Spark engine's hash buckets
    partitioning: str = "spill"
    reason_method: str | None = None  # the attribution method the reasons came from; None: no reasons asked


    def summary(self) -> str:
        lines = [
            f"scored {self.customers:,} customers with {self.model_name} version {self.model_version} at cut-off "
            f"{self.cutoff} in {self.seconds:.1f} s ({self.customers_per_second:,.0f} customers/s, peak RSS "
            f"{self.peak_rss_mb:,.0f} MiB) -> {self.out_dir}",
        ]
        if self.skipped_no_history:
            lines.append(f"  skipped {self.skipped_no_history:,} customers with no event before the cut-off")
        for outcome, rules in self.ineligible.items():
            reasons = ", ".join(f"{rule} {n:,}" for rule, n in sorted(rules.items()))
            lines.append(f"  not eligible for {outcome} (no score, a reason instead): {sum(rules.values()):,} "
                         f"({reasons})")
        if self.events_after_cutoff:
            lines.append(f"  {self.events_after_cutoff:,} events at or after the cut-off were not used")
        if self.reason_method:
            lines.append(f"  reasons by {self.reason_method}")
        if self.resumed_partitions:
            lines.append(f"  resumed: {self.resumed_partitions} of {self.partitions} partitions were already done")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------- shared pieces
def resolve_cutoff(spec: str, now: datetime | None = None) -> int | None:
    """Microseconds since the epoch (UTC) of a cut-off spec; None for "last-event" (per customer)."""
    if spec == CUTOFF_LAST_EVENT:
        return None
    if spec == CUTOFF_NOW:
        stamp = pd.Timestamp(now or datetime.now(UTC))
    else:
        try:
            stamp = pd.Timestamp(spec)
        except (ValueError, TypeError) as error:
            raise BatchScoringError(f"cutoff {spec!r}: not an ISO date or time (e.g. 2024-12-01 or "
                                    "2024-12-01T00:00:00Z), 'now' or 'last-event'") from error
        if stamp is pd.NaT:
            raise BatchScoringError(f"cutoff {spec!r}: not a date")
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return int(stamp.value // 1000)


def _column_type(name: str) -> pa.DataType:
    if name.startswith(("next_event_", "ineligible_")):
        return pa.string()
    if name.startswith("flag_"):
        return pa.bool_()
    return pa.float64()


def output_schema(scorer: Scorer, top_reasons: int) -> pa.Schema:
    """Columns of the scored parts: customer_id, cutoff, model_name, model_version, n_events, scores, reasons."""
    columns = [pa.field(CUSTOMER_ID, pa.string()), pa.field(CUTOFF, TIMESTAMP_TYPE),
               pa.field("model_name", pa.string()), pa.field("model_version", pa.string()),
               pa.field("n_events", pa.int32())]
    for name in scorer.output_columns[3:]:
        columns.append(pa.field(name, _column_type(name)))
    columns += [pa.field(ineligible_rule_column(name), pa.string()) for name in scorer.judged_outcomes]
    if top_reasons:
        columns.append(pa.field("top_reasons", pa.list_(REASON_TYPE)))
        columns.append(pa.field("reason_codes", pa.list_(REASON_CODE_TYPE)))
        columns.append(pa.field("reasons", pa.string()))  # the reason codes as one readable line
    return pa.schema(columns)


def score_events_table(
    scorer: Scorer, identity: ModelIdentity, events: pa.Table, cutoff_micros: int | None, top_reasons: int,
    explain: str = "all", reason_method: str | None = None,
) -> tuple[pa.Table, int]:
    """Score every customer of ``events`` (canonical) at one cut-off (None: just after each one's last event).

    Returns the output rows (see :func:`output_schema`) of the customers with at least one event before the
    cut-off, and how many customers had none (not scored). ``explain`` says who gets reasons (see
    :class:`BatchScoringConfig`); the others get empty reason lists and a null ``reasons``. ``reason_method``:
    the attribution method (None: the model's default).
    """
    customers = pc.unique(events.column(CUSTOMER_ID))
    if cutoff_micros is None:  # as Scorer.score_events: one microsecond after each customer's last event
        grouped = events.select([CUSTOMER_ID, TIMESTAMP]).group_by(CUSTOMER_ID).aggregate([(TIMESTAMP, "max")])
        customers = grouped.column(CUSTOMER_ID)
        cut = pa.array(timestamps_to_micros(grouped.column(f"{TIMESTAMP}_max")) + 1, pa.int64()).cast(TIMESTAMP_TYPE)
    else:
        cut = pa.array(np.full(len(customers), cutoff_micros, dtype=np.int64), pa.int64()).cast(TIMESTAMP_TYPE)
    examples = pa.table({CUSTOMER_ID: customers, CUTOFF: cut})
    rows = encode_examples(scorer.preprocessor, events, examples)
    has_history = pc.greater(rows.column("length"), 0)
    skipped = len(rows) - int(pc.sum(has_history).as_py() or 0)
    rows = rows.filter(has_history)
    schema = output_schema(scorer, top_reasons)
    if rows.num_rows == 0:
        return schema.empty_table(), skipped
    frame, explanations = scorer.score_rows(rows), []
    if top_reasons:
        chosen = _to_explain(scorer, frame, explain)
        _, explained = explain_rows(scorer, rows.filter(pa.array(chosen)), top_k=top_reasons, with_events=False,
                                    method=reason_method)
        found = iter(explained)
        explanations = [next(found) if wanted else None for wanted in chosen]
    arrays = {
        CUSTOMER_ID: pa.array(frame[CUSTOMER_ID], pa.string()),
        CUTOFF: rows.column(CUTOFF),
        "model_name": pa.array([identity.name] * len(frame), pa.string()),
        "model_version": pa.array([identity.version] * len(frame), pa.string()),
        "n_events": pa.array(frame["n_events"].to_numpy().astype(np.int32)),
    }
    for name in scorer.output_columns[3:]:
        arrays[name] = pa.array(frame[name], schema.field(name).type, from_pandas=True)
    for name in scorer.judged_outcomes:
        arrays[ineligible_rule_column(name)] = rows.column(ineligible_rule_column(name))
    if top_reasons:
        arrays["top_reasons"] = reasons_column(explanations)
        arrays["reason_codes"] = reason_codes_column(explanations)
        arrays["reasons"] = reason_text_column(explanations)
    return pa.Table.from_arrays([arrays[f.name] for f in schema], schema=schema), skipped


def _to_explain(scorer: Scorer, frame: pd.DataFrame, explain: str) -> np.ndarray:
    """Which scored customers get reasons: all, or those flagged on any outcome (all when there are no flags)."""
    flags = [c for c in frame.columns if c.startswith("flag_")]
    if explain == "all" or not flags:
        return np.ones(len(frame), dtype=bool)
    return frame[flags].fillna(False).astype(bool).any(axis=1).to_numpy()


def _fingerprint(config: BatchScoringConfig, identity: ModelIdentity, files: list[Path], key: bytes | None) -> str:
    """Same model, input files (name, size, mtime), cut-off spec, options and pseudonym key -> same fingerprint."""
    facts: dict[str, Any] = {
        "model": [identity.name, identity.version, identity.artifact_hash],
        "files": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files],
        "options": [config.cutoff, config.top_reasons, config.explain, config.events_per_partition],
    }
    if key is not None:  # only then, so that fingerprints of earlier jobs stay valid
        facts["pseudonym_key"] = key_id(key)
    if config.reason_method != REASON_METHOD_AUTO and config.top_reasons:  # likewise
        facts["reason_method"] = config.reason_method
    return fingerprint(facts)


def reason_method_of(config: BatchScoringConfig, scorer: Scorer) -> str | None:
    """The attribution method this job's reasons come from (None when it writes none); a method the model cannot
    use is refused before any scoring, naming the option."""
    if not config.top_reasons:
        return None
    try:
        if config.reason_method == REASON_METHOD_AUTO:
            return default_method(scorer)
        check_method(scorer, config.reason_method)
    except AttributionUnavailableError as error:
        raise BatchScoringError(f"reason_method (--reason-method {config.reason_method}): {error}; or write no "
                                f"reasons (--explain none)") from error
    return config.reason_method


def _with_pseudonyms(key: bytes) -> Callable[[pa.Table], pa.Table]:
    """A batch mapper that replaces canonical events' customer ids by their keyed pseudonyms."""
    def mapped(table: pa.Table) -> pa.Table:
        index = table.column_names.index(CUSTOMER_ID)
        return table.set_column(index, table.schema.field(index), pseudonymise(table.column(CUSTOMER_ID), key))

    return mapped


# --------------------------------------------------------------------------------------------- local engine
class _LocalJob:
    """One run of the local engine: spill, then score partition by partition."""

    def __init__(self, config: BatchScoringConfig, scorer: Scorer, identity: ModelIdentity, overwrite: bool) -> None:
        self.config = config
        self.scorer = scorer
        self.identity = identity
        self.files = event_files(Path(config.events_dir))
        self.dataset = scorer.preprocessor.dataset
        self.key = key_from_env() if config.pseudonymise else None
        self.fingerprint = _fingerprint(config, identity, self.files, self.key)
        self.reason_method = reason_method_of(config, scorer)
        self.output = ResumableJob(config.out_dir, self.fingerprint, state_file=JOB_FILE, manifest_file=MANIFEST_FILE)
        self.out, self.work = self.output.out, self.output.work
        self.overwrite = overwrite
        self.input_partitions: list[list[Any]] | None = None  # (file index, row groups) per partition, no spill

    def prepare_output(self) -> dict[str, Any]:
        """The job state to resume, a fresh one, or ``{"complete": manifest}`` when this same job finished here;
        refuses to mix with another job's output."""
        state = self.output.resume()
        if state is not None:
            return state
        if self.output.holds_other_job():
            if not self.overwrite:
                raise BatchScoringError(
                    f"{self.out}: holds an unfinished job with another model, input, cut-off or options; pass "
                    "overwrite (--overwrite) to replace it, or choose another --out"
                )
        elif self.output.is_complete() or any(self.out.glob("part-*.parquet")):
            if (manifest := self.output.complete_manifest()) is not None:
                return {"complete": manifest}
            if not self.overwrite:
                raise BatchScoringError(f"{self.out}: already holds scores; pass overwrite (--overwrite) to replace them")
        self.output.reset(*self.out.glob("part-*.parquet"))
        # "now" is fixed here, once: a resumed run scores at the same cut-off.
        return self.output.save_state({"cutoff_micros": resolve_cutoff(self.config.cutoff), "spilled": False})

    def plan(self, state: dict[str, Any]) -> dict[str, Any]:
        """Pass 1: the input's own row groups as partitions when no customer spans two of them (see
        :func:`~journey_model.data.partitioning.customer_ranges`; footers only, no spill), else :meth:`spill`."""
        ranges = (customer_ranges(self.files, self.config.events_per_partition)
                  if self.config.partitioning == PARTITIONING_AUTO else None)
        if ranges is None:
            return self.spill(state)
        # events after the cut-off are counted as each partition is scored (in its done-marker's counts)
        state.update(spilled=True, partitions=len(ranges), events=total_rows_of(self.files), events_after_cutoff=None,
                     input_partitions=[[index, groups] for index, groups in ranges])
        return self.output.save_state(state)

    def spill(self, state: dict[str, Any]) -> dict[str, Any]:
        """Pass 1: hash-partition every event by customer into the work folder."""
        total_rows = total_rows_of(self.files)
        partitions = partition_count(self.files, self.config.events_per_partition)
        spill = self.work / "spill"
        shutil.rmtree(spill, ignore_errors=True)
        cutoff = state["cutoff_micros"]
        after_cutoff = 0

        def count_after_cutoff(table: pa.Table) -> None:
            nonlocal after_cutoff
            if cutoff is not None:
                after_cutoff += int(np.count_nonzero(timestamps_to_micros(table.column(TIMESTAMP)) >= cutoff))

        spill_by_customer(self.files, self.dataset, spill, partitions, self.config.batch_rows,
                          on_batch=count_after_cutoff, progress=self.config.progress,
                          map_batch=None if self.key is None else _with_pseudonyms(self.key))
        state.update(spilled=True, partitions=partitions, events=total_rows, events_after_cutoff=after_cutoff)
        return self.output.save_state(state)

    def read_partition(self, partition: int) -> pa.Table | None:
        """The events of one partition: its spill file, or its row groups of the input (None: no events)."""
        if self.input_partitions is not None:
            index, groups = self.input_partitions[partition]
            events = read_partition(self.files[index], groups, self.dataset)
            return events if self.key is None else _with_pseudonyms(self.key)(events)
        spill_file = self.work / "spill" / f"part-{partition:05d}.parquet"
        if not spill_file.exists():
            return None
        with reading(spill_file, "read the spilled events"):
            return pq.read_table(spill_file)

    def score_partition(self, partition: int, cutoff: int | None, bar: tqdm | None = None) -> dict[str, Any]:
        """Pass 2 for one partition: score it chunk by chunk into a hidden file, publish it, mark it done."""
        schema = output_schema(self.scorer, self.config.top_reasons)
        written = skipped = after_cutoff = 0
        ineligible: dict[str, dict[str, int]] = {}
        with (atomic_path(self.out / f"part-{partition:05d}.parquet") as temporary,
              pq.ParquetWriter(temporary, schema, compression="zstd") as writer):
            events = self.read_partition(partition)
            if events is not None:
                if self.input_partitions is not None and cutoff is not None:
                    after_cutoff = int(np.count_nonzero(timestamps_to_micros(events.column(TIMESTAMP)) >= cutoff))
                for chunk in _customer_chunks(events, self.config.chunk_customers):
                    try:
                        table, n_skipped = score_events_table(self.scorer, self.identity, chunk, cutoff,
                                                              self.config.top_reasons, self.config.explain,
                                                              self.reason_method)
                    except READ_ERRORS as error:  # values a corrupt input page decoded to (read without error)
                        raise BatchScoringError(self._bad_partition(partition, chunk, error)) from error
                    writer.write_table(table)
                    merge_counts(ineligible, count_ineligible(table, self.scorer.judged_outcomes))
                    written += table.num_rows
                    skipped += n_skipped
                    if bar is not None:
                        bar.update(table.num_rows + n_skipped)
        counts = {"customers": written, "skipped_no_history": skipped, "ineligible": ineligible}
        if self.input_partitions is not None:
            counts["events_after_cutoff"] = after_cutoff
        self.output.mark_done(partition, counts)
        return counts

    def _bad_partition(self, partition: int, chunk: pa.Table, error: BaseException) -> str:
        """Which input the events that broke scoring came from: the event files of the first customer of the
        chunk (a spill partition mixes customers of every file), found by re-reading only that customer; an
        input partition's own file."""
        first = chunk.column(CUSTOMER_ID)[0].as_py()
        if self.input_partitions is not None:  # one input file holds the whole partition
            files = [str(self.files[self.input_partitions[partition][0]])]
        else:
            files = [str(path) for path in self.files if self._holds_customer(path, first)] or [str(self.config.events_dir)]
        where = ", ".join(files[:3]) + (" ..." if len(files) > 3 else "")
        return (read_error_message(where, error, f"score partition {partition} (customers from {first!r} on)")
                + "; no part was written for it")

    def _holds_customer(self, path: Path, customer: str) -> bool:
        try:
            ids = pq.read_table(path, columns=[CUSTOMER_ID]).column(CUSTOMER_ID)
        except READ_ERRORS:
            return True  # a file that no longer reads is a suspect too
        if self.key is not None:  # spilled ids are pseudonyms
            ids = pseudonymise(ids, self.key)
        return bool(pc.any(pc.equal(ids, customer)).as_py())


def _customer_chunks(events: pa.Table, chunk_customers: int) -> Iterator[pa.Table]:
    """Slices of ``events`` holding whole customers, at most ``chunk_customers`` each."""
    if events.num_rows == 0:
        return
    ids = events.column(CUSTOMER_ID)
    order = pc.sort_indices(ids)  # stable: a customer's events keep their order
    if not np.array_equal(order.to_numpy(), np.arange(events.num_rows)):  # input sorted by customer: no copy
        events, ids = events.take(order), ids.take(order)
    ids = ids.combine_chunks()
    changes = pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1)).to_numpy(zero_copy_only=False)
    starts = np.concatenate([[0], np.flatnonzero(changes) + 1, [events.num_rows]])
    for first in range(0, len(starts) - 1, chunk_customers):
        begin, end = int(starts[first]), int(starts[min(first + chunk_customers, len(starts) - 1)])
        yield events.slice(begin, end - begin)


# ------------------------------------------------------------------------------- local engine: worker processes
_WORKER_JOB: dict[str, _LocalJob] = {}  # in a worker process: its job, with the model loaded once
PARENT_POLL_SECONDS = 1.0  # how often a worker checks that the job's process is still there


def _watch_parent(parent: int) -> None:
    """End this worker when the job's process is gone (killed, even with -9): it would otherwise wait for work
    forever. A partition it was scoring stays unpublished (a hidden temporary) and is redone on resume."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_SECONDS)
    os._exit(1)


def _start_worker(job: _LocalJob, bundle: str, batch_size: int, threads: int, parent: int) -> None:
    """Initializer of a worker process: load the model once from the job's bundle copy."""
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="watch-parent").start()
    if threads:
        torch.set_num_threads(threads)
    job.scorer = Scorer.load(bundle, batch_size=batch_size)
    _WORKER_JOB["job"] = job


def _score_in_worker(partition: int, cutoff: int | None) -> dict[str, Any]:
    counts = _WORKER_JOB["job"].score_partition(partition, cutoff)
    return {**counts, "worker": os.getpid(), "peak_rss_mb": peak_rss_mb()}


def _score_partitions(job: _LocalJob, todo: list[int], cutoff: int | None, bar: tqdm,
                      on_done: Callable[[dict[str, Any]], None]) -> float:
    """Score the ``todo`` partitions: in this process with one worker, else in ``config.workers`` processes
    (spawned, each loading a copy of the model once and scoring one partition at a time, so memory is bounded
    by one partition per worker). Each partition is published and marked done by whoever scored it, as in one
    process; ``on_done`` gets its counts here as it finishes. Returns the workers' summed peak RSS [MiB]."""
    workers = min(job.config.workers, len(todo))
    if workers <= 1:
        for partition in todo:
            on_done(job.score_partition(partition, cutoff, bar))
        return 0.0
    staging = Path(tempfile.mkdtemp(prefix="journey-bundle-"))
    bundle = staging / "bundle"
    job.scorer.save(bundle)  # a self-contained copy, whatever the URI was (MLflow, a folder, …)
    shipped = copy.copy(job)
    shipped.scorer = None  # type: ignore[assignment]  # each worker loads its own from the bundle
    peaks: dict[int, float] = {}
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
                               initargs=(shipped, str(bundle), job.scorer.batch_size, job.config.torch_threads,
                                         os.getpid()))
    try:
        pending: set[Future] = {pool.submit(_score_in_worker, partition, cutoff) for partition in todo}
        while pending:
            finished, pending = wait(pending, return_when="FIRST_COMPLETED")
            for future in finished:
                counts = future.result()  # a worker's error is raised here, as it would be in one process
                worker, peak = counts.pop("worker"), counts.pop("peak_rss_mb")
                peaks[worker] = max(peak, peaks.get(worker, 0.0))
                bar.update(counts["customers"] + counts["skipped_no_history"])
                on_done(counts)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(staging, ignore_errors=True)
    return sum(peaks.values())


def score_batch(config: BatchScoringConfig, *, overwrite: bool = False,
                opener: ModelOpener = open_bundle) -> BatchScoringReport:
    """Run one batch scoring job (local or Spark engine); resumes an interrupted local job of the same config.

    ``opener`` turns ``config.model`` into a scorer and its identity: bundle folders by default;
    :func:`journey_model.tracking.loading.open_model` (what `journey score` passes) opens MLflow URIs too.
    """
    if config.engine == "spark":
        return score_spark(config, overwrite=overwrite, opener=opener)
    threads = torch.get_num_threads()
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    try:
        return _score_local(config, overwrite, opener)
    finally:
        torch.set_num_threads(threads)


def _score_local(config: BatchScoringConfig, overwrite: bool, opener: ModelOpener) -> BatchScoringReport:
    started = time.perf_counter()
    scorer, identity = opener(config.model)
    job = _LocalJob(config, scorer, identity, overwrite)
    job.out.mkdir(parents=True, exist_ok=True)
    state = job.prepare_output()
    if "complete" in state:  # this same job finished here already: report it again from its manifest
        return BatchScoringReport(**{k: v for k, v in state["complete"].items()
                                     if k in BatchScoringReport.__dataclass_fields__})
    if not state.get("spilled"):
        state = job.plan(state)
    job.input_partitions = state.get("input_partitions")
    cutoff = state["cutoff_micros"]
    customers = skipped = resumed = after_cutoff = 0
    ineligible: dict[str, dict[str, int]] = {}

    def add(counts: dict[str, Any]) -> None:
        nonlocal customers, skipped, after_cutoff
        customers += counts["customers"]
        skipped += counts["skipped_no_history"]
        after_cutoff += counts.get("events_after_cutoff", 0)
        merge_counts(ineligible, counts.get("ineligible", {}))

    todo = []
    for partition in range(state["partitions"]):
        counts = job.output.done(partition) if (job.out / f"part-{partition:05d}.parquet").exists() else None
        if counts is not None:
            resumed += 1
            add(counts)
        else:
            todo.append(partition)
    bar = tqdm(unit="customer", unit_scale=True, desc="score", disable=not config.progress)
    try:
        workers_peak = _score_partitions(job, todo, cutoff, bar, add)
    finally:
        bar.close()
    seconds = time.perf_counter() - started
    report = BatchScoringReport(
        out_dir=str(job.out), model_name=identity.name, model_version=identity.version,
        cutoff=CUTOFF_LAST_EVENT if cutoff is None else str(np.datetime64(cutoff, "us")) + "Z",
        customers=customers, skipped_no_history=skipped, events=state["events"],
        events_after_cutoff=after_cutoff if state["events_after_cutoff"] is None else state["events_after_cutoff"],
        partitions=state["partitions"], resumed_partitions=resumed,
        seconds=seconds, customers_per_second=customers / seconds if seconds else 0.0,
        peak_rss_mb=peak_rss_mb() + workers_peak, files=[f"part-{p:05d}.parquet" for p in range(state["partitions"])],
        ineligible=ineligible, partitioning=PARTITIONING_SPILL if job.input_partitions is None else INPUT_PARTITIONS,
        reason_method=job.reason_method,
    )
    job.output.finish({**asdict(report), "config": asdict(config), "model_uri": identity.uri,
                       "artifact_hash": identity.artifact_hash,
                       "operating_points": scorer.describe().get("calibration")})
    return report


def ranked(scores: pa.Table | pd.DataFrame, outcome: str, top: int | None = None) -> pd.DataFrame:
    """The eligible customers of scoring output, highest ``p_<outcome>`` first: what a team works down.

    Customers outside the outcome's population have no score (and a reason in ``ineligible_<outcome>``); they
    never appear in a ranked list.
    """
    frame = scores.to_pandas() if isinstance(scores, pa.Table) else scores
    column = f"p_{outcome}"
    if column not in frame.columns:
        raise BatchScoringError(f"scores have no {column!r}; outcomes scored: "
                                f"{sorted(c[2:] for c in frame.columns if c.startswith('p_') and '_next_' not in c)}")
    eligible = frame[frame[column].notna()]
    ordered = eligible.sort_values([column, CUSTOMER_ID], ascending=[False, True], kind="stable")
    return (ordered.head(top) if top is not None else ordered).reset_index(drop=True)


def read_scores(out_dir: str | Path) -> pa.Table:
    """Every part of a finished scoring job as one table."""
    out = Path(out_dir)
    if not (out / MANIFEST_FILE).exists() and not (out / "_SUCCESS").exists():
        raise BatchScoringError(f"{out}: not a finished scoring job (no {MANIFEST_FILE} or _SUCCESS)")
    files = sorted(out.glob("part-*.parquet"))
    if not files:
        return pa.table({})
    return pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")


# --------------------------------------------------------------------------------------------- Spark engine
_EXECUTOR_MODELS: dict[str, Scorer] = {}  # bundle path -> Scorer, loaded once per Python worker


def _executor_scorer(bundle_name: str) -> Scorer:
    from pyspark import SparkFiles

    path = SparkFiles.get(bundle_name)
    if path not in _EXECUTOR_MODELS:
        torch.set_num_threads(1)  # Spark runs one task per core: more threads per task only fight for them
        _EXECUTOR_MODELS[path] = Scorer.load(path)
    return _EXECUTOR_MODELS[path]


def spark_schema_ddl(schema: pa.Schema) -> str:
    """The Spark DDL of the output schema (applyInArrow needs it up front)."""
    def ddl(kind: pa.DataType) -> str:
        if pa.types.is_string(kind):
            return "string"
        if pa.types.is_timestamp(kind):
            return "timestamp"
        if pa.types.is_int32(kind):
            return "int"
        if pa.types.is_boolean(kind):  # flag_<outcome> of a calibrated model
            return "boolean"
        if pa.types.is_floating(kind):
            return "double"
        if pa.types.is_list(kind):
            return f"array<{ddl(kind.value_type)}>"
        if pa.types.is_struct(kind):
            return "struct<" + ",".join(f"{f.name}:{ddl(f.type)}" for f in kind) + ">"
        raise BatchScoringError(f"no Spark type for {kind}")

    return ", ".join(f"`{f.name}` {ddl(f.type)}" for f in schema)


def score_spark(config: BatchScoringConfig, *, overwrite: bool = False, spark: Any = None,
                opener: ModelOpener = open_bundle) -> BatchScoringReport:
    """The same job on Spark: customer-hash buckets -> applyInArrow -> Parquet parts under ``out_dir``.

    Uses ``spark`` or the running SparkSession; else starts one — on the master ``spark-submit`` was given,
    or on ``config.spark_master`` (default ``local[2]``). The session time zone is set to UTC so that event
    times reach pandas unshifted, and timestamps are written as TIMESTAMP_MICROS (UTC), not INT96.
    """
    from pyspark.sql import functions as F

    started = time.perf_counter()
    out = Path(config.out_dir) if "://" not in config.out_dir else None
    if out is not None and out.exists() and any(out.iterdir()) and not overwrite:
        raise BatchScoringError(f"{out}: already holds files; pass overwrite (--overwrite) to replace them")
    scorer, identity = opener(config.model)
    cutoff = resolve_cutoff(config.cutoff)
    schema = output_schema(scorer, config.top_reasons)
    reason_method = reason_method_of(config, scorer)
    spark = open_session("journey-score", config.spark_master, spark, config.progress)
    spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")  # read back as UTC, not INT96

    staging = Path(tempfile.mkdtemp(prefix="journey-bundle-"))
    bundle = staging / f"bundle-{identity.version or 'model'}"
    scorer.save(bundle)  # a self-contained copy, whatever the URI was (MLflow, a folder, …)
    spark.sparkContext.addFile(str(bundle), recursive=True)

    events_path = str(Path(config.events_dir) / "events") if (Path(config.events_dir) / "events").is_dir() \
        else config.events_dir
    events = spark.read.parquet(events_path)
    columns = [c for c in scorer.preprocessor.dataset.arrow_schema().names if c in events.columns]
    events = events.select(*columns)
    late = F.col(TIMESTAMP) >= F.lit(pd.Timestamp(cutoff, unit="us", tz="UTC").to_pydatetime()) if cutoff is not None \
        else F.lit(False)
    facts = events.agg(F.count(F.lit(1)).alias("events"), F.countDistinct(CUSTOMER_ID).alias("customers"),
                       F.sum(late.cast("long")).alias("late")).first()  # one pass for all the counts
    total_events, all_customers, after = int(facts["events"]), int(facts["customers"]), int(facts["late"] or 0)
    buckets = max(1, math.ceil(total_events / config.events_per_partition))
    names = (identity.name, identity.version, identity.uri)
    bundle_name, top_reasons, explain = bundle.name, config.top_reasons, config.explain

    def score_group(bucket: pa.Table) -> pa.Table:
        """Runs on the executors: one bucket of whole customers -> their output rows (Arrow in and out, as
        ``journey prepare --engine spark`` runs its buckets: no pandas round trip of the events)."""
        model = _executor_scorer(bundle_name)
        table = conform_table(bucket, model.preprocessor.dataset, source="spark group")
        model_identity = ModelIdentity(name=names[0], version=names[1], uri=names[2])
        scored, _ = score_events_table(model, model_identity, table, cutoff, top_reasons, explain, reason_method)
        return scored

    scored = (events.withColumn("_bucket", F.pmod(F.xxhash64(CUSTOMER_ID), F.lit(buckets)))
              .groupBy("_bucket").applyInArrow(score_group, schema=spark_schema_ddl(schema)))
    scored.write.mode("overwrite").parquet(config.out_dir)
    shutil.rmtree(staging, ignore_errors=True)

    written = spark.read.parquet(config.out_dir)
    customers = written.count()  # from the parts' footers
    ineligible: dict[str, dict[str, int]] = {}
    for outcome in scorer.judged_outcomes:
        column = ineligible_rule_column(outcome)
        for row in written.where(F.col(column).isNotNull()).groupBy(column).count().collect():
            ineligible.setdefault(outcome, {})[row[column]] = int(row["count"])
    seconds = time.perf_counter() - started
    report = BatchScoringReport(
        out_dir=config.out_dir, model_name=identity.name, model_version=identity.version,
        cutoff=CUTOFF_LAST_EVENT if cutoff is None else str(np.datetime64(cutoff, "us")) + "Z",
        customers=customers, skipped_no_history=all_customers - customers, events=total_events,
        events_after_cutoff=after, partitions=buckets, resumed_partitions=0, seconds=seconds,
        customers_per_second=customers / seconds if seconds else 0.0, peak_rss_mb=peak_rss_mb(), engine="spark",
        ineligible=ineligible, partitioning="spark", reason_method=reason_method,
    )
    if out is not None:
        write_json_atomic(out / MANIFEST_FILE, {**asdict(report), "config": asdict(config), "model_uri": identity.uri,
                                                "operating_points": scorer.describe().get("calibration")})
    return report


__all__ = ["BatchScoringConfig", "BatchScoringError", "BatchScoringReport", "ScoringError", "ranked", "read_scores",
           "resolve_cutoff", "score_batch", "score_events_table", "score_spark"]

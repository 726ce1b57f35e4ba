"""`journey prepare`: canonical events -> point-in-time sequence datasets every model trains on.

The job runs in two passes with memory bounded by one customer partition, not by the input:

1. **Scan.** Stream the canonical event parts in record batches; gather the statistics the preprocessor
   is fitted on (value counts, amount moments, time range) from the events allowed to shape it (those
   before the validation period for out-of-time splits, the training customers for customer splits); and
   spill every event into one of N partitions by a hash of its customer id. The per-customer splits
   (leave-last-out, case-chronological) learn who is held out only then, so they gather the fitted
   statistics in a second read of the spilled partitions.
2. **Build.** For each partition: sort its events by (customer, time), make the (customer, cut-off)
   examples (calendar dates, every event, or a labels table), encode them with the fitted
   :class:`~journey_model.data.preprocessing.Preprocessor` (see :mod:`journey_model.data.sequences` for the
   strictly-before rule), assign splits, purge training examples whose targets reach into the validation or
   test period, and write ``train/ val/ test/`` Parquet parts.

Every part is written atomically and every finished partition is recorded, so an interrupted job resumes
where it stopped; ``manifest.json`` is written last and marks the dataset complete. Every dropped example
is counted, by reason, in the manifest. The numeric statistics are summed exactly (:class:`ExactMoments`), so
the artifact depends neither on the batch and partition sizes nor on the engine: :mod:`.prepare_spark` builds
the same dataset on Spark with this module's per-partition code (``engine='spark'``).
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from journey_model.core.files import atomic_path, reading
from journey_model.core.fingerprint import file_digest, fingerprint
from journey_model.core.jobs import ResumableJob
from journey_model.core.resources import peak_rss_mb
from journey_model.core.settings import FieldValues, option
from journey_model.data.eligibility import count_ineligible, ineligible_rule_column, outcomes_with_rules
from journey_model.data.partitioning import customer_hash, event_files, partition_count, spill_by_customer
from journey_model.data.preprocessing import (
    FieldStatistics,
    NumericTransform,
    PreprocessingConfig,
    Preprocessor,
)
from journey_model.data.schema import CUSTOMER_ID, TIMESTAMP, TIMESTAMP_TYPE, DatasetConfig
from journey_model.data.sequences import (
    CUTOFF,
    MICROS_PER_DAY,
    NO_SEQ,
    SEQ,
    encode_examples,
    timestamps_to_micros,
)

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
MANIFEST_FILE = "manifest.json"
# What an example holds; a dataset of an older format is another dataset (another fingerprint). 2: time_gap,
# each input event's seconds to the cut-off, beside its log2 time bucket (read by ATRank's default).
DATASET_FORMAT = 2
SCAN_FILE = "scan.json"  # the job state: the fitted preprocessor and the partition count
COUNTERS = ("dropped", "censored", "blanked", "ineligible")  # what each finished partition records
SPLIT_CHOICES = ("time", "customer", "leave-last-out", "case-chronological")
PER_CUSTOMER_SPLITS = ("leave-last-out", "case-chronological")  # fitted after the spill: see the module
LAST = np.iinfo(np.int64).max
SPLIT_COL, BOUNDARY_TS, BOUNDARY_SEQ = "_split", "_boundary_ts", "_boundary_seq"  # build-time helper columns
ENGINES = ("local", "spark")
EXECUTION_FIELDS = ("engine", "spark_master")  # how the job runs, not what it builds: outside the fingerprint


class PrepareError(ValueError):
    """The events, labels or options cannot make a point-in-time dataset; the message says why."""


def parse_cutoffs(text: str) -> FieldValues:
    """``--cutoffs labels|every-event|DATE,DATE…`` -> the cut-off strategy and, for dates, the dates."""
    if text in ("labels", "every-event"):
        return FieldValues(cutoff_strategy=text, cutoff_dates=[])
    return FieldValues(cutoff_strategy="dates", cutoff_dates=[d.strip() for d in text.split(",") if d.strip()])


def parse_targets(specs: list[str]) -> dict[str, list[Any]]:
    """Repeated ``--target NAME=EVENT_TYPE@DAYS`` -> ``{name: [event_type, days]}``."""
    targets: dict[str, list[Any]] = {}
    for spec in specs:
        try:
            name, rest = spec.split("=", 1)
            event_type, days = rest.rsplit("@", 1)
            targets[name] = [event_type, float(days)]
        except ValueError as error:
            raise PrepareError(f"--target {spec!r}: expected NAME=EVENT_TYPE@DAYS, e.g. churn=account_close@30") from error
    return targets


@dataclass
class PrepareConfig:
    """Everything `journey prepare` needs. Saved in the manifest and the preprocessing artifact."""

    events_dir: str = option(help="folder with events/ and dataset.yaml (from ingest or synth)", flag="--events")
    out_dir: str = option(help="output folder: train/ val/ test/, preprocessing.json and manifest.json", flag="--out")
    cutoff_strategy: str = option(
        "labels", "'labels' (cut-offs from a labels table), 'every-event' (each prefix predicts the next event) or "
        "comma-separated ISO dates", flag="--cutoffs", parse=parse_cutoffs, choices=("labels", "every-event", "dates"),
        metavar="labels|every-event|DATE,…")
    cutoff_dates: list[str] = option(factory=list, help="ISO dates of the 'dates' strategy (given by --cutoffs)",
                                     cli=False)
    labels_path: str | None = option(None, "labels table; none = EVENTS/labels.parquet", flag="--labels")
    label_horizon_days: float | None = option(
        None, "how many days after the cut-off the labels table's targets look (for purging); none = from "
        "labels.json beside the table, else from the synth_report.json of a synth folder, else refused [days]")
    horizon_targets: dict[str, list[Any]] = option(
        factory=dict, help="derive a binary target: EVENT_TYPE happens within DAYS after the cut-off (repeatable)",
        flag="--target", repeat=True, metavar="NAME=EVENT_TYPE@DAYS", parse=parse_targets)
    forecast_horizon_days: float = option(30.0, "window of the next-K forecast target [days]")
    min_history: int = option(1, "drop examples with fewer input events (counted) [events]")
    max_examples_per_customer: int | None = option(None, "every-event: keep the most recent N cut-offs; none = all")
    split: str = option(
        "time", "'time' (out-of-time), 'customer' (customer hash), 'leave-last-out' (per customer: last example "
        "test, the one before validation) or 'case-chronological' (customers by first event: first share "
        "train, then validation, then test)", choices=SPLIT_CHOICES)
    val_from: str | None = option(None, "time split: first validation cut-off date; none = the second-last cut-off")
    test_from: str | None = option(None, "time split: first test cut-off date; none = the last cut-off")
    val_fraction: float = option(0.1, "customer / case-chronological split: validation share of customers")
    test_fraction: float = option(0.1, "customer / case-chronological split: test share of customers")
    seed: int = option(0, "salts the customer hash of the customer split")
    events_per_partition: int = option(2_000_000, "spill partition size; bounds peak memory [events]")
    batch_rows: int = option(500_000, "rows per record batch while scanning [rows]")
    engine: str = option("local", "local: streaming in this process; spark: applyInArrow over customer buckets on a "
                         "Spark session (the same dataset)", choices=ENGINES)
    spark_master: str | None = option(None, "Spark master when no session runs; none = local[2]")
    preprocessing: PreprocessingConfig = field(default_factory=PreprocessingConfig)

    def __post_init__(self) -> None:
        if isinstance(self.preprocessing, dict):
            self.preprocessing = PreprocessingConfig(**self.preprocessing)
        if self.cutoff_strategy not in ("dates", "every-event", "labels"):
            raise PrepareError(f"cutoff_strategy {self.cutoff_strategy!r}: expected dates, every-event or labels")
        if self.split not in SPLIT_CHOICES:
            raise PrepareError(f"split {self.split!r}: expected one of {', '.join(SPLIT_CHOICES)}")
        if self.engine not in ENGINES:
            raise PrepareError(f"engine {self.engine!r}: expected one of {', '.join(ENGINES)}")
        if self.cutoff_strategy == "dates" and not self.cutoff_dates:
            raise PrepareError("cutoff_strategy 'dates' needs at least one date in cutoff_dates")
        for name, spec in self.horizon_targets.items():
            if len(spec) != 2 or float(spec[1]) <= 0:
                raise PrepareError(f"horizon target {name!r}: expected [event_type, days > 0], got {spec!r}")

    def settings(self) -> dict[str, Any]:
        """What decides the dataset (every field but the engine's): recorded in the artifact, fingerprinted."""
        return {k: v for k, v in asdict(self).items() if k not in EXECUTION_FIELDS}

    def fingerprint(self) -> str:
        """Same config -> same value: how a resumed run recognises the unfinished work of its own config. Both
        engines build the same dataset, so the engine is not part of it."""
        return fingerprint({**self.settings(), "format": DATASET_FORMAT})


@dataclass
class PrepareReport:
    """What `journey prepare` produced and dropped, with its speed and memory."""

    out_dir: str
    events: int
    examples: dict[str, int]  # split -> examples written
    dropped: dict[str, int]  # reason -> examples dropped
    censored_labels: dict[str, int]  # target -> examples whose label window is not fully observed
    blanked_targets: dict[str, int]  # reason -> targets made unknown because they reach the next period
    ineligible: dict[str, int]  # "outcome: rule" -> examples outside the outcome's population (label unknown)
    seconds: float
    events_per_second: float
    peak_rss_mb: float
    partitions: int
    resumed_partitions: int = 0

    def summary(self) -> str:
        lines = [
            f"prepared {sum(self.examples.values()):,} examples from {self.events:,} events "
            f"in {self.seconds:.1f} s ({self.events_per_second:,.0f} events/s, peak RSS {self.peak_rss_mb:,.0f} MB)",
            "  " + ", ".join(f"{split}: {n:,}" for split, n in self.examples.items()),
        ]
        if self.dropped:
            lines.append("  dropped: " + ", ".join(f"{reason}: {n:,}" for reason, n in sorted(self.dropped.items())))
        if self.ineligible:
            lines.append("  not eligible (label unknown): " + ", ".join(
                f"{reason}: {n:,}" for reason, n in sorted(self.ineligible.items())))
        if self.blanked_targets:
            lines.append("  targets blanked (purged): " + ", ".join(
                f"{reason}: {n:,}" for reason, n in sorted(self.blanked_targets.items())))
        if any(self.censored_labels.values()):
            lines.append(
                "  label unknown (window past the data): "
                + ", ".join(f"{t}: {n:,}" for t, n in self.censored_labels.items())
            )
        if self.resumed_partitions:
            lines.append(f"  resumed: {self.resumed_partitions} of {self.partitions} partitions were already done")
        lines.append(f"  output: {self.out_dir}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------- helpers
def _to_micros(date: str) -> int:
    """An ISO date or time (naive = UTC) as microseconds since the epoch."""
    stamp = pd.Timestamp(date)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return int(stamp.value // 1000)


def exact_sum_parts(values: np.ndarray) -> dict[int, int]:
    """Finite float64 ``values`` as ``{e: S}`` with ``sum(values) == sum(S * 2**e)`` exactly (integers ``S``).

    Parts add up exactly in any order, so a sum gathered batch by batch, partition by partition or on Spark
    executors rounds (:func:`exact_total`) to the same float: the correctly rounded sum of all the values.
    """
    if values.size == 0:
        return {}
    mantissa, exponent = np.frexp(values)
    ints = (mantissa * 2.0**53).astype(np.int64)  # exact: a float64 has 53 significant bits
    exps = exponent.astype(np.int64) - 53
    order = np.argsort(exps, kind="stable")
    exps, ints = exps[order], ints[order]
    starts = np.flatnonzero(np.concatenate([[True], exps[1:] != exps[:-1]]))
    high = np.add.reduceat(ints >> 26, starts)  # halves below 2**27: int64 sums of up to 2**36 values are exact
    low = np.add.reduceat(ints & ((1 << 26) - 1), starts)
    return {int(e): (int(h) << 26) + int(lo) for e, h, lo in zip(exps[starts], high, low, strict=True)}


def add_sum_parts(into: dict[int, int], parts: dict[int, int]) -> None:
    for exponent, amount in parts.items():
        into[exponent] = into.get(exponent, 0) + amount


def exact_total(parts: dict[int, int]) -> float:
    """The correctly rounded float of ``sum(S * 2**e)``."""
    if not parts:
        return 0.0
    low = min(parts)
    return float(Fraction(sum(amount << (e - low) for e, amount in parts.items())) * Fraction(2) ** low)


@dataclass
class ExactMoments:
    """Count, sum and sum of squares of each numeric field's transformed values, summed exactly: the same
    preprocessor whatever the batches, partitions or engine (float sums would differ in the last bits)."""

    parts: dict[str, list[Any]] = field(default_factory=dict)  # field -> [n, {e: S} of values, {e: S} of squares]

    def update(self, table: pa.Table, dataset: DatasetConfig) -> None:
        for name in dataset.numeric_fields:
            values = table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
            values = NumericTransform.signed_log1p(values[np.isfinite(values)])
            self.add(name, values.size, exact_sum_parts(values), exact_sum_parts(np.square(values)))

    def add(self, name: str, n: int, sums: dict[int, int], squares: dict[int, int]) -> None:
        entry = self.parts.setdefault(name, [0, {}, {}])
        entry[0] += n
        add_sum_parts(entry[1], sums)
        add_sum_parts(entry[2], squares)

    def numeric_sums(self) -> dict[str, list[float]]:
        """In :attr:`FieldStatistics.numeric_sums`' form: field -> [n, sum, sum of squares]."""
        return {name: [float(n), exact_total(sums), exact_total(squares)] for name, (n, sums, squares) in self.parts.items()}


# --------------------------------------------------------------------------------------------- the job
class _Job:
    """One run of `journey prepare`; state shared by the scan and the build pass."""

    def __init__(self, config: PrepareConfig, overwrite: bool, progress: bool) -> None:
        self.config = config
        self.progress = progress
        self.events_dir = Path(config.events_dir)
        self.out = Path(config.out_dir)
        dataset_file = self.events_dir / "dataset.yaml"
        if not dataset_file.exists():
            raise PrepareError(f"{self.events_dir}: no dataset.yaml (write one with `journey ingest` or `journey synth`)")
        self.dataset = DatasetConfig.load(dataset_file)
        try:
            self.files = event_files(self.events_dir)
        except ValueError as error:
            raise PrepareError(str(error)) from error
        complete = (self.out / MANIFEST_FILE).exists()
        self.labels = self._load_labels()
        self.val_from, self.test_from = self._split_dates()
        # Made after the labels are read: the fingerprint covers the label horizon taken from their sidecar.
        self.output = ResumableJob(self.out, config.fingerprint(), state_file=SCAN_FILE, manifest_file=MANIFEST_FILE,
                                   part_folders=SPLITS)
        # The same job finished here already (e.g. killed after its manifest was written): nothing to redo.
        self.finished = self.output.complete_manifest() if complete and not overwrite else None
        if complete and self.finished is None:  # another config's dataset: replaced only on request
            if not overwrite:
                raise PrepareError(f"{self.out} already holds a complete prepared dataset of another config; pass "
                                   "overwrite to rebuild")
            shutil.rmtree(self.out)
        self.work = self.output.work
        self.dropped: Counter = Counter()
        self.censored: Counter = Counter()
        self.blanked: Counter = Counter()
        self.ineligible: Counter = Counter()
        self._label_partition: np.ndarray | None = None
        # case-chronological: the (first event µs, customer id) of the first validation / test customer
        self.case_thresholds: list[list[Any] | None] = [None, None]
        self._first_seen: pa.Table | None = None

    # ---- labels and split dates
    def _load_labels(self) -> pa.Table | None:
        if self.config.cutoff_strategy != "labels":
            return None
        path = Path(self.config.labels_path) if self.config.labels_path else self.events_dir / "labels.parquet"
        if not path.exists():
            raise PrepareError(f"cutoff strategy 'labels' needs a labels table; {path} does not exist")
        with reading(path, "read the labels table"):
            table = pq.read_table(path)
        for column in (CUSTOMER_ID, CUTOFF):
            if column not in table.column_names:
                raise PrepareError(f"{path}: labels table lacks column {column!r}; columns: {table.column_names}")
        try:
            table = table.set_column(
                table.column_names.index(CUTOFF), CUTOFF, table.column(CUTOFF).cast(TIMESTAMP_TYPE)
            )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            raise PrepareError(f"{path}: column 'cutoff' must be a timestamp, got {table.column(CUTOFF).type}") from error
        nulls = table.column(CUSTOMER_ID).null_count + table.column(CUTOFF).null_count
        if nulls:
            raise PrepareError(f"{path}: {nulls} rows have a null customer_id or cutoff")
        targets = [c for c in table.column_names if c not in (CUSTOMER_ID, CUTOFF)]
        for name in targets:
            if not (pa.types.is_floating(table.column(name).type) or pa.types.is_integer(table.column(name).type)
                    or pa.types.is_boolean(table.column(name).type)):
                raise PrepareError(f"{path}: target column {name!r} has type {table.column(name).type}, expected 0/1 numbers")
        table = table.set_column(
            table.column_names.index(CUSTOMER_ID), CUSTOMER_ID, table.column(CUSTOMER_ID).cast(pa.string())
        )
        if self.config.label_horizon_days is None:
            self.config.label_horizon_days = _label_horizon(path)
        return table

    def _candidate_cutoffs(self) -> np.ndarray:
        if self.config.cutoff_strategy == "dates":
            return np.array(sorted({_to_micros(d) for d in self.config.cutoff_dates}), dtype=np.int64)
        if self.config.cutoff_strategy == "labels":
            assert self.labels is not None
            return np.unique(timestamps_to_micros(self.labels.column(CUTOFF)))
        return np.array([], dtype=np.int64)

    def _split_dates(self) -> tuple[int | None, int | None]:
        if self.config.split != "time":
            return None, None
        val_from = _to_micros(self.config.val_from) if self.config.val_from else None
        test_from = _to_micros(self.config.test_from) if self.config.test_from else None
        if val_from is None or test_from is None:
            cutoffs = self._candidate_cutoffs()
            if self.config.cutoff_strategy == "every-event":
                low, high = self._time_range_from_metadata()
                default_val, default_test = low + int(0.8 * (high - low)), low + int(0.9 * (high - low))
            elif cutoffs.size >= 3:
                default_val, default_test = int(cutoffs[-2]), int(cutoffs[-1])
            else:
                raise PrepareError(
                    f"an out-of-time split needs at least 3 distinct cut-off dates to choose val/test by default, "
                    f"found {cutoffs.size}; pass val_from and test_from, or use split='customer'"
                )
            val_from = default_val if val_from is None else val_from
            test_from = default_test if test_from is None else test_from
        if val_from > test_from:
            raise PrepareError("val_from must not be after test_from")
        return val_from, test_from

    def _time_range_from_metadata(self) -> tuple[int, int]:
        low, high = None, None
        for path in self.files:
            with reading(path, "read the Parquet footer"):
                metadata = pq.ParquetFile(path).metadata
            index = metadata.schema.to_arrow_schema().get_field_index(TIMESTAMP)
            for g in range(metadata.num_row_groups):
                stats = metadata.row_group(g).column(index).statistics
                if stats is None or not stats.has_min_max:
                    continue
                lo, hi = pd.Timestamp(stats.min).value // 1000, pd.Timestamp(stats.max).value // 1000
                low = lo if low is None else min(low, lo)
                high = hi if high is None else max(high, hi)
        if low is None:
            raise PrepareError("every-event out-of-time split: event files carry no timestamp statistics; pass val_from/test_from")
        return int(low), int(high)

    # ---- pass 1: scan
    def scan(self) -> tuple[FieldStatistics, FieldStatistics, int, str]:
        """Fit statistics (restricted), full statistics, the number of partitions, the input hash."""
        partitions = partition_count(self.files, self.config.events_per_partition)
        fit_stats, all_stats, moments = FieldStatistics(), FieldStatistics(), ExactMoments()

        per_customer = self.config.split in PER_CUSTOMER_SPLITS

        def gather_statistics(table: pa.Table) -> None:
            all_stats.update(table, self.dataset)
            if self.config.split == "case-chronological":
                self._note_first_events(table)
            if not per_customer:
                fitted = table.filter(self._fit_mask(table))
                fit_stats.update(fitted, self.dataset)
                moments.update(fitted, self.dataset)

        spill_by_customer(self.files, self.dataset, self.work / "spill", partitions, self.config.batch_rows,
                          on_batch=gather_statistics, progress=self.progress, desc="scan")
        if self.config.split == "case-chronological":
            self._set_case_thresholds()
        if per_customer:  # who is held out is known per customer only now: read the partitions again
            for partition in tqdm(range(partitions), desc="fit", unit="part", disable=not self.progress):
                events = self._spilled(partition)
                fitted = events.filter(pa.array(self._fit_mask_of_partition(events, partition, partitions)))
                fit_stats.update(fitted, self.dataset)
                moments.update(fitted, self.dataset)
        fit_stats.numeric_sums = moments.numeric_sums()
        return fit_stats, all_stats, partitions, file_digest(self.files, with_names=True)

    def _spilled(self, partition: int) -> pa.Table:
        """One partition's events in file order (the order that breaks ties of equal timestamps)."""
        spill_file = self.work / "spill" / f"part-{partition:05d}.parquet"
        with reading(spill_file, "read the spilled events"):
            return pq.read_table(spill_file) if spill_file.exists() else self.dataset.arrow_schema().empty_table()

    def _fit_mask_of_partition(self, events: pa.Table, partition: int, partitions: int) -> np.ndarray:
        """Per-customer splits: the events before each customer's first held-out cut-off (leave-last-out; all
        events of a customer without one), or all events of the training customers (case-chronological)."""
        if self.config.split == "case-chronological":
            return self._case_split(events)[1] == 0
        examples = self.examples_for(events, partition, partitions, count=False)
        split, _, _ = self._leave_last_out(examples)
        held = examples.filter(pa.array(split > 0))
        cut = timestamps_to_micros(held.column(CUTOFF))
        seq = _seq_of(held)
        order = np.lexsort((seq, cut))  # the first held-out example per customer
        first = pd.DataFrame({"c": held.column(CUSTOMER_ID).to_numpy(zero_copy_only=False)[order],
                              "t": cut[order], "s": seq[order]}).drop_duplicates("c").set_index("c")
        customers = pd.Index(events.column(CUSTOMER_ID).to_numpy(zero_copy_only=False))
        at = first.reindex(customers)
        limit_t = at["t"].fillna(LAST).to_numpy(dtype=np.float64)
        limit_s = at["s"].fillna(LAST).to_numpy(dtype=np.float64)
        ts = timestamps_to_micros(events.column(TIMESTAMP)).astype(np.float64)
        position = np.arange(events.num_rows, dtype=np.float64)
        has_limit = ~at["t"].isna().to_numpy()
        before = (ts < limit_t) | ((ts == limit_t) & (position < limit_s))
        return np.where(has_limit, before, True)

    def _note_first_events(self, table: pa.Table) -> None:
        """case-chronological: keep each customer's first event time seen so far."""
        first = table.select([CUSTOMER_ID, TIMESTAMP])
        if self._first_seen is not None:
            first = pa.concat_tables([self._first_seen, first.cast(self._first_seen.schema)])
        first = first.group_by(CUSTOMER_ID).aggregate([(TIMESTAMP, "min")])
        self._first_seen = pa.table({CUSTOMER_ID: first.column(CUSTOMER_ID), TIMESTAMP: first.column(f"{TIMESTAMP}_min")})

    def _set_case_thresholds(self) -> None:
        """Order customers by (first event, id); the first validation and test customers mark the shares."""
        assert self._first_seen is not None
        frame = pd.DataFrame({"t": timestamps_to_micros(self._first_seen.column(TIMESTAMP)),
                              "c": self._first_seen.column(CUSTOMER_ID).to_numpy(zero_copy_only=False)})
        frame = frame.sort_values(["t", "c"], kind="stable").reset_index(drop=True)
        n = len(frame)
        self.case_thresholds = [[int(frame.t[i]), str(frame.c[i])] if i < n else None for i in self.case_starts(n)]
        self._first_seen = None

    def case_starts(self, customers: int) -> tuple[int, int]:
        """case-chronological: the places, in (first event, id) order, of the first validation and test customer."""
        n_test, n_val = round(customers * self.config.test_fraction), round(customers * self.config.val_fraction)
        return customers - n_test - n_val, customers - n_test

    def _case_split(self, events: pa.Table, customers: pa.Array | pa.ChunkedArray | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
        """case-chronological: 0/1/2 per customer of ``customers`` (default: per event) from the partition's
        events (all of each customer's): (split per entry of ``customers``, split per event)."""
        ts = timestamps_to_micros(events.column(TIMESTAMP))
        ids = events.column(CUSTOMER_ID).to_numpy(zero_copy_only=False).astype(object)
        first = pd.Series(ts).groupby(ids).min()
        keys_c = first.index.to_numpy(dtype=object)
        keys_t = first.to_numpy()
        split_of = np.zeros(keys_c.shape[0], dtype=np.int8)
        for k, threshold in enumerate(self.case_thresholds):
            if threshold is not None:
                t0, c0 = threshold
                at_or_after = (keys_t > t0) | ((keys_t == t0) & (keys_c >= c0))
                split_of[at_or_after] = k + 1
        by_customer = pd.Series(split_of, index=keys_c)
        per_event = by_customer.reindex(ids).to_numpy().astype(np.int8)
        if customers is None:
            return per_event, per_event
        # customers with no event come last: the test split
        wanted = customers.to_numpy(zero_copy_only=False).astype(object)
        return by_customer.reindex(wanted).fillna(2).to_numpy().astype(np.int8), per_event

    def _fit_mask(self, table: pa.Table) -> pa.Array:
        """Which events may shape the preprocessor: nothing from the validation/test period or customers."""
        if self.config.split == "time":
            assert self.val_from is not None
            return pa.array(timestamps_to_micros(table.column(TIMESTAMP)) < self.val_from)
        return pa.array(self._customer_split(table.column(CUSTOMER_ID)) == 0)

    def _customer_split(self, customers: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """0 train, 1 val, 2 test by a salted hash of the customer id."""
        unit = (customer_hash(customers, salt=self.config.seed + 1) % 1_000_000) / 1_000_000
        split = np.zeros(unit.shape[0], dtype=np.int8)
        split[unit < self.config.val_fraction + self.config.test_fraction] = 1
        split[unit < self.config.test_fraction] = 2
        return split

    # ---- pass 2: build
    def examples_for(self, events: pa.Table, partition: int, partitions: int, count: bool = True) -> pa.Table:
        strategy = self.config.cutoff_strategy
        if strategy == "labels":
            assert self.labels is not None
            if self._label_partition is None:
                self._label_partition = customer_hash(self.labels.column(CUSTOMER_ID)) % partitions
            return self.labels.filter(pa.array(self._label_partition == partition))
        customers = pc.unique(events.column(CUSTOMER_ID))
        if strategy == "dates":
            dates = self._candidate_cutoffs()
            return pa.table({
                CUSTOMER_ID: pa.array(np.repeat(customers.to_numpy(zero_copy_only=False), dates.size), pa.string()),
                CUTOFF: pa.array(np.tile(dates, len(customers)), pa.int64()).cast(TIMESTAMP_TYPE),
            })
        # every-event: each event is a cut-off predicting itself from the events before it in (time, file order);
        # _seq is its row in the partition (file order), so events at the same time are not merged.
        everyone = pa.table({CUSTOMER_ID: events.column(CUSTOMER_ID), CUTOFF: events.column(TIMESTAMP),
                             SEQ: pa.array(np.arange(events.num_rows, dtype=np.int64))})
        everyone = everyone.sort_by([(CUSTOMER_ID, "ascending"), (CUTOFF, "ascending"), (SEQ, "ascending")])
        if self.config.max_examples_per_customer:
            frame = everyone.select([CUSTOMER_ID]).to_pandas()
            rank = frame.groupby(CUSTOMER_ID).cumcount(ascending=False)
            keep = rank.to_numpy() < self.config.max_examples_per_customer
            if count:
                self.dropped["beyond max_examples_per_customer"] += int((~keep).sum())
            everyone = everyone.filter(pa.array(keep))
        return everyone.set_column(1, CUTOFF, everyone.column(CUTOFF).cast(TIMESTAMP_TYPE))

    def _leave_last_out(self, examples: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per example: split (a customer's last example test, the one before validation, the rest training)
        and the (time, seq) position its targets must stay before: the customer's next held-out cut-off."""
        n = examples.num_rows
        codes = pc.dictionary_encode(examples.column(CUSTOMER_ID).cast(pa.string()).combine_chunks())
        code = codes.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        cut = timestamps_to_micros(examples.column(CUTOFF))
        seq = _seq_of(examples)
        order = np.lexsort((seq, cut, code))
        sorted_code = code[order]
        end = np.searchsorted(sorted_code, sorted_code, side="right")
        rank = end - 1 - np.arange(n)  # 0 = the customer's last example
        split_sorted = np.where(rank == 0, 2, np.where(rank == 1, 1, 0)).astype(np.int8)
        next_held = np.where(rank >= 2, end - 2, end - 1)
        b_ts = np.where(rank == 0, LAST, cut[order][np.clip(next_held, 0, max(n - 1, 0))] if n else LAST)
        b_seq = np.where(rank == 0, LAST, seq[order][np.clip(next_held, 0, max(n - 1, 0))] if n else LAST)
        split, boundary_ts, boundary_seq = (np.empty(n, np.int8), np.empty(n, np.int64), np.empty(n, np.int64))
        split[order], boundary_ts[order], boundary_seq[order] = split_sorted, b_ts, b_seq
        return split, boundary_ts, boundary_seq

    def _per_customer_splits(self, events: pa.Table, examples: pa.Table) -> pa.Table:
        """Attach the split and the purge boundary of every example (per-customer splits), as helper columns."""
        if self.config.split == "leave-last-out":
            split, boundary_ts, boundary_seq = self._leave_last_out(examples)
        else:  # case-chronological: customers apart, nothing to purge
            split = self._case_split(events, examples.column(CUSTOMER_ID).cast(pa.string()))[0]
            boundary_ts = boundary_seq = np.full(examples.num_rows, LAST, dtype=np.int64)
        return pa.table({SPLIT_COL: pa.array(split), BOUNDARY_TS: pa.array(boundary_ts),
                         BOUNDARY_SEQ: pa.array(boundary_seq), SEQ: pa.array(_seq_of(examples))})

    def assign_splits(self, rows: pa.Table) -> dict[str, pa.Table]:
        cutoff = timestamps_to_micros(rows.column(CUTOFF))
        if self.config.split == "customer":
            split = self._customer_split(rows.column(CUSTOMER_ID))
            return {name: rows.filter(pa.array(split == i)) for i, name in enumerate(SPLITS)}
        if self.config.split in PER_CUSTOMER_SPLITS:
            split = rows.column(SPLIT_COL).to_numpy(zero_copy_only=False)
            boundary = rows.column(BOUNDARY_TS).to_numpy(zero_copy_only=False)
            boundary_seq = rows.column(BOUNDARY_SEQ).to_numpy(zero_copy_only=False)
            next_seq = np.where((seq := rows.column(SEQ).to_numpy(zero_copy_only=False)) == NO_SEQ, LAST, seq)
            rows = rows.drop_columns([SPLIT_COL, BOUNDARY_TS, BOUNDARY_SEQ, SEQ])
        else:
            assert self.val_from is not None and self.test_from is not None
            split = np.where(cutoff >= self.test_from, 2, np.where(cutoff >= self.val_from, 1, 0))
            boundary = np.where(split == 0, self.val_from, np.where(split == 1, self.test_from, LAST))
            boundary_seq = np.full(rows.num_rows, NO_SEQ, dtype=np.int64)
            next_seq = np.full(rows.num_rows, LAST, dtype=np.int64)
        rows, all_unknown = self._blank_leaking_targets(rows, cutoff, boundary, split, boundary_seq, next_seq)
        split = np.where(all_unknown, -1, split)
        return {name: rows.filter(pa.array(split == i)) for i, name in enumerate(SPLITS)}

    def _blank_leaking_targets(
        self, rows: pa.Table, cutoff: np.ndarray, boundary: np.ndarray, split: np.ndarray,
        boundary_seq: np.ndarray, next_seq: np.ndarray,
    ) -> tuple[pa.Table, np.ndarray]:
        """Purge: a target that depends on events at or after the next period's start would carry that
        period's future into training (or validation). Such targets become unknown (counted); an example
        left with no known target is dropped (counted). The next event is compared by (time, seq) with the
        boundary (``next_seq``: the example's own target event's seq where it names one, else LAST — any event
        at the boundary time leaks; ``boundary_seq`` NO_SEQ: the boundary is a time); windows by time."""
        known_any = np.zeros(rows.num_rows, dtype=bool)

        def count(mask: np.ndarray, what: str) -> None:
            for i in range(2):
                n = int((mask & (split == i)).sum())
                if n:
                    self.blanked[f"{SPLITS[i]}: {what} reaches into the {SPLITS[i + 1]} period"] += n

        horizons = {name: float(days) for name, (_, days) in self.config.horizon_targets.items()}
        for name in [c[2:] for c in rows.column_names if c.startswith("y_")]:
            days = horizons.get(name, float(self.config.label_horizon_days or 0.0))
            leak = cutoff + int(days * MICROS_PER_DAY) > boundary
            count(leak, f"label window of {name!r}")
            values = rows.column(f"y_{name}").to_numpy(zero_copy_only=False).astype(np.float32)
            values[leak] = np.nan
            rows = rows.set_column(rows.column_names.index(f"y_{name}"), f"y_{name}", pa.array(values))
            known_any |= ~np.isnan(values)

        next_ts = rows.column("next_event_ts").cast(pa.int64()).to_numpy(zero_copy_only=False)
        has_next = ~np.isnan(next_ts.astype(np.float64))
        next_micros = np.where(has_next, np.nan_to_num(next_ts.astype(np.float64), nan=0), 0).astype(np.int64)
        leak = has_next & ((next_micros > boundary) | ((next_micros == boundary) & (next_seq >= boundary_seq)))
        count(leak, "next event")
        for column in ("next_event_type", "next_item"):
            if column in rows.column_names:
                values = rows.column(column).to_numpy(zero_copy_only=False).copy()
                values[leak] = 0
                rows = rows.set_column(rows.column_names.index(column), column, pa.array(values, pa.int32()))
        known_any |= has_next & ~leak
        if leak.any():
            stamps = rows.column("next_event_ts").combine_chunks()
            rows = rows.set_column(rows.column_names.index("next_event_ts"), "next_event_ts",
                                   pc.if_else(pa.array(leak), pa.scalar(None, stamps.type), stamps))

        forecast = rows.column("forecast_event_type").combine_chunks()
        leak = (cutoff + int(self.config.forecast_horizon_days * MICROS_PER_DAY) > boundary) & (
            pc.list_value_length(forecast).to_numpy(zero_copy_only=False) > 0
        )
        count(leak, "forecast window")
        if leak.any():
            offsets = forecast.offsets.to_numpy()
            lengths = np.where(leak, 0, np.diff(offsets))
            keep = np.repeat(~leak, np.diff(offsets))
            values = forecast.flatten().to_numpy(zero_copy_only=False)[keep]
            forecast = pa.ListArray.from_arrays(pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)), pa.array(values))
            rows = rows.set_column(rows.column_names.index("forecast_event_type"), "forecast_event_type", forecast)
        known_any |= pc.list_value_length(forecast).to_numpy(zero_copy_only=False) > 0
        for i in range(2):
            n = int((~known_any & (split == i)).sum())
            if n:
                self.dropped[f"{SPLITS[i]}: no target left after purging"] += n
        return rows, ~known_any

    def _drop_ineligible(self, rows: pa.Table) -> pa.Table:
        """Count the examples outside each outcome's population (the builder made their labels unknown) and
        drop those eligible for no outcome at all: they would only teach the model about the already-lost."""
        outcomes = outcomes_with_rules(self.dataset, [c[2:] for c in rows.column_names if c.startswith("y_")])
        if not outcomes:
            return rows
        for outcome, rules in count_ineligible(rows, outcomes).items():
            for rule, n in rules.items():
                self.ineligible[f"{outcome}: {rule}"] += n
        nowhere = np.ones(rows.num_rows, dtype=bool)
        for outcome in outcomes:
            nowhere &= rows.column(ineligible_rule_column(outcome)).is_valid().to_numpy(zero_copy_only=False)
        if nowhere.any():
            self.dropped["not eligible for any outcome"] += int(nowhere.sum())
            rows = rows.filter(pa.array(~nowhere))
        return rows

    def for_bucket(self, labels: pa.Table | None) -> _Job:
        """A copy that builds one customer bucket (the Spark engine, on an executor): its own counters and,
        for the 'labels' strategy, that bucket's labels only (the bucket is then partition 0 of 1)."""
        job = copy.copy(self)
        job.labels, job._label_partition, job._first_seen = labels, None, None
        for name in COUNTERS:
            setattr(job, name, Counter())
        return job

    def build_partition(self, preprocessor: Preprocessor, partition: int, partitions: int) -> dict[str, int]:
        before = {name: Counter(getattr(self, name)) for name in COUNTERS}
        counts = self.build_events(preprocessor, self._spilled(partition), partition, partitions)
        self.output.mark_done(
            partition, {"counts": counts, **{name: dict(getattr(self, name) - before[name]) for name in before}}
        )
        return counts

    def build_events(self, preprocessor: Preprocessor, events: pa.Table, partition: int, partitions: int,
                     part: int | None = None) -> dict[str, int]:
        """Examples of one partition's events (every event of its customers, in file order) -> its Parquet part
        (``part-NNNNN``, N = ``part``, default the partition) in each split folder, written atomically; returns
        the examples per split (the counters grow)."""
        examples = self.examples_for(events, partition, partitions)
        horizon = {name: (str(spec[0]), float(spec[1])) for name, spec in self.config.horizon_targets.items()}
        rows = encode_examples(preprocessor, events, examples, horizon, self.config.forecast_horizon_days)
        if self.config.split in PER_CUSTOMER_SPLITS:  # decided on all examples, before any is dropped
            helpers = self._per_customer_splits(events, examples)
            for name in helpers.column_names:
                rows = rows.append_column(name, helpers.column(name))
        short = pc.less(rows.column("length"), self.config.min_history)
        n_short = int(pc.sum(short).as_py() or 0)
        if n_short:
            self.dropped[f"fewer than {self.config.min_history} events before the cut-off"] += n_short
            rows = rows.filter(pc.invert(short))
        rows = self._drop_ineligible(rows)
        for name in horizon:
            self.censored[name] += int(rows.column(f"y_{name}").null_count + pc.sum(pc.is_nan(rows.column(f"y_{name}"))).as_py())
        counts = {}
        for split, table in self.assign_splits(rows).items():
            folder = self.out / split
            folder.mkdir(parents=True, exist_ok=True)
            with atomic_path(folder / f"part-{partition if part is None else part:05d}.parquet") as temporary:
                pq.write_table(table, temporary, compression="zstd")
            counts[split] = table.num_rows
        return counts


def prepare(config: PrepareConfig, *, overwrite: bool = False, progress: bool = True) -> PrepareReport:
    """Build the point-in-time dataset described by ``config``; resumes an interrupted run of the same config."""
    if config.engine != "local":
        raise PrepareError(f"engine {config.engine!r} runs through journey_model.data.prepare_spark.prepare_spark "
                           "(`journey prepare --engine spark`)")
    started = time.perf_counter()
    job = _Job(config, overwrite=overwrite, progress=progress)
    if job.finished is not None:
        return PrepareReport(**{k: v for k, v in job.finished.items() if k in PrepareReport.__dataclass_fields__})
    scanned = job.output.resume()
    if scanned is not None:
        preprocessor = Preprocessor.from_dict(scanned["preprocessor"], source=str(job.output.state_file))
        partitions, events_total = scanned["partitions"], scanned["events"]
        job.case_thresholds = scanned.get("case_thresholds", [None, None])
    else:  # a fresh job, or another config's unfinished one: that one is replaced
        job.output.reset(*(job.out / split for split in SPLITS))
        fit_stats, all_stats, partitions, input_hash = job.scan()
        preprocessor = fit_preprocessor(job, fit_stats, all_stats, input_hash)
        events_total = all_stats.events
        job.output.save_state({"preprocessor": preprocessor.to_dict(), "partitions": partitions, "events": events_total,
                               "case_thresholds": job.case_thresholds})

    counts: Counter = Counter()
    already = 0
    for partition in tqdm(range(partitions), desc="build", unit="part", disable=not progress):
        done = job.output.done(partition)
        if done is not None:
            counts.update(done["counts"])
            for name in COUNTERS:
                getattr(job, name).update(done.get(name, {}))
            already += 1
            continue
        counts.update(job.build_partition(preprocessor, partition, partitions))
    return finish(job, preprocessor, counts, events_total, partitions, started, resumed=already)


def fit_preprocessor(job: _Job, fit_stats: FieldStatistics, all_stats: FieldStatistics, input_hash: str
                     ) -> Preprocessor:
    """The preprocessing artifact from the scan's statistics (both engines)."""
    if fit_stats.events == 0:
        raise PrepareError("no events fall in the training period/customers: check val_from and the split")
    preprocessor = Preprocessor.fit(fit_stats, job.dataset, job.config.preprocessing, _outcome_names(job), input_hash)
    # Censoring is judged against the whole observed log, not only the events the vocabulary saw.
    if all_stats.max_ts is not None:
        preprocessor.observed_until = str(np.datetime64(all_stats.max_ts, "us")) + "Z"
    preprocessor.extra = {
        "prepare": job.config.settings(),
        "val_from": job.val_from,
        "test_from": job.test_from,
        "case_thresholds": job.case_thresholds,
    }
    return preprocessor


def finish(job: _Job, preprocessor: Preprocessor, counts: Counter, events_total: int, partitions: int,
           started: float, resumed: int = 0) -> PrepareReport:
    """Check, save the artifact, then the manifest (last: it marks the dataset complete); both engines."""
    config = job.config
    if config.cutoff_strategy == "labels" and job.labels is not None:
        _check_labels_accounted(job, counts)

    preprocessor.save(job.out)
    seconds = time.perf_counter() - started
    report = PrepareReport(
        out_dir=str(job.out),
        events=int(events_total),
        examples={split: int(counts.get(split, 0)) for split in SPLITS},
        dropped=dict(job.dropped),
        censored_labels=dict(job.censored),
        blanked_targets=dict(job.blanked),
        ineligible=dict(job.ineligible),
        seconds=seconds,
        events_per_second=events_total / seconds if seconds else 0.0,
        peak_rss_mb=peak_rss_mb(),
        partitions=partitions,
        resumed_partitions=resumed,
    )
    job.output.finish({**asdict(report), "format": DATASET_FORMAT, "config": asdict(config), "artifact_hash": preprocessor.artifact_hash,
                       "outcome_names": preprocessor.outcome_names})
    return report


def _seq_of(examples: pa.Table) -> np.ndarray:
    """Each example's target-event seq (NO_SEQ: its cut-off is a time)."""
    if SEQ not in examples.column_names:
        return np.full(examples.num_rows, NO_SEQ, dtype=np.int64)
    return pc.fill_null(examples.column(SEQ).cast(pa.int64()), NO_SEQ).to_numpy(zero_copy_only=False).astype(np.int64)


def _label_horizon(path: Path) -> float:
    """How far a labels table's outcome windows reach past their cut-offs: ``labels.json`` beside the table,
    else the ``synth_report.json`` of the synth folder it is in. Unknown is refused: guessing 0 would keep
    labels whose window reaches into the validation or test period (a leak no metric shows)."""
    for sidecar in (path.with_suffix(".json"), path.parent / "synth_report.json"):
        if sidecar.exists():
            with reading(sidecar, "read the labels' horizon"):
                horizon = json.loads(sidecar.read_text()).get("horizon_days")
            if horizon is not None:
                return float(horizon)
    raise PrepareError(
        f"{path}: how many days after the cut-off do these labels look? Pass --label-horizon-days DAYS (0 if "
        f"each label is known at its cut-off), or write {path.with_suffix('.json').name} with "
        '{"horizon_days": DAYS} beside the table; labels whose window reaches the validation or test period '
        "are purged by it")


def _outcome_names(job: _Job) -> list[str]:
    names = []
    if job.labels is not None:
        names += [c for c in job.labels.column_names if c not in (CUSTOMER_ID, CUTOFF)]
    names += [n for n in job.config.horizon_targets if n not in names]
    return names


def _check_labels_accounted(job: _Job, counts: Counter) -> None:
    """Every labels-table row is either an example or a counted drop."""
    assert job.labels is not None
    accounted = sum(counts.values()) + sum(job.dropped.values())
    if accounted != job.labels.num_rows:
        raise PrepareError(
            f"internal check failed: {job.labels.num_rows} label rows but {accounted} examples + drops"
        )


def prepared_format(out_dir: str | Path) -> int | None:
    """The :data:`DATASET_FORMAT` a complete prepared dataset was written in (1 before it was recorded); None
    if ``out_dir`` holds no complete dataset."""
    path = Path(out_dir) / MANIFEST_FILE
    if not path.exists():
        return None
    return int(json.loads(path.read_text()).get("format", 1))


def prepared_cutoff_strategy(out_dir: str | Path) -> str | None:
    """How a prepared dataset chose its cut-offs (``labels``, ``every-event``, ``dates``); None if unrecorded."""
    path = Path(out_dir) / MANIFEST_FILE
    if not path.exists():
        return None
    config = json.loads(path.read_text()).get("config") or {}
    return config.get("cutoff_strategy")


def read_split(out_dir: str | Path, split: str, columns: list[str] | None = None) -> pa.Table:
    """Read one split of a prepared dataset (all its parts)."""
    folder = Path(out_dir) / split
    if not (Path(out_dir) / MANIFEST_FILE).exists():
        raise PrepareError(f"{out_dir} is not a complete prepared dataset (no {MANIFEST_FILE}); run `journey prepare`")
    files = sorted(folder.glob("part-*.parquet"))
    if not files:
        raise PrepareError(f"{folder}: no parts")
    tables = []
    for path in files:
        with reading(path, "read the prepared split"):
            tables.append(pq.read_table(path, columns=columns))
    return pa.concat_tables(tables)


__all__ = ["PrepareConfig", "PrepareError", "PrepareReport", "prepare", "read_split"]

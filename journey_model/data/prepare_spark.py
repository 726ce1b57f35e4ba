"""`journey prepare --engine spark`: the same point-in-time dataset, built on a Spark cluster.

The local engine's passes, with customer buckets in place of spill partitions:

* **Buckets.** Spark reads the canonical event parts; every event gets its customer's bucket — the local
  engine's partition, ``customer_hash(customer_id) % N`` with the same N — and its place in the input (file,
  row), which orders the events of a bucket exactly as the local spill does (it breaks ties of equal times).
* **Statistics.** ``groupBy(bucket).applyInArrow`` runs the local engine's code on each bucket's events: which
  events may shape the preprocessor (the training period or customers; for the per-customer splits the
  examples before each customer's first held-out one), then their value counts, exact numeric moments
  (:class:`~journey_model.data.prepare.ExactMoments`), event counts and time range as partial rows that Spark
  sums (``groupBy(kind, field, key).agg``). case-chronological's thresholds come from a Spark aggregate of
  each customer's first event. The driver fits the preprocessor from them with the local engine's code, so the
  artifact is the same, byte for byte.
* **Build.** A second ``applyInArrow`` (``cogroup`` with the labels table for the 'labels' strategy) runs
  :meth:`~journey_model.data.prepare._Job.build_events` — the local engine's function — on each bucket, which
  writes the bucket's ``train/ val/ test/`` parts (``part-NNNNN.parquet``, N = the bucket) atomically and
  returns its counts. Buckets without events or labels get the empty parts the local engine writes.

The output folder follows the local engine's convention: parts published atomically, the preprocessing
artifact and then ``manifest.json`` written last by the driver, so a folder without the manifest is never taken
for a dataset. A failed job is rerun whole (it does not resume); its folder is reset first. The events, the
labels and the output must be paths that the driver and the executors share (a local folder for
``local[N]``; NFS, a FUSE mount such as ``/dbfs`` on a cluster): the driver hashes the input files and
writes the manifest, the executors write the parts.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from journey_model.core.fingerprint import file_digest
from journey_model.data.partitioning import customer_hash, partition_count
from journey_model.data.prepare import (
    COUNTERS,
    PER_CUSTOMER_SPLITS,
    SPLITS,
    ExactMoments,
    PrepareConfig,
    PrepareError,
    PrepareReport,
    _Job,
    finish,
    fit_preprocessor,
)
from journey_model.data.preprocessing import FieldStatistics
from journey_model.data.schema import CUSTOMER_ID, TIMESTAMP, TIMESTAMP_TYPE, conform_table
from journey_model.data.sequences import CUTOFF

Batches = Iterator[pa.RecordBatch]
BUCKET, FILE, ROW = "_bucket", "_file", "_row"  # helper columns: the customer's bucket, the event's place
PARTIALS_DDL = "kind string, field string, key string, amount decimal(38,0)"
BUILT_DDL = "bucket long, record string"
LABELS_FILE = "labels.parquet"  # the checked labels table, in the job's work folder, for Spark to read
SPARK_EXTRA = "install the [spark] extra (pip install -e '.[spark]' in a checkout)"


def _pyspark() -> tuple[Any, Any]:
    """(SparkSession, functions); a missing pyspark is one clear error naming the extra."""
    try:
        from pyspark.sql import SparkSession
        from pyspark.sql import functions as F
    except ImportError as error:
        raise PrepareError(f"--engine spark needs pyspark, which is not installed: {SPARK_EXTRA}") from error
    return SparkSession, F


def spark_session(config: PrepareConfig, spark: Any = None, progress: bool = True) -> Any:
    """The session `journey prepare --engine spark` runs on (:func:`open_session`)."""
    return open_session("journey-prepare", config.spark_master, spark, progress)


def open_session(app: str, master: str | None, spark: Any = None, progress: bool = True) -> Any:
    """``spark``, the running session, or a new one (on spark-submit's master, else ``master`` or ``local[2]``;
    Spark's progress bars only with ``progress``), with the UTC session time zone (event times reach Arrow and
    pandas unshifted). `journey prepare` and `journey score` both start their sessions here."""
    SparkSession, _ = _pyspark()
    spark = spark or SparkSession.getActiveSession()
    if spark is None:
        builder = (SparkSession.builder.appName(app).config("spark.sql.session.timeZone", "UTC")
                   .config("spark.ui.showConsoleProgress", str(progress).lower()))
        submitted = "PYSPARK_GATEWAY_PORT" in os.environ  # launched by spark-submit: its --master applies
        if master or not submitted:
            builder = builder.master(master or "local[2]")
        if not submitted:
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # executors run this interpreter's packages
        spark = builder.getOrCreate()
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    return spark


# --------------------------------------------------------------------------------------------- executor side
def _with_buckets(buckets: int, file_names: list[str] | None) -> Callable[[Batches], Batches]:
    """mapInArrow: append each row's bucket (the local engine's partition) and, for events, replace the file
    name by the file's place in the local engine's reading order."""
    def add(batches: Batches) -> Batches:
        for batch in batches:
            table = pa.Table.from_batches([batch])
            bucket = (customer_hash(table.column(CUSTOMER_ID).cast(pa.string())) % buckets).astype(np.int32)
            if file_names is not None:
                place = pc.index_in(table.column(FILE), value_set=pa.array(file_names, pa.string()))
                table = table.set_column(table.column_names.index(FILE), FILE, place.cast(pa.int32()))
            yield from table.append_column(BUCKET, pa.array(bucket, pa.int32())).to_batches()
    return add


def _bucket_of(*tables: pa.Table) -> int:
    for table in tables:
        if table.num_rows:
            return int(table.column(BUCKET)[0].as_py())
    raise AssertionError("an empty group")  # Spark makes no group without rows


def _bucket_events(job: _Job, table: pa.Table) -> pa.Table:
    """A bucket's events in the local spill's order (file, then row) and canonical schema."""
    if table.num_rows:
        table = table.take(pc.sort_indices(table, [(FILE, "ascending"), (ROW, "ascending")]))
    return conform_table(table.drop_columns([c for c in (BUCKET, FILE, ROW) if c in table.column_names]),
                         job.dataset, source="spark event bucket")


def _bucket_labels(job: _Job, table: pa.Table | None) -> pa.Table | None:
    """A bucket's labels in the table's row order, with the checked table's columns."""
    if table is None:
        return None
    if table.num_rows:
        table = table.take(pc.sort_indices(table, [(ROW, "ascending")]))
    table = table.drop_columns([c for c in (BUCKET, ROW) if c in table.column_names])
    table = table.set_column(table.column_names.index(CUTOFF), CUTOFF, table.column(CUTOFF).cast(TIMESTAMP_TYPE))
    return table.set_column(table.column_names.index(CUSTOMER_ID), CUSTOMER_ID,
                            table.column(CUSTOMER_ID).cast(pa.string()))


def _partials(job: _Job, events: pa.Table, labels: pa.Table | None) -> pa.Table:
    """One bucket's share of the scan's statistics, as rows Spark sums: the local engine's fit masks."""
    bucket_job = job.for_bucket(labels)
    if job.config.split in PER_CUSTOMER_SPLITS:
        fitted = events.filter(pa.array(bucket_job._fit_mask_of_partition(events, 0, 1)))
    else:
        fitted = events.filter(bucket_job._fit_mask(events))
    stats, moments = FieldStatistics(), ExactMoments()
    stats.update(fitted, job.dataset)
    moments.update(fitted, job.dataset)
    rows: list[tuple[str, str, str, int]] = [("events", "", "", stats.events), ("all_events", "", "", events.num_rows)]
    if stats.min_ts is not None and stats.max_ts is not None:
        rows += [("min_ts", "", "", stats.min_ts), ("max_ts", "", "", stats.max_ts)]
    if events.num_rows:
        rows.append(("all_max_ts", "", "", int(pc.max(events.column(TIMESTAMP).cast(pa.int64())).as_py())))
    for name, counts in stats.value_counts.items():
        rows += [("count", name, str(value), int(n)) for value, n in counts.items()]
    for name, (n, sums, squares) in moments.parts.items():
        rows.append(("n", name, "", int(n)))
        rows += [("sum", name, str(e), s) for e, s in sums.items()]
        rows += [("square", name, str(e), s) for e, s in squares.items()]
    kind, name, key, amount = zip(*rows, strict=True)
    return pa.table({"kind": pa.array(kind, pa.string()), "field": pa.array(name, pa.string()),
                     "key": pa.array(key, pa.string()),
                     "amount": pa.array([Decimal(a) for a in amount], pa.decimal128(38, 0))})


def _build(job: _Job, preprocessor: Any, events: pa.Table, labels: pa.Table | None) -> pa.Table:
    """One bucket -> its parts (written by the local engine's code) and a row with its counts."""
    bucket = _bucket_of(events, *([labels] if labels is not None else []))
    bucket_job = job.for_bucket(_bucket_labels(job, labels))
    counts = bucket_job.build_events(preprocessor, _bucket_events(job, events), 0, 1, part=bucket)
    record = {"counts": counts, **{name: dict(getattr(bucket_job, name)) for name in COUNTERS}}
    return pa.table({"bucket": pa.array([bucket], pa.int64()), "record": pa.array([json.dumps(record)])})


# --------------------------------------------------------------------------------------------- driver side
def _per_bucket(events: Any, labels: Any, function: Any, schema: str) -> Any:
    """``function(events, labels)`` on each bucket: a cogroup with the labels table when there is one."""
    if labels is None:
        return events.groupBy(BUCKET).applyInArrow(lambda table: function(table, None), schema=schema)
    return events.groupBy(BUCKET).cogroup(labels.groupBy(BUCKET)).applyInArrow(function, schema=schema)


def _statistics(rows: list[Any]) -> tuple[FieldStatistics, FieldStatistics]:
    """(fit, all) statistics from the summed partial rows."""
    fit, everything, moments = FieldStatistics(), FieldStatistics(), ExactMoments()
    parts: dict[str, list[Any]] = {}
    for row in rows:
        kind, name, key = row["kind"], row["field"], row["key"]
        total, low, high = int(row["total"]), int(row["low"]), int(row["high"])
        if kind == "events":
            fit.events = total
        elif kind == "all_events":
            everything.events = total
        elif kind == "min_ts":
            fit.min_ts = low
        elif kind == "max_ts":
            fit.max_ts = high
        elif kind == "all_max_ts":
            everything.max_ts = high
        elif kind == "count":
            fit.value_counts.setdefault(name, Counter())[key] = total
        else:
            entry = parts.setdefault(name, [0, {}, {}])
            if kind == "n":
                entry[0] = total
            else:
                entry[1 if kind == "sum" else 2][int(key)] = total
    for name, (n, sums, squares) in parts.items():
        moments.add(name, n, sums, squares)
    fit.numeric_sums = moments.numeric_sums()
    return fit, everything


def _case_thresholds(job: _Job, events: Any, F: Any) -> list[list[Any] | None]:
    """case-chronological: customers ordered by (first event, id) in Spark; the first validation / test one."""
    first = events.groupBy(CUSTOMER_ID).agg(F.min(F.unix_micros(F.col(TIMESTAMP).cast("timestamp"))).alias("t"))
    first = first.select(F.col("t"), F.col(CUSTOMER_ID).cast("string").alias("c")).cache()
    try:
        n = first.count()
        thresholds: list[list[Any] | None] = []
        for start in job.case_starts(n):
            row = first.orderBy("t", "c").offset(start).limit(1).collect() if start < n else []
            thresholds.append([int(row[0]["t"]), str(row[0]["c"])] if row else None)
    finally:
        first.unpersist()
    return thresholds


def prepare_spark(config: PrepareConfig, *, overwrite: bool = False, progress: bool = True,
                  spark: Any = None) -> PrepareReport:
    """Build the dataset of ``config`` on Spark: the same examples, parts, artifact and manifest as
    :func:`journey_model.data.prepare.prepare`. Uses ``spark``, the running session or a new one
    (:func:`spark_session`)."""
    _, F = _pyspark()
    for path in (config.events_dir, config.out_dir, config.labels_path or ""):
        if "://" in path:
            raise PrepareError(f"{path}: --engine spark reads and writes paths the driver and the executors share "
                               "(a local or mounted folder), not URIs")
    started = time.perf_counter()
    job = _Job(config, overwrite=overwrite, progress=progress)
    if job.finished is not None:
        return PrepareReport(**{k: v for k, v in job.finished.items() if k in PrepareReport.__dataclass_fields__})
    job.output.reset(*(job.out / split for split in SPLITS))  # a Spark job is redone whole, never resumed
    spark = spark_session(config, spark, progress)
    buckets = partition_count(job.files, config.events_per_partition)

    raw = spark.read.parquet(*[str(path) for path in job.files])
    present = [c for c in job.dataset.arrow_schema().names if c in raw.columns]
    raw = raw.select(*present, F.col("_metadata.row_index").alias(ROW), F.col("_metadata.file_name").alias(FILE))
    events_schema = ", ".join([f"`{f.name}` {f.dataType.simpleString()}" for f in raw.schema if f.name != FILE]
                              + [f"`{FILE}` int", f"`{BUCKET}` int"])
    events = raw.mapInArrow(_with_buckets(buckets, [path.name for path in job.files]), schema=events_schema).cache()
    labels = None
    shipped = job.for_bucket(None)  # what the executors get: no labels table (cogrouped instead), no counters
    if job.labels is not None:
        labels_file = job.work / LABELS_FILE
        pq.write_table(job.labels, labels_file)
        table = spark.read.parquet(str(labels_file))
        table = table.select(*table.columns, F.col("_metadata.row_index").alias(ROW))
        labels_schema = ", ".join([f"`{f.name}` {f.dataType.simpleString()}" for f in table.schema]
                                  + [f"`{BUCKET}` int"])
        labels = table.mapInArrow(_with_buckets(buckets, None), schema=labels_schema)
    try:
        if config.split == "case-chronological":
            shipped.case_thresholds = job.case_thresholds = _case_thresholds(job, events, F)

        def partials(events_table: pa.Table, labels_table: pa.Table | None) -> pa.Table:
            return _partials(shipped, _bucket_events(shipped, events_table), _bucket_labels(shipped, labels_table))

        summed = (_per_bucket(events, labels, partials, PARTIALS_DDL).groupBy("kind", "field", "key")
                  .agg(F.sum("amount").alias("total"), F.min("amount").alias("low"), F.max("amount").alias("high"))
                  .collect())
        fit_stats, all_stats = _statistics(summed)
        preprocessor = fit_preprocessor(job, fit_stats, all_stats, file_digest(job.files, with_names=True))

        def build(events_table: pa.Table, labels_table: pa.Table | None) -> pa.Table:
            return _build(shipped, preprocessor, events_table, labels_table)

        built = _per_bucket(events, labels, build, BUILT_DDL).collect()
    finally:
        events.unpersist()
    counts: Counter = Counter()
    done = set()
    for row in built:
        record = json.loads(row["record"])
        counts.update(record["counts"])
        for name in COUNTERS:
            getattr(job, name).update(record[name])
        done.add(int(row["bucket"]))
    empty = job.dataset.arrow_schema().empty_table()
    for bucket in sorted(set(range(buckets)) - done):  # no events and no labels: the local engine's empty parts
        extra = job.for_bucket(job.labels.slice(0, 0) if job.labels is not None else None)
        counts.update(extra.build_events(preprocessor, empty, 0, 1, part=bucket))
    (job.work / LABELS_FILE).unlink(missing_ok=True)
    return finish(job, preprocessor, counts, all_stats.events, buckets, started)


__all__ = ["open_session", "prepare_spark", "spark_session"]

"""`journey prepare --engine spark` on a local Spark session (local[2]) builds what the local engine builds: with
every cut-off strategy and every split, the same examples (row for row, after sorting, in each part), the same parts in the
same split folders, the same manifest counts and the same preprocessing artifact, byte for byte.

The synthetic events are cut into three files with times truncated to the hour, so that many events of a
customer share a time and only the input order (file, then row) breaks the tie, as in the local spill; a few
thousand events per bucket give three buckets. A few labels name customers without events.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from journey_model.data.prepare import MANIFEST_FILE, SPLITS, PrepareConfig, PrepareError, prepare
from journey_model.data.prepare_spark import prepare_spark
from journey_model.data.preprocessing import ARTIFACT_FILE
from journey_model.data.synth import generate

pyspark = pytest.importorskip("pyspark")

DATES = ["2024-06-01", "2024-08-01", "2024-10-01", "2024-11-01"]
CUTOFFS = {  # every cut-off strategy, with what it needs
    "labels": {"cutoff_strategy": "labels", "label_horizon_days": 30},
    "every-event": {"cutoff_strategy": "every-event", "max_examples_per_customer": 12,
                    "horizon_targets": {"closed": ["account_close", 30.0]}},
    "dates": {"cutoff_strategy": "dates", "cutoff_dates": DATES, "horizon_targets": {"closed": ["account_close", 30.0]}},
}
SPLIT_OPTIONS = {"time": {}, "customer": {"seed": 3}, "leave-last-out": {}, "case-chronological": {}}
COUNTS = ("events", "examples", "dropped", "censored_labels", "blanked_targets", "ineligible", "partitions")


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    previous = os.environ.get("PYSPARK_PYTHON")
    os.environ["PYSPARK_PYTHON"] = sys.executable  # executors import journey_model from this environment
    session = (SparkSession.builder.master("local[2]").appName("journey-prepare-tests")
               .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.shuffle.partitions", "4").config("spark.sql.session.timeZone", "UTC")
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
    if previous is None:
        os.environ.pop("PYSPARK_PYTHON", None)
    else:
        os.environ["PYSPARK_PYTHON"] = previous


@pytest.fixture(scope="module")
def events(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("prepare-spark") / "synth"
    generate(folder, customers=300, seed=11, progress=False)
    table = pq.read_table(folder / "events")
    hour = 3_600_000_000
    ts = pc.multiply(pc.divide(table.column("ts").cast(pa.int64()), hour), hour)
    table = table.set_column(table.column_names.index("ts"), "ts", ts.cast(table.schema.field("ts").type))
    for path in (folder / "events").glob("*.parquet"):
        path.unlink()
    for i, rows in enumerate(np.array_split(np.arange(table.num_rows), 3)):
        pq.write_table(table.take(pa.array(rows)), folder / "events" / f"part-{i:05d}.parquet")
    labels = pq.read_table(folder / "labels.parquet")  # and labels of customers without a single event
    strangers = labels.slice(0, 6)
    strangers = strangers.set_column(0, "customer_id", pa.array([f"Z{i:08d}" for i in range(6)], pa.string()))
    pq.write_table(pa.concat_tables([labels, strangers.cast(labels.schema)]), folder / "labels.parquet")
    return folder


def _rows(part: Path) -> list[str]:
    """Every example of a part as text (NaN equals NaN), sorted: customer, cut-off, then the whole row."""
    rows = pq.read_table(part).to_pylist()
    return [repr(row) for row in sorted(rows, key=lambda row: (row["customer_id"], row["cutoff"], repr(row)))]


# Every cut-off strategy twice and every split at least once (leave-last-out and time twice: the per-customer
# purge boundaries and the default split dates differ most between strategies). JOURNEY_SPARK_FULL_MATRIX=1 runs
# the whole 3 x 4 product (it passes too, in twice the time on a 2-core machine).
PAIRS = [("labels", "time"), ("labels", "case-chronological"), ("every-event", "leave-last-out"),
         ("every-event", "time"), ("dates", "customer"), ("dates", "leave-last-out")]
if os.environ.get("JOURNEY_SPARK_FULL_MATRIX") == "1":
    PAIRS = [(cutoffs, split) for cutoffs in CUTOFFS for split in SPLIT_OPTIONS]


@pytest.mark.parametrize(("cutoffs", "split"), PAIRS)
def test_spark_builds_what_the_local_engine_builds(spark, events, tmp_path, cutoffs, split):
    options = {"events_dir": str(events), "out_dir": str(tmp_path / "ds"), "split": split,
               "events_per_partition": 15_000, **CUTOFFS[cutoffs], **SPLIT_OPTIONS[split]}
    local = prepare(PrepareConfig(**options), progress=False)
    shutil.move(tmp_path / "ds", tmp_path / "local")  # the same output path: the artifact records it
    remote = prepare_spark(PrepareConfig(**options, engine="spark"), progress=False, spark=spark)
    ours, theirs = tmp_path / "local", tmp_path / "ds"

    assert local.partitions == remote.partitions == 3
    assert sum(local.examples.values()) > 0
    for name in COUNTS:
        assert getattr(remote, name) == getattr(local, name), name
    assert (theirs / ARTIFACT_FILE).read_bytes() == (ours / ARTIFACT_FILE).read_bytes()
    manifests = [json.loads((folder / MANIFEST_FILE).read_text()) for folder in (ours, theirs)]
    assert manifests[1]["config"]["engine"] == "spark"
    for manifest in manifests:
        manifest["config"].pop("engine")
    for name in (*COUNTS, "config", "artifact_hash", "outcome_names", "fingerprint"):
        assert manifests[1][name] == manifests[0][name], name
    assert sorted(p.name for p in theirs.iterdir()) == sorted(p.name for p in ours.iterdir())  # no _work left
    for name in SPLITS:
        parts = sorted(p.name for p in (ours / name).iterdir())
        assert sorted(p.name for p in (theirs / name).iterdir()) == parts  # part-NNNNN.parquet, N = bucket
        for part in parts:  # a bucket holds the customers of the local partition of the same number
            assert pq.read_schema(theirs / name / part) == pq.read_schema(ours / name / part)
            assert _rows(theirs / name / part) == _rows(ours / name / part), (name, part)

    # a finished dataset is reported again, not rebuilt, by either engine
    again = prepare_spark(PrepareConfig(**options, engine="spark"), progress=False, spark=spark)
    assert again.examples == remote.examples


def test_the_engines_refuse_what_they_cannot_run(events, tmp_path, monkeypatch):
    options = {"events_dir": str(events), "out_dir": str(tmp_path / "ds"), **CUTOFFS["labels"]}
    with pytest.raises(PrepareError, match="prepare_spark"):
        prepare(PrepareConfig(**options, engine="spark"), progress=False)
    with pytest.raises(PrepareError, match="URIs"):
        prepare_spark(PrepareConfig(**{**options, "out_dir": "hdfs:///bank/ds"}, engine="spark"), progress=False)
    with pytest.raises(PrepareError, match="engine 'dask'"):
        PrepareConfig(**options, engine="dask")
    for module in ("pyspark", "pyspark.sql"):
        monkeypatch.setitem(sys.modules, module, None)  # as if the [spark] extra were not installed
    with pytest.raises(PrepareError, match=r"pyspark, which is not installed: install the \[spark\] extra"):
        prepare_spark(PrepareConfig(**options, engine="spark"), progress=False)
    assert not (tmp_path / "ds").exists()

"""`journey prepare` end to end on real Parquet files: splits, purging, resume, vocabularies, the datamodule."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from journey_model.data.features import OOV_ID, PAD_ID
from journey_model.data.prepare import PrepareConfig, PrepareError, _Job, prepare, read_split
from journey_model.data.preprocessing import PreprocessingConfig, Preprocessor, Vocabulary
from journey_model.data.schema import DatasetConfig, SchemaError, conform_table
from journey_model.training.datamodule import (
    JourneyDataModule,
    LengthBucketBatchSampler,
    RankSliceBatchSampler,
)
from pipelines.cli import main as journey

TYPES = np.array(["login", "pay", "fee", "close"])


def write_events(folder: Path, n_events: int = 20_000, n_customers: int = 400, seed: int = 0, parts: int = 2) -> Path:
    """A small random event log with labels over 2024, as canonical Parquet parts."""
    rng = np.random.default_rng(seed)
    dataset = DatasetConfig(
        name="toy",
        behaviours={"login": {"categorical": ["channel"]}, "pay": {"categorical": ["item"], "numeric": ["amount"]}},
    )
    (folder / "events").mkdir(parents=True)
    dataset.save(folder / "dataset.yaml")
    customers = rng.integers(0, n_customers, n_events)
    ts = np.datetime64("2024-01-01", "us") + rng.integers(0, 365 * 86_400 * 10**6, n_events).astype("timedelta64[us]")
    table = conform_table(pa.table({
        "customer_id": pa.array([f"cust{c:04d}" for c in customers]),
        "ts": pa.array(ts),
        "event_type": pa.array(rng.choice(TYPES, n_events, p=[0.5, 0.3, 0.15, 0.05])),
        "event_id": pa.array([f"ev{i}" for i in range(n_events)]),
        "item": pa.array(rng.choice(["grocery", "fuel", "travel", "rare"], n_events, p=[0.5, 0.3, 0.1998, 0.0002])),
        "channel": pa.array(rng.choice(["app", "web"], n_events)),
        "amount": pa.array(rng.lognormal(3, 1, n_events)),
    }), dataset)
    for i, part in enumerate(np.array_split(np.arange(n_events), parts)):
        pq.write_table(table.take(pa.array(part)), folder / "events" / f"part-{i:05d}.parquet")
    cutoffs = np.array(["2024-06-01", "2024-08-01", "2024-10-01", "2024-11-01"], dtype="datetime64[us]")
    label_customers = rng.integers(0, n_customers + 20, 600)  # some customers have no events at all
    pq.write_table(pa.table({
        "customer_id": pa.array([f"cust{c:04d}" for c in label_customers]),
        "cutoff": pa.array(rng.choice(cutoffs, 600)).cast(pa.timestamp("us", tz="UTC")),
        "churn": pa.array(rng.integers(0, 2, 600).astype(np.float64)),
    }), folder / "labels.parquet")
    (folder / "labels.json").write_text(json.dumps({"horizon_days": 30}))
    return folder


def assert_same_rows(left: pa.Table, right: pa.Table) -> None:
    """Tables equal column by column, NaN equal to NaN (missing amounts are NaN by design)."""
    assert left.column_names == right.column_names
    for name in left.column_names:
        a, b = left.column(name).combine_chunks(), right.column(name).combine_chunks()
        if pa.types.is_list(a.type) and pa.types.is_floating(a.type.value_type):
            assert a.offsets.equals(b.offsets), name
            assert np.array_equal(a.flatten().to_numpy(), b.flatten().to_numpy(), equal_nan=True), name
        else:
            assert a.equals(b), name


@pytest.fixture(scope="module")
def events_dir(tmp_path_factory) -> Path:
    return write_events(tmp_path_factory.mktemp("events"))


def _dates_config(events_dir: Path, out: Path, **overrides) -> PrepareConfig:
    settings = dict(
        events_dir=str(events_dir), out_dir=str(out), cutoff_strategy="dates",
        cutoff_dates=["2024-06-01", "2024-08-01", "2024-10-01", "2024-11-01"],
        horizon_targets={"churn": ["close", 30]}, events_per_partition=4_000,
        preprocessing=PreprocessingConfig(max_len=20, min_count=5),
    )
    settings.update(overrides)
    return PrepareConfig(**settings)


def test_out_of_time_split_orders_cutoffs_and_purges_the_future(tmp_path):
    sparse = write_events(tmp_path / "sparse", n_events=2_000, n_customers=400)  # ~70 days between events
    report = prepare(_dates_config(sparse, tmp_path / "ds", events_per_partition=400), progress=False)
    cut = {s: read_split(tmp_path / "ds", s, ["cutoff"]).column("cutoff").to_pylist() for s in ("train", "val", "test")}
    assert max(cut["train"]) < min(cut["val"]) <= max(cut["val"]) < min(cut["test"])
    assert report.partitions == 5 and sum(report.examples.values()) > 0
    val_from = min(cut["val"])
    train = read_split(tmp_path / "ds", "train").to_pylist()
    # No training target depends on the validation period: next events before it, or blanked.
    for row in train:
        assert row["next_event_ts"] is None or row["next_event_ts"] < val_from
        assert (row["next_event_type"] == 0) == (row["next_event_ts"] is None)
    blanked = sum(n for reason, n in report.blanked_targets.items() if reason.startswith("train: next event"))
    assert blanked > 0  # the random log does put next events past the boundary: they were caught
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["examples"] == report.examples
    assert not (tmp_path / "ds" / "_work").exists()


def test_vocabulary_is_fitted_on_the_training_period_only(tmp_path):
    folder = write_events(tmp_path / "ev", n_events=5_000, n_customers=100)
    dataset = DatasetConfig.load(folder / "dataset.yaml")
    # 'late' is frequent but only seen after val_from (2024-10-01); 'seldom' is early but below min_count.
    extra = conform_table(pa.table({
        "customer_id": pa.array(["cust0001"] * 53),
        "ts": pa.array(np.array(["2024-10-15"] * 50 + ["2024-02-01"] * 3, dtype="datetime64[us]")),
        "event_type": pa.array(["pay"] * 53),
        "item": pa.array(["late"] * 50 + ["seldom"] * 3),
    }), dataset)
    pq.write_table(extra, folder / "events" / "part-00009.parquet")
    prepare(_dates_config(folder, tmp_path / "ds"), progress=False)
    artifact = Preprocessor.load(tmp_path / "ds")
    assert artifact.extra["val_from"] is not None
    assert {"grocery", "fuel"} <= set(artifact.vocabularies["item"].tokens)
    assert "late" not in artifact.vocabularies["item"].tokens
    assert "seldom" not in artifact.vocabularies["item"].tokens
    assert artifact.vocabularies["item"].id_of("late") == OOV_ID
    assert artifact.input_hash and len(artifact.input_hash) == 64


def test_labels_cutoffs_account_for_every_label_row(events_dir, tmp_path):
    report = prepare(_dates_config(events_dir, tmp_path / "ds", cutoff_strategy="labels", cutoff_dates=[],
                                   horizon_targets={}), progress=False)
    labels = pq.read_table(events_dir / "labels.parquet")
    assert sum(report.examples.values()) + sum(report.dropped.values()) == labels.num_rows
    assert report.dropped.get("fewer than 1 events before the cut-off", 0) > 0  # customers with no events
    rows = read_split(tmp_path / "ds", "train").to_pylist()
    assert {"y_churn", "next_event_type", "forecast_event_type"} <= set(rows[0])
    artifact = Preprocessor.load(tmp_path / "ds")
    assert artifact.outcome_names == ["churn"]


def test_no_example_of_an_ineligible_customer_reaches_training_or_evaluation(tmp_path):
    """With churn declared only for customers without a 'close' before the cut-off, every label row of a closed
    customer is dropped and counted (churn is the only outcome), and no split holds one."""
    folder = write_events(tmp_path / "events")
    dataset = DatasetConfig.load(folder / "dataset.yaml")
    dataset.outcomes = {"churn": {"eligibility": [{"name": "closed", "exclude_if": {"event_type": "close"}}]}}
    DatasetConfig.from_dict(dataset.to_dict()).save(folder / "dataset.yaml")
    report = prepare(_dates_config(folder, tmp_path / "ds", cutoff_strategy="labels", cutoff_dates=[],
                                   horizon_targets={}), progress=False)

    events = pq.read_table(folder / "events").to_pandas()
    labels = pq.read_table(folder / "labels.parquet").to_pandas()
    pairs = labels.merge(events[["customer_id", "ts", "event_type"]], on="customer_id")
    before = pairs[pairs["ts"] < pairs["cutoff"]]
    closed = before[before["event_type"] == "close"][["customer_id", "cutoff"]].drop_duplicates()
    closed_rows = len(labels.merge(closed))  # label rows (a pair may repeat) of customers closed before the cut-off
    assert closed_rows > 20  # the check below is not vacuous
    assert report.dropped["not eligible for any outcome"] == closed_rows
    assert report.ineligible == {"churn: closed": closed_rows}
    assert json.loads((tmp_path / "ds" / "manifest.json").read_text())["ineligible"] == report.ineligible

    closed_keys = set(zip(closed["customer_id"], closed["cutoff"]))
    for split in ("train", "val", "test"):
        rows = read_split(tmp_path / "ds", split, columns=["customer_id", "cutoff", "ineligible_rule_churn"])
        keys = set(zip(rows.column("customer_id").to_pylist(), rows.column("cutoff").to_pylist()))
        assert not keys & closed_keys, split
        assert rows.column("ineligible_rule_churn").null_count == rows.num_rows


def test_customer_split_keeps_customers_apart(events_dir, tmp_path):
    prepare(_dates_config(events_dir, tmp_path / "ds", split="customer"), progress=False)
    customers = {s: set(read_split(tmp_path / "ds", s, ["customer_id"]).column("customer_id").to_pylist())
                 for s in ("train", "val", "test")}
    assert not customers["train"] & customers["val"] and not customers["train"] & customers["test"]
    assert not customers["val"] & customers["test"] and all(customers.values())


def test_every_event_strategy_predicts_each_next_event(events_dir, tmp_path):
    report = prepare(_dates_config(events_dir, tmp_path / "ds", cutoff_strategy="every-event", cutoff_dates=[],
                                   horizon_targets={}, max_examples_per_customer=10), progress=False)
    rows = read_split(tmp_path / "ds", "test").to_pylist()
    assert rows and all(r["length"] >= 1 for r in rows)
    assert sum(1 for r in rows if r["next_event_type"] > 3) / len(rows) > 0.9
    assert report.dropped["beyond max_examples_per_customer"] > 0


def test_interrupted_prepare_resumes_to_the_same_result(events_dir, tmp_path, monkeypatch):
    reference = prepare(_dates_config(events_dir, tmp_path / "ref"), progress=False)
    original = _Job.build_partition

    def crash_on_third(self, preprocessor, partition, partitions):
        if partition == 2:
            raise KeyboardInterrupt("simulated interruption")
        return original(self, preprocessor, partition, partitions)

    monkeypatch.setattr(_Job, "build_partition", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        prepare(_dates_config(events_dir, tmp_path / "ds"), progress=False)
    assert not (tmp_path / "ds" / "manifest.json").exists()  # no complete-looking output
    with pytest.raises(PrepareError, match="no manifest.json"):
        read_split(tmp_path / "ds", "train")
    monkeypatch.setattr(_Job, "build_partition", original)
    resumed = prepare(_dates_config(events_dir, tmp_path / "ds"), progress=False)
    assert resumed.resumed_partitions == 2
    assert resumed.examples == reference.examples and resumed.dropped == reference.dropped
    for split in ("train", "val", "test"):
        assert_same_rows(read_split(tmp_path / "ds", split), read_split(tmp_path / "ref", split))


def test_complete_output_is_not_overwritten_silently(events_dir, tmp_path):
    first = prepare(_dates_config(events_dir, tmp_path / "ds"), progress=False)
    # the same job again (e.g. rerun after a kill that came after the manifest): reported, nothing redone
    manifest_time = (tmp_path / "ds" / "manifest.json").stat().st_mtime_ns
    again = prepare(_dates_config(events_dir, tmp_path / "ds"), progress=False)
    assert again.examples == first.examples and again.dropped == first.dropped
    assert (tmp_path / "ds" / "manifest.json").stat().st_mtime_ns == manifest_time
    # another config's dataset is replaced only on request
    with pytest.raises(PrepareError, match="already holds a complete prepared dataset of another config"):
        prepare(_dates_config(events_dir, tmp_path / "ds", min_history=2), progress=False)
    prepare(_dates_config(events_dir, tmp_path / "ds", min_history=2), overwrite=True, progress=False)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda t: t.drop_columns(["cutoff"]), "labels table lacks column 'cutoff'"),
        (lambda t: t.set_column(2, "churn", pa.array(["yes"] * t.num_rows)), "target column 'churn' has type string"),
    ],
)
def test_bad_labels_tables_are_named(events_dir, tmp_path, mutate, message):
    labels = tmp_path / "labels.parquet"
    pq.write_table(mutate(pq.read_table(events_dir / "labels.parquet")), labels)
    with pytest.raises(PrepareError, match=message) as error:
        prepare(_dates_config(events_dir, tmp_path / "ds", cutoff_strategy="labels", labels_path=str(labels)),
                progress=False)
    assert str(labels) in str(error.value)


def test_too_few_cutoffs_for_a_default_time_split_is_explained(events_dir, tmp_path):
    with pytest.raises(PrepareError, match="at least 3 distinct cut-off dates"):
        prepare(_dates_config(events_dir, tmp_path / "ds", cutoff_dates=["2024-06-01"]), progress=False)


def test_missing_required_event_column_names_file_and_column(tmp_path):
    folder = write_events(tmp_path / "ev", n_events=200, n_customers=10, parts=1)
    part = folder / "events" / "part-00000.parquet"
    pq.write_table(pq.read_table(part).drop_columns(["event_type"]), part)
    with pytest.raises(SchemaError, match="required column 'event_type' is missing") as error:
        prepare(_dates_config(folder, tmp_path / "ds"), progress=False)
    assert "part-00000.parquet" in str(error.value)


def test_vocabulary_round_trip_and_oov():
    vocab = Vocabulary.from_counts(Counter({"a": 5, "b": 3, "c": 1}), ("<pad>", "<oov>"), min_count=2, max_size=None)
    assert vocab.tokens == ["<pad>", "<oov>", "a", "b"]
    ids = vocab.encode(["a", "b", "c", None, "never"])
    assert ids.tolist() == [2, 3, OOV_ID, PAD_ID, OOV_ID]
    assert vocab.decode(ids[:2]) == ["a", "b"]
    capped = Vocabulary.from_counts(Counter({"a": 5, "b": 3}), ("<pad>", "<oov>"), min_count=1, max_size=1)
    assert capped.tokens == ["<pad>", "<oov>", "a"]


def test_artifact_round_trips_and_refuses_other_versions(events_dir, tmp_path):
    prepare(_dates_config(events_dir, tmp_path / "ds"), progress=False)
    artifact = Preprocessor.load(tmp_path / "ds")
    again = Preprocessor.from_dict(artifact.to_dict())
    assert again.artifact_hash == artifact.artifact_hash
    data = artifact.to_dict() | {"version": 99}
    with pytest.raises(ValueError, match="artifact version 99"):
        Preprocessor.from_dict(data, source="x.json")


def test_datamodule_batches_cover_the_split_with_masks_and_padding(events_dir, tmp_path):
    prepare(_dates_config(events_dir, tmp_path / "ds"), progress=False)
    module = JourneyDataModule(tmp_path / "ds", batch_size=16)
    module.setup()
    seen = []
    for batch in module.train_dataloader():
        assert batch.mask.shape == batch.event_type.shape
        assert torch.equal(batch.mask.sum(1), batch.lengths)
        assert (batch.event_type[~batch.mask] == 0).all() and (batch.time_bucket[batch.mask] > 0).all()
        assert batch.outcomes.shape == (batch.batch_size, 1)
        seen += batch.customer_id
    assert len(seen) == len(module.datasets["train"])
    spec = module.feature_spec
    assert spec.outcome_names == ["churn"] and spec.item_field == "item"
    group_of = {t: g.name for g in spec.behaviour_groups for t in g.event_type_ids}
    assert len(group_of) == spec.event_type_vocab_size - 1  # every id but padding has a group


def test_length_bucketing_reduces_padding_and_shards_for_ddp():
    lengths = np.random.default_rng(0).integers(1, 100, 1000)
    plain = LengthBucketBatchSampler(lengths, 32, bucket_window=0)
    bucketed = LengthBucketBatchSampler(lengths, 32, bucket_window=10)

    def padding(sampler):
        return sum(len(b) * lengths[b].max() - lengths[b].sum() for b in sampler)

    assert padding(bucketed) < 0.3 * padding(plain)
    assert sorted(i for b in bucketed for i in b) == list(range(1000))
    ranks = [list(RankSliceBatchSampler(LengthBucketBatchSampler(lengths, 32), r, 2)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(LengthBucketBatchSampler(lengths, 32))
    assert sorted(i for b in ranks[0] + ranks[1] for i in b) == list(range(1000))
    # A new epoch draws a new order; the same epoch, the same order.
    sampler = LengthBucketBatchSampler(lengths, 32)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first
    sampler.set_epoch(0)
    assert list(sampler) == first


def test_cli_prepare_runs_and_reports(events_dir, tmp_path, capsys):
    code = journey(["-q", "prepare", "--events", str(events_dir), "--out", str(tmp_path / "ds"),
                    "--cutoffs", "2024-06-01,2024-08-01,2024-10-01,2024-11-01", "--target", "churn=close@30"])
    assert code == 0
    assert "prepared" in capsys.readouterr().out
    code = journey(["-q", "prepare", "--events", str(events_dir), "--out", str(tmp_path / "x"), "--target", "oops"])
    assert code == 1
    assert "expected NAME=EVENT_TYPE@DAYS" in capsys.readouterr().err


# --------------------------------------------------------------------------- protocols users compare with
def write_journeys(folder: Path, n_customers: int = 30, n_events: int = 10, tie_last: bool = True) -> Path:
    """Customer k starts on day k and has one event a day; item 'early' before its last two events, 'val_item'
    at the second-last and 'test_item' at the last (the same time as the second-last for even k when
    ``tie_last``: rows in file order, so the second-last comes first)."""
    dataset = DatasetConfig(name="toy", behaviours={"pay": {"categorical": ["item"]}})
    (folder / "events").mkdir(parents=True)
    dataset.save(folder / "dataset.yaml")
    rows = []
    for k in range(n_customers):
        for i in range(n_events):
            day = k + i - (1 if tie_last and k % 2 == 0 and i == n_events - 1 else 0)
            item = "early" if i < n_events - 2 else ("val_item" if i == n_events - 2 else "test_item")
            rows.append((f"c{k:03d}", np.datetime64("2024-01-01", "us") + np.timedelta64(day, "D"), item))
    table = conform_table(pa.table({
        "customer_id": pa.array([r[0] for r in rows]), "ts": pa.array(np.array([r[1] for r in rows])),
        "event_type": pa.array(["pay"] * len(rows)), "item": pa.array([r[2] for r in rows]),
        "event_id": pa.array([f"{r[0]}-{i % n_events}" for i, r in enumerate(rows)]),
    }), dataset)
    pq.write_table(table, folder / "events" / "part-00000.parquet")
    return folder


def _every_event(folder: Path, out: Path, **overrides) -> PrepareConfig:
    return _dates_config(folder, out, cutoff_strategy="every-event", cutoff_dates=[], horizon_targets={},
                         events_per_partition=100, **overrides)


def test_every_event_makes_one_example_per_event_even_at_the_same_time(tmp_path):
    folder = write_journeys(tmp_path / "ev")
    report = prepare(_every_event(folder, tmp_path / "ds", split="customer"), progress=False)
    assert sum(report.examples.values()) + sum(report.dropped.values()) == 300  # one example per event
    assert report.dropped == {"fewer than 1 events before the cut-off": 30}
    rows = pa.concat_tables([read_split(tmp_path / "ds", s) for s in ("train", "val", "test")]).to_pylist()
    tied = [r for r in rows if r["customer_id"] == "c000" and r["length"] >= 8]
    assert [r["length"] for r in tied] == [8, 9]  # the two events of one instant: two examples, in file order
    assert tied[1]["event_id"][-1] == "c000-8" and tied[0]["cutoff"] == tied[1]["cutoff"]


def test_leave_last_out_holds_out_each_customers_last_two_examples(tmp_path):
    folder = write_journeys(tmp_path / "ev")
    report = prepare(_every_event(folder, tmp_path / "ds", split="leave-last-out",
                                  preprocessing=PreprocessingConfig(max_len=20, min_count=5)), progress=False)
    assert report.examples == {"train": 30 * 7, "val": 30, "test": 30}
    artifact = Preprocessor.load(tmp_path / "ds")
    vocabulary = artifact.vocabularies["item"]
    # Fitted on the events before each customer's validation example: no validation or test target shaped it.
    assert "early" in vocabulary.tokens and "val_item" not in vocabulary.tokens and "test_item" not in vocabulary.tokens
    split = {s: read_split(tmp_path / "ds", s).to_pylist() for s in ("train", "val", "test")}
    assert all(r["next_item"] == OOV_ID for r in split["val"] + split["test"])
    assert all(r["next_item"] != OOV_ID for r in split["train"])
    held = {(s, r["customer_id"]): r for s in ("val", "test") for r in split[s]}
    for customer in {r["customer_id"] for r in split["train"]}:
        val, test = held["val", customer], held["test", customer]
        assert (val["length"], test["length"]) == (8, 9)
        assert test["event_id"][-1] == f"{customer}-8"  # the tied validation event is the test example's input
        for row in (r for r in split["train"] if r["customer_id"] == customer):
            assert row["next_event_ts"] is not None and row["next_event_ts"] <= val["cutoff"]
            reaches = row["cutoff"].timestamp() + 30 * 86_400 > val["cutoff"].timestamp()
            assert not (reaches and row["forecast_event_type"])  # purged: the window reaches the validation example
    assert report.blanked_targets["train: forecast window reaches into the val period"] > 0
    assert "train: next event reaches into the val period" not in report.blanked_targets  # ties are not leaks


def test_case_chronological_orders_customers_by_their_first_event(tmp_path):
    folder = write_journeys(tmp_path / "ev", n_customers=40)
    dataset = DatasetConfig.load(folder / "dataset.yaml")
    late = conform_table(pa.table({  # an item only the last-starting customers use: not in the vocabulary
        "customer_id": pa.array(["c039"] * 10), "ts": pa.array(np.array(["2024-03-01"] * 10, dtype="datetime64[us]")),
        "event_type": pa.array(["pay"] * 10), "item": pa.array(["late"] * 10)}), dataset)
    pq.write_table(late, folder / "events" / "part-00001.parquet")
    report = prepare(_every_event(folder, tmp_path / "ds", split="case-chronological", val_fraction=0.25,
                                  test_fraction=0.25), progress=False)
    customers = {s: sorted(set(read_split(tmp_path / "ds", s, ["customer_id"]).column("customer_id").to_pylist()))
                 for s in ("train", "val", "test")}
    assert customers["train"] == [f"c{k:03d}" for k in range(20)]
    assert customers["val"] == [f"c{k:03d}" for k in range(20, 30)]
    assert customers["test"] == [f"c{k:03d}" for k in range(30, 40)]
    assert not report.blanked_targets
    artifact = Preprocessor.load(tmp_path / "ds")
    assert "late" not in artifact.vocabularies["item"].tokens and "test_item" in artifact.vocabularies["item"].tokens
    assert artifact.extra["case_thresholds"][0][1] == "c020"


def test_labels_without_a_known_horizon_are_refused(events_dir, tmp_path):
    labels = tmp_path / "labels.parquet"
    pq.write_table(pq.read_table(events_dir / "labels.parquet"), labels)
    config = dict(cutoff_strategy="labels", cutoff_dates=[], horizon_targets={}, labels_path=str(labels))
    with pytest.raises(PrepareError, match="--label-horizon-days"):
        prepare(_dates_config(events_dir, tmp_path / "ds", **config), progress=False)
    (tmp_path / "synth_report.json").write_text(json.dumps({"horizon_days": 45}))  # a synth folder's own record
    prepare(_dates_config(events_dir, tmp_path / "ds", **config), progress=False)
    assert json.loads((tmp_path / "ds" / "manifest.json").read_text())["config"]["label_horizon_days"] == 45
    report = prepare(_dates_config(events_dir, tmp_path / "ds2", label_horizon_days=0.0, **config), progress=False)
    assert not any("label window" in reason for reason in report.blanked_targets)


def test_case_chronological_resumes_with_the_same_customer_order(tmp_path, monkeypatch):
    folder = write_journeys(tmp_path / "ev", n_customers=40)
    config = dict(split="case-chronological", val_fraction=0.25, test_fraction=0.25)
    reference = prepare(_every_event(folder, tmp_path / "ref", **config), progress=False)
    original = _Job.build_partition

    def crash_on_second(self, preprocessor, partition, partitions):
        if partition == 1:
            raise KeyboardInterrupt("simulated interruption")
        return original(self, preprocessor, partition, partitions)

    monkeypatch.setattr(_Job, "build_partition", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        prepare(_every_event(folder, tmp_path / "ds", **config), progress=False)
    monkeypatch.setattr(_Job, "build_partition", original)
    resumed = prepare(_every_event(folder, tmp_path / "ds", **config), progress=False)
    assert resumed.resumed_partitions == 1 and resumed.examples == reference.examples
    for split in ("train", "val", "test"):
        assert_same_rows(read_split(tmp_path / "ds", split), read_split(tmp_path / "ref", split))


def test_leave_last_out_on_labels_holds_out_each_customers_last_two_cutoffs(tmp_path):
    folder = write_journeys(tmp_path / "ev", tie_last=False)
    cutoffs = np.datetime64("2024-01-01", "us") + np.array([3, 5, 20, 30], dtype="timedelta64[D]")
    labels = pa.table({"customer_id": pa.array([f"c{k:03d}" for k in range(30) for _ in cutoffs]),
                       "cutoff": pa.array(np.tile(cutoffs, 30)).cast(pa.timestamp("us", tz="UTC")),
                       "bought": pa.array(np.ones(120))})
    pq.write_table(labels, folder / "labels.parquet")
    report = prepare(_dates_config(folder, tmp_path / "ds", cutoff_strategy="labels", cutoff_dates=[],
                                   horizon_targets={}, split="leave-last-out", label_horizon_days=12.0,
                                   events_per_partition=100), progress=False)
    split = {s: read_split(tmp_path / "ds", s, ["customer_id", "cutoff", "y_bought"]).to_pandas()
             for s in ("train", "val", "test")}
    assert split["test"].customer_id.is_unique and split["val"].customer_id.is_unique
    assert set(split["test"].cutoff.dt.day) == {31} and set(split["val"].cutoff.dt.day) == {21}
    # Day 5 + 12 days reaches no held-out cut-off; day 20 + 12 reaches the test one: its label is purged.
    assert split["train"].y_bought.notna().all()
    assert report.blanked_targets["val: label window of 'bought' reaches into the test period"] > 0

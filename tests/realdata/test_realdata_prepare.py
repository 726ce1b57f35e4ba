"""Ingest -> prepare on the real data in ../shared/data (skipped with a reason when it is absent).

Berka: an account's transactions before each loan's date, labelled with whether the loan went bad.
Taobao: every behaviour predicts the next one (next behaviour type and next item) on an out-of-time split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from test_realdata_ingest import BERKA_LOANS, BERKA_TRANSACTIONS, TAOBAO, need

from journey_model.data.ingest import ingest
from journey_model.data.prepare import PrepareConfig, prepare, read_split
from journey_model.data.preprocessing import PreprocessingConfig, Preprocessor
from journey_model.training.datamodule import JourneyDataModule

pytestmark = pytest.mark.realdata
CONFIGS = Path(__file__).resolve().parents[2] / "journey_model" / "data" / "mappings"


def test_berka_loans_become_point_in_time_default_examples(tmp_path):
    ingest([need(BERKA_TRANSACTIONS)], CONFIGS / "berka.yaml", tmp_path / "berka", progress=False)
    ingest([need(BERKA_LOANS)], CONFIGS / "berka_loans.yaml", tmp_path / "loans", progress=False)
    report = prepare(PrepareConfig(
        events_dir=str(tmp_path / "berka"), out_dir=str(tmp_path / "ds"), cutoff_strategy="labels",
        labels_path=str(tmp_path / "loans" / "labels.parquet"), split="customer", label_horizon_days=0,
        preprocessing=PreprocessingConfig(max_len=50),
    ), progress=False)
    # Every loan is an example or a counted drop (loans of accounts with no transaction before the loan).
    assert sum(report.examples.values()) + sum(report.dropped.values()) == 682
    assert sum(report.examples.values()) > 100
    rows = read_split(tmp_path / "ds", "train").to_pylist()
    assert {r["y_default"] for r in rows} <= {0.0, 1.0}
    # No transaction on or after the loan date reaches the example.
    events = pq.read_table(tmp_path / "berka" / "events").to_pandas()
    by_id = events.set_index("event_id")["ts"]
    for row in rows[:200]:
        assert all(by_id[e] < row["cutoff"] for e in row["event_id"])


def test_taobao_every_behaviour_predicts_the_next(tmp_path):
    ingest([need(TAOBAO)], CONFIGS / "taobao.yaml", tmp_path / "taobao", progress=False)
    report = prepare(PrepareConfig(
        events_dir=str(tmp_path / "taobao"), out_dir=str(tmp_path / "ds"), cutoff_strategy="every-event",
        max_examples_per_customer=30, split="time", val_from="2017-12-02", test_from="2017-12-03",
        forecast_horizon_days=1.0, preprocessing=PreprocessingConfig(max_len=50, time_unit="hour"),
    ), progress=False)
    assert all(n > 0 for n in report.examples.values())
    artifact = Preprocessor.load(tmp_path / "ds")
    assert {"pv", "cart", "fav", "buy"} <= set(artifact.vocabularies["event_type"].tokens)
    assert "category" in artifact.dataset.categorical_fields
    test = read_split(tmp_path / "ds", "test", ["next_event_type", "next_item", "cutoff"])
    assert (np.asarray(test.column("next_event_type")) > 3).mean() > 0.95
    module = JourneyDataModule(tmp_path / "ds", batch_size=32)
    module.setup()
    batch = next(iter(module.test_dataloader()))
    assert batch.next_item is not None and batch.categorical["category"].shape == batch.event_type.shape

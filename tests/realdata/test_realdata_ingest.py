"""Ingest of the real data sets in ../shared/data (Berka Czech bank, Taobao UserBehavior) with the built-in
mappings; skipped when the data folder is absent. Locate it with JOURNEY_SHARED_DATA to override."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from journey_model.data.ingest import REPORT_FILE, IngestReport, ingest
from journey_model.data.schema import DatasetConfig

pytestmark = pytest.mark.realdata

SHARED_DATA = Path(os.environ.get("JOURNEY_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
BERKA_TRANSACTIONS = SHARED_DATA / "berka" / "trans_PARTIAL_first3MiB.asc"
BERKA_LOANS = SHARED_DATA / "berka" / "loan.asc"
TAOBAO = SHARED_DATA / "taobao_userbehavior" / "UserBehavior_first_users.csv"


def need(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"real data file {path} is absent (set JOURNEY_SHARED_DATA to the shared data folder)")
    return path


def assert_every_row_accounted_for(report: IngestReport, out: Path) -> None:
    assert report.rows_read == report.rows_written + report.rows_rejected
    assert sum(report.rejects_by_reason.values()) == report.rows_rejected
    if report.rows_rejected:
        rejects = pq.read_table(out / "rejects")
        assert rejects.num_rows == report.rows_rejected
        assert rejects.column("reason").null_count == 0
    assert IngestReport.load(out / REPORT_FILE).rows_written == report.rows_written


def test_berka_transactions(tmp_path: Path) -> None:
    out = tmp_path / "berka"
    report = ingest([need(BERKA_TRANSACTIONS)], "berka", out, progress=False)
    print(f"\nberka transactions: {report.rows_per_second:,.0f} rows/s")
    assert report.rows_read == 49_102 and report.rows_written == 49_102
    assert_every_row_accounted_for(report, out)
    config = DatasetConfig.load(out / "dataset.yaml")
    events = pq.read_table(out / "events")
    assert events.schema == config.arrow_schema()
    frame = events.to_pandas()
    assert frame.customer_id.nunique() == 1_229
    assert str(frame.ts.min()) == "1992-12-31 23:00:00+00:00"  # 1993-01-01 in Prague
    assert frame.ts.max() < pd.Timestamp("1994-04-01", tz="Europe/Prague")
    assert set(frame.event_type) == set(config.behaviours)  # every type declared, none left unmapped
    assert report.warnings == []
    assert report.event_types["cash_deposit"] == 9_759 and report.event_types["statement_fee"] == 5_445
    debits = frame.event_type.isin(["cash_withdrawal", "card_withdrawal", "outgoing_transfer", "statement_fee",
                                    "penalty_interest"])
    assert (frame.amount[debits] < 0).all() and (frame.amount[~debits] > 0).all()
    # the sign convention agrees with the bank's balances: where an account has one posting on a day and
    # one on its previous posting day, previous balance + signed amount = balance
    frame = frame.sort_values(["customer_id", "ts"], kind="stable")
    per_day = frame.groupby(["customer_id", "ts"]).amount.transform("size")
    previous_balance = frame.groupby("customer_id").balance.shift()
    previous_single = per_day.groupby(frame.customer_id).shift() == 1
    single = (per_day == 1) & previous_single
    consistent = ((previous_balance + frame.amount - frame.balance).abs() < 0.5)[single]
    assert single.sum() > 20_000 and consistent.mean() > 0.99
    assert set(frame.item.dropna()) == {"insurance", "statement_fee", "interest", "penalty_interest", "household",
                                        "pension", "loan_payment"}
    assert frame.partner_bank.dropna().str.fullmatch(r"[A-Z]{2}").all()


def test_berka_loans_labels(tmp_path: Path) -> None:
    out = tmp_path / "loans"
    report = ingest([need(BERKA_LOANS)], "berka_loans", out, progress=False)
    assert_every_row_accounted_for(report, out)
    labels = pq.read_table(out / "labels.parquet").to_pandas()
    assert len(labels) == 682 == report.rows_written and labels.customer_id.is_unique
    assert labels["default"].sum() == 76 and labels["default"].notna().all()
    assert report.label_counts == {"default": {"positive": 76, "negative": 606, "unknown": 0}}
    assert labels.cutoff.min() == pd.Timestamp("1993-07-05", tz="Europe/Prague")


def test_taobao_user_behavior(tmp_path: Path) -> None:
    out = tmp_path / "taobao"
    report = ingest([need(TAOBAO)], "taobao", out, progress=False)
    print(f"\ntaobao: {report.rows_per_second:,.0f} rows/s")
    assert report.rows_read == 84_287 and report.rows_written == 84_287
    assert_every_row_accounted_for(report, out)
    frame = pq.read_table(out / "events").to_pandas()
    assert frame.customer_id.nunique() == 814
    assert frame.item.nunique() == 55_233 and frame.category.nunique() == 2_911
    assert report.event_types == {"pv": 75_693, "cart": 4_494, "fav": 2_351, "buy": 1_749}
    assert frame.ts.min() >= pd.Timestamp("2017-09-11", tz="UTC")
    assert frame.ts.max() < pd.Timestamp("2017-12-04", tz="Asia/Shanghai")
    first = frame.iloc[0]
    assert (first.customer_id, first["item"], first.category) == ("1", "2268318", "2520377")
    assert first.ts == pd.Timestamp(1511544070, unit="s", tz="UTC")

"""Tests of ``journey synth`` (journey_model.data.synth): layout, determinism, labels, ground truth, order
matters, and the checks of profiles.yaml."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from journey_model.data import synth
from journey_model.data.schema import DatasetConfig
from journey_model.data.synth import profiles, rules, writer

CUSTOMERS = 2000
SEED = 7
DAY = pd.Timedelta(days=1)


def _read(out: Path) -> dict[str, pd.DataFrame]:
    return {
        "events": pq.read_table(out / "events").to_pandas(),
        "labels": pq.read_table(out / "labels.parquet").to_pandas(),
        "truth": pq.read_table(out / "ground_truth.parquet").to_pandas(),
    }


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bank")
    report = synth.generate(out, CUSTOMERS, seed=SEED, chunk_customers=800, progress=False)
    return {"out": out, "report": report, **_read(out)}


def _events_of(bank: dict) -> pd.DataFrame:
    return bank["events"].set_index("event_id", drop=False)


# ------------------------------------------------------------------------------------- layout & schema
def test_writes_the_canonical_folder_with_a_conforming_schema(bank: dict) -> None:
    out, report = bank["out"], bank["report"]
    config = DatasetConfig.load(synth.CONFIG_PATH)
    assert DatasetConfig.load(out / "dataset.yaml") == config
    parts = sorted((out / "events").glob("part-*.parquet"))
    assert [p.name for p in parts] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert not list(out.rglob(".*.tmp")), "temporary files left behind"
    seen_customers: set[str] = set()
    for part in parts:
        table = pq.read_table(part)
        assert table.schema.equals(config.arrow_schema()), part
        frame = table.to_pandas()
        customers = set(frame["customer_id"])
        assert not customers & seen_customers, "a customer is split across parts"
        seen_customers |= customers
        ordered = frame.sort_values(["customer_id", "ts"], kind="stable")
        assert (ordered.index == frame.index).all(), f"{part.name} is not sorted by (customer_id, ts)"
    assert len(seen_customers) == CUSTOMERS == report.customers
    saved = json.loads((out / "synth_report.json").read_text())
    assert saved["events"] == report.events == len(bank["events"])
    assert saved["label_counts"] == report.label_counts
    assert "customers" in report.summary() and f"{CUSTOMERS:,}" in report.summary()


def test_event_ids_are_unique_and_fields_follow_the_behaviours(bank: dict) -> None:
    events = bank["events"]
    assert events["event_id"].is_unique
    assert events["event_id"].str.fullmatch(r"C\d{8}-\d{5}").all()
    assert (events["event_id"].str[:9] == events["customer_id"]).all()
    assert set(events["event_type"]) == set(synth.EVENT_TYPES)
    config = DatasetConfig.load(synth.CONFIG_PATH)
    for event_type, rows in events.groupby("event_type"):
        categorical, numeric = config.fields_of(event_type)
        for name in config.categorical_fields + config.numeric_fields:
            carried = name in categorical or name in numeric
            if not carried:
                assert rows[name].isna().all(), f"{event_type} has values in {name}, which it does not carry"
        if "amount" in numeric:
            assert (rows["amount"] > 0).all(), f"{event_type} amounts must be positive"


def test_behaviour_looks_like_a_retail_bank(bank: dict) -> None:
    events, report = bank["events"], bank["report"]
    per_customer = report.events / report.customers  # the window is 12 months
    assert 60 <= per_customer <= 150
    logins = events[events["event_type"] == "login"]
    weekday_counts = logins["ts"].dt.dayofweek.value_counts()
    assert weekday_counts[4] > 1.2 * weekday_counts[5], "Friday logins should outnumber Saturday logins"
    night = logins["ts"].dt.hour.isin([2, 3, 4]).mean()
    evening = logins["ts"].dt.hour.isin([19, 20, 21]).mean()
    assert evening > 4 * night
    cards = events[events["event_type"] == "card_payment"].groupby("item")["amount"].median()
    assert cards["travel"] > cards["groceries"] > cards["transport"]
    salary = events[events["event_type"] == "salary"].sort_values(["customer_id", "ts"])
    assert salary.groupby("customer_id").size().max() <= 12
    gaps = salary.groupby("customer_id")["ts"].diff().dropna() / DAY
    assert 28 <= gaps.median() <= 32, "salaries are paid monthly"
    assert gaps.between(25, 35).mean() > 0.9, "paydays move at most a weekend; gaps are rare"


# ------------------------------------------------------------------------------------------ determinism
def test_same_seed_gives_byte_identical_output(bank: dict, tmp_path: Path) -> None:
    synth.generate(tmp_path, CUSTOMERS, seed=SEED, chunk_customers=800, progress=False)
    for name in ["events/part-00000.parquet", "events/part-00001.parquet", "events/part-00002.parquet"]:
        assert (tmp_path / name).read_bytes() == (bank["out"] / name).read_bytes(), name
    for name in ["labels.parquet", "ground_truth.parquet"]:
        assert pq.read_table(tmp_path / name).equals(pq.read_table(bank["out"] / name)), name


def test_chunk_size_moves_part_boundaries_but_not_content(
    bank: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer, "ROW_GROUP_EVENTS", 1)  # a row group per block slice: parts span several
    report = synth.generate(tmp_path, CUSTOMERS, seed=SEED, chunk_customers=1100, progress=False)
    assert report.parts == 2 == len(list((tmp_path / "events").glob("part-*.parquet")))
    assert pq.ParquetFile(tmp_path / "events" / "part-00000.parquet").num_row_groups > 1
    other = _read(tmp_path)
    for key in ("events", "labels", "truth"):
        pd.testing.assert_frame_equal(other[key], bank[key])


def test_fewer_customers_give_a_prefix_of_the_same_population(bank: dict, tmp_path: Path) -> None:
    synth.generate(tmp_path, 300, seed=SEED, progress=False)
    small = _read(tmp_path)
    first = sorted(bank["labels"]["customer_id"])[:300]
    pd.testing.assert_frame_equal(small["labels"], bank["labels"].iloc[:300])
    prefix = bank["events"][bank["events"]["customer_id"].isin(first)].reset_index(drop=True)
    pd.testing.assert_frame_equal(small["events"], prefix)


def test_different_seeds_give_different_data(bank: dict, tmp_path: Path) -> None:
    synth.generate(tmp_path, 300, seed=SEED + 1, progress=False)
    other = pq.read_table(tmp_path / "events").to_pandas()
    mine = bank["events"][bank["events"]["customer_id"].isin(set(other["customer_id"]))]
    assert len(other) != len(mine) or not other["ts"].reset_index(drop=True).equals(
        mine["ts"].reset_index(drop=True)
    )
    assert not np.array_equal(
        pq.read_table(tmp_path / "labels.parquet").column("cutoff").to_numpy(),
        bank["labels"]["cutoff"].iloc[:300].to_numpy(),
    )


# ------------------------------------------------------------------------------------------------ labels
def test_labels_have_sensible_rates_and_monthly_cutoffs(bank: dict) -> None:
    labels = bank["labels"]
    schema = pq.read_schema(bank["out"] / "labels.parquet")
    assert schema.field("cutoff").type == pa.timestamp("us", tz="UTC")
    assert schema.field("customer_id").type == pa.string()
    assert labels["customer_id"].is_unique and len(labels) == CUSTOMERS
    cutoffs = sorted(labels["cutoff"].unique())
    assert (
        [c.strftime("%Y-%m-%d") for c in cutoffs]
        == bank["report"].cutoffs
        == [
            "2024-07-01",
            "2024-08-01",
            "2024-09-01",
            "2024-10-01",
            "2024-11-01",
        ]
    )
    assert labels["cutoff"].value_counts().min() > 0.1 * CUSTOMERS
    for target in rules.TARGETS:
        assert set(labels[target].unique()) <= {0.0, 1.0}
        assert 0.05 <= labels[target].mean() <= 0.25, target


def test_labels_are_the_outcome_events_inside_the_horizon(bank: dict) -> None:
    events, labels = bank["events"], bank["labels"].set_index("customer_id")
    frame = events.join(labels["cutoff"], on="customer_id")
    inside = (frame["ts"] > frame["cutoff"]) & (frame["ts"] <= frame["cutoff"] + rules.HORIZON_DAYS * DAY)
    for target, outcome in rules.OUTCOME_EVENT.items():
        hit = set(frame.loc[inside & (frame["event_type"] == outcome), "customer_id"])
        expected = set(labels.index[labels[target] == 1])
        assert hit == expected, target


def test_nothing_happens_after_an_account_closes(bank: dict) -> None:
    events = bank["events"]
    closes = events[events["event_type"] == "account_close"].groupby("customer_id")["ts"].max()
    assert len(closes) > 0
    last = events.groupby("customer_id")["ts"].max()
    assert (last[closes.index] == closes).all()
    assert events[events["event_type"] == "account_close"].groupby("customer_id").size().max() == 1


# ------------------------------------------------------------------------------------------ ground truth
def _truth_events(bank: dict, target: str, rule: str) -> list[tuple[pd.Series, pd.DataFrame]]:
    events = _events_of(bank)
    truth = bank["truth"]
    rows = truth[(truth["target"] == target) & (truth["rule"] == rule)]
    assert len(rows) > 20, f"too few {rule} rows"
    return [(row, events.loc[list(row["event_ids"])].sort_values("ts")) for _, row in rows.iterrows()]


def test_ground_truth_event_ids_exist_and_precede_the_cutoff(bank: dict) -> None:
    events = _events_of(bank)
    truth = bank["truth"]
    labels = bank["labels"].set_index("customer_id")
    assert truth.groupby(["customer_id", "target"]).size().max() == 1
    ids = [i for ids in truth["event_ids"] for i in ids]
    assert set(ids) <= set(events.index)
    found = events.loc[ids]
    cutoff = truth.explode("event_ids").dropna(subset=["event_ids"]).set_index("event_ids")["cutoff"]
    assert (found["ts"] < cutoff.loc[found.index]).all()
    owners = truth.explode("event_ids").dropna(subset=["event_ids"])
    assert (
        events.loc[owners["event_ids"], "customer_id"].to_numpy() == owners["customer_id"].to_numpy()
    ).all()
    # every labelled positive has exactly one explaining row; causes/decoys carry their events
    for target in rules.TARGETS:
        rows = truth[truth["target"] == target].set_index("customer_id")
        positives = labels.index[labels[target] == 1]
        assert set(positives) <= set(rows.index)
        assert (rows.loc[positives, "label"] == 1).all()
        assert set(rows.loc[positives, "role"]) <= {"cause", "noise"}
        assert (rows.loc[rows["role"] == "noise", "event_ids"].map(len) == 0).all()
        assert (rows.loc[rows["role"] != "noise", "event_ids"].map(len) > 0).all()
        assert (rows.loc[rows["role"] == "decoy", "label"] == 0).all()
        cause = rows[rows["role"] == "cause"]
        assert 0.9 <= cause["label"].mean() < 1.0, "causes yield their outcome up to a few % label noise"


def test_churn_causes_are_a_complaint_then_a_fee_within_14_days(bank: dict) -> None:
    for row, planted in _truth_events(bank, "churn", rules.CHURN_RULE):
        assert list(planted["event_type"]) == ["complaint", "fee"]
        gap = planted["ts"].iloc[1] - planted["ts"].iloc[0]
        assert pd.Timedelta(0) < gap <= 14 * DAY
        assert row["cutoff"] - planted["ts"].iloc[1] <= rules.CHURN_ORACLE_FEE_RECENT_DAYS * DAY


def test_default_causes_are_salary_stop_then_rising_risky_spend_then_a_missed_payment(bank: dict) -> None:
    for row, planted in _truth_events(bank, "default", rules.DEFAULT_RULE):
        kinds = list(planted["event_type"])
        assert kinds[0] == "salary" and kinds[-1] == "missed_payment"
        risky = planted[planted["event_type"] == "card_payment"]
        assert len(risky) >= 4 and set(risky["item"]) <= set(rules.DEFAULT_RISKY_MERCHANTS)
        assert risky["amount"].iloc[-1] > risky["amount"].iloc[0]
        assert kinds[1:-1] == ["card_payment"] * len(risky)
        assert row["cutoff"] - planted["ts"].iloc[0] >= rules.DEFAULT_SALARY_STOP_DAYS[0] * DAY


def test_uptake_causes_are_a_recent_burst_of_views_of_the_applied_product(bank: dict) -> None:
    events = bank["events"]
    applications = events[events["event_type"] == "product_application"]
    for row, planted in _truth_events(bank, "uptake", rules.UPTAKE_RULE):
        assert set(planted["event_type"]) == {"product_view"} and len(planted) >= 3
        assert set(planted["item"]) == {row["product"]}
        assert planted["ts"].iloc[-1] - planted["ts"].iloc[0] <= rules.UPTAKE_BURST_DAYS * DAY
        assert row["cutoff"] - planted["ts"].iloc[-1] <= rules.UPTAKE_RECENT_DAYS * DAY
        if row["label"] == 1:
            mine = applications[
                (applications["customer_id"] == row["customer_id"]) & (applications["ts"] > row["cutoff"])
            ]
            assert row["product"] in set(mine["item"])


def test_decoys_are_common_and_break_order_or_timing(bank: dict) -> None:
    for target in rules.TARGETS:
        for decoy in rules.DECOYS[target]:
            assert bank["report"].ground_truth_rows[decoy] > 0.04 * CUSTOMERS, decoy
    for _, planted in _truth_events(bank, "churn", "churn_decoy_fee_before_complaint"):
        assert list(planted["event_type"]) == ["fee", "complaint"]
    for _, planted in _truth_events(bank, "churn", "churn_decoy_late_fee"):
        assert list(planted["event_type"]) == ["complaint", "fee"]
        assert planted["ts"].iloc[1] - planted["ts"].iloc[0] > 14 * DAY
    for _, planted in _truth_events(bank, "default", "default_decoy_wrong_order"):
        assert list(planted["event_type"])[-1] == "salary"
    for row, planted in _truth_events(bank, "uptake", "uptake_decoy_old_burst"):
        assert row["cutoff"] - planted["ts"].iloc[-1] > rules.UPTAKE_RECENT_DAYS * DAY
    for _, planted in _truth_events(bank, "uptake", "uptake_decoy_spread_views"):
        times = planted["ts"].to_numpy()
        assert (times[2:] - times[:-2] > np.timedelta64(10, "D")).all()


# --------------------------------------------------------------------------------------- order matters
def _auc(y: np.ndarray, score: np.ndarray) -> float:
    ranks = pd.Series(score).rank().to_numpy()
    positives = y.sum()
    negatives = len(y) - positives
    return float((ranks[y == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def _fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2) -> np.ndarray:
    """Newton's method for an L2-regularised logistic regression (weights incl. intercept)."""
    x = np.c_[np.ones(len(x)), x]
    w = np.zeros(x.shape[1])
    for _ in range(25):
        p = 1 / (1 + np.exp(-x @ w))
        gradient = x.T @ (p - y) + l2 * w
        hessian = (x * (p * (1 - p))[:, None]).T @ x + l2 * np.eye(len(w))
        w -= np.linalg.solve(hessian, gradient)
    return w


@pytest.fixture(scope="module")
def oracle(bank: dict) -> pd.DataFrame:
    return rules.oracle_labels(bank["events"], bank["labels"])


@pytest.mark.parametrize("target", rules.TARGETS)
def test_order_aware_oracle_beats_a_bag_of_event_counts(
    bank: dict, oracle: pd.DataFrame, target: str
) -> None:
    labels = bank["labels"].set_index("customer_id")
    events = bank["events"].join(labels["cutoff"], on="customer_id")
    before = events[events["ts"] < events["cutoff"]]
    counts = before.groupby(["customer_id", "event_type"]).size().unstack(fill_value=0)
    counts = counts.reindex(labels.index, fill_value=0)
    x = np.log1p(counts.to_numpy(float))
    x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-9)
    y = labels[target].to_numpy()
    weights = _fit_logistic(x, y)
    count_auc = _auc(y, np.c_[np.ones(len(x)), x] @ weights)  # in-sample: flattering to the count model
    verdict = oracle[target].reindex(labels.index).to_numpy()
    oracle_auc = _auc(y, verdict.astype(float))
    assert (verdict == y).mean() >= 0.95, "the oracle should reproduce the labels up to label noise"
    assert oracle_auc >= 0.85
    assert oracle_auc - count_auc >= 0.12, f"{target}: oracle {oracle_auc:.3f} vs counts {count_auc:.3f}"


# ---------------------------------------------------------------------------------------------- errors
def test_bad_arguments_are_rejected_with_a_clear_message(tmp_path: Path) -> None:
    with pytest.raises(synth.SynthError, match="first day of a month"):
        synth.generate(tmp_path, 10, start="2024-01-15", progress=False)
    with pytest.raises(synth.SynthError, match="not an ISO date"):
        synth.generate(tmp_path, 10, start="January", progress=False)
    with pytest.raises(synth.SynthError, match="months must be between 12"):
        synth.generate(tmp_path, 10, months=6, progress=False)
    with pytest.raises(synth.SynthError, match="customers must be between 1"):
        synth.generate(tmp_path, 0, progress=False)
    with pytest.raises(synth.SynthError, match="seed must be an integer"):
        synth.generate(tmp_path, 10, seed=1.5, progress=False)  # type: ignore[arg-type]


def test_refuses_to_overwrite_a_foreign_event_folder(tmp_path: Path) -> None:
    (tmp_path / "events").mkdir()
    foreign = tmp_path / "events" / "part-00000.parquet"
    pq.write_table(pa.table({"x": [1]}), foreign)
    with pytest.raises(synth.SynthError, match=re.escape(str(tmp_path / "events"))):
        synth.generate(tmp_path, 10, progress=False)
    assert foreign.exists()


def test_rerun_replaces_a_previous_synth_output(tmp_path: Path) -> None:
    synth.generate(tmp_path, 300, seed=1, chunk_customers=100, progress=False)
    assert len(list((tmp_path / "events").glob("part-*.parquet"))) == 3
    report = synth.generate(tmp_path, 300, seed=1, chunk_customers=300, progress=False)
    assert [p.name for p in (tmp_path / "events").glob("part-*.parquet")] == ["part-00000.parquet"]
    assert report.replaced_files == 3 + 3  # three parts, labels, ground truth and the report
    assert pq.read_table(tmp_path / "events").num_rows == report.events


# -------------------------------------------------------------------------------------- profiles.yaml
def test_the_bank_profiles_load_in_file_order() -> None:
    loaded = profiles.load_profiles()
    assert [segment.name for segment in loaded.segments] == ["mass", "affluent", "student", "sme", "retired"]
    assert sum(segment.share for segment in loaded.segments) == pytest.approx(1.0)
    assert loaded.merchants.names[-2:] == rules.DEFAULT_RISKY_MERCHANTS
    assert len(set(loaded.items)) == len(loaded.items)
    for kinds in (loaded.merchants, loaded.products, loaded.fees, loaded.close_reasons):
        assert [loaded.items[code] for code in kinds.codes] == list(kinds.names)
    assert loaded.login.hours.shape == (24,) and loaded.office.weekdays.shape == (7,)
    assert loaded.merchants.median.dtype == np.float64 and loaded.population.paydays.dtype == np.int64


MALFORMED = [  # (text in profiles.yaml, its replacement, the error after the file's path)
    ("share: 0.55", "share: abc", "segments.mass.share: expected a number, got 'abc'"),
    ("share: 0.55", "shares: 0.55", "segments.mass: missing key 'share'"),
    ("calls_per_year: 1.0\n", "calls_per_year: 1.0\n    fee_factor: 2.0\n", "segments.mass: unknown key 'fee_factor'"),
    ("{family: 0.15, p2p_in: 0.6,", "{family: 0.15, p2p: 0.6,", "segments.mass.transfer_in_mix: unknown name 'p2p'"),
    ("standing_order: rent", "standing_order: rents", "segments.mass.standing_order: expected one of rent,"),
    ("ios_share: 0.45", "ios_share: 1.45", "population.ios_share: a share must be at most 1"),
    ("risky_substitution: 0.8", "risky_substitution: 8e-1", "scenarios.risky_substitution: expected a number"),
    ("churn_cause: 0.09", "churn_cause: 0.8", "scenarios: churn: the cause and its 3 decoys take"),
    ("  gambling: ", "  gamble: ", "merchants: missing gambling"),
    ("[1, 1, 1, 1, 1, 0.25, 0.1]", "[1, 1, 1]", "rhythms.office.weekdays: expected a list of 7 numbers"),
    ("products: [savings_account,", "products: [fees, savings_account,", "item vocabularies share the name(s) fees"),
]


@pytest.mark.parametrize(("old", "new", "message"), MALFORMED)
def test_a_malformed_profiles_file_is_rejected_naming_the_key(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    text = profiles.PROFILES_PATH.read_text()
    assert old in text, old
    path = tmp_path / "profiles.yaml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(synth.SynthError, match=re.escape(f"{path}: {message}")):
        profiles.load_profiles(path)

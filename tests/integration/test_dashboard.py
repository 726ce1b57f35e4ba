"""`journey dashboard`, headless: the Streamlit app run by ``AppTest`` over a small workdir, and its queries.

The workdir (:func:`dashboard_workdir.build_workdir`) holds a tiny real model registered as champion in its own
MLflow store and batch-scored at two cut-offs, 400 synthetic customers, some of them ineligible for every
outcome (their account closed): what `journey demo` leaves, only smaller.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dashboard_workdir import CUTOFFS, DATA_HASH, build_workdir
from streamlit.testing.v1 import AppTest

from dashboard.config import DashboardConfig
from dashboard.data import SCORES_MANIFEST, Filters, ScoreStore, find_scoring_runs, reasons_sentence, text_for
from dashboard.launch import streamlit_command
from journey_model.inference.batch_scoring import MANIFEST_FILE

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    base = tmp_path_factory.getbasetemp()
    return build_workdir(base / "dashboard_work", base / "tiny_journey_model")


@pytest.fixture(scope="module")
def scores(workdir) -> pd.DataFrame:
    """The later run's scores, read directly (what the dashboard must agree with)."""
    return pq.read_table(workdir / "scores").to_pandas()


@pytest.fixture
def app(workdir, monkeypatch):
    monkeypatch.setenv("JOURNEY_DASHBOARD_WORKDIR", str(workdir))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the workdir's own registry
    return AppTest.from_file(str(APP), default_timeout=180)


def no_errors(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def expected_reasons(row: pd.Series, outcome: str) -> str:
    """What the ranked list should say: the outcome's reason codes where scored with them, else event groups."""
    codes = [r for r in (list(row["reason_codes"]) if "reason_codes" in row else []) if r["task"] == outcome]
    if codes:
        return "; ".join(f"{r['sentence']} ({r['code']})" for r in codes)
    return reasons_sentence(list(row["top_reasons"]), outcome)


def ranked_frame(at: AppTest) -> pd.DataFrame:
    return next(d.value for d in at.dataframe if "customer_id" in d.value.columns and "rank" in d.value.columns)


def test_the_dashboard_reads_the_manifest_batch_scoring_writes(workdir):
    assert SCORES_MANIFEST == MANIFEST_FILE
    runs = find_scoring_runs(workdir)
    assert [r.path.name for r in runs] == list(CUTOFFS)  # oldest cut-off first
    assert [r.cutoff for r in runs] == [pd.Timestamp(c, tz="UTC") for c in CUTOFFS.values()]


def test_portfolio_ranks_eligible_customers_only_with_their_reasons(app, scores):
    at = app.run()
    no_errors(at)
    metrics = {m.label: m.value for m in at.metric}
    ineligible = set(scores.loc[scores["p_churn"].isna(), "customer_id"])
    assert ineligible, "the fixture should hold customers outside the churn population"
    assert metrics["Scored customers"] == f"{len(scores):,}"
    assert metrics["Eligible for churn"] == f"{len(scores) - len(ineligible):,}"
    assert metrics["Flagged at the operating point"] == f"{int(scores['flag_churn'].sum()):,}"

    ranked = ranked_frame(at)
    assert len(ranked) == 50 and not set(ranked["customer_id"]) & ineligible
    assert ranked["score"].is_monotonic_decreasing
    expected = scores.dropna(subset=["p_churn"]).sort_values(["p_churn", "customer_id"], ascending=[False, True])
    assert list(ranked["customer_id"]) == list(expected["customer_id"].head(50))
    top = expected.iloc[0]
    assert ranked.iloc[0]["reasons"] == expected_reasons(top, "churn")
    assert bool(ranked.iloc[0]["flag"]) == bool(top["flag_churn"])
    assert at.get("vega_lite_chart"), "no score distribution drawn"
    rules = next(d.value for d in at.dataframe if "rule" in d.value.columns)
    assert dict(zip(rules["rule"], rules["customers"], strict=True)) == {"account_closed": len(ineligible)}


def test_portfolio_filters_narrow_the_list_and_the_export(app, workdir, scores):
    at = app.run()
    at.sidebar.multiselect(key="filter_channel").set_value(["web"]).run()
    at.sidebar.slider(key="min_score").set_value(0.2).run()
    no_errors(at)
    ranked = ranked_frame(at)
    assert len(ranked) and set(ranked["channel"]) == {"web"} and (ranked["score"] >= 0.2).all()

    store = ScoreStore(workdir)
    filters = Filters({"channel": ["web"]}, 0.2)
    exported = pd.read_csv(io.BytesIO(store.ranked_csv(1, "churn", filters)))
    assert len(exported) == store.portfolio(1, "churn", filters).selected >= len(ranked)
    assert list(exported["customer_id"].head(len(ranked))) == list(ranked["customer_id"])
    assert set(exported["channel"]) == {"web"} and (exported["score"] >= 0.2).all()
    assert exported["customer_id"].isin(scores.loc[scores["p_churn"].notna(), "customer_id"]).all()


def test_ranked_list_reads_a_reasons_string_when_scores_have_no_reason_codes(tmp_path):
    """Scores with only the readable string column (no reason_codes): the list shows the outcome's part."""
    run = tmp_path / "scores"
    run.mkdir()
    pq.write_table(pa.table({
        "customer_id": ["A", "B", "C"],
        "cutoff": pa.array([0, 0, 0], pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "n_events": pa.array([5, 7, 9], pa.int32()),
        "p_churn": pa.array([0.2, None, 0.6]),
        "reasons": ["churn: FEE — a fee | default: LATE — late", None, "default: X — x | churn: COMPLAINT — a complaint"],
    }), run / "part-00000.parquet")
    (run / SCORES_MANIFEST).write_text(json.dumps({"cutoff": "1970-01-01T00:00:00Z", "model_name": "m",
                                                   "model_version": "1", "config": {}}))
    ranked = ScoreStore(tmp_path).ranked(0, "churn")
    assert list(ranked["customer_id"]) == ["C", "A"]
    assert list(ranked["reasons"]) == ["COMPLAINT — a complaint", "FEE — a fee"]
    assert text_for("churn: FEE — a fee | default: LATE — late", "default") == "LATE — late"


def test_customer_view_shows_that_customers_events_reasons_and_changes(app, workdir, scores):
    top = scores.dropna(subset=["p_churn"]).sort_values("p_churn", ascending=False).iloc[0]
    customer = top["customer_id"]
    app.query_params.update({"view": "Customer", "customer": customer})
    at = app.run()
    no_errors(at)
    assert at.text_input(key="customer").value == customer
    assert {m.label.split(" ·")[0]: m.value for m in at.metric}["p(churn)"] == f"{top['p_churn']:.3f}"
    text = "\n".join(m.value for m in at.markdown)
    assert reasons_sentence(list(top["top_reasons"]), "churn") in text
    assert expected_reasons(top, "churn") in text
    assert "Reason codes for churn" in text
    assert at.get("vega_lite_chart"), "no timeline drawn"

    events = pq.read_table(workdir.parent / "tiny_journey_model" / "synth" / "events").to_pandas()
    mine = events[events["customer_id"] == customer]
    before = mine[mine["ts"] < pd.Timestamp(CUTOFFS["scores"], tz="UTC")]
    shown = next(d.value for d in at.dataframe if "event_type" in d.value.columns and "ts" in d.value.columns)
    assert len(shown) == len(before) and set(shown["customer_id"]) == {customer}
    assert any(f"{len(before)} events before the cut-off" in c.value for c in at.caption)

    changed = next(d.value for d in at.dataframe if "previous score" in d.value.columns)
    assert list(changed["outcome"]) == ["churn", "default", "uptake"]
    assert changed.set_index("outcome").loc["churn", "score"] == pytest.approx(top["p_churn"])


def test_customer_view_says_why_an_ineligible_customer_has_no_score(app, scores):
    row = scores[scores["p_churn"].isna()].iloc[0]
    app.query_params.update({"view": "Customer", "customer": row["customer_id"]})
    at = app.run()
    no_errors(at)
    assert {m.label.split(" ·")[0]: m.value for m in at.metric}["p(churn)"] == "not eligible"
    assert f"not scored — {row['ineligible_churn']}" in "\n".join(m.value for m in at.markdown)


def test_customer_view_with_an_unknown_id_says_so(app):
    app.query_params.update({"view": "Customer", "customer": "NOBODY"})
    at = app.run()
    no_errors(at)
    assert "NOBODY is not in scoring run" in at.warning[0].value


def test_models_view_shows_champion_metrics_and_lineage(app):
    app.query_params.update({"view": "Models"})
    at = app.run()
    no_errors(at)
    assert "Champion: **journey-synth_bank-outcome v1** (atrank)" in at.success[0].value
    metrics = next(d.value for d in at.dataframe if "auc/churn" in d.value.columns)
    assert metrics.iloc[0]["auc/churn"] == pytest.approx(0.71) and metrics.iloc[0]["ece/churn"] == pytest.approx(0.021)
    lineage = next(d.value for d in at.dataframe if "training data hash" in d.value.columns)
    assert lineage.iloc[0]["training data hash"] == DATA_HASH[:16] and lineage.iloc[0]["aliases"] == "champion"
    assert at.get("image"), "no calibration plot shown"
    assert at.get("graphviz_chart"), "no lineage graph drawn"


def test_stability_view_explains_how_to_get_a_report_then_reads_one(app, workdir):
    app.query_params.update({"view": "Stability"})
    at = app.run()
    no_errors(at)
    assert "journey monitor" in at.info[0].value
    report = workdir / "monitoring" / "2024-09-01_vs_2024-10-01.json"  # as `journey monitor` names and shapes it
    report.parent.mkdir(exist_ok=True)
    report.write_text(json.dumps({
        "kind": "journey-monitoring", "reference_cutoff": "2024-09-01", "current_cutoff": "2024-10-01",
        "threshold": 0.25, "psi": {"score": {"churn": 0.31, "default": 0.02}, "input_length": 0.01,
                                   "event_type_mix": None},
        "current": {"customers": 400}, "method": {"bins": 10, "epsilon": 1e-4}}))
    try:
        at = app.run()
        assert not at.exception, [e.value for e in at.exception]
        assert "1 stability indices above 0.25" in at.error[0].value and "score.churn = 0.310" in at.error[0].value
        over_time = next(d.value for d in at.dataframe if "score.churn" in d.value.columns)
        assert over_time.loc["2024-10-01", "input_length"] == pytest.approx(0.01)
    finally:
        report.unlink()


def test_journey_dashboard_refuses_a_workdir_without_scores_in_one_line(tmp_path):
    journey = Path(sys.executable).with_name("journey")
    result = subprocess.run([str(journey), "dashboard", "--workdir", str(tmp_path)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "run `journey demo` or `journey score` first" in result.stderr


def test_the_server_runs_headless_on_localhost_without_usage_statistics():
    command = streamlit_command(DashboardConfig(workdir="w"))
    pairs = dict(zip(command[5::2], command[6::2], strict=False))
    assert pairs["--server.address"] == "127.0.0.1" and pairs["--server.port"] == "8501"
    assert pairs["--server.headless"] == "true" and pairs["--browser.gatherUsageStats"] == "false"

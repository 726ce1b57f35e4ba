"""`journey monitor`: PSI between two real batch-scoring runs of the tiny model, the JSON the dashboard reads,
the PNG, MLflow logging, and the exit status a scheduler pages on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from test_batch_scoring import TinyModel, tiny_model

from journey_model.inference.batch_scoring import BatchScoringConfig, score_batch
from journey_model.inference.monitoring import (
    ALERT_EXIT,
    categorical_distribution,
    monitor,
    numeric_distribution,
    psi_of,
)
from journey_model.inference.scorer import open_bundle
from pipelines.cli import main as journey

CUTOFFS = {"scores-2024-11": "2024-11-01", "scores": "2024-12-01"}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> TinyModel:
    return tiny_model(tmp_path_factory.getbasetemp() / "tiny_journey_model")


@pytest.fixture(scope="module")
def workdir(model, tmp_path_factory) -> Path:
    """A working folder with the tiny model's scores at two monthly cut-offs (no reasons: faster)."""
    root = tmp_path_factory.mktemp("monitor_work")
    for folder, cutoff in CUTOFFS.items():
        score_batch(BatchScoringConfig(model=str(model.bundle), events_dir=str(model.synth), out_dir=str(root / folder),
                                       cutoff=cutoff, top_reasons=0, progress=False))
    return root


def shifted_copy(source: Path, target: Path, outcome: str = "churn", factor: float = 1.6) -> Path:
    """A copy of a scoring run whose ``p_<outcome>`` is scaled: a drifted model or population."""
    shutil.copytree(source, target)
    for part in target.glob("part-*.parquet"):
        table = pq.read_table(part)
        column = f"p_{outcome}"
        scaled = pc.min_element_wise(pc.multiply(table[column], factor), 1.0)
        pq.write_table(table.set_column(table.schema.get_field_index(column), column, scaled), part)
    return target


def test_psi_is_zero_for_equal_shares_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    reference = rng.beta(2, 8, 5000)
    assert psi_of(np.full(10, 0.1), np.full(10, 0.1)) == 0.0
    same = numeric_distribution(reference, reference.copy())
    assert same is not None and same.psi == 0.0 and len(same.labels) == 10
    assert numeric_distribution(reference, reference * 1.05).psi < 0.1
    assert numeric_distribution(reference, reference * 1.6).psi > 0.25
    # ties (input lengths capped at max_len) merge quantile bins instead of making empty ones
    capped = np.minimum(rng.integers(10, 150, 2000), 100)
    tied = numeric_distribution(capped, capped)
    assert tied.psi == 0.0 and len(tied.labels) < 10
    assert numeric_distribution(np.array([np.nan]), reference) is None  # nobody eligible: no PSI
    # an event type only one side has: a large but finite term (epsilon), not infinity
    mix = categorical_distribution({"login": 90, "fee": 10}, {"login": 80, "fee": 10, "complaint": 10})
    assert np.isfinite(mix.psi) and mix.psi > 0.25
    assert numeric_distribution(reference, reference * 1.6).psi == numeric_distribution(reference, reference * 1.6).psi


def test_identical_runs_are_stable_exit_0_with_the_report_the_dashboard_reads(workdir, capsys):
    current = workdir / "scores"
    assert journey(["monitor", "--reference", str(current), "--current", str(current)]) == 0
    line = capsys.readouterr().out
    assert "stable" in line and "largest" in line
    report_path = workdir / "monitoring" / "2024-12-01_vs_2024-12-01.json"
    report = json.loads(report_path.read_text())
    assert report_path.with_suffix(".png").stat().st_size > 10_000
    assert report["threshold"] == 0.25 and report["alert"] is False and report["alerts"] == []
    assert report["reference_cutoff"] == report["current_cutoff"] == "2024-12-01"
    assert set(report["psi"]["score"]) == {"churn", "default", "uptake"}
    values = [*report["psi"]["score"].values(), report["psi"]["input_length"], report["psi"]["event_type_mix"]]
    assert all(v is not None and abs(v) < 1e-12 for v in values), report["psi"]
    side = report["current"]
    for key in ("customers", "events_before_cutoff", "eligible_share", "flagged_share", "oov_rate",
                "missing_field_rate", "event_type_share", "model_name", "model_version"):
        assert side[key] is not None, key
    assert side["customers"] == 400 and side["rates_unavailable"] is None
    assert 0.8 < side["eligible_share"]["churn"] < 1.0 and 0.0 < side["flagged_share"]["churn"] < 0.5
    assert set(side["oov_rate"]) == {"event_type", "item", "channel", "device"}
    assert set(side["missing_field_rate"]) == {"item", "channel", "device", "amount", "balance"}
    assert "customer_id" not in report_path.read_text() and "C000" not in report_path.read_text()  # anonymous


def test_a_shifted_run_alerts_exit_3_naming_the_score_and_is_logged_to_mlflow(workdir, tmp_path, capsys):
    from mlflow import MlflowClient

    shifted = shifted_copy(workdir / "scores", tmp_path / "scores-shifted")
    out = tmp_path / "monitoring" / "shifted.json"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    status = journey(["monitor", "--reference", str(workdir / "scores-2024-11"), "--current", str(shifted),
                      "--events", str(Path(json.loads((shifted / "_manifest.json").read_text())["config"]["events_dir"])),
                      "--out", str(out), "--track", "--tracking-uri", uri])
    assert status == ALERT_EXIT == 3
    line = capsys.readouterr().out
    assert "ALERT" in line and "score/churn" in line and "score/default" not in line
    report = json.loads(out.read_text())
    assert report["alert"] is True and report["alerts"] == ["score/churn"]
    assert report["psi"]["score"]["churn"] > 0.25 > report["psi"]["score"]["default"]
    assert report["reference_cutoff"] == "2024-11-01" and report["current_cutoff"] == "2024-12-01"
    assert out.with_suffix(".png").exists()

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("journey-monitoring")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.metrics["psi/score/churn"] == pytest.approx(report["psi"]["score"]["churn"])
    assert run.data.tags["alert"] == "true" and run.data.params["current.cutoff"] == "2024-12-01"
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"shifted.json", "shifted.png"}


def test_two_months_of_the_same_model_and_a_model_that_cannot_be_opened(workdir):
    reference, current = workdir / "scores-2024-11", workdir / "scores"
    report = monitor(reference, current, opener=open_bundle)
    assert report.exit_status == 0 and 0 < report.psi["event_type_mix"] < 0.1  # the synthetic bank is stable
    assert report.current["events_before_cutoff"] > report.reference["events_before_cutoff"]
    assert report.current["events_read"] == report.current["events_before_cutoff"]
    assert report.change["customers_ratio"] == 1.0
    windowed = monitor(reference, current, opener=open_bundle, window_days=30)
    assert windowed.current["events_read"] < report.current["events_read"] / 3

    def broken(uri: str):
        raise OSError(f"{uri}: model store unreachable")

    degraded = monitor(reference, current, opener=broken)
    assert degraded.current["oov_rate"] is None and degraded.current["missing_field_rate"] is None
    assert "model store unreachable" in degraded.current["rates_unavailable"]
    assert degraded.psi == report.psi  # everything else is still reported
    again = monitor(reference, current, opener=open_bundle)
    assert again.to_dict() | {"created": ""} == report.to_dict() | {"created": ""}  # identical across runs


def test_the_dashboard_reads_the_report_generically(workdir, tmp_path):
    from dashboard.stability import Report

    shifted = shifted_copy(workdir / "scores", tmp_path / "scores-shifted")
    report = monitor(workdir / "scores-2024-11", shifted)
    content = json.loads(report.to_json())
    read = Report(tmp_path / "r.json", content)
    assert read.name == "2024-12-01" and read.threshold == 0.25
    indices = read.psi()  # keyed "score.churn" or "psi.score.churn", as the reader names them
    assert sorted(indices.values()) == sorted(report.indices().values()) and len(indices) == 5
    assert [key.split(".")[-2:] for key in read.alerts()] == [["score", "churn"]]


def test_not_a_scoring_run_is_one_line_and_exit_1(tmp_path, capsys):
    assert journey(["monitor", "--reference", str(tmp_path), "--current", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("journey monitor: error:") and "not a finished scoring run" in err and len(err.splitlines()) == 1

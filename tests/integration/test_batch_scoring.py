"""`journey score` (local engine): every customer exactly once, the Scorer's scores, atomic parts, resume.

The model is a real one: synthetic journeys -> prepare -> one short ATRank epoch -> a saved bundle, built
once per test session by :func:`tiny_model` (the serving and Spark tests import it).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from journey_model.inference.batch_scoring import (
    MANIFEST_FILE,
    BatchScoringConfig,
    BatchScoringError,
    ranked,
    read_scores,
    score_batch,
)
from journey_model.inference.scorer import Scorer, open_bundle
from pipelines.cli import main as journey

CUTOFF = "2024-03-01"  # about 10 of the 400 synthetic customers have no event before it
TINY_ATRANK = {"hidden_size": 16, "num_heads": 2, "field_dim": 8}


@dataclass
class TinyModel:
    synth: Path  # canonical events (events/, dataset.yaml)
    prepared: Path  # the prepared dataset
    bundle: Path  # the saved Scorer bundle


def tiny_model(root: Path) -> TinyModel:
    """A small trained ATRank bundle on 400 synthetic customers, built once under ``root`` (about 15 s)."""
    from journey_model.data.prepare import PrepareConfig, prepare
    from journey_model.data.preprocessing import Preprocessor
    from journey_model.data.synth import generate
    from journey_model.training.train import TrainConfig, train

    model = TinyModel(root / "synth", root / "prepared", root / "bundle")
    if (model.bundle / "bundle.json").exists():
        return model
    generate(model.synth, customers=400, seed=5, progress=False)
    prepare(PrepareConfig(events_dir=str(model.synth), out_dir=str(model.prepared), cutoff_strategy="labels",
                          label_horizon_days=30), progress=False)
    result = train(TrainConfig(data_dir=str(model.prepared), model="atrank", max_epochs=1, limit_train_batches=3,
                               progress=False, output_dir=str(root / "runs"), model_overrides=TINY_ATRANK))
    Scorer(result.module.model, Preprocessor.load(model.prepared), calibration=result.calibration).save(model.bundle)
    return model


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> TinyModel:
    return tiny_model(tmp_path_factory.getbasetemp() / "tiny_journey_model")


def events_frame(model: TinyModel) -> pd.DataFrame:
    return pq.read_table(model.synth / "events").to_pandas()


def reference_scores(model: TinyModel, cutoff: str) -> pd.DataFrame:
    """Scorer.score_events on the events before the cut-off: what every scoring path must reproduce."""
    events = events_frame(model)
    moment = pd.Timestamp(cutoff, tz="UTC")
    events = events[events["ts"] < moment].copy()
    events["cutoff"] = moment
    return Scorer.load(model.bundle).score_events(events).set_index("customer_id").sort_index()


def config(model: TinyModel, out: Path, **overrides) -> BatchScoringConfig:
    values = {"model": str(model.bundle), "events_dir": str(model.synth), "out_dir": str(out), "cutoff": CUTOFF,
              "progress": False, **overrides}
    return BatchScoringConfig(**values)


def assert_same_scores(scored: pd.DataFrame, reference: pd.DataFrame, tolerance: float = 1e-5) -> None:
    scored = scored.set_index("customer_id").sort_index()
    assert scored.index.is_unique
    assert list(scored.index) == list(reference.index)
    for column in [c for c in reference.columns if c.startswith("p_")]:
        mine, theirs = scored[column].to_numpy(dtype=float), reference[column].to_numpy(dtype=float)
        assert (np.isnan(mine) == np.isnan(theirs)).all(), f"{column}: not the same customers are eligible"
        assert np.nan_to_num(np.abs(mine - theirs), nan=0.0).max() <= tolerance, column
    assert (scored["next_event_1"].to_numpy() == reference["next_event_1"].to_numpy()).all()
    assert (scored["n_events"].to_numpy() == reference["n_events"].to_numpy()).all()


def test_every_customer_is_scored_once_with_the_scorers_scores_and_reasons(model, tmp_path):
    out = tmp_path / "scores"
    report = score_batch(config(model, out, events_per_partition=15_000, explain="all"))
    events = events_frame(model)
    with_history = events.loc[events["ts"] < pd.Timestamp(CUTOFF, tz="UTC"), "customer_id"].nunique()

    assert report.partitions >= 4
    assert report.customers == with_history
    assert report.skipped_no_history == events["customer_id"].nunique() - with_history > 0
    assert report.events_after_cutoff == int((events["ts"] >= pd.Timestamp(CUTOFF, tz="UTC")).sum())
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_FILE] + [f"part-{i:05d}.parquet" for i in range(report.partitions)]

    scored = read_scores(out).to_pandas()
    assert_same_scores(scored, reference_scores(model, CUTOFF))
    _, identity = open_bundle(model.bundle)
    assert set(scored["model_version"]) == {identity.version} and set(scored["model_name"]) == {"bundle"}
    assert set(scored["cutoff"]) == {pd.Timestamp(CUTOFF, tz="UTC")}

    # Journey's default ATRank is explained by screened occlusion: outcome tasks only, signed probability points
    # (a task whose every event moves the score by nothing has no reasons for that customer)
    tasks = {"churn", "default", "uptake"}
    seen: set[str] = set()
    for reasons in scored["top_reasons"]:
        by_task: dict[str, list[float]] = {}
        for reason in reasons:
            assert reason["events"] >= 1 and -1.0 - 1e-6 <= reason["weight"] <= 1.0 + 1e-6
            by_task.setdefault(reason["task"], []).append(reason["weight"])
        assert set(by_task) <= tasks
        seen |= set(by_task)
        for weights in by_task.values():
            assert 1 <= len(weights) <= 3 and weights == sorted(weights, reverse=True)
    assert seen == tasks
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert manifest["customers"] == report.customers and manifest["model_version"] == identity.version


def test_ineligible_customers_get_a_reason_instead_of_a_score_and_never_reach_a_ranked_list(model, tmp_path):
    held_back = "2024-12-01"  # after every labelled month: some customers closed their accounts or defaulted
    report = score_batch(config(model, tmp_path / "scores", cutoff=held_back))
    scored = read_scores(tmp_path / "scores").to_pandas()
    events = events_frame(model)
    before = events[events["ts"] < pd.Timestamp(held_back, tz="UTC")]
    closed = set(before.loc[before["event_type"] == "account_close", "customer_id"])
    defaulted = set(before.loc[before["event_type"] == "default_notice", "customer_id"]) - closed
    assert len(closed) >= 3 and len(defaulted) >= 1

    by_id = scored.set_index("customer_id")
    assert set(by_id.index[by_id["p_churn"].isna()]) == closed  # exactly the closed accounts lose the churn score
    assert set(by_id.index[by_id["ineligible_rule_default"] == "already_defaulted"]) == defaulted
    assert by_id.loc[sorted(closed), "ineligible_churn"].str.match(r"account closed on \d{4}-\d{2}-\d{2}$").all()
    assert by_id.loc[by_id["p_churn"].notna(), "ineligible_churn"].isna().all()
    assert report.ineligible["churn"] == {"account_closed": len(closed)}
    assert report.ineligible["default"] == {"account_closed": len(closed), "already_defaulted": len(defaulted)}
    manifest = json.loads((tmp_path / "scores" / MANIFEST_FILE).read_text())
    assert manifest["ineligible"] == report.ineligible
    threshold = manifest["operating_points"]["churn"]["threshold"]
    assert manifest["operating_points"]["churn"]["policy"] == "capacity:10%"
    assert not by_id.loc[sorted(closed), "flag_churn"].any()  # no score, never flagged
    eligible = by_id[by_id["p_churn"].notna()]
    assert (eligible["flag_churn"] == (eligible["p_churn"] >= threshold)).all()

    for customer in sorted(closed):  # no score, no reasons for churn; the reasons line names only scored outcomes
        codes = by_id.loc[customer, "reason_codes"]
        assert not [c for c in codes if c["task"] == "churn"]
        assert "churn:" not in (by_id.loc[customer, "reasons"] or "")
    # by default only flagged customers are explained (the lists a team works); all of them are
    flags = [c for c in by_id.columns if c.startswith("flag_")]
    flagged = by_id[flags].fillna(False).any(axis=1)
    assert flagged.sum() >= 10 and (by_id.loc[flagged, "reason_codes"].map(len) > 0).all()
    assert (by_id.loc[~flagged, "reason_codes"].map(len) == 0).all() and by_id.loc[~flagged, "reasons"].isna().all()
    top = ranked(scored, "churn")
    assert len(top) == len(scored) - len(closed) and not set(top["customer_id"]) & closed
    assert top["p_churn"].is_monotonic_decreasing


def test_last_event_cutoff_scores_like_the_scorer_default(model, tmp_path):
    report = score_batch(config(model, tmp_path / "scores", cutoff="last-event", top_reasons=0))
    scored = read_scores(tmp_path / "scores").to_pandas()
    assert "top_reasons" not in scored.columns and report.skipped_no_history == 0
    reference = Scorer.load(model.bundle).score_events(events_frame(model)).set_index("customer_id").sort_index()
    assert_same_scores(scored, reference, tolerance=1e-6)


def test_an_interrupted_job_resumes_without_duplicated_or_missing_customers(model, tmp_path):
    out = tmp_path / "scores"
    command = [sys.executable, "-m", "pipelines.cli", "-q", "score", "--model", str(model.bundle), "--events",
               str(model.synth), "--out", str(out), "--cutoff", CUTOFF, "--events-per-partition", "1500",
               "--chunk-customers", "2", "--workers", "1"]
    job = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while len(list(out.glob("part-*.parquet"))) < 3 and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        job.send_signal(signal.SIGKILL)  # no chance to clean up: the hardest kind of interruption
    finally:
        job.wait(30)
    finished_before = sorted(out.glob("part-*.parquet"))
    # A partition killed between publishing its part and writing its done-marker is redone (its part replaced
    # atomically), so the resumed count is the markers, which may be one fewer than the parts.
    marked_done = len(list((out / "_work").glob("done-*.json")))
    assert job.returncode == -signal.SIGKILL, f"the job ended before it was interrupted: {job.stderr.read()[-2000:]!r}"
    assert not (out / MANIFEST_FILE).exists() and 3 <= len(finished_before)
    assert len(finished_before) - 1 <= marked_done <= len(finished_before)

    report = score_batch(config(model, out, events_per_partition=1500))  # chunk size may change on resume
    assert report.resumed_partitions == marked_done and len(finished_before) < report.partitions
    assert not [p for p in out.iterdir() if p.name.startswith(".") or p.name == "_work"]  # no leftovers
    assert_same_scores(read_scores(out).to_pandas(), reference_scores(model, CUTOFF))


def test_worker_processes_write_exactly_the_parts_of_one_process(model, tmp_path):
    one = score_batch(config(model, tmp_path / "one", events_per_partition=15_000, workers=1))
    two = score_batch(config(model, tmp_path / "two", events_per_partition=15_000, workers=2))
    assert one.partitions == two.partitions >= 4
    for name in ("customers", "skipped_no_history", "events", "events_after_cutoff", "ineligible"):
        assert getattr(one, name) == getattr(two, name), name
    for part in range(one.partitions):  # the same customers in the same part, with the same scores and reasons
        mine = pq.read_table(tmp_path / "two" / f"part-{part:05d}.parquet")
        assert mine.equals(pq.read_table(tmp_path / "one" / f"part-{part:05d}.parquet")), part
    manifests = [json.loads((tmp_path / folder / MANIFEST_FILE).read_text()) for folder in ("one", "two")]
    assert manifests[0]["ineligible"] == manifests[1]["ineligible"] and manifests[1]["config"]["workers"] == 2


def test_an_interrupted_parallel_job_resumes_without_duplicated_or_missing_customers(model, tmp_path):
    psutil = pytest.importorskip("psutil")
    out = tmp_path / "scores"
    command = [sys.executable, "-m", "pipelines.cli", "-q", "score", "--model", str(model.bundle), "--events",
               str(model.synth), "--out", str(out), "--cutoff", CUTOFF, "--events-per-partition", "1500",
               "--chunk-customers", "2", "--workers", "2"]
    job = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    workers = []
    try:
        deadline = time.monotonic() + 120
        while len(list(out.glob("part-*.parquet"))) < 3 and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        workers = psutil.Process(job.pid).children(recursive=True)
        job.send_signal(signal.SIGKILL)  # the job's process only: its workers notice and end themselves
    finally:
        job.wait(30)
    assert job.returncode == -signal.SIGKILL, f"the job ended before it was interrupted: {job.stderr.read()[-2000:]!r}"
    assert len(workers) >= 2
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive, "worker processes outlived the killed job"
    finished_before = sorted(out.glob("part-*.parquet"))
    marked_done = len(list((out / "_work").glob("done-*.json")))
    assert not (out / MANIFEST_FILE).exists() and 3 <= len(finished_before)
    assert len(finished_before) - 2 <= marked_done <= len(finished_before)  # a publish in flight per worker

    report = score_batch(config(model, out, events_per_partition=1500, workers=2))
    assert report.resumed_partitions == marked_done and len(finished_before) < report.partitions
    assert not [p for p in out.iterdir() if p.name.startswith(".") or p.name == "_work"]  # no leftovers
    assert_same_scores(read_scores(out).to_pandas(), reference_scores(model, CUTOFF))


def test_a_finished_job_is_kept_and_another_job_is_not_mixed_into_its_folder(model, tmp_path):
    out = tmp_path / "scores"
    first = score_batch(config(model, out, top_reasons=0))
    written = {p: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    again = score_batch(config(model, out, top_reasons=0))
    assert again.customers == first.customers
    assert {p: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")} == written  # nothing rewritten
    with pytest.raises(BatchScoringError, match="already holds scores"):
        score_batch(config(model, out, top_reasons=0, cutoff="2024-06-01"))
    replaced = score_batch(config(model, out, top_reasons=0, cutoff="2024-06-01"), overwrite=True)
    assert replaced.cutoff.startswith("2024-06-01") and replaced.customers == 400


def test_cli_scores_and_explains_bad_options(model, tmp_path, capsys):
    out = tmp_path / "scores"
    code = journey(["-q", "score", "--model", str(model.bundle), "--events", str(model.synth), "--out", str(out),
                    "--cutoff", "2024-06-01T00:00:00Z", "--top-reasons", "0"])
    assert code == 0
    assert "scored 400 customers" in capsys.readouterr().out
    assert journey(["-q", "score", "--model", str(model.bundle), "--events", str(model.synth), "--out",
                    str(tmp_path / "other"), "--cutoff", "first of June"]) == 1
    assert "cutoff 'first of June': not an ISO date" in capsys.readouterr().err
    assert journey(["-q", "score", "--model", str(tmp_path / "missing"), "--events", str(model.synth), "--out",
                    str(tmp_path / "other")]) == 1
    assert "neither a model bundle folder" in capsys.readouterr().err


def test_reasons_come_from_the_method_asked_for_and_one_the_model_cannot_use_is_refused(model, tmp_path, capsys):
    from journey_model.inference.attribution import default_method

    default = score_batch(config(model, tmp_path / "default", explain="all"))
    assert default.reason_method == default_method(Scorer.load(model.bundle))
    rollout = score_batch(config(model, tmp_path / "rollout", explain="all", reason_method="attention-rollout"))
    assert rollout.reason_method == "attention-rollout" and rollout.customers == default.customers
    assert json.loads((tmp_path / "rollout" / MANIFEST_FILE).read_text())["reason_method"] == "attention-rollout"
    assert "reasons by attention-rollout" in rollout.summary()
    by_default = read_scores(tmp_path / "default").to_pandas().set_index("customer_id").sort_index()
    by_rollout = read_scores(tmp_path / "rollout").to_pandas().set_index("customer_id").sort_index()
    assert_same_scores(by_rollout.reset_index(), by_default)  # the method changes the reasons, never the scores
    weights = [r["weight"] for reasons in by_rollout["top_reasons"] for r in reasons]
    assert weights and all(0.0 < w <= 1.0 + 1e-6 for w in weights)  # shares of attention, not probability points
    assert any(list(a) != list(b) for a, b in zip(by_default["top_reasons"], by_rollout["top_reasons"], strict=True))
    # another method is another job: the same folder is not silently resumed with the other method's reasons
    with pytest.raises(BatchScoringError, match="already holds"):
        score_batch(config(model, tmp_path / "rollout", explain="all", reason_method="occlusion"))

    code = journey(["-q", "score", "--model", str(model.bundle), "--events", str(model.synth), "--out",
                    str(tmp_path / "refused"), "--cutoff", CUTOFF, "--reason-method", "integrated-gradients"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert "--reason-method integrated-gradients" in err and "pre-norm" in err, err
    assert not (tmp_path / "refused").exists() or not any((tmp_path / "refused").glob("part-*"))


# ------------------------------------------------------------------------------------------ damaged input, pseudonyms


def test_corrupt_event_file_and_a_crash_in_scoring_name_the_file_and_leave_no_part(model, tmp_path, capsys,
                                                                                 monkeypatch):
    import shutil

    import journey_model.inference.batch_scoring as batch_scoring

    events = tmp_path / "events"
    shutil.copytree(model.synth / "events", events)
    part = sorted(events.glob("*.parquet"))[0]
    pq.write_table(pq.read_table(part), part, compression="none")
    damaged = bytearray(part.read_bytes())
    for offset in range(200, len(damaged) - 4000, 97):  # page data, not the footer: the file opens
        damaged[offset] ^= 0x5A
    part.write_bytes(bytes(damaged))
    code = journey(["-q", "score", "--model", str(model.bundle), "--events", str(events), "--out",
                    str(tmp_path / "bad"), "--cutoff", CUTOFF])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err and str(part) in err, err

    # a page that decodes without error to values scoring cannot take: the error names the input file(s)
    # holding the customers being scored, and no part (and no temporary) is left behind
    def overflow(*args, **kwargs):
        raise OverflowError("Python int too large to convert to C long")

    monkeypatch.setattr(batch_scoring, "score_events_table", overflow)
    out = tmp_path / "crashed"
    code = journey(["-q", "score", "--model", str(model.bundle), "--events", str(model.synth), "--out", str(out),
                    "--cutoff", CUTOFF])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "OverflowError" in err and "score partition 0" in err and str(model.synth / "events") in err
    assert not list(out.glob("part-*")) and not list(out.glob(".*.tmp"))


def test_the_same_key_gives_the_same_pseudonym_in_ingest_batch_scoring_and_the_api(model, tmp_path, monkeypatch):
    from journey_model.core.pseudonyms import KEY_ENV, pseudonym
    from journey_model.data.ingest import ingest
    from journey_model.data.preprocessing import Preprocessor
    from serving.config import ServingConfig
    from serving.requests import InputContract, parse_customers
    from serving.schemas import CustomerEvents

    monkeypatch.setenv(KEY_ENV, "a-bank-secret-of-at-least-32-characters")
    key = b"a-bank-secret-of-at-least-32-characters"
    frame = events_frame(model)
    customer = sorted(frame["customer_id"].unique())[0]
    # batch scoring of raw-id events
    report = score_batch(config(model, tmp_path / "scores", top_reasons=0, pseudonymise=True))
    scored = read_scores(tmp_path / "scores").column("customer_id").to_pylist()
    assert report.customers == len(scored) and pseudonym(customer, key) in scored
    assert not set(scored) & set(frame["customer_id"])  # no raw id in the scores
    # ingest
    source = tmp_path / "raw.csv"
    source.write_text(f"cust,when,kind\n{customer},2024-01-15 10:00,login\n")
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text("dataset: {name: t, categorical_fields: [], numeric_fields: []}\n"
                       "columns: {customer_id: cust, ts: when}\nevent_type: kind\n")
    ingest([source], mapping, tmp_path / "ingested", progress=False, pseudonymise=True)
    ingested = pq.read_table(tmp_path / "ingested" / "events").column("customer_id").to_pylist()
    # the API's request parsing
    request = CustomerEvents(customer_id=customer, cutoff="2024-03-01T00:00:00Z",
                             events=[{"ts": "2024-01-15T10:00:00Z", "event_type": "login"}])
    parsed = parse_customers([request], InputContract(Preprocessor.load(model.prepared)), ServingConfig())
    assert ingested == [parsed.customers[0].customer_id] == [pseudonym(customer, key)]
    monkeypatch.setenv(KEY_ENV, "another-secret-of-at-least-32-characters")
    other = CustomerEvents(customer_id=customer, cutoff="2024-03-01T00:00:00Z",
                           events=[{"ts": "2024-01-15T10:00:00Z", "event_type": "login"}])
    assert parse_customers([other], InputContract(Preprocessor.load(model.prepared)),
                           ServingConfig()).customers[0].customer_id != ingested[0]


# ------------------------------------------------------------------------------------------ input partitions (no spill)


def write_grouped_by_customer(events, folder: Path, files: int, customers_per_group: int,
                              split_customer: bool = False) -> Path:
    """``events`` as ``files`` Parquet files of whole customers in ascending id ranges, ``customers_per_group``
    customers per row group; ``split_customer`` moves one customer's last event into the next file."""
    import pyarrow as pa
    import pyarrow.compute as pc

    folder.mkdir(parents=True)
    ids = sorted(set(events.column("customer_id").to_pylist()))
    per_file = -(-len(ids) // files)
    tables = []
    for f in range(files):
        mine = ids[f * per_file:(f + 1) * per_file]
        groups = [events.filter(pc.is_in(events.column("customer_id"), pa.array(mine[g:g + customers_per_group])))
                  for g in range(0, len(mine), customers_per_group)]
        tables.append(groups)
    if split_customer:  # the last customer of file 0 also has an event in file 1
        last = tables[0][-1]
        tables[0][-1], moved = last.slice(0, last.num_rows - 1), last.slice(last.num_rows - 1)
        tables[1][0] = pa.concat_tables([moved, tables[1][0]])
    for f, groups in enumerate(tables):
        with pq.ParquetWriter(folder / f"part-{f:05d}.parquet", groups[0].schema) as writer:
            for group in groups:
                writer.write_table(group)
    return folder


def sorted_scores(out: Path):
    table = read_scores(out)
    return table.sort_by([("customer_id", "ascending")])


def assert_same_output(mine: Path, theirs: Path, tolerance: float = 1e-5) -> None:
    """The same rows and values in two jobs' outputs; float values (scores, reason weights) within
    ``tolerance``: customers batched with other customers (other partitions) get other padding, so the last
    bit of a float32 forward pass may differ."""
    a, b = sorted_scores(mine), sorted_scores(theirs)
    assert a.schema.equals(b.schema) and a.num_rows == b.num_rows

    def same(x, y) -> bool:
        if isinstance(x, float) and isinstance(y, float):
            return (np.isnan(x) and np.isnan(y)) or abs(x - y) <= tolerance
        if isinstance(x, dict) and isinstance(y, dict):
            return x.keys() == y.keys() and all(same(x[k], y[k]) for k in x)
        if isinstance(x, list) and isinstance(y, list):
            return len(x) == len(y) and all(same(u, v) for u, v in zip(x, y, strict=True))
        return x == y

    for name in a.column_names:
        x, y = a.column(name).to_pylist(), b.column(name).to_pylist()
        assert all(same(u, v) for u, v in zip(x, y, strict=True)), name


@pytest.mark.parametrize("workers", [1, 2])
def test_input_row_groups_of_whole_customers_are_scored_without_a_spill_exactly_as_with_it(model, tmp_path, workers):
    events = write_grouped_by_customer(pq.read_table(model.synth / "events"), tmp_path / "events", 3, 40)
    options = {"events_dir": str(events), "events_per_partition": 15_000, "explain": "all", "workers": workers}
    direct = score_batch(config(model, tmp_path / "direct", **options))
    spilled = score_batch(config(model, tmp_path / "spilled", partitioning="spill", **options))

    assert (direct.partitioning, spilled.partitioning) == ("input", "spill")
    assert direct.partitions >= 6  # row groups of one file grouped up to events_per_partition
    assert not (tmp_path / "direct" / "_work").exists()
    for name in ("customers", "skipped_no_history", "events", "events_after_cutoff", "ineligible"):
        assert getattr(direct, name) == getattr(spilled, name), name
    assert_same_output(tmp_path / "direct", tmp_path / "spilled")
    assert_same_scores(read_scores(tmp_path / "direct").to_pandas(), reference_scores(model, CUTOFF))
    manifest = json.loads((tmp_path / "direct" / MANIFEST_FILE).read_text())
    assert manifest["partitioning"] == "input" and manifest["events_after_cutoff"] == spilled.events_after_cutoff
    assert sorted(p.name for p in (tmp_path / "direct").iterdir()) == [MANIFEST_FILE] + [
        f"part-{i:05d}.parquet" for i in range(direct.partitions)]


def test_a_customer_in_two_files_or_an_oversized_row_group_is_spilled(model, tmp_path):
    events = pq.read_table(model.synth / "events")
    split = write_grouped_by_customer(events, tmp_path / "split", 3, 40, split_customer=True)
    report = score_batch(config(model, tmp_path / "scores", events_dir=str(split), events_per_partition=15_000,
                                top_reasons=0))
    assert report.partitioning == "spill"
    assert_same_scores(read_scores(tmp_path / "scores").to_pandas(), reference_scores(model, CUTOFF))
    whole = write_grouped_by_customer(events, tmp_path / "whole", 2, 400)  # one row group per file
    big = score_batch(config(model, tmp_path / "big", events_dir=str(whole), events_per_partition=15_000,
                             top_reasons=0))
    assert big.partitioning == "spill" and big.partitions >= 4


def test_an_interrupted_job_on_input_partitions_resumes_with_the_same_counts(model, tmp_path, monkeypatch):
    import journey_model.inference.batch_scoring as batch_scoring

    events = write_grouped_by_customer(pq.read_table(model.synth / "events"), tmp_path / "events", 2, 40)
    options = {"events_dir": str(events), "events_per_partition": 15_000, "top_reasons": 0, "workers": 1}
    calls, score = [], batch_scoring.score_events_table

    def crash_on_the_third_partition(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # as an interruption: not turned into a "bad partition" error
        return score(*args, **kwargs)

    monkeypatch.setattr(batch_scoring, "score_events_table", crash_on_the_third_partition)
    with pytest.raises(KeyboardInterrupt):
        score_batch(config(model, tmp_path / "scores", **options))
    monkeypatch.setattr(batch_scoring, "score_events_table", score)
    report = score_batch(config(model, tmp_path / "scores", **options))
    fresh = score_batch(config(model, tmp_path / "fresh", **options))
    assert report.partitioning == "input" and report.resumed_partitions == 2 and report.partitions > 3
    for name in ("customers", "skipped_no_history", "events", "events_after_cutoff", "ineligible"):
        assert getattr(report, name) == getattr(fresh, name), name
    assert sorted_scores(tmp_path / "scores").equals(sorted_scores(tmp_path / "fresh"))

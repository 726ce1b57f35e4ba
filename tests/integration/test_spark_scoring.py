"""`journey score --engine spark` on a local Spark session (local[2]), and the parity of every way scores
leave Journey: for the same customers and cut-off, the online API, local batch scoring, Spark scoring, the
MLflow pyfunc model and the pyfunc model on Spark executors give the same scores (max abs diff <= 1e-5).

The model is logged with :func:`journey_model.tracking.pyfunc.log_journey_model` into a SQLite MLflow store,
registered and aliased ``champion``, and every path loads it by ``models:/NAME@champion``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import warnings

import mlflow
import numpy as np
import pandas as pd
import pytest
from test_batch_scoring import TinyModel, events_frame, reference_scores, tiny_model

from journey_model.inference.batch_scoring import BatchScoringConfig, read_scores, score_batch
from journey_model.inference.scorer import Scorer
from journey_model.tracking.loading import open_model

pyspark = pytest.importorskip("pyspark")

REGISTERED = "journey-tests-all"
HELD_BACK = "2024-12-01"  # after every labelled month: some customers closed their accounts before it
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> TinyModel:
    return tiny_model(tmp_path_factory.getbasetemp() / "tiny_journey_model")


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    previous = os.environ.get("PYSPARK_PYTHON")
    os.environ["PYSPARK_PYTHON"] = sys.executable  # executors import journey_model from this environment
    session = (SparkSession.builder.master("local[2]").appName("journey-tests")
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
def champion(model, tmp_path_factory):
    """The tiny model logged as an MLflow pyfunc, registered and aliased champion; yields its URI."""
    from mlflow import MlflowClient

    from journey_model.tracking.pyfunc import log_journey_model

    root = tmp_path_factory.mktemp("mlflow")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    os.environ["MLFLOW_TRACKING_URI"] = mlflow.get_tracking_uri()
    experiment = mlflow.create_experiment("journey-tests", artifact_location=(root / "artifacts").as_uri())
    with warnings.catch_warnings(), mlflow.start_run(experiment_id=experiment) as run:
        warnings.simplefilter("ignore")
        info = log_journey_model(Scorer.load(model.bundle), input_example=None)
    client = MlflowClient()
    client.create_registered_model(REGISTERED)
    version = client.create_model_version(REGISTERED, source=info.model_uri, run_id=run.info.run_id)
    client.set_registered_model_alias(REGISTERED, "champion", version.version)
    yield f"models:/{REGISTERED}@champion"
    mlflow.set_tracking_uri(previous)
    os.environ.pop("MLFLOW_TRACKING_URI", None)


def assert_same(a: pd.DataFrame, b: pd.DataFrame, what: str) -> None:
    a, b = a.set_index("customer_id").sort_index(), b.set_index("customer_id").sort_index()
    assert list(a.index) == list(b.index), what
    compared = [c for c in b.columns if c.startswith("p_") and c in a.columns]
    assert {"p_churn", "p_default", "p_uptake", "p_next_event_1"} <= set(compared), what
    for column in compared:
        mine, theirs = a[column].to_numpy(dtype=float), b[column].to_numpy(dtype=float)
        # an ineligible customer has no score (NaN) on every path, and the same customers are ineligible
        assert (np.isnan(mine) == np.isnan(theirs)).all(), (what, column, "eligibility differs")
        difference = np.nan_to_num(np.abs(mine - theirs), nan=0.0).max()
        assert difference <= TOLERANCE, (what, column, difference)
    assert (a["next_event_1"].to_numpy() == b["next_event_1"].to_numpy()).all(), what
    for column in [c for c in b.columns if c.startswith("ineligible_") and c in a.columns]:
        assert (a[column].fillna("").to_numpy() == b[column].fillna("").to_numpy()).all(), (what, column)


def test_spark_engine_writes_the_local_engines_scores_and_reasons(model, spark, tmp_path):
    local = score_batch(BatchScoringConfig(model=str(model.bundle), events_dir=str(model.synth), cutoff=HELD_BACK,
                                           out_dir=str(tmp_path / "local"), progress=False))
    on_spark = score_batch(BatchScoringConfig(model=str(model.bundle), events_dir=str(model.synth), cutoff=HELD_BACK,
                                              out_dir=str(tmp_path / "spark"), engine="spark",
                                              events_per_partition=10_000, progress=False))
    assert on_spark.engine == "spark" and on_spark.partitions >= 5
    assert (on_spark.customers, on_spark.skipped_no_history, on_spark.events_after_cutoff) == (
        local.customers, local.skipped_no_history, local.events_after_cutoff)
    assert on_spark.ineligible == local.ineligible and local.ineligible["churn"]["account_closed"] >= 3
    assert (tmp_path / "spark" / "_SUCCESS").exists()
    a = read_scores(tmp_path / "local").to_pandas()
    b = read_scores(tmp_path / "spark").to_pandas()
    assert_same(b, a, "spark vs local")
    assert str(b["cutoff"].dtype) == "datetime64[us, UTC]" and set(b["model_version"]) == set(a["model_version"])
    reasons_local = a.set_index("customer_id")["top_reasons"]
    for customer, reasons in b.set_index("customer_id")["top_reasons"].items():
        mine = [(r["task"], r["event_type"], r["time_bucket"], r["events"]) for r in reasons]
        theirs = [(r["task"], r["event_type"], r["time_bucket"], r["events"]) for r in reasons_local[customer]]
        assert mine == theirs, customer


def test_api_batch_spark_and_mlflow_pyfunc_give_the_same_scores(model, spark, champion, tmp_path, monkeypatch):
    monkeypatch.setenv("BENTOML_DO_NOT_TRACK", "True")
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml_home"))
    events = events_frame(model)
    moment = pd.Timestamp(HELD_BACK, tz="UTC")
    before = events[events["ts"] < moment].copy()
    before["cutoff"] = moment
    expected = reference_scores(model, HELD_BACK).reset_index()
    closed = expected["ineligible_churn"].notna()
    assert closed.sum() >= 3 and expected.loc[closed, "p_churn"].isna().all()  # the parity covers eligibility

    # 1. local batch scoring and 2. Spark scoring, both loading models:/NAME@champion
    paths = {}
    for engine in ("local", "spark"):
        report = score_batch(BatchScoringConfig(model=champion, events_dir=str(model.synth), cutoff=HELD_BACK,
                                                out_dir=str(tmp_path / engine), engine=engine, top_reasons=0,
                                                progress=False), opener=open_model)
        assert (report.model_name, report.model_version) == (REGISTERED, "1")
        paths[engine] = read_scores(tmp_path / engine).to_pandas()
        assert_same(paths[engine], expected, engine)

    # 3. the MLflow pyfunc model
    pyfunc_model = mlflow.pyfunc.load_model(champion)
    assert_same(pyfunc_model.predict(before), expected, "mlflow.pyfunc")

    # 4. the pyfunc model on Spark executors, over customer-grouped events (applyInPandas)
    local_copy = mlflow.artifacts.download_artifacts(artifact_uri=champion, dst_path=str(tmp_path / "pyfunc"))

    columns = ["customer_id", "p_churn", "p_default", "p_uptake", "next_event_1", "p_next_event_1", "ineligible_churn"]

    def predict_group(frame: pd.DataFrame) -> pd.DataFrame:  # one bucket of whole customers, on an executor
        import mlflow.pyfunc as executor_pyfunc

        return executor_pyfunc.load_model(local_copy).predict(frame)[columns]

    from pyspark.sql import functions as F

    grouped = (spark.createDataFrame(before.drop(columns=["cutoff"]))
               .withColumn("cutoff", F.lit(moment.to_pydatetime()))
               .groupBy(F.pmod(F.xxhash64("customer_id"), F.lit(4)))
               .applyInPandas(predict_group, "customer_id string, p_churn double, p_default double, "
                                             "p_uptake double, next_event_1 string, p_next_event_1 double, "
                                             "ineligible_churn string"))
    assert_same(grouped.toPandas(), expected, "pyfunc on Spark")

    # 5. the online API's service, serving models:/NAME@champion (over HTTP in test_serving.py; BentoML's
    # ASGI app registers process-wide metrics, so one process builds it once)
    from serving.schemas import CustomerEvents
    from serving.service import JourneyService

    customers = list(dict.fromkeys([*expected["customer_id"][:40], *expected.loc[closed, "customer_id"][:3]]))
    requests = [CustomerEvents.model_validate({
        "customer_id": c, "cutoff": moment.isoformat(),
        "events": [{k: (v.isoformat() if k == "ts" else v) for k, v in row.items() if v is not None and v == v}
                   for row in before[before["customer_id"] == c].drop(columns=["customer_id", "cutoff"])
                   .to_dict("records")],
    }) for c in customers]
    monkeypatch.setenv("JOURNEY_MODEL_URI", champion)
    service = JourneyService()
    answers = asyncio.run(service.predict(customers=requests)).customers
    metadata = service.metadata()
    assert (metadata.name, metadata.version, metadata.alias) == (REGISTERED, "1", "champion")
    api = pd.DataFrame([{"customer_id": a.customer_id, "next_event_1": a.next_events[0].event_type,
                         "p_next_event_1": a.next_events[0].probability,
                         **{f"p_{k}": a.scores.get(k, np.nan) for k in ("churn", "default", "uptake")},
                         **{f"ineligible_{k}": a.ineligible[k].reason if k in a.ineligible else None
                            for k in ("churn", "default", "uptake")}} for a in answers])
    asked = expected[expected["customer_id"].isin(customers)]
    assert asked["ineligible_churn"].notna().any(), "the API's customers include an ineligible one"
    assert_same(api, asked, "API")

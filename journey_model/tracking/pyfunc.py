"""The MLflow face of a Journey model: a pyfunc that takes raw canonical events and returns scores.

``mlflow.pyfunc.load_model(uri).predict(events)`` — ``events`` a DataFrame of canonical events for one or
many customers (``customer_id``, ``ts``, ``event_type`` + the dataset's optional fields) with an optional
``cutoff`` column (one value per customer; missing = score "now", after the customer's last event) —
returns one row per customer: ``customer_id``, ``cutoff``, ``n_events``, ``p_<outcome>`` and/or
``next_event_<k>`` / ``p_next_event_<k>`` (:meth:`journey_model.inference.scorer.Scorer.score_events`).

Contract other parts of Journey rely on:

* the logged model directory holds the :class:`~journey_model.inference.scorer.Scorer` bundle (weights, model
  config, the preprocessing artifact) at ``artifacts/bundle/``;
* :func:`load_scorer` turns any MLflow model URI (``models:/name@alias``, ``models:/name/3``, ``runs:/…``,
  ``models:/m-…`` or a bare ``m-…``, a local model folder) into a :class:`Scorer`;

The model also carries a copy of the ``journey_model`` package (``code/``), so a process that has only the
model folder and the pinned requirements can load it, and its requirements pin ``torch==2.13.0`` (in
``requirements.txt`` and ``constraints.txt``) so that an environment rebuilt from them cannot silently move
to another torch release. Timestamps may arrive timezone-aware, naive (read as UTC) or as ISO strings: the
signature types them ``any`` because MLflow's own datetime check rejects timezone-aware columns.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types.schema import AnyType, ColSpec, Schema

from journey_model.data.eligibility import ineligible_reason_column
from journey_model.data.preprocessing import Preprocessor
from journey_model.data.schema import CUSTOMER_ID, EVENT_ID, EVENT_TYPE, TIMESTAMP
from journey_model.data.sequences import CUTOFF
from journey_model.inference.scorer import MANIFEST_FILE, Scorer, ScoringError, is_bundle
from journey_model.models.tasks import Task

BUNDLE_ARTIFACT = "bundle"  # key in `artifacts=`; MLflow stores it at <model>/artifacts/bundle/
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # journey_model/, copied into every logged model
TORCH_PIN = "torch==2.13.0"  # the torch release every Journey model is built and served with
SCORING_PACKAGES = ("numpy", "pandas", "pyarrow", "pyyaml", "cloudpickle", "tqdm", "safetensors")  # what Scorer imports


class JourneyPyfuncModel(mlflow.pyfunc.PythonModel):
    """Raw canonical events (+ cut-offs) in, one row of scores per customer out."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.scorer = Scorer.load(context.artifacts[BUNDLE_ARTIFACT])

    def predict(self, context: mlflow.pyfunc.PythonModelContext, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        return self.scorer.score_events(timestamps_as_utc(model_input))


def timestamps_as_utc(events: pd.DataFrame) -> pd.DataFrame:
    """``ts`` / ``cutoff`` given as text (JSON requests, CSV) parsed as ISO 8601; text without a zone is UTC."""
    converted = {}
    for column in (TIMESTAMP, CUTOFF):
        if column in events.columns and not pd.api.types.is_datetime64_any_dtype(events[column]):
            try:
                converted[column] = pd.to_datetime(events[column], utc=True, format="ISO8601")
            except (ValueError, TypeError) as error:
                raise ScoringError(f"events: column {column!r} holds a value that is not an ISO 8601 time: {error}") from error
    return events.assign(**converted) if converted else events


# ------------------------------------------------------------------------------------------ logging


def model_signature(scorer: Scorer) -> ModelSignature:
    """Input: canonical event columns (+ optional ``cutoff``); output: the score columns of ``scorer``."""
    dataset = scorer.preprocessor.dataset
    inputs = [
        ColSpec("string", CUSTOMER_ID),
        ColSpec(AnyType(), TIMESTAMP),
        ColSpec("string", EVENT_TYPE),
        ColSpec("string", EVENT_ID, required=False),
        *[ColSpec("string", name, required=False) for name in dataset.categorical_fields],
        *[ColSpec("double", name, required=False) for name in dataset.numeric_fields],
        ColSpec(AnyType(), CUTOFF, required=False),
    ]
    outputs = [ColSpec("string", CUSTOMER_ID), ColSpec("datetime", CUTOFF), ColSpec("long", "n_events")]
    if Task.OUTCOME in scorer.model.tasks:
        outputs += [ColSpec("double", f"p_{name}") for name in scorer.preprocessor.outcome_names]
        outputs += [ColSpec("string", ineligible_reason_column(name), required=False) for name in scorer.judged_outcomes]
        if scorer.calibration is not None:
            flags = scorer.calibration.flag_columns(scorer.preprocessor.outcome_names)
            outputs += [ColSpec("boolean", name) for name in flags]
    if Task.NEXT_EVENT in scorer.model.tasks:
        for k in range(1, scorer.top_k + 1):
            outputs += [ColSpec("string", f"next_event_{k}"), ColSpec("double", f"p_next_event_{k}")]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs))


def input_example_events(preprocessor: Preprocessor, customers: int = 2, events_per_customer: int = 12) -> pd.DataFrame:
    """Made-up canonical events with cut-offs, for the model's input example: built from the schema alone.

    The logged example travels with every copy of the model, so it holds nothing of a training customer and
    never reads the event folder: customer ids ``example-1`` …, event types (the schema's vocabulary: what
    kinds of events exist, not who did them), categorical fields the value ``example`` (read as out-of-vocabulary;
    the vocabularies' values were seen in training), round amounts (10, 20, …) and dates from 2024-01-01.
    """
    dataset = preprocessor.dataset
    event_types = preprocessor.vocabularies[EVENT_TYPE]
    types = list(event_types.tokens[event_types.num_reserved:])[:events_per_customer] or ["event"]
    start = pd.Timestamp("2024-01-01", tz="UTC")
    rows = []
    for c in range(1, customers + 1):
        for i in range(events_per_customer):
            row: dict[str, Any] = {CUSTOMER_ID: f"example-{c}", TIMESTAMP: start + pd.Timedelta(days=3 * i + c),
                                   EVENT_TYPE: types[i % len(types)], EVENT_ID: f"example-{c}-{i + 1}"}
            for name in dataset.categorical_fields:
                row[name] = "example"
            for name in dataset.numeric_fields:
                row[name] = float(10 * (i + 1))
            rows.append(row)
    frame = pd.DataFrame(rows)
    last = frame.groupby(CUSTOMER_ID)[TIMESTAMP].transform("max")
    frame[CUTOFF] = (pd.to_datetime(last, utc=True) + pd.Timedelta(days=1)).dt.floor("D")
    return frame


def model_requirements(constraints_file: Path) -> list[str]:
    """Pinned pip requirements of the scoring code, with torch pinned and constrained."""
    constraints_file.write_text(TORCH_PIN + "\n")
    pins = [TORCH_PIN]
    for package in SCORING_PACKAGES:
        try:
            pins.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            pins.append(package)
    return [*pins, f"-c {constraints_file}"]


def log_journey_model(scorer: Scorer, input_example: pd.DataFrame | None, name: str = "model",
                      metadata_tags: dict[str, Any] | None = None) -> mlflow.models.model.ModelInfo:
    """Log ``scorer`` as a pyfunc model in the active run; returns MLflow's ModelInfo (``model_uri`` …)."""
    with tempfile.TemporaryDirectory(prefix="journey-model-") as tmp:
        bundle = scorer.save(Path(tmp) / BUNDLE_ARTIFACT)
        code = Path(tmp) / "code" / PACKAGE_DIR.name
        shutil.copytree(PACKAGE_DIR, code, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        pyfunc_logger = logging.getLogger("mlflow.pyfunc")
        level = pyfunc_logger.level
        pyfunc_logger.setLevel(logging.ERROR)  # the cloudpickle notice: the model class is pickled by reference
        try:
            return mlflow.pyfunc.log_model(
                name=name, python_model=JourneyPyfuncModel(), artifacts={BUNDLE_ARTIFACT: str(bundle)},
                signature=model_signature(scorer), input_example=input_example,
                pip_requirements=model_requirements(Path(tmp) / "constraints.txt"), code_paths=[str(code)],
                metadata={"journey": {**scorer.describe(), **(metadata_tags or {})}},
            )
        finally:
            pyfunc_logger.setLevel(level)


# ------------------------------------------------------------------------------------------ loading

_LOGGED_MODEL_ID = re.compile(r"m-[0-9a-f]{32}")


def load_scorer(model_uri: str, batch_size: int = 256) -> Scorer:
    """The :class:`Scorer` inside any MLflow model URI (or local MLflow model folder) of a Journey model."""
    if _LOGGED_MODEL_ID.fullmatch(model_uri):
        model_uri = f"models:/{model_uri}"
    local = Path(model_uri)
    if "://" not in model_uri and not model_uri.startswith("models:/") and local.is_dir():
        return _scorer_from_model_dir(local, model_uri, batch_size)
    with tempfile.TemporaryDirectory(prefix="journey-scorer-") as tmp:
        downloaded = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))
        return _scorer_from_model_dir(downloaded, model_uri, batch_size)


def _scorer_from_model_dir(folder: Path, model_uri: str, batch_size: int) -> Scorer:
    bundle = folder / "artifacts" / BUNDLE_ARTIFACT
    if not is_bundle(bundle):
        raise ScoringError(f"{model_uri}: no Journey bundle at artifacts/{BUNDLE_ARTIFACT}/{MANIFEST_FILE}; "
                           "is this a model logged by `journey train`?")
    return Scorer.load(bundle, batch_size=batch_size)


__all__ = ["JourneyPyfuncModel", "load_scorer", "log_journey_model", "model_signature", "input_example_events"]

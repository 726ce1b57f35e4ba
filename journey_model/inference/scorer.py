"""Scoring written once: raw canonical events (+ cut-offs) -> outcome probabilities and top-k next events.

A :class:`Scorer` is a trained model plus the preprocessing artifact it was trained with. It is what the
MLflow pyfunc model wraps, what batch scoring streams customers through and what the online API calls, so
every path turns events into ids, buckets and scores with the same code
(:func:`journey_model.data.sequences.encode_examples` and
:func:`journey_model.data.batch.collate_examples`).

A saved model bundle (version 2) is a folder with ``weights.safetensors`` (the weights: tensors only),
``model.json`` (model name, config, tasks, top-k), ``preprocessing.json``, ``calibration.json`` when the model
was calibrated, and ``bundle.json``, the manifest: the bundle version and the sha256 of every other file (and
its own checksum). :meth:`Scorer.save` writes it, :meth:`Scorer.load` verifies every file against the manifest
before it reads any, then reads it back in a process that has nothing else on hand. Nothing in a bundle is
unpickled: a version-1 bundle (a pickled ``model.pt``, no checksums) is read with ``torch.load(weights_only=True)``
(tensors and plain values; any other object is refused) and a warning to re-export it.

**Calibrated scores.** With a calibration (:mod:`journey_model.models.calibration`), ``p_<outcome>`` is the
*calibrated* probability (the raw sigmoid is not kept), and each outcome with an operating point gets a
boolean ``flag_<outcome>`` column (``p >= threshold``; a NaN probability is never flagged).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import safetensors
import safetensors.torch
import torch

from journey_model.core.files import unpickling_error_reason, write_bytes_atomic, write_text_atomic
from journey_model.core.fingerprint import file_digest, fingerprint
from journey_model.data.batch import SequenceBatch, collate_examples
from journey_model.data.eligibility import ineligible_reason_column, outcomes_with_rules
from journey_model.data.features import EOS_ID, EVENT_TYPE_SPECIAL_IDS
from journey_model.data.preprocessing import ARTIFACT_FILE as PREPROCESSING_FILE
from journey_model.data.preprocessing import Preprocessor
from journey_model.data.schema import CUSTOMER_ID, EVENT_TYPE, TIMESTAMP, TIMESTAMP_TYPE, conform_table
from journey_model.data.sequences import CUTOFF, encode_examples
from journey_model.models import build_model
from journey_model.models.base import LEGACY_TRAINING_FIELDS, JourneyModel
from journey_model.models.calibration import CALIBRATION_FILE, Calibration
from journey_model.models.output import ModelOutput
from journey_model.models.registry import config_fields, saved_before
from journey_model.models.tasks import Task

MANIFEST_FILE = "bundle.json"  # what makes a folder a bundle: its version and the sha256 of every other file
MODEL_CONFIG_FILE = "model.json"  # model name, config, tasks, top-k
WEIGHTS_FILE = "weights.safetensors"
LEGACY_MODEL_FILE = "model.pt"  # bundle version 1: a pickle, read only with torch.load(weights_only=True)
BUNDLE_VERSION = 2
BUNDLE_FILES = (MODEL_CONFIG_FILE, WEIGHTS_FILE, PREPROCESSING_FILE)  # in every bundle; calibration.json optional

log = logging.getLogger(__name__)


class ScoringError(ValueError):
    """Input that cannot be scored; the message names the customer, the row and the field."""


class Scorer:
    """A model and its preprocessing, ready to score raw events."""

    def __init__(self, model: JourneyModel, preprocessor: Preprocessor, top_k: int = 3, batch_size: int = 256,
                 calibration: Calibration | None = None):
        self.model = model.eval()
        self.calibration = calibration  # calibrated p_<outcome> and flag_<outcome>; None: raw sigmoids
        self.preprocessor = preprocessor
        self.top_k = top_k
        self.batch_size = batch_size
        self.event_types = preprocessor.vocabularies[EVENT_TYPE]

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | Path) -> Path:
        """Write the bundle into ``folder``: ``weights.safetensors``, ``model.json``, ``preprocessing.json``
        [+ ``calibration.json``], each atomically, then the manifest ``bundle.json`` with their sha256."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = getattr(self.model, "config", None)
        description = {
            "version": BUNDLE_VERSION,
            "model_name": self.model.model_name,
            "config": dataclasses.asdict(config) if dataclasses.is_dataclass(config) else {},
            "tasks": [t.value for t in self.model.tasks],
            "top_k": self.top_k,
        }
        # Each tensor its own contiguous copy: safetensors refuses tensors that share memory (tied weights).
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in self.model.state_dict().items()}
        write_bytes_atomic(folder / WEIGHTS_FILE, safetensors.torch.save(tensors))
        write_text_atomic(folder / MODEL_CONFIG_FILE, json.dumps(description, indent=1, sort_keys=True))
        self.preprocessor.save(folder / PREPROCESSING_FILE)
        files = list(BUNDLE_FILES)
        if self.calibration is not None:
            write_text_atomic(folder / CALIBRATION_FILE, self.calibration.dumps())
            files.append(CALIBRATION_FILE)
        else:
            (folder / CALIBRATION_FILE).unlink(missing_ok=True)  # a stale one would calibrate another model
        (folder / LEGACY_MODEL_FILE).unlink(missing_ok=True)  # saved over a version-1 bundle
        seal_bundle(folder, files)
        return folder

    @classmethod
    def load(cls, folder: str | Path, batch_size: int = 256) -> Scorer:
        """The bundle in ``folder``, every file checked against the manifest's sha256 before it is read.

        A missing, changed, truncated or zeroed file is a :class:`ScoringError` naming it. A version-1 bundle
        (``model.pt``) is read with ``torch.load(weights_only=True)`` — tensors and plain values only, no code
        runs — and a warning: it has no checksums; ``Scorer.load(folder).save(folder)`` re-exports it.
        """
        folder = Path(folder)
        if not (folder / MANIFEST_FILE).is_file() and (folder / LEGACY_MODEL_FILE).is_file():
            return cls._load_version_1(folder, batch_size)
        contents = read_bundle(folder)
        description = _parse(folder / MODEL_CONFIG_FILE, lambda: json.loads(contents[MODEL_CONFIG_FILE]))
        preprocessor = _parse(folder / PREPROCESSING_FILE, lambda: Preprocessor.from_dict(
            json.loads(contents[PREPROCESSING_FILE]), source=str(folder / PREPROCESSING_FILE)))
        weights = _parse(folder / WEIGHTS_FILE, lambda: safetensors.torch.load(contents[WEIGHTS_FILE]))
        if description.get("version") != BUNDLE_VERSION:
            raise ScoringError(f"{folder / MODEL_CONFIG_FILE}: bundle version {description.get('version')!r}, "
                               f"expected {BUNDLE_VERSION}")
        calibration = None
        if CALIBRATION_FILE in contents:
            calibration = _parse(folder / CALIBRATION_FILE,
                                 lambda: Calibration.from_json(json.loads(contents[CALIBRATION_FILE])))
        return cls._build(folder / MODEL_CONFIG_FILE, folder / WEIGHTS_FILE, description, weights, preprocessor,
                          calibration, batch_size)

    @classmethod
    def _load_version_1(cls, folder: Path, batch_size: int) -> Scorer:
        """A bundle of Journey before version 2 (a pickled ``model.pt``), read without running any code."""
        path = folder / LEGACY_MODEL_FILE
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # UnpicklingError (a global it refuses), RuntimeError / EOFError (damaged) …
            raise ScoringError(
                f"{path}: a version-1 model bundle (a pickle) that cannot be read as plain weights "
                f"({unpickling_error_reason(error)}); it is not unpickled any further. Re-export the model "
                f"with this Journey (version-{BUNDLE_VERSION} bundles: safetensors, JSON, sha256 manifest)") from error
        if not isinstance(payload, dict) or payload.get("version") != 1 or "state_dict" not in payload:
            raise ScoringError(f"{path}: not a Journey version-1 model bundle; re-export the model with this Journey")
        log.warning("%s: a version-1 model bundle (pickled model.pt, read with weights_only=True; no checksums to "
                    "verify it against): re-export it with Scorer.load(folder).save(folder)", path)
        preprocessor = _parse(folder / PREPROCESSING_FILE, lambda: Preprocessor.load(folder))
        calibration = None
        if (folder / CALIBRATION_FILE).is_file():
            calibration = _parse(folder / CALIBRATION_FILE, lambda: Calibration.read(folder / CALIBRATION_FILE))
        return cls._build(path, path, payload, payload["state_dict"], preprocessor, calibration, batch_size)

    @classmethod
    def _build(cls, description_path: Path, weights_path: Path, description: dict[str, Any],
               weights: dict[str, torch.Tensor], preprocessor: Preprocessor, calibration: Calibration | None,
               batch_size: int) -> Scorer:
        name = description["model_name"]
        # Bundles saved while model configs still held training settings (optimizer, learning_rate, ...) carry
        # them in their config; the model never read them, so they are dropped. Any other unknown key still fails.
        accepted = config_fields(name)
        config = {k: v for k, v in description["config"].items() if k in accepted or k not in LEGACY_TRAINING_FIELDS}
        config = {**saved_before(name), **config}  # fields newer than the bundle: the values it was built with
        model = build_model(name, preprocessor.feature_spec(), tasks=description["tasks"], **config)
        _parse(weights_path, lambda: model.load_state_dict(weights))
        return cls(model, preprocessor, top_k=description.get("top_k", 3), batch_size=batch_size,
                   calibration=calibration)

    # ------------------------------------------------------------------ metadata
    @property
    def judged_outcomes(self) -> list[str]:
        """The model's outcomes whose eligibility the dataset declares (their ineligible customers get no score)."""
        return outcomes_with_rules(self.preprocessor.dataset, list(self.preprocessor.outcome_names))

    @property
    def output_columns(self) -> list[str]:
        columns = [CUSTOMER_ID, CUTOFF, "n_events"]
        if Task.OUTCOME in self.model.tasks:
            columns += [f"p_{name}" for name in self.preprocessor.outcome_names]
            columns += [ineligible_reason_column(name) for name in self.judged_outcomes]
            if self.calibration is not None:
                columns += self.calibration.flag_columns(self.preprocessor.outcome_names)
        if Task.NEXT_EVENT in self.model.tasks:
            for k in range(1, self.top_k + 1):
                columns += [f"next_event_{k}", f"p_next_event_{k}"]
        return columns

    # ------------------------------------------------------------------ scoring
    def examples_from_events(self, events: pd.DataFrame | pa.Table) -> tuple[pa.Table, pa.Table]:
        """Canonical events (+ an optional ``cutoff`` column) -> (events table, examples table).

        A customer's cut-off is the value of its ``cutoff`` column (one value per customer), or, where it
        is missing, one microsecond after the customer's last event (score "now", with every event).
        """
        table = events if isinstance(events, pa.Table) else pa.Table.from_pandas(events, preserve_index=False)
        cutoffs = None
        if CUTOFF in table.column_names:
            cutoffs = table.select([CUSTOMER_ID, CUTOFF])
            table = table.drop_columns([CUTOFF])
        table = conform_table(table, self.preprocessor.dataset, source="events")
        for name in (CUSTOMER_ID, TIMESTAMP, EVENT_TYPE):
            nulls = table.column(name).null_count
            if nulls:
                row = int(np.flatnonzero(table.column(name).is_null().to_numpy(zero_copy_only=False))[0])
                raise ScoringError(f"events: field {name!r} is null in {nulls} rows (first at row {row})")
        frame = table.select([CUSTOMER_ID, TIMESTAMP]).to_pandas()
        last = frame.groupby(CUSTOMER_ID, sort=False)[TIMESTAMP].max() + pd.Timedelta(microseconds=1)
        examples = pd.DataFrame({CUSTOMER_ID: last.index.astype(str), CUTOFF: last.to_numpy()})
        if cutoffs is not None:
            given = cutoffs.to_pandas()
            given[CUTOFF] = pd.to_datetime(given[CUTOFF], utc=True)
            per_customer = given.dropna().groupby(CUSTOMER_ID, sort=False)[CUTOFF].agg(["min", "max"])
            conflicting = per_customer[per_customer["min"] != per_customer["max"]]
            if len(conflicting):
                raise ScoringError(
                    f"events: customer {conflicting.index[0]!r} has more than one cutoff "
                    f"({conflicting['min'].iloc[0]} and {conflicting['max'].iloc[0]}); give one per customer"
                )
            chosen = examples[CUSTOMER_ID].map(per_customer["min"])
            examples[CUTOFF] = chosen.where(chosen.notna(), examples[CUTOFF])
        examples_table = pa.table({
            CUSTOMER_ID: pa.array(examples[CUSTOMER_ID], pa.string()),
            CUTOFF: pa.array(pd.to_datetime(examples[CUTOFF], utc=True)).cast(TIMESTAMP_TYPE),
        })
        return table, examples_table

    def score_events(self, events: pd.DataFrame | pa.Table) -> pd.DataFrame:
        """Score every customer in ``events`` (canonical columns, optional ``cutoff``); one row per customer."""
        table, examples = self.examples_from_events(events)
        rows = encode_examples(self.preprocessor, table, examples)
        return self.score_rows(rows)

    def score_rows(self, rows: pa.Table) -> pd.DataFrame:
        """Score already-encoded example rows (from `journey prepare` or :func:`~journey_model.data.sequences.encode_examples`)."""
        pieces = []
        for start in range(0, rows.num_rows, self.batch_size):
            chunk = rows.slice(start, self.batch_size).to_pylist()
            pieces.append(self._score_batch(chunk))
        if not pieces:
            return pd.DataFrame(columns=self.output_columns)
        return pd.concat(pieces, ignore_index=True)

    def collate(self, examples: list[dict[str, Any]]) -> SequenceBatch:
        dataset = self.preprocessor.dataset
        return collate_examples(examples, dataset.categorical_fields, dataset.numeric_fields,
                                max_len=self.preprocessor.config.max_len)

    @torch.no_grad()
    def _score_batch(self, examples: list[dict[str, Any]]) -> pd.DataFrame:
        batch, output = self.forward(examples)
        return self.frame_from_output(examples, batch, output)

    @torch.no_grad()
    def forward(self, examples: list[dict[str, Any]], output_attentions: bool = False) -> tuple[SequenceBatch, ModelOutput]:
        """One forward pass over encoded examples; ``output_attentions=True`` also returns attention weights."""
        batch = self.collate(examples)
        return batch, self.model(batch, output_attentions=output_attentions)

    def frame_from_output(self, examples: list[dict[str, Any]], batch: SequenceBatch, output: ModelOutput) -> pd.DataFrame:
        """Scores of one forward pass as rows of :attr:`output_columns`, in the order of ``examples``."""
        return pd.DataFrame(self.score_columns(examples, batch, output))

    def score_columns(self, examples: list[dict[str, Any]], batch: SequenceBatch, output: ModelOutput) -> dict[str, Any]:
        """Scores of one forward pass as columns (name -> array or list) in the order of :attr:`output_columns`.

        The online API reads these directly: building a DataFrame costs more than a one-customer forward pass.
        """
        columns: dict[str, Any] = {
            CUSTOMER_ID: [ex[CUSTOMER_ID] for ex in examples],
            CUTOFF: [ex[CUTOFF] for ex in examples],
            "n_events": batch.lengths.numpy(),
        }
        if output.outcome_logits is not None:
            probabilities = torch.sigmoid(output.outcome_logits.float()).numpy()
            for j, name in enumerate(self.preprocessor.outcome_names):
                columns[f"p_{name}"] = probabilities[:, j]
            for name in self.judged_outcomes:  # an ineligible customer gets a reason instead of a score
                reasons = [ex.get(ineligible_reason_column(name)) for ex in examples]
                ineligible = np.array([reason is not None for reason in reasons])
                columns[f"p_{name}"] = np.where(ineligible, np.nan, columns[f"p_{name}"]).astype(np.float32)
                columns[ineligible_reason_column(name)] = reasons
            if self.calibration is not None:  # calibrated p_<outcome> in place (NaN stays NaN), then flag_<outcome>
                self.calibration.apply_columns(columns, self.preprocessor.outcome_names)
        if output.next_event_logits is not None:
            logits = output.next_event_logits.float().clone()
            logits[:, list(EVENT_TYPE_SPECIAL_IDS)] = float("-inf")
            probabilities = torch.softmax(logits, dim=-1)
            top = probabilities.topk(min(self.top_k, probabilities.shape[1] - len(EVENT_TYPE_SPECIAL_IDS)), dim=-1)
            for k in range(top.indices.shape[1]):
                columns[f"next_event_{k + 1}"] = self.event_types.decode(top.indices[:, k].tolist())
                columns[f"p_next_event_{k + 1}"] = top.values[:, k].numpy()
        return columns

    def describe(self) -> dict[str, Any]:
        """Model and data facts for metadata endpoints and MLflow tags."""
        return {
            "model_name": self.model.model_name,
            "tasks": [t.value for t in self.model.tasks],
            "outcomes": list(self.preprocessor.outcome_names),
            "input_hash": self.preprocessor.input_hash,
            "artifact_hash": self.preprocessor.artifact_hash,
            "vocabulary_sizes": {name: len(v) for name, v in self.preprocessor.vocabularies.items()},
            "max_len": self.preprocessor.config.max_len,
            "eos_id": EOS_ID,
            "calibration": self.calibration.describe() if self.calibration is not None else None,
        }


# ------------------------------------------------------------------ opening a model by URI
@dataclasses.dataclass
class ModelIdentity:
    """Which model answers: what the API reports and batch scoring writes next to every score."""

    name: str  # registered model name, or the bundle folder's name
    version: str  # registry version, MLflow model id / run id, or the bundle's content hash
    uri: str  # what was asked for: a bundle folder or an MLflow model URI
    alias: str | None = None  # the registry alias the URI named (champion …), if any
    architecture: str = ""  # model zoo name (atrank …)
    training_data_hash: str = ""  # sha256 of the event files the preprocessing was fitted on
    artifact_hash: str = ""  # content hash of the preprocessing artifact


def open_bundle(folder: str | Path, batch_size: int = 256) -> tuple[Scorer, ModelIdentity]:
    """A :class:`Scorer` and its identity from a bundle folder (``bundle.json`` + the files it lists).

    MLflow model URIs (``models:/NAME@ALIAS`` …) are opened one layer up, by
    :func:`journey_model.tracking.loading.open_model`, which reads the bundle inside the logged model.
    """
    path = Path(folder)
    if not is_bundle(path):
        raise ScoringError(f"model {str(folder)!r}: not a model bundle folder (no {MANIFEST_FILE}); MLflow model URIs "
                           "are opened by journey_model.tracking.loading.open_model")
    scorer = Scorer.load(path, batch_size=batch_size)
    return scorer, bundle_identity(scorer, name=path.resolve().name, version=bundle_hash(path), uri=str(folder))


def bundle_identity(scorer: Scorer, name: str, version: str, uri: str, alias: str | None = None) -> ModelIdentity:
    """The identity of ``scorer``: the given name / version / URI plus what the bundle knows of itself."""
    return ModelIdentity(name=name, version=version, uri=uri, alias=alias, architecture=scorer.model.model_name,
                         training_data_hash=scorer.preprocessor.input_hash,
                         artifact_hash=scorer.preprocessor.artifact_hash)


def bundle_hash(folder: Path) -> str:
    """Content hash of a bundle's files (from the sha256 its manifest records for each): two bundles with the
    same hash score identically. :meth:`Scorer.load` is what checks the files against the manifest."""
    folder = Path(folder)
    if not (folder / MANIFEST_FILE).is_file() and (folder / LEGACY_MODEL_FILE).is_file():  # version 1, as it was
        files = [folder / LEGACY_MODEL_FILE, folder / PREPROCESSING_FILE]
        return file_digest(files + ([folder / CALIBRATION_FILE] if (folder / CALIBRATION_FILE).exists() else []),
                           length=12)
    return fingerprint(_read_manifest(folder)["files"], length=12)


# ------------------------------------------------------------------------------------------ the bundle's files


def is_bundle(folder: str | Path) -> bool:
    """Whether ``folder`` is a model bundle (of this version, or a version-1 one that loading refuses)."""
    folder = Path(folder)
    return (folder / MANIFEST_FILE).is_file() or (folder / LEGACY_MODEL_FILE).is_file()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _manifest_checksum(manifest: dict[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return sha256_hex(json.dumps(body, sort_keys=True).encode())


def seal_bundle(folder: str | Path, files: list[str]) -> Path:
    """Write ``bundle.json``: the bundle version and the sha256 of each of ``files`` as they are on disk now."""
    folder = Path(folder)
    manifest: dict[str, Any] = {
        "format": "journey-model-bundle",
        "version": BUNDLE_VERSION,
        "files": {name: sha256_hex((folder / name).read_bytes()) for name in sorted(files)},
    }
    manifest["manifest_sha256"] = _manifest_checksum(manifest)
    return write_text_atomic(folder / MANIFEST_FILE, json.dumps(manifest, indent=1, sort_keys=True))


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST_FILE
    if not path.is_file():
        if (folder / LEGACY_MODEL_FILE).is_file():
            raise ScoringError(f"{folder / LEGACY_MODEL_FILE}: a version-1 model bundle, without checksums: re-export "
                               "it with Scorer.load(folder).save(folder)")
        raise ScoringError(f"{folder}: no {MANIFEST_FILE}; not a Journey model bundle")
    try:
        manifest = json.loads(path.read_bytes())
        files = manifest["files"]
        recorded = manifest["manifest_sha256"]
        if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
            raise TypeError("'files' is not a map of file name to sha256")
    except (ValueError, KeyError, TypeError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ScoringError(f"{path}: damaged bundle manifest ({type(error).__name__}: {error}); "
                           "re-export the bundle") from error
    if recorded != _manifest_checksum(manifest):
        raise ScoringError(f"{path}: damaged bundle manifest (its contents do not match its own sha256); "
                           "re-export the bundle")
    if manifest.get("version") != BUNDLE_VERSION:
        raise ScoringError(f"{path}: bundle version {manifest.get('version')!r}; this Journey reads version "
                           f"{BUNDLE_VERSION}: re-export the model with this Journey")
    unknown = sorted(set(files) - {*BUNDLE_FILES, CALIBRATION_FILE})
    missing = sorted(set(BUNDLE_FILES) - set(files))
    if unknown or missing:
        raise ScoringError(f"{path}: lists {unknown or 'no unknown files'} and lacks {missing or 'nothing'}; "
                           f"a bundle holds {list(BUNDLE_FILES)} [+ {CALIBRATION_FILE}]")
    return manifest


def read_bundle(folder: str | Path) -> dict[str, bytes]:
    """The bytes of every file the manifest lists, each checked against its sha256 before it is used.

    Raises :class:`ScoringError` naming the file that is missing, changed, truncated or zeroed, or that lies
    in the folder without being listed (a calibration the manifest does not know would change the scores).
    """
    folder = Path(folder)
    manifest = _read_manifest(folder)
    if CALIBRATION_FILE not in manifest["files"] and (folder / CALIBRATION_FILE).exists():
        raise ScoringError(f"{folder / CALIBRATION_FILE}: not listed in {MANIFEST_FILE}; it is not part of this "
                           "bundle (remove it, or re-export the bundle with it)")
    contents = {}
    for name, expected in manifest["files"].items():
        path = folder / name
        try:
            data = path.read_bytes()
        except OSError as error:
            raise ScoringError(f"{path}: listed in {MANIFEST_FILE} but cannot be read ({error.strerror or error})") \
                from error
        actual = sha256_hex(data)
        if actual != expected:
            raise ScoringError(f"{path}: changed or damaged ({len(data)} bytes, sha256 {actual[:16]}…; "
                               f"{MANIFEST_FILE} records {expected[:16]}…); not loading it: re-export the bundle")
        contents[name] = data
    return contents


def _parse(path: Path, read: Any) -> Any:
    """``read()``, its errors turned into a :class:`ScoringError` naming ``path``."""
    try:
        return read()
    except ScoringError:
        raise
    except (ValueError, KeyError, TypeError, RuntimeError, safetensors.SafetensorError) as error:  # our errors too
        raise ScoringError(f"{path}: not readable as a bundle file ({type(error).__name__}: {error})") from error

"""Artifacts a bank can load safely: model bundles (safetensors + JSON + a sha256 manifest) and checkpoints
(a sha256 sidecar, read with ``weights_only=True``). Corruption is a clear error naming the file; a pickle is
never unpickled."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from journey_model.data.prepare import read_split
from journey_model.data.preprocessing import Preprocessor
from journey_model.inference.scorer import (
    BUNDLE_VERSION,
    LEGACY_MODEL_FILE,
    MANIFEST_FILE,
    MODEL_CONFIG_FILE,
    WEIGHTS_FILE,
    Scorer,
    ScoringError,
    bundle_hash,
    is_bundle,
    open_bundle,
    seal_bundle,
)
from journey_model.models import build_model, list_models
from journey_model.models.calibration import CALIBRATION_FILE, fit_calibration
from journey_model.models.registry import MODELS
from journey_model.tracking.loading import open_model
from journey_model.training.checkpoints import (
    CheckpointError,
    checksum_path,
    load_checkpoint,
    verify_checkpoint,
    write_checksum,
)

SMALL_MODEL = {"hidden_size": 16, "num_heads": 2, "field_dim": 8}
BUNDLE_FILES = [MODEL_CONFIG_FILE, WEIGHTS_FILE, "preprocessing.json", CALIBRATION_FILE, MANIFEST_FILE]


class Payload:
    """A pickle that creates ``marker`` when it is unpickled: what an attacker would put in a model file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return os.mkdir, (str(self.marker),)


def malicious_pickle(marker: Path) -> bytes:
    return pickle.dumps({"version": 1, "model_name": "atrank", "state_dict": Payload(marker)}, protocol=2)


@pytest.fixture(scope="module")
def prepared(synthetic_journeys):
    return synthetic_journeys(400, seed=5, max_len=40) / "ds"


@pytest.fixture(scope="module")
def scorer(prepared):
    preprocessor = Preprocessor.load(prepared)
    torch.manual_seed(0)
    model = build_model("atrank", preprocessor.feature_spec(), tasks=["outcome", "next_event"], **SMALL_MODEL)
    names = list(preprocessor.outcome_names)
    rng = np.random.default_rng(0)
    scores, labels = rng.random((400, len(names))), (rng.random((400, len(names))) < 0.3).astype(float)
    return Scorer(model, preprocessor, batch_size=64, calibration=fit_calibration(scores, labels, names))


@pytest.fixture()
def bundle(scorer, tmp_path) -> Path:
    return scorer.save(tmp_path / "bundle")


def test_a_bundle_is_safetensors_json_and_a_manifest_and_scores_identically(scorer, bundle, prepared):
    assert sorted(p.name for p in bundle.iterdir()) == sorted(BUNDLE_FILES)
    manifest = json.loads((bundle / MANIFEST_FILE).read_text())
    assert manifest["version"] == BUNDLE_VERSION == 2
    assert sorted(manifest["files"]) == sorted(set(BUNDLE_FILES) - {MANIFEST_FILE})
    description = json.loads((bundle / MODEL_CONFIG_FILE).read_text())
    assert description["model_name"] == "atrank" and description["tasks"] == ["outcome", "next_event"]
    loaded = Scorer.load(bundle, batch_size=64)
    torch.testing.assert_close(loaded.model.state_dict(), scorer.model.state_dict(), rtol=0, atol=0)
    test = read_split(prepared, "test")
    pd.testing.assert_frame_equal(loaded.score_rows(test), scorer.score_rows(test))
    assert loaded.calibration.to_json() == scorer.calibration.to_json()
    # the bundle's hash is a content hash: the same model saved again has the same one
    assert bundle_hash(bundle) == bundle_hash(scorer.save(bundle.parent / "again"))
    _, identity = open_bundle(bundle)
    assert identity.version == bundle_hash(bundle)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_of_the_zoo_round_trips_through_a_bundle(name, prepared, tmp_path):
    preprocessor = Preprocessor.load(prepared)
    model = build_model(name, preprocessor.feature_spec())
    folder = Scorer(model, preprocessor).save(tmp_path / name)
    loaded = Scorer.load(folder)
    assert loaded.model.model_name == name and loaded.model.tasks == model.tasks
    torch.testing.assert_close(loaded.model.state_dict(), model.state_dict(), rtol=0, atol=0)
    assert set(list_models()) >= {name}


def flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def zero(path: Path) -> None:
    data = bytearray(path.read_bytes())
    start = max(0, len(data) // 2 - 2048)
    data[start:start + 4096] = bytes(len(data[start:start + 4096]))
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage", [flip, zero, truncate])
@pytest.mark.parametrize("name", BUNDLE_FILES)
def test_a_changed_zeroed_or_truncated_file_is_refused_naming_it(bundle, name, damage):
    damage(bundle / name)
    with pytest.raises(ScoringError, match=re.escape(str(bundle / name))) as error:
        Scorer.load(bundle)
    assert "\n" not in str(error.value)


def test_a_missing_or_unlisted_file_is_refused_naming_it(scorer, tmp_path):
    folder = scorer.save(tmp_path / "missing")
    (folder / WEIGHTS_FILE).unlink()
    with pytest.raises(ScoringError, match=re.escape(str(folder / WEIGHTS_FILE)) + ": listed in bundle.json"):
        Scorer.load(folder)
    plain = Scorer(scorer.model, scorer.preprocessor).save(tmp_path / "plain")
    shutil.copy(folder / CALIBRATION_FILE, plain / CALIBRATION_FILE)  # a calibration slipped in afterwards
    with pytest.raises(ScoringError, match=re.escape(str(plain / CALIBRATION_FILE)) + ": not listed"):
        Scorer.load(plain)


def version_1_bundle(scorer: Scorer, folder: Path) -> Path:
    """A bundle as Journey wrote it before version 2: a pickled model.pt beside the JSON files."""
    scorer.save(folder)
    description = json.loads((folder / MODEL_CONFIG_FILE).read_text())
    torch.save({**description, "version": 1, "state_dict": scorer.model.state_dict()}, folder / LEGACY_MODEL_FILE)
    for name in (MANIFEST_FILE, MODEL_CONFIG_FILE, WEIGHTS_FILE):
        (folder / name).unlink()
    return folder


def test_an_old_bundle_loads_as_plain_weights_with_a_warning_and_re_exports(scorer, prepared, tmp_path, caplog):
    old = version_1_bundle(scorer, tmp_path / "old")
    loaded = Scorer.load(old, batch_size=64)
    assert "version-1 model bundle" in caplog.text and "re-export" in caplog.text
    test = read_split(prepared, "test")
    pd.testing.assert_frame_equal(loaded.score_rows(test), scorer.score_rows(test))
    _, identity = open_model(old)
    assert identity.version == bundle_hash(old)
    loaded.save(old)  # the re-export: a version-2 bundle in place, the pickle gone
    assert not (old / LEGACY_MODEL_FILE).exists() and (old / MANIFEST_FILE).exists()
    pd.testing.assert_frame_equal(Scorer.load(old, batch_size=64).score_rows(test), scorer.score_rows(test))


def test_an_old_bundle_holding_a_malicious_or_damaged_pickle_is_refused_and_never_run(scorer, tmp_path):
    old = version_1_bundle(scorer, tmp_path / "old")
    intact = (old / LEGACY_MODEL_FILE).read_bytes()
    marker = tmp_path / "pwned"
    (old / LEGACY_MODEL_FILE).write_bytes(malicious_pickle(marker))  # a plain pickle, as an attacker writes it
    assert is_bundle(old)
    for load in (Scorer.load, open_bundle, open_model):
        with pytest.raises(ScoringError, match=re.escape(str(old / LEGACY_MODEL_FILE)) + ": a version-1 .*Re-export"):
            load(old)
    torch.save({"version": 1, "state_dict": Payload(marker)}, old / LEGACY_MODEL_FILE)  # or as torch.save writes
    with pytest.raises(ScoringError, match="unsupported GLOBAL posix.mkdir"):
        Scorer.load(old)
    assert not marker.exists()
    pickle.loads(malicious_pickle(tmp_path / "live"))  # the payload is live: unpickling it would have run it
    assert (tmp_path / "live").exists()
    (old / LEGACY_MODEL_FILE).write_bytes(intact[: len(intact) // 2])
    with pytest.raises(ScoringError, match=re.escape(str(old / LEGACY_MODEL_FILE)) + ": a version-1 .*Re-export"):
        Scorer.load(old)


def test_a_pickle_in_place_of_the_weights_is_never_unpickled(bundle, tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"state": Payload(marker)}, bundle / WEIGHTS_FILE)  # a torch pickle, the manifest sealed over it
    manifest = json.loads((bundle / MANIFEST_FILE).read_text())
    seal_bundle(bundle, list(manifest["files"]))
    with pytest.raises(ScoringError, match=re.escape(str(bundle / WEIGHTS_FILE)) + ": not readable"):
        Scorer.load(bundle)
    assert not marker.exists()


# ------------------------------------------------------------------------------------------ checkpoints


def checkpoint(tmp_path: Path, payload: object = None) -> Path:
    path = tmp_path / "last.ckpt"
    torch.save(payload if payload is not None else {"state_dict": {"w": torch.arange(4096.0)}, "epoch": 3}, path)
    write_checksum(path)
    return path


def test_a_checkpoint_is_verified_against_its_sidecar_then_read_weights_only(tmp_path):
    path = checkpoint(tmp_path)
    assert checksum_path(path).read_text().split() == [checksum_path(path).read_text().split()[0], "last.ckpt"]
    assert load_checkpoint(path)["epoch"] == 3
    for damage in (zero, truncate):
        damage(path)
        with pytest.raises(CheckpointError, match=re.escape(str(path)) + ": corrupted or changed"):
            load_checkpoint(path)
        path = checkpoint(tmp_path)
    checksum_path(path).unlink()
    with pytest.raises(CheckpointError, match=re.escape(str(path)) + r": no last.ckpt.sha256 beside it"):
        verify_checkpoint(path)


def test_a_checkpoint_holding_a_pickle_is_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    path = checkpoint(tmp_path, {"state_dict": {}, "callbacks": Payload(marker)})  # even with a valid sidecar
    with pytest.raises(CheckpointError, match=re.escape(str(path)) + ": not a readable checkpoint .*unsupported GLOBAL"):
        load_checkpoint(path)
    assert not marker.exists()

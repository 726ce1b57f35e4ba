"""Open any Journey model by URI: a bundle folder, or an MLflow model (``models:/NAME@ALIAS`` …).

Serving and batch scoring ask for a model by what users write (``--model``); this is the one place that
turns it into a :class:`~journey_model.inference.scorer.Scorer` and its
:class:`~journey_model.inference.scorer.ModelIdentity`. It imports MLflow but not Lightning, so the serving
path never loads the trainer.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
from mlflow import MlflowClient

from journey_model.inference.scorer import (
    MANIFEST_FILE,
    ModelIdentity,
    Scorer,
    ScoringError,
    bundle_hash,
    bundle_identity,
    is_bundle,
    open_bundle,
)
from journey_model.tracking.pyfunc import BUNDLE_ARTIFACT, load_scorer
from journey_model.tracking.store import resolve_tracking_uri

MLFLOW_URI_PREFIXES = ("models:/", "runs:/", "m-")


def is_model_reference(text: str) -> bool:
    """Whether ``text`` can name a model: a bundle folder, an MLflow model folder or an MLflow model URI."""
    return "://" in text or text.startswith(MLFLOW_URI_PREFIXES) or Path(text).is_dir()


def open_model(uri: str | Path, batch_size: int = 256) -> tuple[Scorer, ModelIdentity]:
    """A :class:`Scorer` and its identity from a bundle folder or an MLflow model URI.

    A folder holding ``bundle.json`` (or a version-1 ``model.pt``) is a bundle (:meth:`Scorer.load`); anything
    else — ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``models:/m-<id>`` (or a bare ``m-<id>``),
    ``runs:/<run>/<path>``, a local MLflow model folder — is read by
    :func:`journey_model.tracking.pyfunc.load_scorer` (the bundle inside the pyfunc model, at ``artifacts/bundle/``), and
    the registry is asked which version an alias points at.
    """
    text = str(uri)
    path = Path(text)
    if is_bundle(path):
        return open_bundle(text, batch_size=batch_size)
    if path.is_dir():  # a local MLflow model folder: named by the folder, versioned by its bundle
        scorer = _load_mlflow_scorer(text, batch_size)
        return scorer, bundle_identity(scorer, path.resolve().name, bundle_hash(path / "artifacts" / BUNDLE_ARTIFACT),
                                       text)
    if not is_model_reference(text):
        raise ScoringError(
            f"model {text!r}: neither a model bundle folder (with {MANIFEST_FILE}) nor an MLflow model URI "
            "(models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/PATH)"
        )
    _use_the_project_tracking_store()
    name, version, alias = _registry_identity(text)
    # Load the version the alias points at now, so that the identity and the weights always agree.
    scorer = _load_mlflow_scorer(f"models:/{name}/{version}" if alias else text, batch_size)
    return scorer, bundle_identity(scorer, name, version, text, alias)


def _use_the_project_tracking_store() -> None:
    """Read models:/ URIs from the store `journey train` writes to when nobody chose another one.

    ``$MLFLOW_TRACKING_URI`` or a tracking URI set in this process wins; otherwise it is Journey's embedded
    store (``work/mlflow.db``), as for training, rather than MLflow's own default.
    """
    if not mlflow.tracking.is_tracking_uri_set():
        mlflow.set_tracking_uri(resolve_tracking_uri())


def _load_mlflow_scorer(uri: str, batch_size: int) -> Scorer:
    try:
        return load_scorer(uri, batch_size=batch_size)
    except ScoringError:
        raise
    except Exception as error:  # MLflow raises its own exception types for unknown names, aliases, runs
        raise ScoringError(f"model {uri!r}: cannot load it from MLflow: {error}") from error


def _registry_identity(uri: str) -> tuple[str, str, str | None]:
    """(name, version, alias) of an MLflow model URI; the registry resolves aliases to versions."""
    if uri.startswith("models:/"):
        rest = uri[len("models:/"):].strip("/")
        if "@" in rest:
            name, alias = rest.split("@", 1)
            try:
                version = MlflowClient().get_model_version_by_alias(name, alias).version
            except Exception as error:
                raise ScoringError(f"model {uri!r}: the registry has no alias {alias!r} for {name!r}: {error}") from error
            return name, str(version), alias
        if "/" in rest:
            name, version = rest.rsplit("/", 1)
            return name, version, None
        return rest, rest, None  # models:/m-<id>: a logged model that is not registered
    if uri.startswith("m-"):
        return uri, uri, None
    if uri.startswith("runs:/"):
        run_id, _, path = uri[len("runs:/"):].partition("/")
        return path or run_id, run_id, None
    return uri, "", None


__all__ = ["ModelIdentity", "is_model_reference", "open_model"]

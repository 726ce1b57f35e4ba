"""The MLflow model registry for Journey: register a run's model, and promote it only when it is better.

A registered model is named ``journey-<dataset>-<task>`` (:func:`journey_model.tracking.store.registered_model_name`).
Each version carries tags copied from its training run: ``dataset``, ``task``, ``model`` (architecture),
``data_hash`` (hash of the input event files), ``preprocessing_hash``, ``git_commit``, ``run_id`` and
the validation metric that decides promotion (``validation_metric``, ``validation_mode``,
``validation_value``, measured on the best checkpoint).

:func:`promote` moves the ``champion`` alias (aliases, not the deprecated stages) to a candidate version only
when the candidate beats the current champion on that validation metric — strictly: a tie keeps the
champion — and returns a :class:`PromotionDecision` whose ``message`` says what happened and why, either way.
The message and the decision also give both versions' figures at their operating points (precision, recall,
lift at the top decile, from their runs' ``test/op_precision/<outcome>`` … metrics: the test split, which no
fitting touched; the thresholds were chosen on validation). ``promote(..., by="op_precision/churn")`` decides
on one of those figures instead (higher is better).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from journey_model.tracking.store import mlflow_scope

CHAMPION_ALIAS = "champion"
RUN_TAG_PREFIX = "journey."  # run tags with this prefix become version tags (without it)
VALIDATION_METRIC, VALIDATION_MODE, VALIDATION_VALUE = "validation_metric", "validation_mode", "validation_value"
OPERATING_FIGURES = ("op_precision", "op_recall", "lift10")  # run metrics test/<figure>/<outcome>
OPERATING_SPLIT = "test"


class PromotionError(ValueError):
    """The registry holds nothing that can be promoted, or the versions cannot be compared."""


@dataclass
class PromotionDecision:
    """What :func:`promote` did."""

    name: str  # registered model
    candidate_version: str
    champion_version: str | None  # the champion before the decision (None: there was none)
    promoted: bool  # True when the alias now points at the candidate because of this call
    metric: str  # the validation metric compared
    mode: str  # "min" or "max"
    candidate_value: float
    champion_value: float | None
    message: str  # one line for people
    # test-split figures at the operating point per version ("op_precision/churn" -> value); empty when unlogged
    candidate_operating: dict[str, float] = field(default_factory=dict)
    champion_operating: dict[str, float] = field(default_factory=dict)


def register_run_model(model_uri: str, name: str, run_id: str, client: MlflowClient | None = None) -> ModelVersion:
    """Register ``model_uri`` as a new version of ``name``, tagged with the run's ``journey.*`` tags."""
    client = client or MlflowClient()
    run = client.get_run(run_id)
    tags = {k.removeprefix(RUN_TAG_PREFIX): v for k, v in run.data.tags.items() if k.startswith(RUN_TAG_PREFIX)}
    tags["run_id"] = run_id
    try:
        client.create_registered_model(name, tags={"dataset": tags.get("dataset", ""), "task": tags.get("task", "")},
                                       description="Journey model; promote with `journey promote`.")
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    # MLflow resolves a models:/m-... source through the process-wide tracking URI: make it the client's.
    with mlflow_scope(client.tracking_uri):
        return client.create_model_version(name=name, source=model_uri, run_id=run_id, tags=tags)


def _versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    try:
        return list(client.search_model_versions(f"name = '{name}'"))
    except MlflowException as error:
        raise PromotionError(f"registered model {name!r}: {error.message}") from error


def _alias_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _validation(version: ModelVersion, name: str) -> tuple[str, str, float]:
    tags = version.tags or {}
    missing = [t for t in (VALIDATION_METRIC, VALIDATION_MODE, VALIDATION_VALUE) if t not in tags]
    if missing:
        raise PromotionError(f"{name} version {version.version} lacks the tags {missing}; register it with "
                             "`journey train` (or set them) so it can be compared")
    value = float(tags[VALIDATION_VALUE])
    if math.isnan(value):
        raise PromotionError(f"{name} version {version.version}: {tags[VALIDATION_METRIC]} is NaN")
    return tags[VALIDATION_METRIC], tags[VALIDATION_MODE], value


def operating_figures(client: MlflowClient, version: ModelVersion) -> dict[str, float]:
    """``{"op_precision/churn": …, "op_recall/churn": …, "lift10/churn": …}`` from the version's run (test split)."""
    run_id = version.run_id or (version.tags or {}).get("run_id")
    if not run_id:
        return {}
    try:
        metrics = client.get_run(run_id).data.metrics
    except MlflowException:
        return {}
    prefixes = tuple(f"{OPERATING_SPLIT}/{figure}/" for figure in OPERATING_FIGURES)
    return {k.removeprefix(f"{OPERATING_SPLIT}/"): float(v) for k, v in sorted(metrics.items()) if k.startswith(prefixes)}


def describe_operating(candidate: dict[str, float], champion: dict[str, float] | None) -> str:
    """``"; at the operating point (test): churn precision 0.55 vs 0.50, recall …"`` (empty without figures)."""
    outcomes = sorted({key.split("/", 1)[1] for key in candidate})
    parts = []
    for outcome in outcomes:
        shown = []
        for figure, label in zip(OPERATING_FIGURES, ("precision", "recall", "lift10")):
            key = f"{figure}/{outcome}"
            if key not in candidate:
                continue
            text = f"{label} {candidate[key]:.3f}"
            if champion is not None:
                text += f" vs {champion[key]:.3f}" if key in champion else " vs n/a"
            shown.append(text)
        parts.append(f"{outcome} {', '.join(shown)}")
    if not parts:
        return ""
    whose = "candidate vs champion, " if champion is not None else ""
    return f"; at the operating point ({whose}{OPERATING_SPLIT} split): " + "; ".join(parts)


def _by_figure(by: str, version: ModelVersion, figures: dict[str, float], name: str) -> tuple[str, str, float]:
    if by.split("/", 1)[0] not in OPERATING_FIGURES or "/" not in by:
        raise PromotionError(f"promote by {by!r}: expected FIGURE/OUTCOME with FIGURE one of {list(OPERATING_FIGURES)}")
    value = figures.get(by)
    if value is None or math.isnan(value):
        raise PromotionError(f"{name} version {version.version}: its run has no {OPERATING_SPLIT}/{by} metric "
                             "(trained before calibration, or without an operating point for that outcome)")
    return f"{OPERATING_SPLIT}/{by}", "max", value


def promote(name: str, version: str | int | None = None, alias: str = CHAMPION_ALIAS,
            client: MlflowClient | None = None, by: str | None = None) -> PromotionDecision:
    """Point ``alias`` at ``version`` (default: the newest) if it beats the current holder of the alias.

    ``by``: None = the validation metric the versions were selected on; or an operating-point figure such as
    ``op_precision/churn``, ``op_recall/churn`` or ``lift10/churn`` (test split, higher is better).
    """
    client = client or MlflowClient()
    versions = _versions(client, name)
    if not versions:
        raise PromotionError(f"registered model {name!r} has no versions (is the tracking URI right?)")
    if version is None:
        candidate = max(versions, key=lambda v: int(v.version))
    else:
        found = [v for v in versions if str(v.version) == str(version)]
        if not found:
            raise PromotionError(f"{name} has no version {version}; versions: {sorted(int(v.version) for v in versions)}")
        candidate = found[0]
    candidate_figures = operating_figures(client, candidate)
    metric, mode, value = _by_figure(by, candidate, candidate_figures, name) if by else _validation(candidate, name)
    champion = _alias_version(client, name, alias)
    champion_figures = operating_figures(client, champion) if champion is not None else {}

    def decision(promoted: bool, message: str, champion_value: float | None = None) -> PromotionDecision:
        versus = champion_figures if champion is not None and str(champion.version) != str(candidate.version) else None
        return PromotionDecision(name, str(candidate.version), str(champion.version) if champion else None, promoted,
                                 metric, mode, value, champion_value,
                                 message + describe_operating(candidate_figures, versus),
                                 candidate_operating=candidate_figures, champion_operating=champion_figures)

    if champion is None:
        client.set_registered_model_alias(name, alias, candidate.version)
        return decision(True, f"promoted {name} v{candidate.version} to @{alias}: there was no {alias} yet "
                              f"({metric} = {value:.4f})")
    if str(champion.version) == str(candidate.version):
        return decision(False, f"{name} v{candidate.version} already holds @{alias} ({metric} = {value:.4f})", value)
    champion_metric, champion_mode, champion_value = (
        _by_figure(by, champion, champion_figures, name) if by else _validation(champion, name))
    if (champion_metric, champion_mode) != (metric, mode):
        raise PromotionError(
            f"{name}: candidate v{candidate.version} was selected on {metric} ({mode}) but the {alias} "
            f"v{champion.version} on {champion_metric} ({champion_mode}); they cannot be compared")
    better = value < champion_value if mode == "min" else value > champion_value
    relation = ("<" if value < champion_value else ">" if value > champion_value else "=")
    note = ""
    if (candidate.tags or {}).get("data_hash") != (champion.tags or {}).get("data_hash"):
        note = " (note: trained on different data, so the validation sets differ)"
    comparison = f"{metric} {value:.4f} {relation} {champion_value:.4f}, {'lower' if mode == 'min' else 'higher'} is better"
    if better:
        client.set_registered_model_alias(name, alias, candidate.version)
        client.set_model_version_tag(name, candidate.version, "promoted_over", str(champion.version))
        return decision(True, f"promoted {name} v{candidate.version} to @{alias} over v{champion.version}: "
                              f"{comparison}{note}", champion_value)
    return decision(False, f"kept {name} v{champion.version} as @{alias}: candidate v{candidate.version} does not "
                           f"beat it ({comparison}){note}", champion_value)


__all__ = ["CHAMPION_ALIAS", "PromotionDecision", "PromotionError", "operating_figures", "promote",
           "register_run_model"]

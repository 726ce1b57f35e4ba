"""How each model of the zoo is trained: optimiser, learning rate and its decay, gradient clipping, weight decay.

Model configs (:mod:`journey_model.models`) describe the architecture only; a :class:`TrainingRecipe` is what
the trainer (:class:`~journey_model.training.module.JourneyModule`, :func:`~journey_model.training.train.train`)
needs to fit one. Every model name has a default recipe in :data:`RECIPES` (:func:`recipe_for`).

One ``--set FIELD=VALUE`` list (``TrainConfig.model_overrides``) serves both: :func:`split_overrides` sends
recipe fields to the recipe and the rest to the model config, and :func:`resolve_recipe` applies them, then
the trainer's own ``--lr`` and ``gradient_clip_val``, which win over both.

The customers per batch are not part of a recipe: ``data.batch_size`` (``--batch-size``) sets them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

from journey_model.core.settings import check_choice
from journey_model.models.registry import MODELS, UnknownModelError

OPTIMIZERS = ("adam", "adamw", "sgd")


@dataclass(frozen=True)  # frozen: the defaults in RECIPES are shared; change one with dataclasses.replace
class TrainingRecipe:
    """What the trainer needs to fit a model; the model itself never reads these.

    The step decay (``lr_decay_step`` -> ``lr_after_decay``) is the schedule of ``trainer.lr_schedule = "model"``
    (the default); the constant / cosine / linear schedules ignore it.
    """

    optimizer: str = "adam"  # torch optimiser: "adam", "adamw" (decoupled weight decay) or "sgd" (no momentum)
    learning_rate: float = 1e-3  # initial learning rate [step size per optimiser step]
    lr_decay_step: int | None = None  # step from which the rate is lr_after_decay [optimiser steps]; None = never
    lr_after_decay: float | None = None  # learning rate from lr_decay_step on [step size; absolute, not a ratio]
    grad_clip_norm: float | None = 5.0  # clip gradients to this global L2 norm [norm]; None = no clipping
    weight_decay: float = 0.0  # L2 penalty coefficient handed to the optimiser [per unit weight]; 0 = none

    def __post_init__(self) -> None:
        check_choice(self, "optimizer", self.optimizer, OPTIMIZERS)


RECIPE_FIELDS = frozenset(f.name for f in fields(TrainingRecipe))

ADAM = TrainingRecipe()  # Adam at 1e-3, constant, clipped at norm 5: the neural models of the zoo
ATRANK_REFERENCE = TrainingRecipe(  # the ATRank reference code's optimiser (github.com/jinze1994/ATRank)
    optimizer="sgd", learning_rate=1.0, lr_decay_step=336_000, lr_after_decay=0.1, grad_clip_norm=5.0
)
BAG = TrainingRecipe(learning_rate=1e-2)  # a linear model tolerates a larger step
COUNTED = TrainingRecipe(grad_clip_norm=None)  # fitted by counting: no optimiser is built, nothing to clip

RECIPES: dict[str, TrainingRecipe] = {
    "atrank": ADAM,
    "atrank-reference": ATRANK_REFERENCE,
    "gru": ADAM,
    "lstm": ADAM,
    "gru-cho": ADAM,
    "gru-bahdanau": ADAM,
    "lstm-bahdanau": ADAM,
    "gru-luong": ADAM,
    "lstm-luong": ADAM,
    "transformer": ADAM,
    "bag": BAG,
    "markov": COUNTED,
    "most-frequent": COUNTED,
    "recent-items": COUNTED,
    "gru-attn": ADAM,
}


def recipe_for(model_name: str) -> TrainingRecipe:
    """The default recipe of model ``model_name``."""
    if model_name not in MODELS:
        raise UnknownModelError(f"unknown model {model_name!r}; valid models: {', '.join(MODELS)}")
    if model_name not in RECIPES:
        raise KeyError(f"model {model_name!r} has no training recipe; add one to journey_model.training.recipes.RECIPES")
    return RECIPES[model_name]


def split_overrides(model_name: str, overrides: Mapping[str, object]) -> tuple[dict[str, object], dict[str, object]]:
    """``--set`` overrides -> (recipe fields, model config fields); a key that is neither fails, naming both."""
    if model_name not in MODELS:
        raise UnknownModelError(f"unknown model {model_name!r}; valid models: {', '.join(MODELS)}")
    config_class = MODELS[model_name].config_class
    valid = [f.name for f in fields(config_class)]
    recipe = {k: v for k, v in overrides.items() if k in RECIPE_FIELDS}
    architecture = {k: v for k, v in overrides.items() if k not in RECIPE_FIELDS}
    unknown = sorted(set(architecture) - set(valid))
    if unknown:
        # batch_size used to be a (never read) model config field; say where it lives now
        hint = "; customers per batch are data.batch_size (--batch-size)" if "batch_size" in unknown else ""
        raise ValueError(
            f"model {model_name!r}: unknown config fields {unknown}; {config_class.__name__} has {valid} and "
            f"{TrainingRecipe.__name__} has {[f.name for f in fields(TrainingRecipe)]}{hint}"
        )
    return recipe, architecture


def data_defaults(model_name: str, cutoff_strategy: str | None) -> dict[str, object]:
    """Model config fields the training data decides unless ``--set`` does: count baselines count only the
    targets (``count_history=false``) on every-event cut-offs, where each in-journey transition already is the
    target of an earlier example, so counting histories too only re-weights them (1.5–7 points lower there)."""
    if model_name not in MODELS:
        raise UnknownModelError(f"unknown model {model_name!r}; valid models: {', '.join(MODELS)}")
    accepted = {f.name for f in fields(MODELS[model_name].config_class)}
    if "count_history" in accepted and cutoff_strategy == "every-event":
        return {"count_history": False}
    return {}


def resolve_recipe(
    model_name: str,
    overrides: Mapping[str, object] | None = None,
    learning_rate: float | None = None,
    gradient_clip_val: float | None = None,
) -> TrainingRecipe:
    """The recipe a run trains with: the model's default, its ``--set`` recipe fields, then the trainer's
    ``learning_rate`` / ``gradient_clip_val`` when given (the decay target ``lr_after_decay`` stays absolute)."""
    recipe = replace(recipe_for(model_name), **dict(overrides or {}))
    if learning_rate is not None:
        recipe = replace(recipe, learning_rate=learning_rate)
    if gradient_clip_val is not None:
        recipe = replace(recipe, grad_clip_norm=gradient_clip_val)
    return recipe

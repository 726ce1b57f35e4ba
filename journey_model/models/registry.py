"""The model zoo by name: ``build_model("atrank", spec, hidden_size=256)``.

Each name maps to a model class, its config dataclass, the config fields the name decides (``lstm-luong``
is an LSTM with Luong attention, whatever the overrides say) and defaults it prefers but lets you change
(``gru-bahdanau`` reads the journey bidirectionally unless told otherwise). Keyword overrides are config
fields; a whole config can be passed as ``config=``. Unknown names, unknown fields and overrides that
contradict the name fail with errors that list what is valid.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields, replace

from journey_model.data.features import FeatureSpec
from journey_model.models.atrank import ATRank, ATRankConfig
from journey_model.models.base import JourneyModel
from journey_model.models.baselines import (
    BagConfig,
    BagOfEvents,
    CountConfig,
    GRUAttentionConfig,
    GRUAttentionPooling,
    Markov,
    MostFrequent,
    RecentItems,
)
from journey_model.models.seq2seq import Seq2Seq, Seq2SeqConfig
from journey_model.models.tasks import Task
from journey_model.models.transformer import Transformer, TransformerConfig


class UnknownModelError(ValueError):
    """A model name that is not in the zoo."""


@dataclass(frozen=True)
class ModelEntry:
    model_class: type[JourneyModel]  # the nn.Module built
    config_class: type  # its config dataclass
    description: str  # one line for list_models / CLI help
    fixed: dict[str, object] = field(default_factory=dict)  # config fields the name decides
    defaults: dict[str, object] = field(default_factory=dict)  # config fields the name prefers (overridable)
    # The model this one reduces to, and the tasks on which it does: on those tasks (and no others) both
    # names build the same network with the same parameters, so `journey compare` trains only one of them.
    same_network_as: str | None = None
    same_network_on: frozenset[Task] = frozenset()


def _rnn(cell: str, attention: str = "none", cho: bool = False) -> dict[str, object]:
    return {"cell": cell, "attention": attention, "context_every_step": cho}


MODELS: dict[str, ModelEntry] = {
    "atrank": ModelEntry(
        ATRank, ATRankConfig, "ATRank self-attention + task-query attention (Zhou et al. 2018)"
    ),
    "atrank-reference": ModelEntry(
        ATRank,
        ATRankConfig,
        "ATRank as the reference code: 64 per field, H 256, 8 heads, eps 1e-8, SGD lr 1.0 -> 0.1, clip 5 "
        "(its batch: --batch-size 32)",
        defaults=asdict(ATRankConfig.reference(multi_behaviour=True)),
    ),
    "gru": ModelEntry(
        Seq2Seq,
        Seq2SeqConfig,
        "GRU encoder-decoder, fixed context (Sutskever et al. 2014)",
        _rnn("gru"),
        {"bidirectional": False},
    ),
    "lstm": ModelEntry(
        Seq2Seq,
        Seq2SeqConfig,
        "LSTM encoder-decoder, fixed context (Sutskever et al. 2014)",
        _rnn("lstm"),
        {"bidirectional": False},
    ),
    "gru-cho": ModelEntry(
        Seq2Seq,
        Seq2SeqConfig,
        "GRU encoder-decoder, context fed to every step (Cho et al. 2014)",
        _rnn("gru", cho=True),
        {"bidirectional": False},
    ),
    "gru-bahdanau": ModelEntry(
        Seq2Seq,
        Seq2SeqConfig,
        "bidirectional GRU + additive attention (Bahdanau et al. 2014)",
        _rnn("gru", "bahdanau"),
        {"bidirectional": True},
    ),
    "lstm-bahdanau": ModelEntry(
        Seq2Seq,
        Seq2SeqConfig,
        "bidirectional LSTM + additive attention (Bahdanau et al. 2014)",
        _rnn("lstm", "bahdanau"),
        {"bidirectional": True},
    ),
    "gru-luong": ModelEntry(
        Seq2Seq,
        Seq2SeqConfig,
        "GRU + multiplicative attention, luong_score dot/general/concat (Luong et al. 2015)",
        _rnn("gru", "luong"),
        {"bidirectional": False},
    ),
    "lstm-luong": ModelEntry(
        Seq2Seq,
        Seq2SeqConfig,
        "LSTM + multiplicative attention, luong_score dot/general/concat (Luong et al. 2015)",
        _rnn("lstm", "luong"),
        {"bidirectional": False},
    ),
    "transformer": ModelEntry(
        Transformer, TransformerConfig, "ATRank encoder + Transformer decoder (Vaswani et al. 2017)",
        # its decoder only serves forecasts: outside them it is ATRank, parameter for parameter
        same_network_as="atrank", same_network_on=frozenset({Task.OUTCOME, Task.NEXT_EVENT, Task.NEXT_ITEM}),
    ),
    "bag": ModelEntry(BagOfEvents, BagConfig, "bag-of-events logistic regression (counts, recency-free)"),
    "markov": ModelEntry(
        Markov, CountConfig, "first-order Markov chain over event types (counted, no gradient)"
    ),
    "most-frequent": ModelEntry(
        MostFrequent, CountConfig, "most frequent next event / item (counted, no gradient)"
    ),
    "recent-items": ModelEntry(
        RecentItems, CountConfig, "the journey's own items by recency, then the most frequent (counted, no gradient)"
    ),
    "gru-attn": ModelEntry(GRUAttentionPooling, GRUAttentionConfig, "bidirectional GRU + attention pooling"),
}


def list_models() -> list[str]:
    """Every name :func:`build_model` accepts."""
    return list(MODELS)


def _entry(name: str) -> ModelEntry:
    if name not in MODELS:
        raise UnknownModelError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}")
    return MODELS[name]


def config_fields(name: str) -> set[str]:
    """The config fields model ``name`` accepts as overrides."""
    return {f.name for f in fields(_entry(name).config_class)}


def saved_before(name: str) -> dict[str, object]:
    """Config fields added after models of ``name`` were first saved, with the values those models were built
    with (a config class's ``SAVED_BEFORE``): a bundle whose config lacks such a field means that value."""
    return dict(getattr(_entry(name).config_class, "SAVED_BEFORE", {}))


def supported_tasks(name: str) -> frozenset[Task]:
    """The tasks model ``name`` can answer, without building it."""
    return _entry(name).model_class.supported_tasks


def same_network(name: str, tasks: Iterable[Task | str]) -> str | None:
    """The model whose network ``name`` builds on ``tasks`` (each among its ``same_network_on``), else None."""
    entry = _entry(name)
    wanted = {Task(t) for t in tasks}
    if entry.same_network_as is None or not wanted or not wanted <= entry.same_network_on:
        return None
    return entry.same_network_as


def build_model(
    name: str,
    spec: FeatureSpec,
    tasks: Iterable[Task | str] | None = None,
    config: object | None = None,
    **overrides: object,
) -> JourneyModel:
    """Build model ``name`` for the inputs ``spec`` describes.

    ``tasks`` defaults to every task the model supports and the spec has data for; a task the model cannot
    answer raises :class:`~journey_model.models.tasks.UnsupportedTaskError` naming both. ``config`` is a full config
    of the model's config class; ``overrides`` are its fields (e.g. ``hidden_size=32``, ``luong_score="dot"``).
    """
    entry = _entry(name)
    valid = [f.name for f in fields(entry.config_class)]
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(
            f"model {name!r}: unknown config fields {unknown}; {entry.config_class.__name__} has {valid}"
        )
    for key, value in entry.fixed.items():
        if key in overrides and overrides[key] != value:
            raise ValueError(
                f"model {name!r}: {key} is fixed to {value!r} by the model name (got {overrides[key]!r}); "
                f"pick another name from {', '.join(MODELS)}"
            )
    if config is None:
        config = entry.config_class(**{**entry.defaults, **entry.fixed, **overrides})
    else:
        if not isinstance(config, entry.config_class):
            raise TypeError(
                f"model {name!r} takes a {entry.config_class.__name__}, got {type(config).__name__}"
            )
        for key, value in entry.fixed.items():
            if getattr(config, key) != value:
                raise ValueError(
                    f"model {name!r}: config.{key} = {getattr(config, key)!r}, but the name fixes {value!r}"
                )
        config = replace(config, **overrides)  # type: ignore[type-var]
    return entry.model_class(spec, config, tasks=tasks, model_name=name)  # type: ignore[call-arg]

"""The Journey model zoo: ATRank, the seq2seq family, a Transformer decoder and simple baselines.

Build any model by name with :func:`build_model`; every model is a plain ``nn.Module`` that reads a
:class:`~journey_model.data.batch.SequenceBatch` and returns a :class:`ModelOutput`. Losses live in
:mod:`journey_model.models.tasks`.
"""

from journey_model.models.atrank import ATRank, ATRankConfig, ATRankEncoder
from journey_model.models.attention import attention_mask, gather_last, masked_mean, masked_softmax
from journey_model.models.base import JourneyModel, SequenceModelConfig
from journey_model.models.baselines import (
    BagConfig,
    BagOfEvents,
    CountConfig,
    CountModel,
    GRUAttentionConfig,
    GRUAttentionPooling,
    Markov,
    MostFrequent,
)
from journey_model.models.decoding import DecoderStep, beam_search, greedy_decode
from journey_model.models.embedding import BehaviourEmbedding, PositionalEncoding
from journey_model.models.output import EncodedSequence, ForecastResult, ModelOutput
from journey_model.models.registry import MODELS, UnknownModelError, build_model, list_models, supported_tasks
from journey_model.models.seq2seq import Seq2Seq, Seq2SeqConfig
from journey_model.models.transformer import Transformer, TransformerConfig

__all__ = [
    "ATRank",
    "ATRankConfig",
    "ATRankEncoder",
    "BagConfig",
    "BagOfEvents",
    "BehaviourEmbedding",
    "CountConfig",
    "CountModel",
    "DecoderStep",
    "EncodedSequence",
    "ForecastResult",
    "GRUAttentionConfig",
    "GRUAttentionPooling",
    "JourneyModel",
    "MODELS",
    "Markov",
    "ModelOutput",
    "MostFrequent",
    "PositionalEncoding",
    "Seq2Seq",
    "Seq2SeqConfig",
    "SequenceModelConfig",
    "Transformer",
    "TransformerConfig",
    "UnknownModelError",
    "attention_mask",
    "beam_search",
    "build_model",
    "gather_last",
    "greedy_decode",
    "list_models",
    "masked_mean",
    "masked_softmax",
    "supported_tasks",
]

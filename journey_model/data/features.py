"""What the encoded inputs look like, without a tensor in sight: the reserved ids and the feature spec.

The preprocessor (:mod:`journey_model.data.preprocessing`) writes these ids and the point-in-time builder
(:mod:`journey_model.data.sequences`) reads them; the models are built from a :class:`FeatureSpec`. Nothing here
needs torch, so preparing data (locally or on Spark executors) never loads it; the padded tensor batch itself
is :mod:`journey_model.data.batch`.

* Id 0 is padding (or "this behaviour type does not carry this field"), id 1 is out-of-vocabulary.
  The event-type vocabulary also reserves 2 = ``<bos>`` and 3 = ``<eos>`` for step-by-step forecasts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PAD_ID = 0
OOV_ID = 1
BOS_ID = 2
EOS_ID = 3
EVENT_TYPE_SPECIAL_IDS: tuple[int, ...] = (PAD_ID, OOV_ID, BOS_ID, EOS_ID)  # reserved in the event-type vocabulary
FIELD_SPECIAL_IDS: tuple[int, ...] = (PAD_ID, OOV_ID)  # reserved in item / categorical field vocabularies


@dataclass
class BehaviourGroup:
    """Event types that carry the same fields and so share one projection into the model's space (ATRank §3.1)."""

    name: str  # e.g. "card_payment" or "login+logout"
    event_type_ids: list[int]  # ids in the event-type vocabulary
    categorical: list[str]  # categorical fields these types carry
    numeric: list[str]  # numeric fields these types carry


@dataclass
class FeatureSpec:
    """What a model must know about the encoded inputs: vocabulary sizes, field groups and targets.

    Built from the preprocessing artifact (:meth:`journey_model.data.preprocessing.Preprocessor.feature_spec`),
    so a model is constructed for exactly the ids its data holds.
    """

    event_type_vocab_size: int  # including <pad>, <oov>, <bos>, <eos>
    categorical_vocab_sizes: dict[str, int]  # field -> vocabulary size including <pad>, <oov>
    numeric_fields: list[str]  # order of the last axis of SequenceBatch.numeric
    num_time_buckets: int  # including the padding bucket 0
    behaviour_groups: list[BehaviourGroup]  # every event-type id >= 4 belongs to exactly one group
    outcome_names: list[str] = field(default_factory=list)  # binary targets, order of SequenceBatch.outcomes
    item_field: str | None = None  # categorical field that is the behaviour's object (next-item target)
    forecast_steps: int = 0  # K, the number of future behaviours a forecast predicts (plus <eos>)

    @property
    def categorical_fields(self) -> list[str]:
        return list(self.categorical_vocab_sizes)

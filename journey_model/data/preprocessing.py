"""Feature preprocessing written once: vocabularies, ATRank time buckets, amount transforms, sequence encoding.

`journey prepare` fits a :class:`Preprocessor` on the training events and saves it as a versioned JSON
artifact next to the prepared dataset. Training, batch scoring and the online API load that same artifact
and call the same :func:`journey_model.data.sequences.encode_examples`, so a customer's events become the same ids, buckets
and numbers wherever they are scored.

Time buckets follow ATRank (Zhou et al. 2018; reference code ``atrank/input.py``): the gap between the
reference time (our cut-off) and an event, in a configurable unit (days by default), lands in bucket
``floor(log2(gap + 1))``, i.e. the number of thresholds 2, 4, 8, … that ``gap + 1`` reaches; the last bucket
collects everything older (the overflow bucket). Ids are shifted by one so that 0 stays padding.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from journey_model.core.files import write_json_atomic
from journey_model.core.fingerprint import fingerprint
from journey_model.core.settings import option
from journey_model.data.features import BOS_ID, EOS_ID, OOV_ID, PAD_ID, BehaviourGroup, FeatureSpec
from journey_model.data.schema import CUSTOMER_ID, EVENT_ID, EVENT_TYPE, TIMESTAMP, DatasetConfig

ARTIFACT_VERSION = 1
ARTIFACT_FILE = "preprocessing.json"

EVENT_TYPE_SPECIALS = ("<pad>", "<oov>", "<bos>", "<eos>")
FIELD_SPECIALS = ("<pad>", "<oov>")
assert EVENT_TYPE_SPECIALS.index("<pad>") == PAD_ID and EVENT_TYPE_SPECIALS.index("<oov>") == OOV_ID
assert EVENT_TYPE_SPECIALS.index("<bos>") == BOS_ID and EVENT_TYPE_SPECIALS.index("<eos>") == EOS_ID

TIME_UNITS_SECONDS = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0, "week": 7 * 86400.0}


class PreprocessingError(ValueError):
    """Events or an artifact that the preprocessor cannot encode."""


@dataclass
class PreprocessingConfig:
    """How events become model inputs. Saved inside the artifact, so scoring repeats it exactly."""

    max_len: int = option(100, "most recent events before the cut-off kept per example [events]")
    min_count: int = option(2, "vocabulary min count: a value seen fewer times in the training events maps to <oov>")
    max_vocab_size: int | None = option(None, "cap per categorical field, most frequent values first; none = no cap")
    time_unit: str = option("day", "unit of the gap to the cut-off before log2 time bucketing",
                            choices=TIME_UNITS_SECONDS)
    num_time_buckets: int = option(13, "log2 time buckets 0..n-1 (ATRank: 13 with 4096 days), the last is the "
                                   "overflow", flag="--time-buckets")
    forecast_steps: int = option(5, "K of the forecast target: future behaviours it holds (then <eos>)")
    item_field: str | None = option("item", "categorical field whose next value is the next-item target")
    keep_event_ids: bool = option(True, "carry event ids into the prepared rows (explanations refer to them)")

    def __post_init__(self) -> None:
        if self.time_unit not in TIME_UNITS_SECONDS:
            raise PreprocessingError(f"time_unit {self.time_unit!r} is not one of {sorted(TIME_UNITS_SECONDS)}")
        if self.max_len < 1 or self.num_time_buckets < 2 or self.min_count < 1:
            raise PreprocessingError(
                f"max_len (got {self.max_len}) and min_count (got {self.min_count}) must be >= 1, "
                f"num_time_buckets (got {self.num_time_buckets}) >= 2"
            )


@dataclass
class TimeBuckets:
    """ATRank's log2 time-gap buckets relative to a reference time."""

    unit_seconds: float = 86400.0  # seconds per gap unit
    num_buckets: int = 13  # real buckets; ids are 1..num_buckets, 0 = padding

    def bucket_ids(self, gap_seconds: np.ndarray) -> np.ndarray:
        """Bucket ids (1..num_buckets) for gaps >= 0 in seconds; negative gaps are a caller's bug."""
        gap_units = np.asarray(gap_seconds, dtype=np.float64) / self.unit_seconds
        if gap_units.size and gap_units.min() < 0:
            raise PreprocessingError("an event at or after its cut-off reached time bucketing (gap < 0)")
        raw = np.floor(np.log2(gap_units + 1.0)).astype(np.int64)
        return (np.clip(raw, 0, self.num_buckets - 1) + 1).astype(np.int32)

    def lower_edges(self) -> list[float]:
        """Smallest gap (in units) of each bucket: bucket k (0-based) holds gaps in [2^k - 1, 2^(k+1) - 1)."""
        return [float(2**k - 1) for k in range(self.num_buckets)]

    def label(self, bucket_id: int) -> str:
        """Human-readable range of a bucket id, e.g. '3-7 days' (for explanations and plots)."""
        if bucket_id == PAD_ID:
            return "<pad>"
        k = bucket_id - 1
        low, high = 2**k - 1, 2 ** (k + 1) - 1
        unit = next((n for n, s in TIME_UNITS_SECONDS.items() if s == self.unit_seconds), "units")
        if k == self.num_buckets - 1:
            return f">= {low} {unit}s"
        return f"{low}-{high} {unit}s"


@dataclass
class Vocabulary:
    """Values of one categorical field, most frequent first, after the reserved tokens."""

    tokens: list[str]  # reserved tokens first, then values
    num_reserved: int = len(FIELD_SPECIALS)
    _index: dict[str, int] = field(default_factory=dict, repr=False, compare=False)
    _value_set: pa.Array | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._index = {token: i for i, token in enumerate(self.tokens) if i >= self.num_reserved}

    def __len__(self) -> int:
        return len(self.tokens)

    @classmethod
    def from_counts(
        cls, counts: Counter, specials: Sequence[str], min_count: int, max_size: int | None
    ) -> Vocabulary:
        kept = [(value, n) for value, n in counts.items() if n >= min_count and value not in specials]
        kept.sort(key=lambda pair: (-pair[1], pair[0]))  # deterministic: frequency, then value
        if max_size is not None:
            kept = kept[:max_size]
        return cls(tokens=list(specials) + [value for value, _ in kept], num_reserved=len(specials))

    def encode(self, values: pa.Array | pa.ChunkedArray | Sequence[str | None]) -> np.ndarray:
        """Ids of ``values``: null -> <pad> (0), unseen -> <oov> (1)."""
        if not isinstance(values, pa.Array | pa.ChunkedArray):
            values = pa.array(values, type=pa.string())
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks() if values.num_chunks else pa.array([], type=pa.string())
        if values.type != pa.string():
            values = values.cast(pa.string())
        if self._value_set is None:  # built once: online requests encode a few hundred values at a time
            self._value_set = pa.array(self.tokens[self.num_reserved :], type=pa.string())
        index = pc.index_in(values, value_set=self._value_set)
        ids = np.asarray(pc.fill_null(index, -1).to_numpy(zero_copy_only=False), dtype=np.int32)
        out = np.where(ids < 0, np.int32(OOV_ID), ids + np.int32(self.num_reserved)).astype(np.int32)
        if values.null_count:
            out[np.asarray(values.is_null().to_numpy(zero_copy_only=False))] = PAD_ID
        return out

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.tokens[i] if 0 <= i < len(self.tokens) else self.tokens[OOV_ID] for i in ids]

    def id_of(self, value: str) -> int:
        return self._index.get(value, OOV_ID)


@dataclass
class NumericTransform:
    """Signed log1p, then standardised with the training events' mean and standard deviation."""

    mean: float = 0.0
    std: float = 1.0

    @staticmethod
    def signed_log1p(values: np.ndarray) -> np.ndarray:
        return np.sign(values) * np.log1p(np.abs(values))

    def transform(self, values: np.ndarray) -> np.ndarray:
        """Transformed float32 values; NaN (missing) stays NaN."""
        return ((self.signed_log1p(np.asarray(values, dtype=np.float64)) - self.mean) / self.std).astype(np.float32)


@dataclass
class FieldStatistics:
    """Streaming counts gathered in one pass over the events, enough to fit a :class:`Preprocessor`."""

    value_counts: dict[str, Counter] = field(default_factory=dict)
    numeric_sums: dict[str, list[float]] = field(default_factory=dict)  # field -> [n, sum, sum of squares]
    min_ts: int | None = None  # microseconds since the epoch, UTC
    max_ts: int | None = None
    events: int = 0

    def update(self, table: pa.Table, dataset: DatasetConfig) -> None:
        """Add one batch of canonical events."""
        self.events += table.num_rows
        for name in [EVENT_TYPE, *dataset.categorical_fields]:
            counts = self.value_counts.setdefault(name, Counter())
            for entry in pc.value_counts(table.column(name)).to_pylist():
                if entry["values"] is not None:
                    counts[entry["values"]] += entry["counts"]
        for name in dataset.numeric_fields:
            values = table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
            values = NumericTransform.signed_log1p(values[~np.isnan(values)])
            sums = self.numeric_sums.setdefault(name, [0.0, 0.0, 0.0])
            sums[0] += values.size
            sums[1] += float(values.sum())
            sums[2] += float(np.square(values).sum())
        if table.num_rows:
            bounds = pc.min_max(table.column(TIMESTAMP).cast(pa.int64()))
            low, high = bounds["min"].as_py(), bounds["max"].as_py()
            self.min_ts = low if self.min_ts is None else min(self.min_ts, low)
            self.max_ts = high if self.max_ts is None else max(self.max_ts, high)


@dataclass
class Preprocessor:
    """The fitted preprocessing artifact: config, vocabularies, numeric transforms and provenance."""

    dataset: DatasetConfig
    config: PreprocessingConfig
    vocabularies: dict[str, Vocabulary]  # "event_type" and every categorical field
    numeric: dict[str, NumericTransform]
    outcome_names: list[str] = field(default_factory=list)
    input_hash: str = ""  # sha256 of the input event files this artifact was fitted on
    observed_until: str | None = None  # ISO time of the last input event (label windows past it are censored)
    extra: dict[str, Any] = field(default_factory=dict)  # prepare's cut-off / split / label settings
    version: int = ARTIFACT_VERSION

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(
        cls,
        stats: FieldStatistics,
        dataset: DatasetConfig,
        config: PreprocessingConfig,
        outcome_names: Sequence[str] = (),
        input_hash: str = "",
    ) -> Preprocessor:
        if config.item_field is not None and config.item_field not in dataset.categorical_fields:
            config = PreprocessingConfig(**{**asdict(config), "item_field": None})
        vocabularies = {
            EVENT_TYPE: Vocabulary.from_counts(
                stats.value_counts.get(EVENT_TYPE, Counter()), EVENT_TYPE_SPECIALS, 1, None
            )
        }
        for name in dataset.categorical_fields:
            vocabularies[name] = Vocabulary.from_counts(
                stats.value_counts.get(name, Counter()), FIELD_SPECIALS, config.min_count, config.max_vocab_size
            )
        numeric = {}
        for name in dataset.numeric_fields:
            n, total, total_sq = stats.numeric_sums.get(name, [0.0, 0.0, 0.0])
            mean = total / n if n else 0.0
            var = total_sq / n - mean * mean if n else 1.0
            numeric[name] = NumericTransform(mean=mean, std=math.sqrt(var) if var > 1e-12 else 1.0)
        observed = None
        if stats.max_ts is not None:
            observed = np.datetime64(stats.max_ts, "us").astype(str) + "Z"
        return cls(
            dataset=dataset,
            config=config,
            vocabularies=vocabularies,
            numeric=numeric,
            outcome_names=list(outcome_names),
            input_hash=input_hash,
            observed_until=observed,
        )

    # ------------------------------------------------------------------ model-facing description
    @property
    def time_buckets(self) -> TimeBuckets:
        return TimeBuckets(TIME_UNITS_SECONDS[self.config.time_unit], self.config.num_time_buckets)

    def behaviour_groups(self) -> list[BehaviourGroup]:
        """Event types grouped by the fields they carry; <oov> and the specials carry every field."""
        groups: dict[tuple[tuple[str, ...], tuple[str, ...]], BehaviourGroup] = {}
        every = (tuple(self.dataset.categorical_fields), tuple(self.dataset.numeric_fields))
        vocab = self.vocabularies[EVENT_TYPE]
        for type_id, name in enumerate(vocab.tokens):
            if type_id == PAD_ID:
                continue
            if type_id < len(EVENT_TYPE_SPECIALS):
                key = every
                label = "<special>"
            else:
                categorical, numeric = self.dataset.fields_of(name)
                key = (tuple(categorical), tuple(numeric))
                label = name
            group = groups.get(key)
            if group is None:
                groups[key] = BehaviourGroup(label, [type_id], list(key[0]), list(key[1]))
            else:
                group.event_type_ids.append(type_id)
                if label != "<special>" and not group.name.startswith("<special>"):
                    group.name = f"{group.name}+{label}"
                elif group.name.startswith("<special>") and label != "<special>":
                    group.name = f"{group.name}+{label}"
        return list(groups.values())

    def feature_spec(self) -> FeatureSpec:
        return FeatureSpec(
            event_type_vocab_size=len(self.vocabularies[EVENT_TYPE]),
            categorical_vocab_sizes={name: len(self.vocabularies[name]) for name in self.dataset.categorical_fields},
            numeric_fields=list(self.dataset.numeric_fields),
            num_time_buckets=self.config.num_time_buckets + 1,
            behaviour_groups=self.behaviour_groups(),
            outcome_names=list(self.outcome_names),
            item_field=self.config.item_field,
            forecast_steps=self.config.forecast_steps,
        )

    # ------------------------------------------------------------------ encoding
    def encode_events(self, events: pa.Table) -> dict[str, np.ndarray]:
        """Per-event encoded columns (ids and transformed numbers), aligned with the rows of ``events``.

        A field that an event's behaviour type does not carry is set to padding / missing, so each type
        is described by its own fields only.
        """
        event_type_ids = self.vocabularies[EVENT_TYPE].encode(events.column(EVENT_TYPE))
        encoded: dict[str, np.ndarray] = {"event_type": event_type_ids}
        carried_cat, carried_num = self._carried_masks(event_type_ids)
        for name in self.dataset.categorical_fields:
            ids = self.vocabularies[name].encode(events.column(name))
            ids[~carried_cat[name]] = PAD_ID
            encoded[f"cat_{name}"] = ids
        for name in self.dataset.numeric_fields:
            raw = events.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
            values = self.numeric[name].transform(raw)
            values[~carried_num[name]] = np.nan
            encoded[f"num_{name}"] = values
        return encoded

    def _carried_masks(self, event_type_ids: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        vocab_size = len(self.vocabularies[EVENT_TYPE])
        carried_cat = {name: np.zeros(vocab_size, dtype=bool) for name in self.dataset.categorical_fields}
        carried_num = {name: np.zeros(vocab_size, dtype=bool) for name in self.dataset.numeric_fields}
        for group in self.behaviour_groups():
            for name in group.categorical:
                carried_cat[name][group.event_type_ids] = True
            for name in group.numeric:
                carried_num[name][group.event_type_ids] = True
        return (
            {name: table[event_type_ids] for name, table in carried_cat.items()},
            {name: table[event_type_ids] for name, table in carried_num.items()},
        )

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "dataset": self.dataset.to_dict(),
            "config": asdict(self.config),
            "vocabularies": {name: vocab.tokens for name, vocab in self.vocabularies.items()},
            "numeric": {name: asdict(t) for name, t in self.numeric.items()},
            "outcome_names": self.outcome_names,
            "input_hash": self.input_hash,
            "observed_until": self.observed_until,
            "extra": self.extra,
        }

    @property
    def artifact_hash(self) -> str:
        """Content hash of the artifact: two artifacts with equal hashes encode identically."""
        return fingerprint(self.to_dict())

    def save(self, path: str | Path) -> Path:
        """Write the artifact atomically (to ``path`` or ``path/preprocessing.json`` for a folder)."""
        path = Path(path)
        if path.is_dir():
            path = path / ARTIFACT_FILE
        return write_json_atomic(path, {**self.to_dict(), "artifact_hash": self.artifact_hash})

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> Preprocessor:
        version = data.get("version")
        if version != ARTIFACT_VERSION:
            raise PreprocessingError(
                f"{source}: preprocessing artifact version {version!r}; this Journey reads version {ARTIFACT_VERSION}"
            )
        dataset = DatasetConfig.from_dict(data["dataset"], source=source)
        vocabularies = {}
        for name, tokens in data["vocabularies"].items():
            specials = EVENT_TYPE_SPECIALS if name == EVENT_TYPE else FIELD_SPECIALS
            vocabularies[name] = Vocabulary(tokens=tokens, num_reserved=len(specials))
        return cls(
            dataset=dataset,
            config=PreprocessingConfig(**data["config"]),
            vocabularies=vocabularies,
            numeric={name: NumericTransform(**v) for name, v in data["numeric"].items()},
            outcome_names=list(data.get("outcome_names", [])),
            input_hash=data.get("input_hash", ""),
            observed_until=data.get("observed_until"),
            extra=dict(data.get("extra", {})),
        )

    @classmethod
    def load(cls, path: str | Path) -> Preprocessor:
        path = Path(path)
        if path.is_dir():
            path = path / ARTIFACT_FILE
        if not path.exists():
            raise PreprocessingError(f"no preprocessing artifact at {path} (run `journey prepare` first)")
        return cls.from_dict(json.loads(path.read_text()), source=str(path))


def canonical_columns(dataset: DatasetConfig, with_event_id: bool = True) -> list[str]:
    """The canonical columns the encoder reads."""
    columns = [CUSTOMER_ID, TIMESTAMP, EVENT_TYPE]
    if with_event_id:
        columns.append(EVENT_ID)
    return columns + list(dataset.categorical_fields) + list(dataset.numeric_fields)

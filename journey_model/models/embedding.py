"""The raw behaviour embedding every sequence model shares (ATRank blocks 1-2), and positional encodings.

ATRank (Zhou et al. 2018, §3.1-3.2; reference code ``multi/``): each behaviour is embedded in the space of
its own type — its behaviour type, its time bucket and the object fields its type carries, one table per
field, concatenated — and each behaviour group projects its own concatenation into the shared hidden space
H with its own Linear layer. Tables that name the same thing (a field shared by several groups) are shared.
Numeric fields enter as two features each: the transformed value (0 where missing) and its presence mask.

Event types outside every :class:`BehaviourGroup` — ``<oov>`` (1), ``<bos>`` (2), ``<eos>`` (3) — use a
group that carries every field. Padding positions come out as exact zeros.

Sharing this one module between ATRank, the seq2seq family and the GRU baselines means a comparison between
them isolates the encoder.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from journey_model.data.batch import SequenceBatch
from journey_model.data.features import BOS_ID, EOS_ID, OOV_ID, BehaviourGroup, FeatureSpec
from journey_model.models.base import check_batch

ALL_FIELDS_GROUP = "<all fields>"


def init_embedding(table: nn.Embedding, method: str) -> None:
    """Glorot-uniform (ATRank's code) or torch's normal init; the padding row stays zero."""
    if method == "glorot":
        nn.init.xavier_uniform_(table.weight)
    else:
        nn.init.normal_(table.weight)
    if table.padding_idx is not None:
        with torch.no_grad():
            table.weight[table.padding_idx].zero_()


class BehaviourEmbedding(nn.Module):
    """(B, T) ids and numeric features of a :class:`SequenceBatch` -> (B, T, H), zero at padding."""

    def __init__(
        self, spec: FeatureSpec, field_dim: int, hidden_size: int, init: str = "glorot", time_encoding: str = "bucket",
        time_trend_scale: float = 8.0, linear_time: bool = False,
    ):
        super().__init__()
        if time_encoding not in TIME_ENCODINGS:
            raise ValueError(f"time_encoding = {time_encoding!r}; expected one of {TIME_ENCODINGS}")
        self.spec = spec
        self.hidden_size = hidden_size
        self.time_encoding = time_encoding
        for name in spec.categorical_fields:
            if not name or "." in name:
                raise ValueError(f"FeatureSpec categorical field {name!r}: a field name must be non-empty, no '.'")

        self.event_type = nn.Embedding(spec.event_type_vocab_size, field_dim, padding_idx=0)
        self.time_bucket = nn.Embedding(spec.num_time_buckets, field_dim, padding_idx=0)
        # continuous: the gap at the data's own resolution (seconds), on a log scale, through Time2Vec
        self.continuous_time = (ContinuousTime(field_dim, trend_scale=time_trend_scale, linear=linear_time)
                                if time_encoding == "continuous" else None)
        self.categorical = nn.ModuleDict(
            {name: nn.Embedding(size, field_dim, padding_idx=0) for name, size in spec.categorical_vocab_sizes.items()}
        )
        for table in [self.event_type, self.time_bucket, *self.categorical.values()]:
            init_embedding(table, init)

        self.groups = self._groups_with_fallback(spec)
        self.group_numeric_index = [[spec.numeric_fields.index(n) for n in g.numeric] for g in self.groups]
        self.projections = nn.ModuleList(
            nn.Linear(field_dim * (2 + len(g.categorical)) + 2 * len(g.numeric), hidden_size) for g in self.groups
        )
        group_of_type = torch.full((spec.event_type_vocab_size,), len(self.groups) - 1, dtype=torch.long)
        for index, group in enumerate(self.groups[:-1]):
            group_of_type[group.event_type_ids] = index
        self.register_buffer("group_of_type", group_of_type, persistent=False)  # event-type id -> group index

    @staticmethod
    def _groups_with_fallback(spec: FeatureSpec) -> list[BehaviourGroup]:
        seen: dict[int, str] = {}
        for group in spec.behaviour_groups:
            for name in group.categorical:
                if name not in spec.categorical_vocab_sizes:
                    raise ValueError(
                        f"BehaviourGroup {group.name!r}: categorical field {name!r} is not in the FeatureSpec "
                        f"({spec.categorical_fields})"
                    )
            for name in group.numeric:
                if name not in spec.numeric_fields:
                    raise ValueError(
                        f"BehaviourGroup {group.name!r}: numeric field {name!r} is not in the FeatureSpec "
                        f"({spec.numeric_fields})"
                    )
            for type_id in group.event_type_ids:
                if not 0 < type_id < spec.event_type_vocab_size:
                    raise ValueError(
                        f"BehaviourGroup {group.name!r}: event-type id {type_id} is outside 1..{spec.event_type_vocab_size - 1}"
                    )
                if type_id in seen:
                    raise ValueError(
                        f"event-type id {type_id} belongs to both BehaviourGroup {seen[type_id]!r} and {group.name!r}"
                    )
                seen[type_id] = group.name
        everything = BehaviourGroup(
            name=ALL_FIELDS_GROUP,
            event_type_ids=[OOV_ID, BOS_ID, EOS_ID],
            categorical=spec.categorical_fields,
            numeric=list(spec.numeric_fields),
        )
        return [*spec.behaviour_groups, everything]

    def forward(self, batch: SequenceBatch) -> torch.Tensor:
        check_batch(batch, self.spec)
        B, T = batch.event_type.shape
        if self.continuous_time is not None and batch.time_gap is None:
            raise ValueError(
                "this model reads time continuously (time_encoding='continuous') but the batch has no time_gap: "
                "the examples were prepared by an older Journey; run `journey prepare` again"
            )
        # Real behaviours sorted by group, so each group's rows are one slice of ``order``: one sort and one
        # host sync for the whole batch instead of a boolean mask (and its nonzero) per group and field.
        group = torch.where(batch.mask, self.group_of_type[batch.event_type], -1).reshape(-1)  # (B*T,) -1 = padding
        order = torch.argsort(group, stable=True)
        counts = torch.bincount(group + 1, minlength=len(self.groups) + 1).tolist()  # [padding, group 0, ...]
        type_emb = self.event_type(batch.event_type.reshape(-1))  # (B*T, field_dim)
        time_emb = (self.continuous_time(batch.time_gap.reshape(-1)) if self.continuous_time is not None
                    else self.time_bucket(batch.time_bucket.reshape(-1)))  # (B*T, field_dim)
        categorical = {name: ids.reshape(-1) for name, ids in batch.categorical.items()}
        numeric, numeric_mask = batch.numeric.reshape(B * T, -1), batch.numeric_mask.reshape(B * T, -1)
        rows_of_groups, outputs = [], []
        start = counts[0]
        for index, (spec_group, projection) in enumerate(zip(self.groups, self.projections)):
            rows = order[start:start + counts[index + 1]]  # (n_rows,) flat positions of this group's behaviours
            start += counts[index + 1]
            if not len(rows):
                continue
            parts = [type_emb[rows], time_emb[rows],
                     *(self.categorical[name](categorical[name][rows]) for name in spec_group.categorical)]
            numeric_index = self.group_numeric_index[index]
            if numeric_index:
                parts.append(numeric[rows][:, numeric_index])
                parts.append(numeric_mask[rows][:, numeric_index])
            rows_of_groups.append(rows)
            outputs.append(projection(torch.cat(parts, dim=-1)))  # (n_rows, H)
        dtype = self.event_type.weight.dtype
        out = torch.zeros(B * T, self.hidden_size, dtype=dtype, device=batch.event_type.device)
        if outputs:
            # .to(dtype): under bf16 autocast the projections come out in bf16, the states stay float32
            out = out.index_copy(0, torch.cat(rows_of_groups), torch.cat(outputs).to(dtype))
        return out.view(B, T, self.hidden_size)


TIME_ENCODINGS = ("bucket", "continuous")


LINEAR_TIME_DAYS = (30.0, 365.0)  # linear_time's scales: tanh(days / scale), about linear up to a month / a year


def log_minutes(gap_seconds: torch.Tensor) -> torch.Tensor:
    """log(1 + gap in minutes): about 0 for the same minute, 7.3 a day, 13.2 for a year."""
    return torch.log1p(gap_seconds.clamp(min=0.0) / 60.0)


class ContinuousTime(nn.Module):
    """Gap to the cut-off (seconds) -> (.., field_dim): Time2Vec (Kazemi et al. 2019) on log(1 + minutes).

    ATRank's log2 day buckets put a complaint and a fee 10 days apart, 40 days ago, in one bucket, and all of
    one day's events in one bucket; a continuous log-time code keeps their order and the data's own
    resolution (minutes for sessions, days for fees) with no bucket edges to choose.
    """

    def __init__(self, field_dim: int, frequencies: int = 16, trend_scale: float = 8.0, linear: bool = False):
        super().__init__()
        # linear: the code also reads the days to the cut-off on (saturating) linear scales, so the time between
        # two behaviours is a difference of two codes (on log-minutes it is a ratio that depends on their age)
        self.linear_days = LINEAR_TIME_DAYS if linear else ()
        # The trend term reads log-minutes / trend_scale (about 1 at two days): fed the raw 0..16 it is badly
        # conditioned, and at Adam's larger steps a two-block ATRank stopped learning a planted signal at all.
        self.trend_scale = trend_scale
        self.linear = nn.Linear(1, 1)  # the trend term
        self.periodic = nn.Linear(1, frequencies)  # sin(w t + phi)
        with torch.no_grad():  # periods from ~2 to ~60 log-minute units: fine near now, coarse far back
            self.periodic.weight.copy_(torch.logspace(-1.0, 0.5, frequencies)[:, None])
            self.periodic.bias.uniform_(0.0, 2 * math.pi)
        self.projection = nn.Linear(1 + frequencies + len(self.linear_days), field_dim)

    def forward(self, gap_seconds: torch.Tensor) -> torch.Tensor:
        t = log_minutes(gap_seconds)[..., None].float()  # (.., 1)
        parts = [self.linear(t / self.trend_scale), torch.sin(self.periodic(t))]
        if self.linear_days:
            days = gap_seconds[..., None].float().clamp(min=0.0) / 86400.0
            parts += [torch.tanh(days / scale) for scale in self.linear_days]
        return self.projection(torch.cat(parts, dim=-1))


POSITIONAL_ENCODINGS = ("none", "sinusoidal", "learned", "rotary")


class PositionalEncoding(nn.Module):
    """Adds order information to real positions: none, sinusoidal (Vaswani et al.) or a learned table; "rotary"
    leaves the states alone (the attention rotates its queries and keys instead).

    Positions count from the oldest kept behaviour (0) forwards; padding stays zero.
    """

    def __init__(self, kind: str, hidden_size: int, max_positions: int = 512):
        super().__init__()
        if kind not in POSITIONAL_ENCODINGS:
            raise ValueError(f"positional_encoding = {kind!r}; expected one of {POSITIONAL_ENCODINGS}")
        self.kind = kind
        self.hidden_size = hidden_size
        self.max_positions = max_positions
        self.table = nn.Embedding(max_positions, hidden_size) if kind == "learned" else None
        if self.table is not None:
            nn.init.normal_(self.table.weight, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.kind in ("none", "rotary"):  # rotary positions act inside attention (models.attention.rotate)
            return x
        B, T, H = x.shape
        if self.table is not None:
            if T > self.max_positions:
                raise ValueError(
                    f"learned positional encoding: sequence length {T} exceeds max_positions = {self.max_positions}"
                )
            positions = self.table.weight[:T]  # (T, H)
        else:
            positions = sinusoidal_positions(T, H, x.device, x.dtype)
        return x + positions[None] * mask[..., None].to(x.dtype)


def sinusoidal_positions(length: int, hidden_size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(length, H) sin/cos position codes of Vaswani et al. (2017), for any length."""
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    frequency = torch.exp(
        torch.arange(0, hidden_size, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / hidden_size)
    )
    codes = torch.zeros(length, hidden_size, device=device)
    codes[:, 0::2] = torch.sin(position * frequency)
    codes[:, 1::2] = torch.cos(position * frequency[: hidden_size // 2])
    return codes.to(dtype)

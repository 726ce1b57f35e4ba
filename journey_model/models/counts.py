"""A linear map from a journey's totals: how often each event type and categorical value occurs (log1p counts)
and the mean and presence share of each numeric field. Order- and recency-free.

Two models use it: :class:`~journey_model.models.baselines.BagOfEvents` is this map plus a bias (logistic
regression on a bag of events), and every sequence model's ``wide`` outcome path (Wide & Deep, Cheng et al. 2016)
adds it to the network's outcome scores, so that on a few hundred customers the totals, which a linear model
learns in a few steps, are not drowned by a randomly started network.
"""

from __future__ import annotations

import torch
from torch import nn

from journey_model.data.batch import SequenceBatch
from journey_model.data.features import PAD_ID, FeatureSpec


def bag_of_ids(ids: torch.Tensor, mask: torch.Tensor, weights: nn.Embedding) -> torch.Tensor:
    """Σ over distinct ids of log1p(count) · weights[id] for each row: (B, T) ids -> (B, n_out).

    Each occurrence contributes log1p(c)/c of its id's weight, so an id seen c times adds log1p(c) in total,
    without ever building a (B, vocabulary) count matrix.
    """
    valid = mask & (ids != PAD_ID)  # (B, T)
    same = (ids[:, :, None] == ids[:, None, :]) & valid[:, None, :]  # (B, T, T)
    counts = same.sum(-1).clamp(min=1).to(torch.float32)  # (B, T) occurrences of each position's id
    share = torch.log1p(counts) / counts * valid  # (B, T)
    return (weights(ids) * share[..., None]).sum(1)  # (B, n_out)


class CountsLinear(nn.Module):
    """(B, T) journeys -> (B, n_out) scores, linear in the journey's totals (no bias: its holder has one).

    The count weights start at zero; with ``zero_numeric`` the numeric weights too (the map then starts at
    exactly zero, as a path added beside a network must).
    """

    def __init__(self, spec: FeatureSpec, n_out: int, fields: list[str] | None = None, zero_numeric: bool = False):
        super().__init__()
        fields = spec.categorical_fields if fields is None else fields
        unknown = [f for f in fields if f not in spec.categorical_vocab_sizes]
        if unknown:
            raise ValueError(f"categorical fields {unknown} are not in the FeatureSpec ({spec.categorical_fields})")
        self.event_type = nn.Embedding(spec.event_type_vocab_size, n_out, padding_idx=0)  # one weight per type
        self.categorical = nn.ModuleDict(
            {name: nn.Embedding(spec.categorical_vocab_sizes[name], n_out, padding_idx=0) for name in fields}
        )
        num_numeric = len(spec.numeric_fields)
        self.numeric = nn.Linear(2 * num_numeric, n_out, bias=False) if num_numeric else None
        for table in [self.event_type, *self.categorical.values()]:
            nn.init.zeros_(table.weight)
        if zero_numeric and self.numeric is not None:
            nn.init.zeros_(self.numeric.weight)

    def tables(self) -> list[nn.Embedding]:
        """The per-id weight tables: one (B, T, n_out) output per behaviour, zero at padding."""
        return [self.event_type, *self.categorical.values()]

    def forward(self, batch: SequenceBatch) -> torch.Tensor:
        mask = batch.mask
        scores = bag_of_ids(batch.event_type, mask, self.event_type)  # (B, n_out)
        for name, weights in self.categorical.items():
            scores = scores + bag_of_ids(batch.categorical[name], mask, weights)
        if self.numeric is not None:
            present = batch.numeric_mask.sum(1)  # (B, F)
            mean = (batch.numeric * batch.numeric_mask).sum(1) / present.clamp(min=1.0)
            share = present / batch.lengths.clamp(min=1).to(present.dtype)[:, None]
            scores = scores + self.numeric(torch.cat([mean, share], dim=-1))
        return scores

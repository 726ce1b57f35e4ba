"""The preprocessor's numeric statistics are summed exactly: the same floats whatever the batches or engine."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

from journey_model.data.prepare import ExactMoments, add_sum_parts, exact_sum_parts, exact_total
from journey_model.data.preprocessing import NumericTransform
from journey_model.data.schema import DatasetConfig


def test_exact_sums_are_the_correctly_rounded_sum_in_any_order_and_chunking():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.lognormal(3, 4, 5_000), -rng.lognormal(0, 6, 5_000), [0.0, -0.0, 5e-324, 1e300,
                             -1e300, 2.0**-1074, 1e-310]])
    rng.shuffle(values)
    assert exact_total(exact_sum_parts(values)) == math.fsum(values)
    for pieces in (2, 7, 100):
        parts: dict[int, int] = {}
        for chunk in np.array_split(rng.permutation(values), pieces):
            add_sum_parts(parts, exact_sum_parts(chunk))
        assert exact_total(parts) == math.fsum(values)
    assert exact_total({}) == 0.0 and exact_sum_parts(np.array([])) == {}


def test_moments_do_not_depend_on_the_batches():
    dataset = DatasetConfig(name="toy", behaviours={"pay": {"numeric": ["amount"]}})
    amounts = np.random.default_rng(1).lognormal(3, 2, 10_001)
    amounts[::97] = np.nan  # missing: not counted
    whole, batched = ExactMoments(), ExactMoments()
    whole.update(pa.table({"amount": amounts}), dataset)
    for chunk in np.array_split(amounts, 13):
        batched.update(pa.table({"amount": chunk}), dataset)
    assert whole.numeric_sums() == batched.numeric_sums()
    transformed = NumericTransform.signed_log1p(amounts[~np.isnan(amounts)])
    n, total, squares = whole.numeric_sums()["amount"]
    assert (n, total, squares) == (transformed.size, math.fsum(transformed), math.fsum(transformed**2))

"""Property tests: no event at or after a cut-off reaches an example's input; targets read only the future.

Each property compares the vectorised example builder with a brute-force, one-example-at-a-time reading
of the same events, on random logs with ties, unknown customers and cut-offs that coincide with events.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journey_model.data.features import EOS_ID
from journey_model.data.preprocessing import FieldStatistics, PreprocessingConfig, Preprocessor
from journey_model.data.schema import DatasetConfig, conform_table
from journey_model.data.sequences import encode_examples

DAY_US = 86_400 * 1_000_000
DATASET = DatasetConfig(name="prop", categorical_fields=["item"], numeric_fields=["amount"])
TYPES = ["login", "pay", "fee", "close"]


def _events_table(rows: list[tuple[int, int, int]]) -> pa.Table:
    customers = [f"c{c}" for c, _, _ in rows]
    ts = pa.array([t * DAY_US // 4 for _, t, _ in rows], pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    table = pa.table({
        "customer_id": pa.array(customers, pa.string()),
        "ts": ts,
        "event_type": pa.array([TYPES[k] for _, _, k in rows], pa.string()),
        "event_id": pa.array([f"e{i}" for i in range(len(rows))], pa.string()),
        "item": pa.array([f"i{k}" for _, _, k in rows], pa.string()),
        "amount": pa.array([float(t) for _, t, _ in rows], pa.float64()),
    })
    return conform_table(table, DATASET)


def _fit(events: pa.Table, max_len: int, steps: int) -> Preprocessor:
    stats = FieldStatistics()
    stats.update(events, DATASET)
    return Preprocessor.fit(stats, DATASET, PreprocessingConfig(max_len=max_len, min_count=1, forecast_steps=steps))


event_rows = st.lists(
    st.tuples(st.integers(0, 4), st.integers(0, 120), st.integers(0, len(TYPES) - 1)), min_size=1, max_size=60
)
cutoff_rows = st.lists(st.tuples(st.integers(0, 5), st.integers(0, 130)), min_size=1, max_size=12)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=event_rows, cutoffs=cutoff_rows, max_len=st.integers(1, 8), steps=st.integers(1, 4),
       horizon=st.integers(1, 40))
def test_inputs_are_strictly_before_the_cutoff_and_targets_after(rows, cutoffs, max_len, steps, horizon):
    events = _events_table(rows)
    preprocessor = _fit(events, max_len, steps)
    examples = pa.table({
        "customer_id": pa.array([f"c{c}" for c, _ in cutoffs], pa.string()),
        "cutoff": pa.array([t * DAY_US // 4 for _, t in cutoffs], pa.int64()).cast(pa.timestamp("us", tz="UTC")),
    })
    horizon_days = horizon / 4
    out = encode_examples(preprocessor, events, examples, {"closes": ("close", horizon_days)},
                                       forecast_horizon_days=horizon_days).to_pylist()
    observed_until = max(t for _, t, _ in rows)
    type_vocab = preprocessor.vocabularies["event_type"]
    for (customer, cut), row in zip(cutoffs, out):
        mine = sorted(((t, i, k) for i, (c, t, k) in enumerate(rows) if c == customer), key=lambda e: (e[0], e[1]))
        past = [e for e in mine if e[0] < cut]
        future = [e for e in mine if e[0] >= cut]
        # Inputs: exactly the most recent max_len events strictly before the cut-off.
        assert [f"e{i}" for _, i, _ in past[-max_len:]] == row["event_id"]
        assert row["length"] == len(past[-max_len:])
        # Every input time bucket is a valid, non-padding bucket.
        assert all(1 <= b <= preprocessor.config.num_time_buckets for b in row["time_bucket"])
        # Next event: the first at or after the cut-off.
        expected_next = type_vocab.id_of(TYPES[future[0][2]]) if future else 0
        assert row["next_event_type"] == expected_next
        # Derived label: a 'close' in [cut, cut + horizon), unknown when the window passes the data's end.
        window_end = cut + horizon
        if window_end > observed_until:
            assert row["y_closes"] is None or np.isnan(row["y_closes"])
        else:
            assert row["y_closes"] == float(any(t < window_end and TYPES[k] == "close" for t, _, k in future))
        # Forecast: next `steps` types within the horizon, <eos> when fewer, unknown when not observable.
        within = [type_vocab.id_of(TYPES[k]) for t, _, k in future if t < window_end][:steps]
        if len(within) == steps:
            assert row["forecast_event_type"] == within
        elif window_end <= observed_until:
            assert row["forecast_event_type"] == [*within, EOS_ID]
        else:
            assert row["forecast_event_type"] == []


@settings(max_examples=60, deadline=None)
@given(rows=event_rows, cutoffs=cutoff_rows)
def test_events_after_the_cutoff_change_nothing_in_the_input(rows, cutoffs):
    """Rewriting every event at or after each cut-off leaves the encoded inputs unchanged."""
    events = _events_table(rows)
    preprocessor = _fit(events, 5, 2)
    earliest_cut = min(t for _, t in cutoffs)
    changed_rows = [(c, t, (k + 1) % len(TYPES)) if t >= earliest_cut else (c, t, k) for c, t, k in rows]
    examples = pa.table({
        "customer_id": pa.array([f"c{c}" for c, _ in cutoffs], pa.string()),
        "cutoff": pa.array([earliest_cut * DAY_US // 4] * len(cutoffs), pa.int64()).cast(pa.timestamp("us", tz="UTC")),
    })
    input_columns = ["event_type", "time_bucket", "cat_item", "num_amount", "length"]
    before = encode_examples(preprocessor, events, examples).select(input_columns)
    after = encode_examples(preprocessor, _events_table(changed_rows), examples).select(input_columns)
    assert before.equals(after)


def test_time_bucket_edges_follow_atrank():
    from journey_model.data.preprocessing import TimeBuckets

    buckets = TimeBuckets(unit_seconds=86400.0, num_buckets=13)
    gaps_days = np.array([0, 0.99, 1, 2.99, 3, 6.99, 7, 4094.99, 4095, 10**6])
    # bucket = floor(log2(gap + 1)) + 1 (0 is padding); the last real bucket is the overflow.
    assert buckets.bucket_ids(gaps_days * 86400).tolist() == [1, 1, 2, 2, 3, 3, 4, 12, 13, 13]
    assert buckets.lower_edges()[:4] == [0.0, 1.0, 3.0, 7.0]
    assert buckets.label(13) == ">= 4095 days"
    with pytest.raises(ValueError, match="at or after its cut-off"):
        buckets.bucket_ids(np.array([-1.0]))


ELIGIBILITY = DatasetConfig(name="prop", categorical_fields=["item"], numeric_fields=["amount"], outcomes={
    "closes": {"eligibility": [{"name": "closed", "exclude_if": {"event_type": "close"},
                                "reason": "closed on {date}"}]},
    "pays": {"eligibility": [{"name": "inactive", "require": {"event_type": "login", "within_days": 5}}]},
})


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=event_rows, cutoffs=cutoff_rows, max_len=st.integers(1, 8))
def test_no_ineligible_example_keeps_a_label(rows, cutoffs, max_len):
    """Eligibility is judged on the events strictly before the cut-off (all of them, not only the max_len the
    model reads): a customer with a 'close' before it, or without a login in the 5 days before it, keeps no
    label for that outcome, and gets the rule and the reason instead; everyone else keeps the label."""
    events = _events_table(rows)
    preprocessor = _fit(events, max_len, 1)
    preprocessor.dataset = ELIGIBILITY
    preprocessor.outcome_names = ["closes", "pays"]
    examples = pa.table({
        "customer_id": pa.array([f"c{c}" for c, _ in cutoffs], pa.string()),
        "cutoff": pa.array([t * DAY_US // 4 for _, t in cutoffs], pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "closes": pa.array([1.0] * len(cutoffs)),
        "pays": pa.array([0.0] * len(cutoffs)),
    })
    out = encode_examples(preprocessor, events, examples).to_pylist()
    for (customer, cut), row in zip(cutoffs, out):
        past = [(t, k) for c, t, k in rows if c == customer and t < cut]
        closes = [t for t, k in past if TYPES[k] == "close"]
        if closes:
            day = np.datetime_as_string(np.datetime64(max(closes) * DAY_US // 4, "us"), unit="D")
            assert (row["ineligible_rule_closes"], row["ineligible_closes"]) == ("closed", f"closed on {day}")
            assert np.isnan(row["y_closes"])
        else:
            assert row["ineligible_rule_closes"] is None and row["ineligible_closes"] is None
            assert row["y_closes"] == 1.0
        active = any(TYPES[k] == "login" and t * DAY_US // 4 >= cut * DAY_US // 4 - 5 * DAY_US for t, k in past)
        assert (row["ineligible_rule_pays"] is None) == active
        assert (row["y_pays"] == 0.0) if active else np.isnan(row["y_pays"])


tied_rows = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 6), st.integers(0, len(TYPES) - 1)), min_size=1, max_size=40
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=tied_rows, max_len=st.integers(1, 8), plain=st.lists(st.booleans(), min_size=40, max_size=40))
def test_events_at_the_same_time_keep_their_order(rows, max_len, plain):
    """An example naming its target event (``_seq`` = the event's row) reads the events before that event in
    (time, row) order, ties included, and predicts that very event; an example without one (null ``_seq``)
    keeps the strictly-before-the-time rule."""
    events = _events_table(rows)
    preprocessor = _fit(events, max_len, 1)
    seqs = [None if plain[i] else i for i in range(len(rows))]
    examples = pa.table({
        "customer_id": pa.array([f"c{c}" for c, _, _ in rows], pa.string()),
        "cutoff": pa.array([t * DAY_US // 4 for _, t, _ in rows], pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "_seq": pa.array(seqs, pa.int64()),
    })
    out = encode_examples(preprocessor, events, examples).to_pylist()
    assert all(not name.startswith("y_") for name in out[0])
    type_vocab = preprocessor.vocabularies["event_type"]
    for i, ((customer, cut, _kind), row) in enumerate(zip(rows, out)):
        mine = sorted((t, j, k) for j, (c, t, k) in enumerate(rows) if c == customer)
        if seqs[i] is None:
            past = [e for e in mine if e[0] < cut]
            future = [e for e in mine if e[0] >= cut]
        else:
            past = [e for e in mine if (e[0], e[1]) < (cut, i)]
            future = [e for e in mine if (e[0], e[1]) >= (cut, i)]
            assert future[0][1] == i  # the target is the example's own event
        assert row["event_id"] == [f"e{j}" for _, j, _ in past[-max_len:]]
        assert row["next_event_type"] == type_vocab.id_of(TYPES[future[0][2]])

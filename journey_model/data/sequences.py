"""Point-in-time example building: from events and (customer, cut-off) pairs to encoded sequence rows.

This is the one place where the "no future in the input" rule is enforced. For every example the events
are located with a single vectorised merge of events and cut-offs sorted by (customer, time): an event
enters the input only if its timestamp is *strictly* before the cut-off; the first event at or after the
cut-off is the next-event target. Events at the same time keep their order (their ``_seq`` column, else
their row order); an example may name its target event by that order (its own ``_seq``: the cut-off is then
the position (time, seq), so events tied with the target but before it are input and the target is the next
event). Without ``_seq``, or with a null one, the cut-off is a time and the rule is strictly-before. Labels derived from the future ("event X within H days") read only the
window [cut-off, cut-off + H) and are unknown when that window reaches past the end of the observed data.
Eligibility (:mod:`journey_model.data.eligibility`) is judged here too, on the same events before the same
cut-off: an example outside an outcome's population at risk gets the reason and an unknown label for it.

Everything is NumPy / Arrow over whole chunks — no Python loop per event or per example — so
`journey prepare` stays fast on tens of millions of events and the API can reuse the same code for one
customer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from journey_model.data.eligibility import (
    ITEM_FIELD,
    SortedEvents,
    ineligible_reason_column,
    ineligible_rule_column,
    judge_eligibility,
)
from journey_model.data.features import EOS_ID, PAD_ID
from journey_model.data.preprocessing import Preprocessor
from journey_model.data.schema import (
    CUSTOMER_ID,
    EVENT_ID,
    EVENT_TYPE,
    TIMESTAMP,
    TIMESTAMP_TYPE,
    DatasetConfig,
)

CUTOFF = "cutoff"
SEQ = "_seq"  # an event's place among events at the same time; on an example: that of its target event
NO_SEQ = np.iinfo(np.int64).min  # a cut-off at a time, before every event at that time
MICROS_PER_DAY = 86_400 * 1_000_000


def timestamps_to_micros(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """UTC timestamps as int64 microseconds since the epoch."""
    return column.cast(TIMESTAMP_TYPE).cast(pa.int64()).to_numpy(zero_copy_only=False).astype(np.int64)


def first_index_at_or_after(
    event_codes: np.ndarray, event_ts: np.ndarray, query_codes: np.ndarray, query_ts: np.ndarray,
    event_seq: np.ndarray | None = None, query_seq: np.ndarray | None = None,
) -> np.ndarray:
    """For each query (customer code, time), the index of the first event with (code, ts) >= (code, time).

    ``event_codes``/``event_ts`` must be sorted by (code, ts) (and ``event_seq`` within equal times). Equivalently:
    the number of events that lie strictly before the query in (code, time) order, which is why events at
    exactly the query time are *not* before it. With ``query_seq`` the query is the position (code, time, seq)
    instead: events at the query time with a smaller seq are before it (:data:`NO_SEQ` = a plain time).
    """
    n_events = event_codes.shape[0]
    codes = np.concatenate([event_codes, query_codes])
    times = np.concatenate([event_ts, query_ts])
    is_event = np.concatenate([np.ones(n_events, dtype=np.int8), np.zeros(query_codes.shape[0], dtype=np.int8)])
    if query_seq is None:
        # Sort by code, then time, then queries before events at the same instant (kind 0 < 1).
        order = np.lexsort((is_event, times, codes))
    else:
        ev_seq = event_seq if event_seq is not None else np.arange(n_events, dtype=np.int64)
        seqs = np.concatenate([ev_seq.astype(np.int64), query_seq.astype(np.int64)])
        order = np.lexsort((is_event, seqs, times, codes))
    events_before = np.cumsum(is_event[order]) - is_event[order]
    result = np.empty(query_codes.shape[0], dtype=np.int64)
    query_positions = order >= n_events
    result[order[query_positions] - n_events] = events_before[query_positions]
    return result


@dataclass
class LocatedExamples:
    """Events sorted by (customer, time) and, per example, where its customer's history and its cut-off fall."""

    events: pa.Table  # the events, sorted by (customer code, time)
    ev_code: np.ndarray  # customer code per sorted event
    ev_ts: np.ndarray  # µs per sorted event
    ev_seq: np.ndarray  # tie order per sorted event (``_seq``, else the row in the given events)
    ex_customers: pa.ChunkedArray  # customer id per example (strings)
    ex_code: np.ndarray  # customer code per example
    ex_cut: np.ndarray  # cut-off per example, µs
    ex_seq: np.ndarray | None  # per example: its target event's seq (NO_SEQ = a plain time); None = all plain
    seg_start: np.ndarray  # per example: index of its customer's first event
    seg_end: np.ndarray  # per example: one past its customer's last event
    first_future: np.ndarray  # per example: index of the first event at or after the cut-off

    def history(self) -> SortedEvents:
        """What eligibility rules are judged on."""
        item = self.events.column(ITEM_FIELD) if ITEM_FIELD in self.events.column_names else None
        return SortedEvents(
            event_type=self.events.column(EVENT_TYPE).cast(pa.string()).combine_chunks(),
            item=item.cast(pa.string()).combine_chunks() if item is not None else None,
            ts=self.ev_ts, seg_start=self.seg_start, first_future=self.first_future, cutoff=self.ex_cut,
        )


def locate_examples(events: pa.Table, examples: pa.Table) -> LocatedExamples:
    """Sort ``events`` by (customer, time) and find each (customer, cut-off) example's place in them."""
    ex_customers = examples.column(CUSTOMER_ID).cast(pa.string())
    ev_customers = events.column(CUSTOMER_ID).cast(pa.string())
    universe = pc.unique(pa.chunked_array(ev_customers.chunks + ex_customers.chunks, type=pa.string()))
    ev_code = pc.index_in(ev_customers, value_set=universe).to_numpy(zero_copy_only=False).astype(np.int64)
    ex_code = pc.index_in(ex_customers, value_set=universe).to_numpy(zero_copy_only=False).astype(np.int64)
    ev_ts_unsorted = timestamps_to_micros(events.column(TIMESTAMP))
    ev_seq_unsorted = (events.column(SEQ).cast(pa.int64()).to_numpy(zero_copy_only=False).astype(np.int64)
                       if SEQ in events.column_names else np.arange(events.num_rows, dtype=np.int64))
    order = np.lexsort((ev_seq_unsorted, ev_ts_unsorted, ev_code))
    ev_code, ev_ts, ev_seq = ev_code[order], ev_ts_unsorted[order], ev_seq_unsorted[order]
    ex_cut = timestamps_to_micros(examples.column(CUTOFF))
    ex_seq = None
    if SEQ in examples.column_names:
        ex_seq = pc.fill_null(examples.column(SEQ).cast(pa.int64()), NO_SEQ).to_numpy(zero_copy_only=False)
        ex_seq = ex_seq.astype(np.int64)
    return LocatedExamples(
        events=events.take(pa.array(order)), ev_code=ev_code, ev_ts=ev_ts, ev_seq=ev_seq,
        ex_customers=ex_customers, ex_code=ex_code, ex_cut=ex_cut, ex_seq=ex_seq,
        seg_start=np.searchsorted(ev_code, ex_code, side="left"),
        seg_end=np.searchsorted(ev_code, ex_code, side="right"),
        first_future=first_index_at_or_after(ev_code, ev_ts, ex_code, ex_cut, ev_seq, ex_seq),
    )


def judge_examples(
    dataset: DatasetConfig, events: pa.Table, examples: pa.Table, outcomes: list[str]
) -> dict[str, tuple[pa.Array, pa.Array]]:
    """Eligibility of (customer, cut-off) examples for ``outcomes``, without encoding them (e.g. for labels).

    Same rules and result as :func:`encode_examples` gives in its ``ineligible_*`` columns.
    """
    return judge_eligibility(dataset, outcomes, locate_examples(events, examples).history())


def _list_array(offsets: np.ndarray, values: np.ndarray | pa.Array) -> pa.ListArray:
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values)


def encode_examples(
    preprocessor: Preprocessor,
    events: pa.Table,
    examples: pa.Table,
    horizon_targets: dict[str, tuple[str, float]] | None = None,
    forecast_horizon_days: float | None = None,
) -> pa.Table:
    """Encode (customer, cut-off) examples from the events of those customers.

    ``events`` holds canonical events (any order; events at the same time keep their ``_seq`` order, else
    their row order); ``examples`` has ``customer_id``, ``cutoff``, optionally ``_seq`` (the target event's
    seq: the cut-off is then that event's position, see the module) and optionally target columns, which are
    carried through as ``y_<name>``. Only events strictly before an example's cut-off reach its input (the most recent ``max_len`` of them). The next event at or
    after the cut-off gives the next-event targets, the next K within ``forecast_horizon_days`` (all
    when None) the forecast. ``horizon_targets`` derives outcomes "event type X happens within H days
    after the cut-off": ``{"churn": ("account_close", 60.0)}``; windows that reach past
    ``observed_until`` are unknown (NaN), not negative. Returns one row per example, in the order of
    ``examples``, with list columns as described in :mod:`journey_model.data.batch`.

    Every outcome (the preprocessor's, the derived ones and the examples' label columns) whose eligibility
    the dataset declares gets ``ineligible_rule_<name>`` and ``ineligible_<name>`` (rule and sentence, null
    when eligible), and its label is unknown (NaN) where the example is not eligible.
    """
    horizon_targets = horizon_targets or {}
    config = preprocessor.config
    located = locate_examples(events, examples)
    events, ev_code, ev_ts, ex_code, ex_cut = (
        located.events, located.ev_code, located.ev_ts, located.ex_code, located.ex_cut
    )
    seg_start, seg_end, first_future = located.seg_start, located.seg_end, located.first_future

    encoded = preprocessor.encode_events(events)

    # Inputs: the most recent max_len events strictly before the cut-off.
    start = np.maximum(seg_start, first_future - config.max_len)
    lengths = first_future - start
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    gather = np.repeat(start - offsets[:-1], lengths) + np.arange(offsets[-1])

    gaps_seconds = (np.repeat(ex_cut, lengths) - ev_ts[gather]) / 1e6
    columns: dict[str, pa.Array] = {
        CUSTOMER_ID: located.ex_customers.combine_chunks(),
        CUTOFF: examples.column(CUTOFF).cast(TIMESTAMP_TYPE).combine_chunks(),
        "length": pa.array(lengths.astype(np.int32)),
        "event_type": _list_array(offsets, encoded["event_type"][gather]),
        "time_bucket": _list_array(offsets, preprocessor.time_buckets.bucket_ids(gaps_seconds)),
        # the same gap at the data's own resolution, for models that read time continuously [seconds]
        "time_gap": _list_array(offsets, gaps_seconds.astype(np.float32)),
    }
    for name in preprocessor.dataset.categorical_fields:
        columns[f"cat_{name}"] = _list_array(offsets, encoded[f"cat_{name}"][gather])
    for name in preprocessor.dataset.numeric_fields:
        columns[f"num_{name}"] = _list_array(offsets, encoded[f"num_{name}"][gather])
    if config.keep_event_ids and EVENT_ID in events.column_names:
        ids = events.column(EVENT_ID).cast(pa.string()).combine_chunks()
        columns["event_id"] = _list_array(offsets, ids.take(pa.array(gather)))

    # Next-event targets: the first event at or after the cut-off (0 = none observed).
    has_next = first_future < seg_end
    safe_next = np.where(has_next, first_future, 0)
    next_type = np.where(has_next, encoded["event_type"][safe_next] if len(ev_code) else 0, PAD_ID)
    columns["next_event_type"] = pa.array(next_type.astype(np.int32))
    next_ts = np.where(has_next, ev_ts[safe_next] if len(ev_code) else 0, 0)
    columns["next_event_ts"] = pa.array(next_ts, type=pa.int64(), mask=~has_next).cast(TIMESTAMP_TYPE)
    if config.item_field is not None:
        item_ids = encoded[f"cat_{config.item_field}"]
        next_item = np.where(has_next, item_ids[safe_next] if len(ev_code) else 0, PAD_ID)
        columns["next_item"] = pa.array(next_item.astype(np.int32))

    observed_until = _observed_until_micros(preprocessor, ev_ts)
    columns["forecast_event_type"] = _forecast_targets(
        encoded["event_type"], ev_code, ev_ts, ex_code, ex_cut, first_future, seg_end,
        config.forecast_steps, forecast_horizon_days, observed_until,
    )

    for name in examples.column_names:
        if name not in (CUSTOMER_ID, CUTOFF, SEQ):
            columns[f"y_{name}"] = examples.column(name).cast(pa.float32()).combine_chunks()
    for name, (event_type, horizon_days) in horizon_targets.items():
        type_id = preprocessor.vocabularies[EVENT_TYPE].id_of(event_type)
        is_type = (encoded["event_type"] == type_id).astype(np.int64)
        cumulative = np.concatenate([[0], np.cumsum(is_type)])
        window_end = ex_cut + int(horizon_days * MICROS_PER_DAY)
        end_index = first_index_at_or_after(ev_code, ev_ts, ex_code, window_end)
        label = (cumulative[end_index] - cumulative[first_future] > 0).astype(np.float32)
        label[window_end > observed_until] = np.nan  # the window is not fully observed: unknown
        columns[f"y_{name}"] = pa.array(label, type=pa.float32())

    outcomes = list(dict.fromkeys([
        *preprocessor.outcome_names, *horizon_targets,
        *(n for n in examples.column_names if n not in (CUSTOMER_ID, CUTOFF, SEQ)),
    ]))
    for name, (rule, reason) in judge_eligibility(preprocessor.dataset, outcomes, located.history()).items():
        columns[ineligible_rule_column(name)] = rule
        columns[ineligible_reason_column(name)] = reason
        if f"y_{name}" in columns:
            ineligible = rule.is_valid().to_numpy(zero_copy_only=False)
            label = columns[f"y_{name}"].to_numpy(zero_copy_only=False).astype(np.float32)
            label[ineligible] = np.nan
            columns[f"y_{name}"] = pa.array(label, type=pa.float32())
    return pa.table(columns)


def _observed_until_micros(preprocessor: Preprocessor, ev_ts: np.ndarray) -> int:
    if preprocessor.observed_until is not None:
        return int(np.datetime64(preprocessor.observed_until.rstrip("Z"), "us").astype(np.int64))
    return int(ev_ts.max()) if ev_ts.size else 0


def _forecast_targets(
    event_type_ids: np.ndarray,
    ev_code: np.ndarray,
    ev_ts: np.ndarray,
    ex_code: np.ndarray,
    ex_cut: np.ndarray,
    first_future: np.ndarray,
    seg_end: np.ndarray,
    steps: int,
    horizon_days: float | None,
    observed_until: int,
) -> pa.ListArray:
    """The next ``steps`` event types after each cut-off, with <eos> when the journey ends sooner.

    "Ends" means no further event within ``horizon_days`` (or, without a horizon, in the data). When that
    window reaches past the observed data and fewer than ``steps`` events were seen, the ending is not
    known and the target is an empty list (unknown), never a made-up <eos>.
    """
    if horizon_days is None:
        stop = seg_end
        window_complete = np.zeros(ex_code.shape[0], dtype=bool)
    else:
        window_end = ex_cut + int(horizon_days * MICROS_PER_DAY)
        stop = np.minimum(first_index_at_or_after(ev_code, ev_ts, ex_code, window_end), seg_end)
        window_complete = window_end <= observed_until
    n_future = np.clip(stop - first_future, 0, steps)
    ended = n_future < steps
    known = ~ended | window_complete
    n_future = np.where(known, n_future, 0)
    with_eos = known & ended
    lengths = n_future + with_eos
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    values = np.full(offsets[-1], EOS_ID, dtype=np.int32)
    step_index = np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths)
    is_event = step_index < np.repeat(n_future, lengths)
    source = np.repeat(first_future, lengths) + step_index
    values[is_event] = event_type_ids[source[is_event]]
    return _list_array(offsets, values)

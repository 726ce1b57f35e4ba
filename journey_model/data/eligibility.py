"""Who can have an outcome at a cut-off: the dataset's eligibility rules, judged on the events before it.

A churn score for a customer who closed the account last month, or a default score for a customer already in
default, ranks the already-lost first and flatters every metric. The dataset config declares, per outcome,
the population at risk (:class:`~journey_model.data.schema.EligibilityRule`: ``exclude_if`` an event happened,
``require`` that one did, optionally within N days); :func:`judge_eligibility` evaluates those rules for
every (customer, cut-off) example over events sorted by (customer, time), with the same strictly-before rule
as the inputs. It is called by the point-in-time builder (:func:`journey_model.data.sequences.encode_examples`)
only, so training examples, batch scoring, the online API and the pyfunc model all judge eligibility with this
one piece of code.

The result, per outcome, is the rule that made an example ineligible (its name, counted in manifests) and a
sentence for the person reading the list ("account closed on 2024-09-03"); eligible examples get nulls.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from journey_model.data.schema import DatasetConfig, EligibilityRule, EventMatch

ITEM_FIELD = "item"  # the canonical field an EventMatch's ``items`` refer to
MICROS_PER_DAY = 86_400 * 1_000_000


def ineligible_rule_column(outcome: str) -> str:
    """Encoded-row column with the name of the rule that made the example ineligible (null = eligible)."""
    return f"ineligible_rule_{outcome}"


def ineligible_reason_column(outcome: str) -> str:
    """Encoded-row and score column with the sentence saying why the example is ineligible (null = eligible)."""
    return f"ineligible_{outcome}"


@dataclass
class SortedEvents:
    """Events sorted by (customer code, time) and where each example's history ends in them."""

    event_type: pa.Array  # string, per event
    item: pa.Array | None  # string, per event (None when the dataset has no item field)
    ts: np.ndarray  # int64 µs, per event
    seg_start: np.ndarray  # per example: index of the customer's first event
    first_future: np.ndarray  # per example: index of the first event at or after the cut-off
    cutoff: np.ndarray  # per example: the cut-off, int64 µs


def _matches(events: SortedEvents, match: EventMatch) -> np.ndarray:
    mask = np.ones(len(events.ts), dtype=bool)
    if match.event_type is not None:
        mask &= pc.fill_null(pc.equal(events.event_type, match.event_type), False).to_numpy(zero_copy_only=False)
    if match.items:
        if events.item is None:
            return np.zeros(len(events.ts), dtype=bool)
        in_items = pc.is_in(events.item, value_set=pa.array(match.items, pa.string()))
        mask &= pc.fill_null(in_items, False).to_numpy(zero_copy_only=False)
    return mask


def _latest_match_before(events: SortedEvents, match: EventMatch) -> np.ndarray:
    """Per example, the index of the latest matching event strictly before the cut-off (in its window), or -1."""
    mask = _matches(events, match)
    if not mask.any():
        return np.full(events.cutoff.shape[0], -1, dtype=np.int64)
    latest = np.maximum.accumulate(np.where(mask, np.arange(mask.size), -1))
    last_before = events.first_future - 1
    candidate = np.where(last_before >= 0, latest[np.clip(last_before, 0, None)], -1)
    valid = (candidate >= 0) & (candidate >= events.seg_start)  # the customer's own event, not the previous one's
    if match.within_days is not None:
        window_start = events.cutoff - int(match.within_days * MICROS_PER_DAY)
        valid &= events.ts[np.clip(candidate, 0, None)] >= window_start
    return np.where(valid, candidate, -1)


def _dates(micros: np.ndarray) -> np.ndarray:
    return np.datetime_as_string(micros.astype("datetime64[us]"), unit="D")


def _sentences(rule: EligibilityRule, latest: np.ndarray, events: SortedEvents, rows: np.ndarray) -> list[str]:
    window = rule.match.within_days
    days = f"{window:g}" if window is not None else ""
    if "{date}" not in rule.reason:
        return [rule.reason.format(days=days)] * rows.size
    dates = _dates(events.ts[latest[rows]]) if rows.size else []
    return [rule.reason.format(date=d, days=days) for d in dates]


def judge_eligibility(
    dataset: DatasetConfig, outcomes: list[str], events: SortedEvents
) -> dict[str, tuple[pa.Array, pa.Array]]:
    """Per outcome with rules: (rule name, reason sentence) string arrays per example, null where eligible.

    The first rule (in the config's order) an example fails is the one reported.
    """
    n = events.cutoff.shape[0]
    judged: dict[str, tuple[pa.Array, pa.Array]] = {}
    for outcome in outcomes:
        spec = dataset.outcomes.get(outcome)
        if spec is None or not spec.eligibility:
            continue
        rule_of = np.full(n, None, dtype=object)
        reason_of = np.full(n, None, dtype=object)
        undecided = np.ones(n, dtype=bool)
        for rule in spec.eligibility:
            latest = _latest_match_before(events, rule.match)
            failing = (latest >= 0) if rule.exclude_if is not None else (latest < 0)
            rows = np.flatnonzero(failing & undecided)
            if rows.size:
                rule_of[rows] = rule.name
                reason_of[rows] = _sentences(rule, latest, events, rows)
                undecided[rows] = False
        judged[outcome] = (pa.array(rule_of, pa.string()), pa.array(reason_of, pa.string()))
    return judged


def outcomes_with_rules(dataset: DatasetConfig, outcomes: list[str]) -> list[str]:
    """The outcomes among ``outcomes`` whose eligibility the dataset declares."""
    return [name for name in outcomes if name in dataset.outcomes and dataset.outcomes[name].eligibility]


def count_ineligible(rows: pa.Table, outcomes: list[str]) -> dict[str, dict[str, int]]:
    """``{outcome: {rule: examples}}`` over encoded rows (only rules that excluded someone)."""
    counts: dict[str, dict[str, int]] = {}
    for outcome in outcomes:
        column = ineligible_rule_column(outcome)
        if column not in rows.column_names:
            continue
        values = rows.column(column).drop_null()
        if len(values):
            tallied = pc.value_counts(values).to_pylist()
            counts[outcome] = {entry["values"]: int(entry["counts"]) for entry in tallied}
    return counts


def merge_counts(total: dict[str, dict[str, int]], more: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """Add ``more`` into ``total`` (both ``{outcome: {rule: n}}``); returns ``total``."""
    for outcome, rules in more.items():
        into = total.setdefault(outcome, {})
        for rule, n in rules.items():
            into[rule] = into.get(rule, 0) + int(n)
    return total


__all__ = [
    "SortedEvents", "count_ineligible", "ineligible_reason_column", "ineligible_rule_column",
    "judge_eligibility", "merge_counts", "outcomes_with_rules",
]

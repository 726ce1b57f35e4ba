"""Reason codes: a customer's most important events, read in the dataset's stable, documented codes.

The dataset config declares per outcome an ordered list of :class:`~journey_model.data.schema.ReasonCode`
(``dataset.yaml``, e.g. churn: ``FEE_AFTER_COMPLAINT``, ``COMPLAINT_RECENT``, ``LOGINS_FADING``). Each of a
customer's top attributed events with a positive importance takes the first code it matches; an event no code
matches takes ``EVENT_<EVENT_TYPE>`` with a generic sentence. Per outcome the three codes with the largest summed
importance are kept, so churn, default and uptake are explained in their own words.

Event ages: encoded example rows carry ATRank time buckets, not timestamps, so an event's age is known only
as its bucket's range [2^k - 1, 2^(k+1) - 1) days. A window test gives the benefit of the doubt: an event is
"within 120 days" when its bucket's lower edge is, and a fee is "within 14 days after a complaint" when the
smallest gap the two buckets allow is. Example rows that also carry ``days_before_cutoff`` (a list of floats per
event) are matched exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from journey_model.data.schema import ReasonCode

EVENTS_CONSIDERED = 10  # top positive events per task that are mapped to codes
CODES_KEPT = 3  # distinct codes kept per task
NOISE_SHARE = 1e-4  # an event whose importance is under this share of the task's largest is float noise, no reason


@dataclass
class ReasonCodeHit:
    """One reason code of one task: its sentence, the summed importance of its events, and those events."""

    code: str  # e.g. FEE_AFTER_COMPLAINT, or EVENT_<TYPE> when no declared code matched
    sentence: str
    weight: float  # summed importance of its events (probability points, or attention share)
    events: list[int] = field(default_factory=list)  # input positions (oldest first) of its events

    def to_dict(self) -> dict[str, object]:
        return {"code": self.code, "sentence": self.sentence, "weight": self.weight, "events": list(self.events)}


@dataclass
class EventFacts:
    """What a code looks at for each input event of one customer (oldest first)."""

    event_type: list[str]
    item: list[str | None]
    age_low: np.ndarray  # (n,) smallest possible days before the cut-off
    age_high: np.ndarray  # (n,) largest possible days before the cut-off (== age_low when exact)


def generic_code(event_type: str) -> tuple[str, str]:
    """Code and sentence of an event no declared code matches."""
    return f"EVENT_{event_type.upper().replace('-', '_').replace(' ', '_')}", f"{event_type.replace('_', ' ')} activity"


def matches(code: ReasonCode, facts: EventFacts, position: int) -> bool:
    """Whether the event at ``position`` is one ``code`` names (benefit of the doubt on bucketed ages)."""
    if facts.event_type[position] != code.event_type:
        return False
    if code.items and facts.item[position] not in code.items:
        return False
    if code.within_days is not None and facts.age_low[position] > code.within_days:
        return False
    if code.after is not None:
        limit = np.inf if code.after_within_days is None else code.after_within_days
        earlier = [
            q for q in range(position)
            if facts.event_type[q] == code.after and facts.age_low[q] - facts.age_high[position] <= limit
        ]
        if not earlier:
            return False
    return True


def reason_code_hits(
    importance: np.ndarray,
    facts: EventFacts,
    codes: Sequence[ReasonCode],
    events_considered: int = EVENTS_CONSIDERED,
    kept: int = CODES_KEPT,
) -> list[ReasonCodeHit]:
    """The ``kept`` codes with the largest summed importance among the top positive events of one task.

    Importances within float noise of zero (under ``NOISE_SHARE`` of the task's largest) are no reason: the
    same customer batched with others (other padding) must get the same reasons."""
    order = np.lexsort((-np.arange(len(importance)), -importance))
    floor = NOISE_SHARE * float(np.abs(importance).max()) if len(importance) else 0.0
    hits: dict[str, ReasonCodeHit] = {}
    for position in order[:events_considered]:
        value = float(importance[position])
        if not value > floor:
            break
        chosen = next((c for c in codes if matches(c, facts, int(position))), None)
        code, sentence = (chosen.code, chosen.sentence) if chosen else generic_code(facts.event_type[position])
        hit = hits.setdefault(code, ReasonCodeHit(code, sentence, 0.0))
        hit.weight += value
        hit.events.append(int(position))
    ranked = sorted(hits.values(), key=lambda h: -h.weight)[:kept]
    for hit in ranked:
        hit.events.sort()
    return ranked


def reason_codes_per_task(
    importance: Mapping[str, np.ndarray], facts: EventFacts, codes: Mapping[str, Sequence[ReasonCode]],
    outcomes: Sequence[str], shared_task: str | None = None,
) -> dict[str, list[ReasonCodeHit]]:
    """{outcome: hits}; a weight shared by every task (``shared_task``, a pooling attention) explains each outcome."""
    result = {}
    for outcome in outcomes:
        values = importance.get(outcome)
        if values is None and shared_task is not None:
            values = importance.get(shared_task)
        if values is not None:
            result[outcome] = reason_code_hits(values, facts, codes.get(outcome, []))
    return result


def reason_text(reason_codes: Mapping[str, list[ReasonCodeHit]]) -> str:
    """One readable line per customer: 'churn: FEE_AFTER_COMPLAINT — a fee …; COMPLAINT_RECENT — … | default: …'."""
    parts = []
    for task, hits in reason_codes.items():
        if hits:
            parts.append(f"{task}: " + "; ".join(f"{h.code} — {h.sentence}" for h in hits))
    return " | ".join(parts)

"""Incremental scoring state: a customer's recent events held server-side, updated with new events only.

A model sees at most ``max_len`` events (the most recent ones strictly before the cut-off), and time
buckets are gaps to the cut-off, so the state that reproduces a full request exactly is the customer's
``max_len`` most recent raw events — not a hidden vector. :class:`CustomerStateStore` keeps those per
customer; a new event merges in time order (stable: held events first, then the new ones, as in a full
request that lists the history before the new events) and the oldest falls out. Scoring the held events
with a cut-off therefore gives the same score as sending the whole history with that cut-off.

Memory is bounded: at most ``max_customers`` states of at most ``max_events`` events each, least recently
used evicted first. A client says how many events it believes the server holds (``events_seen`` of the
previous answer); when the state was evicted, or another worker holds it, the store refuses
(:class:`StateMismatch`) instead of scoring a partial history.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from journey_model.data.schema import TIMESTAMP
from journey_model.data.sequences import timestamps_to_micros


class StateMismatch(ValueError):
    """The server does not hold the state the client expects (evicted, never created, or out of step)."""


class HeldEventAfterCutoff(ValueError):
    """A held event lies at or after the cut-off of the request (a cut-off earlier than the history)."""


@dataclass
class CustomerState:
    """The events that decide a customer's next score, and how many events were ever sent."""

    events: pa.Table  # canonical events, chronological, at most max_events rows
    events_seen: int  # events received for this customer since the state was started

    @property
    def last_event_micros(self) -> int | None:
        if not self.events.num_rows:
            return None
        return int(timestamps_to_micros(self.events.column(TIMESTAMP)).max())


class CustomerStateStore:
    """Per-customer recent events with a bound on memory (LRU over customers); safe across threads."""

    def __init__(self, max_customers: int, max_events: int) -> None:
        if max_customers < 1 or max_events < 1:
            raise ValueError(f"max_customers ({max_customers}) and max_events ({max_events}) must be >= 1")
        self.max_customers = max_customers  # states held at most; the least recently used goes first
        self.max_events = max_events  # events kept per customer (the model's max_len)
        self._states: OrderedDict[str, CustomerState] = OrderedDict()
        self._lock = threading.Lock()
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._states)

    def held_events(self) -> int:
        """Events held over all customers (what bounds the store's memory)."""
        with self._lock:
            return sum(state.events.num_rows for state in self._states.values())

    def get(self, customer_id: str) -> CustomerState | None:
        with self._lock:
            return self._states.get(customer_id)

    def update(
        self, customer_id: str, new_events: pa.Table, events_seen: int | None, cutoff_micros: int
    ) -> CustomerState:
        """Add ``new_events`` to the customer's state and return it; atomic per store.

        ``events_seen`` is what the client believes the server holds: None or 0 starts a new state from
        ``new_events`` (replacing any held one); a positive count must equal the held state's count, so two
        clients racing on one customer cannot both extend the same state. Every held event must lie
        strictly before ``cutoff_micros`` (the request's cut-off), as in a full request.
        """
        with self._lock:
            held = self._states.get(customer_id)
            if events_seen:
                if held is None:
                    raise StateMismatch(
                        f"customer {customer_id!r}: no state is held here (evicted, never started, or kept by "
                        "another worker); resend the full history with events_seen = 0"
                    )
                if held.events_seen != events_seen:
                    raise StateMismatch(
                        f"customer {customer_id!r}: the held state has seen {held.events_seen} events, the "
                        f"request says {events_seen}; resend the full history with events_seen = 0"
                    )
                last = held.last_event_micros
                if last is not None and last >= cutoff_micros:
                    raise HeldEventAfterCutoff(
                        f"customer {customer_id!r}: the held state has an event at "
                        f"{np.datetime64(last, 'us')}Z, not before the cut-off {np.datetime64(cutoff_micros, 'us')}Z"
                    )
                events = pa.concat_tables([held.events, new_events.cast(held.events.schema)])
                total = held.events_seen + new_events.num_rows
            else:
                events, total = new_events, new_events.num_rows
            order = np.argsort(timestamps_to_micros(events.column(TIMESTAMP)), kind="stable")[-self.max_events:]
            state = CustomerState(events=events.take(pa.array(order)), events_seen=total)
            self._states[customer_id] = state
            self._states.move_to_end(customer_id)
            while len(self._states) > self.max_customers:
                self._states.popitem(last=False)
                self.evictions += 1
            return state

    def forget(self, customer_id: str) -> bool:
        with self._lock:
            return self._states.pop(customer_id, None) is not None

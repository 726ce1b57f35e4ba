"""Bulk validation of /predict's customers: whole columns at C speed instead of one pydantic ``Event`` per event.

A valid request is the common case, so /predict's body is checked column by column first: every ``ts`` of a
customer against one strict ISO 8601 pattern and parsed by Arrow in one call, every ``event_type`` with one
``set(map(type, …))``, and so on. Only what is certainly valid for :class:`~serving.schemas.CustomerEvents` is
accepted here, with exactly the values pydantic would give (``tests/unit/test_bulk_validation.py`` checks
both paths agree); anything else — a number or an unusual time format, a wrong type, a missing field, an
empty history — falls back to the full pydantic validation, so a bad request gets the same 400 and the same
messages (customer, event index, field) as before. The model-level checks (fields the dataset declares,
extra fields' types, events before the cut-off, limits) follow in :func:`serving.requests.parse_bulk`, which
likewise hands any problem to :func:`serving.requests.parse_customers` for its messages.

Two request forms are accepted for a customer's events:

* rows — ``"events": [{"ts": …, "event_type": …, …}, …]`` (as before);
* columns — ``"events": {"ts": […], "event_type": […], "amount": […], …}``: one array per field, element j of
  every array being event j (nulls where an event has no value). Cheaper to send and to check; a problem is
  reported as in the row form (``customers, i, events, j, field``), and arrays of different lengths are refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import numpy as np
import pyarrow as pa
from pydantic import Field, PlainValidator, TypeAdapter, ValidationError

from journey_model.data.schema import TIMESTAMP_TYPE
from serving.schemas import (
    INPUT_ERROR_TYPE,
    CustomerColumns,
    CustomerEvents,
    OptionalTimestamp,
    customer_named,
    validation_errors,
)

# What this module lets through without pydantic: ISO 8601 with seconds, at most microseconds, and Z, an
# offset or nothing (UTC), year 0001 on. Arrow then refuses impossible dates, hours and offsets, as pydantic
# does. A customer's times are matched as one string (one regex call instead of one per event).
_DATE_TIME = r"(?:\d{3}[1-9]|\d\d[1-9]\d|\d[1-9]\d\d|[1-9]\d{3})-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?"
ISO_PATTERN = "^" + _DATE_TIME + r"(?:Z|[+-]\d\d:\d\d)?$"
_ZONED_TIMES = re.compile(r"(?:" + _DATE_TIME + r"(?:Z|[+-]\d\d:\d\d)\n)*")
_NAIVE_TIMES = re.compile(r"(?:" + _DATE_TIME + r"\n)*")
STRING_FIELDS = ("event_id", "item", "channel")  # optional strings of serving.schemas.Event
MIN_MICROS = -62135596800_000000  # 0001-01-01T00:00:00Z
MAX_MICROS = 253402300799_999999  # 9999-12-31T23:59:59.999999Z
EXACT_FLOAT_INT = 2**53  # larger integers are left to pydantic (float64 may not hold them exactly)
_STRINGS = {str}
_STRING_OR_NONE = {str, type(None)}
_NUMBER_OR_NONE = {float, int, type(None)}
_FULL = TypeAdapter(Annotated[list[CustomerEvents], Field(min_length=1)])
_CUTOFF = TypeAdapter(OptionalTimestamp)
_NAIVE_MICROS = pa.timestamp("us")


@dataclass
class BulkCustomer:
    """One customer whose events passed the bulk checks: columns of plain values, times as UTC microseconds."""

    customer_id: str
    cutoff: datetime | None  # aware (UTC) or None (now)
    n_events: int
    ts: pa.Array  # TIMESTAMP_TYPE
    columns: dict[str, list[Any]]  # field -> one value per event (event_type, optional strings, amount, extras)


@dataclass
class BulkRequest:
    """/predict's customers after the bulk checks, and the body as sent (for the full path's messages)."""

    customers: list[BulkCustomer]
    sent: list[Any]

    @property
    def n_events(self) -> int:
        return sum(c.n_events for c in self.customers)

    def models(self) -> list[CustomerEvents]:
        """The customers as pydantic models (what the full path checks); valid, since the bulk checks passed."""
        return _FULL.validate_python(as_rows(self.sent))


def validate_customers(value: Any) -> BulkRequest | list[CustomerEvents]:
    """/predict's ``customers``: a :class:`BulkRequest` when every customer passes the bulk checks, else the
    full pydantic validation (which raises the same ValidationError as before for a bad request)."""
    bulk = bulk_request(value)
    if bulk is not None:
        return bulk
    return _FULL.validate_python(as_rows(value))


def bulk_request(value: Any) -> BulkRequest | None:
    """The request when every customer is certainly valid; None when any doubt (the full path decides)."""
    if type(value) is not list or not value:
        return None
    customers = []
    for customer in value:
        checked = _bulk_customer(customer)
        if checked is None:
            return None
        customers.append(checked)
    return BulkRequest(customers, value)


def _bulk_customer(customer: Any) -> BulkCustomer | None:
    if type(customer) is not dict:
        return None
    customer_id = customer.get("customer_id")
    if type(customer_id) is not str or not customer_id:
        return None
    cutoff = customer.get("cutoff")
    if cutoff is not None:
        try:
            cutoff = _CUTOFF.validate_python(cutoff)
            cutoff = cutoff.replace(tzinfo=UTC) if cutoff.tzinfo is None else cutoff.astimezone(UTC)
        except (ValidationError, OverflowError):  # not a time, or beyond year 9999 in UTC
            return None
    events = customer.get("events")
    if type(events) is list:
        if not events or set(map(type, events)) != {dict}:
            return None
        names = set().union(*events)
        columns = {name: [event.get(name) for event in events] for name in names}
        n = len(events)
    elif type(events) is dict:
        columns = events
        lengths = {len(column) if type(column) is list else -1 for column in columns.values()}
        if len(lengths) != 1 or -1 in lengths or 0 in lengths:
            return None
        n = lengths.pop()
    else:
        return None
    ts = _timestamps(columns.get("ts"))
    event_types = columns.get("event_type")
    if ts is None or event_types is None or set(map(type, event_types)) != _STRINGS:
        return None
    checked: dict[str, list[Any]] = {}
    for name, values in columns.items():
        if name == "ts":
            continue
        if name in STRING_FIELDS and not set(map(type, values)) <= _STRING_OR_NONE:
            return None
        if name == "amount":
            values = _amounts(values)
            if values is None:
                return None
        checked[name] = values
    return BulkCustomer(customer_id, cutoff, n, ts, checked)


def _timestamps(values: list[Any] | None) -> pa.Array | None:
    """``ts`` strings in the strict ISO form, parsed at once (UTC; no offset means UTC), or None."""
    if values is None or set(map(type, values)) != _STRINGS:
        return None
    joined = "\n".join(values) + "\n"
    try:
        if _ZONED_TIMES.fullmatch(joined):
            times = pa.array(values, pa.string()).cast(TIMESTAMP_TYPE)
        elif _NAIVE_TIMES.fullmatch(joined):
            times = pa.array(values, pa.string()).cast(_NAIVE_MICROS).cast(TIMESTAMP_TYPE)  # naive times are UTC
        else:
            return None  # another form (or zoned and naive mixed): left to pydantic
    except pa.ArrowInvalid:  # an impossible date, hour or offset: pydantic's message
        return None
    micros = times.view(pa.int64()).to_numpy()
    if micros.min() < MIN_MICROS or micros.max() > MAX_MICROS:
        return None  # beyond Python's datetime in UTC (an offset at year 1 or 9999)
    return times


def _amounts(values: list[Any]) -> list[Any] | None:
    """``amount``: finite floats (exact integers made floats, as pydantic's strict float does) and nulls."""
    kinds = set(map(type, values))
    if not kinds <= _NUMBER_OR_NONE:
        return None
    if int in kinds:
        if any(type(v) is int and abs(v) > EXACT_FLOAT_INT for v in values):
            return None
        values = [float(v) if type(v) is int else v for v in values]
    if float in kinds:
        numbers = np.array(values, dtype=np.float64)  # None -> NaN
        bad = np.flatnonzero(~np.isfinite(numbers))
        if any(values[k] is not None for k in bad):
            return None
    return values


# ---------------------------------------------------------------------------------- the columnar form
def as_rows(value: Any) -> Any:
    """The body with each columnar customer's events as rows (what CustomerEvents validates); a customer whose
    columns are not arrays of one length gets its own 400, naming it and the field."""
    if type(value) is not list:
        return value
    problems: list[tuple[tuple[Any, ...], str, str]] = []
    rows = []
    for i, customer in enumerate(value):
        events = customer.get("events") if type(customer) is dict else None
        if type(events) is not dict:
            rows.append(customer)
            continue
        who = customer_named(customer)
        lengths = {}
        for name, column in events.items():
            if type(column) is list:
                lengths[name] = len(column)
            else:
                problems.append(((i, "events", name), "list_type", f"{who}, field {name!r}: expected an array (one "
                                 f"value per event), got {type(column).__name__}"))
        if len(set(lengths.values())) > 1:
            listed = ", ".join(f"{name} {n}" for name, n in lengths.items())
            problems.append(((i, "events"), INPUT_ERROR_TYPE, f"{who}, field 'events': the arrays have different "
                             f"lengths ({listed}); each holds one value per event"))
        if len(lengths) < len(events) or len(set(lengths.values())) > 1:
            continue  # refused above
        n = max(lengths.values(), default=0)
        rows.append({**customer, "events": [{name: column[j] for name, column in events.items()  # null: no value
                                             if type(column) is list and column[j] is not None} for j in range(n)]})
    if problems:
        raise validation_errors(problems)
    return rows


PredictCustomers = Annotated[
    list[CustomerEvents],
    PlainValidator(validate_customers,
                   json_schema_input_type=Annotated[list[CustomerEvents | CustomerColumns], Field(min_length=1)]),
]

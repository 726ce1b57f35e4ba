"""From validated request models to the canonical events the Scorer reads, with the checks that need the model.

The pydantic models (:mod:`serving.schemas`) have already checked types. Here, knowing the model's dataset
and the service's limits, a request is checked for what only the model can judge — fields the dataset does
not declare, an extra field of the wrong kind, events at or after the cut-off, too many customers or events —
and turned into one canonical Arrow table (:func:`journey_model.data.schema.conform_table` types) plus the
(customer, cut-off) examples, exactly what batch scoring hands to
:func:`journey_model.data.sequences.encode_examples`. Every problem is reported with the
customer id, the event index and the field; values the model never saw are not errors but listed per
customer (they are scored as out-of-vocabulary).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

import numpy as np
import pyarrow as pa

from journey_model.core.pseudonyms import key_from_env, pseudonym
from journey_model.data.features import OOV_ID, PAD_ID
from journey_model.data.preprocessing import EVENT_TYPE_SPECIALS, Preprocessor
from journey_model.data.schema import CUSTOMER_ID, EVENT_ID, EVENT_TYPE, TIMESTAMP, TIMESTAMP_TYPE
from journey_model.data.sequences import CUTOFF
from serving.bulk import BulkCustomer, BulkRequest
from serving.config import ServingConfig
from serving.schemas import INPUT_ERROR_TYPE, CustomerEvents, CustomerUpdate

STANDARD_EVENT_FIELDS = ("event_id", "item", "amount", "channel")  # declared on serving.schemas.Event
MAX_REPORTED_PROBLEMS = 20
SMALL_REQUEST_EVENTS = 2000  # up to this many events, out-of-vocabulary ids are looked up in a dict, not by Arrow
_STRING_OR_NONE = {str, type(None)}
_FLOAT_OR_NONE = {float, type(None)}
_request_counter = itertools.count()


class RequestError(Exception):
    """A request the service refuses: an HTTP status and each problem with its location."""

    def __init__(self, status: int, problems: list[dict[str, Any]]):
        self.status = status
        self.problems = problems[:MAX_REPORTED_PROBLEMS]
        self.total = len(problems)
        summary = f"{self.total} problem{'s' if self.total != 1 else ''} in the request"
        super().__init__(summary + ": " + "; ".join(p["msg"] for p in self.problems[:3]))

    def body(self) -> dict[str, Any]:
        more = self.total - len(self.problems)
        summary = f"{self.total} problem{'s' if self.total != 1 else ''} in the request"
        return {"error": summary + (f" (first {len(self.problems)} listed)" if more else ""), "detail": self.problems}


def problem(loc: list[Any], msg: str, kind: str = INPUT_ERROR_TYPE) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "type": kind}


@dataclass
class InputContract:
    """What the model's dataset lets an event carry, and how OOV values are found."""

    preprocessor: Preprocessor
    categorical: list[str] = field(init=False)  # string fields (standard and extra)
    numeric: list[str] = field(init=False)  # number fields
    carried: dict[str, np.ndarray] = field(init=False)  # field -> (event-type vocab,) bool: the type carries it
    schema: pa.Schema = field(init=False)  # the canonical events' Arrow schema
    ids: dict[str, dict[str, int]] = field(init=False)  # field -> value -> id (Vocabulary.encode's, for small requests)

    def __post_init__(self) -> None:
        dataset = self.preprocessor.dataset
        self.schema = dataset.arrow_schema()
        self.ids = {}
        for name in [EVENT_TYPE, *dataset.categorical_fields]:
            vocabulary = self.preprocessor.vocabularies[name]
            self.ids[name] = {token: i for i, token in enumerate(vocabulary.tokens) if i >= vocabulary.num_reserved}
        self.categorical = list(dataset.categorical_fields)
        self.numeric = list(dataset.numeric_fields)
        tokens = self.preprocessor.vocabularies[EVENT_TYPE].tokens
        self.carried = {}
        for name in self.categorical:
            table = np.ones(len(tokens), dtype=bool)  # specials and <oov> carry every field
            for type_id in range(len(EVENT_TYPE_SPECIALS), len(tokens)):
                table[type_id] = name in dataset.fields_of(tokens[type_id])[0]
            self.carried[name] = table

    @property
    def allowed_fields(self) -> set[str]:
        return {TIMESTAMP, EVENT_TYPE, EVENT_ID, *self.categorical, *self.numeric}


@dataclass
class ParsedCustomer:
    """One customer of a request after the checks."""

    customer_id: str
    key: str  # unique id inside the merged batch (two entries may share a customer id)
    cutoff: datetime  # aware, UTC
    n_events: int  # events received in this request (or held, for incremental scoring)
    model_order: np.ndarray  # request event indices in the order the model reads them (oldest first)
    oov: list[dict[str, Any]] = field(default_factory=list)  # first OOV values: event_index, field, value
    oov_count: int = 0


@dataclass
class ParsedRequest:
    """Canonical events and examples of one request, ready for encode_examples."""

    customers: list[ParsedCustomer]
    events: pa.Table  # canonical schema; customer_id holds ParsedCustomer.key
    examples: pa.Table  # customer_id (key), cutoff

    @property
    def size(self) -> int:
        return len(self.customers)


def pseudonymised_id(customer_id: str) -> str:
    """The id the API works with: with JOURNEY_PSEUDONYM_KEY set, the keyed pseudonym batch scoring and ingest
    write for it (journey_model.core.pseudonyms); else the id as sent."""
    key = key_from_env(required=False)
    return customer_id if key is None else pseudonym(customer_id, key)


def check_limits(n_customers: int, counts: Sequence[int], ids: Sequence[str], config: ServingConfig,
                 path: str = "customers") -> None:
    """413 when a request holds more customers, or a customer more events, than the configured limits."""
    problems = []
    if n_customers > config.max_customers_per_request:
        problems.append(problem([path], f"{n_customers} customers in one request; the limit is "
                                f"{config.max_customers_per_request} (JOURNEY_MAX_CUSTOMERS)", "limit"))
    for i, (n, customer) in enumerate(zip(counts, ids, strict=True)):
        if n > config.max_events_per_customer:
            problems.append(problem([path, i, "events"], f"customer {customer!r}: {n} events; the limit is "
                                    f"{config.max_events_per_customer} per customer (JOURNEY_MAX_EVENTS)", "limit"))
    if problems:
        raise RequestError(413, problems)


def parse_customers(
    customers: Sequence[CustomerEvents | CustomerUpdate],
    contract: InputContract,
    config: ServingConfig,
    now: datetime | None = None,
) -> ParsedRequest:
    """Check a request's customers against the model and the limits; build its canonical events.

    Raises :class:`RequestError` (413 over a limit, 400 otherwise) listing every problem found.
    """
    now = now or datetime.now(UTC)
    for customer in customers:  # parsed once per request: from here on, messages, state and answers hold pseudonyms
        customer.customer_id = pseudonymised_id(customer.customer_id)
    check_limits(len(customers), [len(c.events) for c in customers], [c.customer_id for c in customers], config)
    request_id = next(_request_counter)
    counts = np.array([len(c.events) for c in customers], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    events = [e for c in customers for e in c.events]
    owner = np.repeat(np.arange(len(customers)), counts)  # customer index of each event
    problems: list[dict[str, Any]] = []

    def where(flat: int) -> tuple[list[Any], str]:
        i = int(owner[flat])
        j = flat - int(offsets[i])
        return ["customers", i, "events", j], f"customer {customers[i].customer_id!r}, event {j}"

    # Fields the dataset does not declare would be ignored by the model: refuse them instead.
    allowed = contract.allowed_fields
    extras = [event.__pydantic_extra__ or {} for event in events]
    sent = set().union(*extras) | {name for name in STANDARD_EVENT_FIELDS if name not in allowed
                                   and any(getattr(event, name) is not None for event in events)}
    if sent - allowed:  # only then look for where each one is
        for flat, (event, extra) in enumerate(zip(events, extras, strict=True)):
            unknown = [name for name in extra if name not in allowed]
            unknown += [name for name in STANDARD_EVENT_FIELDS
                        if name not in allowed and getattr(event, name) is not None]
            for name in unknown:
                loc, who = where(flat)
                problems.append(problem(loc + [name], f"{who}, field {name!r}: not a field of this model's dataset "
                                        f"{contract.preprocessor.dataset.name!r} (fields: {sorted(allowed)})"))

    columns: dict[str, Any] = {}
    for name in contract.categorical + contract.numeric:
        if name in STANDARD_EVENT_FIELDS:
            values = list(map(attrgetter(name), events))
        else:
            values = [extra.get(name) for extra in extras]
        if name not in STANDARD_EVENT_FIELDS:  # extras arrive untyped: strings for categorical fields, numbers for numeric ones
            if name in contract.numeric:
                values = _finite_numbers(values, name, where, problems)
            elif not set(map(type, values)) <= _STRING_OR_NONE:  # the usual case is checked at C speed
                for flat, value in enumerate(values):
                    if value is not None and type(value) is not str:
                        loc, who = where(flat)
                        problems.append(problem(loc + [name], f"{who}, field {name!r}: expected a string or null, "
                                                f"got {type(value).__name__} {_shown(value)}", "string_type"))
        columns[name] = values

    ts = pa.array(list(map(attrgetter("ts"), events)), type=TIMESTAMP_TYPE)  # aware -> UTC, naive read as UTC
    cutoffs = []
    for i, customer in enumerate(customers):
        try:
            cutoffs.append(_as_utc(customer.cutoff) if customer.cutoff is not None else now)
        except OverflowError:  # e.g. 9999-12-31T23:59:59-01:00 is in the year 10000 in UTC
            problems.append(problem(["customers", i, "cutoff"], f"customer {customer.customer_id!r}, field 'cutoff': "
                                    f"{customer.cutoff.isoformat()} is outside the years 1-9999 in UTC"))
            cutoffs.append(now)
    cutoff_array = pa.array(cutoffs, type=TIMESTAMP_TYPE)
    ts_micros = ts.cast(pa.int64()).to_numpy(zero_copy_only=False)
    cut_micros = cutoff_array.cast(pa.int64()).to_numpy(zero_copy_only=False)
    late = np.flatnonzero(ts_micros >= np.repeat(cut_micros, counts))
    for flat in late:
        loc, who = where(int(flat))
        i = int(owner[flat])
        problems.append(problem(loc + ["ts"], f"{who}, field 'ts': {_iso(ts_micros[flat])} is not before the "
                                f"cut-off {_iso(cut_micros[i])}; only events strictly before the cut-off are scored"))
    if problems:  # every problem of every check above, in the order of the events
        problems.sort(key=lambda p: [str(part).zfill(12) if isinstance(part, int) else part for part in p["loc"]])
        raise RequestError(400, problems)
    columns[EVENT_TYPE] = list(map(attrgetter("event_type"), events))
    columns[EVENT_ID] = list(map(attrgetter("event_id"), events))
    return _assemble([c.customer_id for c in customers], cutoffs, cutoff_array, counts, offsets, owner, ts, ts_micros,
                     columns, contract, config, request_id)


def parse_bulk(request: BulkRequest, contract: InputContract, config: ServingConfig,
               now: datetime | None = None) -> ParsedRequest:
    """:func:`parse_customers` for a request that passed the bulk checks (:mod:`serving.bulk`): the same checks on
    whole columns, and the same canonical events, without a pydantic object per event. Any problem (or any
    doubt) hands the request to :func:`parse_customers`, whose 4xx names the customer, the event and the field."""
    now = now or datetime.now(UTC)
    customers = request.customers
    counts = np.array([c.n_events for c in customers], dtype=np.int64)
    if len(customers) > config.max_customers_per_request or int(counts.max()) > config.max_events_per_customer:
        return parse_customers(request.models(), contract, config, now)
    allowed = contract.allowed_fields
    names = set().union(*(c.columns for c in customers))
    for name in names - allowed:  # a standard field the dataset lacks is fine when null everywhere, as there
        if name not in STANDARD_EVENT_FIELDS or any(v is not None for c in customers for v in c.columns.get(name, ())):
            return parse_customers(request.models(), contract, config, now)
    columns: dict[str, Any] = {}
    for name in contract.categorical + contract.numeric + [EVENT_TYPE, EVENT_ID]:
        values = _concatenated(customers, name)
        if name not in STANDARD_EVENT_FIELDS and name != EVENT_TYPE:  # extras arrive untyped
            if name in contract.numeric:
                problems: list[dict[str, Any]] = []
                values = _finite_numbers(values, name, lambda flat: ([], ""), problems)
                if problems:
                    return parse_customers(request.models(), contract, config, now)
            elif not set(map(type, values)) <= _STRING_OR_NONE:
                return parse_customers(request.models(), contract, config, now)
        columns[name] = values
    ts = customers[0].ts if len(customers) == 1 else pa.concat_arrays([c.ts for c in customers])
    cutoffs = [c.cutoff if c.cutoff is not None else now for c in customers]
    cutoff_array = pa.array(cutoffs, type=TIMESTAMP_TYPE)
    ts_micros = ts.cast(pa.int64()).to_numpy(zero_copy_only=False)
    cut_micros = cutoff_array.cast(pa.int64()).to_numpy(zero_copy_only=False)
    if (ts_micros >= np.repeat(cut_micros, counts)).any():
        return parse_customers(request.models(), contract, config, now)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    owner = np.repeat(np.arange(len(customers)), counts)
    return _assemble([pseudonymised_id(c.customer_id) for c in customers], cutoffs, cutoff_array, counts, offsets,
                     owner, ts, ts_micros, columns, contract, config, next(_request_counter))


def _concatenated(customers: Sequence[BulkCustomer], name: str) -> list[Any]:
    """One field's values over all customers' events (None where a customer does not send the field)."""
    if len(customers) == 1:
        values = customers[0].columns.get(name)
        return values if values is not None else [None] * customers[0].n_events
    return list(itertools.chain.from_iterable(
        c.columns.get(name) or [None] * c.n_events for c in customers))


def _assemble(ids: list[str], cutoffs: list[datetime], cutoff_array: pa.Array, counts: np.ndarray,
              offsets: np.ndarray, owner: np.ndarray, ts: pa.Array, ts_micros: np.ndarray, columns: dict[str, Any],
              contract: InputContract, config: ServingConfig, request_id: int) -> ParsedRequest:
    """The canonical events table, the examples and each customer's answer facts from checked columns."""
    keys = [f"r{request_id}-{i}" for i in range(len(ids))]
    schema = contract.schema
    arrays = {
        CUSTOMER_ID: pa.repeat(pa.scalar(keys[0], pa.string()), len(owner)) if len(keys) == 1
        else pa.array(keys, pa.string()).take(pa.array(owner)),
        TIMESTAMP: ts,
        EVENT_TYPE: pa.array(columns[EVENT_TYPE], pa.string()),
        EVENT_ID: pa.array(columns[EVENT_ID], pa.string()),
    }
    for name in contract.categorical:
        arrays[name] = pa.array(columns[name], pa.string())
    for name in contract.numeric:
        arrays[name] = pa.array(columns[name], pa.float64())
    table = pa.Table.from_arrays([arrays[f.name] for f in schema], schema=schema)

    parsed = []
    oov_lists = _out_of_vocabulary(table, columns, contract, owner, offsets, config.max_oov_reported, len(ids))
    for i, customer_id in enumerate(ids):
        order = np.argsort(ts_micros[offsets[i]:offsets[i + 1]], kind="stable")
        oov, oov_count = oov_lists[i]
        parsed.append(ParsedCustomer(customer_id, keys[i], cutoffs[i], int(counts[i]), order, oov, oov_count))
    examples = pa.table({CUSTOMER_ID: pa.array(keys, pa.string()), CUTOFF: cutoff_array})
    return ParsedRequest(parsed, table, examples)


def _out_of_vocabulary(
    table: pa.Table, columns: dict[str, Any], contract: InputContract, owner: np.ndarray, offsets: np.ndarray,
    limit: int, n_customers: int,
) -> list[tuple[list[dict[str, Any]], int]]:
    """Per customer: the first ``limit`` values the model maps to <oov>, and how many there are."""
    vocabularies = contract.preprocessor.vocabularies

    def encode(name: str) -> np.ndarray:
        if table.num_rows > SMALL_REQUEST_EVENTS:
            return vocabularies[name].encode(table.column(name))
        ids = contract.ids[name]  # Vocabulary.encode's ids, without its per-call Arrow set-up
        return np.array([PAD_ID if value is None else ids.get(value, OOV_ID) for value in columns[name]], np.int32)

    type_ids = encode(EVENT_TYPE)
    flagged: list[tuple[int, str, np.ndarray]] = [(0, EVENT_TYPE, np.flatnonzero(type_ids == OOV_ID))]
    for order, name in enumerate(contract.categorical, start=1):
        ids = encode(name)
        carried = contract.carried[name][type_ids]  # a field the type does not carry is ignored, not OOV
        flagged.append((order, name, np.flatnonzero((ids == OOV_ID) & carried)))
    found: list[list[tuple[int, int, str]]] = [[] for _ in range(n_customers)]
    for order, name, rows in flagged:
        for flat in rows:
            found[int(owner[flat])].append((int(flat), order, name))
    result = []
    for i, entries in enumerate(found):
        entries.sort()
        listed = [
            {"event_index": flat - int(offsets[i]), "field": name, "value": columns[name][flat]}
            for flat, _, name in entries[:limit]
        ]
        result.append((listed, len(entries)))
    return result


def _finite_numbers(values: list[Any], name: str, where: Any, problems: list[dict[str, Any]]) -> list[Any]:
    """An untyped numeric extra field's values as floats (None kept); a value that is not a finite number that
    float64 holds (text, a boolean, NaN, ±Infinity, 1e400, 10**400) is a problem naming the event and the field."""
    if set(map(type, values)) <= _FLOAT_OR_NONE:  # the usual case: floats and nulls, checked at C speed
        numbers = np.array(values, dtype=np.float64)  # None -> NaN
        if all(values[k] is None for k in np.flatnonzero(~np.isfinite(numbers))):
            return values
    out: list[Any] = values
    for flat, value in enumerate(values):
        if value is None or (type(value) is float and math.isfinite(value)):  # the usual case, fast
            continue
        number = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:
                number = math.inf
            kind, expected = "finite_number", "a finite number (float64)"
        else:
            kind, expected = "float_type", "a number or null"
        if number is not None and math.isfinite(number):
            if out is values:
                out = list(values)
            out[flat] = number
            continue
        loc, who = where(flat)
        problems.append(problem(loc + [name], f"{who}, field {name!r}: expected {expected}, got "
                                f"{type(value).__name__} {_shown(value)}", kind))
    return out


def _shown(value: Any) -> str:
    """A value for a message, at most 40 characters."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _iso(micros: int) -> str:
    return str(np.datetime64(int(micros), "us")) + "Z"

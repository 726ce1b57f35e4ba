"""The bulk validation of /predict (serving/bulk.py) against the full pydantic validation it stands in for.

For every body — valid or not, rows or columns — /predict's input model with the bulk validator gives what
``list[CustomerEvents]`` gives: the same errors (locations, kinds, messages naming customer, event and field)
for a bad body, and for a valid one the same customers, events and times (UTC microseconds).
"""

from __future__ import annotations

import copy
import json
import random
from datetime import UTC
from typing import Any

import pyarrow as pa
import pytest
from pydantic import BaseModel, Field, ValidationError

from journey_model.data.schema import TIMESTAMP_TYPE
from serving.bulk import ISO_PATTERN, BulkRequest, PredictCustomers, as_rows, bulk_request
from serving.schemas import CustomerEvents

EVENTS = [
    {"ts": "2024-11-02T08:14:00Z", "event_type": "login", "channel": "app", "device": "android"},
    {"ts": "2024-11-03T19:40:12.5+01:00", "event_type": "card_payment", "item": "groceries", "amount": 54.3,
     "balance": 1210},
    {"ts": "2024-11-20T10:02:45.123456-05:30", "event_type": "fee", "item": "overdraft_fee", "amount": 25,
     "event_id": "e-1"},
]
CUSTOMER = {"customer_id": "C1", "cutoff": "2024-12-01T00:00:00Z", "events": EVENTS}


class Full(BaseModel):  # what /predict validated before
    customers: list[CustomerEvents] = Field(min_length=1)


class Bulk(BaseModel):  # what it validates now
    customers: PredictCustomers = Field(min_length=1)


def columns_of(events: list[dict[str, Any]]) -> dict[str, list[Any]]:
    names = sorted(set().union(*events)) if events else ["ts", "event_type"]
    return {name: [event.get(name) for event in events] for name in names}


def errors(model: type[BaseModel], body: Any) -> list[dict[str, Any]] | None:
    try:
        model.model_validate_json(json.dumps(body))
    except ValidationError as error:
        return [{k: e[k] for k in ("loc", "type", "msg")} for e in error.errors(include_url=False)]
    return None


def as_micros(models: list[CustomerEvents]) -> list[list[int]]:
    return [pa.array([e.ts if e.ts.tzinfo else e.ts.replace(tzinfo=UTC) for e in c.events], TIMESTAMP_TYPE)
            .cast(pa.int64()).to_pylist() for c in models]


def assert_same(body: dict[str, Any]) -> None:
    full, bulk = errors(Full, body), errors(Bulk, body)
    assert bulk == full, (body, full, bulk)
    if full is not None:
        return
    models = Full.model_validate_json(json.dumps(body)).customers
    validated = Bulk.model_validate_json(json.dumps(body)).customers
    if isinstance(validated, BulkRequest):
        assert [c.customer_id for c in validated.customers] == [c.customer_id for c in models]
        assert [c.cutoff for c in validated.customers] == [
            None if c.cutoff is None else c.cutoff.astimezone(UTC) if c.cutoff.tzinfo else c.cutoff.replace(tzinfo=UTC)
            for c in models]
        assert [c.ts.cast(pa.int64()).to_pylist() for c in validated.customers] == as_micros(models)
        for checked, model in zip(validated.customers, models, strict=True):
            for name in ("event_type", "item", "channel", "event_id", "amount"):
                sent = checked.columns.get(name) or [None] * checked.n_events
                assert repr(sent) == repr([getattr(e, name) for e in model.events]), name  # NaN != NaN
            for name in ("device", "balance"):
                sent = checked.columns.get(name) or [None] * checked.n_events
                assert repr(sent) == repr([(e.__pydantic_extra__ or {}).get(name) for e in model.events]), name
        assert repr([c.model_dump() for c in validated.models()]) == repr([c.model_dump() for c in models])
    else:
        assert repr([c.model_dump() for c in validated]) == repr([c.model_dump() for c in models])


def test_a_valid_body_takes_the_bulk_path_in_both_forms_with_pydantics_values():
    for events in (EVENTS, columns_of(EVENTS)):
        body = {"customers": [{**CUSTOMER, "events": events}, {"customer_id": "C2", "events": events}]}
        assert isinstance(Bulk.model_validate_json(json.dumps(body)).customers, BulkRequest)
        assert_same({"customers": [{**CUSTOMER, "events": EVENTS}, {"customer_id": "C2", "events": EVENTS}]})


ODD_TIMES = ["2024-11-02T08:14:00", "2024-11-02T08:14:00.5", "2024-11-02 08:14:00Z", "2024-11-02t08:14:00z",
             "2024-11-02", "2024-11-02T08:14Z", "2024-11-02T08:14:00.1234567Z", "2024-02-30T00:00:00Z",
             "2024-11-02T24:00:00Z", "2024-11-02T08:14:00+24:00", "2024-11-02T08:14:00+0100", "0000-01-01T00:00:00Z",
             "0001-01-01T00:00:00Z", "1700000000", 1700000000, 1.7e12, -5, True, None, "", "now", [2024, 1, 1],
             "2024-11-02T08:14:60Z", "9999-12-31T23:59:59-01:00", "2024-11-02T08:14:00-23:59"]
ODD_VALUES = [None, "", "x", 0, 1, -1, 2**60, 10**400 if False else 1e308, 1.5, float("nan"), True, [], {}, [1],
              {"a": 1}, "9" * 50]


@pytest.mark.parametrize("form", ["rows", "columns"])
def test_odd_values_anywhere_get_pydantics_answer(form):
    fields = ["ts", "event_type", "item", "amount", "channel", "event_id", "device", "balance", "amout"]
    cases = []
    for name in fields:
        for value in (ODD_TIMES if name == "ts" else ODD_VALUES):
            for index in (0, 2):
                events = copy.deepcopy(EVENTS)
                events[index][name] = value
                cases.append({**CUSTOMER, "events": events})
    for name in ("customer_id", "cutoff", "events"):
        for value in ODD_VALUES + ODD_TIMES:
            cases.append({**copy.deepcopy(CUSTOMER), name: value})
    for case in cases:
        body = {"customers": [CUSTOMER, case]}
        if form == "columns" and isinstance(case.get("events"), list) and all(isinstance(e, dict) for e in case["events"]):
            # the columnar form of the same events: same answer as the rows without the nulls
            case = {**case, "events": columns_of(case["events"])}
            rows = {**case, "events": as_rows([case])[0]["events"]}
            full = errors(Full, {"customers": [CUSTOMER, rows]})
            assert errors(Bulk, {"customers": [CUSTOMER, case]}) == full, case
            continue
        if isinstance(case.get("events"), dict):  # a columnar form now (before: "Input should be a valid list")
            problems = errors(Bulk, body)
            assert problems and all(p["loc"][:3] == ("customers", 1, "events") for p in problems), problems
            assert all(p["msg"].startswith("customer 'C1', ") for p in problems), problems
            continue
        assert_same(body)


def test_random_mixtures_of_valid_and_odd_events_agree():
    rng = random.Random(7)
    for _ in range(300):
        events = []
        for _ in range(rng.randint(0, 6)):
            event = copy.deepcopy(rng.choice(EVENTS))
            if rng.random() < 0.3:
                event[rng.choice(["ts", "event_type", "amount", "item", "balance"])] = rng.choice(ODD_VALUES + ODD_TIMES)
            if rng.random() < 0.1:
                event.pop(rng.choice(list(event)))
            events.append(event)
        customer = {"customer_id": rng.choice(["C1", "", "C3"]), "events": events}
        if rng.random() < 0.5:
            customer["cutoff"] = rng.choice(["2024-12-01T00:00:00Z", "2024-12-01T00:00:00", 1.7e9, None])
        assert_same({"customers": [customer]})


def test_columnar_arrays_of_different_lengths_or_not_arrays_are_refused_naming_the_customer_and_field():
    problems = errors(Bulk, {"customers": [CUSTOMER, {"customer_id": "C9", "events": {
        "ts": ["2024-11-02T08:14:00Z"] * 2, "event_type": ["login"], "item": "groceries"}}]})
    assert [(p["loc"], p["type"]) for p in problems] == [
        (("customers", 1, "events", "item"), "list_type"), (("customers", 1, "events"), "journey_input")]
    assert "customer 'C9', field 'item': expected an array" in problems[0]["msg"]
    assert "customer 'C9', field 'events': the arrays have different lengths (ts 2, event_type 1)" in problems[1]["msg"]
    empty = errors(Bulk, {"customers": [{"customer_id": "C9", "events": {"ts": [], "event_type": []}}]})
    assert empty == errors(Full, {"customers": [{"customer_id": "C9", "events": []}]})


def test_the_time_pattern_and_empty_bodies():
    assert bulk_request([]) is None and bulk_request({"a": 1}) is None
    assert errors(Bulk, {"customers": []}) == errors(Full, {"customers": []})
    assert errors(Bulk, {"customers": "everyone"}) == errors(Full, {"customers": "everyone"})
    assert ISO_PATTERN.startswith("^") and ISO_PATTERN.endswith("$")


def test_the_openapi_schema_describes_both_forms():
    schema = Bulk.model_json_schema()
    customers = schema["properties"]["customers"]
    assert customers["minItems"] == 1
    refs = {item["$ref"].rsplit("/", 1)[-1] for item in customers["items"]["anyOf"]}
    assert refs == {"CustomerEvents", "CustomerColumns"}
    assert {"EventColumns", "Event"} <= set(schema["$defs"])

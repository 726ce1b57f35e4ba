"""The online API three ways: the service class called directly, BentoML's ASGI app, and a real server that
`journey serve` starts on 127.0.0.1 (a free port) and that is stopped by its PID.

Checked: scores equal batch scoring's for the same customers and cut-offs, every kind of bad input gets a
4xx naming the customer, the event index and the field (and nothing gets a 500), out-of-vocabulary values
are reported, /explain's weights and reasons, incremental scoring equals a full request, metadata, health
and an OpenAPI document that describes every field with an example.
"""

from __future__ import annotations

import asyncio
import copy
import os
import signal
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pandas as pd
import psutil
import pytest
from test_batch_scoring import CUTOFF, TinyModel, events_frame, reference_scores, tiny_model

from journey_model.data.sequences import encode_examples
from journey_model.inference.batch_scoring import BatchScoringConfig, read_scores, score_batch
from serving.process import ServerNotReady, free_port, running_server

LIMITS = {"max_customers": 8, "max_events": 400, "state_customers": 3}
CUTOFF_ISO = pd.Timestamp(CUTOFF, tz="UTC").isoformat()


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> TinyModel:
    return tiny_model(tmp_path_factory.getbasetemp() / "tiny_journey_model")


@pytest.fixture(scope="module")
def service_env(model, tmp_path_factory):
    """The JOURNEY_* settings of the in-process services (the real server gets the same via `journey serve`)."""
    env = {
        "BENTOML_DO_NOT_TRACK": "True", "BENTOML_HOME": str(tmp_path_factory.mktemp("bentoml_home")),
        "JOURNEY_MODEL_URI": str(model.bundle), "JOURNEY_MAX_CUSTOMERS": str(LIMITS["max_customers"]),
        "JOURNEY_MAX_EVENTS": str(LIMITS["max_events"]), "JOURNEY_STATE_CUSTOMERS": str(LIMITS["state_customers"]),
    }
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def client(service_env):
    with warnings.catch_warnings():  # starlette 1.x suggests httpx2 for its test client; httpx works
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    from serving.service import JourneyService

    with TestClient(app=JourneyService.to_asgi()) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def events(model) -> pd.DataFrame:
    return events_frame(model)


def customer_payload(events: pd.DataFrame, customer_id: str, cutoff: str | None = CUTOFF_ISO,
                     before: str | None = CUTOFF) -> dict:
    """One customer's events as the API takes them (ISO times, no nulls), optionally only those before a time."""
    rows = events[events["customer_id"] == customer_id]
    if before is not None:
        rows = rows[rows["ts"] < pd.Timestamp(before, tz="UTC")]
    payload_events = []
    for row in rows.drop(columns="customer_id").to_dict("records"):
        event = {k: v for k, v in row.items() if v is not None and not (isinstance(v, float) and np.isnan(v))}
        event["ts"] = row["ts"].isoformat()
        payload_events.append(event)
    customer = {"customer_id": customer_id, "events": payload_events}
    if cutoff is not None:
        customer["cutoff"] = cutoff
    return customer


def scored_customers(events: pd.DataFrame, n: int) -> list[str]:
    """The first n customers with history before the cut-off and not too many events for the limits."""
    before = events[events["ts"] < pd.Timestamp(CUTOFF, tz="UTC")]
    counts = before.groupby("customer_id").size()
    return list(counts[counts <= LIMITS["max_events"]].index[:n])


def messages(response: httpx.Response) -> str:
    body = response.json()
    return " | ".join(item["msg"] for item in body["detail"])


def assert_scores_match(answers: list[dict], reference: pd.DataFrame, tolerance: float = 1e-5) -> None:
    for answer in answers:
        expected = reference.loc[answer["customer_id"]]
        for name, value in answer["scores"].items():
            assert abs(value - expected[f"p_{name}"]) <= tolerance, (answer["customer_id"], name)
        assert answer["next_events"][0]["event_type"] == expected["next_event_1"]
        assert abs(answer["next_events"][0]["probability"] - expected["p_next_event_1"]) <= tolerance
        assert answer["n_events_used"] == expected["n_events"]


# ------------------------------------------------------------------------------------------ direct calls
def test_the_service_class_scores_like_the_scorer_and_batches_concurrent_requests(service_env, model, events):
    from serving.schemas import CustomerEvents
    from serving.service import JourneyService

    service = JourneyService()
    ids = scored_customers(events, 6)
    customers = [CustomerEvents.model_validate(customer_payload(events, c)) for c in ids]
    reference = reference_scores(model, CUTOFF)

    async def together():  # six clients at once, one customer each
        return await asyncio.gather(*[service.predict(customers=[c]) for c in customers])

    answers = asyncio.run(together())
    assert_scores_match([a.customers[0].model_dump() for a in answers], reference)
    assert service.batcher.stats.items == 6 and service.batcher.stats.customers == 6


def test_the_batcher_scores_waiting_requests_together_and_keeps_a_failure_with_its_request():
    from serving.batching import AdaptiveBatcher

    passes: list[list[str]] = []

    def process(items):
        passes.append(list(items))
        if "poison" in items:
            raise RuntimeError("cannot score poison")
        return [item.upper() for item in items]

    async def clients(batcher, items):
        return await asyncio.gather(*[batcher.submit(i) for i in items], return_exceptions=True)

    batcher = AdaptiveBatcher(process, size_of=lambda item: 1, max_batch_size=4)
    items = [f"c{i}" for i in range(10)]
    assert asyncio.run(clients(batcher, items)) == [i.upper() for i in items]
    assert [len(p) for p in passes] == [4, 4, 2]  # everything waiting went into the next pass, 4 at most
    assert batcher.stats.mean_batch == pytest.approx(10 / 3)

    passes.clear()
    results = asyncio.run(clients(batcher, ["a", "poison", "b"]))
    assert results[0] == "A" and results[2] == "B" and isinstance(results[1], RuntimeError)
    assert passes[0] == ["a", "poison", "b"] and ["a"] in passes and ["b"] in passes  # retried one by one
    batcher.close()


# ------------------------------------------------------------------------------------------ ASGI app
def test_predict_gives_batch_scorings_scores_for_the_same_customers_and_cutoff(client, model, events, tmp_path):
    ids = scored_customers(events, LIMITS["max_customers"])
    response = client.post("/predict", json={"customers": [customer_payload(events, c) for c in ids]})
    assert response.status_code == 200, response.text
    answers = response.json()["customers"]
    assert [a["customer_id"] for a in answers] == ids

    score_batch(BatchScoringConfig(model=str(model.bundle), events_dir=str(model.synth), out_dir=str(tmp_path / "b"),
                                   cutoff=CUTOFF, top_reasons=0, progress=False))
    batch = read_scores(tmp_path / "b").to_pandas().set_index("customer_id")
    assert_scores_match(answers, batch)
    first = answers[0]
    assert first["model_name"] == "bundle" and first["model_version"] == batch.loc[ids[0], "model_version"]
    assert pd.Timestamp(first["cutoff"]) == pd.Timestamp(CUTOFF, tz="UTC")
    assert len(first["next_events"]) == 3 and first["out_of_vocabulary"] == []
    assert first["n_events_received"] == len(customer_payload(events, ids[0])["events"])


def test_an_ineligible_customer_gets_the_reason_and_no_score_and_the_answer_counts_it(client, events):
    held_back = "2024-12-01"
    before = events[events["ts"] < pd.Timestamp(held_back, tz="UTC")]
    closes = before[before["event_type"] == "account_close"].groupby("customer_id")["ts"].max()
    small = before.groupby("customer_id").size()
    closed = [c for c in closes.index if small[c] <= LIMITS["max_events"]][:2]
    open_ = [c for c in small.index if c not in closes.index and small[c] <= LIMITS["max_events"]][:2]
    assert len(closed) == 2 and len(open_) == 2
    payload = {"customers": [customer_payload(events, c, cutoff=held_back + "T00:00:00Z", before=held_back)
                             for c in closed + open_]}
    for route in ("/predict", "/explain"):
        response = client.post(route, json=payload)
        assert response.status_code == 200, response.text
        body = response.json()
        for answer in body["customers"][:2]:
            day = closes[answer["customer_id"]].strftime("%Y-%m-%d")
            assert "churn" not in answer["scores"] and "default" not in answer["scores"]
            assert "churn" not in answer["flags"]  # no score, no flag
            assert answer["ineligible"]["churn"] == {"rule": "account_closed", "reason": f"account closed on {day}"}
        for answer in body["customers"][2:]:
            assert set(answer["scores"]) == {"churn", "default", "uptake"} and answer["ineligible"] == {}
            assert set(answer["flags"]) == {"churn", "default", "uptake"}
        assert body["ineligible"]["churn"] == {"account_closed": 2}, route
        if route == "/explain":  # reasons only for what was scored, and pointing at the request's own events
            for answer, sent in zip(body["customers"], payload["customers"]):
                assert not set(answer["reason_codes"]) & set(answer["ineligible"])
                assert set(answer["reason_codes"]) <= set(answer["scores"])
                for hits in answer["reason_codes"].values():
                    for hit in hits:
                        assert hit["code"] and hit["sentence"] and hit["events"]
                        assert all(0 <= i < len(sent["events"]) for i in hit["events"])
                        assert all(answer["events"][i]["used"] for i in hit["events"])
            assert any(answer["reason_codes"] for answer in body["customers"][2:])
    points = client.get("/metadata").json()["operating_points"]
    assert set(points) == {"churn", "default", "uptake"} and points["churn"]["policy"] == "capacity:10%"
    for answer in body["customers"][2:]:  # the flag is the threshold applied to the calibrated score
        for name, flagged in answer["flags"].items():
            threshold = points[name]["threshold"]
            assert flagged == (threshold is not None and answer["scores"][name] >= threshold)


def test_default_cutoff_is_now(client, events):
    customer = customer_payload(events, scored_customers(events, 1)[0], cutoff=None)
    before = pd.Timestamp.now(tz="UTC")
    answer = client.post("/predict", json={"customers": [customer]}).json()["customers"][0]
    assert before <= pd.Timestamp(answer["cutoff"]) <= pd.Timestamp.now(tz="UTC")


def test_a_cutoff_beyond_the_year_9999_in_utc_is_a_400_naming_it(client, events):
    customer = customer_payload(events, scored_customers(events, 1)[0], cutoff="9999-12-31T23:59:59-01:00")
    response = client.post("/predict", json={"customers": [customer]})
    assert response.status_code == 400, response.text
    assert "cutoff" in response.text and "outside the years 1-9999" in response.text


def _one_customer(events: pd.DataFrame) -> dict:
    return customer_payload(events, scored_customers(events, 1)[0])


def _set(path: list, value):
    def change(customer: dict) -> dict:
        target = customer
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return customer
    return change


def _delete(path: list):
    def change(customer: dict) -> dict:
        target = customer
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
        return customer
    return change


BAD_INPUT = {
    "missing ts": (_delete(["events", 2, "ts"]), 400, ["event 2, field 'ts'", "Field required"]),
    "missing event_type": (_delete(["events", 1, "event_type"]), 400, ["event 1, field 'event_type'"]),
    "missing customer_id": (_delete(["customer_id"]), 400, ["customer (no customer_id), field 'customer_id'"]),
    "empty customer_id": (_set(["customer_id"], ""), 400, ["field 'customer_id'"]),
    "amount is text": (_set(["events", 0, "amount"], "a lot"), 400, ["event 0, field 'amount'", "valid number"]),
    "amount is a boolean": (_set(["events", 0, "amount"], True), 400, ["event 0, field 'amount'"]),
    "event_type is a number": (_set(["events", 3, "event_type"], 42), 400, ["event 3, field 'event_type'"]),
    "unparseable ts": (_set(["events", 4, "ts"], "2024-13-45T99:00:00Z"), 400, ["event 4, field 'ts'"]),
    "ts is a list": (_set(["events", 4, "ts"], [2024, 1, 1]), 400, ["event 4, field 'ts'"]),
    "unparseable cutoff": (_set(["cutoff"], "next Tuesday"), 400, ["field 'cutoff'"]),
    "extra number is text": (_set(["events", 0, "balance"], "high"), 400,
                             ["event 0, field 'balance': expected a number"]),
    "extra string is a number": (_set(["events", 0, "device"], 7), 400, ["event 0, field 'device': expected a string"]),
    "unknown field": (_set(["events", 5, "amout"], 12.0), 400, ["event 5, field 'amout': not a field"]),
    "event after the cut-off": (_set(["events", 6, "ts"], "2024-03-02T00:00:00Z"), 400,
                                ["event 6, field 'ts'", "not before the cut-off"]),
    "event at the cut-off": (_set(["events", 6, "ts"], CUTOFF_ISO), 400, ["event 6, field 'ts'"]),
    "empty history": (_set(["events"], []), 400, ["field 'events': empty history"]),
    "too many events": (lambda c: {**c, "events": (c["events"] * 100)[:LIMITS["max_events"] + 1]}, 413,
                        [f"{LIMITS['max_events'] + 1} events; the limit is {LIMITS['max_events']}"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_gets_a_4xx_that_names_the_customer_the_event_and_the_field(client, events, case):
    change, status, expected = BAD_INPUT[case]
    customer = change(copy.deepcopy(_one_customer(events)))
    good = _one_customer(events)
    for path in ("/predict", "/explain"):
        response = client.post(path, json={"customers": [good, customer]})  # the bad one is customer 1
        assert response.status_code == status, (case, path, response.text)
        text = messages(response)
        who = customer.get("customer_id") or "(no customer_id)"
        assert who in text, text
        for part in expected:
            assert part in text, (case, text)
        assert response.json()["detail"][0]["loc"][:2] == ["customers", 1] or status == 413


def test_too_many_customers_or_a_malformed_body_gets_a_4xx(client, events):
    customer = _one_customer(events)
    response = client.post("/predict", json={"customers": [customer] * (LIMITS["max_customers"] + 1)})
    assert response.status_code == 413
    assert f"{LIMITS['max_customers'] + 1} customers in one request; the limit is {LIMITS['max_customers']}" in messages(response)
    for body in ({"customers": customer}, {"clients": [customer]}, {"customers": "everyone"}, [customer]):
        assert client.post("/predict", json=body).status_code == 400
    assert client.post("/predict", content=b"{not json", headers={"Content-Type": "application/json"}).status_code == 400


def test_no_bad_input_is_answered_with_a_500(client, events):
    base = _one_customer(events)
    odd_values = [None, "", [], {}, 1e308, -1, "\u0000", {"nested": [1, {"a": None}]}, "9" * 400, True]
    fields = ["customer_id", "cutoff", "events"] + [f"events.0.{f}" for f in ("ts", "event_type", "item", "amount",
                                                                               "channel", "device", "balance", "event_id")]
    for name in fields:
        for value in odd_values:
            customer = copy.deepcopy(base)
            if name.startswith("events.0."):
                customer["events"][0][name.split(".")[-1]] = value
            else:
                customer[name] = value
            response = client.post("/predict", json={"customers": [customer]})
            assert response.status_code < 500, (name, value, response.text)


def as_columns(customer: dict) -> dict:
    """The customer in /predict's columnar form: one array per field, null where an event has no value."""
    names = sorted(set().union(*customer["events"]))
    return {**customer, "events": {name: [event.get(name) for event in customer["events"]] for name in names}}


def test_the_columnar_form_gets_the_row_forms_answer(client, events):
    ids = scored_customers(events, 4)
    rows = [customer_payload(events, c) for c in ids]
    rows[1]["events"][0] = {**rows[1]["events"][0], "event_type": "crypto_purchase"}  # an OOV value, reported alike
    by_rows = client.post("/predict", json={"customers": rows})
    by_columns = client.post("/predict", json={"customers": [as_columns(c) for c in rows]})
    mixed = client.post("/predict", json={"customers": [as_columns(rows[0]), *rows[1:]]})
    assert by_rows.status_code == by_columns.status_code == mixed.status_code == 200, by_columns.text
    assert by_columns.json() == by_rows.json() == mixed.json()
    assert by_columns.json()["customers"][1]["out_of_vocabulary"][0]["event_index"] == 0


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_the_columnar_form_gets_the_same_4xx_naming_the_customer_the_event_and_the_field(client, events, case):
    change, status, expected = BAD_INPUT[case]
    customer = as_columns(change(copy.deepcopy(_one_customer(events))))
    response = client.post("/predict", json={"customers": [as_columns(_one_customer(events)), customer]})
    assert response.status_code == status, (case, response.text)
    text = messages(response)
    assert (customer.get("customer_id") or "(no customer_id)") in text, text
    for part in expected:
        assert part in text, (case, text)
    assert response.json()["detail"][0]["loc"][:2] == ["customers", 1] or status == 413


def test_columnar_arrays_of_different_lengths_are_refused(client, events):
    customer = as_columns(_one_customer(events))
    customer["events"]["event_type"] = customer["events"]["event_type"][:-1]
    response = client.post("/predict", json={"customers": [customer]})
    assert response.status_code == 400
    assert response.json()["detail"][0]["loc"] == ["customers", 0, "events"]
    assert f"customer {customer['customer_id']!r}, field 'events': the arrays have different lengths" in messages(response)


def test_the_bulk_checks_build_the_full_paths_events_or_hand_it_the_request(model, events):
    """serving.requests.parse_bulk gives parse_customers' canonical events and answers, or its very 4xx."""
    from journey_model.inference.scorer import Scorer
    from serving.bulk import BulkRequest, validate_customers
    from serving.config import ServingConfig
    from serving.requests import InputContract, RequestError, parse_bulk, parse_customers

    contract = InputContract(Scorer.load(model.bundle).preprocessor)
    config = ServingConfig(max_customers_per_request=LIMITS["max_customers"], max_events_per_customer=LIMITS["max_events"])
    good = [customer_payload(events, c) for c in scored_customers(events, 3)]
    bodies = [good, [as_columns(c) for c in good], [{**good[0], "cutoff": None}]]
    assert all(isinstance(validate_customers(copy.deepcopy(b)), BulkRequest) for b in bodies)  # the fast path
    for change, _, _ in BAD_INPUT.values():  # those that pass the schema: the model-level checks
        bodies.append([good[0], change(copy.deepcopy(good[1]))])
    now = pd.Timestamp("2024-06-01", tz="UTC").to_pydatetime()
    for body in bodies:
        try:
            validated = validate_customers(copy.deepcopy(body))
        except Exception:  # refused by the schema, as before
            continue
        if not isinstance(validated, BulkRequest):
            continue
        models = validated.models()
        try:
            expected = parse_customers(models, contract, config, now)
        except RequestError as error:
            with pytest.raises(RequestError) as raised:
                parse_bulk(validated, contract, config, now)
            assert (raised.value.status, raised.value.body()) == (error.status, error.body())
            continue
        got = parse_bulk(validated, contract, config, now)
        assert got.events.drop_columns(["customer_id"]).equals(expected.events.drop_columns(["customer_id"]))
        assert got.examples.column("cutoff").equals(expected.examples.column("cutoff"))
        for a, b in zip(got.customers, expected.customers, strict=True):
            assert (a.customer_id, a.cutoff, a.n_events, a.oov, a.oov_count) == (b.customer_id, b.cutoff, b.n_events,
                                                                                b.oov, b.oov_count)
            assert list(a.model_order) == list(b.model_order)


def test_unknown_event_types_and_items_are_scored_as_out_of_vocabulary_and_reported(client, events):
    customer = _one_customer(events)
    customer["events"][1] = {**customer["events"][1], "event_type": "crypto_purchase"}
    customer["events"][3] = {**customer["events"][3], "event_type": "card_payment", "item": "space_tourism"}
    response = client.post("/predict", json={"customers": [customer]})
    assert response.status_code == 200, response.text
    answer = response.json()["customers"][0]
    assert {"event_index": 1, "field": "event_type", "value": "crypto_purchase"} in answer["out_of_vocabulary"]
    assert {"event_index": 3, "field": "item", "value": "space_tourism"} in answer["out_of_vocabulary"]
    assert answer["out_of_vocabulary_count"] >= 2
    assert all(0.0 <= p <= 1.0 for p in answer["scores"].values())


def test_explain_gives_each_events_attention_per_task_and_the_top_reasons(client, events):
    ids = scored_customers(events, 2)
    long_customer = customer_payload(events, ids[0], cutoff="2025-01-01T00:00:00Z", before=None)
    long_customer["events"] = long_customer["events"][-130:]  # max_len is 100: the 30 oldest are not read
    assert len(long_customer["events"]) == 130
    customers = [long_customer, customer_payload(events, ids[1])]
    explained = client.post("/explain", json={"customers": customers})
    predicted = client.post("/predict", json={"customers": customers})
    assert explained.status_code == 200, explained.text
    for answer, plain, sent in zip(explained.json()["customers"], predicted.json()["customers"], customers, strict=True):
        # Journey's default ATRank (two blocks) is explained by screened occlusion: the probability points each
        # event adds (0 for the events its attention rollout did not rank among the highest)
        assert answer["explanation_method"] == "screened-occlusion"
        for name, value in plain["scores"].items():
            assert abs(answer["scores"][name] - value) <= 1e-5
        assert [e["index"] for e in answer["events"]] == list(range(len(sent["events"])))
        used = [e for e in answer["events"] if e["used"]]
        assert len(used) == answer["n_events_used"] == min(100, len(sent["events"]))
        tasks = set(used[0]["attention"])
        assert tasks == {"churn", "default", "uptake"} == set(answer["top_reasons"])
        for task in tasks:
            assert any(e["attention"][task] != 0 for e in used)  # leaving an event out moves the score
            weights = [r["weight"] for r in answer["top_reasons"][task]]
            assert weights == sorted(weights, reverse=True)
            top = answer["top_reasons"][task][0]
            in_group = [e for e in used if e["event_type"] == top["event_type"] and e["time_bucket"] == top["time_bucket"]]
            assert len(in_group) == top["events"]
            assert abs(sum(e["attention"][task] for e in in_group) - top["weight"]) < 1e-4
            assert top["summary"].startswith(f"{top['events']} {top['event_type']}")
        unused = [e for e in answer["events"] if not e["used"]]
        assert all(e["attention"] is None and e["time_bucket"] is None for e in unused)
    assert len([e for e in explained.json()["customers"][0]["events"] if not e["used"]]) == 30


@pytest.mark.parametrize(("name", "method"), [("gru-attn", "occlusion"), ("bag", "integrated-gradients")])
def test_explanations_use_the_default_method_of_the_models_family(model, events, name, method):
    from journey_model.data.preprocessing import Preprocessor
    from journey_model.inference.explain import explain_rows
    from journey_model.inference.scorer import Scorer
    from journey_model.models import build_model

    preprocessor = Preprocessor.load(model.bundle)
    scorer = Scorer(build_model(name, preprocessor.feature_spec()), preprocessor)
    table, examples = scorer.examples_from_events(events[events["customer_id"].isin(scored_customers(events, 5))])
    frame, explanations = explain_rows(scorer, encode_examples(preprocessor, table, examples))
    plain = scorer.score_events(events[events["customer_id"].isin(scored_customers(events, 5))])
    np.testing.assert_allclose(frame["p_churn"].to_numpy(), plain["p_churn"].to_numpy(), atol=1e-5)  # NaN: ineligible
    for explanation, (_, row) in zip(explanations, frame.iterrows(), strict=True):
        n = row["n_events"]
        scored = {name for name in preprocessor.outcome_names if not np.isnan(row[f"p_{name}"])}
        assert explanation.method == method and len(explanation.event_type) == n
        assert set(explanation.attention) == set(preprocessor.outcome_names)
        assert set(explanation.reason_codes) == scored  # an ineligible outcome has no score and no reasons
        assert all(len(values) == n for values in explanation.attention.values())


def test_incremental_updates_give_the_full_requests_score_with_bounded_state(client, events):
    ids = scored_customers(events, 5)
    full = customer_payload(events, ids[0])
    history = full["events"]
    cut = [0, len(history) // 2, len(history) - 3, len(history)]
    seen = 0
    for start, end in zip(cut[:-1], cut[1:], strict=True):
        update = {"customer_id": ids[0], "cutoff": CUTOFF_ISO, "events": history[start:end], "events_seen": seen}
        response = client.post("/update", json={"customers": [update]})
        assert response.status_code == 200, response.text
        answer = response.json()["customers"][0]
        seen = answer["events_seen"]
        assert seen == end and answer["state_events"] == min(end, 100)
    whole = client.post("/predict", json={"customers": [full]}).json()["customers"][0]
    for name, value in whole["scores"].items():
        assert abs(answer["scores"][name] - value) <= 1e-6
    assert answer["next_events"] == whole["next_events"] and answer["n_events_used"] == whole["n_events_used"]

    stale = {"customer_id": ids[0], "cutoff": CUTOFF_ISO, "events": history[-1:], "events_seen": seen - 1}
    response = client.post("/update", json={"customers": [stale]})
    assert response.status_code == 409 and f"events_seen = {seen - 1}" in messages(response)
    early = {"customer_id": ids[0], "cutoff": "2024-01-02T00:00:00Z", "events": [], "events_seen": seen}
    response = client.post("/update", json={"customers": [early]})
    assert response.status_code == 400 and "not before the cut-off" in messages(response)

    for other in ids[1:4]:  # three more customers: the state holds at most 3, so the first is evicted
        start = {"customer_id": other, "cutoff": CUTOFF_ISO, "events": customer_payload(events, other)["events"]}
        assert client.post("/update", json={"customers": [start]}).status_code == 200
    assert client.get("/metadata").json()["state_customers"] == LIMITS["state_customers"]
    again = {"customer_id": ids[0], "cutoff": CUTOFF_ISO, "events": [], "events_seen": seen}
    response = client.post("/update", json={"customers": [again]})
    assert response.status_code == 409 and "resend the full history" in messages(response)
    assert client.post("/forget", json={"customer_ids": [ids[3], "nobody"]}).json() == {"forgotten": 1}


def test_metadata_health_and_an_openapi_document_with_every_field_described(client, model):
    for path in ("/livez", "/readyz", "/healthz"):
        assert client.get(path).status_code == 200
    metadata = client.get("/metadata").json()
    assert metadata["name"] == "bundle" and metadata["architecture"] == "atrank" and metadata["alias"] is None
    assert metadata["outcomes"] == ["churn", "default", "uptake"] and metadata["max_len"] == 100
    assert len(metadata["training_data_hash"]) == 64 and metadata["vocabulary_sizes"]["event_type"] > 4
    assert metadata["limits"]["max_customers_per_request"] == LIMITS["max_customers"]
    assert metadata["dataset"]["numeric_fields"] == ["amount", "balance"]

    spec = client.get("/docs.json").json()
    assert {"/predict", "/explain", "/update", "/forget", "/metadata", "/readyz"} <= set(spec["paths"])
    ours = ["CustomerEvents", "Event", "CustomerScore", "CustomerExplanation", "EventExplanation", "Reason",
            "NextEvent", "OutOfVocabulary", "CustomerUpdate", "UpdatedCustomerScore", "ModelMetadata",
            "DatasetFields", "BatchingStats"]
    schemas = spec["components"]["schemas"]
    for name in ours:
        for field_name, field_schema in schemas[name]["properties"].items():
            assert field_schema.get("description"), (name, field_name)
            nested = "$ref" in field_schema or "$ref" in field_schema.get("items", {}) or "allOf" in field_schema
            if not nested:  # a nested model is described (with examples) by its own schema
                assert field_schema.get("examples"), (name, field_name)


# ------------------------------------------------------------------------------------------ a real server
@pytest.fixture(scope="module")
def server(model, service_env, tmp_path_factory):
    """`journey serve` on 127.0.0.1:<free port>, started once for the module, stopped by its PID."""
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    command = [sys.executable, "-m", "pipelines.cli", "serve", "--model", str(model.bundle), "--host", "127.0.0.1",
               "--port", str(port), "--max-customers", str(LIMITS["max_customers"]), "--max-events",
               str(LIMITS["max_events"]), "--state-customers", str(LIMITS["state_customers"])]
    url = f"http://127.0.0.1:{port}"
    try:
        with running_server(command, url, log, env=dict(os.environ, **service_env)) as process:
            yield url, process  # the stop test stops it first; running_server stops it if a test failed before
    except ServerNotReady as error:
        pytest.fail(str(error))


def test_real_server_answers_like_the_asgi_app(server, client, events):
    url, _ = server
    assert httpx.get(f"{url}/livez").status_code == 200
    ids = scored_customers(events, 4)
    body = {"customers": [customer_payload(events, c) for c in ids]}
    served = httpx.post(f"{url}/predict", json=body, timeout=60)
    assert served.status_code == 200, served.text
    in_process = client.post("/predict", json=body).json()
    assert served.json() == in_process
    assert httpx.get(f"{url}/metadata").json()["version"] == in_process["customers"][0]["model_version"]

    bad = copy.deepcopy(body)
    bad["customers"][2]["events"][5]["ts"] = "yesterday"
    response = httpx.post(f"{url}/predict", json=bad, timeout=60)
    assert response.status_code == 400 and f"customer '{ids[2]}', event 5, field 'ts'" in messages(response)
    response = httpx.post(f"{url}/predict", json={"customers": body["customers"] * 3}, timeout=60)
    assert response.status_code == 413


def test_real_server_serves_concurrent_clients(server, client, events):
    url, _ = server
    ids = scored_customers(events, 16)
    bodies = [{"customers": [customer_payload(events, c)]} for c in ids]
    expected = [client.post("/predict", json=b).json() for b in bodies]
    with httpx.Client(timeout=60) as http, ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(pool.map(lambda b: http.post(f"{url}/predict", json=b), bodies))
    assert [r.status_code for r in responses] == [200] * len(bodies)
    for response, answer in zip(responses, expected, strict=True):
        got = response.json()["customers"][0]
        for name, value in answer["customers"][0]["scores"].items():
            assert abs(got["scores"][name] - value) <= 1e-6
    batching = httpx.get(f"{url}/metadata").json()["batching"]
    assert batching["customers"] >= len(bodies) and batching["passes"] <= batching["customers"]


def test_real_server_stops_by_pid_without_leftover_processes(server):
    _, process = server
    children = psutil.Process(process.pid).children(recursive=True)
    os.kill(process.pid, signal.SIGTERM)
    assert process.wait(30) == 0
    gone, alive = psutil.wait_procs(children, timeout=15)
    assert not alive, [p.pid for p in alive]

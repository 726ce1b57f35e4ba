"""The online API: a BentoML 1.4 service that scores customers' raw events with a Journey model.

``JourneyService`` loads one model — a registered MLflow model (``models:/journey-…@champion`` by default) or
a bundle folder, set by ``JOURNEY_MODEL_URI`` — together with its preprocessing artifact, and answers:

* ``POST /predict`` — outcome scores and the top-k next events per customer, with the model name and version;
* ``POST /explain`` — the same, plus each event's attention weight per task and the top reasons grouped by
  behaviour type and time bucket (:mod:`journey_model.inference.explain`);
* ``POST /update`` / ``POST /forget`` — incremental scoring from a per-customer state held here
  (:mod:`journey_model.inference.incremental`): send only the new events, get the score a full request would give;
* ``GET /metadata`` — model name, version, alias, training data hash, vocabulary sizes, limits;
* BentoML's ``/livez``, ``/readyz`` (ready once the model is loaded and warmed up) and ``/docs.json`` (OpenAPI).

Every request is checked on its own (:mod:`serving.requests`; /predict's body first in bulk, column by column,
:mod:`serving.bulk`, which also takes the columnar form) and a bad one gets a 4xx whose message names
the customer, the event index and the field; valid requests are then scored together by the adaptive
batcher (:mod:`serving.batching`). The scoring path is the batch job's: canonical events ->
:func:`~journey_model.data.sequences.encode_examples` -> :meth:`Scorer.score_rows`, so both give the same scores.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import bentoml
from fastapi import FastAPI
from pydantic import Field
from starlette.responses import JSONResponse

from serving.config import ServingConfig
from serving.guard import RequestGuard, quiet_client_errors
from serving.schemas import (
    EXAMPLE_CUSTOMER,
    BatchingStats,
    CustomerEvents,
    CustomerExplanation,
    CustomerScore,
    CustomerUpdate,
    DatasetFields,
    ErrorResponse,
    EventExplanation,
    ExplainResponse,
    ForgetResponse,
    Ineligible,
    ModelMetadata,
    NextEvent,
    OperatingPointInfo,
    OutOfVocabulary,
    PredictResponse,
    Reason,
    ReasonCodeAnswer,
    UpdatedCustomerScore,
    UpdateResponse,
    count_ineligible_answers,
)

with bentoml.importing():
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import torch

    from journey_model.data.eligibility import ineligible_reason_column, ineligible_rule_column
    from journey_model.data.schema import CUSTOMER_ID, EVENT_TYPE, TIMESTAMP
    from journey_model.data.sequences import encode_examples
    from journey_model.inference.explain import explain_rows
    from journey_model.inference.incremental import CustomerStateStore, HeldEventAfterCutoff, StateMismatch
    from journey_model.tracking.loading import open_model
    from serving.batching import AdaptiveBatcher
    from serving.bulk import BulkRequest, PredictCustomers, validate_customers
    from serving.requests import (
        InputContract,
        ParsedCustomer,
        ParsedRequest,
        RequestError,
        parse_bulk,
        parse_customers,
        problem,
        pseudonymised_id,
    )

log = logging.getLogger(__name__)

# Requests with at most this many events are checked on the event loop, not a worker thread (about 3 ms of loop
# time at 1,000 events): the checks hold the GIL anyway, and the hop cost 500-event customers ~40 % of throughput
# at 64 clients (README, "Measured"). Larger requests still go to a thread, so health checks stay responsive.
INLINE_PARSE_EVENTS = 1000
# BentoML reads the number of worker processes when it imports this module, before any __init__ runs.
WORKERS = ServingConfig.from_env().workers

metadata_app = FastAPI(title="Journey metadata", docs_url=None, redoc_url=None, openapi_url=None)

CUSTOMERS_FIELD = Field(description="Customers to score (at least one), each with its events and an optional cut-off.",
                        min_length=1, examples=[[EXAMPLE_CUSTOMER]])
UPDATES_FIELD = Field(description="New events per customer and the events_seen of the previous answer (0 to start).",
                      min_length=1,
                      examples=[[{**EXAMPLE_CUSTOMER, "events_seen": 0}]])
FORGET_FIELD = Field(description="Customers whose held state to drop.", examples=[["C00000042"]])


class JourneyScoring:
    """The API's work without the web framework: parse, score, explain, update; raises RequestError."""

    def __init__(self, config: ServingConfig) -> None:
        self.config = config
        # One intra-op thread per worker by default: scale out with workers; on small shared machines two
        # threads fighting for cores made a forward pass several times slower (README, "Serving").
        torch.set_num_threads(config.torch_threads)
        self.scorer, self.identity = open_model(config.model_uri, batch_size=config.max_batch_customers)
        self.preprocessor = self.scorer.preprocessor
        self.contract = InputContract(self.preprocessor)
        self.states = CustomerStateStore(config.state_max_customers, self.preprocessor.config.max_len)
        self.outcomes = [c[2:] for c in self.scorer.output_columns if c.startswith("p_") and not c.startswith("p_next_event_")]

    # ---------------------------------------------------------------- scoring (runs on the batch thread)
    def score(self, requests: Sequence[ParsedRequest]) -> list[list[CustomerScore]]:
        """Score several parsed requests in one pass; one list of answers per request."""
        events = pa.concat_tables([r.events for r in requests])
        examples = pa.concat_tables([r.examples for r in requests])
        rows = encode_examples(self.preprocessor, events, examples)
        scored: list[dict[str, Any]] = []  # one dict of values per customer, in request order
        for start in range(0, rows.num_rows, self.scorer.batch_size):
            chunk = rows.slice(start, self.scorer.batch_size).to_pylist()
            batch, output = self.scorer.forward(chunk)
            columns = self.scorer.score_columns(chunk, batch, output)
            scored += [{**{name: values[i] for name, values in columns.items()}, **self._rules(chunk[i])}
                       for i in range(len(chunk))]
        answers, start = [], 0
        for request in requests:
            answers.append([self._customer_score(c, row) for c, row in
                            zip(request.customers, scored[start:start + request.size], strict=True)])
            start += request.size
        return answers

    def _rules(self, row: dict[str, Any]) -> dict[str, Any]:
        """The eligibility rule columns of an encoded row (the scores carry only the reason sentence)."""
        return {ineligible_rule_column(name): row[ineligible_rule_column(name)] for name in self.scorer.judged_outcomes}

    def _customer_score(self, customer: ParsedCustomer, values: dict[str, Any], cls: type = CustomerScore,
                        **extra: Any) -> Any:
        next_events = []
        for k in range(1, self.scorer.top_k + 1):
            if f"next_event_{k}" in values:
                next_events.append(NextEvent(event_type=values[f"next_event_{k}"],
                                             probability=float(values[f"p_next_event_{k}"])))
        return cls(
            customer_id=customer.customer_id,
            cutoff=customer.cutoff,
            model_name=self.identity.name,
            model_version=self.identity.version,
            n_events_received=customer.n_events,
            n_events_used=int(values["n_events"]),
            scores={name: float(values[f"p_{name}"]) for name in self.outcomes
                    if values.get(ineligible_rule_column(name)) is None},
            flags={name: bool(values[f"flag_{name}"]) for name in self.outcomes
                   if f"flag_{name}" in values and values.get(ineligible_rule_column(name)) is None},
            ineligible={name: Ineligible(rule=values[ineligible_rule_column(name)],
                                         reason=values[ineligible_reason_column(name)])
                        for name in self.scorer.judged_outcomes if values.get(ineligible_rule_column(name)) is not None},
            next_events=next_events,
            out_of_vocabulary=[OutOfVocabulary(**entry) for entry in customer.oov],
            out_of_vocabulary_count=customer.oov_count,
            **extra,
        )

    # ---------------------------------------------------------------- requests
    def parse(self, customers: BulkRequest | Sequence[CustomerEvents | CustomerUpdate]) -> ParsedRequest:
        if isinstance(customers, BulkRequest):
            return parse_bulk(customers, self.contract, self.config)
        return parse_customers(customers, self.contract, self.config)

    def explain(self, customers: Sequence[CustomerEvents]) -> list[CustomerExplanation]:
        parsed = self.parse(customers)
        rows = encode_examples(self.preprocessor, parsed.events, parsed.examples)
        frame, explanations = explain_rows(self.scorer, rows, top_k=self.config.top_reasons)
        answers = []
        rules = rows.select([ineligible_rule_column(n) for n in self.scorer.judged_outcomes]).to_pylist()
        for customer, sent, row, explanation, rule in zip(parsed.customers, customers, frame.to_dict("records"),
                                                          explanations, rules, strict=True):
            row = {**row, **rule}
            n_used = int(row["n_events"])
            used = customer.model_order[len(customer.model_order) - n_used:]  # request indices, oldest first
            position = {int(index): p for p, index in enumerate(used)}
            events = []
            for index, event in enumerate(sent.events):
                p = position.get(index)
                attention = None
                if p is not None and explanation.attention:
                    attention = {task: float(weights[p]) for task, weights in explanation.attention.items()}
                events.append(EventExplanation(
                    index=index, event_id=event.event_id, ts=event.ts if event.ts.tzinfo else event.ts.replace(tzinfo=UTC),
                    event_type=event.event_type, used=p is not None,
                    time_bucket=explanation.time_bucket[p] if p is not None else None, attention=attention,
                ))
            reasons = {task: [Reason(**r.to_dict()) for r in found] for task, found in explanation.reasons.items()}
            codes = {task: [ReasonCodeAnswer(code=hit.code, sentence=hit.sentence, weight=hit.weight,
                                             events=[int(used[p]) for p in hit.events]) for hit in hits]
                     for task, hits in explanation.reason_codes.items()}
            answers.append(self._customer_score(customer, row, CustomerExplanation, events=events, top_reasons=reasons,
                                                explanation_method=explanation.method, reason_codes=codes,
                                                reasons=explanation.reason_text))
        return answers

    def update(self, customers: Sequence[CustomerUpdate]) -> tuple[ParsedRequest, list[tuple[int, int]]]:
        """Apply new events to the held states; the request to score and (events_seen, held) per customer."""
        seen: dict[str, int] = {}
        duplicates = []
        for i, customer in enumerate(customers):
            if customer.customer_id in seen:
                duplicates.append(problem(["customers", i, "customer_id"], f"customer {customer.customer_id!r} "
                                          f"appears twice (entries {seen[customer.customer_id]} and {i}); send one "
                                          "update per customer"))
            seen.setdefault(customer.customer_id, i)
        if duplicates:
            raise RequestError(400, duplicates)
        parsed = self.parse(customers)
        self._check_states(customers, parsed)
        offsets = np.concatenate([[0], np.cumsum([c.n_events for c in parsed.customers])])
        tables, counts = [], []
        for i, (customer, sent) in enumerate(zip(parsed.customers, customers, strict=True)):
            new = parsed.events.slice(int(offsets[i]), customer.n_events)
            cutoff_micros = int(pd.Timestamp(customer.cutoff).value // 1000)
            try:
                state = self.states.update(customer.customer_id, new, sent.events_seen, cutoff_micros)
            except StateMismatch as error:
                raise RequestError(409, [problem(["customers", i, "events_seen"], str(error), "state")]) from error
            except HeldEventAfterCutoff as error:
                raise RequestError(400, [problem(["customers", i, "cutoff"], str(error))]) from error
            keyed = state.events.set_column(0, CUSTOMER_ID, pa.array([customer.key] * state.events.num_rows, pa.string()))
            tables.append(keyed)
            counts.append((state.events_seen, state.events.num_rows))
            customer.n_events = state.events_seen
        events = pa.concat_tables(tables) if tables else parsed.events
        return ParsedRequest(parsed.customers, events, parsed.examples), counts

    def _check_states(self, customers: Sequence[CustomerUpdate], parsed: ParsedRequest) -> None:
        """Refuse the whole update before changing any state when one customer's state is not as expected."""
        problems, conflicts = [], []
        for i, (sent, customer) in enumerate(zip(customers, parsed.customers, strict=True)):
            held = self.states.get(sent.customer_id)
            if sent.events_seen and (held is None or held.events_seen != sent.events_seen):
                have = "no state" if held is None else f"a state of {held.events_seen} events"
                conflicts.append(problem(["customers", i, "events_seen"],
                                         f"customer {sent.customer_id!r}: events_seen = {sent.events_seen} but the "
                                         f"server holds {have} (evicted, restarted or another worker); resend the "
                                         "full history with events_seen = 0", "state"))
            elif sent.events_seen and held is not None:
                last = held.last_event_micros
                cutoff = int(pd.Timestamp(customer.cutoff).value // 1000)
                if last is not None and last >= cutoff:
                    problems.append(problem(["customers", i, "cutoff"],
                                            f"customer {sent.customer_id!r}, field 'cutoff': the held history has an "
                                            f"event at {np.datetime64(last, 'us')}Z, not before the cut-off "
                                            f"{customer.cutoff.isoformat()}"))
        if problems:
            raise RequestError(400, problems)
        if conflicts:
            raise RequestError(409, conflicts)

    # ---------------------------------------------------------------- facts
    def metadata(self, batching: BatchingStats) -> ModelMetadata:
        dataset = self.preprocessor.dataset
        facts = self.scorer.describe()
        return ModelMetadata(
            name=self.identity.name, version=self.identity.version, alias=self.identity.alias, uri=self.identity.uri,
            architecture=self.identity.architecture, tasks=facts["tasks"], outcomes=self.outcomes,
            training_data_hash=self.identity.training_data_hash, artifact_hash=self.identity.artifact_hash,
            dataset=DatasetFields(name=dataset.name, categorical_fields=list(dataset.categorical_fields),
                                  numeric_fields=list(dataset.numeric_fields)),
            vocabulary_sizes=facts["vocabulary_sizes"], max_len=facts["max_len"], top_k=self.scorer.top_k,
            limits=self.config.limits(), state_customers=len(self.states), batching=batching,
            operating_points={name: OperatingPointInfo(calibration=entry["method"], policy=entry["policy"],
                                                       threshold=entry["threshold"])
                              for name, entry in (facts.get("calibration") or {}).items()},
        )

    def warm_up(self) -> None:
        """One tiny request through the whole path, so the first real request does not pay for lazy set-up."""
        event_type = self.preprocessor.vocabularies[EVENT_TYPE].tokens[-1]
        now = datetime.now(UTC)
        customer = CustomerEvents(customer_id="warm-up", cutoff=now,
                                  events=[{TIMESTAMP: now - timedelta(days=1), EVENT_TYPE: event_type}])
        self.score([self.parse([customer])])
        sent = [{"customer_id": "warm-up", "cutoff": now.isoformat(), "events": {
            TIMESTAMP: [(now - timedelta(days=1)).isoformat()], EVENT_TYPE: [event_type]}}]
        self.score([self.parse(validate_customers(sent))])  # the bulk path (serving.bulk)


def _error_response(error: RequestError) -> JSONResponse:
    return JSONResponse(ErrorResponse(**error.body()).model_dump(), status_code=error.status)


@bentoml.asgi_app(metadata_app, path="/")
# http.host: `bentoml serve serving.service:JourneyService` listens on 127.0.0.1 unless told --host.
@bentoml.service(name="journey", workers=WORKERS, traffic={"timeout": 120}, http={"host": "127.0.0.1"})
class JourneyService:
    """Journey's online scoring API (see the module docstring for the endpoints)."""

    def __init__(self) -> None:
        started = time.perf_counter()
        self.config = ServingConfig.from_env()
        self.scoring = JourneyScoring(self.config)
        self.batcher: AdaptiveBatcher = AdaptiveBatcher(
            self.scoring.score, size_of=lambda request: request.size,
            max_batch_size=self.config.max_batch_customers, max_wait_ms=self.config.max_batch_wait_ms,
        )
        self.scoring.warm_up()
        self._ready = True
        log.info("journey: model %s version %s loaded from %s in %.1f s", self.scoring.identity.name,
                 self.scoring.identity.version, self.config.model_uri, time.perf_counter() - started)

    def __is_ready__(self) -> bool:
        return getattr(self, "_ready", False)

    @bentoml.api(route="/predict")
    async def predict(self, customers: PredictCustomers = CUSTOMERS_FIELD) -> PredictResponse:
        """Outcome scores and the top-k next events of each customer, with the model name and version.

        A customer's events are rows (a list of events) or columns (one array per field: `{"ts": [...],
        "event_type": [...], ...}`; cheaper to send and to check). Bad input gets a 400 (413 over a limit)
        whose messages name the customer, the event index and the field. Values the model never saw are
        scored as out-of-vocabulary and listed per customer.
        """
        try:
            n_events = customers.n_events if isinstance(customers, BulkRequest) else sum(len(c.events) for c in customers)
            if n_events <= INLINE_PARSE_EVENTS:
                parsed = self.scoring.parse(customers)  # cheaper than a hop to a worker thread
            else:
                parsed = await anyio.to_thread.run_sync(self.scoring.parse, customers)
        except RequestError as error:
            return _error_response(error)  # type: ignore[return-value]
        answers = await self.batcher.submit(parsed)
        return PredictResponse(customers=answers, ineligible=count_ineligible_answers(answers))

    @bentoml.api(route="/explain")
    async def explain(self, customers: list[CustomerEvents] = CUSTOMERS_FIELD) -> ExplainResponse:
        """The /predict answer plus, per event, its attention weight for each task and the top reasons."""
        try:
            answers = await anyio.to_thread.run_sync(self.scoring.explain, customers)
        except RequestError as error:
            return _error_response(error)  # type: ignore[return-value]
        return ExplainResponse(customers=answers, ineligible=count_ineligible_answers(answers))

    @bentoml.api(route="/update")
    async def update(self, customers: list[CustomerUpdate] = UPDATES_FIELD) -> UpdateResponse:
        """Incremental scoring: add new events to each customer's held state and score it.

        Gives the score a /predict request with the whole history and the same cut-off gives. A state the
        server does not hold (evicted, restarted, another worker) is refused with 409, never scored partially.
        """
        try:
            parsed, counts = await anyio.to_thread.run_sync(self.scoring.update, customers)
        except RequestError as error:
            return _error_response(error)  # type: ignore[return-value]
        scores = await self.batcher.submit(parsed)
        answers = [UpdatedCustomerScore(**score.model_dump(), events_seen=seen, state_events=held)
                   for score, (seen, held) in zip(scores, counts, strict=True)]
        return UpdateResponse(customers=answers, ineligible=count_ineligible_answers(answers))

    @bentoml.api(route="/forget")
    def forget(self, customer_ids: list[str] = FORGET_FIELD) -> ForgetResponse:
        """Drop the incremental state of these customers."""
        return ForgetResponse(forgotten=sum(self.scoring.states.forget(pseudonymised_id(c)) for c in customer_ids))

    @metadata_app.get("/metadata")
    def metadata(self) -> ModelMetadata:
        """Model name, version, alias, training data hash, vocabulary sizes and the request limits."""
        stats = self.batcher.stats
        return self.scoring.metadata(BatchingStats(
            passes=stats.batches, requests=stats.items, customers=stats.customers,
            mean_customers_per_pass=stats.mean_batch, largest_pass=stats.largest,
        ))


# Bounds, authentication and refusal logs in front of every route (serving/guard.py); BentoML's own ERROR
# log of a refused request (its traceback holds the request's values) is dropped.
JourneyService.add_asgi_middleware(RequestGuard)
quiet_client_errors()

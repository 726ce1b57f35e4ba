"""Request and response models of the online API, each field described with an example for the OpenAPI page.

Requests carry customers, each with its events in the canonical fields (``ts``, ``event_type``, ``item``,
``amount``, ``channel`` and the model's declared extras, e.g. ``device`` and ``balance`` for the synthetic
bank; GET /metadata lists them) and an optional cut-off. Type errors are caught by these models; the
message of each names the customer, the event index and the field (see :class:`CustomerEvents`). The
checks that need the model (extra fields, cut-off order, limits) are in :mod:`serving.requests`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

EXAMPLE_EVENTS: list[dict[str, Any]] = [
    {"ts": "2024-11-02T08:14:00Z", "event_type": "login", "channel": "app", "device": "android"},
    {"ts": "2024-11-03T19:40:12Z", "event_type": "card_payment", "item": "groceries", "channel": "pos",
     "amount": 54.3, "balance": 1210.5},
    {"ts": "2024-11-20T10:02:45Z", "event_type": "fee", "item": "overdraft_fee", "amount": 25.0, "balance": -80.0},
    {"ts": "2024-11-21T16:30:00Z", "event_type": "complaint", "item": "fees", "channel": "phone",
     "event_id": "e-10293"},
]
EXAMPLE_CUSTOMER: dict[str, Any] = {"customer_id": "C00000042", "cutoff": "2024-12-01T00:00:00Z",
                                    "events": EXAMPLE_EVENTS}
INPUT_ERROR_TYPE = "journey_input"


# A time is an ISO 8601 string or a number of Unix seconds (pydantic reads both); the schema says so.
TIME_SCHEMA = {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "number"}]}
Timestamp = Annotated[datetime, WithJsonSchema(TIME_SCHEMA)]
OptionalTimestamp = Annotated[datetime | None, WithJsonSchema({"anyOf": [*TIME_SCHEMA["anyOf"], {"type": "null"}]})]


class Event(BaseModel):
    """One event in the canonical fields. Extra fields the model's dataset declares (GET /metadata) are allowed."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"example": EXAMPLE_EVENTS[1]})

    ts: Timestamp = Field(
        description="When it happened: ISO 8601 with Z or an offset (no offset means UTC), or a number of Unix "
        "seconds (milliseconds when above 2e10).",
        examples=["2024-11-03T19:40:12Z"],
    )
    event_type: str = Field(
        description="Behaviour type (login, card_payment, transfer_out, complaint …). A type the model never saw "
        "maps to out-of-vocabulary and is reported in the answer.",
        examples=["card_payment"],
    )
    event_id: str | None = Field(None, description="Your id of the event, echoed by /explain.", examples=["e-10293"])
    item: str | None = Field(
        None, description="The behaviour's object: product, merchant category, fee type …", examples=["groceries"]
    )
    amount: float | None = Field(None, description="Money moved, in the account's currency (a finite number).",
                                 examples=[54.3], strict=True, allow_inf_nan=False)
    channel: str | None = Field(None, description="app, web, branch, phone, pos …", examples=["pos"])


def _where(loc: tuple[Any, ...]) -> str:
    """'event 3, field 'ts'' / 'field 'cutoff'' from a pydantic error location inside one customer."""
    if len(loc) >= 2 and loc[0] == "events" and isinstance(loc[1], int):
        return f"event {loc[1]}" + (f", field {loc[2]!r}" if len(loc) > 2 else "")
    return f"field {loc[0]!r}" if loc else "the customer"


EMPTY_HISTORY = "empty history: send at least one event"


def name_the_customer(data: Any, handler: Any) -> Any:
    """Validate one customer; every problem becomes its own error whose message names the customer id, the event
    index and the field (its location is the full path: customers, i, events, j, field; its type pydantic's)."""
    who = customer_named(data)
    try:
        result = handler(data)
    except ValidationError as error:
        problems = []
        for item in error.errors(include_url=False):
            message = item["msg"]
            if item["loc"] == ("events",) and item["type"] == "too_short":
                message = EMPTY_HISTORY
            problems.append((item["loc"], item["type"], f"{who}, {_where(item['loc'])}: {message}"))
        raise _errors(problems) from None
    if isinstance(result, CustomerUpdate) and not result.events and not result.events_seen:
        raise _errors([(("events",), "too_short", f"{who}, field 'events': {EMPTY_HISTORY} (events_seen = 0 "
                        "starts a new state from the events sent)")])
    return result


def customer_named(data: Any) -> str:
    """"customer 'C1'" (or "customer (no customer_id)"), as every message about a customer starts."""
    customer = data.get("customer_id") if isinstance(data, dict) else None
    return f"customer {customer!r}" if isinstance(customer, str) and customer else "customer (no customer_id)"


def validation_errors(problems: list[tuple[tuple[Any, ...], str, str]]) -> ValidationError:
    """One validation error per (location, kind, message) (see :func:`_errors`)."""
    return _errors(problems)


def _errors(problems: list[tuple[tuple[Any, ...], str, str]]) -> ValidationError:
    """One validation error per (location, kind, message); pydantic prefixes each location with the customer's."""
    return ValidationError.from_exception_data("customer", [
        InitErrorDetails(type=PydanticCustomError(kind, "{message}", {"message": message}), loc=loc, input=None)
        for loc, kind, message in problems
    ])


class CustomerEvents(BaseModel):
    """A customer to score: its events and the time to score it at."""

    model_config = ConfigDict(json_schema_extra={"example": EXAMPLE_CUSTOMER})

    customer_id: str = Field(min_length=1, description="Whose events these are.", examples=["C00000042"])
    cutoff: OptionalTimestamp = Field(
        None,
        description="Score as of this time (like ts: ISO 8601 or Unix seconds); every event must be strictly before "
        "it. Default: now (when the request arrives).",
        examples=["2024-12-01T00:00:00Z"],
    )
    events: list[Event] = Field(
        min_length=1, description="The customer's history, any order (ties in time keep the order given).",
        examples=[EXAMPLE_EVENTS],
    )

    @model_validator(mode="wrap")
    @classmethod
    def _name_the_customer(cls, data: Any, handler: Any) -> CustomerEvents:
        return name_the_customer(data, handler)


EXAMPLE_COLUMNS: dict[str, list[Any]] = {
    name: [event.get(name) for event in EXAMPLE_EVENTS]
    for name in ("ts", "event_type", "item", "channel", "amount", "device", "balance", "event_id")
}
FiniteAmount = Annotated[float | None, Field(strict=True, allow_inf_nan=False)]


class EventColumns(BaseModel):
    """A customer's events as one array per field (the columnar form of /predict): element j of every array is
    event j, null where the event has no value. All arrays have the same length. Extra fields the model's
    dataset declares (GET /metadata) are arrays too. A problem is reported as for the row form, naming the
    event index and the field."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"example": EXAMPLE_COLUMNS})

    ts: list[Timestamp] = Field(description="When each event happened (as Event.ts).",
                                examples=[EXAMPLE_COLUMNS["ts"]])
    event_type: list[str] = Field(description="Behaviour type of each event (as Event.event_type).",
                                  examples=[EXAMPLE_COLUMNS["event_type"]])
    event_id: list[str | None] | None = Field(None, description="Your id of each event (or null).")
    item: list[str | None] | None = Field(None, description="Each event's object (or null).",
                                          examples=[EXAMPLE_COLUMNS["item"]])
    amount: list[FiniteAmount] | None = Field(None, description="Money moved by each event (a finite number or null).",
                                              examples=[EXAMPLE_COLUMNS["amount"]])
    channel: list[str | None] | None = Field(None, description="Each event's channel (or null).",
                                             examples=[EXAMPLE_COLUMNS["channel"]])


class CustomerColumns(BaseModel):
    """A customer to score with its events in the columnar form (one array per field; /predict only)."""

    model_config = ConfigDict(json_schema_extra={"example": {**EXAMPLE_CUSTOMER, "events": EXAMPLE_COLUMNS}})

    customer_id: str = Field(min_length=1, description="Whose events these are.", examples=["C00000042"])
    cutoff: OptionalTimestamp = Field(None, description="Score as of this time (as for the row form). Default: now.",
                                      examples=["2024-12-01T00:00:00Z"])
    events: EventColumns = Field(description="The customer's history, one array per field (at least one event).")


class CustomerUpdate(BaseModel):
    """New events for a customer whose recent history the server holds (incremental scoring)."""

    model_config = ConfigDict(json_schema_extra={"example": {
        "customer_id": "C00000042", "events_seen": 4, "cutoff": "2024-12-02T00:00:00Z",
        "events": [{"ts": "2024-12-01T09:00:00Z", "event_type": "login", "channel": "web", "device": "desktop"}],
    }})

    customer_id: str = Field(min_length=1, description="Whose events these are.", examples=["C00000042"])
    events_seen: int = Field(
        0, ge=0, strict=True,
        description="How many events the server has received for this customer (events_seen of the previous "
        "answer). 0 starts a new state from these events; a count the server does not hold is refused (409).",
        examples=[4],
    )
    cutoff: OptionalTimestamp = Field(None, description="Score as of this time (ISO 8601 or Unix seconds). Default: now.",
                                    examples=["2024-12-02T00:00:00Z"])
    events: list[Event] = Field(default_factory=list, description="Only the events not sent before (at least one "
                                "when events_seen is 0: an empty history is refused as by /predict).",
                                examples=[EXAMPLE_EVENTS[:1]])

    @model_validator(mode="wrap")
    @classmethod
    def _name_the_customer(cls, data: Any, handler: Any) -> CustomerUpdate:
        return name_the_customer(data, handler)


class NextEvent(BaseModel):
    event_type: str = Field(description="A behaviour type the customer may do next.", examples=["login"])
    probability: float = Field(description="The model's probability that it is the next event.", examples=[0.31])


class OutOfVocabulary(BaseModel):
    event_index: int = Field(description="Index of the event in the request's events list.", examples=[3])
    field: str = Field(description="The field whose value the model never saw in training.", examples=["item"])
    value: str = Field(description="The value, scored as out-of-vocabulary.", examples=["crypto_exchange"])


class Ineligible(BaseModel):
    """Why a customer gets no score for an outcome."""

    rule: str = Field(description="The dataset's eligibility rule that excluded the customer.",
                      examples=["account_closed"])
    reason: str = Field(description="The reason in words.", examples=["account closed on 2024-09-03"])


class CustomerScore(BaseModel):
    """One customer's scores."""

    customer_id: str = Field(description="The customer, as sent.", examples=["C00000042"])
    cutoff: datetime = Field(description="The time it was scored at (UTC).", examples=["2024-12-01T00:00:00Z"])
    model_name: str = Field(description="Registered model name (or bundle folder name).", examples=["journey-synth_bank-outcome"])
    model_version: str = Field(description="Registry version (or bundle content hash).", examples=["3"])
    n_events_received: int = Field(description="Events sent for this customer (all updates, for /update).",
                                   examples=[4])
    n_events_used: int = Field(description="Events the model read: the most recent max_len before the cut-off.",
                               examples=[4])
    scores: dict[str, float] = Field(description="Probability of each outcome within the model's horizon.",
                                     examples=[{"churn": 0.12, "default": 0.03, "uptake": 0.21}])
    next_events: list[NextEvent] = Field(description="The top-k next behaviour types, most likely first.",
                                         examples=[[{"event_type": "login", "probability": 0.31}]])
    out_of_vocabulary: list[OutOfVocabulary] = Field(
        description="Values the model never saw in training (scored as out-of-vocabulary); first ones only.",
        examples=[[{"event_index": 3, "field": "item", "value": "crypto_exchange"}]],
    )
    out_of_vocabulary_count: int = Field(description="How many values were out-of-vocabulary in all.", examples=[1])
    ineligible: dict[str, Ineligible] = Field(
        default_factory=dict,
        description="Outcomes this customer cannot have at the cut-off (outside the population at risk the "
        "dataset declares): no score for them in `scores`, the rule and the reason instead.",
        examples=[{"churn": {"rule": "account_closed", "reason": "account closed on 2024-09-03"}}],
    )
    flags: dict[str, bool] = Field(
        default_factory=dict,
        description="Per scored outcome with an operating point: whether the customer is at or above the model's "
        "threshold (the policy is in /metadata `operating_points`).", examples=[{"churn": True, "default": False}],
    )


IneligibleCounts = dict[str, dict[str, int]]
INELIGIBLE_COUNTS_FIELD = Field(
    default_factory=dict, description="Customers of this request not scored for an outcome, by outcome and rule.",
    examples=[{"churn": {"account_closed": 1}}],
)


class PredictResponse(BaseModel):
    customers: list[CustomerScore] = Field(description="One answer per customer, in the order of the request.")
    ineligible: IneligibleCounts = INELIGIBLE_COUNTS_FIELD


class Reason(BaseModel):
    """Events of one behaviour type in one time bucket, and their share of one task's attention."""

    task: str = Field(description="Outcome name, next_event or next_item.", examples=["churn"])
    event_type: str = Field(description="Behaviour type as the model knows it (<oov> if unseen).",
                            examples=["complaint"])
    time_bucket: str = Field(description="Time before the cut-off (ATRank log2 bucket).", examples=["7-15 days"])
    weight: float = Field(description="Share of the task's attention on these events, 0..1.", examples=[0.41])
    events: int = Field(description="How many events are in the group.", examples=[2])
    summary: str = Field(description="The reason in words.",
                         examples=["2 complaint events 7-15 days before the cut-off: 41% of the churn attention"])


class EventExplanation(BaseModel):
    """One event of the request and the attention each task paid to it."""

    index: int = Field(description="Index of the event in the request's events list.", examples=[3])
    event_id: str | None = Field(description="The event_id sent, if any.", examples=["e-10293"])
    ts: datetime = Field(description="The event's time (UTC).", examples=["2024-11-21T16:30:00Z"])
    event_type: str = Field(description="The behaviour type sent.", examples=["complaint"])
    used: bool = Field(description="False when the event is older than the max_len most recent ones the model "
                       "reads.", examples=[True])
    time_bucket: str | None = Field(description="Time before the cut-off (ATRank log2 bucket); null if unused.",
                                    examples=["7-15 days"])
    attention: dict[str, float] | None = Field(
        description="Per task, this event's importance by `explanation_method`: for attention methods its share of "
        "the task's attention (sums to 1 over used events); for (screened) occlusion and integrated gradients the "
        "probability points it adds (negative: it lowers the score). Null if unused.",
        examples=[{"churn": 0.22, "next_event": 0.05}],
    )


class ReasonCodeAnswer(BaseModel):
    """A reason code of one outcome and the events behind it."""

    code: str = Field(description="Stable code from the dataset config (EVENT_<TYPE> when none matched).",
                      examples=["FEE_AFTER_COMPLAINT"])
    sentence: str = Field(description="The code in plain words.", examples=["a fee charged within two weeks of a "
                                                                          "complaint"])
    weight: float = Field(description="Summed importance of its events.", examples=[0.31])
    events: list[int] = Field(description="Indices of its events in the request's events list.", examples=[[41]])


class CustomerExplanation(CustomerScore):
    """One customer's scores and why."""

    explanation_method: str = Field(
        description="How event importances were computed: 'attention' (ATRank's task queries), 'attention-rollout', "
        "'occlusion' (score drop when the event is left out), 'screened-occlusion' (the same, for the events "
        "attention rollout ranks highest; 0 for the others) or 'integrated-gradients'; the default per model "
        "family is the one that found the planted causes best (README, 'Explanations').", examples=["attention"],
    )
    reason_codes: dict[str, list[ReasonCodeAnswer]] = Field(
        default_factory=dict,
        description="Per outcome the customer is eligible for, the dataset's reason codes its most important "
        "events fall under, largest weight first (at most 3).",
        examples=[{"churn": [{"code": "FEE_AFTER_COMPLAINT", "sentence": "a fee charged within two weeks of a "
                              "complaint", "weight": 0.31, "events": [41]}]}],
    )
    reasons: str = Field(default="", description="The reason codes as one readable line.",
                         examples=["churn: FEE_AFTER_COMPLAINT — a fee charged within two weeks of a complaint"])
    events: list[EventExplanation] = Field(description="Every event of the request, in the order sent.")
    top_reasons: dict[str, list[Reason]] = Field(
        description="Per task, the behaviour-type x time-bucket groups with the most attention, largest first.",
        examples=[{"churn": [{"task": "churn", "event_type": "complaint", "time_bucket": "7-15 days",
                              "weight": 0.41, "events": 2, "summary": "2 complaint events 7-15 days before the "
                              "cut-off: 41% of the churn attention"}]}],
    )


class ExplainResponse(BaseModel):
    customers: list[CustomerExplanation] = Field(description="One answer per customer, in the order of the request.")
    ineligible: IneligibleCounts = INELIGIBLE_COUNTS_FIELD


class UpdatedCustomerScore(CustomerScore):
    """Scores after an incremental update, and the state the server now holds."""

    events_seen: int = Field(description="Events received for this customer in all; send it with the next update.",
                             examples=[5])
    state_events: int = Field(description="Events the server holds for the customer (at most max_len).",
                              examples=[5])


class UpdateResponse(BaseModel):
    customers: list[UpdatedCustomerScore] = Field(description="One answer per customer, in the order of the request.")
    ineligible: IneligibleCounts = INELIGIBLE_COUNTS_FIELD


def count_ineligible_answers(customers: list[CustomerScore]) -> IneligibleCounts:
    """The response's ``ineligible`` counts from its customers' answers."""
    counts: IneligibleCounts = {}
    for customer in customers:
        for outcome, why in customer.ineligible.items():
            by_rule = counts.setdefault(outcome, {})
            by_rule[why.rule] = by_rule.get(why.rule, 0) + 1
    return counts


class ForgetResponse(BaseModel):
    forgotten: int = Field(description="How many of the customers had a state that is now dropped.", examples=[1])


class DatasetFields(BaseModel):
    name: str = Field(description="Dataset the model was trained on.", examples=["synth_bank"])
    categorical_fields: list[str] = Field(description="String fields an event may carry.",
                                          examples=[["item", "channel", "device"]])
    numeric_fields: list[str] = Field(description="Number fields an event may carry.", examples=[["amount", "balance"]])


class BatchingStats(BaseModel):
    passes: int = Field(description="Forward passes run for /predict and /update.", examples=[120])
    requests: int = Field(description="Requests served by those passes.", examples=[480])
    customers: int = Field(description="Customers scored by those passes.", examples=[960])
    mean_customers_per_pass: float = Field(description="Average batch size in customers.", examples=[8.0])
    largest_pass: int = Field(description="Most customers in one pass.", examples=[64])


class OperatingPointInfo(BaseModel):
    """How an outcome's probability is calibrated and the threshold of its flag."""

    calibration: str = Field(description="identity, platt or isotonic (fitted on the validation split).",
                             examples=["isotonic"])
    policy: str | None = Field(description="The declared policy the threshold was chosen by on validation.",
                               examples=["capacity:10%"])
    threshold: float | None = Field(description="flag = probability >= threshold; null flags nobody.",
                                    examples=[0.21])


class ModelMetadata(BaseModel):
    """The model behind the API and the limits it enforces."""

    name: str = Field(description="Registered model name (or bundle folder name).", examples=["journey-synth_bank-outcome"])
    version: str = Field(description="Registry version (or bundle content hash).", examples=["3"])
    alias: str | None = Field(description="Registry alias the model was loaded by.", examples=["champion"])
    uri: str = Field(description="The model URI or bundle folder loaded.", examples=["models:/journey-synth_bank-outcome@champion"])
    architecture: str = Field(description="Model zoo name.", examples=["atrank"])
    tasks: list[str] = Field(description="Tasks the model answers.", examples=[["outcome", "next_event"]])
    outcomes: list[str] = Field(description="Outcome names of the scores.", examples=[["churn", "default", "uptake"]])
    training_data_hash: str = Field(description="sha256 of the event files the preprocessing was fitted on.",
                                    examples=["da988f09fc87…"])
    artifact_hash: str = Field(description="Content hash of the preprocessing artifact.", examples=["bbae5f5d1ca1e850"])
    dataset: DatasetFields = Field(description="The fields events may carry.")
    vocabulary_sizes: dict[str, int] = Field(description="Size of each vocabulary, reserved tokens included.",
                                             examples=[{"event_type": 18, "item": 57}])
    max_len: int = Field(description="Most recent events the model reads per customer.", examples=[100])
    top_k: int = Field(description="Next events returned per customer.", examples=[3])
    limits: dict[str, int] = Field(description="Request limits (a request over them gets 413).",
                                     examples=[{"max_customers_per_request": 256, "max_events_per_customer": 5000}])
    state_customers: int = Field(description="Customers whose incremental state is held now.", examples=[12])
    operating_points: dict[str, OperatingPointInfo] = Field(
        default_factory=dict, description="Per outcome: how scores are calibrated and where the flag cuts.",
        examples=[{"churn": {"calibration": "isotonic", "policy": "capacity:10%", "threshold": 0.21}}])
    batching: BatchingStats = Field(description="What the adaptive batcher has done since the service started.")


class ErrorDetail(BaseModel):
    loc: list[str | int] = Field(description="Where: customers, index, events, index, field.",
                                 examples=[["customers", 0, "events", 3, "ts"]])
    msg: str = Field(description="What is wrong, naming the customer, the event index and the field.",
                     examples=["customer 'C00000042', event 3, field 'ts': not before the cut-off 2024-12-01T00:00:00Z"])
    type: str = Field(description="Kind of problem: pydantic's error type (missing, float_parsing, finite_number, "
                      "too_short …), journey_input, limit, state, body, media_type or auth.", examples=["missing"])


class ErrorResponse(BaseModel):
    """Every 4xx answer (and the 5xx of a time-out): a summary and each problem with its location."""

    error: str = Field(description="Summary.", examples=["1 problem in the request"])
    detail: list[ErrorDetail] = Field(default_factory=list, description="Each problem (none for a time-out).")

"""The canonical event schema and the dataset config that describes heterogeneous behaviours.

Every event log that enters Journey — CSV, JSON Lines or Parquet, a bank's export or the built-in synthetic
journeys — is turned into one table with these columns, one row per event:

===============  ===========================  ==========================================================
column           Arrow type                   meaning
===============  ===========================  ==========================================================
``customer_id``  string, required             whose event this is
``ts``           timestamp[us, UTC], required when it happened
``event_type``   string, required             the behaviour type (``card_payment``, ``login``, ``pv`` …)
``event_id``     string, optional             a stable id (ground-truth explanations refer to it)
``item``         string, optional             the behaviour's object (product, merchant category, page …)
``amount``       float64, optional            money moved, in the account's currency
``channel``      string, optional             ``app``, ``web``, ``branch``, ``phone`` …
extras           string / float64, optional   declared per dataset (``category``, ``balance`` …)
===============  ===========================  ==========================================================

A :class:`DatasetConfig` names the extra fields and, following ATRank's heterogeneous behaviours
(Zhou et al. 2018, §3.1), which fields each behaviour type carries: a card payment has a merchant category
and an amount, a login a channel, a product view a product. Fields a type does not carry are ignored for
that type even when the column holds a value, so every type is embedded from its own field set only.

The config also declares, per outcome, who can have it (:class:`OutcomeSpec.eligibility`: a churn model
scores customers whose account is still open) and the dataset's reason codes (:class:`ReasonCode`: stable
names and plain sentences an explanation is read in). Both are data: they live in ``dataset.yaml`` and travel
with the preprocessing artifact into every model bundle, so training, batch scoring, the API and the pyfunc
model apply the same rules (:mod:`journey_model.data.eligibility` evaluates them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml

CUSTOMER_ID = "customer_id"
TIMESTAMP = "ts"
EVENT_TYPE = "event_type"
EVENT_ID = "event_id"

REQUIRED_COLUMNS: tuple[str, ...] = (CUSTOMER_ID, TIMESTAMP, EVENT_TYPE)
STANDARD_CATEGORICAL: tuple[str, ...] = ("item", "channel")
STANDARD_NUMERIC: tuple[str, ...] = ("amount",)

TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")


class SchemaError(ValueError):
    """A dataset config or an event table does not match the canonical schema."""


def _from_mapping(cls: type, data: Any, source: str) -> Any:
    """``cls(**data)`` with an error naming the source and the unknown or missing keys."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise SchemaError(f"{source}: expected a mapping, got {type(data).__name__} {data!r}")
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise SchemaError(f"{source}: unknown keys {sorted(unknown)}; expected some of {sorted(known)}")
    try:
        return cls(**data)
    except TypeError as error:
        raise SchemaError(f"{source}: {error}") from error


@dataclass
class EventMatch:
    """Which events a rule looks at: a behaviour type (any when None), optionally some items, a recent window."""

    event_type: str | None = None  # behaviour type; None = any event
    items: list[str] = field(default_factory=list)  # values of the ``item`` field; empty = any
    within_days: float | None = None  # only events at most this many days before the cut-off; None = any time

    def __post_init__(self) -> None:
        if self.within_days is not None and not self.within_days > 0:
            raise SchemaError(f"within_days must be > 0 days, got {self.within_days!r}")
        self.items = [str(item) for item in self.items]

    def describe(self) -> str:
        what = self.event_type or "any event"
        if self.items:
            what += f" ({', '.join(self.items)})"
        if self.within_days is not None:
            what += f" in the last {self.within_days:g} days"
        return what


@dataclass
class EligibilityRule:
    """One condition of who can have an outcome at a cut-off, judged on events strictly before the cut-off.

    ``exclude_if``: the customer is not eligible when such an event happened (an ``account_close`` for churn).
    ``require``: the customer is not eligible unless such an event happened (a login in the last 90 days).
    ``reason`` is the sentence an ineligible customer gets; ``{date}`` is the date of the latest matching
    event (``exclude_if``), ``{days}`` the rule's window. ``name`` is what manifests count by.
    """

    name: str  # stable id, e.g. account_closed
    exclude_if: EventMatch | None = None
    require: EventMatch | None = None
    reason: str = ""  # e.g. "account closed on {date}"

    def __post_init__(self) -> None:
        source = f"eligibility rule {self.name!r}"
        if self.exclude_if is not None:
            self.exclude_if = _from_mapping(EventMatch, self.exclude_if, f"{source}, exclude_if")
        if self.require is not None:
            self.require = _from_mapping(EventMatch, self.require, f"{source}, require")
        if (self.exclude_if is None) == (self.require is None):
            raise SchemaError(f"{source}: give exactly one of exclude_if and require")
        if not self.reason:
            match = self.exclude_if or self.require
            self.reason = (f"{match.describe()} on {{date}}" if self.exclude_if is not None
                           else f"no {match.describe()}")

    @property
    def match(self) -> EventMatch:
        return self.exclude_if if self.exclude_if is not None else self.require  # type: ignore[return-value]


@dataclass
class ReasonCode:
    """A stable, documented reason an explanation is read in: which attributed events it names, in a sentence.

    An event matches when its type is ``event_type`` (and its item one of ``items``, when given), it lies at
    most ``within_days`` before the cut-off (when given) and, when ``after`` is given, an event of type
    ``after`` precedes it by at most ``after_within_days`` days.
    """

    code: str  # e.g. FEE_AFTER_COMPLAINT
    event_type: str
    sentence: str  # plain words for a case worker, e.g. "a fee charged within two weeks of a complaint"
    items: list[str] = field(default_factory=list)
    within_days: float | None = None
    after: str | None = None
    after_within_days: float | None = None


@dataclass
class OutcomeSpec:
    """What the dataset says about one outcome: who is eligible for it and the reason codes it is explained in."""

    description: str = ""
    eligibility: list[EligibilityRule] = field(default_factory=list)
    reasons: list[ReasonCode] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.eligibility = [
            _from_mapping(EligibilityRule, rule, f"eligibility rule {i}") for i, rule in enumerate(self.eligibility)
        ]
        self.reasons = [_from_mapping(ReasonCode, code, f"reason code {i}") for i, code in enumerate(self.reasons)]
        names = [rule.name for rule in self.eligibility]
        codes = [code.code for code in self.reasons]
        for label, values in (("eligibility rule names", names), ("reason codes", codes)):
            repeated = sorted({v for v in values if values.count(v) > 1})
            if repeated:
                raise SchemaError(f"{label} {repeated} repeat; each must be unique within an outcome")


@dataclass
class DatasetConfig:
    """Which fields exist in a dataset's canonical events and which behaviour type carries which.

    ``behaviours`` maps an event type to the categorical and numeric fields it carries, e.g.
    ``{"card_payment": {"categorical": ["item", "channel"], "numeric": ["amount"]}}``. A type that is
    not listed carries every declared field (the default for simple single-behaviour data).
    """

    name: str  # dataset name: names MLflow experiments and registered models
    categorical_fields: list[str] = field(default_factory=lambda: ["item", "channel"])  # string fields
    numeric_fields: list[str] = field(default_factory=lambda: ["amount"])  # float fields
    behaviours: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # type -> {categorical, numeric}
    description: str = ""
    outcomes: dict[str, OutcomeSpec] = field(default_factory=dict)  # outcome name -> eligibility, reason codes

    def __post_init__(self) -> None:
        outcomes = {}
        for outcome, spec in (self.outcomes or {}).items():
            try:
                outcomes[outcome] = _from_mapping(OutcomeSpec, spec, f"outcome {outcome!r}")
            except SchemaError as error:
                raise SchemaError(f"dataset {self.name!r}, outcome {outcome!r}: {error}") from error
        self.outcomes = outcomes
        overlap = set(self.categorical_fields) & set(self.numeric_fields)
        if overlap:
            raise SchemaError(f"dataset {self.name!r}: fields {sorted(overlap)} declared both categorical and numeric")
        reserved = {CUSTOMER_ID, TIMESTAMP, EVENT_TYPE, EVENT_ID}
        clash = reserved & (set(self.categorical_fields) | set(self.numeric_fields))
        if clash:
            raise SchemaError(f"dataset {self.name!r}: {sorted(clash)} are reserved column names, not extra fields")
        for event_type, spec in self.behaviours.items():
            unknown_keys = set(spec) - {"categorical", "numeric"}
            if unknown_keys:
                raise SchemaError(
                    f"dataset {self.name!r}, behaviour {event_type!r}: unknown keys {sorted(unknown_keys)}; "
                    "expected 'categorical' and/or 'numeric'"
                )
            for kind, declared in (("categorical", self.categorical_fields), ("numeric", self.numeric_fields)):
                missing = [f for f in spec.get(kind, []) if f not in declared]
                if missing:
                    raise SchemaError(
                        f"dataset {self.name!r}, behaviour {event_type!r}: {kind} fields {missing} are not declared "
                        f"in {kind}_fields {declared}"
                    )

    def fields_of(self, event_type: str) -> tuple[list[str], list[str]]:
        """The (categorical, numeric) fields that ``event_type`` carries."""
        spec = self.behaviours.get(event_type)
        if spec is None:
            return list(self.categorical_fields), list(self.numeric_fields)
        return list(spec.get("categorical", [])), list(spec.get("numeric", []))

    def arrow_schema(self) -> pa.Schema:
        """The Arrow schema of canonical event Parquet files for this dataset."""
        columns = [
            pa.field(CUSTOMER_ID, pa.string(), nullable=False),
            pa.field(TIMESTAMP, TIMESTAMP_TYPE, nullable=False),
            pa.field(EVENT_TYPE, pa.string(), nullable=False),
            pa.field(EVENT_ID, pa.string()),
        ]
        columns += [pa.field(name, pa.string()) for name in self.categorical_fields]
        columns += [pa.field(name, pa.float64()) for name in self.numeric_fields]
        return pa.schema(columns)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if not data["outcomes"]:
            del data["outcomes"]  # configs without outcome rules keep the form (and the hashes) they had
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> DatasetConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise SchemaError(f"{source}: unknown dataset config keys {sorted(unknown)}; expected some of {sorted(known)}")
        if "name" not in data:
            raise SchemaError(f"{source}: dataset config needs a 'name'")
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> DatasetConfig:
        with open(path) as handle:
            data = yaml.safe_load(handle) or {}
        return cls.from_dict(data.get("dataset", data), source=str(path))

    def save(self, path: str | Path) -> None:
        with open(path, "w") as handle:
            yaml.safe_dump(self.to_dict(), handle, sort_keys=False)


def conform_table(table: pa.Table, config: DatasetConfig, source: str = "<table>") -> pa.Table:
    """Return ``table`` with exactly the canonical columns of ``config``, in order, with canonical types.

    Missing optional columns are added as nulls; a missing required column or a column whose type cannot
    be cast raises :class:`SchemaError` naming the source and the column.
    """
    schema = config.arrow_schema()
    arrays = []
    for target in schema:
        if target.name not in table.column_names:
            if target.name in REQUIRED_COLUMNS:
                raise SchemaError(
                    f"{source}: required column {target.name!r} is missing; columns present: {table.column_names}"
                )
            arrays.append(pa.nulls(table.num_rows, target.type))
            continue
        column = table.column(target.name)
        if column.type != target.type:
            try:
                column = column.cast(target.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
                raise SchemaError(
                    f"{source}: column {target.name!r} has type {column.type}, expected {target.type}: {error}"
                ) from error
        arrays.append(column)
    return pa.Table.from_arrays(arrays, schema=schema)

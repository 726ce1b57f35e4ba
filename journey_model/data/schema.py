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
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
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

    def __post_init__(self) -> None:
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
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> DatasetConfig:
        known = {"name", "categorical_fields", "numeric_fields", "behaviours", "description"}
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

"""The ingest mapping file: loading, checking and the typed objects it becomes.

A *mapping* (YAML) says how one source layout becomes the canonical schema of :mod:`journey_model.data.schema`:
how the files are read (``source``), how timestamps are parsed (``timestamp``), which source column fills
which canonical field (``columns``, with value maps, signs and scales), how the event type is built
(``event_type``: a column or a template with a value map), or, for ``kind: labels``, where a labels table
finds its customer, cut-off and targets (``labels``). Every key is described, with a full example, in
``docs/mapping-format.md``; the ready mappings (``berka``, ``berka_loans``, ``taobao``) live in
``journey_model/data/mappings/`` and are picked by name (:func:`resolve_mapping`).

Every mistake is an :class:`IngestError` naming the mapping file and the key, raised before any data is read.
"""

from __future__ import annotations

import dataclasses
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from journey_model.data.schema import CUSTOMER_ID, EVENT_ID, EVENT_TYPE, TIMESTAMP, DatasetConfig, SchemaError
from journey_model.data.validation import TimestampSpec, ValueMap

BUILTIN_MAPPINGS_DIR = Path(__file__).resolve().parent / "mappings"
CUTOFF = "cutoff"  # the cut-off column of a labels table


# Defined here, in the lowest of the ingest modules, so that the mapping parser, the readers and the job all
# raise the one class callers catch.
class IngestError(ValueError):
    """A fatal ingest problem (bad mapping, unreadable file, missing column), or in strict mode a bad row."""


@dataclass
class SourceSpec:
    """How the source files are read."""

    format: str | None = None  # csv | parquet | jsonl; None = from each file's extension
    delimiter: str | None = None  # CSV field separator; None = "," ("\t" for .tsv files)
    quote_char: str | None = '"'  # CSV quote character; None = no quoting
    escape_char: str | None = None  # CSV escape character; None = none (quotes are doubled)
    encoding: str = "utf-8"  # text encoding of CSV / JSON Lines files
    header: bool = True  # CSV: the first line (after skip_rows) holds the column names
    column_names: list[str] | None = None  # CSV: column names to use (replacing the header when header=True)
    skip_rows: int = 0  # CSV: lines before the header to skip
    null_values: list[str] = field(default_factory=lambda: [""])  # text meaning "no value", after strip
    strip: bool = True  # trim surrounding whitespace from text values

    def __post_init__(self) -> None:
        if self.format is not None and self.format not in ("csv", "parquet", "jsonl"):
            raise ValueError(f"format {self.format!r} is not one of csv, parquet, jsonl")
        for name in ("delimiter", "quote_char", "escape_char"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or len(value) != 1):
                raise ValueError(f"{name} must be a single character, got {value!r}")
        if not self.header and not self.column_names:
            raise ValueError("header: false needs column_names")
        if self.skip_rows < 0:
            raise ValueError(f"skip_rows must be >= 0, got {self.skip_rows}")
        self.null_values = [str(value) for value in self.null_values]
        "".encode(self.encoding)  # raises LookupError for an unknown encoding


@dataclass
class ColumnSpec:
    """One canonical field filled from one source column."""

    target: str  # canonical field name (customer_id, ts, event_id, or a declared dataset field)
    column: str  # source column name
    values: ValueMap | None = None  # categorical only: source value -> canonical value
    negate_when: dict[str, list[str]] = field(default_factory=dict)  # numeric only: column -> values
    scale: float = 1.0  # numeric only: multiplier applied after parsing


@dataclass
class EventTypeSpec:
    """How the event type is built from one column or a template over several."""

    columns: list[str]  # source columns read, in template order
    template: str | None = None  # e.g. "{type}|{operation}"; None = the single column as it is
    values: ValueMap | None = None  # rendered value -> readable event type
    unmapped: str = "keep"  # keep | reject: what happens to values the map does not cover


@dataclass
class TargetSpec:
    """One target column of a labels table."""

    name: str  # output column name (e.g. "default")
    column: str  # source column
    positive: list[str] | None = None  # values meaning 1.0; None = the column holds 0 / 1
    negative: list[str] | None = None  # values meaning 0.0; None = every non-positive value


@dataclass
class LabelsSpec:
    """Where a labels table finds its customer, cut-off and targets."""

    customer_id: str  # source column of the customer id
    cutoff: str  # source column of the cut-off instant (read with the mapping's timestamp spec)
    targets: list[TargetSpec]  # one or more targets


@dataclass
class IngestMapping:
    """A parsed mapping file; docs/mapping-format.md describes the YAML."""

    kind: str  # events | labels
    source: SourceSpec
    timestamp: TimestampSpec
    dataset: DatasetConfig | None = None  # events only
    columns: dict[str, ColumnSpec] = field(default_factory=dict)  # events only: target -> spec
    event_type: EventTypeSpec | None = None  # events only
    labels: LabelsSpec | None = None  # labels only
    path: str = "<mapping>"  # where the mapping came from (for messages)
    pseudonymise: list[str] = field(default_factory=list)  # canonical fields written as keyed pseudonyms

    @classmethod
    def load(cls, path: str | Path) -> IngestMapping:
        path = Path(path)
        try:
            with open(path, encoding="utf-8") as handle:
                data = yaml.safe_load(handle)
        except OSError as error:
            raise IngestError(f"cannot read mapping {path}: {error}") from error
        except yaml.YAMLError as error:
            raise IngestError(f"{path}: not valid YAML: {error}") from error
        if not isinstance(data, dict):
            raise IngestError(f"{path}: a mapping must be a YAML dictionary, got {type(data).__name__}")
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<mapping>") -> IngestMapping:
        _check_keys(data, {"kind", "description", "dataset", "source", "timestamp", "columns", "event_type",
                           "labels", "pseudonymise"}, source)
        kind = data.get("kind", "events")
        if kind not in ("events", "labels"):
            raise IngestError(f"{source}: kind {kind!r} is not 'events' or 'labels'")
        source_spec = _build(SourceSpec, data.get("source") or {}, f"{source}: source")
        timestamp = _build(TimestampSpec, data.get("timestamp") or {}, f"{source}: timestamp")
        if kind == "labels":
            mapping = cls(kind, source_spec, timestamp, labels=_labels_section(data, source), path=source)
            mapping.pseudonymise = _pseudonymised_fields(data.get("pseudonymise"), mapping, source)
            return mapping
        if "labels" in data:
            raise IngestError(f"{source}: a labels section needs kind: labels")
        dataset = _dataset_section(data, source)
        columns_data = dict(data.get("columns") or {})
        event_type_data = _pop_event_type(data, columns_data, source)
        columns = _parse_columns(columns_data, dataset, source)
        mapping = cls(kind, source_spec, timestamp, dataset=dataset, columns=columns,
                      event_type=_parse_event_type(event_type_data, source), path=source)
        mapping.pseudonymise = _pseudonymised_fields(data.get("pseudonymise"), mapping, source)
        return mapping

    def pseudonymised_columns(self, fields: list[str]) -> dict[str, str]:
        """Source column -> canonical field for each of ``fields`` (the fields to write as pseudonyms)."""
        if self.kind == "labels":
            assert self.labels is not None
            return {self.labels.customer_id: CUSTOMER_ID} if CUSTOMER_ID in fields else {}
        return {self.columns[name].column: name for name in fields if name in self.columns}

    def source_columns(self) -> dict[str, str]:
        """Every source column the mapping reads -> the canonical field it feeds (for messages)."""
        roles: dict[str, str] = {}
        if self.kind == "labels":
            assert self.labels is not None
            roles[self.labels.customer_id] = CUSTOMER_ID
            roles.setdefault(self.labels.cutoff, CUTOFF)
            for target in self.labels.targets:
                roles.setdefault(target.column, target.name)
            return roles
        assert self.event_type is not None
        for spec in self.columns.values():
            roles.setdefault(spec.column, spec.target)
        for column in self.event_type.columns:
            roles.setdefault(column, EVENT_TYPE)
        for spec in self.columns.values():
            for column in spec.negate_when:
                roles.setdefault(column, f"sign of {spec.target}")
        return roles

    def key_columns(self) -> list[str]:
        """Source columns without which no row can be valid (customer, time, a single event-type column)."""
        if self.kind == "labels":
            assert self.labels is not None
            return [self.labels.customer_id, self.labels.cutoff]
        assert self.event_type is not None
        keys = [self.columns[CUSTOMER_ID].column, self.columns[TIMESTAMP].column]
        if self.event_type.template is None:
            keys.append(self.event_type.columns[0])
        return keys



def _pseudonymised_fields(spec: Any, mapping: IngestMapping, source: str) -> list[str]:
    """The ``pseudonymise:`` list: canonical text fields whose source column feeds nothing else."""
    if spec is None:
        return []
    where = f"{source}: pseudonymise"
    if not isinstance(spec, list) or not all(isinstance(name, str) for name in spec):
        raise IngestError(f"{where}: expected a list of canonical field names, e.g. [customer_id, note]")
    if mapping.kind == "labels":
        if set(spec) - {CUSTOMER_ID}:
            raise IngestError(f"{where}: a labels table can pseudonymise customer_id only, got {spec}")
        return list(spec)
    assert mapping.dataset is not None and mapping.event_type is not None
    text_fields = [CUSTOMER_ID, EVENT_ID, *mapping.dataset.categorical_fields]
    for name in spec:
        if name not in text_fields:
            raise IngestError(f"{where}: {name!r} is not a text field of the dataset; pseudonyms replace "
                              f"text: one of {text_fields}")
        if name not in mapping.columns:
            raise IngestError(f"{where}: {name!r} has no source column in columns")
        column = mapping.columns[name]
        if column.values is not None:
            raise IngestError(f"{where}: {name!r} has a value map; a mapped value is not free text")
        others = [spec_.target for spec_ in mapping.columns.values() if spec_.column == column.column
                  and spec_.target not in spec]
        if column.column in mapping.event_type.columns:
            others.append(EVENT_TYPE)
        if others:
            raise IngestError(f"{where}: source column {column.column!r} of {name!r} also feeds {others}, which "
                              "would keep it in clear")
    return list(dict.fromkeys(spec))


def _check_keys(data: Any, allowed: set[str], where: str) -> None:
    if not isinstance(data, dict):
        raise IngestError(f"{where}: expected a dictionary, got {data!r}")
    unknown = sorted(set(map(str, data)) - allowed)
    if unknown:
        raise IngestError(f"{where}: unknown keys {unknown}; expected some of {sorted(allowed)}")


def _build(cls: type, data: Any, where: str) -> Any:
    _check_keys(data, {f.name for f in dataclasses.fields(cls)}, where)
    try:
        return cls(**data)
    except (TypeError, ValueError, LookupError) as error:
        raise IngestError(f"{where}: {error}") from error


def _value_map(values: Any, where: str) -> ValueMap:
    if not isinstance(values, dict) or not values:
        raise IngestError(f"{where}: values must be a non-empty dictionary of source value -> name")
    try:
        return ValueMap.from_mapping(values, where)
    except ValueError as error:
        raise IngestError(str(error)) from error


def _labels_section(data: dict[str, Any], source: str) -> LabelsSpec:
    extra = sorted({"dataset", "columns", "event_type"} & set(data))
    if extra:
        raise IngestError(f"{source}: {extra} do not apply to kind: labels (use the labels section)")
    if "labels" not in data:
        raise IngestError(f"{source}: kind: labels needs a labels section (customer_id, cutoff, targets)")
    return _parse_labels(data["labels"], source)


def _dataset_section(data: dict[str, Any], source: str) -> DatasetConfig:
    if "dataset" not in data:
        raise IngestError(f"{source}: kind: events needs a dataset section (name, categorical_fields, ...)")
    try:
        return DatasetConfig.from_dict(dict(data["dataset"]), source=f"{source}: dataset")
    except (SchemaError, TypeError) as error:
        raise IngestError(str(error)) from error


def _pop_event_type(data: dict[str, Any], columns_data: dict[str, Any], source: str) -> Any:
    """The event-type spec, from its own section or from ``columns.event_type`` (removed from ``columns_data``)."""
    event_type_data = data.get("event_type")
    if EVENT_TYPE in columns_data:
        if event_type_data is not None:
            raise IngestError(f"{source}: event_type is given both in columns and as a section; keep one")
        event_type_data = columns_data.pop(EVENT_TYPE)
    if event_type_data is None:
        raise IngestError(f"{source}: no event_type: name a column or give a template")
    return event_type_data


def _parse_columns(columns_data: dict[str, Any], dataset: DatasetConfig, source: str) -> dict[str, ColumnSpec]:
    columns = {str(target): _parse_column(str(target), spec, dataset, source)
               for target, spec in columns_data.items()}
    for required in (CUSTOMER_ID, TIMESTAMP):
        if required not in columns:
            raise IngestError(f"{source}: columns needs {required!r} (the source column it comes from)")
    return columns


def _parse_column(target: str, spec: Any, dataset: DatasetConfig, source: str) -> ColumnSpec:
    where = f"{source}: columns.{target}"
    allowed_targets = [CUSTOMER_ID, TIMESTAMP, EVENT_ID, *dataset.categorical_fields, *dataset.numeric_fields]
    if target not in allowed_targets:
        raise IngestError(
            f"{where}: {target!r} is not a canonical field of dataset {dataset.name!r}; expected one of "
            f"{allowed_targets} (declare extra fields in dataset.categorical_fields / numeric_fields)"
        )
    if isinstance(spec, str | int):
        return ColumnSpec(target, str(spec))
    _check_keys(spec, {"column", "values", "negate_when", "scale"}, where)
    if "column" not in spec:
        raise IngestError(f"{where}: the long form needs column: <source column>")
    numeric = target in dataset.numeric_fields
    categorical = target in dataset.categorical_fields or target in (CUSTOMER_ID, EVENT_ID)
    column = ColumnSpec(target, str(spec["column"]))
    if "values" in spec:
        if not categorical:
            raise IngestError(f"{where}: values maps apply to text fields, not to {target!r}")
        column.values = _value_map(spec["values"], f"{where}.values")
    if "negate_when" in spec or "scale" in spec:
        if not numeric:
            raise IngestError(f"{where}: negate_when / scale apply to numeric fields only")
        negate = spec.get("negate_when") or {}
        if not isinstance(negate, dict) or not all(isinstance(v, list) for v in negate.values()):
            raise IngestError(f"{where}.negate_when: expected {{source column: [values]}}, got {negate!r}")
        column.negate_when = {str(k): [str(v) for v in values] for k, values in negate.items()}
        try:
            column.scale = float(spec.get("scale", 1.0))
        except (TypeError, ValueError) as error:
            raise IngestError(f"{where}.scale: expected a number, got {spec.get('scale')!r}") from error
    return column


def _parse_event_type(spec: Any, source: str) -> EventTypeSpec:
    where = f"{source}: event_type"
    if isinstance(spec, str):
        return EventTypeSpec(columns=[spec])
    _check_keys(spec, {"column", "template", "values", "unmapped"}, where)
    if ("column" in spec) == ("template" in spec):
        raise IngestError(f"{where}: give exactly one of column or template")
    unmapped = spec.get("unmapped", "keep")
    if unmapped not in ("keep", "reject"):
        raise IngestError(f"{where}.unmapped: expected keep or reject, got {unmapped!r}")
    values = _value_map(spec["values"], f"{where}.values") if "values" in spec else None
    if "column" in spec:
        return EventTypeSpec(columns=[str(spec["column"])], values=values, unmapped=unmapped)
    template = str(spec["template"])
    columns = _template_columns(template, f"{where}.template")
    return EventTypeSpec(columns=columns, template=template, values=values, unmapped=unmapped)


def _template_columns(template: str, where: str) -> list[str]:
    """The source columns named in braces in ``template``, in order of first use."""
    columns: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as error:
        raise IngestError(f"{where} {template!r}: {error}") from error
    for _, name, format_spec, conversion in parsed:
        if name is None:
            continue
        if not name or format_spec or conversion:
            raise IngestError(f"{where} {template!r}: use plain {{column}} fields, got {{{name}...}}")
        if name not in columns:
            columns.append(name)
    if not columns:
        raise IngestError(f"{where} {template!r} names no column; write columns in braces: {{type}}")
    return columns


def _parse_labels(spec: Any, source: str) -> LabelsSpec:
    where = f"{source}: labels"
    _check_keys(spec, {"customer_id", "cutoff", "targets"}, where)
    for key in ("customer_id", "cutoff", "targets"):
        if key not in spec:
            raise IngestError(f"{where}: missing {key!r}")
    targets_data = spec["targets"]
    if not isinstance(targets_data, dict) or not targets_data:
        raise IngestError(f"{where}.targets: expected {{name: {{column, positive, negative}}}}")
    targets = []
    for name, target in targets_data.items():
        if str(name) in (CUSTOMER_ID, CUTOFF):
            raise IngestError(f"{where}.targets: {name!r} is a reserved column name")
        if isinstance(target, str):
            target = {"column": target}
        _check_keys(target, {"column", "positive", "negative"}, f"{where}.targets.{name}")
        if "column" not in target:
            raise IngestError(f"{where}.targets.{name}: missing column")
        lists = {}
        for key in ("positive", "negative"):
            values = target.get(key)
            if values is not None and not isinstance(values, list):
                values = [values]
            lists[key] = None if values is None else [str(v) for v in values]
        if lists["negative"] is not None and lists["positive"] is None:
            raise IngestError(f"{where}.targets.{name}: negative needs positive")
        targets.append(TargetSpec(str(name), str(target["column"]), lists["positive"], lists["negative"]))
    return LabelsSpec(str(spec["customer_id"]), str(spec["cutoff"]), targets)


def builtin_mappings() -> dict[str, Path]:
    """The ingest mappings shipped in journey_model/data/mappings (YAML files with a columns or labels section)."""
    found: dict[str, Path] = {}
    for path in sorted(BUILTIN_MAPPINGS_DIR.glob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(data, dict) and ("columns" in data or "labels" in data):
            found[path.stem] = path
    return found


def resolve_mapping(mapping: str | Path) -> Path:
    """A mapping file path, or the name of a built-in mapping (``berka``, ``berka_loans``, ``taobao``)."""
    path = Path(mapping)
    if path.is_file():
        return path
    builtins = builtin_mappings()
    if path.suffix == "" and path.parent == Path(".") and path.name in builtins:
        return builtins[path.name]
    raise IngestError(
        f"mapping {str(mapping)!r} is neither a file nor a built-in mapping; built-ins: {sorted(builtins)}"
    )

"""``journey ingest``: raw CSV / Parquet / JSON Lines event files in, canonical event Parquet out.

A *mapping* (YAML) says how one source layout becomes the canonical schema of :mod:`journey_model.data.schema`.
:func:`ingest` streams the inputs chunk by chunk (memory stays flat however large the files are), validates
every row, writes the good rows and records every bad one with its reason: nothing is dropped silently,
``rows_read == rows_written + rows_rejected`` always.

Mapping format
--------------
Events (``kind: events``, the default)::

    kind: events
    dataset:                        # a DatasetConfig, saved as DIR/dataset.yaml
      name: berka
      categorical_fields: [item, partner_bank]
      numeric_fields: [amount, balance]
      behaviours: {cash_deposit: {categorical: [], numeric: [amount, balance]}, ...}
    source:                         # every key optional
      format: csv                   # csv | parquet | jsonl; default from the extension (.csv .tsv .txt .asc,
                                    #   .parquet .pq, .jsonl .ndjson .json; a .gz/.bz2/.zst suffix is read through)
      delimiter: ";"                # CSV field separator (default ",", tab for .tsv)
      quote_char: '"'               # CSV quote character, null for none
      escape_char: null             # CSV escape character
      encoding: utf-8               # text encoding of CSV / JSON Lines (e.g. cp1250 for Czech exports)
      header: true                  # CSV: the first line (after skip_rows) names the columns
      column_names: null            # CSV: names to use (with header: true they replace the header's)
      skip_rows: 0                  # CSV: lines to skip before the header
      null_values: [""]             # text that means "no value" (compared after strip)
      strip: true                   # trim surrounding whitespace of every text value
    timestamp:
      format: "%y%m%d"              # iso (default) | unix_s | unix_ms | unix_us | unix_ns | a strptime pattern
      timezone: Europe/Prague       # zone of naive wall-clock values; converted to UTC (default UTC)
      valid_from: "1900-01-01"      # plausible window; outside -> rejected as timestamp_out_of_range
      valid_until: "2100-01-01"
    columns:                        # canonical field <- source column
      customer_id: account_id       # required
      ts: date                      # required
      event_id: trans_id            # optional, a stable event id
      item:                         # long form: a categorical field with a value map
        column: k_symbol
        values: {POJISTNE: insurance, "SANKC. UROK": penalty_interest}   # unmapped values kept as they are
      amount:                       # long form: a numeric field, negated on some rows and scaled
        column: amount
        negate_when: {type: [VYDAJ, VYBER]}   # source column -> values that make the amount negative
        scale: 1.0                  # multiply (e.g. 0.01 for cents)
      balance: balance              # every extra target must be declared in dataset.*_fields
    event_type:                     # a column name, or:
      template: "{type}|{operation}|{k_symbol}"   # source columns in braces; null renders as ""
      values:                       # rendered value -> event type; exact keys first, then globs in order
        "*|*|SLUZBY": statement_fee
        "PRIJEM|VKLAD|*": cash_deposit
      unmapped: keep                # keep (the rendered value becomes the type; listed in the warnings)
                                    # | reject (row rejected as unmapped_event_type)

``event_type: behavior_type`` (or ``columns: {event_type: behavior_type}``) takes a column as it is.
Quote value-map keys YAML would read as booleans or numbers (``"NO"``, ``"01"``).

Labels (``kind: labels``) — a table of outcomes per (customer, cut-off), written to DIR/labels.parquet::

    kind: labels
    source: {delimiter: ";"}
    timestamp: {format: "%y%m%d", timezone: Europe/Prague}    # how the cutoff column is read
    labels:
      customer_id: account_id
      cutoff: date
      targets:
        default: {column: status, positive: [B, D], negative: [A, C]}
        churned: {column: churn_flag}     # no positive list: the column holds 0 / 1

A target with ``positive`` is 1.0 for those values and 0.0 for the ``negative`` ones (for every other
value when ``negative`` is not given; with it, other values are rejected as ``bad_label``). Without
``positive`` the column must hold 0 or 1. An empty cell is null (unknown).

Output folder
-------------
* ``DIR/events/part-00000.parquet`` … one part per chunk of ``chunk_rows`` source rows (its valid rows),
  canonical schema, source order (no sorting; an all-invalid input still gets one empty part);
  ``DIR/dataset.yaml``. For labels: ``DIR/labels.parquet``, one file.
* ``DIR/rejects/part-*.parquet`` (only when rows were rejected): source file, 1-based data row number
  (JSON Lines: line number), column, target, reason, the offending value, what was expected and the whole
  raw row as JSON text. Reasons are listed in :mod:`journey_model.data.validation`.
* ``DIR/ingest_report.json`` is written last; its presence marks a complete ingest. Every file appears
  atomically (temporary name, then ``os.replace``).

Re-runs: an ``out_dir`` that holds a complete ingest is refused (remove it or choose another folder); the
partial output of an interrupted run (no report) is removed first — only the names listed above, never
anything else in the folder.

Row numbers count data records after the header (JSON Lines: physical line numbers, blank lines
included). A CSV line that cannot be split into the header's fields is rejected as ``malformed_row`` with
its physical line number minus the header lines, which equals its record number unless the file has
blank lines (skipped, not counted as rows).
``strict=True`` raises :class:`IngestError` at the first invalid row instead of rejecting it.
"""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import io
import json
import shutil
import string
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import yaml
from tqdm import tqdm

from journey_model.core.files import StagedFile, atomic_path, remove_stale_temporaries, write_text_atomic
from journey_model.core.settings import option
from journey_model.data.schema import (
    CUSTOMER_ID,
    EVENT_ID,
    EVENT_TYPE,
    TIMESTAMP,
    TIMESTAMP_TYPE,
    DatasetConfig,
    SchemaError,
    conform_table,
)
from journey_model.data.validation import (
    RowChecks,
    TimestampSpec,
    ValueMap,
    clean_strings,
    first_reject_message,
    is_null,
    malformed_rejects,
    parse_numbers,
    parse_timestamps,
)

BUILTIN_MAPPINGS_DIR = Path(__file__).resolve().parent / "mappings"
EVENTS_DIR = "events"
REJECTS_DIR = "rejects"
DATASET_FILE = "dataset.yaml"
LABELS_FILE = "labels.parquet"
REPORT_FILE = "ingest_report.json"
CUTOFF = "cutoff"

_FORMAT_BY_EXTENSION = {
    ".csv": "csv", ".tsv": "csv", ".txt": "csv", ".asc": "csv",
    ".parquet": "parquet", ".pq": "parquet",
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
}
_CODEC_BY_EXTENSION = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd"}


class IngestError(ValueError):
    """A fatal ingest problem (bad mapping, unreadable file, missing column), or in strict mode a bad row."""


# --------------------------------------------------------------------------------------------- mapping


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

    def format_of(self, path: Path) -> str:
        """The format of ``path``: the declared one, else from its extension."""
        if self.format:
            return self.format
        suffix = _data_suffix(path)
        if suffix not in _FORMAT_BY_EXTENSION:
            raise IngestError(
                f"{path}: cannot tell the format from the extension {suffix!r}; set source.format to csv, "
                "parquet or jsonl in the mapping"
            )
        return _FORMAT_BY_EXTENSION[suffix]

    def delimiter_of(self, path: Path) -> str:
        if self.delimiter is not None:
            return self.delimiter
        return "\t" if _data_suffix(path) == ".tsv" else ","


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
    """A parsed mapping file; see the module docstring for the YAML format."""

    kind: str  # events | labels
    source: SourceSpec
    timestamp: TimestampSpec
    dataset: DatasetConfig | None = None  # events only
    columns: dict[str, ColumnSpec] = field(default_factory=dict)  # events only: target -> spec
    event_type: EventTypeSpec | None = None  # events only
    labels: LabelsSpec | None = None  # labels only
    path: str = "<mapping>"  # where the mapping came from (for messages)

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
                           "labels"}, source)
        kind = data.get("kind", "events")
        if kind not in ("events", "labels"):
            raise IngestError(f"{source}: kind {kind!r} is not 'events' or 'labels'")
        source_spec = _build(SourceSpec, data.get("source") or {}, f"{source}: source")
        timestamp = _build(TimestampSpec, data.get("timestamp") or {}, f"{source}: timestamp")
        if kind == "labels":
            extra = sorted({"dataset", "columns", "event_type"} & set(data))
            if extra:
                raise IngestError(f"{source}: {extra} do not apply to kind: labels (use the labels section)")
            if "labels" not in data:
                raise IngestError(f"{source}: kind: labels needs a labels section (customer_id, cutoff, targets)")
            return cls(kind, source_spec, timestamp, labels=_parse_labels(data["labels"], source), path=source)
        if "labels" in data:
            raise IngestError(f"{source}: a labels section needs kind: labels")
        if "dataset" not in data:
            raise IngestError(f"{source}: kind: events needs a dataset section (name, categorical_fields, ...)")
        try:
            dataset = DatasetConfig.from_dict(dict(data["dataset"]), source=f"{source}: dataset")
        except (SchemaError, TypeError) as error:
            raise IngestError(str(error)) from error
        columns_data = dict(data.get("columns") or {})
        event_type_data = data.get("event_type")
        if EVENT_TYPE in columns_data:
            if event_type_data is not None:
                raise IngestError(f"{source}: event_type is given both in columns and as a section; keep one")
            event_type_data = columns_data.pop(EVENT_TYPE)
        if event_type_data is None:
            raise IngestError(f"{source}: no event_type: name a column or give a template")
        columns = {str(target): _parse_column(str(target), spec, dataset, source)
                   for target, spec in columns_data.items()}
        for required in (CUSTOMER_ID, TIMESTAMP):
            if required not in columns:
                raise IngestError(f"{source}: columns needs {required!r} (the source column it comes from)")
        return cls(kind, source_spec, timestamp, dataset=dataset, columns=columns,
                   event_type=_parse_event_type(event_type_data, source), path=source)

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
    columns: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as error:
        raise IngestError(f"{where}.template {template!r}: {error}") from error
    for _, name, format_spec, conversion in parsed:
        if name is None:
            continue
        if not name or format_spec or conversion:
            raise IngestError(f"{where}.template {template!r}: use plain {{column}} fields, got {{{name}...}}")
        if name not in columns:
            columns.append(name)
    if not columns:
        raise IngestError(f"{where}.template {template!r} names no column; write columns in braces: {{type}}")
    return EventTypeSpec(columns=columns, template=template, values=values, unmapped=unmapped)


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


# --------------------------------------------------------------------------------------------- reading


@dataclass
class SourceChunk:
    """Consecutive rows of one source file."""

    table: pa.Table  # source columns (text for CSV / JSON Lines, native types for Parquet)
    rows: np.ndarray  # int64 1-based data row number of each table row
    malformed: list[tuple[int, str, str]] = field(default_factory=list)  # (row, raw text, expected)


def _data_suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _CODEC_BY_EXTENSION:
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def _codec(path: Path) -> str | None:
    return _CODEC_BY_EXTENSION.get(path.suffix.lower())


def _require_columns(display: str, present: list[str], needed: dict[str, str], delimiter: str | None = None) -> None:
    missing = [column for column in needed if column not in present]
    if not missing:
        return
    described = ", ".join(f"{column!r} (mapped to {needed[column]})" for column in missing)
    hint = ""
    if delimiter is not None and len(present) == 1:
        hint = f"; only one column was found — is source.delimiter {delimiter!r} right for this file?"
    raise IngestError(f"{display}: required column {described} is missing; columns present: {present}{hint}")


def _read_csv(path: Path, display: str, spec: SourceSpec, needed: dict[str, str],
              on_bytes: Callable[[int], None]) -> Iterator[SourceChunk]:
    delimiter = spec.delimiter_of(path)
    header_lines = spec.skip_rows + (1 if spec.header else 0)
    skip = spec.skip_rows + (1 if spec.header and spec.column_names else 0)
    invalid: list[tuple[int, str, int, int]] = []

    def on_invalid_row(row: Any) -> str:
        invalid.append((row.number, row.text, row.expected_columns, row.actual_columns))
        return "skip"

    def open_reader(column_types: dict[str, pa.DataType] | None) -> tuple[pa.NativeFile, Any]:
        raw = pa.OSFile(str(path), "rb")
        stream = pa.CompressedInputStream(raw, _codec(path)) if _codec(path) else raw
        reader = pa_csv.open_csv(
            stream,
            read_options=pa_csv.ReadOptions(use_threads=False, skip_rows=skip, encoding=spec.encoding,
                                            column_names=spec.column_names),
            parse_options=pa_csv.ParseOptions(delimiter=delimiter, quote_char=spec.quote_char or False,
                                              escape_char=spec.escape_char or False,
                                              invalid_row_handler=on_invalid_row),
            convert_options=pa_csv.ConvertOptions(column_types=column_types or {}, strings_can_be_null=False),
        )
        return raw, reader

    try:
        raw, probe = open_reader(None)
        names = probe.schema.names
        probe.close()
        raw.close()
        invalid.clear()
        _require_columns(display, names, needed, delimiter)
        raw, reader = open_reader(dict.fromkeys(names, pa.string()))
    except (pa.ArrowInvalid, UnicodeDecodeError) as error:
        raise IngestError(f"{display}: cannot read the CSV header: {_arrow_hint(error)}") from error

    next_row = 1
    pending: list[int] = []
    texts: dict[int, str] = {}
    expected: dict[int, str] = {}
    try:
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            except (pa.ArrowInvalid, UnicodeDecodeError) as error:
                raise IngestError(f"{display}: cannot read CSV near data row {next_row}: {_arrow_hint(error)}") \
                    from error
            for line, text, want, got in invalid:
                row = line - header_lines if line > 0 else next_row
                pending.append(row)
                texts[row] = text
                expected[row] = f"{want} fields separated by {delimiter!r}, found {got}"
            invalid.clear()
            pending.sort()
            numbers = np.arange(next_row, next_row + batch.num_rows, dtype=np.int64)
            placed: list[tuple[int, str, str]] = []
            while pending and batch.num_rows and pending[0] <= numbers[-1]:
                row = pending.pop(0)
                numbers[numbers >= row] += 1
                placed.append((row, texts.pop(row), expected.pop(row)))
            if batch.num_rows:
                next_row = int(numbers[-1]) + 1
            on_bytes(raw.tell())
            yield SourceChunk(pa.Table.from_batches([batch]), numbers, placed)
        for line, text, want, got in invalid:
            row = line - header_lines if line > 0 else next_row
            pending.append(row)
            texts[row] = text
            expected[row] = f"{want} fields separated by {delimiter!r}, found {got}"
        if pending:
            yield SourceChunk(pa.table({}), np.zeros(0, np.int64),
                              [(row, texts[row], expected[row]) for row in sorted(pending)])
    finally:
        reader.close()
        raw.close()


def _arrow_hint(error: Exception) -> str:
    message = str(error)
    if "UTF8" in message or "utf-8" in message.lower() or isinstance(error, UnicodeDecodeError):
        message += " (if the file is not UTF-8, set source.encoding in the mapping, e.g. cp1250)"
    return message


def _read_parquet(path: Path, display: str, needed: dict[str, str], chunk_rows: int,
                  on_bytes: Callable[[int], None]) -> Iterator[SourceChunk]:
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise IngestError(f"{display}: not a readable Parquet file: {error}") from error
    names = parquet.schema_arrow.names
    _require_columns(display, names, needed)
    total_rows = max(parquet.metadata.num_rows, 1)
    size = path.stat().st_size
    next_row = 1
    with parquet:
        for batch in parquet.iter_batches(batch_size=chunk_rows, columns=list(needed), use_threads=False):
            numbers = np.arange(next_row, next_row + batch.num_rows, dtype=np.int64)
            next_row += batch.num_rows
            on_bytes(int(size * (next_row - 1) / total_rows))
            yield SourceChunk(pa.Table.from_batches([batch]), numbers)


def _json_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _read_jsonl(path: Path, display: str, spec: SourceSpec, key_columns: dict[str, str], chunk_rows: int,
                on_bytes: Callable[[int], None], seen_columns: set[str]) -> Iterator[SourceChunk]:
    codec = _codec(path)
    raw = open(path, "rb")  # closed in the finally below
    try:
        if codec == "gzip":
            lines: io.BufferedIOBase = gzip.GzipFile(fileobj=raw)
        elif codec == "bz2":
            lines = bz2.BZ2File(raw)
        elif codec is None:
            lines = raw
        else:
            raise IngestError(f"{display}: JSON Lines files compressed with {codec} are not supported (gz, bz2 are)")
        records: list[dict[str, Any]] = []
        numbers: list[int] = []
        malformed: list[tuple[int, str, str]] = []
        first_record = True
        try:
            for line_number, line in enumerate(lines, start=1):
                try:
                    text = line.decode(spec.encoding).strip()
                except UnicodeDecodeError as error:
                    malformed.append((line_number, line.decode(spec.encoding, "replace").strip(),
                                      f"text in {spec.encoding} ({error.reason}; set source.encoding)"))
                    text = None
                if text == "":
                    continue
                if text is not None:
                    try:
                        record = json.loads(text)
                    except json.JSONDecodeError as error:
                        record = error
                    if first_record and not isinstance(record, dict) and text.startswith("["):
                        raise IngestError(
                            f"{display}: line {line_number} starts a JSON array, but ingest reads JSON Lines (one "
                            "object per line); convert it first, e.g. jq -c '.[]' file.json > file.jsonl"
                        )
                    if isinstance(record, dict):
                        if first_record:
                            _require_columns(display, list(record), key_columns)
                            first_record = False
                        records.append(record)
                        numbers.append(line_number)
                    else:
                        got = f"invalid JSON ({record})" if isinstance(record, Exception) else type(record).__name__
                        malformed.append((line_number, text, f"one JSON object per line, found {got}"))
                if len(records) + len(malformed) >= chunk_rows:
                    on_bytes(raw.tell())
                    yield _jsonl_chunk(records, numbers, malformed, seen_columns)
                    records, numbers, malformed = [], [], []
        except (OSError, EOFError) as error:
            raise IngestError(f"{display}: cannot read: {error}") from error
        if records or malformed:
            on_bytes(raw.tell())
            yield _jsonl_chunk(records, numbers, malformed, seen_columns)
    finally:
        raw.close()


def _jsonl_chunk(records: list[dict[str, Any]], numbers: list[int], malformed: list[tuple[int, str, str]],
                 seen_columns: set[str]) -> SourceChunk:
    keys: dict[str, None] = {}
    for record in records:
        keys.update(dict.fromkeys(record))
    seen_columns.update(keys)
    table = pa.table({key: pa.array([_json_text(r.get(key)) for r in records], pa.string()) for key in keys})
    if not keys:  # records without any key: keep their count, every mapped column will read as null
        table = pa.table({"_": pa.nulls(len(records), pa.string())}).drop_columns(["_"])
    return SourceChunk(table, np.asarray(numbers, dtype=np.int64), malformed)


def _rebatch(chunks: Iterable[SourceChunk], size: int) -> Iterator[SourceChunk]:
    """Regroup source chunks into chunks of exactly ``size`` rows (the last may be smaller)."""
    tables: list[pa.Table] = []
    rows: list[np.ndarray] = []
    malformed: list[tuple[int, str, str]] = []
    count = 0
    for chunk in chunks:
        if chunk.table.num_rows:
            tables.append(chunk.table)
            rows.append(chunk.rows)
            count += chunk.table.num_rows
        malformed.extend(chunk.malformed)
        while count >= size:
            table = pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]
            numbers = np.concatenate(rows)
            yield SourceChunk(table.slice(0, size), numbers[:size], malformed)
            malformed = []
            count -= size
            tables, rows = ([table.slice(size)], [numbers[size:]]) if count else ([], [])
    if count or malformed:
        table = pa.concat_tables(tables, promote_options="default") if tables else pa.table({})
        numbers = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        yield SourceChunk(table, numbers, malformed)


# --------------------------------------------------------------------------------------------- transforming


@dataclass
class _ChunkResult:
    good: pa.Table  # canonical rows to write
    rejects: pa.Table  # REJECTS_SCHEMA rows, ordered by row number
    event_types: Counter = field(default_factory=Counter)  # written rows per event type
    unmapped: Counter = field(default_factory=Counter)  # written rows per unmapped (kept) event-type value
    label_counts: dict[str, Counter] = field(default_factory=dict)  # target -> {positive, negative, unknown}


class _ChunkColumns:
    """Access to one chunk's source columns: raw, cleaned text, or a null column when absent (JSON Lines)."""

    def __init__(self, table: pa.Table, source: SourceSpec) -> None:
        self.table = table
        self.null_values = frozenset(source.null_values)
        self.strip = source.strip
        self._raw: dict[str, pa.Array] = {}
        self._clean: dict[str, pa.Array] = {}

    def raw(self, name: str) -> pa.Array:
        if name not in self._raw:
            if name in self.table.column_names:
                self._raw[name] = self.table.column(name).combine_chunks()
            else:
                self._raw[name] = pa.nulls(self.table.num_rows, pa.string())
        return self._raw[name]

    def clean(self, name: str) -> pa.Array:
        if name not in self._clean:
            self._clean[name] = clean_strings(self.raw(name), self.null_values, self.strip)
        return self._clean[name]

    def typed(self, name: str) -> pa.Array:
        """Cleaned text for text columns; Parquet's typed columns as they are."""
        raw = self.raw(name)
        return self.clean(name) if pa.types.is_string(raw.type) or pa.types.is_large_string(raw.type) else raw


def _check_customer_and_time(columns: _ChunkColumns, checks: RowChecks, customer_column: str, time_column: str,
                             time_target: str, spec: TimestampSpec) -> tuple[pa.Array, pa.Array]:
    customer = columns.clean(customer_column)
    checks.flag(is_null(customer), "missing_customer_id", customer_column, CUSTOMER_ID, columns.raw(customer_column),
                "a non-empty customer id")
    time_in = columns.typed(time_column)
    stamps, bad, out_of_range = parse_timestamps(time_in, spec)
    raw_time = columns.raw(time_column)
    checks.flag(is_null(time_in), "missing_timestamp", time_column, time_target, raw_time, spec.expected())
    checks.flag(bad, "bad_timestamp", time_column, time_target, raw_time, spec.expected())
    checks.flag(out_of_range, "timestamp_out_of_range", time_column, time_target, raw_time, spec.expected_range())
    return customer, stamps


def _render_template(template: str, parts: dict[str, pa.Array]) -> pa.Array:
    pieces: list[pa.Array | pa.Scalar] = []
    for literal, name, _, _ in string.Formatter().parse(template):
        if literal:
            pieces.append(pa.scalar(literal, pa.string()))
        if name is not None:
            pieces.append(pc.fill_null(parts[name].cast(pa.string()), ""))
    if len(pieces) == 1:
        return pieces[0]
    return pc.binary_join_element_wise(*pieces, "")


def _transform_events(chunk: SourceChunk, mapping: IngestMapping, display: str) -> _ChunkResult:
    assert mapping.dataset is not None and mapping.event_type is not None
    n = chunk.table.num_rows
    columns = _ChunkColumns(chunk.table, mapping.source)
    checks = RowChecks(n)
    customer, stamps = _check_customer_and_time(columns, checks, mapping.columns[CUSTOMER_ID].column,
                                                mapping.columns[TIMESTAMP].column, TIMESTAMP, mapping.timestamp)

    spec = mapping.event_type
    label = ", ".join(spec.columns)
    cleaned_parts = {name: columns.clean(name) for name in spec.columns}
    missing = np.logical_and.reduce([is_null(part) for part in cleaned_parts.values()])
    if spec.template is None:
        rendered, raw_rendered = cleaned_parts[spec.columns[0]], columns.raw(spec.columns[0])
    else:
        rendered = _render_template(spec.template, cleaned_parts)
        raw_rendered = _render_template(spec.template, {name: columns.raw(name) for name in spec.columns})
    checks.flag(missing, "missing_event_type", label, EVENT_TYPE, raw_rendered, f"a non-empty value in {label}")
    event_type, unmapped = rendered, np.zeros(n, dtype=bool)
    if spec.values is not None:
        event_type, unmapped = spec.values.apply(rendered)
        unmapped &= ~missing
        if spec.unmapped == "reject":
            known = [*spec.values.exact, *(pattern for pattern, _ in spec.values.patterns)]
            checks.flag(unmapped, "unmapped_event_type", label, EVENT_TYPE, rendered,
                        f"a value the mapping covers: {known[:12]}{' ...' if len(known) > 12 else ''}")

    output: dict[str, pa.Array] = {CUSTOMER_ID: customer, TIMESTAMP: stamps, EVENT_TYPE: event_type}
    for target, column in mapping.columns.items():
        if target in (CUSTOMER_ID, TIMESTAMP):
            continue
        if target in mapping.dataset.numeric_fields:
            numbers, bad = parse_numbers(columns.typed(column.column))
            checks.flag(bad, "bad_number", column.column, target, columns.raw(column.column),
                        "a decimal number such as -12.50")
            if column.negate_when:
                negate = np.zeros(n, dtype=bool)
                for source_column, values in column.negate_when.items():
                    hits = pc.is_in(columns.clean(source_column), value_set=pa.array(values, pa.string()))
                    negate |= pc.fill_null(hits, False).to_numpy(zero_copy_only=False)
                numbers = pc.if_else(pa.array(negate), pc.negate(numbers), numbers)
            if column.scale != 1.0:
                numbers = pc.multiply(numbers, column.scale)
            output[target] = numbers
        else:
            values = columns.clean(column.column)
            if column.values is not None:
                values, _ = column.values.apply(values)
            output[target] = values

    keep = ~checks.rejected
    good = pa.table(output).filter(pa.array(keep))
    try:
        good = conform_table(good, mapping.dataset, source=display)
    except SchemaError as error:
        raise IngestError(str(error)) from error
    result = _ChunkResult(good, _chunk_rejects(checks, chunk, display))
    if good.num_rows:
        counts = pc.value_counts(good.column(EVENT_TYPE)).to_pylist()
        result.event_types.update({entry["values"]: entry["counts"] for entry in counts})
    if unmapped.any():
        kept_unmapped = pa.array(rendered).filter(pa.array(unmapped & keep))
        result.unmapped.update({e["values"]: e["counts"] for e in pc.value_counts(kept_unmapped).to_pylist()})
    return result


def labels_schema(targets: list[str]) -> pa.Schema:
    """The Arrow schema of DIR/labels.parquet."""
    return pa.schema([pa.field(CUSTOMER_ID, pa.string(), nullable=False),
                      pa.field(CUTOFF, TIMESTAMP_TYPE, nullable=False),
                      *(pa.field(name, pa.float64()) for name in targets)])


def _transform_labels(chunk: SourceChunk, mapping: IngestMapping, display: str) -> _ChunkResult:
    assert mapping.labels is not None
    n = chunk.table.num_rows
    columns = _ChunkColumns(chunk.table, mapping.source)
    checks = RowChecks(n)
    customer, cutoffs = _check_customer_and_time(columns, checks, mapping.labels.customer_id,
                                                 mapping.labels.cutoff, CUTOFF, mapping.timestamp)
    output: dict[str, pa.Array] = {CUSTOMER_ID: customer, CUTOFF: cutoffs}
    for target in mapping.labels.targets:
        values = columns.clean(target.column)
        present = values.is_valid().to_numpy(zero_copy_only=False)
        if target.positive is not None:
            positive = pc.fill_null(pc.is_in(values, value_set=pa.array(target.positive, pa.string())), False)
            positive = positive.to_numpy(zero_copy_only=False)
            if target.negative is not None:
                negative = pc.fill_null(pc.is_in(values, value_set=pa.array(target.negative, pa.string())), False)
                bad = present & ~positive & ~negative.to_numpy(zero_copy_only=False)
                expected = f"one of {target.positive} (1) or {target.negative} (0); empty = unknown"
            else:
                bad = np.zeros(n, dtype=bool)
                expected = ""
            label = np.where(positive, 1.0, 0.0)
        else:
            numbers, unparsable = parse_numbers(values)
            label = numbers.to_numpy(zero_copy_only=False)
            with np.errstate(invalid="ignore"):
                bad = unparsable | (present & ~np.isin(label, [0.0, 1.0]))
            expected = "0 or 1; empty = unknown"
        checks.flag(bad, "bad_label", target.column, target.name, columns.raw(target.column), expected)
        output[target.name] = pa.array(label, pa.float64(), mask=~present | bad)
    keep = ~checks.rejected
    good = pa.table(output).filter(pa.array(keep))
    good = good.cast(labels_schema([t.name for t in mapping.labels.targets]))
    result = _ChunkResult(good, _chunk_rejects(checks, chunk, display))
    for target in mapping.labels.targets:
        column = good.column(target.name)
        positives = int(pc.sum(pc.equal(column, 1.0)).as_py() or 0)
        unknown = column.null_count
        result.label_counts[target.name] = Counter(
            {"positive": positives, "negative": good.num_rows - positives - unknown, "unknown": unknown})
    return result


def _chunk_rejects(checks: RowChecks, chunk: SourceChunk, display: str) -> pa.Table:
    rejects = checks.table(display, chunk.rows, chunk.table)
    if chunk.malformed:
        rejects = pa.concat_tables([rejects, malformed_rejects(display, chunk.malformed)])
        rejects = rejects.take(pc.sort_indices(rejects, sort_keys=[("row", "ascending")]))
    return rejects


# --------------------------------------------------------------------------------------------- writing


class _PartWriter:
    """Writes part-00000.parquet, part-00001.parquet … into a folder, each one atomically."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.parts = 0

    def write(self, table: pa.Table) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.folder / f"part-{self.parts:05d}.parquet") as temporary:
            pq.write_table(table, temporary)
        self.parts += 1


class _RejectSink:
    """Buffers reject rows and writes them as parts of about ``flush_rows`` rows."""

    def __init__(self, folder: Path, flush_rows: int) -> None:
        self.writer = _PartWriter(folder)
        self.flush_rows = flush_rows
        self.buffer: list[pa.Table] = []
        self.buffered = 0

    def add(self, rejects: pa.Table) -> None:
        if rejects.num_rows:
            self.buffer.append(rejects)
            self.buffered += rejects.num_rows
            if self.buffered >= self.flush_rows:
                self.flush()

    def flush(self) -> None:
        if self.buffer:
            self.writer.write(pa.concat_tables(self.buffer).combine_chunks())
            self.buffer, self.buffered = [], 0


class _LabelsWriter:
    """Streams labels chunks into one Parquet file, renamed into place when complete."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.file = StagedFile(path)
        self.writer = pq.ParquetWriter(self.file.temporary, schema)

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self.writer.write_table(table)

    def close(self) -> None:
        self.writer.close()
        self.file.commit()

    def abort(self) -> None:
        self.writer.close()
        self.file.discard()


def _prepare_output(out: Path) -> None:
    """Refuse a folder holding a complete ingest; remove the partial output of an interrupted one."""
    if out.exists() and not out.is_dir():
        raise IngestError(f"output {out} exists and is not a folder")
    if (out / REPORT_FILE).exists():
        raise IngestError(
            f"{out} already holds a complete ingest ({REPORT_FILE} is present); remove the folder or choose "
            "another output folder"
        )
    if out.exists():
        for name in (EVENTS_DIR, REJECTS_DIR):
            if (out / name).is_dir():
                shutil.rmtree(out / name)
        for name in (DATASET_FILE, LABELS_FILE):
            (out / name).unlink(missing_ok=True)
        remove_stale_temporaries(out)
    out.mkdir(parents=True, exist_ok=True)


# --------------------------------------------------------------------------------------------- report


@dataclass
class IngestReport:
    """What one ingest read, wrote and rejected; saved as DIR/ingest_report.json."""

    rows_read: int  # data rows seen in all inputs (malformed rows included)
    rows_written: int  # rows in the output events / labels
    rows_rejected: int  # rows written to DIR/rejects instead
    rejects_by_reason: dict[str, int]  # reason -> rejected rows
    files: list[str]  # input files, in the order read
    out_dir: str  # the output folder
    kind: str  # events | labels
    mapping: str = ""  # the mapping file used
    dataset: str | None = None  # dataset name (events)
    rows_by_file: dict[str, dict[str, int]] = field(default_factory=dict)  # file -> {read, written, rejected}
    reject_examples: dict[str, str] = field(default_factory=dict)  # reason -> message of its first reject
    event_types: dict[str, int] = field(default_factory=dict)  # event type -> rows written (events)
    label_counts: dict[str, dict[str, int]] = field(default_factory=dict)  # target -> {positive, negative, unknown}
    ts_min: str | None = None  # earliest written timestamp / cutoff, ISO 8601 UTC
    ts_max: str | None = None  # latest written timestamp / cutoff, ISO 8601 UTC
    warnings: list[str] = field(default_factory=list)  # things worth a look that did not stop the ingest
    chunk_rows: int = 0  # rows per chunk / output part
    elapsed_s: float = 0.0  # wall-clock seconds
    finished_at: str = ""  # ISO 8601 UTC

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "rows_per_second": round(self.rows_per_second, 1)}

    @classmethod
    def load(cls, path: str | Path) -> IngestReport:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        data.pop("rows_per_second", None)
        return cls(**data)

    def summary(self) -> str:
        """A few human lines for the CLI."""
        what = f"events of dataset {self.dataset}" if self.dataset else f"a {self.kind} table"
        lines = [
            f"ingested {self.rows_read:,} rows from {len(self.files)} file(s) into {self.out_dir} as {what} "
            f"in {self.elapsed_s:.1f} s ({self.rows_per_second:,.0f} rows/s)",
            f"  written {self.rows_written:,} · rejected {self.rows_rejected:,}",
        ]
        if self.ts_min:
            lines.append(f"  time range (UTC): {self.ts_min} .. {self.ts_max}")
        if self.event_types:
            top = sorted(self.event_types.items(), key=lambda kv: -kv[1])
            shown = " · ".join(f"{name} {count:,}" for name, count in top[:12])
            lines.append(f"  event types ({len(top)}): {shown}{' · ...' if len(top) > 12 else ''}")
        for target, counts in self.label_counts.items():
            lines.append(f"  target {target}: " + " · ".join(f"{k} {v:,}" for k, v in counts.items()))
        if self.rejects_by_reason:
            lines.append(f"  rejected rows by reason (details in {Path(self.out_dir) / REJECTS_DIR}):")
            for reason, count in sorted(self.rejects_by_reason.items(), key=lambda kv: -kv[1]):
                lines.append(f"    {reason}: {count:,}, e.g. {self.reject_examples.get(reason, '')}")
        lines += [f"  warning: {warning}" for warning in self.warnings]
        return "\n".join(lines)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


# --------------------------------------------------------------------------------------------- ingest


def _expand_inputs(inputs: list[str | Path]) -> list[Path]:
    if isinstance(inputs, str | Path):
        inputs = [inputs]
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith((".", "_")))
            if not found:
                raise IngestError(f"input folder {path} holds no files")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise IngestError(f"input {path} does not exist")
    if not files:
        raise IngestError("no input files given")
    seen: dict[Path, Path] = {}
    for path in files:
        if path.resolve() in seen:
            raise IngestError(f"input {path} is given twice (also as {seen[path.resolve()]}); its rows would be "
                              "ingested twice")
        seen[path.resolve()] = path
    return files


@dataclass
class IngestConfig:
    """What `journey ingest` reads, how it maps it and where it writes."""

    inputs: list[str] = option(help="input files (CSV, .parquet, .jsonl)", flag="INPUT")
    mapping: str = option(help="mapping YAML (column mapping, timestamp format and zone, dataset config); ready "
                          "ones: berka, berka_loans, taobao (a name picks journey_model/data/mappings/NAME.yaml)")
    out_dir: str = option(help="output folder", flag="--out")
    strict: bool = option(False, "fail on the first invalid row instead of rejecting it")
    chunk_rows: int = option(200_000, "rows read per chunk [rows]")

def ingest(inputs: list[str | Path], mapping: str | Path, out_dir: str | Path, *, strict: bool = False,
           chunk_rows: int = 200_000, progress: bool = True) -> IngestReport:
    """Read ``inputs`` with ``mapping`` (a file or built-in name) and write a canonical folder ``out_dir``.

    Streams ``chunk_rows`` rows at a time. Invalid rows go to ``out_dir/rejects`` with their reason, or,
    with ``strict``, the first one raises :class:`IngestError`. Returns the report also saved as
    ``out_dir/ingest_report.json`` (written last).
    """
    started = time.perf_counter()
    if chunk_rows < 1:
        raise IngestError(f"chunk_rows must be >= 1, got {chunk_rows}")
    mapping_path = resolve_mapping(mapping)
    spec = IngestMapping.load(mapping_path)
    files = _expand_inputs(inputs)
    formats = {path: spec.source.format_of(path) for path in files}
    out = Path(out_dir)
    _prepare_output(out)

    report = IngestReport(rows_read=0, rows_written=0, rows_rejected=0, rejects_by_reason={},
                          files=[str(p) for p in files], out_dir=str(out), kind=spec.kind,
                          mapping=str(mapping_path), dataset=spec.dataset.name if spec.dataset else None,
                          chunk_rows=chunk_rows)
    needed = spec.source_columns()
    rejects_by_reason: Counter = Counter()
    event_types: Counter = Counter()
    unmapped: Counter = Counter()
    label_counts: dict[str, Counter] = {}
    ts_range: list[datetime] = []
    events_writer = _PartWriter(out / EVENTS_DIR)
    reject_sink = _RejectSink(out / REJECTS_DIR, flush_rows=chunk_rows)
    labels_writer = None
    if spec.kind == "labels":
        assert spec.labels is not None
        labels_writer = _LabelsWriter(out / LABELS_FILE, labels_schema([t.name for t in spec.labels.targets]))
    transform = _transform_labels if spec.kind == "labels" else _transform_events

    bar = tqdm(total=sum(p.stat().st_size for p in files), unit="B", unit_scale=True, desc="ingest",
               disable=not progress, file=sys.stderr)
    completed = False
    try:
        for path in files:
            display = str(path)
            bar.set_postfix_str(path.name)
            done_before = bar.n

            def on_bytes(position: int, done_before: int = done_before) -> None:
                bar.update(max(0, done_before + position - bar.n))

            seen_columns: set[str] = set()
            fmt = formats[path]
            if fmt == "csv":
                chunks = _read_csv(path, display, spec.source, needed, on_bytes)
            elif fmt == "parquet":
                chunks = _read_parquet(path, display, needed, chunk_rows, on_bytes)
            else:
                keys = {column: needed[column] for column in spec.key_columns()}
                chunks = _read_jsonl(path, display, spec.source, keys, chunk_rows, on_bytes, seen_columns)
            counts = {"read": 0, "written": 0, "rejected": 0}
            for chunk in _rebatch(chunks, chunk_rows):
                if chunk.table.num_rows:
                    result = transform(chunk, spec, display)
                else:
                    result = _ChunkResult(pa.table({}), malformed_rejects(display, chunk.malformed))
                if strict and result.rejects.num_rows:
                    message = first_reject_message(result.rejects)
                    raise IngestError(f"{message} (strict mode stops at the first invalid row)")
                if result.good.num_rows:
                    if labels_writer is not None:
                        labels_writer.write(result.good)
                    else:
                        events_writer.write(result.good)
                    time_column = result.good.column(CUTOFF if spec.kind == "labels" else TIMESTAMP)
                    low_high = pc.min_max(time_column).as_py()
                    ts_range += [low_high["min"], low_high["max"]]
                reject_sink.add(result.rejects)
                reasons = result.rejects.column("reason").to_pylist()
                rejects_by_reason.update(reasons)
                for reason in sorted(set(reasons) - set(report.reject_examples)):
                    first = result.rejects.slice(reasons.index(reason), 1)  # rejects are in row order
                    report.reject_examples[reason] = first_reject_message(first) or reason
                event_types.update(result.event_types)
                unmapped.update(result.unmapped)
                for target, target_counts in result.label_counts.items():
                    label_counts.setdefault(target, Counter()).update(target_counts)
                counts["read"] += chunk.table.num_rows + len(chunk.malformed)
                counts["written"] += result.good.num_rows
                counts["rejected"] += result.rejects.num_rows
                if len(ts_range) > 2:
                    ts_range = [min(ts_range), max(ts_range)]
            on_bytes(path.stat().st_size)
            report.rows_by_file[display] = counts
            if fmt == "jsonl" and counts["read"]:
                never = sorted(set(needed) - seen_columns - set(spec.key_columns()))
                if never:
                    report.warnings.append(f"{display}: mapped columns {never} never appear; they are all null")

        reject_sink.flush()
        if labels_writer is not None:
            labels_writer.close()
        else:
            assert spec.dataset is not None
            if events_writer.parts == 0:
                events_writer.write(spec.dataset.arrow_schema().empty_table())
            with atomic_path(out / DATASET_FILE) as temporary:
                spec.dataset.save(temporary)
        completed = True
    finally:
        bar.close()
        if not completed and labels_writer is not None:
            labels_writer.abort()

    report.rows_read = sum(c["read"] for c in report.rows_by_file.values())
    report.rows_written = sum(c["written"] for c in report.rows_by_file.values())
    report.rows_rejected = sum(c["rejected"] for c in report.rows_by_file.values())
    report.rejects_by_reason = dict(rejects_by_reason)
    report.event_types = dict(event_types.most_common())
    report.label_counts = {target: dict(counts) for target, counts in label_counts.items()}
    if ts_range:
        report.ts_min, report.ts_max = _iso(min(ts_range)), _iso(max(ts_range))
    report.warnings += _warnings(spec, report, unmapped)
    if report.rows_read != report.rows_written + report.rows_rejected:
        raise IngestError(f"internal error: read {report.rows_read} rows but wrote {report.rows_written} and "
                          f"rejected {report.rows_rejected}")
    report.elapsed_s = round(time.perf_counter() - started, 3)
    report.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
    write_text_atomic(out / REPORT_FILE, json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n")
    return report


def _warnings(spec: IngestMapping, report: IngestReport, unmapped: Counter) -> list[str]:
    warnings: list[str] = []
    if report.rows_rejected:
        warnings.append(f"{report.rows_rejected:,} of {report.rows_read:,} rows rejected; see "
                        f"{Path(report.out_dir) / REJECTS_DIR}")
    if spec.kind != "events":
        return warnings
    assert spec.dataset is not None
    if unmapped:
        shown = ", ".join(f"{value!r} ({count:,})" for value, count in unmapped.most_common(10))
        warnings.append(f"{len(unmapped)} event-type value(s) not in the mapping's value map, kept as they are: "
                        f"{shown}")
    behaviours = spec.dataset.behaviours
    if behaviours:
        undeclared = sorted(set(report.event_types) - set(behaviours))
        if undeclared:
            warnings.append(f"event types without a declared behaviour (they carry every field): {undeclared}")
        unseen = sorted(set(behaviours) - set(report.event_types))
        if unseen and report.rows_written:
            warnings.append(f"declared behaviours never seen in the data: {unseen}")
    unmapped_fields = [name for name in [*spec.dataset.categorical_fields, *spec.dataset.numeric_fields]
                       if name not in spec.columns]
    if unmapped_fields:
        warnings.append(f"declared fields {unmapped_fields} have no source column; they are all null")
    return warnings

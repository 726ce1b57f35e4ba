"""Applying a mapping to one chunk of source rows: canonical events (or labels) plus the chunk's rejects.

:func:`transform_chunk` takes a :class:`~journey_model.data.readers.SourceChunk` and the parsed
:class:`~journey_model.data.mapping.IngestMapping` and returns a :class:`ChunkResult`: the valid rows in the
canonical schema (events: :mod:`journey_model.data.schema`; labels: :func:`labels_schema`), every invalid
row as a reject with the reason of its first failing check (cell checks from
:mod:`journey_model.data.validation`, in a fixed order: customer id, timestamp, event type, then each
mapped field; labels: customer id, cut-off, then each target), and the counts the report needs.
"""

from __future__ import annotations

import string
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from journey_model.data.mapping import CUTOFF, ColumnSpec, IngestError, IngestMapping, SourceSpec, TargetSpec
from journey_model.data.readers import SourceChunk
from journey_model.data.schema import (
    CUSTOMER_ID,
    EVENT_TYPE,
    TIMESTAMP,
    TIMESTAMP_TYPE,
    SchemaError,
    conform_table,
)
from journey_model.data.validation import (
    RowChecks,
    TimestampSpec,
    clean_strings,
    is_null,
    malformed_rejects,
    parse_numbers,
    parse_timestamps,
)


@dataclass
class ChunkResult:
    """What one chunk gives: rows to write, rows to reject, and counts for the report."""

    good: pa.Table  # canonical rows to write
    rejects: pa.Table  # REJECTS_SCHEMA rows, ordered by row number
    event_types: Counter = field(default_factory=Counter)  # written rows per event type
    unmapped: Counter = field(default_factory=Counter)  # written rows per unmapped (kept) event-type value
    label_counts: dict[str, Counter] = field(default_factory=dict)  # target -> {positive, negative, unknown}


def transform_chunk(chunk: SourceChunk, mapping: IngestMapping, display: str) -> ChunkResult:
    """The canonical rows and rejects of ``chunk`` (read from the file ``display``)."""
    if not chunk.table.num_rows:  # only malformed rows: nothing to map
        return ChunkResult(pa.table({}), malformed_rejects(display, chunk.malformed))
    if mapping.kind == "labels":
        return _transform_labels(chunk, mapping, display)
    return _transform_events(chunk, mapping, display)


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


def _chunk_rejects(checks: RowChecks, chunk: SourceChunk, display: str) -> pa.Table:
    rejects = checks.table(display, chunk.rows, chunk.table)
    if chunk.malformed:
        rejects = pa.concat_tables([rejects, malformed_rejects(display, chunk.malformed)])
        rejects = rejects.take(pc.sort_indices(rejects, sort_keys=[("row", "ascending")]))
    return rejects


# --------------------------------------------------------------------------------------------- events


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


def _event_types(columns: _ChunkColumns, checks: RowChecks, mapping: IngestMapping
                 ) -> tuple[pa.Array, pa.Array, np.ndarray]:
    """The event type of each row, the value rendered from the source before the value map, and the mask
    of rows whose rendered value the map does not cover."""
    spec = mapping.event_type
    assert spec is not None
    label = ", ".join(spec.columns)
    cleaned_parts = {name: columns.clean(name) for name in spec.columns}
    missing = np.logical_and.reduce([is_null(part) for part in cleaned_parts.values()])
    if spec.template is None:
        rendered, raw_rendered = cleaned_parts[spec.columns[0]], columns.raw(spec.columns[0])
    else:
        rendered = _render_template(spec.template, cleaned_parts)
        raw_rendered = _render_template(spec.template, {name: columns.raw(name) for name in spec.columns})
    checks.flag(missing, "missing_event_type", label, EVENT_TYPE, raw_rendered, f"a non-empty value in {label}")
    event_type, unmapped = rendered, np.zeros(columns.table.num_rows, dtype=bool)
    if spec.values is not None:
        event_type, unmapped = spec.values.apply(rendered)
        unmapped &= ~missing
        if spec.unmapped == "reject":
            known = [*spec.values.exact, *(pattern for pattern, _ in spec.values.patterns)]
            checks.flag(unmapped, "unmapped_event_type", label, EVENT_TYPE, rendered,
                        f"a value the mapping covers: {known[:12]}{' ...' if len(known) > 12 else ''}")
    return event_type, rendered, unmapped


def _numeric_field(columns: _ChunkColumns, checks: RowChecks, target: str, column: ColumnSpec) -> pa.Array:
    """Numbers of one numeric field, negated on the rows ``negate_when`` names, then scaled."""
    numbers, bad = parse_numbers(columns.typed(column.column))
    checks.flag(bad, "bad_number", column.column, target, columns.raw(column.column),
                "a decimal number such as -12.50")
    if column.negate_when:
        negate = np.zeros(columns.table.num_rows, dtype=bool)
        for source_column, values in column.negate_when.items():
            hits = pc.is_in(columns.clean(source_column), value_set=pa.array(values, pa.string()))
            negate |= pc.fill_null(hits, False).to_numpy(zero_copy_only=False)
        numbers = pc.if_else(pa.array(negate), pc.negate(numbers), numbers)
    if column.scale != 1.0:
        numbers = pc.multiply(numbers, column.scale)
    return numbers


def _field_values(columns: _ChunkColumns, checks: RowChecks, mapping: IngestMapping) -> dict[str, pa.Array]:
    """Every mapped field besides customer and time, in the mapping's order: numbers or (mapped) text."""
    assert mapping.dataset is not None
    output: dict[str, pa.Array] = {}
    for target, column in mapping.columns.items():
        if target in (CUSTOMER_ID, TIMESTAMP):
            continue
        if target in mapping.dataset.numeric_fields:
            output[target] = _numeric_field(columns, checks, target, column)
        else:
            values = columns.clean(column.column)
            if column.values is not None:
                values, _ = column.values.apply(values)
            output[target] = values
    return output


def _transform_events(chunk: SourceChunk, mapping: IngestMapping, display: str) -> ChunkResult:
    assert mapping.dataset is not None
    columns = _ChunkColumns(chunk.table, mapping.source)
    checks = RowChecks(chunk.table.num_rows)
    # the checks run in this order, and a row is rejected for the first one it fails
    customer, stamps = _check_customer_and_time(columns, checks, mapping.columns[CUSTOMER_ID].column,
                                                mapping.columns[TIMESTAMP].column, TIMESTAMP, mapping.timestamp)
    event_type, rendered, unmapped = _event_types(columns, checks, mapping)
    output = {CUSTOMER_ID: customer, TIMESTAMP: stamps, EVENT_TYPE: event_type,
              **_field_values(columns, checks, mapping)}

    keep = ~checks.rejected
    good = pa.table(output).filter(pa.array(keep))
    try:
        good = conform_table(good, mapping.dataset, source=display)
    except SchemaError as error:
        raise IngestError(str(error)) from error
    result = ChunkResult(good, _chunk_rejects(checks, chunk, display))
    if good.num_rows:
        counts = pc.value_counts(good.column(EVENT_TYPE)).to_pylist()
        result.event_types.update({entry["values"]: entry["counts"] for entry in counts})
    if unmapped.any():
        kept_unmapped = pa.array(rendered).filter(pa.array(unmapped & keep))
        result.unmapped.update({e["values"]: e["counts"] for e in pc.value_counts(kept_unmapped).to_pylist()})
    return result


# --------------------------------------------------------------------------------------------- labels


def labels_schema(targets: list[str]) -> pa.Schema:
    """The Arrow schema of DIR/labels.parquet."""
    return pa.schema([pa.field(CUSTOMER_ID, pa.string(), nullable=False),
                      pa.field(CUTOFF, TIMESTAMP_TYPE, nullable=False),
                      *(pa.field(name, pa.float64()) for name in targets)])


def _label_values(values: pa.Array, present: np.ndarray, target: TargetSpec) -> tuple[np.ndarray, np.ndarray, str]:
    """One target's 1.0 / 0.0 per row, the mask of unrecognised values and what a valid value looks like."""
    if target.positive is not None:
        positive = pc.fill_null(pc.is_in(values, value_set=pa.array(target.positive, pa.string())), False)
        positive = positive.to_numpy(zero_copy_only=False)
        if target.negative is not None:
            negative = pc.fill_null(pc.is_in(values, value_set=pa.array(target.negative, pa.string())), False)
            bad = present & ~positive & ~negative.to_numpy(zero_copy_only=False)
            expected = f"one of {target.positive} (1) or {target.negative} (0); empty = unknown"
        else:
            bad = np.zeros(len(values), dtype=bool)
            expected = ""
        return np.where(positive, 1.0, 0.0), bad, expected
    numbers, unparsable = parse_numbers(values)
    label = numbers.to_numpy(zero_copy_only=False)
    with np.errstate(invalid="ignore"):
        bad = unparsable | (present & ~np.isin(label, [0.0, 1.0]))
    return label, bad, "0 or 1; empty = unknown"


def _transform_labels(chunk: SourceChunk, mapping: IngestMapping, display: str) -> ChunkResult:
    assert mapping.labels is not None
    columns = _ChunkColumns(chunk.table, mapping.source)
    checks = RowChecks(chunk.table.num_rows)
    customer, cutoffs = _check_customer_and_time(columns, checks, mapping.labels.customer_id,
                                                 mapping.labels.cutoff, CUTOFF, mapping.timestamp)
    output: dict[str, pa.Array] = {CUSTOMER_ID: customer, CUTOFF: cutoffs}
    for target in mapping.labels.targets:
        values = columns.clean(target.column)
        present = values.is_valid().to_numpy(zero_copy_only=False)
        label, bad, expected = _label_values(values, present, target)
        checks.flag(bad, "bad_label", target.column, target.name, columns.raw(target.column), expected)
        output[target.name] = pa.array(label, pa.float64(), mask=~present | bad)
    keep = ~checks.rejected
    good = pa.table(output).filter(pa.array(keep))
    good = good.cast(labels_schema([t.name for t in mapping.labels.targets]))
    result = ChunkResult(good, _chunk_rejects(checks, chunk, display))
    for target in mapping.labels.targets:
        column = good.column(target.name)
        positives = int(pc.sum(pc.equal(column, 1.0)).as_py() or 0)
        unknown = column.null_count
        result.label_counts[target.name] = Counter(
            {"positive": positives, "negative": good.num_rows - positives - unknown, "unknown": unknown})
    return result

"""Cell- and row-level validation for ``journey ingest``: raw text in, typed canonical values out.

Source files arrive as text (CSV, JSON Lines) or loosely typed columns (Parquet). This module turns one
chunk's source column into canonical values — strings with nulls, float64 numbers, UTC timestamps — and
marks every cell that cannot be turned, so that :mod:`journey_model.data.ingest` can write the good rows and
record each bad row once, with the reason of its first failing check:

=========================  ==============================================================================
reason                     meaning
=========================  ==============================================================================
``malformed_row``          the row cannot be split into the header's fields / the line is not a JSON object
``missing_customer_id``    customer id null or empty
``missing_timestamp``      timestamp null or empty
``bad_timestamp``          timestamp does not match the mapping's format
``timestamp_out_of_range`` timestamp parsed but outside the plausible window (often unix_s vs unix_ms)
``missing_event_type``     every column the event type is built from is null or empty
``unmapped_event_type``    event-type value not in the mapping's value map, with ``unmapped: reject``
``bad_number``             a numeric field holds text that is not a finite decimal number, or a non-finite
                           number (NaN, ±Infinity, a value such as 1e400 that overflows float64)
``bad_label``              a labels table's target holds a value that is neither positive nor negative
=========================  ==============================================================================

Everything is vectorised over Arrow arrays; only the rejected rows are turned into Python values.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import zoneinfo
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from journey_model.data.schema import TIMESTAMP_TYPE

REJECT_REASONS: dict[str, str] = {
    "malformed_row": "the row cannot be read as a record",
    "missing_customer_id": "the customer id is null or empty",
    "missing_timestamp": "the timestamp is null or empty",
    "bad_timestamp": "the timestamp cannot be parsed",
    "timestamp_out_of_range": "the timestamp is outside the plausible window",
    "missing_event_type": "the event type is null or empty",
    "unmapped_event_type": "the event type is not in the mapping's value map",
    "bad_number": "the value is not a finite number",
    "bad_label": "the label value is not recognised",
}

REJECTS_SCHEMA = pa.schema(
    [
        pa.field("source_file", pa.string(), nullable=False),  # input file the row came from
        pa.field("row", pa.int64(), nullable=False),  # 1-based data row (JSON Lines: line) number
        pa.field("column", pa.string()),  # source column(s) that failed, null for malformed rows
        pa.field("target", pa.string()),  # canonical field the column feeds
        pa.field("reason", pa.string(), nullable=False),  # one of REJECT_REASONS
        pa.field("value", pa.string()),  # the offending raw value as text
        pa.field("expected", pa.string()),  # what a valid value looks like
        pa.field("raw", pa.string()),  # the whole raw row: JSON object of text values, or the raw line
    ]
)

# The one column of a chunk whose records have no key at all (JSON Lines `{}`): Arrow tables without columns
# lose their row count in take / slice / concat. No mapping reads it and raw rows leave it out.
NO_COLUMNS = "__journey_no_columns__"

UNIX_FORMATS: dict[str, float] = {"unix_s": 1e6, "unix_ms": 1e3, "unix_us": 1.0, "unix_ns": 1e-3}  # -> us
NUMBER_PATTERN = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
_OFFSET_PATTERN = r"[T ]\d\d:\d\d.*([Zz]|[+-]\d\d(:?\d\d)?)$"
_EXAMPLE_INSTANT = dt.datetime(1993, 1, 31, 13, 45, 30)


def describe_reject(
    source_file: str, row: int, column: str | None, target: str | None, reason: str, value: str | None,
    expected: str,
) -> str:
    """One human sentence naming the file, row, column, the value found and what was expected."""
    where = f"{source_file}: row {row}"
    if column:
        where += f", column {column!r}"
        if target and target != column:
            where += f" ({target})"
    shown = repr(value) if value is None or len(value) <= 200 else repr(value[:200]) + f"... ({len(value)} characters)"
    return f"{where}: {REJECT_REASONS.get(reason, reason)}; got {shown}, expected {expected}"


@dataclass
class TimestampSpec:
    """How a source timestamp column is read; every result is an instant in UTC."""

    format: str = "iso"  # iso | unix_s | unix_ms | unix_us | unix_ns | a strptime pattern such as %y%m%d
    timezone: str = "UTC"  # IANA zone of naive wall-clock values; unix and offset-carrying values ignore it
    valid_from: str = "1900-01-01"  # earliest plausible instant (UTC, ISO date); older -> out of range
    valid_until: str = "2100-01-01"  # first implausible instant (UTC, ISO date); later -> out of range

    def __post_init__(self) -> None:
        if self.format not in UNIX_FORMATS and self.format != "iso" and "%" not in self.format:
            raise ValueError(
                f"timestamp format {self.format!r} is not one of iso, {', '.join(UNIX_FORMATS)} "
                "or a strptime pattern (with % directives, e.g. '%Y-%m-%d %H:%M:%S')"
            )
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(f"unknown time zone {self.timezone!r}; use an IANA name like 'Europe/Prague'") from error
        for name in ("valid_from", "valid_until"):
            try:
                dt.date.fromisoformat(str(getattr(self, name)))
            except ValueError as error:
                raise ValueError(f"timestamp {name} {getattr(self, name)!r} is not an ISO date YYYY-MM-DD") from error
            setattr(self, name, str(getattr(self, name)))

    def bounds_us(self) -> tuple[int, int]:
        """The plausible window as microseconds since the Unix epoch, [from, until)."""
        epoch = dt.date(1970, 1, 1)
        lo = (dt.date.fromisoformat(self.valid_from) - epoch).days * 86_400_000_000
        hi = (dt.date.fromisoformat(self.valid_until) - epoch).days * 86_400_000_000
        return lo, hi

    def expected(self) -> str:
        """A description of a valid value, for error messages."""
        if self.format in UNIX_FORMATS:
            unit = {"unix_s": "seconds", "unix_ms": "milliseconds", "unix_us": "microseconds",
                    "unix_ns": "nanoseconds"}[self.format]
            return f"{unit} since 1970-01-01 UTC (format {self.format})"
        if self.format == "iso":
            return "an ISO 8601 timestamp such as '1993-01-31T13:45:30' or '1993-01-31T13:45:30+01:00'"
        return f"format {self.format!r}, e.g. {_EXAMPLE_INSTANT.strftime(self.format)!r}"

    def expected_range(self) -> str:
        hint = " (is the unit right? unix_s vs unix_ms)" if self.format in UNIX_FORMATS else ""
        return f"an instant between {self.valid_from} and {self.valid_until} UTC{hint}"


def clean_strings(values: pa.Array, null_values: frozenset[str] = frozenset({""}), strip: bool = True) -> pa.Array:
    """``values`` as strings, surrounding whitespace removed (if ``strip``) and ``null_values`` made null."""
    if not pa.types.is_string(values.type):
        values = values.cast(pa.string())
    if strip:
        values = pc.utf8_trim_whitespace(values)
    if null_values:
        values = pc.if_else(pc.is_in(values, value_set=pa.array(sorted(null_values), pa.string())),
                            pa.scalar(None, pa.string()), values)
    return values


def is_null(values: pa.Array) -> np.ndarray:
    """Boolean mask of null cells."""
    return values.is_null().to_numpy(zero_copy_only=False)


def as_text(values: pa.Array) -> pa.Array:
    """A best-effort text rendering of any Arrow array (for rejects and messages)."""
    if pa.types.is_string(values.type):
        return values
    try:
        return values.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.array([None if v is None else str(v) for v in values.to_pylist()], pa.string())


def parse_numbers(values: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Float64 numbers and the mask of cells that hold something that is not a finite number.

    Text must be a plain decimal number (``-12.5``, ``3``, ``1e3``); thousands separators, ``nan`` and
    ``inf`` are bad. Nulls stay null and are not bad.
    """
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        values = values.cast(pa.string())
        well_formed = pc.fill_null(pc.match_substring_regex(values, NUMBER_PATTERN), False)
        numbers = pc.if_else(well_formed, values, pa.scalar(None, pa.string())).cast(pa.float64())
    elif (pa.types.is_integer(values.type) or pa.types.is_floating(values.type)
          or pa.types.is_decimal(values.type) or pa.types.is_boolean(values.type)):
        numbers = values.cast(pa.float64())
    else:
        return parse_numbers(as_text(values))
    finite = pc.fill_null(pc.is_finite(numbers), False)
    bad = values.is_valid().to_numpy(zero_copy_only=False) & ~finite.to_numpy(zero_copy_only=False)
    if bad.any():
        numbers = pc.if_else(finite, numbers, pa.scalar(None, pa.float64()))
    return numbers, bad


def _localize(naive: pa.Array, timezone: str) -> pa.Array:
    """Naive wall-clock timestamps in ``timezone`` -> UTC instants.

    A wall-clock time that occurs twice (autumn DST change) takes the earlier instant; one that does not
    exist (spring gap) moves to the first instant after the gap.
    """
    naive = naive.cast(pa.timestamp("us"))
    if timezone == "UTC":
        return naive.cast(TIMESTAMP_TYPE)
    local = pc.assume_timezone(naive, timezone=timezone, ambiguous="earliest", nonexistent="latest")
    return local.cast(TIMESTAMP_TYPE)


def _parse_iso_python(strings: pa.Array, timezone: str) -> tuple[pa.Array, np.ndarray]:
    """Slow path for ISO text Arrow's cast refuses: parse each cell with datetime.fromisoformat."""
    naive_values: list[dt.datetime | None] = []
    aware_values: list[dt.datetime | None] = []
    bad = np.zeros(len(strings), dtype=bool)
    for index, text in enumerate(strings.to_pylist()):
        naive_values.append(None)
        aware_values.append(None)
        if text is None:
            continue
        try:
            parsed = dt.datetime.fromisoformat(text.replace("z", "Z"))
        except ValueError:
            bad[index] = True
            continue
        if parsed.tzinfo is None:
            naive_values[index] = parsed
        else:
            aware_values[index] = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    naive = _localize(pa.array(naive_values, pa.timestamp("us")), timezone)
    aware = pa.array(aware_values, pa.timestamp("us")).cast(TIMESTAMP_TYPE)
    return pc.if_else(aware.is_valid(), aware, naive), bad


def _parse_iso(strings: pa.Array, timezone: str) -> tuple[pa.Array, np.ndarray]:
    has_offset = pc.fill_null(pc.match_substring_regex(strings, _OFFSET_PATTERN), False)
    try:
        naive_text = pc.if_else(has_offset, pa.scalar(None, pa.string()), strings)
        aware_text = pc.if_else(has_offset, strings, pa.scalar(None, pa.string()))
        naive = _localize(naive_text.cast(pa.timestamp("us")), timezone)
        aware = aware_text.cast(TIMESTAMP_TYPE)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return _parse_iso_python(strings, timezone)
    return pc.if_else(has_offset, aware, naive), np.zeros(len(strings), dtype=bool)


def parse_timestamps(values: pa.Array, spec: TimestampSpec) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """UTC timestamps, the mask of unparseable cells and the mask of parsed-but-implausible cells.

    ``values`` is cleaned text (nulls for empty cells) or a typed column from Parquet: timestamp columns
    are taken as they are (naive ones localised with ``spec.timezone``), dates become local midnight,
    numbers are read as the mapping's unix unit (or as text for a strptime pattern such as ``%y%m%d``).
    Bad and out-of-range cells are null in the result; null input stays null and is in neither mask.
    """
    n = len(values)
    bad = np.zeros(n, dtype=bool)
    kind = values.type
    if pa.types.is_timestamp(kind):
        stamps = values.cast(TIMESTAMP_TYPE) if kind.tz else _localize(values, spec.timezone)
    elif pa.types.is_date(kind):
        stamps = _localize(values.cast(pa.timestamp("us")), spec.timezone)
    elif spec.format in UNIX_FORMATS:
        numbers, bad = parse_numbers(values)
        micros = numbers.to_numpy(zero_copy_only=False) * UNIX_FORMATS[spec.format]
        lo, hi = spec.bounds_us()
        with np.errstate(invalid="ignore"):
            plausible = (micros >= lo) & (micros < hi)
        out_of_range = ~np.isnan(micros) & ~plausible
        stamps = pa.array(np.where(plausible, np.round(micros), 0).astype(np.int64), pa.int64(),
                          mask=~plausible).cast(pa.timestamp("us")).cast(TIMESTAMP_TYPE)
        return stamps, bad, out_of_range
    else:
        strings = as_text(values)
        if spec.format == "iso":
            stamps, bad = _parse_iso(strings, spec.timezone)
        else:
            parsed = pc.strptime(strings, format=spec.format, unit="us", error_is_null=True)
            bad = strings.is_valid().to_numpy(zero_copy_only=False) & parsed.is_null().to_numpy(zero_copy_only=False)
            stamps = parsed.cast(TIMESTAMP_TYPE) if parsed.type.tz else _localize(parsed, spec.timezone)
    lo, hi = spec.bounds_us()
    micros = stamps.cast(pa.int64())
    plausible = pc.and_(pc.greater_equal(micros, lo), pc.less(micros, hi))
    out_of_range = ~pc.fill_null(plausible, True).to_numpy(zero_copy_only=False)
    if out_of_range.any():
        stamps = pc.if_else(pc.fill_null(plausible, True), stamps, pa.scalar(None, TIMESTAMP_TYPE))
    return stamps, bad, out_of_range


@dataclass
class ValueMap:
    """Source value -> canonical value. Exact keys win; then glob keys (``*``, ``?``) in the order given."""

    exact: dict[str, str] = field(default_factory=dict)  # literal source value -> canonical value
    patterns: list[tuple[str, str]] = field(default_factory=list)  # (fnmatch glob, canonical value), in order

    @classmethod
    def from_mapping(cls, values: dict, where: str) -> ValueMap:
        exact: dict[str, str] = {}
        patterns: list[tuple[str, str]] = []
        for key, target in values.items():
            if target is None or str(target).strip() == "":
                raise ValueError(f"{where}: value {key!r} maps to an empty name; every value needs a non-empty name")
            if isinstance(key, bool) or isinstance(target, bool):
                raise ValueError(f"{where}: {key!r}: {target!r} was read by YAML as a boolean; quote it")
            key, target = str(key), str(target)
            if "*" in key or "?" in key:
                patterns.append((key, target))
            else:
                exact[key] = target
        return cls(exact, patterns)

    def lookup(self, value: str) -> str | None:
        """The canonical value of ``value``, or None when the map does not cover it."""
        if value in self.exact:
            return self.exact[value]
        for pattern, target in self.patterns:
            if fnmatch.fnmatchcase(value, pattern):
                return target
        return None

    def apply(self, values: pa.Array) -> tuple[pa.Array, np.ndarray]:
        """Mapped strings (unmapped values kept as they are) and the mask of non-null unmapped cells."""
        distinct = pc.unique(values).drop_null()
        targets = [self.lookup(value) for value in distinct.to_pylist()]
        mapped_distinct = pa.array([t if t is not None else v for t, v in zip(targets, distinct.to_pylist())],
                                   pa.string())
        unmapped_distinct = pa.array([t is None for t in targets], pa.bool_())
        positions = pc.index_in(values, value_set=distinct)
        mapped = mapped_distinct.take(positions)
        unmapped = pc.fill_null(unmapped_distinct.take(positions), False).to_numpy(zero_copy_only=False)
        return mapped, unmapped


@dataclass
class _Flag:
    reason: str
    column: str | None
    target: str | None
    values: pa.Array  # raw values of the checked column(s), aligned with the chunk
    expected: str


class RowChecks:
    """The rejection state of one chunk: each row is rejected by the first check that flags it."""

    def __init__(self, num_rows: int) -> None:
        self.num_rows = num_rows
        self._flag_of_row = np.full(num_rows, -1, dtype=np.int32)
        self._flags: list[_Flag] = []

    def flag(self, mask: np.ndarray, reason: str, column: str | None, target: str | None, values: pa.Array,
             expected: str) -> None:
        """Reject the rows in ``mask`` not already rejected, for ``reason``."""
        if reason not in REJECT_REASONS:
            raise KeyError(f"unknown reject reason {reason!r}")
        fresh = mask & (self._flag_of_row < 0)
        if fresh.any():
            self._flag_of_row[fresh] = len(self._flags)
            self._flags.append(_Flag(reason, column, target, values, expected))

    @property
    def rejected(self) -> np.ndarray:
        return self._flag_of_row >= 0

    def table(self, source_file: str, rows: np.ndarray, raw: pa.Table) -> pa.Table:
        """The rejected rows in :data:`REJECTS_SCHEMA`, ordered by row number."""
        indices = np.flatnonzero(self.rejected)
        if indices.size == 0:
            return REJECTS_SCHEMA.empty_table()
        # a table without columns (JSON Lines records that are all `{}`) loses its row count in take()
        raw_rows = raw_json(raw.take(pa.array(indices))) if raw.num_columns else ["{}"] * indices.size
        texts: dict[int, pa.Array] = {}
        columns: dict[str, list] = {name: [] for name in REJECTS_SCHEMA.names}
        for position, index in enumerate(indices):
            flag_index = int(self._flag_of_row[index])
            flag = self._flags[flag_index]
            if flag_index not in texts:
                texts[flag_index] = as_text(flag.values)
            columns["source_file"].append(source_file)
            columns["row"].append(int(rows[index]))
            columns["column"].append(flag.column)
            columns["target"].append(flag.target)
            columns["reason"].append(flag.reason)
            columns["value"].append(texts[flag_index][int(index)].as_py())
            columns["expected"].append(flag.expected)
            columns["raw"].append(raw_rows[position])
        return pa.table(columns, schema=REJECTS_SCHEMA)


def raw_json(raw: pa.Table) -> list[str]:
    """Each row of ``raw`` as a JSON object of its values as text (null stays null)."""
    names = [name for name in raw.column_names if name != NO_COLUMNS]
    texts = {name: as_text(raw.column(name).combine_chunks()).to_pylist() for name in names}
    return [json.dumps({name: texts[name][i] for name in names}, ensure_ascii=False) for i in range(raw.num_rows)]


def malformed_rejects(source_file: str, malformed: list[tuple[int, str, str]]) -> pa.Table:
    """Rejects for rows that could not be read as records: (row, raw text, what was expected)."""
    return pa.table(
        {
            "source_file": [source_file] * len(malformed),
            "row": [row for row, _, _ in malformed],
            "column": [None] * len(malformed),
            "target": [None] * len(malformed),
            "reason": ["malformed_row"] * len(malformed),
            "value": [text for _, text, _ in malformed],
            "expected": [expected for _, _, expected in malformed],
            "raw": [text for _, text, _ in malformed],
        },
        schema=REJECTS_SCHEMA,
    )


def first_reject_message(rejects: pa.Table) -> str | None:
    """The message of the reject with the smallest row number, or None for an empty table."""
    if rejects.num_rows == 0:
        return None
    first = rejects.take(pc.sort_indices(rejects, sort_keys=[("row", "ascending")])[:1]).to_pylist()[0]
    return describe_reject(first["source_file"], first["row"], first["column"], first["target"], first["reason"],
                           first["value"], first["expected"])


"""Reading ingest inputs in chunks: CSV, Parquet and JSON Lines, plain or compressed.

Each reader streams one file as :class:`SourceChunk` s — a table of source columns (text for CSV and JSON
Lines, native types for Parquet) with the 1-based data row number of every row, plus the rows that could not
be read as records (*malformed* rows, rejected later with their raw text) — so memory stays flat however large
the file. :func:`read_chunks` picks the reader and regroups its output into chunks of exactly ``chunk_rows``
rows. File-level problems (unreadable file, missing column, wrong encoding) raise :class:`IngestError`
naming the file; row-level problems are left to :mod:`journey_model.data.transform`.

Formats come from ``source.format`` or the extension (:data:`FORMAT_BY_EXTENSION`); a ``.gz`` / ``.bz2`` /
``.zst`` suffix is read through (JSON Lines: ``.gz`` and ``.bz2`` only).

Row numbers count data records after the header (JSON Lines: physical line numbers, blank lines
included). A CSV line that cannot be split into the header's fields is malformed, numbered with its
physical line number minus the header lines, which equals its record number unless the file has blank
lines (skipped, not counted as rows).
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from journey_model.core.files import READ_ERRORS, read_error_message
from journey_model.data.mapping import IngestError, SourceSpec
from journey_model.data.validation import NO_COLUMNS

FORMAT_BY_EXTENSION = {
    ".csv": "csv", ".tsv": "csv", ".txt": "csv", ".asc": "csv",
    ".parquet": "parquet", ".pq": "parquet",
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
}
CODEC_BY_EXTENSION = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd"}

Malformed = tuple[int, str, str]  # (data row number, raw text, what was expected)
OnBytes = Callable[[int], None]  # told the byte position reached in the file, for the progress bar


@dataclass
class SourceChunk:
    """Consecutive rows of one source file."""

    table: pa.Table  # source columns (text for CSV / JSON Lines, native types for Parquet)
    rows: np.ndarray  # int64 1-based data row number of each table row
    malformed: list[Malformed] = field(default_factory=list)  # rows that are not records


# --------------------------------------------------------------------------------------------- file kinds


def _data_suffix(path: Path) -> str:
    """The extension that names the format, a compression suffix skipped (``x.csv.gz`` -> ``.csv``)."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in CODEC_BY_EXTENSION:
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def _codec(path: Path) -> str | None:
    return CODEC_BY_EXTENSION.get(path.suffix.lower())


def file_format(path: Path, source: SourceSpec) -> str:
    """The format of ``path``: the mapping's ``source.format``, else from its extension."""
    if source.format:
        return source.format
    suffix = _data_suffix(path)
    if suffix not in FORMAT_BY_EXTENSION:
        raise IngestError(
            f"{path}: cannot tell the format from the extension {suffix!r}; set source.format to csv, "
            "parquet or jsonl in the mapping"
        )
    return FORMAT_BY_EXTENSION[suffix]


def csv_delimiter(path: Path, source: SourceSpec) -> str:
    """The mapping's ``source.delimiter``, else a tab for ``.tsv`` files and a comma for the rest."""
    if source.delimiter is not None:
        return source.delimiter
    return "\t" if _data_suffix(path) == ".tsv" else ","


def _require_columns(display: str, present: list[str], needed: dict[str, str], delimiter: str | None = None) -> None:
    missing = [column for column in needed if column not in present]
    if not missing:
        return
    described = ", ".join(f"{column!r} (mapped to {needed[column]})" for column in missing)
    hint = ""
    if delimiter is not None and len(present) == 1:
        hint = f"; only one column was found — is source.delimiter {delimiter!r} right for this file?"
    raise IngestError(f"{display}: required column {described} is missing; columns present: {present}{hint}")


def _arrow_hint(error: Exception) -> str:
    message = str(error)
    if "UTF8" in message or "utf-8" in message.lower() or isinstance(error, UnicodeDecodeError):
        message += " (if the file is not UTF-8, set source.encoding in the mapping, e.g. cp1250)"
    return message


# --------------------------------------------------------------------------------------------- any format


def read_chunks(path: Path, fmt: str, source: SourceSpec, needed: dict[str, str], keys: dict[str, str],
                chunk_rows: int, on_bytes: OnBytes, seen_columns: set[str]) -> Iterator[SourceChunk]:
    """``path`` (of format ``fmt``) in chunks of exactly ``chunk_rows`` rows (the last may be smaller).

    ``needed`` maps every source column the mapping reads to the canonical field it feeds; a file without
    one of them is refused (JSON Lines records may omit columns: only the ``keys`` are required, in the
    first record, and every column seen is added to ``seen_columns``).
    """
    display = str(path)
    if fmt == "csv":
        chunks = _read_csv(path, display, source, needed, on_bytes)
    elif fmt == "parquet":
        chunks = _read_parquet(path, display, needed, chunk_rows, on_bytes)
    else:
        chunks = _read_jsonl(path, display, source, keys, chunk_rows, on_bytes, seen_columns)
    return _rebatch(chunks, chunk_rows)


def _rebatch(chunks: Iterable[SourceChunk], size: int) -> Iterator[SourceChunk]:
    """Regroup source chunks into chunks of exactly ``size`` rows (the last may be smaller)."""
    tables: list[pa.Table] = []
    rows: list[np.ndarray] = []
    malformed: list[Malformed] = []
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


# --------------------------------------------------------------------------------------------- CSV


class _CsvRowNumbers:
    """Numbers the rows Arrow parses, counting the malformed lines it skipped (reported through
    :meth:`on_invalid_row`) so that every row keeps its place in the file."""

    def __init__(self, header_lines: int, delimiter: str) -> None:
        self.header_lines = header_lines
        self.delimiter = delimiter
        self.next_row = 1  # data row number of the next parsed row
        self.invalid: list[tuple[int, str, int, int]] = []  # (line, text, expected fields, found) from Arrow
        self._pending: list[int] = []  # malformed rows not yet placed before a parsed row
        self._texts: dict[int, str] = {}
        self._expected: dict[int, str] = {}

    def on_invalid_row(self, row: Any) -> str:
        """Arrow's invalid_row_handler: remember the line, skip it."""
        self.invalid.append((row.number, row.text, row.expected_columns, row.actual_columns))
        return "skip"

    def _collect(self) -> None:
        for line, text, want, got in self.invalid:
            # Arrow gives no line number (0 or less) when it cannot tell it: place the row at the current one
            row = line - self.header_lines if line > 0 else self.next_row
            self._pending.append(row)
            self._texts[row] = text
            self._expected[row] = f"{want} fields separated by {self.delimiter!r}, found {got}"
        self.invalid.clear()

    def number(self, num_rows: int) -> tuple[np.ndarray, list[Malformed]]:
        """Row numbers of the next ``num_rows`` parsed rows and the malformed rows that fall among them."""
        self._collect()
        self._pending.sort()
        numbers = np.arange(self.next_row, self.next_row + num_rows, dtype=np.int64)
        placed: list[Malformed] = []
        while self._pending and num_rows and self._pending[0] <= numbers[-1]:
            row = self._pending.pop(0)
            numbers[numbers >= row] += 1  # a malformed row takes its number; the parsed rows after it move on
            placed.append((row, self._texts.pop(row), self._expected.pop(row)))
        if num_rows:
            self.next_row = int(numbers[-1]) + 1
        return numbers, placed

    def leftover(self) -> list[Malformed]:
        """The malformed rows after the last parsed row."""
        self._collect()
        return [(row, self._texts[row], self._expected[row]) for row in sorted(self._pending)]


def _open_csv(path: Path, spec: SourceSpec, delimiter: str, rows: _CsvRowNumbers,
              column_types: dict[str, pa.DataType] | None) -> tuple[pa.NativeFile, Any]:
    """The raw file (its position measures progress) and an Arrow streaming reader over it."""
    # with column names given and a header present, the header line is skipped rather than read
    skip = spec.skip_rows + (1 if spec.header and spec.column_names else 0)
    raw = pa.OSFile(str(path), "rb")
    stream = pa.CompressedInputStream(raw, _codec(path)) if _codec(path) else raw
    reader = pa_csv.open_csv(
        stream,
        read_options=pa_csv.ReadOptions(use_threads=False, skip_rows=skip, encoding=spec.encoding,
                                        column_names=spec.column_names),
        parse_options=pa_csv.ParseOptions(delimiter=delimiter, quote_char=spec.quote_char or False,
                                          escape_char=spec.escape_char or False,
                                          invalid_row_handler=rows.on_invalid_row),
        convert_options=pa_csv.ConvertOptions(column_types=column_types or {}, strings_can_be_null=False),
    )
    return raw, reader


def _open_csv_as_text(path: Path, display: str, spec: SourceSpec, delimiter: str, needed: dict[str, str],
                      rows: _CsvRowNumbers) -> tuple[pa.NativeFile, Any]:
    """Check the header names the needed columns, then open the file reading every column as text."""
    try:
        # a first reader only learns the column names, so the real one can read them all as strings
        # (Arrow's type inference would turn account numbers into integers and "01" into 1)
        raw, probe = _open_csv(path, spec, delimiter, rows, None)
        names = probe.schema.names
        probe.close()
        raw.close()
        rows.invalid.clear()  # the probe's invalid rows are met again by the real reader
        _require_columns(display, names, needed, delimiter)
        return _open_csv(path, spec, delimiter, rows, dict.fromkeys(names, pa.string()))
    except (pa.ArrowInvalid, UnicodeDecodeError) as error:
        raise IngestError(f"{display}: cannot read the CSV header: {_arrow_hint(error)}") from error
    except READ_ERRORS as error:  # unreadable, or a compressed file truncated before its first block ends
        raise IngestError(read_error_message(display, error, "read the CSV header")) from error


def _read_csv(path: Path, display: str, spec: SourceSpec, needed: dict[str, str],
              on_bytes: OnBytes) -> Iterator[SourceChunk]:
    delimiter = csv_delimiter(path, spec)
    rows = _CsvRowNumbers(spec.skip_rows + (1 if spec.header else 0), delimiter)
    raw, reader = _open_csv_as_text(path, display, spec, delimiter, needed, rows)
    try:
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            except (pa.ArrowInvalid, UnicodeDecodeError) as error:
                raise IngestError(f"{display}: cannot read CSV near data row {rows.next_row}: "
                                  f"{_arrow_hint(error)}") from error
            except READ_ERRORS as error:  # a truncated .gz / .bz2 / .zst, a disk error
                raise IngestError(read_error_message(display, error, f"read CSV near data row {rows.next_row}")
                                  ) from error
            numbers, malformed = rows.number(batch.num_rows)
            on_bytes(raw.tell())
            yield SourceChunk(pa.Table.from_batches([batch]), numbers, malformed)
        leftover = rows.leftover()
        if leftover:
            yield SourceChunk(pa.table({}), np.zeros(0, np.int64), leftover)
    finally:
        reader.close()
        raw.close()


# --------------------------------------------------------------------------------------------- Parquet


def _read_parquet(path: Path, display: str, needed: dict[str, str], chunk_rows: int,
                  on_bytes: OnBytes) -> Iterator[SourceChunk]:
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
        batches = parquet.iter_batches(batch_size=chunk_rows, columns=list(needed), use_threads=False)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            except READ_ERRORS as error:  # a corrupt page or a truncated file
                raise IngestError(read_error_message(display, error, f"read Parquet near data row {next_row}")
                                  ) from error
            numbers = np.arange(next_row, next_row + batch.num_rows, dtype=np.int64)
            next_row += batch.num_rows
            # Parquet is read by row groups, not bytes: progress is the share of rows read
            on_bytes(int(size * (next_row - 1) / total_rows))
            yield SourceChunk(pa.Table.from_batches([batch]), numbers)


# --------------------------------------------------------------------------------------------- JSON Lines


def _decompressed(raw: io.BufferedIOBase, codec: str | None, display: str) -> io.BufferedIOBase:
    if codec == "gzip":
        return gzip.GzipFile(fileobj=raw)
    if codec == "bz2":
        return bz2.BZ2File(raw)
    if codec is None:
        return raw
    raise IngestError(f"{display}: JSON Lines files compressed with {codec} are not supported (gz, bz2 are)")


def _jsonl_lines(lines: Iterable[bytes], display: str, encoding: str, key_columns: dict[str, str]
                 ) -> Iterator[tuple[int, dict[str, Any] | None, Malformed | None]]:
    """(line number, record, None) for each JSON object, (line number, None, malformed) for each other
    non-blank line. The first record must hold the key columns."""
    first_record = True
    for line_number, line in enumerate(lines, start=1):
        try:
            text = line.decode(encoding).strip()
        except UnicodeDecodeError as error:
            yield line_number, None, (line_number, line.decode(encoding, "replace").strip(),
                                      f"text in {encoding} ({error.reason}; set source.encoding)")
            continue
        if text == "":
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as error:
            record = error
        except RecursionError:  # nesting deeper than Python's recursion limit: a malformed row, not a crash
            record = ValueError("nested too deeply")
        if first_record and not isinstance(record, dict) and text.startswith("["):
            raise IngestError(
                f"{display}: line {line_number} starts a JSON array, but ingest reads JSON Lines (one "
                "object per line); convert it first, e.g. jq -c '.[]' file.json > file.jsonl"
            )
        if isinstance(record, dict):
            if first_record:
                _require_columns(display, list(record), key_columns)
                first_record = False
            yield line_number, record, None
        else:
            got = f"invalid JSON ({record})" if isinstance(record, Exception) else type(record).__name__
            yield line_number, None, (line_number, text, f"one JSON object per line, found {got}")


def _read_jsonl(path: Path, display: str, spec: SourceSpec, key_columns: dict[str, str], chunk_rows: int,
                on_bytes: OnBytes, seen_columns: set[str]) -> Iterator[SourceChunk]:
    raw = open(path, "rb")  # closed in the finally below
    try:
        lines = _decompressed(raw, _codec(path), display)
        records: list[dict[str, Any]] = []
        numbers: list[int] = []
        malformed: list[Malformed] = []
        try:
            for line_number, record, bad in _jsonl_lines(lines, display, spec.encoding, key_columns):
                if record is not None:
                    records.append(record)
                    numbers.append(line_number)
                else:
                    assert bad is not None
                    malformed.append(bad)
                if len(records) + len(malformed) >= chunk_rows:
                    on_bytes(raw.tell())
                    yield _jsonl_chunk(records, numbers, malformed, seen_columns)
                    records, numbers, malformed = [], [], []
        except READ_ERRORS as error:  # a truncated .gz / .bz2, a disk error
            raise IngestError(read_error_message(display, error)) from error
        if records or malformed:
            on_bytes(raw.tell())
            yield _jsonl_chunk(records, numbers, malformed, seen_columns)
    finally:
        raw.close()


def _json_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _jsonl_chunk(records: list[dict[str, Any]], numbers: list[int], malformed: list[Malformed],
                 seen_columns: set[str]) -> SourceChunk:
    """Records as a table of text columns (nested values as JSON text), one column per key seen."""
    keys: dict[str, None] = {}
    for record in records:
        keys.update(dict.fromkeys(record))
    seen_columns.update(keys)
    table = pa.table({key: pa.array([_json_text(r.get(key)) for r in records], pa.string()) for key in keys})
    if not keys:  # records without any key: keep their count, every mapped column will read as null
        table = pa.table({NO_COLUMNS: pa.nulls(len(records), pa.string())})
    return SourceChunk(table, np.asarray(numbers, dtype=np.int64), malformed)

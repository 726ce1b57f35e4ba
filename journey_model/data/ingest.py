"""``journey ingest``: raw CSV / Parquet / JSON Lines event files in, canonical event Parquet out — the job.

A *mapping* (YAML; format in ``docs/mapping-format.md``, parsed by :mod:`journey_model.data.mapping`) says how
one source layout becomes the canonical schema of :mod:`journey_model.data.schema`. :func:`ingest` streams
the inputs chunk by chunk (:mod:`journey_model.data.readers`; memory stays flat however large the files
are), maps and validates every row (:mod:`journey_model.data.transform`, :mod:`journey_model.data.validation`),
writes the good rows and records every bad one with its reason: nothing is dropped silently,
``rows_read == rows_written + rows_rejected`` always. This module holds the job itself: the output folder,
the rejects, the report and :class:`IngestConfig` for the CLI.

Output folder
-------------
* ``DIR/events/part-00000.parquet`` … one part per chunk of ``chunk_rows`` source rows (its valid rows),
  canonical schema, source order (no sorting; an all-invalid input still gets one empty part);
  ``DIR/dataset.yaml``. For labels: ``DIR/labels.parquet``, one file.
* ``DIR/rejects/part-*.parquet`` (only when rows were rejected): source file, 1-based data row number
  (JSON Lines: line number; see :mod:`journey_model.data.readers`), column, target, reason, the offending
  value, what was expected and the whole raw row as JSON text. Reasons are listed in
  :mod:`journey_model.data.validation`.
* ``DIR/ingest_report.json`` is written last; its presence marks a complete ingest. Every file appears
  atomically (temporary name, then ``os.replace``).

Re-runs: an ``out_dir`` that holds a complete ingest is refused (remove it or choose another folder); the
partial output of an interrupted run (no report) is removed first — only the names listed above, never
anything else in the folder.

``strict=True`` raises :class:`IngestError` at the first invalid row instead of rejecting it. Any failure
while reading removes what the run wrote (and the output folder when the run created it and it is empty).

``max_reject_rate`` (default 0.05): when more than that share of the rows read is rejected, the ingest fails
with :class:`IngestError` giving the rate and the rejects folder; the rejects stay for a look, the events /
labels and ``dataset.yaml`` are removed and no report is written, so nothing downstream takes the output for
a good one. A mapping mistake (wrong timestamp format, delimiter or column) rejects most rows; a real source
rarely rejects more than a few per cent. ``1.0`` turns the check off.

Pseudonymisation (``pseudonymise=True``, or a mapping that lists ``pseudonymise: [field, ...]``): customer
ids (and the listed text fields) are written as keyed pseudonyms (:mod:`journey_model.core.pseudonyms`,
key from ``JOURNEY_PSEUDONYM_KEY``); they are replaced right after reading, before any check, so the
rejects hold pseudonyms too, and the raw text of malformed rows is redacted. The report records which
fields were pseudonymised and the key's public tag, never the key.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from journey_model.core.files import StagedFile, atomic_path, remove_stale_temporaries, write_text_atomic
from journey_model.core.pseudonyms import key_from_env, key_id, pseudonymise
from journey_model.core.settings import option
from journey_model.data.mapping import CUTOFF, IngestError, IngestMapping, resolve_mapping
from journey_model.data.readers import OnBytes, SourceChunk, file_format, read_chunks
from journey_model.data.schema import CUSTOMER_ID, TIMESTAMP
from journey_model.data.transform import ChunkResult, labels_schema, transform_chunk
from journey_model.data.validation import clean_strings, first_reject_message

__all__ = ["DATASET_FILE", "EVENTS_DIR", "LABELS_FILE", "REJECTS_DIR", "REPORT_FILE", "IngestConfig", "IngestError",
           "IngestReport", "ingest"]

EVENTS_DIR = "events"
REJECTS_DIR = "rejects"
DATASET_FILE = "dataset.yaml"
LABELS_FILE = "labels.parquet"
REPORT_FILE = "ingest_report.json"


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


def _remove_outputs(out: Path, folders: tuple[str, ...] = (EVENTS_DIR, REJECTS_DIR)) -> None:
    """Remove ingest's own outputs from ``out`` (never anything else there)."""
    for name in folders:
        if (out / name).is_dir():
            shutil.rmtree(out / name)
    for name in (DATASET_FILE, LABELS_FILE):
        (out / name).unlink(missing_ok=True)
    remove_stale_temporaries(out)


def _prepare_output(out: Path) -> bool:
    """Refuse a folder holding a complete ingest; remove the partial output of an interrupted one.

    Returns whether the folder was created here (a failed run then removes it again when it is empty)."""
    if out.exists() and not out.is_dir():
        raise IngestError(f"output {out} exists and is not a folder")
    if (out / REPORT_FILE).exists():
        raise IngestError(
            f"{out} already holds a complete ingest ({REPORT_FILE} is present); remove the folder or choose "
            "another output folder"
        )
    created = not out.exists()
    if not created:
        _remove_outputs(out)
    out.mkdir(parents=True, exist_ok=True)
    return created


class _Outputs:
    """Everything one ingest writes besides the report: event parts or the labels file, reject parts and
    dataset.yaml."""

    def __init__(self, out: Path, spec: IngestMapping, chunk_rows: int) -> None:
        self.out = out
        self.spec = spec
        self.events = _PartWriter(out / EVENTS_DIR)
        self.rejects = _RejectSink(out / REJECTS_DIR, flush_rows=chunk_rows)
        self.labels: _LabelsWriter | None = None
        if spec.kind == "labels":
            assert spec.labels is not None
            self.labels = _LabelsWriter(out / LABELS_FILE, labels_schema([t.name for t in spec.labels.targets]))

    def write(self, result: ChunkResult) -> None:
        if result.good.num_rows:
            if self.labels is not None:
                self.labels.write(result.good)
            else:
                self.events.write(result.good)
        self.rejects.add(result.rejects)

    def finish(self) -> None:
        """Flush the rejects, close the labels file or complete the events folder (dataset.yaml)."""
        self.rejects.flush()
        if self.labels is not None:
            self.labels.close()
            return
        assert self.spec.dataset is not None
        if self.events.parts == 0:  # readers of the folder expect at least one part, even an empty one
            self.events.write(self.spec.dataset.arrow_schema().empty_table())
        with atomic_path(self.out / DATASET_FILE) as temporary:
            self.spec.dataset.save(temporary)

    def abort(self) -> None:
        """After a failure: drop the labels file being written (event and reject parts are whole files)."""
        if self.labels is not None:
            self.labels.abort()


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
    pseudonymised: list[str] = field(default_factory=list)  # canonical fields written as keyed pseudonyms
    pseudonym_key_id: str | None = None  # public tag of the key used (core.pseudonyms.key_id), never the key
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
        if self.pseudonymised:
            lines.append(f"  pseudonymised: {', '.join(self.pseudonymised)} (key {self.pseudonym_key_id})")
        lines += [f"  warning: {warning}" for warning in self.warnings]
        return "\n".join(lines)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


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
    max_reject_rate: float = option(0.05, "fail (non-zero exit, rejects kept in DIR/rejects, no events) when more "
                                    "than this share of the rows read is rejected: a mapping mistake rejects most "
                                    "rows, a real source a few per cent at most; 1 = never [share 0..1]")
    pseudonymise: bool = option(False, "write customer ids (and the mapping's pseudonymise: fields) as keyed "
                                "HMAC-SHA256 pseudonyms; the key comes from JOURNEY_PSEUDONYM_KEY")
    chunk_rows: int = option(200_000, "rows read per chunk [rows]")


class _Run:
    """One ingest in progress: the mapping, what it writes and the totals of the chunks done so far."""

    def __init__(self, spec: IngestMapping, out: Path, chunk_rows: int, strict: bool,
                 pseudonyms: tuple[dict[str, str], bytes] | None = None) -> None:
        self.spec = spec
        self.chunk_rows = chunk_rows
        self.strict = strict
        self.pseudonyms = pseudonyms  # (source column -> canonical field, key), or None
        self.needed = spec.source_columns()
        self.keys = {column: self.needed[column] for column in spec.key_columns()}
        self.time_field = CUTOFF if spec.kind == "labels" else TIMESTAMP
        self.outputs = _Outputs(out, spec, chunk_rows)
        self.rows_by_file: dict[str, dict[str, int]] = {}
        self.rejects_by_reason: Counter = Counter()
        self.reject_examples: dict[str, str] = {}
        self.event_types: Counter = Counter()
        self.unmapped: Counter = Counter()
        self.label_counts: dict[str, Counter] = {}
        self.ts_range: list[datetime] = []  # the earliest and latest written instant
        self.warnings: list[str] = []

    def read_file(self, path: Path, fmt: str, on_bytes: OnBytes) -> None:
        """Map, write and count every chunk of one input file."""
        display = str(path)
        seen_columns: set[str] = set()
        counts = {"read": 0, "written": 0, "rejected": 0}
        for chunk in read_chunks(path, fmt, self.spec.source, self.needed, self.keys, self.chunk_rows, on_bytes,
                                 seen_columns):
            if self.pseudonyms is not None:
                chunk = self._pseudonymised(chunk)
            result = transform_chunk(chunk, self.spec, display)
            if self.strict and result.rejects.num_rows:
                message = first_reject_message(result.rejects)
                raise IngestError(f"{message} (strict mode stops at the first invalid row)")
            self.outputs.write(result)
            self._add(result)
            counts["read"] += chunk.table.num_rows + len(chunk.malformed)
            counts["written"] += result.good.num_rows
            counts["rejected"] += result.rejects.num_rows
        on_bytes(path.stat().st_size)
        self.rows_by_file[display] = counts
        if fmt == "jsonl" and counts["read"]:
            # JSON Lines records may leave out columns; one that never appears is most likely misspelt
            never = sorted(set(self.needed) - seen_columns - set(self.spec.key_columns()))
            if never:
                self.warnings.append(f"{display}: mapped columns {never} never appear; they are all null")

    def _pseudonymised(self, chunk: SourceChunk) -> SourceChunk:
        """``chunk`` with the pseudonymised source columns replaced, cleaned as ingest cleans text first (so that
        " c1" and "c1" get one pseudonym and an empty id stays missing), and malformed rows' text redacted."""
        assert self.pseudonyms is not None
        columns, key = self.pseudonyms
        table = chunk.table
        for name in columns:
            if name in table.column_names:
                cleaned = clean_strings(table.column(name).combine_chunks(),
                                        frozenset(self.spec.source.null_values), self.spec.source.strip)
                table = table.set_column(table.column_names.index(name), name, pseudonymise(cleaned, key))
        malformed = [(row, f"<redacted: pseudonymisation is on; {len(text)} characters>", expected)
                     for row, text, expected in chunk.malformed]
        return SourceChunk(table, chunk.rows, malformed)

    def _add(self, result: ChunkResult) -> None:
        if result.good.num_rows:
            low_high = pc.min_max(result.good.column(self.time_field)).as_py()
            instants = [*self.ts_range, low_high["min"], low_high["max"]]
            self.ts_range = [min(instants), max(instants)]
        reasons = result.rejects.column("reason").to_pylist()
        self.rejects_by_reason.update(reasons)
        for reason in sorted(set(reasons) - set(self.reject_examples)):
            first = result.rejects.slice(reasons.index(reason), 1)  # rejects are in row order
            self.reject_examples[reason] = first_reject_message(first) or reason
        self.event_types.update(result.event_types)
        self.unmapped.update(result.unmapped)
        for target, target_counts in result.label_counts.items():
            self.label_counts.setdefault(target, Counter()).update(target_counts)


def _file_progress(bar: tqdm, path: Path) -> OnBytes:
    """A callback that moves ``bar`` (in bytes over all files) to the position a reader reached in ``path``."""
    bar.set_postfix_str(path.name)
    done_before = bar.n

    def on_bytes(position: int) -> None:
        bar.update(max(0, done_before + position - bar.n))

    return on_bytes


def _pseudonym_plan(spec: IngestMapping, pseudonymise: bool) -> tuple[list[str], bytes | None]:
    """The canonical fields to pseudonymise and the key (read, and checked, before anything is written)."""
    fields = list(spec.pseudonymise)
    if not (pseudonymise or fields):
        return [], None
    if CUSTOMER_ID not in fields:
        fields.insert(0, CUSTOMER_ID)
    return fields, key_from_env()


def _check_reject_rate(report: IngestReport, out: Path, max_reject_rate: float) -> None:
    """Fail when too many rows were rejected: keep the rejects, remove what downstream steps would read."""
    if not report.rows_read or report.rows_rejected <= max_reject_rate * report.rows_read:
        return
    _remove_outputs(out, folders=(EVENTS_DIR,))
    reasons = ", ".join(f"{reason} {count:,}" for reason, count in
                        sorted(report.rejects_by_reason.items(), key=lambda kv: -kv[1])[:3])
    rate = report.rows_rejected / report.rows_read
    raise IngestError(
        f"{report.rows_rejected:,} of {report.rows_read:,} rows rejected ({rate:.1%}, above --max-reject-rate "
        f"{max_reject_rate:.1%}; {reasons}); the rejects are in {out / REJECTS_DIR}, no {report.kind} were kept. "
        "Fix the mapping, or raise --max-reject-rate for a source known to be dirty"
    )


def ingest(inputs: list[str | Path], mapping: str | Path, out_dir: str | Path, *, strict: bool = False,
           chunk_rows: int = 200_000, progress: bool = True, max_reject_rate: float = 0.05,
           pseudonymise: bool = False) -> IngestReport:
    """Read ``inputs`` with ``mapping`` (a file or built-in name) and write a canonical folder ``out_dir``.

    Streams ``chunk_rows`` rows at a time. Invalid rows go to ``out_dir/rejects`` with their reason, or,
    with ``strict``, the first one raises :class:`IngestError`; more than ``max_reject_rate`` of the rows
    rejected raises too. ``pseudonymise`` writes customer ids (and the mapping's ``pseudonymise:`` fields)
    as keyed pseudonyms. Returns the report also saved as ``out_dir/ingest_report.json`` (written last).
    """
    started = time.perf_counter()
    if chunk_rows < 1:
        raise IngestError(f"chunk_rows must be >= 1, got {chunk_rows}")
    if not 0.0 <= max_reject_rate <= 1.0:
        raise IngestError(f"max_reject_rate must be between 0 and 1, got {max_reject_rate}")
    mapping_path = resolve_mapping(mapping)
    spec = IngestMapping.load(mapping_path)
    files = _expand_inputs(inputs)
    # every file's format is known (or refused), and the key read, before anything is written
    formats = {path: file_format(path, spec.source) for path in files}
    fields, key = _pseudonym_plan(spec, pseudonymise)
    out = Path(out_dir)
    created = _prepare_output(out)

    pseudonyms = (spec.pseudonymised_columns(fields), key) if key is not None else None
    run = _Run(spec, out, chunk_rows, strict, pseudonyms)
    bar = tqdm(total=sum(p.stat().st_size for p in files), unit="B", unit_scale=True, desc="ingest",
               disable=not progress, file=sys.stderr)
    completed = False
    try:
        for path in files:
            run.read_file(path, formats[path], _file_progress(bar, path))
        run.outputs.finish()
        completed = True
    finally:
        bar.close()
        if not completed:
            run.outputs.abort()
            _remove_outputs(out)  # nothing of a failed run stays behind (--strict, a corrupt file, Ctrl-C)
            if created and not any(out.iterdir()):
                out.rmdir()

    report = _report(run, files, out, str(mapping_path), started)
    if key is not None:
        report.pseudonymised = fields
        report.pseudonym_key_id = key_id(key)
    _check_reject_rate(report, out, max_reject_rate)
    write_text_atomic(out / REPORT_FILE, json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n")
    return report


def _report(run: _Run, files: list[Path], out: Path, mapping_path: str, started: float) -> IngestReport:
    """The report of a finished run, its totals checked against each other."""
    spec = run.spec
    files_counts = run.rows_by_file.values()
    report = IngestReport(
        rows_read=sum(c["read"] for c in files_counts), rows_written=sum(c["written"] for c in files_counts),
        rows_rejected=sum(c["rejected"] for c in files_counts), rejects_by_reason=dict(run.rejects_by_reason),
        files=[str(p) for p in files], out_dir=str(out), kind=spec.kind, mapping=mapping_path,
        dataset=spec.dataset.name if spec.dataset else None, rows_by_file=run.rows_by_file,
        reject_examples=run.reject_examples, event_types=dict(run.event_types.most_common()),
        label_counts={target: dict(counts) for target, counts in run.label_counts.items()},
        chunk_rows=run.chunk_rows,
    )
    if run.ts_range:
        report.ts_min, report.ts_max = _iso(min(run.ts_range)), _iso(max(run.ts_range))
    report.warnings = [*run.warnings, *_warnings(spec, report, run.unmapped)]
    if report.rows_read != report.rows_written + report.rows_rejected:
        raise IngestError(f"internal error: read {report.rows_read} rows but wrote {report.rows_written} and "
                          f"rejected {report.rows_rejected}")
    report.elapsed_s = round(time.perf_counter() - started, 3)
    report.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
    return report

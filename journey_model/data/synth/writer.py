"""Writing a synthetic-bank folder: the output folder's preparation, the Parquet writers, the run's report.

Every file appears atomically: event parts, ``labels.parquet`` and ``ground_truth.parquet`` are written
under hidden temporary names and renamed when complete, and ``synth_report.json`` is written last, so its
presence marks a complete folder. A rerun into a folder of an earlier synth run replaces that run's files;
a folder whose events are not a synth_bank output is refused.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from journey_model.core.files import StagedFile, atomic_path, remove_stale_temporaries, write_text_atomic
from journey_model.data.schema import DatasetConfig
from journey_model.data.synth import rules
from journey_model.data.synth.block import GROUND_TRUTH_SCHEMA, LABELS_SCHEMA, BlockOutput
from journey_model.data.synth.profiles import EVENT_TYPES, SynthError

DATASET_NAME = "synth_bank"
ROW_GROUP_EVENTS = 500_000  # events buffered per Parquet row group (memory vs compression)


@dataclass
class SynthReport:
    """What ``generate`` wrote; also saved as ``synth_report.json`` (written last)."""

    out_dir: str  # output folder
    customers: int  # customers generated (all labelled)
    events: int  # events written
    parts: int  # event Parquet parts written
    seed: int  # random seed
    start: str  # first day of the window (ISO date)
    months: int  # window length, months
    horizon_days: int  # outcome horizon after the cut-off, days
    cutoffs: list[str]  # the cut-off dates customers are spread over (ISO dates, midnight UTC)
    label_counts: dict[str, int]  # positives per target
    label_rates: dict[str, float]  # positive rate per target
    ground_truth_rows: dict[str, int]  # ground-truth rows per rule name
    events_by_type: dict[str, int]  # events per event type
    seconds: float  # wall-clock time of the generation, s
    replaced_files: int = 0  # files of an earlier synth run in out_dir that this run removed

    def summary(self) -> str:
        rates = ", ".join(f"{t} {self.label_rates[t]:.1%} ({self.label_counts[t]})" for t in self.label_rates)
        per_customer = self.events / max(self.customers, 1)
        return (
            f"synth_bank: {self.customers:,} customers, {self.events:,} events ({per_customer:.0f}/customer) in "
            f"{self.parts} part(s) -> {self.out_dir}\n"
            f"  window {self.start} + {self.months} months; cut-offs {', '.join(self.cutoffs)}; "
            f"horizon {self.horizon_days} days; seed {self.seed}\n"
            f"  positives: {rates}\n"
            f"  {self.seconds:.1f} s ({self.customers / max(self.seconds, 1e-9):,.0f} customers/s, "
            f"{self.events / max(self.seconds, 1e-9):,.0f} events/s)"
            + (
                f"\n  replaced {self.replaced_files} file(s) of an earlier synth run"
                if self.replaced_files
                else ""
            )
        )

    def save(self, out: Path) -> None:
        """Write ``synth_report.json`` into ``out``: the mark of a complete folder, so it comes last."""
        write_text_atomic(out / "synth_report.json", json.dumps(asdict(self), indent=2) + "\n")


# ------------------------------------------------------------------------------------ the output folder
def prepare_out_dir(out: Path) -> int:
    """Make ``out`` ready; remove a previous synth run's outputs there. Returns the files removed."""
    out.mkdir(parents=True, exist_ok=True)
    events_dir = out / "events"
    old_parts = sorted(events_dir.glob("part-*.parquet")) if events_dir.is_dir() else []
    if old_parts:
        _refuse_foreign_events(out, events_dir, len(old_parts))
    removed = 0
    for stale in [
        *old_parts,
        *(events_dir.glob(".part-*.tmp") if events_dir.is_dir() else []),
        out / "synth_report.json",
        out / "labels.parquet",
        out / "ground_truth.parquet",
    ]:
        if stale.exists():
            stale.unlink()
            removed += 1
    # A killed run's temporaries of these files carry its pid, so no later write replaces them: remove them.
    remove_stale_temporaries(
        out, "dataset.yaml", "labels.parquet", "ground_truth.parquet", "synth_report.json"
    )
    events_dir.mkdir(parents=True, exist_ok=True)
    return removed


def _refuse_foreign_events(out: Path, events_dir: Path, parts: int) -> None:
    """Raise unless the event parts in ``events_dir`` are an earlier synth_bank run's (per dataset.yaml)."""
    previous = out / "dataset.yaml"
    name = None
    if previous.is_file():
        with open(previous) as handle:
            data = yaml.safe_load(handle) or {}
        name = (data.get("dataset", data) or {}).get("name") if isinstance(data, dict) else None
    if name != DATASET_NAME:
        raise SynthError(
            f"{events_dir} already holds {parts} event part(s) that are not a synth_bank output "
            f"({previous} names dataset {name!r}); choose an empty folder"
        )


# ----------------------------------------------------------------------------------------- event parts
class _PartWriter:
    """Streams events into ``part-NNNNN.parquet`` files one block slice at a time (memory: one block).

    Row groups hold about ROW_GROUP_EVENTS events. A part is written under a hidden temporary name and
    renamed when its last customer is in; its labels and ground-truth rows go to the run-wide writers then.
    """

    def __init__(
        self, folder: Path, schema: pa.Schema, label_writer: pq.ParquetWriter, truth_writer: pq.ParquetWriter
    ) -> None:
        self.folder, self.schema = folder, schema
        self.label_writer, self.truth_writer = label_writer, truth_writer
        self.index = 0  # parts finished so far
        self.events = 0  # events written in finished parts
        self.customers = 0  # customers in the part being written
        self._events_in_part = 0
        self._writer: pq.ParquetWriter | None = None
        self._part: StagedFile | None = None  # the part being written
        self._labels: list[pa.Table] = []
        self._truth: list[pa.Table] = []
        self._pending: list[pa.Table] = []  # events not yet written (one row group)
        self._pending_rows = 0

    def write(self, events: pa.Table, labels: pa.Table, truth: pa.Table) -> None:
        self._pending.append(events)
        self._pending_rows += events.num_rows
        if self._pending_rows >= ROW_GROUP_EVENTS:
            self._flush()
        self._labels.append(labels)
        self._truth.append(truth)
        self.customers += labels.num_rows
        self._events_in_part += events.num_rows

    def _flush(self) -> None:
        if self._writer is None:
            self._part = StagedFile(self.folder / f"part-{self.index:05d}.parquet")
            self._writer = pq.ParquetWriter(self._part.temporary, self.schema, compression="zstd")
        if self._pending:
            self._writer.write_table(
                pa.concat_tables(self._pending), row_group_size=max(self._pending_rows, 1)
            )
        self._pending, self._pending_rows = [], 0

    def finish_part(self) -> None:
        self._flush()
        assert self._writer is not None and self._part is not None
        self._writer.close()
        self._writer = None
        self._part.commit()
        self._part = None
        self.label_writer.write_table(pa.concat_tables(self._labels))
        self.truth_writer.write_table(pa.concat_tables(self._truth))
        self.index += 1
        self.events += self._events_in_part
        self.customers, self._events_in_part, self._labels, self._truth = 0, 0, [], []

    def abort(self) -> None:
        self._pending, self._pending_rows = [], 0
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._part is not None:
            self._part.discard()
            self._part = None


# ------------------------------------------------------------------------------------------- the run
class SynthWriter:
    """Writes one run into a prepared folder and counts what it wrote, for the report.

    The folder gets dataset.yaml first, then event parts of ``chunk_customers`` customers each, labels and
    ground truth.

    Call :meth:`write` per block, then :meth:`close` (publishes labels and ground truth), or :meth:`abort`
    on an error (drops the unfinished files; finished parts stay, and a rerun replaces them).
    """

    def __init__(self, out: Path, config: DatasetConfig, chunk_customers: int) -> None:
        with atomic_path(out / "dataset.yaml") as temporary:
            config.save(temporary)
        self.chunk_customers = chunk_customers
        self._labels_file = StagedFile(out / "labels.parquet")
        self._truth_file = StagedFile(out / "ground_truth.parquet")
        self._label_writer = pq.ParquetWriter(self._labels_file.temporary, LABELS_SCHEMA, compression="zstd")
        self._truth_writer = pq.ParquetWriter(
            self._truth_file.temporary, GROUND_TRUTH_SCHEMA, compression="zstd"
        )
        self._parts = _PartWriter(
            out / "events", config.arrow_schema(), self._label_writer, self._truth_writer
        )
        self.type_counts = np.zeros(len(EVENT_TYPES), dtype=np.int64)  # events per EVENT_TYPES code
        self.positives = dict.fromkeys(rules.TARGETS, 0)  # positive labels per target
        self.rule_rows: dict[str, int] = {}  # ground-truth rows per rule name

    @property
    def events(self) -> int:
        return self._parts.events

    @property
    def parts(self) -> int:
        return self._parts.index

    def write(self, output: BlockOutput) -> None:
        """Write a block's customers into the open part, starting a new part every ``chunk_customers``."""
        done = 0
        while done < output.customers:
            take = min(self.chunk_customers - self._parts.customers, output.customers - done)
            self._parts.write(*output.slice(done, done + take))
            if self._parts.customers == self.chunk_customers:
                self._parts.finish_part()
            done += take
        self._count(output)

    def _count(self, output: BlockOutput) -> None:
        self.type_counts += np.bincount(output.event_type_codes, minlength=len(EVENT_TYPES))
        for target in rules.TARGETS:
            self.positives[target] += int(pc.sum(output.labels.column(target)).as_py() or 0)
        rule = output.ground_truth.column("rule").to_numpy(zero_copy_only=False)
        for name, count in zip(*np.unique(rule, return_counts=True)):
            self.rule_rows[str(name)] = self.rule_rows.get(str(name), 0) + int(count)

    def close(self) -> None:
        """Finish the last part, then publish labels and ground truth."""
        if self._parts.customers:
            self._parts.finish_part()
        self._label_writer.close()
        self._truth_writer.close()
        self._labels_file.commit()
        self._truth_file.commit()

    def abort(self) -> None:
        self._parts.abort()
        for writer, staged in (
            (self._label_writer, self._labels_file),
            (self._truth_writer, self._truth_file),
        ):
            writer.close()
            staged.discard()

"""Customer partitioning of event logs: the first pass of every job that must see a customer's events together.

`journey prepare` and `journey score` both stream canonical event parts in record batches and spill every
event into one of N Parquet files by a stable hash of its customer id, so the second pass can hold one
partition — every event of its customers, and nothing else — at a time. Memory is then bounded by the
partition size, not by the input.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from journey_model.core.files import StagedFile, reading
from journey_model.data.schema import CUSTOMER_ID, DatasetConfig, conform_table


class PartitioningError(ValueError):
    """The event folder cannot be partitioned; the message names the folder."""


def customer_hash(customers: pa.Array | pa.ChunkedArray, salt: int = 0) -> np.ndarray:
    """A stable 64-bit hash per customer id (same id -> same value, across runs and machines)."""
    encoded = pc.dictionary_encode(customers)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    unique = encoded.dictionary.to_numpy(zero_copy_only=False).astype(object)
    hashed = pd.util.hash_array(unique, hash_key=f"journey{salt:09d}"[:16].ljust(16, "0"), categorize=False)
    return hashed[encoded.indices.to_numpy(zero_copy_only=False)]


def event_files(events_dir: Path) -> list[Path]:
    """The canonical event parts of a folder (``DIR/events/*.parquet``, or ``DIR/*.parquet``)."""
    folder = events_dir / "events" if (events_dir / "events").is_dir() else events_dir
    files = sorted(folder.glob("*.parquet"))
    if not files:
        raise PartitioningError(f"{events_dir}: no event Parquet files (expected {folder}/part-*.parquet)")
    return files


def partition_count(files: list[Path], events_per_partition: int) -> int:
    """How many partitions keep each near ``events_per_partition`` events (from Parquet metadata, no read)."""
    return max(1, -(-total_rows_of(files) // events_per_partition))


def total_rows_of(files: list[Path]) -> int:
    """Rows in all ``files``, from their Parquet footers (an unreadable file is named)."""
    total = 0
    for path in files:
        with reading(path, "read the Parquet footer"):
            total += pq.ParquetFile(path).metadata.num_rows
    return total


def _conformed_batches(path: Path, dataset: DatasetConfig, batch_rows: int) -> Iterator[pa.Table]:
    """The batches of one event file in the canonical schema; a corrupt page or a truncated file raises
    :class:`~journey_model.core.files.FileReadError` naming ``path``."""
    with reading(path, "read the event file"):
        parquet = pq.ParquetFile(path)
        present = [c for c in dataset.arrow_schema().names if c in parquet.schema_arrow.names]
        batches = parquet.iter_batches(batch_size=batch_rows, columns=present)
    while True:
        with reading(path, "read the event file"):
            batch = next(batches, None)
            if batch is None:
                return
            table = conform_table(pa.Table.from_batches([batch]), dataset, source=str(path))
        yield table


def spill_by_customer(
    files: list[Path],
    dataset: DatasetConfig,
    spill_dir: Path,
    partitions: int,
    batch_rows: int = 500_000,
    on_batch: Callable[[pa.Table], None] | None = None,
    progress: bool = True,
    desc: str = "spill",
    map_batch: Callable[[pa.Table], pa.Table] | None = None,
) -> list[int]:
    """Stream ``files`` and write each event to ``spill_dir/part-NNNNN.parquet`` by customer hash.

    Every batch is conformed to ``dataset``'s canonical schema (a bad column raises, naming the file) and
    handed to ``on_batch`` first, for work that reads every event once (statistics, counts); ``map_batch``
    may replace it before that (batch scoring's ``--pseudonymise`` replaces the customer ids). Parts are
    written under a temporary name and renamed only when the whole input has been read, so a spill folder
    never holds a part that looks complete but is not. Returns the partitions that received events.
    """
    spill_dir.mkdir(parents=True, exist_ok=True)
    schema = dataset.arrow_schema()
    writers: dict[int, pq.ParquetWriter] = {}
    staged: dict[int, StagedFile] = {}
    completed = False
    total_rows = total_rows_of(files)
    bar = tqdm(total=total_rows, unit="ev", unit_scale=True, desc=desc, disable=not progress)
    try:
        for path in files:
            for table in _conformed_batches(path, dataset, batch_rows):
                if map_batch is not None:
                    table = map_batch(table)
                if on_batch is not None:
                    on_batch(table)
                part = customer_hash(table.column(CUSTOMER_ID)) % partitions
                for p in np.unique(part):
                    if p not in writers:
                        staged[p] = StagedFile(spill_dir / f"part-{p:05d}.parquet")
                        writers[p] = pq.ParquetWriter(staged[p].temporary, schema, compression="lz4")
                    writers[p].write_table(table.filter(pa.array(part == p)))
                bar.update(table.num_rows)
        completed = True
    finally:
        bar.close()
        for writer in writers.values():
            writer.close()
        if not completed:
            for part_file in staged.values():
                part_file.discard()
    for part_file in staged.values():
        part_file.commit()
    return sorted(int(p) for p in writers)


def customer_ranges(files: list[Path], events_per_partition: int) -> list[tuple[int, list[int]]] | None:
    """Partitions of the input as it is, when it needs no spill: ``(file index, row groups)`` each, or None.

    The spill exists to bring each customer's events together. When every row group of every file holds a
    customer-id range (``min``..``max`` from its Parquet statistics, read from the footers only) that no other
    row group overlaps, no customer is in two row groups, so consecutive row groups of one file already are
    partitions of whole customers: they are grouped up to ``events_per_partition`` events each (the same memory
    bound as a spill partition). None — spill — when a statistic is missing, a customer id is null, two ranges
    overlap (a customer may span files or row groups, or the rows are not grouped by customer), or a single
    row group holds more than ``events_per_partition`` events.
    """
    units: list[tuple[str, str, int, int, int]] = []  # (min, max, file, row group, rows)
    for index, path in enumerate(files):
        with reading(path, "read the Parquet footer"):
            parquet = pq.ParquetFile(path)
        arrow_schema = parquet.schema_arrow
        if CUSTOMER_ID not in arrow_schema.names or arrow_schema.field(CUSTOMER_ID).type not in (
                pa.string(), pa.large_string()):
            return None
        metadata = parquet.metadata
        leaf = next((i for i in range(metadata.num_columns)
                     if metadata.schema.column(i).path == CUSTOMER_ID), None)
        if leaf is None:
            return None
        for group in range(metadata.num_row_groups):
            rows = metadata.row_group(group).num_rows
            if rows == 0:
                continue
            stats = metadata.row_group(group).column(leaf).statistics
            if (stats is None or not stats.has_min_max or not stats.has_null_count or stats.null_count
                    or rows > events_per_partition):
                return None
            low, high = stats.min, stats.max
            if isinstance(low, bytes) or isinstance(high, bytes):
                low, high = bytes(low).decode(), bytes(high).decode()
            units.append((low, high, index, group, rows))
    if not units:
        return None
    ordered = sorted(units)
    for (_, high, *_), (low, *_) in zip(ordered, ordered[1:], strict=False):
        if not high < low:  # str order = UTF-8 byte order = Parquet's order of string statistics
            return None
    partitions: list[tuple[int, list[int]]] = []
    size = 0
    for _, _, index, group, rows in units:  # file order, row-group order
        if partitions and partitions[-1][0] == index and size + rows <= events_per_partition:
            partitions[-1][1].append(group)
            size += rows
        else:
            partitions.append((index, [group]))
            size = rows
    return partitions


def read_partition(path: Path, row_groups: list[int], dataset: DatasetConfig) -> pa.Table:
    """Row groups of one event file in the canonical schema (as :func:`spill_by_customer` would have spilled
    them); an unreadable file raises :class:`~journey_model.core.files.FileReadError` naming ``path``."""
    with reading(path, "read the event file"):
        parquet = pq.ParquetFile(path)
        present = [c for c in dataset.arrow_schema().names if c in parquet.schema_arrow.names]
        table = parquet.read_row_groups(row_groups, columns=present)
        return conform_table(table, dataset, source=str(path))

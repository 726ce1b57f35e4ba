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

"""A LightningDataModule over a prepared dataset: columnar in memory, length-bucketed, padded per batch.

Each split is read once from its Parquet parts into flat NumPy arrays (values + offsets per list column),
which keeps a million examples in a few hundred MB and lets worker processes share them copy-on-write.
Batches are padded to their own longest sequence by :func:`journey_model.data.batch.collate_examples`; with
length bucketing, examples of similar length are batched together (shuffled within a window of
``bucket_window`` batches), which cuts the padding — and the compute spent on it — on skewed lengths.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import numpy as np
import pyarrow as pa
from torch.utils.data import DataLoader, Dataset, Sampler

from journey_model.data.batch import SequenceBatch, collate_examples
from journey_model.data.features import FeatureSpec
from journey_model.data.prepare import SPLITS, read_split
from journey_model.data.preprocessing import Preprocessor


class PreparedSequences(Dataset):
    """One split of a prepared dataset as a map-style dataset of example dicts."""

    def __init__(self, table: pa.Table) -> None:
        self.num_rows = table.num_rows
        self.lists: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.scalars: dict[str, np.ndarray] = {}
        for name in table.column_names:
            column = table.column(name).combine_chunks() if table.num_rows else table.column(name)
            if isinstance(column, pa.ChunkedArray):  # empty table
                column = pa.array([], type=column.type)
            if pa.types.is_list(column.type):
                if name == "event_id":
                    continue  # kept in the Parquet for explanations; training does not read it
                offsets = column.offsets.to_numpy()
                values = column.flatten().to_numpy(zero_copy_only=False)
                self.lists[name] = (values, offsets - offsets[0] if offsets.size else offsets)
            elif name == "customer_id":
                self.scalars[name] = np.asarray(column.to_pylist(), dtype=object)
            elif pa.types.is_timestamp(column.type):
                continue
            else:
                self.scalars[name] = column.to_numpy(zero_copy_only=False)
        self.lengths = np.diff(self.lists["event_type"][1]) if "event_type" in self.lists else np.zeros(0, int)

    def __len__(self) -> int:
        return self.num_rows

    def __getitem__(self, index: int) -> dict[str, object]:
        example: dict[str, object] = {}
        for name, (values, offsets) in self.lists.items():
            example[name] = values[offsets[index] : offsets[index + 1]]
        for name, values in self.scalars.items():
            value = values[index]
            example[name] = None if isinstance(value, float) and math.isnan(value) else value
        return example


class LengthBucketBatchSampler(Sampler[list[int]]):
    """Global batches of similar-length examples, reshuffled each epoch (``set_epoch``).

    Indices are shuffled, cut into windows of ``batch_size * bucket_window``, sorted by length within each
    window and cut into batches; the batches are shuffled again. ``bucket_window=0`` turns bucketing off.
    Under DDP, :class:`RankSliceBatchSampler` gives each process its share of every global batch.
    """

    def __init__(
        self,
        lengths: np.ndarray,
        batch_size: int,
        shuffle: bool = True,
        bucket_window: int = 50,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.bucket_window = bucket_window
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _all_batches(self) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.lengths)) if self.shuffle else np.arange(len(self.lengths))
        bucketing = self.bucket_window > 0
        window = self.batch_size * self.bucket_window if bucketing else max(len(order), 1)
        batches = []
        for start in range(0, len(order), window):
            chunk = order[start : start + window]
            if bucketing:
                chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self._all_batches():
            yield batch.tolist()

    def __len__(self) -> int:
        n = len(self.lengths)
        full, rest = divmod(n, self.batch_size)
        n_batches = full if self.drop_last else full + (1 if rest else 0)
        # Window boundaries can add partial batches; count exactly when they can.
        if self.bucket_window and n > self.batch_size * self.bucket_window:
            n_batches = len(self._all_batches())
        return n_batches


class RankSliceBatchSampler(Sampler[list[int]]):
    """This process's share of every global batch: examples ``rank::world_size`` of each.

    All processes draw the same global batches (same seed and epoch), so a step of N processes covers
    exactly the customers of one process's step and DDP reproduces single-process training. A batch smaller
    than the number of processes lends its first examples to the processes that would otherwise get none
    (every process must step). With one process this is ``batches`` unchanged.
    """

    def __init__(self, batches: LengthBucketBatchSampler, rank: int = 0, world_size: int = 1) -> None:
        self.sampler = batches  # Lightning calls batch_sampler.sampler.set_epoch(epoch) at every epoch
        self.rank = rank
        self.world_size = world_size

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.sampler:
            share = batch[self.rank :: self.world_size]
            yield share if share else [batch[self.rank % len(batch)]]

    def __len__(self) -> int:
        return len(self.sampler)


class JourneyDataModule(L.LightningDataModule):
    """Train / val / test loaders over a folder written by `journey prepare`."""

    def __init__(
        self,
        data_dir: str | Path,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        length_bucketing: bool = True,
        bucket_window: int = 50,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.data_dir = Path(data_dir)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size * 2
        self.num_workers = num_workers
        self.length_bucketing = length_bucketing
        self.bucket_window = bucket_window
        self.seed = seed
        self.preprocessor = Preprocessor.load(self.data_dir)
        self.datasets: dict[str, PreparedSequences] = {}

    @property
    def feature_spec(self) -> FeatureSpec:
        return self.preprocessor.feature_spec()

    @property
    def collate(self) -> functools.partial[SequenceBatch]:
        return functools.partial(
            collate_examples,
            categorical_fields=list(self.preprocessor.dataset.categorical_fields),
            numeric_fields=list(self.preprocessor.dataset.numeric_fields),
            outcome_names=list(self.preprocessor.outcome_names),
            max_len=self.preprocessor.config.max_len,
        )

    def setup(self, stage: str | None = None) -> None:
        for split in SPLITS:
            if split not in self.datasets:
                self.datasets[split] = PreparedSequences(read_split(self.data_dir, split))

    def _split_loader(self, split: str, train: bool, world_size: int, rank: int) -> DataLoader:
        batches = LengthBucketBatchSampler(
            self.datasets[split].lengths, self.batch_size if train else self.eval_batch_size, shuffle=train,
            seed=self.seed, bucket_window=self.bucket_window if self.length_bucketing else 0,
        )
        return DataLoader(self.datasets[split], batch_sampler=RankSliceBatchSampler(batches, rank, world_size),
                          collate_fn=self.collate, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def _loader(self, split: str, train: bool) -> DataLoader:
        trainer = getattr(self, "trainer", None)
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        return self._split_loader(split, train, world, rank)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def full_train_dataloader(self) -> DataLoader:
        """Every training example on this process (count-based baselines count the whole data everywhere)."""
        return self._split_loader("train", False, 1, 0)

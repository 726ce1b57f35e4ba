"""``generate``: check the arguments, simulate the synthetic bank block after block, write the folder, report.

The simulation of one block lives in :mod:`~journey_model.data.synth.block`, the writing in
:mod:`~journey_model.data.synth.writer`; this module ties them together and holds ``SynthConfig``, the
settings of ``journey synth``.
"""

from __future__ import annotations

import math
import operator
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from journey_model.core.settings import option
from journey_model.data.schema import DatasetConfig
from journey_model.data.synth import rules
from journey_model.data.synth.block import BLOCK_CUSTOMERS, CUSTOMER_ID_DIGITS, generate_block
from journey_model.data.synth.draws import Calendar
from journey_model.data.synth.profiles import EVENT_TYPES, SynthError
from journey_model.data.synth.writer import SynthReport, SynthWriter, prepare_out_dir

CONFIG_PATH = Path(__file__).parent.parent / "mappings" / "synth_bank.yaml"
MIN_MONTHS = 12  # the earliest cut-off needs six months of history for the planted patterns
MAX_MONTHS = 120


@dataclass
class SynthConfig:
    """What `journey synth` writes: how many customers, over which period, into which folder."""

    out_dir: str = option(help="output folder", flag="--out")
    customers: int = option(5000, "number of customers [customers]")
    seed: int = option(0, "random seed; the same seed gives the same data")
    start: str = option("2024-01-01", "first day of the simulated period (the 1st of a month)")
    months: int = option(12, f"length of the simulated period, {MIN_MONTHS}..{MAX_MONTHS} [months]")
    chunk_customers: int = option(20_000, "customers per written events part [customers]")


def generate(
    out_dir: str | Path,
    customers: int,
    seed: int = 0,
    *,
    start: str = "2024-01-01",
    months: int = 12,
    chunk_customers: int = 20_000,
    progress: bool = True,
) -> SynthReport:
    """Write the synthetic bank's events, labels and ground truth for ``customers`` customers to ``out_dir``.

    ``start`` is the first day of the window (the 1st of a month), ``months`` its length (12..120);
    ``chunk_customers`` customers go into each events part. See the package docstring for the layout and
    the determinism guarantees.
    """
    began = time.perf_counter()
    customers = _integer("customers", customers, 1, 10**CUSTOMER_ID_DIGITS - 1)
    seed = _integer("seed", seed, 0, 2**63 - 1)
    chunk_customers = _integer("chunk_customers", chunk_customers, 1, 10**CUSTOMER_ID_DIGITS - 1)
    months = _integer("months", months, MIN_MONTHS, MAX_MONTHS)
    cal = Calendar.build(start, months)
    config = DatasetConfig.load(CONFIG_PATH)
    out = Path(out_dir)
    replaced = prepare_out_dir(out)
    writer = SynthWriter(out, config, chunk_customers)
    _write_blocks(writer, seed, customers, cal, config, progress)
    report = SynthReport(
        out_dir=str(out),
        customers=customers,
        events=writer.events,
        parts=writer.parts,
        seed=seed,
        start=str(cal.start),
        months=months,
        horizon_days=rules.HORIZON_DAYS,
        cutoffs=[cal.iso(day) for day in cal.cutoff_days],
        label_counts=writer.positives,
        label_rates={t: writer.positives[t] / customers for t in rules.TARGETS},
        ground_truth_rows=dict(sorted(writer.rule_rows.items())),
        events_by_type={name: int(count) for name, count in zip(EVENT_TYPES, writer.type_counts)},
        seconds=round(time.perf_counter() - began, 3),
        replaced_files=replaced,
    )
    report.save(out)
    return report


def _write_blocks(
    writer: SynthWriter, seed: int, customers: int, cal: Calendar, config: DatasetConfig, progress: bool
) -> None:
    """Simulate and write the blocks one at a time; on any error drop what is unfinished."""
    bar = tqdm(total=customers, unit="customer", desc="synth", disable=not progress, file=sys.stderr)
    try:
        for block in range(math.ceil(customers / BLOCK_CUSTOMERS)):
            keep = min(BLOCK_CUSTOMERS, customers - block * BLOCK_CUSTOMERS)
            writer.write(generate_block(seed, block, keep, cal, config))
            bar.update(keep)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()


def _integer(name: str, value: object, lowest: int, highest: int) -> int:
    """``value`` as an int in [lowest, highest], else a SynthError naming the argument."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise SynthError(f"{name} must be an integer, got {value!r}") from None
    if not lowest <= number <= highest:
        raise SynthError(f"{name} must be between {lowest} and {highest}, got {number}")
    return number

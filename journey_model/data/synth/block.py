"""One block of the synthetic bank: simulate ``BLOCK_CUSTOMERS`` customers and turn them into Arrow tables.

A block draws from its own random stream, ``SeedSequence(seed, spawn_key=(block,))``, and is always simulated
whole, so a customer's events depend only on the seed and the customer's index (see the package docstring).
:func:`generate_block` simulates the block — customers, planted scenarios, outcomes, everyday behaviour, in
that order — drops what cannot happen (events before joining or after closing, card payments after a default
notice), sorts the events by (customer, second, event type), numbers them, computes the running balance,
and reads the labels and the ground truth off the result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from journey_model.data.schema import TIMESTAMP_TYPE, DatasetConfig, conform_table
from journey_model.data.sequences import judge_examples
from journey_model.data.synth import rules
from journey_model.data.synth.background import draw_background
from journey_model.data.synth.customers import Customers, draw_customers
from journey_model.data.synth.draws import Calendar, EventSink
from journey_model.data.synth.profiles import (
    BALANCE_SIGN,
    CHANNELS,
    DEVICES,
    EVENT_TYPES,
    ITEMS,
    TYPE,
    SynthError,
)
from journey_model.data.synth.scenarios import (
    NONE,
    TAG_BIT,
    Plan,
    draw_outcomes,
    draw_salary_gaps,
    draw_scenarios,
    plant_churn,
    plant_default,
    plant_uptake,
)

BLOCK_CUSTOMERS = 1024  # customers simulated from one random stream (fixes content independent of chunking)
CUSTOMER_ID_DIGITS = 8  # customer ids C00000000 … C99999999
EVENT_SEQUENCE_DIGITS = 5  # event ids <customer_id>-00000 … -99999
US_PER_DAY = 86_400_000_000

LABELS_SCHEMA = pa.schema(
    [
        pa.field("customer_id", pa.string(), nullable=False),
        pa.field("cutoff", TIMESTAMP_TYPE, nullable=False),
        *[pa.field(target, pa.float64()) for target in rules.TARGETS],
    ]
)
GROUND_TRUTH_SCHEMA = pa.schema(
    [
        pa.field("customer_id", pa.string(), nullable=False),
        pa.field("cutoff", TIMESTAMP_TYPE, nullable=False),
        pa.field("target", pa.string(), nullable=False),
        pa.field("rule", pa.string(), nullable=False),
        pa.field("role", pa.string(), nullable=False),
        pa.field("label", pa.float64()),
        pa.field("product", pa.string()),
        pa.field("event_ids", pa.list_(pa.string())),
    ]
)


@dataclass
class BlockOutput:
    """One block's rows, sorted by customer, with per-customer offsets for slicing into parts."""

    first: int  # global index of the block's first customer
    customers: int  # customers kept from this block
    events: pa.Table  # canonical events
    event_offsets: np.ndarray  # (customers + 1,) row offsets of each customer's events
    labels: pa.Table  # one row per customer
    ground_truth: pa.Table  # rows sorted by customer
    ground_truth_owner: np.ndarray  # local customer index of each ground-truth row
    event_type_codes: np.ndarray  # index into EVENT_TYPES of each event (for the report)

    def slice(self, lo: int, hi: int) -> tuple[pa.Table, pa.Table, pa.Table]:
        """Events, labels and ground truth of local customers [lo, hi)."""
        a, b = int(self.event_offsets[lo]), int(self.event_offsets[hi])
        g0, g1 = np.searchsorted(self.ground_truth_owner, [lo, hi])
        return (
            self.events.slice(a, b - a),
            self.labels.slice(lo, hi - lo),
            self.ground_truth.slice(int(g0), int(g1 - g0)),
        )


@dataclass
class _Rows:
    """The kept events of a block as code arrays, sorted by (customer, second, event type)."""

    owner: np.ndarray  # local customer index
    seconds: np.ndarray  # seconds since the window's start
    event_type: np.ndarray  # index into EVENT_TYPES
    item: np.ndarray  # index into ITEMS (-1 none)
    channel: np.ndarray  # index into CHANNELS (-1 none)
    device: np.ndarray  # index into DEVICES (-1 none)
    amount: np.ndarray  # EUR (nan none)
    tag: np.ndarray  # TAG_BIT of the planted scenarios the event belongs to
    offsets: np.ndarray  # (keep + 1,) row offsets of each customer's events


def generate_block(seed: int, block: int, keep: int, cal: Calendar, config: DatasetConfig) -> BlockOutput:
    """Simulate the whole block ``block`` (BLOCK_CUSTOMERS customers) and keep its first ``keep``."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(block,))))
    first = block * BLOCK_CUSTOMERS
    people, plan, sink = _simulate(rng, cal, BLOCK_CUSTOMERS)
    rows = _kept_rows(sink.columns(), people, plan, cal, keep)
    ids = pa.array([f"C{first + i:0{CUSTOMER_ID_DIGITS}d}" for i in range(keep)], pa.string())
    events, event_id = _events_table(rows, people, ids, cal, config, f"synth block {block}")
    cutoff = people.cutoff[:keep]
    cutoff_ts = pa.array(cal.start_us + cutoff.astype(np.int64) * US_PER_DAY, TIMESTAMP_TYPE)
    label = _labels(rows, cutoff, keep)
    labels = pa.table({"customer_id": ids, "cutoff": cutoff_ts, **label}, schema=LABELS_SCHEMA)
    label = _eligible_labels(config, events, labels, label)
    labels = pa.table({"customer_id": ids, "cutoff": cutoff_ts, **label}, schema=LABELS_SCHEMA)
    ground_truth, gt_owner = _ground_truth(ids, cutoff_ts, plan, label, rows.owner, rows.tag, event_id, keep)
    return BlockOutput(first, keep, events, rows.offsets, labels, ground_truth, gt_owner, rows.event_type)


def _simulate(rng: np.random.Generator, cal: Calendar, n: int) -> tuple[Customers, Plan, EventSink]:
    """The block's customers, planted scenarios and events, in the order of the random draws."""
    people = draw_customers(rng, cal, n)
    plan = draw_scenarios(rng, people)
    sink = EventSink()
    plant_churn(rng, people, plan, sink)
    plant_default(rng, people, plan, sink)
    plant_uptake(rng, people, plan, sink)
    draw_salary_gaps(rng, people, plan)
    draw_outcomes(rng, people, plan, sink)
    draw_background(rng, cal, people, plan, sink)
    return people, plan, sink


def _kept_rows(col: dict[str, np.ndarray], people: Customers, plan: Plan, cal: Calendar, keep: int) -> _Rows:
    """The events that can happen, of the first ``keep`` customers, in their final order."""
    owner, day, etype = col["owner"], col["day"], col["event_type"]
    alive = (
        (owner < keep)
        & (day >= people.join[owner])
        & (day < cal.end_day)
        & (day <= plan.close_day[owner])
        & ~((etype == TYPE["card_payment"]) & (day > plan.default_day[owner]))
    )
    seconds = np.floor(day * 86_400.0).astype(np.int64)
    order = np.flatnonzero(alive)
    order = order[np.lexsort((etype[order], seconds[order], owner[order]))]
    owner = owner[order]
    offsets = np.searchsorted(owner, np.arange(keep + 1)).astype(np.int64)
    return _Rows(
        owner,
        seconds[order],
        etype[order],
        col["item"][order],
        col["channel"][order],
        col["device"][order],
        col["amount"][order],
        col["tag"][order],
        offsets,
    )


def _balances(rows: _Rows, people: Customers) -> np.ndarray:
    """The balance after each money-moving event (nan for the others), from the customer's opening balance."""
    sign = BALANCE_SIGN[rows.event_type]
    running = np.concatenate([[0.0], np.cumsum(np.nan_to_num(rows.amount) * sign)])
    balance = people.opening_balance[rows.owner] + running[1:] - running[rows.offsets[rows.owner]]
    return np.where(sign != 0, np.round(balance, 2), np.nan)


def _take(vocab: tuple[str, ...], codes: np.ndarray) -> pa.Array:
    """Strings for codes, null where the code is negative."""
    return pa.array(vocab, pa.string()).take(pa.array(codes.astype(np.int32), mask=codes < 0))


def _events_table(
    rows: _Rows, people: Customers, ids: pa.Array, cal: Calendar, config: DatasetConfig, source: str
) -> tuple[pa.Table, pa.Array]:
    """The canonical events table and its event ids, which number each customer's events in order."""
    sequence = np.arange(rows.owner.size) - rows.offsets[rows.owner]
    if sequence.size and sequence.max() >= 10**EVENT_SEQUENCE_DIGITS:
        raise SynthError(
            f"a customer has more than {10**EVENT_SEQUENCE_DIGITS - 1} events; shorten the window"
        )
    customer_id = ids.take(pa.array(rows.owner))
    digits = pc.utf8_lpad(pc.cast(pa.array(sequence), pa.string()), width=EVENT_SEQUENCE_DIGITS, padding="0")
    event_id = pc.binary_join_element_wise(customer_id, digits, "-")
    columns = {
        "customer_id": customer_id,
        "ts": pa.array(cal.start_us + rows.seconds * 1_000_000, TIMESTAMP_TYPE),
        "event_type": _take(EVENT_TYPES, rows.event_type),
        "event_id": event_id,
        "item": _take(ITEMS, rows.item),
        "channel": _take(CHANNELS, rows.channel),
        "device": _take(DEVICES, rows.device),
        "amount": pa.array(rows.amount, pa.float64(), from_pandas=True),
        "balance": pa.array(_balances(rows, people), pa.float64(), from_pandas=True),
    }
    return conform_table(pa.table(columns), config, source=source), event_id


def _labels(rows: _Rows, cutoff: np.ndarray, keep: int) -> dict[str, np.ndarray]:
    """Per target, 1.0 for the customers whose outcome event falls in (cutoff, cutoff + horizon]."""
    after = (rows.seconds / 86_400.0) - cutoff[rows.owner]
    in_horizon = (after > 0) & (after <= rules.HORIZON_DAYS)
    label = {}
    for target in rules.TARGETS:
        hit = np.zeros(keep, dtype=bool)
        hit[rows.owner[in_horizon & (rows.event_type == TYPE[rules.OUTCOME_EVENT[target]])]] = True
        label[target] = hit.astype(float)
    return label


def _eligible_labels(
    config: DatasetConfig, events: pa.Table, labels: pa.Table, label: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The labels under the dataset's eligibility rules: unknown (NaN) where the customer cannot have the
    outcome at the cut-off — judged by the same code as every model's examples."""
    judged = judge_examples(config, events, labels.select(["customer_id", "cutoff"]), list(rules.TARGETS))
    result = dict(label)
    for target, (rule, _) in judged.items():
        ineligible = rule.is_valid().to_numpy(zero_copy_only=False)
        result[target] = np.where(ineligible, np.nan, label[target])
    return result


def _ground_truth(
    ids: pa.Array,
    cutoff_ts: pa.Array,
    plan: Plan,
    label: dict[str, np.ndarray],
    owner: np.ndarray,
    tag: np.ndarray,
    event_id: pa.Array,
    keep: int,
) -> tuple[pa.Table, np.ndarray]:
    """One row per planted cause / decoy and per background positive, with the scenario's event ids."""
    tables, owners = [], []
    for target_index, target in enumerate(rules.TARGETS):
        scenario = getattr(plan, target)[:keep]
        names = np.array([f"{target}_background", rules.RULES[target], *rules.DECOYS[target]], dtype=object)
        roles = np.array(["noise", "cause"] + ["decoy"] * len(rules.DECOYS[target]), dtype=object)
        rows = np.flatnonzero((scenario != NONE) | (label[target] == 1))
        tagged = np.flatnonzero(tag & TAG_BIT[target])
        tagged_owner = owner[tagged]
        counts = np.bincount(tagged_owner, minlength=keep)[rows]
        list_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
        values = event_id.take(pa.array(tagged))  # tagged rows are already in customer order
        product = plan.uptake_product[rows] if target == "uptake" else np.full(rows.size, -1)
        tables.append(
            pa.table(
                {
                    "customer_id": ids.take(pa.array(rows)),
                    "cutoff": cutoff_ts.take(pa.array(rows)),
                    "target": pa.array([target] * rows.size, pa.string()),
                    "rule": pa.array(names[scenario[rows]], pa.string()),
                    "role": pa.array(roles[scenario[rows]], pa.string()),
                    "label": pa.array(label[target][rows], pa.float64()),
                    "product": _take(ITEMS, product),
                    "event_ids": pa.ListArray.from_arrays(pa.array(list_offsets), values),
                },
                schema=GROUND_TRUTH_SCHEMA,
            )
        )
        owners.append(np.stack([rows, np.full(rows.size, target_index)], axis=1))
    stacked = np.concatenate(owners)
    order = np.lexsort((stacked[:, 1], stacked[:, 0]))
    table = pa.concat_tables(tables).take(pa.array(order))
    return table, stacked[order, 0]

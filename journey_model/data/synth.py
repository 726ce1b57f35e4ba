"""``journey synth``: Journey's built-in synthetic retail-bank event log, its labels and its ground truth.

The embedded default dataset: a population of bank customers in five segments (mass, affluent, student,
SME, retired) with heterogeneous behaviours — logins with a weekly and daily rhythm, card payments in
merchant categories with log-normal amounts, monthly salaries (pensions for the retired) on a fixed payday,
a monthly standing order, transfers in and out, fees, complaints, call-centre contacts, product views and
applications, missed payments, default notices, account openings (customers who join during the window)
and account closings (no activity after them). Into it :mod:`journey_model.data.synth_rules` plants churn,
default and product-uptake outcomes whose causes depend on the order and timing of events across types,
together with decoys that carry the same events in the wrong order or at the wrong time.

Output folder (``generate(out_dir, …)``):

* ``dataset.yaml`` — the :class:`~journey_model.data.schema.DatasetConfig` (``mappings/synth_bank.yaml``).
* ``events/part-00000.parquet`` … — canonical events, one part per ``chunk_customers`` customers, sorted by
  (customer_id, ts); ``event_id`` = ``<customer_id>-<5-digit sequence>`` is unique and stable.
* ``labels.parquet`` — customer_id, cutoff (midnight UTC on the 1st of one of the last five months before
  the window's final month, e.g. 1 July … 1 November for a 2024 window), churn, default, uptake (float 0/1):
  whether ``account_close`` / ``default_notice`` / ``product_application`` happens in
  ``(cutoff, cutoff + 30 days]`` (``synth_rules.HORIZON_DAYS``). Every customer is labelled once; the
  customers are spread evenly over the five cut-offs, so out-of-time splits (train on the early cut-offs,
  test on the last) are possible.
* ``ground_truth.parquet`` — one row per (customer, target) with a planted cause or decoy, or a background
  positive: customer_id, cutoff, target, rule, role (``cause`` / ``decoy`` / ``noise``), label, product
  (the viewed product for uptake rows), event_ids (the events that make up the pattern, all strictly
  before the cut-off; fading logins and missing salaries are absences, so a churn cause lists the
  complaint and the fee, a default cause the last salary, the risky payments and the missed payment).
* ``synth_report.json`` — written last; its presence marks a complete folder.

Determinism: customers are simulated in fixed blocks of ``BLOCK_CUSTOMERS``; block ``b`` draws from
``SeedSequence(seed, spawn_key=(b,))`` and is always simulated whole. So a customer's events depend only on
the seed and the customer's index: the same seed gives identical content for any ``chunk_customers`` (the
part boundaries move, the concatenated rows do not), and a smaller ``customers`` gives a prefix of a larger
run. Memory stays flat whatever the size: one block is simulated at a time and at most ``ROW_GROUP_EVENTS``
events wait to be written.
"""

from __future__ import annotations

import json
import math
import operator
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml
from tqdm import tqdm

from journey_model.core.files import StagedFile, atomic_path, remove_stale_temporaries, write_text_atomic
from journey_model.core.settings import option
from journey_model.data import synth_rules as rules
from journey_model.data.schema import TIMESTAMP_TYPE, DatasetConfig, conform_table

CONFIG_PATH = Path(__file__).parent / "mappings" / "synth_bank.yaml"
DATASET_NAME = "synth_bank"

BLOCK_CUSTOMERS = 1024  # customers simulated from one random stream (fixes content independent of chunking)
CUTOFF_MONTHS = 5  # cut-offs fall on the 1st of each of the last five months before the final month
MIN_MONTHS = 12  # the earliest cut-off needs six months of history for the planted patterns
MAX_MONTHS = 120
CUSTOMER_ID_DIGITS = 8  # customer ids C00000000 … C99999999
EVENT_SEQUENCE_DIGITS = 5  # event ids <customer_id>-00000 … -99999
JOIN_SHARE = 0.15  # fraction of customers who open their account during the window
JOIN_HISTORY_DAYS = 200  # a joiner opens at least this many days before the cut-off, days
GAMBLER_SHARE = 0.15  # fraction of customers who gamble by habit (background risky spend)
SALARY_GAP_SHARE = 0.2  # fraction of salaried customers with a background 1-3 month salary gap (job change)
COMPLAINTS_PER_YEAR = 1.0  # background complaints (incl. app feedback and disputes) per customer-year
FEES_PER_MONTH = 0.3  # background fees per customer-month (students: 1.5x)
MISSED_PAYMENTS_PER_YEAR = 1.0  # background missed payments per customer-year
APPLICATIONS_PER_YEAR = 0.25  # background product applications per customer-year (outside the horizon)
SUBSTITUTION = 0.8  # share of planted risky payments that replace everyday card payments in their window
BROWSE_SESSIONS_PER_MONTH = 0.45  # product-browsing sessions per customer-month (1-3 products viewed each)
LATE_CLOSE_SHARE = 0.01  # fraction of customers who close their account after the horizon

ROW_GROUP_EVENTS = 500_000  # events buffered per Parquet row group (memory vs compression)
US_PER_DAY = 86_400_000_000


class SynthError(ValueError):
    """Invalid arguments to the synthetic generator, or an output folder it must not overwrite."""


# --------------------------------------------------------------------------------------- vocabularies
EVENT_TYPES: tuple[str, ...] = (
    "account_open",
    "login",
    "card_payment",
    "salary",
    "transfer_in",
    "transfer_out",
    "fee",
    "complaint",
    "call_centre",
    "product_view",
    "product_application",
    "missed_payment",
    "default_notice",
    "account_close",
)
TYPE = {name: code for code, name in enumerate(EVENT_TYPES)}
BALANCE_SIGN = np.zeros(len(EVENT_TYPES))  # +1 money in, -1 money out, 0 no money moved
for _name, _sign in (
    ("card_payment", -1),
    ("salary", 1),
    ("transfer_in", 1),
    ("transfer_out", -1),
    ("fee", -1),
):
    BALANCE_SIGN[TYPE[_name]] = _sign

MERCHANT_CATEGORIES: tuple[str, ...] = (
    "groceries",
    "restaurants",
    "transport",
    "fuel",
    "online_retail",
    "travel",
    "utilities",
    "entertainment",
    "health",
    "electronics",
    "gambling",
    "cash_advance",
)
MERCHANT_MEDIAN = np.array([35, 28, 12, 55, 45, 260, 80, 25, 40, 180, 30, 120], dtype=float)  # EUR
MERCHANT_SIGMA = np.array([0.6, 0.6, 0.7, 0.35, 0.9, 0.8, 0.4, 0.7, 0.7, 0.9, 0.9, 0.6])
MERCHANT_BASE_MIX = np.array([0.28, 0.14, 0.12, 0.07, 0.13, 0.03, 0.05, 0.07, 0.05, 0.03, 0.015, 0.015])
MERCHANT_ONLINE_SHARE = np.array([0.05, 0.1, 0.2, 0.0, 1.0, 0.6, 0.5, 0.4, 0.1, 0.5, 1.0, 0.0])
PRODUCTS: tuple[str, ...] = (
    "savings_account",
    "credit_card",
    "personal_loan",
    "mortgage",
    "investment_fund",
    "insurance",
    "overdraft",
    "premium_account",
    "business_loan",
)
CREDIT_PRODUCTS: tuple[str, ...] = ("credit_card", "personal_loan", "overdraft", "mortgage")
CREDIT_MIX = np.array([0.5, 0.25, 0.2, 0.05])
FEE_KINDS: tuple[str, ...] = (
    "overdraft_fee",
    "late_payment_fee",
    "foreign_transaction_fee",
    "card_replacement_fee",
    "account_maintenance_fee",
    "atm_fee",
)
FEE_MEDIAN = np.array([18, 25, 3, 10, 6, 2.5])  # EUR
FEE_SIGMA = np.array([0.4, 0.15, 0.6, 0.1, 0.3, 0.3])
FEE_MIX = np.array([0.3, 0.15, 0.2, 0.05, 0.2, 0.1])
COMPLAINT_REASONS: tuple[str, ...] = (
    "fees",
    "card_declined",
    "app_outage",
    "service",
    "fraud_dispute",
    "interest_rate",
)
COMPLAINT_MIX = np.array([0.3, 0.2, 0.15, 0.2, 0.05, 0.1])
CALL_TOPICS: tuple[str, ...] = (
    "card_block",
    "balance_enquiry",
    "fraud_report",
    "loan_enquiry",
    "general_enquiry",
    "complaint_followup",
)
CALL_MIX = np.array([0.15, 0.3, 0.05, 0.15, 0.3, 0.05])
TRANSFER_IN_KINDS: tuple[str, ...] = ("family", "p2p_in", "client_payment", "refund")
TRANSFER_OUT_KINDS: tuple[str, ...] = (
    "rent",
    "payroll",
    "savings",
    "p2p_out",
    "bills",
    "supplier",
    "investment",
    "loan_repayment",
)
CLOSE_REASONS: tuple[str, ...] = ("switching_bank", "dissatisfied", "relocation", "no_longer_needed")
CLOSE_MIX_CHURN = np.array([0.45, 0.45, 0.05, 0.05])  # after the planted churn cause
CLOSE_MIX_OTHER = np.array([0.3, 0.1, 0.3, 0.3])  # background closes
ITEMS: tuple[str, ...] = (
    MERCHANT_CATEGORIES
    + PRODUCTS
    + ("current_account",)
    + FEE_KINDS
    + COMPLAINT_REASONS
    + CALL_TOPICS
    + TRANSFER_IN_KINDS
    + TRANSFER_OUT_KINDS
    + CLOSE_REASONS
)
assert len(set(ITEMS)) == len(ITEMS), "item vocabularies overlap"
ITEM = {name: code for code, name in enumerate(ITEMS)}
CHANNELS: tuple[str, ...] = ("app", "web", "branch", "phone", "pos", "online", "atm")
CHANNEL = {name: code for code, name in enumerate(CHANNELS)}
DEVICES: tuple[str, ...] = ("ios", "android", "desktop")


def _codes(names: tuple[str, ...], vocab: dict[str, int]) -> np.ndarray:
    return np.array([vocab[name] for name in names], dtype=np.int16)


MERCHANT_CODES = _codes(MERCHANT_CATEGORIES, ITEM)
PRODUCT_CODES = _codes(PRODUCTS, ITEM)
CREDIT_CODES = _codes(CREDIT_PRODUCTS, ITEM)
FEE_CODES = _codes(FEE_KINDS, ITEM)
COMPLAINT_CODES = _codes(COMPLAINT_REASONS, ITEM)
CALL_CODES = _codes(CALL_TOPICS, ITEM)
TRANSFER_IN_CODES = _codes(TRANSFER_IN_KINDS, ITEM)
TRANSFER_OUT_CODES = _codes(TRANSFER_OUT_KINDS, ITEM)
CLOSE_CODES = _codes(CLOSE_REASONS, ITEM)

# Hour-of-day (0..23) and weekday (Mon..Sun) profiles, relative weights.
LOGIN_HOURS = np.array(
    [1, 0.5, 0.3, 0.2, 0.2, 0.4, 1.2, 2.5, 3, 2.5, 2, 2, 2.8, 2.5, 2, 2, 2.2, 2.6, 3, 3.4, 3.6, 3.2, 2.4, 1.5]
)
SHOP_HOURS = np.array(
    [0.2, 0.1, 0.1, 0.1, 0.1, 0.2, 0.5, 1.2, 1.8, 2, 2.4, 3]  # 00:00-11:59
    + [3.6, 3, 2.6, 2.6, 3, 3.6, 3.8, 3.2, 2.4, 1.6, 0.9, 0.4]  # 12:00-23:59
)
OFFICE_HOURS = np.array([0.05] * 8 + [1.5] + [3] * 8 + [2, 1] + [0.3] * 5)
LOGIN_WEEKDAYS = np.array([1.0, 0.95, 0.95, 1.0, 1.1, 0.75, 0.85])
SHOP_WEEKDAYS = np.array([0.85, 0.9, 0.9, 1.0, 1.2, 1.35, 0.7])
OFFICE_WEEKDAYS = np.array([1, 1, 1, 1, 1, 0.25, 0.1])


@dataclass(frozen=True)
class SegmentProfile:
    """How one customer segment behaves; rates are means for a customer of activity 1."""

    name: str
    share: float  # fraction of customers in the segment
    salaried: bool  # paid a monthly salary (a pension for the retired): salary events
    default_eligible: bool  # may receive the planted default scenario (salaried employees)
    income_median: float  # median monthly income (salary, allowance or business revenue), EUR
    income_sigma: float  # log-normal sigma of income across customers
    logins_per_week: float  # logins per week
    card_payments_per_week: float  # card payments per week
    transfers_in_per_month: float  # incoming transfers per month besides the salary
    transfers_out_per_month: float  # outgoing transfers per month besides the standing order
    standing_order: str  # item (purpose) of the monthly standing-order transfer_out
    standing_order_share: float  # standing-order amount as a fraction of monthly income
    app_share: float  # probability that a digital interaction uses the app rather than the web
    branch_share: float  # probability that a transfer / application / complaint / close is at a branch
    calls_per_year: float  # call-centre contacts per year
    merchant_tilt: dict[str, float] = field(default_factory=dict)  # multipliers on MERCHANT_BASE_MIX
    product_interest: tuple[float, ...] = ()  # relative interest in each of PRODUCTS
    transfer_in_mix: tuple[float, ...] = ()  # relative frequency of each of TRANSFER_IN_KINDS
    transfer_out_mix: tuple[float, ...] = ()  # relative frequency of each of TRANSFER_OUT_KINDS


SEGMENTS: tuple[SegmentProfile, ...] = (
    SegmentProfile(
        name="mass",
        share=0.55,
        salaried=True,
        default_eligible=True,
        income_median=2600,
        income_sigma=0.3,
        logins_per_week=1.25,
        card_payments_per_week=0.6,
        transfers_in_per_month=0.3,
        transfers_out_per_month=0.4,
        standing_order="rent",
        standing_order_share=0.33,
        app_share=0.6,
        branch_share=0.05,
        calls_per_year=1.0,
        merchant_tilt={},
        product_interest=(0.15, 0.2, 0.18, 0.12, 0.06, 0.1, 0.1, 0.07, 0.02),
        transfer_in_mix=(0.15, 0.6, 0.0, 0.25),
        transfer_out_mix=(0, 0, 0.3, 0.4, 0.3, 0, 0, 0),
    ),
    SegmentProfile(
        name="affluent",
        share=0.15,
        salaried=True,
        default_eligible=True,
        income_median=7000,
        income_sigma=0.35,
        logins_per_week=1.4,
        card_payments_per_week=0.8,
        transfers_in_per_month=0.3,
        transfers_out_per_month=0.8,
        standing_order="loan_repayment",
        standing_order_share=0.25,
        app_share=0.55,
        branch_share=0.04,
        calls_per_year=0.8,
        merchant_tilt={"travel": 2.5, "restaurants": 1.3, "electronics": 1.5, "groceries": 0.8},
        product_interest=(0.12, 0.1, 0.05, 0.15, 0.28, 0.1, 0.02, 0.16, 0.02),
        transfer_in_mix=(0.1, 0.5, 0.0, 0.4),
        transfer_out_mix=(0, 0, 0.3, 0.25, 0.15, 0, 0.3, 0),
    ),
    SegmentProfile(
        name="student",
        share=0.15,
        salaried=False,
        default_eligible=False,
        income_median=750,
        income_sigma=0.3,
        logins_per_week=1.8,
        card_payments_per_week=0.7,
        transfers_in_per_month=1.0,
        transfers_out_per_month=0.3,
        standing_order="rent",
        standing_order_share=0.45,
        app_share=0.88,
        branch_share=0.02,
        calls_per_year=0.4,
        merchant_tilt={
            "restaurants": 1.5,
            "online_retail": 1.4,
            "fuel": 0.3,
            "travel": 0.7,
            "utilities": 0.5,
        },
        product_interest=(0.15, 0.3, 0.08, 0.02, 0.03, 0.05, 0.3, 0.05, 0.02),
        transfer_in_mix=(0.65, 0.3, 0.0, 0.05),
        transfer_out_mix=(0, 0, 0.1, 0.7, 0.2, 0, 0, 0),
    ),
    SegmentProfile(
        name="sme",
        share=0.1,
        salaried=False,
        default_eligible=False,
        income_median=6000,
        income_sigma=0.6,
        logins_per_week=1.35,
        card_payments_per_week=0.5,
        transfers_in_per_month=2.0,
        transfers_out_per_month=1.2,
        standing_order="payroll",
        standing_order_share=0.3,
        app_share=0.45,
        branch_share=0.06,
        calls_per_year=1.5,
        merchant_tilt={"fuel": 1.8, "transport": 1.3, "electronics": 1.4},
        product_interest=(0.08, 0.1, 0.1, 0.05, 0.07, 0.1, 0.1, 0.05, 0.35),
        transfer_in_mix=(0.0, 0.1, 0.85, 0.05),
        transfer_out_mix=(0, 0, 0.1, 0.1, 0.2, 0.6, 0, 0),
    ),
    SegmentProfile(
        name="retired",
        share=0.05,
        salaried=True,
        default_eligible=False,
        income_median=1800,
        income_sigma=0.25,
        logins_per_week=0.7,
        card_payments_per_week=0.4,
        transfers_in_per_month=0.2,
        transfers_out_per_month=0.3,
        standing_order="savings",
        standing_order_share=0.15,
        app_share=0.3,
        branch_share=0.25,
        calls_per_year=2.5,
        merchant_tilt={"health": 2.0, "groceries": 1.3, "online_retail": 0.5, "electronics": 0.5},
        product_interest=(0.3, 0.05, 0.05, 0.02, 0.15, 0.3, 0.03, 0.1, 0.0),
        transfer_in_mix=(0.3, 0.4, 0.0, 0.3),
        transfer_out_mix=(0, 0, 0.2, 0.4, 0.4, 0, 0, 0),
    ),
)


@dataclass(frozen=True)
class ScenarioRates:
    """How often each planted scenario is drawn (fractions of customers, or of eligible customers)."""

    churn_cause: float = 0.09  # churn_complaint_fee_fade
    churn_decoy_each: float = 0.09  # each of the three churn decoys
    default_cause: float = 0.12  # of default-eligible (salaried mass / affluent) customers
    default_decoy_each: float = 0.12  # each of the two default decoys, of eligible customers
    uptake_cause: float = 0.10  # uptake_view_burst
    uptake_decoy_each: float = 0.10  # each of the two uptake decoys
    churn_background: float = 0.012  # account_close in the horizon without a planted scenario
    default_background: float = 0.008  # default_notice in the horizon without a planted scenario
    uptake_background: float = 0.015  # product_application in the horizon without a planted scenario


SCENARIO_RATES = ScenarioRates()
NONE, CAUSE = 0, 1  # scenario codes; decoys are 2, 3, … in the order of synth_rules.*_DECOYS
TAG_BIT = {"churn": 1, "default": 2, "uptake": 4}  # event tag bits: the event belongs to that scenario


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


# ------------------------------------------------------------------------------------------ calendar
@dataclass(frozen=True)
class _Calendar:
    """The generation window, in days since ``start`` (midnight UTC)."""

    start: np.datetime64  # first day of the window
    start_us: int  # the same, microseconds since the epoch
    start_weekday: int  # weekday of the first day, Monday = 0
    month_start: np.ndarray  # (months + 1,) day offset of the 1st of each month, the last one = end
    cutoff_days: np.ndarray  # (CUTOFF_MONTHS,) day offsets of the cut-offs
    end_day: float  # end of the window (exclusive), days

    @classmethod
    def build(cls, start: str, months: int) -> _Calendar:
        try:
            first = np.datetime64(start, "D")
        except ValueError as error:
            raise SynthError(f"start {start!r} is not an ISO date (YYYY-MM-DD): {error}") from error
        if first != first.astype("datetime64[M]").astype("datetime64[D]"):
            raise SynthError(f"start {start!r} must be the first day of a month, e.g. '2024-01-01'")
        month_days = (np.arange(months + 1) + first.astype("datetime64[M]")).astype("datetime64[D]")
        month_start = (month_days - first).astype(np.int64).astype(float)
        cutoff_days = month_start[months - CUTOFF_MONTHS - 1 : months - 1]
        start_us = int(first.astype("datetime64[us]").astype(np.int64))
        weekday = int((first.astype(np.int64) + 3) % 7)  # 1970-01-01 was a Thursday
        return cls(first, start_us, weekday, month_start, cutoff_days, float(month_start[-1]))

    def iso(self, day: float) -> str:
        return str(self.start + np.timedelta64(int(day), "D"))


# ------------------------------------------------------------------------------------ random helpers
def _sample_rows(rng: np.random.Generator, probs: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """One category per entry of ``rows``, drawn from ``probs[row]`` (each row a distribution over K)."""
    k = probs.shape[1]
    cum = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
    cum[:, -1] = 1.0
    flat = (cum + np.arange(probs.shape[0])[:, None]).ravel()
    picks = np.searchsorted(flat, rows + rng.random(rows.size), side="right") - rows * k
    return np.minimum(picks, k - 1)


def _choice(rng: np.random.Generator, codes: np.ndarray, mix: np.ndarray, size: int) -> np.ndarray:
    return codes[rng.choice(len(codes), size=size, p=mix / mix.sum())]


def _time_of_day(rng: np.random.Generator, hours: np.ndarray, size: int) -> np.ndarray:
    """Fractions of a day drawn from an hour-of-day profile."""
    hour = rng.choice(24, size=size, p=hours / hours.sum())
    return (hour + rng.random(size)) / 24.0


def _poisson_days(
    rng: np.random.Generator, rate: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A Poisson process per customer with ``rate`` events/day on ``[lo, hi)``: (customer, day) arrays."""
    span = np.maximum(hi - lo, 0.0)
    counts = rng.poisson(rate * span)
    owner = np.repeat(np.arange(rate.size, dtype=np.int32), counts)
    return owner, lo[owner] + rng.random(owner.size) * span[owner]


def _rhythmic_days(
    rng: np.random.Generator,
    cal: _Calendar,
    rate: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    weekdays: np.ndarray,
    hours: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`_poisson_days` with a weekday rhythm (thinning) and an hour-of-day profile."""
    accept = weekdays / weekdays.max()
    owner, day = _poisson_days(rng, rate / accept.mean(), lo, hi)
    whole = np.floor(day)
    weekday = ((whole.astype(np.int64) + cal.start_weekday) % 7).astype(np.intp)
    keep = rng.random(owner.size) < accept[weekday]
    owner, whole = owner[keep], whole[keep]
    return owner, whole + _time_of_day(rng, hours, owner.size)


def _office_time(rng: np.random.Generator, whole_days: np.ndarray) -> np.ndarray:
    return np.floor(whole_days) + _time_of_day(rng, OFFICE_HOURS, whole_days.size)


# ------------------------------------------------------------------------------------------ customers
@dataclass
class _Customers:
    """Per-customer attributes of one block (arrays of length n)."""

    n: int  # customers in the block
    segment: np.ndarray  # index into SEGMENTS
    activity: np.ndarray  # multiplier on interaction rates (log-normal, mean 1)
    income: np.ndarray  # monthly income, EUR
    spend_scale: np.ndarray  # multiplier on card amounts
    app_share: np.ndarray  # probability of the app for a digital interaction
    branch_share: np.ndarray  # probability of a branch for transfers / applications / complaints
    ios: np.ndarray  # bool: the customer's phone runs iOS (else Android)
    gambler: np.ndarray  # bool: habitual gambling spend
    cutoff: np.ndarray  # cut-off, days since start (integer valued)
    join: np.ndarray  # account opening, days since start (0 = existing customer)
    joined: np.ndarray  # bool: opened the account during the window
    payday: np.ndarray  # (n, months) salary days, days since start
    standing_order_day: np.ndarray  # day of month (1..5) of the standing order
    opening_balance: np.ndarray  # balance at the window start (or at joining), EUR


def _draw_customers(rng: np.random.Generator, cal: _Calendar, n: int) -> _Customers:
    shares = np.array([s.share for s in SEGMENTS])
    segment = rng.choice(len(SEGMENTS), size=n, p=shares / shares.sum())
    activity = rng.lognormal(-0.08, 0.4, n)
    income_median = np.array([s.income_median for s in SEGMENTS])[segment]
    income_sigma = np.array([s.income_sigma for s in SEGMENTS])[segment]
    income = np.round(income_median * np.exp(rng.normal(0.0, 1.0, n) * income_sigma), 2)
    spend_scale = (income / 2600.0) ** 0.3
    app_share = np.clip(
        np.array([s.app_share for s in SEGMENTS])[segment] + rng.normal(0, 0.15, n), 0.02, 0.98
    )
    branch_share = np.array([s.branch_share for s in SEGMENTS])[segment]
    ios = rng.random(n) < 0.45
    gambler = rng.random(n) < GAMBLER_SHARE
    cutoff = cal.cutoff_days[rng.integers(0, cal.cutoff_days.size, n)]
    joined_draw = rng.random(n) < JOIN_SHARE
    join_room = np.maximum(cutoff - JOIN_HISTORY_DAYS, 0.0)
    join = np.floor(rng.random(n) * join_room)
    joined = joined_draw & (join > 0)
    join = np.where(joined, join + _time_of_day(rng, OFFICE_HOURS, n), 0.0)
    payday_of_month = rng.choice(np.array([1, 15, 25, 28]), size=n)
    payday = cal.month_start[None, :-1] + (payday_of_month[:, None] - 1)
    weekday = (payday.astype(np.int64) + cal.start_weekday) % 7
    payday = payday - np.where(weekday == 5, 1, 0) - np.where(weekday == 6, 2, 0)  # weekend -> Friday
    payday = payday + rng.random(payday.shape) * 0.25  # credited overnight, 00:00-06:00
    standing_order_day = rng.integers(1, 6, n)
    opening_balance = np.round(income * rng.lognormal(np.log(1.5), 0.6, n), 2)
    return _Customers(
        n,
        segment,
        activity,
        income,
        spend_scale,
        app_share,
        branch_share,
        ios,
        gambler,
        cutoff,
        join,
        joined,
        payday,
        standing_order_day,
        opening_balance,
    )


# ------------------------------------------------------------------------------------------ event sink
class _EventSink:
    """Collects event columns from the generators of one block."""

    def __init__(self) -> None:
        self._parts: list[tuple[np.ndarray, ...]] = []

    def add(
        self,
        owner: np.ndarray,
        day: np.ndarray,
        event_type: str,
        *,
        item: np.ndarray | int = -1,
        channel: np.ndarray | int = -1,
        device: np.ndarray | int = -1,
        amount: np.ndarray | float = np.nan,
        tag: np.ndarray | int = 0,
    ) -> None:
        size = owner.size
        if size == 0:
            return
        self._parts.append(
            (
                owner.astype(np.int32),
                np.asarray(day, dtype=float),
                np.full(size, TYPE[event_type], dtype=np.int8),
                np.broadcast_to(np.asarray(item, dtype=np.int16), size),
                np.broadcast_to(np.asarray(channel, dtype=np.int8), size),
                np.broadcast_to(np.asarray(device, dtype=np.int8), size),
                np.broadcast_to(np.round(np.asarray(amount, dtype=float), 2), size),
                np.broadcast_to(np.asarray(tag, dtype=np.int8), size),
            )
        )

    def columns(self) -> dict[str, np.ndarray]:
        names = ("owner", "day", "event_type", "item", "channel", "device", "amount", "tag")
        return {name: np.concatenate([part[i] for part in self._parts]) for i, name in enumerate(names)}


def _digital(
    rng: np.random.Generator, people: _Customers, owner: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(channel, device) codes for digital interactions: the app on the customer's phone, or the web."""
    app = rng.random(owner.size) < people.app_share[owner]
    channel = np.where(app, CHANNEL["app"], CHANNEL["web"]).astype(np.int8)
    phone = np.where(people.ios[owner], 0, 1)
    device = np.where(app, phone, 2).astype(np.int8)
    return channel, device


def _assisted(rng: np.random.Generator, people: _Customers, owner: np.ndarray) -> np.ndarray:
    """Channel codes for interactions that may happen in a branch, else digitally."""
    channel, _ = _digital(rng, people, owner)
    branch = rng.random(owner.size) < people.branch_share[owner]
    return np.where(branch, CHANNEL["branch"], channel).astype(np.int8)


def _complaint_channel(rng: np.random.Generator, people: _Customers, owner: np.ndarray) -> np.ndarray:
    phone = rng.random(owner.size) < 0.4
    return np.where(phone, CHANNEL["phone"], _assisted(rng, people, owner)).astype(np.int8)


def _fee_amounts(rng: np.random.Generator, kind_codes: np.ndarray) -> np.ndarray:
    kind = np.searchsorted(FEE_CODES, kind_codes)
    return FEE_MEDIAN[kind] * np.exp(rng.normal(0, 1, kind.size) * FEE_SIGMA[kind])


# ------------------------------------------------------------------------------------------- scenarios
@dataclass
class _Plan:
    """The planted scenarios of one block and the constraints they put on the background streams."""

    churn: np.ndarray  # scenario code per customer (NONE, CAUSE, decoys 2..)
    default: np.ndarray
    uptake: np.ndarray
    uptake_product: np.ndarray  # item code of the product the uptake scenario is about (-1 none)
    fade_start: np.ndarray  # logins start fading at this day (inf = never)
    fade_end: np.ndarray  # logins recover at this day (inf = never)
    salary_gap: np.ndarray  # (n, 2) salaries with lo < payday <= hi are not paid
    salary_tag: np.ndarray  # payday (month index) that belongs to the default scenario, -1 none
    quiet_churn: np.ndarray  # (n, 2) no background complaints / fees in [lo, hi)
    quiet_missed: np.ndarray  # (n, 2) no background missed payments in [lo, hi)
    quiet_risky: np.ndarray  # (n, 2) no background gambling / cash-advance card spend in [lo, hi)
    risky_window: (
        np.ndarray
    )  # (n, 2) planted risky spend falls in [lo, hi): other card spend thins (0, 0 none)
    risky_count: np.ndarray  # planted risky payments (0 none)
    quiet_views: np.ndarray  # (n, 2) no background views of uptake_product in [lo, hi)
    close_day: np.ndarray  # account_close (inf = none)
    default_day: np.ndarray  # default_notice (inf = none); cards blocked after it


def _draw_scenarios(rng: np.random.Generator, people: _Customers) -> _Plan:
    n, rates = people.n, SCENARIO_RATES
    churn_p = [rates.churn_cause] + [rates.churn_decoy_each] * len(rules.CHURN_DECOYS)
    default_p = [rates.default_cause] + [rates.default_decoy_each] * len(rules.DEFAULT_DECOYS)
    uptake_p = [rates.uptake_cause] + [rates.uptake_decoy_each] * len(rules.UPTAKE_DECOYS)
    churn = rng.choice(len(churn_p) + 1, size=n, p=[1 - sum(churn_p)] + churn_p).astype(np.int8)
    default = rng.choice(len(default_p) + 1, size=n, p=[1 - sum(default_p)] + default_p).astype(np.int8)
    uptake = rng.choice(len(uptake_p) + 1, size=n, p=[1 - sum(uptake_p)] + uptake_p).astype(np.int8)
    eligible = np.array([s.default_eligible for s in SEGMENTS])[people.segment]
    default[~eligible] = NONE
    churn[(default == CAUSE) & (churn == CAUSE)] = NONE  # one planted positive per customer at most
    uptake[((default == CAUSE) | (churn == CAUSE)) & (uptake == CAUSE)] = NONE
    never = np.full(n, np.inf)
    no_window = np.full((n, 2), np.inf)
    return _Plan(
        churn=churn,
        default=default,
        uptake=uptake,
        uptake_product=np.full(n, -1, dtype=np.int16),
        fade_start=never.copy(),
        fade_end=never.copy(),
        salary_gap=no_window.copy(),
        salary_tag=np.full(n, -1),
        quiet_churn=no_window.copy(),
        quiet_missed=no_window.copy(),
        quiet_risky=no_window.copy(),
        risky_window=np.zeros((n, 2)),
        risky_count=np.zeros(n),
        quiet_views=no_window.copy(),
        close_day=never.copy(),
        default_day=never.copy(),
    )


def _plant_churn(rng: np.random.Generator, people: _Customers, plan: _Plan, sink: _EventSink) -> None:
    """Complaint and fee in the rule's order and timing, or in a decoy's; logins fade after the later one."""
    who = np.flatnonzero(plan.churn != NONE)
    kind, cutoff = plan.churn[who], people.cutoff[who]
    fee_before_complaint, late_fee, no_fade = 2, 3, 4
    near, far = rules.CHURN_FEE_BEFORE_CUTOFF_DAYS
    later = cutoff - rng.integers(int(near), int(far) + 1, who.size)
    short_gap = rng.integers(1, int(rules.CHURN_FEE_WITHIN_DAYS), who.size)
    late_gap = rng.integers(
        int(rules.CHURN_LATE_FEE_DAYS[0]), int(rules.CHURN_LATE_FEE_DAYS[1]) + 1, who.size
    )
    earlier = later - np.where(kind == late_fee, late_gap, short_gap)
    later_t = _office_time(rng, later)
    earlier_t = _office_time(rng, earlier)
    complaint_t = np.where(kind == fee_before_complaint, later_t, earlier_t)
    fee_t = np.where(kind == fee_before_complaint, earlier_t, later_t)
    tag = TAG_BIT["churn"]
    sink.add(
        who,
        complaint_t,
        "complaint",
        item=_choice(rng, COMPLAINT_CODES, COMPLAINT_MIX, who.size),
        channel=_complaint_channel(rng, people, who),
        tag=tag,
    )
    fee_kind = _choice(rng, FEE_CODES, FEE_MIX, who.size)
    sink.add(who, fee_t, "fee", item=fee_kind, amount=_fee_amounts(rng, fee_kind), tag=tag)
    recover = cutoff + rng.uniform(7, 21, who.size)
    plan.fade_start[who] = np.where(kind == no_fade, np.inf, later_t)
    plan.fade_end[who] = np.where(kind == CAUSE, np.inf, recover)
    plan.quiet_churn[who, 0] = cutoff - 140
    plan.quiet_churn[who, 1] = cutoff


def _plant_default(rng: np.random.Generator, people: _Customers, plan: _Plan, sink: _EventSink) -> None:
    """Salary stop, rising risky card spend and a missed payment, in the rule's order or a decoy's."""
    who = np.flatnonzero(plan.default != NONE)
    kind, cutoff = plan.default[who], people.cutoff[who]
    old_reversed = 2  # wrong_order = 3
    gap_days = rng.uniform(*rules.DEFAULT_SALARY_STOP_DAYS, who.size)
    old_missed = cutoff - rng.integers(160, 176, who.size) + rng.random(who.size)
    old_gap_lo = old_missed + 30
    gap_lo = np.where(kind == old_reversed, old_gap_lo, cutoff - gap_days)
    gap_hi = np.where(kind == old_reversed, old_gap_lo + gap_days, np.inf)
    plan.salary_gap[who, 0], plan.salary_gap[who, 1] = gap_lo, gap_hi
    paydays = people.payday[who]
    paid_before = np.where(paydays <= gap_lo[:, None], paydays, -np.inf)
    last_month = np.argmax(paid_before, axis=1)
    last_salary = paydays[np.arange(who.size), last_month]
    plan.salary_tag[who] = last_month
    # risky payments: a window per customer, 4..7 payments with growing amounts
    lo = np.select([kind == CAUSE, kind == old_reversed], [last_salary + 3, old_missed + 2], last_salary - 70)
    hi = np.select([kind == CAUSE, kind == old_reversed], [cutoff - 10, old_missed + 28], last_salary - 15)
    count = rng.integers(rules.DEFAULT_RISKY_PAYMENTS[0], rules.DEFAULT_RISKY_PAYMENTS[1] + 1, who.size)
    owner = np.repeat(np.arange(who.size), count)
    times = lo[owner] + rng.random(owner.size) * (hi - lo)[owner]
    order = np.lexsort((times, owner))
    times = times[order]
    rank = np.arange(owner.size) - np.repeat(np.cumsum(count) - count, count)
    base = np.exp(rng.normal(np.log(40.0), 0.3, who.size)) * people.spend_scale[who]
    amounts = base[owner] * rules.DEFAULT_RISK_GROWTH**rank * np.exp(rng.normal(0, 0.05, owner.size))
    gambling = rng.random(owner.size) < 0.7
    item = np.where(gambling, ITEM["gambling"], ITEM["cash_advance"])
    channel = np.where(gambling, CHANNEL["online"], CHANNEL["atm"])
    tag = TAG_BIT["default"]
    sink.add(who[owner], times, "card_payment", item=item, channel=channel, amount=amounts, tag=tag)
    last_risky = times[np.cumsum(count) - 1]
    plan.risky_window[who, 0], plan.risky_window[who, 1], plan.risky_count[who] = lo, hi, count
    missed_lo = np.where(kind == old_reversed, old_missed, last_risky + 0.5)
    missed_hi = np.select([kind == CAUSE, kind == old_reversed], [cutoff - 0.5, old_missed], last_salary - 1)
    missed = missed_lo + rng.random(who.size) * (missed_hi - missed_lo)
    sink.add(
        who,
        missed,
        "missed_payment",
        item=_choice(rng, CREDIT_CODES, CREDIT_MIX, who.size),
        amount=np.exp(rng.normal(np.log(150.0), 0.6, who.size)),
        tag=tag,
    )
    first_planted = np.minimum(times[np.cumsum(count) - count], missed)
    plan.quiet_missed[who, 0] = first_planted - 10
    plan.quiet_missed[who, 1] = cutoff
    stopped = (
        kind != old_reversed
    )  # the salary stops before the cut-off: keep risky spend after it planted only
    plan.quiet_risky[who[stopped], 0] = last_salary[stopped]
    plan.quiet_risky[who[stopped], 1] = cutoff[stopped]


def _draw_salary_gaps(rng: np.random.Generator, people: _Customers, plan: _Plan) -> None:
    """Background salary gaps (a job change): 1-3 paydays missed, salaries resumed well before the cut-off."""
    n = people.n
    salaried = np.array([s.salaried for s in SEGMENTS])[people.segment]
    length = rng.choice(np.array([20.0, 50.0, 80.0]), size=n, p=[0.5, 0.35, 0.15])  # days: 1, 2 or 3 paydays
    latest = people.cutoff - rules.DEFAULT_ORACLE_SALARY_GAP_DAYS - length
    lo = people.join + 20 + rng.random(n) * np.maximum(latest - people.join - 20, 0)
    gap = salaried & (plan.default == NONE) & (rng.random(n) < SALARY_GAP_SHARE) & (latest > people.join + 20)
    plan.salary_gap[gap, 0] = lo[gap]
    plan.salary_gap[gap, 1] = lo[gap] + length[gap]


def _plant_uptake(rng: np.random.Generator, people: _Customers, plan: _Plan, sink: _EventSink) -> None:
    """Views of one product: a recent burst (rule), spread-out recent views or an old burst (decoys)."""
    who = np.flatnonzero(plan.uptake != NONE)
    kind, cutoff = plan.uptake[who], people.cutoff[who]
    spread, old_burst = 2, 3
    interest = np.array([s.product_interest for s in SEGMENTS])
    product = PRODUCT_CODES[_sample_rows(rng, interest, people.segment[who])]
    plan.uptake_product[who] = product
    count = rng.integers(rules.UPTAKE_VIEWS[0], rules.UPTAKE_VIEWS[1] + 1, who.size)
    recent_end = cutoff - rng.uniform(0.5, 18.0, who.size)
    old_end = cutoff - rng.uniform(*rules.UPTAKE_OLD_BURST_DAYS, who.size)
    last_view = np.where(kind == old_burst, old_end, recent_end)
    span = rng.uniform(1.0, 8.0, who.size)  # planted burst span; + time-of-day jitter stays < 10 days
    owner = np.repeat(np.arange(who.size), count)
    rank = np.arange(owner.size) - np.repeat(np.cumsum(count) - count, count)  # 0 = latest view
    inner = rng.random(owner.size)
    inner = np.where(rank == 0, 0.0, np.where(rank == count[owner] - 1, 1.0, inner))
    burst_t = last_view[owner] - span[owner] * inner
    gaps = rng.uniform(*rules.UPTAKE_SPREAD_GAP_DAYS, owner.size)
    gaps[rank == 0] = 0.0
    back = np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[np.cumsum(count) - count], count)
    spread_t = last_view[owner] - back
    times = np.where(kind[owner] == spread, spread_t, burst_t)
    times = np.minimum(np.floor(times) + _time_of_day(rng, LOGIN_HOURS, owner.size), cutoff[owner] - 1e-3)
    channel, device = _digital(rng, people, who[owner])
    sink.add(
        who[owner],
        times,
        "product_view",
        item=product[owner],
        channel=channel,
        device=device,
        tag=TAG_BIT["uptake"],
    )
    plan.quiet_views[who, 0] = cutoff - 160
    plan.quiet_views[who, 1] = cutoff


def _draw_outcomes(rng: np.random.Generator, people: _Customers, plan: _Plan, sink: _EventSink) -> None:
    """account_close / default_notice / product_application after the cut-off, caused or background."""
    n, rates, cutoff = people.n, SCENARIO_RATES, people.cutoff
    horizon = rules.HORIZON_DAYS
    keep = rng.random((n, 3)) < rules.CAUSE_KEEP
    background = rng.random((n, 3))

    def in_horizon(first_day: int) -> np.ndarray:  # offsets in (first_day, horizon) days after the cut-off
        return _office_time(rng, rng.integers(first_day, horizon, n).astype(float))

    close_offset, default_offset, apply_offset = in_horizon(0), in_horizon(2), in_horizon(0)
    churns = ((plan.churn == CAUSE) & keep[:, 0]) | (
        (plan.churn == NONE) & (background[:, 0] < rates.churn_background)
    )
    late = ~churns & (rng.random(n) < LATE_CLOSE_SHARE)
    late_day = cutoff + horizon + 1 + rng.random(n) * 30
    plan.close_day = np.where(churns, cutoff + close_offset, np.where(late, late_day, np.inf))
    closing = np.flatnonzero(np.isfinite(plan.close_day))
    reasons = np.where(
        plan.churn[closing] == CAUSE,
        _choice(rng, CLOSE_CODES, CLOSE_MIX_CHURN, closing.size),
        _choice(rng, CLOSE_CODES, CLOSE_MIX_OTHER, closing.size),
    )
    sink.add(
        closing,
        plan.close_day[closing],
        "account_close",
        item=reasons,
        channel=_complaint_channel(rng, people, closing),
    )

    defaults = ((plan.default == CAUSE) & keep[:, 1]) | (
        (plan.default == NONE) & (background[:, 1] < rates.default_background)
    )
    plan.default_day = np.where(defaults, cutoff + default_offset, np.inf)
    who = np.flatnonzero(defaults)
    sink.add(
        who,
        plan.default_day[who],
        "default_notice",
        item=_choice(rng, CREDIT_CODES, CREDIT_MIX, who.size),
        amount=np.exp(rng.normal(np.log(3000.0), 0.8, who.size)),
    )

    applies = ((plan.uptake == CAUSE) & keep[:, 2]) | (
        (plan.uptake == NONE) & (background[:, 2] < rates.uptake_background)
    )
    who = np.flatnonzero(applies)
    interest = np.array([s.product_interest for s in SEGMENTS])
    random_product = PRODUCT_CODES[_sample_rows(rng, interest, people.segment[who])]
    product = np.where(plan.uptake[who] == CAUSE, plan.uptake_product[who], random_product)
    sink.add(
        who,
        cutoff[who] + apply_offset[who],
        "product_application",
        item=product,
        channel=_assisted(rng, people, who),
    )


def _in_window(day: np.ndarray, window: np.ndarray) -> np.ndarray:
    return (day >= window[:, 0]) & (day < window[:, 1])


def _draw_background(
    rng: np.random.Generator, cal: _Calendar, people: _Customers, plan: _Plan, sink: _EventSink
) -> None:
    """Every customer's everyday behaviour, respecting the quiet windows the planted scenarios need."""
    n, seg = people.n, people.segment
    lo, hi = people.join, np.full(n, cal.end_day)
    profile = {
        name: np.array([getattr(s, name) for s in SEGMENTS])[seg]
        for name in (
            "logins_per_week",
            "card_payments_per_week",
            "transfers_in_per_month",
            "transfers_out_per_month",
            "standing_order_share",
            "calls_per_year",
            "salaried",
        )
    }

    # account opening of the customers who join during the window
    who = np.flatnonzero(people.joined)
    channel, device = _digital(rng, people, who)
    branch = rng.random(who.size) < people.branch_share[who]
    sink.add(
        who,
        people.join[who],
        "account_open",
        item=ITEM["current_account"],
        channel=np.where(branch, CHANNEL["branch"], channel),
        device=np.where(branch, -1, device),
    )

    # logins: weekly and daily rhythm, fading where a churn scenario says so
    owner, day = _rhythmic_days(
        rng, cal, profile["logins_per_week"] / 7 * people.activity, lo, hi, LOGIN_WEEKDAYS, LOGIN_HOURS
    )
    start, end = plan.fade_start[owner], plan.fade_end[owner]
    fading = (day >= start) & (day < end)
    level = np.maximum(
        rules.CHURN_FADE_FLOOR, 1 - (day - np.where(fading, start, day)) / rules.CHURN_FADE_RAMP_DAYS
    )
    kept = rng.random(owner.size) < np.where(fading, level, 1.0)
    owner, day = owner[kept], day[kept]
    channel, device = _digital(rng, people, owner)
    sink.add(owner, day, "login", channel=channel, device=device)

    # card payments: merchant mix per segment (and habitual gamblers), log-normal amounts
    mix = np.tile(MERCHANT_BASE_MIX, (len(SEGMENTS), 1))
    for row, segment in enumerate(SEGMENTS):
        for name, factor in segment.merchant_tilt.items():
            mix[row, MERCHANT_CATEGORIES.index(name)] *= factor
    customer_mix = mix[seg]
    customer_mix[:, MERCHANT_CATEGORIES.index("gambling")] *= np.where(people.gambler, 8.0, 0.5)
    customer_mix[:, MERCHANT_CATEGORIES.index("cash_advance")] *= np.where(people.gambler, 3.0, 1.0)
    rate_cards = profile["card_payments_per_week"] / 7 * people.activity
    owner, day = _rhythmic_days(rng, cal, rate_cards, lo, hi, SHOP_WEEKDAYS, SHOP_HOURS)
    category = _sample_rows(rng, customer_mix, owner)
    # planted risky spend replaces part of the everyday spend in its window (keeps card counts comparable)
    window = plan.risky_window[owner]
    expected = rate_cards[owner] * (window[:, 1] - window[:, 0])
    keep_share = np.clip(1 - SUBSTITUTION * plan.risky_count[owner] / np.maximum(expected, 1e-9), 0.3, 1.0)
    kept = ~_in_window(day, window) | (rng.random(owner.size) < keep_share)
    owner, day, category = owner[kept], day[kept], category[kept]
    risky = (category >= MERCHANT_CATEGORIES.index("gambling")) & _in_window(day, plan.quiet_risky[owner])
    owner, day, category = owner[~risky], day[~risky], category[~risky]
    amount = (
        MERCHANT_MEDIAN[category]
        * people.spend_scale[owner]
        * np.exp(rng.normal(0, 1, owner.size) * MERCHANT_SIGMA[category])
    )
    online = rng.random(owner.size) < MERCHANT_ONLINE_SHARE[category]
    channel = np.where(
        category == MERCHANT_CATEGORIES.index("cash_advance"),
        CHANNEL["atm"],
        np.where(online, CHANNEL["online"], CHANNEL["pos"]),
    )
    sink.add(owner, day, "card_payment", item=MERCHANT_CODES[category], channel=channel, amount=amount)

    # salary (pension for the retired) on the customer's payday, unless a default scenario stops it
    paid = (
        profile["salaried"].astype(bool)[:, None]
        & (people.payday >= people.join[:, None])
        & (people.payday < cal.end_day)
        & ~((people.payday > plan.salary_gap[:, :1]) & (people.payday <= plan.salary_gap[:, 1:]))
    )
    owner, month = np.nonzero(paid)
    amount = people.income[owner] * np.exp(rng.normal(0, 0.02, owner.size))
    tag = np.where(plan.salary_tag[owner] == month, TAG_BIT["default"], 0)
    sink.add(owner.astype(np.int32), people.payday[owner, month], "salary", amount=amount, tag=tag)

    # monthly standing order (rent, mortgage, payroll, savings), automatic: no channel
    order_day = cal.month_start[None, :-1] + (people.standing_order_day[:, None] - 1)
    order_day = order_day + 0.25 + rng.random(order_day.shape) * 0.1
    owner, month = np.nonzero((order_day >= people.join[:, None]) & (order_day < cal.end_day))
    purpose = np.array([ITEM[s.standing_order] for s in SEGMENTS])[seg[owner]]
    amount = (
        profile["standing_order_share"][owner]
        * people.income[owner]
        * np.exp(rng.normal(0, 0.01, owner.size))
    )
    sink.add(owner.astype(np.int32), order_day[owner, month], "transfer_out", item=purpose, amount=amount)

    # other transfers in and out
    owner, day = _rhythmic_days(
        rng, cal, profile["transfers_in_per_month"] / 30.4, lo, hi, OFFICE_WEEKDAYS, OFFICE_HOURS
    )
    kind = _sample_rows(rng, np.array([s.transfer_in_mix for s in SEGMENTS]), seg[owner])
    income = people.income[owner]
    median = np.select(
        [kind == 0, kind == 2, kind == 1],
        [np.where(seg[owner] == 2, 0.9 * income, 200.0), income / 2.5, 40.0],
        35.0,
    )
    sigma = np.array([0.15, 0.9, 0.7, 0.8])[kind]
    sink.add(
        owner,
        day,
        "transfer_in",
        item=TRANSFER_IN_CODES[kind],
        channel=_assisted(rng, people, owner),
        amount=median * np.exp(rng.normal(0, 1, owner.size) * sigma),
    )
    owner, day = _rhythmic_days(
        rng,
        cal,
        profile["transfers_out_per_month"] / 30.4 * people.activity,
        lo,
        hi,
        LOGIN_WEEKDAYS,
        LOGIN_HOURS,
    )
    kind = _sample_rows(rng, np.array([s.transfer_out_mix for s in SEGMENTS]), seg[owner])
    amount = 0.12 * people.income[owner] * np.exp(rng.normal(0, 0.8, owner.size))
    sink.add(
        owner,
        day,
        "transfer_out",
        item=TRANSFER_OUT_CODES[kind],
        channel=_assisted(rng, people, owner),
        amount=amount,
    )

    # fees and complaints (kept out of the churn scenarios' quiet windows)
    fee_rate = np.where(seg == 2, 1.5, 1.0) * FEES_PER_MONTH / 30.4
    owner, day = _poisson_days(rng, fee_rate, lo, hi)
    owner, day = (
        owner[~_in_window(day, plan.quiet_churn[owner])],
        day[~_in_window(day, plan.quiet_churn[owner])],
    )
    kind = _choice(rng, FEE_CODES, FEE_MIX, owner.size)
    sink.add(
        owner, np.floor(day) + 0.2 * rng.random(owner.size), "fee", item=kind, amount=_fee_amounts(rng, kind)
    )
    owner, day = _rhythmic_days(
        rng, cal, np.full(n, COMPLAINTS_PER_YEAR / 365), lo, hi, OFFICE_WEEKDAYS, OFFICE_HOURS
    )
    owner, day = (
        owner[~_in_window(day, plan.quiet_churn[owner])],
        day[~_in_window(day, plan.quiet_churn[owner])],
    )
    sink.add(
        owner,
        day,
        "complaint",
        item=_choice(rng, COMPLAINT_CODES, COMPLAINT_MIX, owner.size),
        channel=_complaint_channel(rng, people, owner),
    )

    # call-centre contacts
    owner, day = _rhythmic_days(
        rng, cal, profile["calls_per_year"] / 365, lo, hi, OFFICE_WEEKDAYS, OFFICE_HOURS
    )
    sink.add(
        owner,
        day,
        "call_centre",
        item=_choice(rng, CALL_CODES, CALL_MIX, owner.size),
        channel=CHANNEL["phone"],
    )

    # product views (not of the planted product inside an uptake scenario's window) and applications
    interest = np.array([s.product_interest for s in SEGMENTS])
    session, start = _rhythmic_days(
        rng,
        cal,
        BROWSE_SESSIONS_PER_MONTH / 30.4 * np.sqrt(people.activity),
        lo,
        hi,
        LOGIN_WEEKDAYS,
        LOGIN_HOURS,
    )
    viewed = rng.choice(3, size=session.size, p=[0.5, 0.3, 0.2]) + 1  # distinct products per session
    keys = np.log(interest[seg[session]] + 1e-12) + rng.gumbel(size=(session.size, len(PRODUCTS)))
    ranked = np.argsort(-keys, axis=1)  # Gumbel top-k: products without replacement by interest
    slot = np.arange(3)[None, :] < viewed[:, None]
    row, position = np.nonzero(slot)
    owner = session[row]
    day = start[row] + position * rng.uniform(1, 4, row.size) / 1440  # a few minutes apart
    product = PRODUCT_CODES[ranked[row, position]]
    quiet = (product == plan.uptake_product[owner]) & _in_window(day, plan.quiet_views[owner])
    owner, day, product = owner[~quiet], day[~quiet], product[~quiet]
    channel, device = _digital(rng, people, owner)
    sink.add(owner, day, "product_view", item=product, channel=channel, device=device)
    owner, day = _rhythmic_days(
        rng, cal, np.full(n, APPLICATIONS_PER_YEAR / 365), lo, hi, OFFICE_WEEKDAYS, OFFICE_HOURS
    )
    after = day - people.cutoff[owner]
    outside = (after <= 0) | (after > rules.HORIZON_DAYS)  # inside the horizon only caused or background
    owner, day = owner[outside], day[outside]
    sink.add(
        owner,
        day,
        "product_application",
        item=PRODUCT_CODES[_sample_rows(rng, interest, seg[owner])],
        channel=_assisted(rng, people, owner),
    )

    # background missed payments (kept out of the default scenarios' quiet windows)
    owner, day = _rhythmic_days(
        rng, cal, np.full(n, MISSED_PAYMENTS_PER_YEAR / 365), lo, hi, OFFICE_WEEKDAYS, OFFICE_HOURS
    )
    owner, day = (
        owner[~_in_window(day, plan.quiet_missed[owner])],
        day[~_in_window(day, plan.quiet_missed[owner])],
    )
    sink.add(
        owner,
        day,
        "missed_payment",
        item=_choice(rng, CREDIT_CODES, CREDIT_MIX, owner.size),
        amount=np.exp(rng.normal(np.log(120.0), 0.7, owner.size)),
    )


# ----------------------------------------------------------------------------------------- one block
@dataclass
class _BlockOutput:
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


def _take(vocab: tuple[str, ...], codes: np.ndarray) -> pa.Array:
    return pa.array(vocab, pa.string()).take(pa.array(codes.astype(np.int32), mask=codes < 0))


def _generate_block(seed: int, block: int, keep: int, cal: _Calendar, config: DatasetConfig) -> _BlockOutput:
    """Simulate the whole block ``block`` (BLOCK_CUSTOMERS customers) and keep its first ``keep``."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(block,))))
    n, first = BLOCK_CUSTOMERS, block * BLOCK_CUSTOMERS
    people = _draw_customers(rng, cal, n)
    plan = _draw_scenarios(rng, people)
    sink = _EventSink()
    _plant_churn(rng, people, plan, sink)
    _plant_default(rng, people, plan, sink)
    _plant_uptake(rng, people, plan, sink)
    _draw_salary_gaps(rng, people, plan)
    _draw_outcomes(rng, people, plan, sink)
    _draw_background(rng, cal, people, plan, sink)

    col = sink.columns()
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
    owner, seconds, etype = owner[order], seconds[order], etype[order]
    item, channel, device = col["item"][order], col["channel"][order], col["device"][order]
    amount, tag = col["amount"][order], col["tag"][order]
    offsets = np.searchsorted(owner, np.arange(keep + 1)).astype(np.int64)
    sequence = np.arange(owner.size) - offsets[owner]
    if sequence.size and sequence.max() >= 10**EVENT_SEQUENCE_DIGITS:
        raise SynthError(
            f"a customer has more than {10**EVENT_SEQUENCE_DIGITS - 1} events; shorten the window"
        )

    # balance after each money-moving event
    signed = np.nan_to_num(amount) * BALANCE_SIGN[etype]
    running = np.concatenate([[0.0], np.cumsum(signed)])
    balance = people.opening_balance[owner] + running[1:] - running[offsets[owner]]
    balance = np.where(BALANCE_SIGN[etype] != 0, np.round(balance, 2), np.nan)

    ids = pa.array([f"C{first + i:0{CUSTOMER_ID_DIGITS}d}" for i in range(keep)], pa.string())
    customer_id = ids.take(pa.array(owner))
    digits = pc.utf8_lpad(pc.cast(pa.array(sequence), pa.string()), width=EVENT_SEQUENCE_DIGITS, padding="0")
    event_id = pc.binary_join_element_wise(customer_id, digits, "-")
    ts_us = cal.start_us + seconds * 1_000_000
    columns = {
        "customer_id": customer_id,
        "ts": pa.array(ts_us, TIMESTAMP_TYPE),
        "event_type": _take(EVENT_TYPES, etype),
        "event_id": event_id,
        "item": _take(ITEMS, item),
        "channel": _take(CHANNELS, channel),
        "device": _take(DEVICES, device),
        "amount": pa.array(amount, pa.float64(), from_pandas=True),
        "balance": pa.array(balance, pa.float64(), from_pandas=True),
    }
    events = conform_table(pa.table(columns), config, source=f"synth block {block}")

    # labels: read off the generated events after the cut-off
    cutoff = people.cutoff[:keep]
    after = (seconds / 86_400.0) - cutoff[owner]
    in_horizon = (after > 0) & (after <= rules.HORIZON_DAYS)
    label = {}
    for target in rules.TARGETS:
        hit = np.zeros(keep, dtype=bool)
        hit[owner[in_horizon & (etype == TYPE[rules.OUTCOME_EVENT[target]])]] = True
        label[target] = hit.astype(float)
    cutoff_ts = pa.array(cal.start_us + cutoff.astype(np.int64) * US_PER_DAY, TIMESTAMP_TYPE)
    labels = pa.table({"customer_id": ids, "cutoff": cutoff_ts, **label}, schema=LABELS_SCHEMA)

    ground_truth, gt_owner = _ground_truth(ids, cutoff_ts, plan, label, owner, tag, event_id, keep)
    return _BlockOutput(first, keep, events, offsets, labels, ground_truth, gt_owner, etype)


def _ground_truth(
    ids: pa.Array,
    cutoff_ts: pa.Array,
    plan: _Plan,
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


# -------------------------------------------------------------------------------------------- writing
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


def _prepare_out_dir(out: Path) -> int:
    """Make ``out`` ready; remove a previous synth run's outputs there. Returns the files removed."""
    events_dir = out / "events"
    old_parts = sorted(events_dir.glob("part-*.parquet")) if events_dir.is_dir() else []
    if old_parts:
        previous = out / "dataset.yaml"
        name = None
        if previous.is_file():
            with open(previous) as handle:
                data = yaml.safe_load(handle) or {}
            name = (data.get("dataset", data) or {}).get("name") if isinstance(data, dict) else None
        if name != DATASET_NAME:
            raise SynthError(
                f"{events_dir} already holds {len(old_parts)} event part(s) that are not a synth_bank output "
                f"({previous} names dataset {name!r}); choose an empty folder"
            )
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
    remove_stale_temporaries(out, "dataset.yaml", "labels.parquet", "ground_truth.parquet", "synth_report.json")
    events_dir.mkdir(parents=True, exist_ok=True)
    return removed


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
    ``chunk_customers`` customers go into each events part. See the module docstring for the layout and
    the determinism guarantees.
    """
    began = time.perf_counter()
    customers = _integer("customers", customers, 1, 10**CUSTOMER_ID_DIGITS - 1)
    seed = _integer("seed", seed, 0, 2**63 - 1)
    chunk_customers = _integer("chunk_customers", chunk_customers, 1, 10**CUSTOMER_ID_DIGITS - 1)
    months = _integer("months", months, MIN_MONTHS, MAX_MONTHS)
    cal = _Calendar.build(start, months)
    config = DatasetConfig.load(CONFIG_PATH)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    replaced = _prepare_out_dir(out)
    with atomic_path(out / "dataset.yaml") as temporary:
        config.save(temporary)

    labels_file, truth_file = StagedFile(out / "labels.parquet"), StagedFile(out / "ground_truth.parquet")
    label_writer = pq.ParquetWriter(labels_file.temporary, LABELS_SCHEMA, compression="zstd")
    truth_writer = pq.ParquetWriter(truth_file.temporary, GROUND_TRUTH_SCHEMA, compression="zstd")
    parts = _PartWriter(out / "events", config.arrow_schema(), label_writer, truth_writer)
    type_counts = np.zeros(len(EVENT_TYPES), dtype=np.int64)
    positives = dict.fromkeys(rules.TARGETS, 0)
    rule_rows: dict[str, int] = {}
    blocks = math.ceil(customers / BLOCK_CUSTOMERS)
    bar = tqdm(total=customers, unit="customer", desc="synth", disable=not progress, file=sys.stderr)
    try:
        for block in range(blocks):
            keep = min(BLOCK_CUSTOMERS, customers - block * BLOCK_CUSTOMERS)
            output = _generate_block(seed, block, keep, cal, config)
            done = 0
            while done < keep:
                take = min(chunk_customers - parts.customers, keep - done)
                events, labels, truth = output.slice(done, done + take)
                parts.write(events, labels, truth)
                if parts.customers == chunk_customers:
                    parts.finish_part()
                done += take
                bar.update(take)
            type_counts += np.bincount(output.event_type_codes, minlength=len(EVENT_TYPES))
            for target in rules.TARGETS:
                positives[target] += int(pc.sum(output.labels.column(target)).as_py() or 0)
            names, counts = np.unique(
                output.ground_truth.column("rule").to_numpy(zero_copy_only=False), return_counts=True
            )
            for name, count in zip(names, counts):
                rule_rows[str(name)] = rule_rows.get(str(name), 0) + int(count)
        if parts.customers:
            parts.finish_part()
        label_writer.close()
        truth_writer.close()
    except BaseException:
        parts.abort()
        for writer, staged in ((label_writer, labels_file), (truth_writer, truth_file)):
            writer.close()
            staged.discard()
        raise
    finally:
        bar.close()
    labels_file.commit()
    truth_file.commit()

    report = SynthReport(
        out_dir=str(out),
        customers=customers,
        events=parts.events,
        parts=parts.index,
        seed=seed,
        start=str(cal.start),
        months=months,
        horizon_days=rules.HORIZON_DAYS,
        cutoffs=[cal.iso(day) for day in cal.cutoff_days],
        label_counts=positives,
        label_rates={t: positives[t] / customers for t in rules.TARGETS},
        ground_truth_rows=dict(sorted(rule_rows.items())),
        events_by_type={name: int(count) for name, count in zip(EVENT_TYPES, type_counts)},
        seconds=round(time.perf_counter() - began, 3),
        replaced_files=replaced,
    )
    write_text_atomic(out / "synth_report.json", json.dumps(asdict(report), indent=2) + "\n")
    return report

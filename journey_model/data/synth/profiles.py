"""The synthetic bank's behaviour tables: ``profiles.yaml`` loaded, checked and typed once; the codes.

``profiles.yaml`` (beside this module) holds the numbers — customer segments, population rates, how often
each planted scenario is drawn, the item vocabularies with their amounts and mixes, the hour and weekday
rhythms. :func:`load_profiles` reads it into the frozen dataclasses below (numpy arrays in vocabulary order,
float64 like the literals they replaced, so the generated data does not move) and rejects a malformed file
with a :class:`SynthError` that names the key: ``profiles.yaml: segments.mass.share: …``.

The module also fixes the vocabularies the generator's code is written against — event types, channels,
devices — and the integer codes the generator works with (``TYPE``, ``ITEM``, ``CHANNEL``): an event is
simulated as small integers and turned into strings only when its block is written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path

import numpy as np
import yaml

from journey_model.data.synth import rules

PROFILES_PATH = Path(__file__).with_name("profiles.yaml")


class SynthError(ValueError):
    """Bad arguments to the synthetic generator, a malformed profiles file, or a folder not to overwrite."""


# ------------------------------------------------------------------------- vocabularies fixed by the code
# Every event type has its own generator code, so these are code, not data. Their order is the tie-break of
# events within the same second.
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
MONEY_IN: tuple[str, ...] = ("salary", "transfer_in")
MONEY_OUT: tuple[str, ...] = ("card_payment", "transfer_out", "fee")
BALANCE_SIGN = np.zeros(len(EVENT_TYPES))  # +1 money in, -1 money out, 0 no money moved (missed payments owe)
BALANCE_SIGN[[TYPE[name] for name in MONEY_IN]] = 1
BALANCE_SIGN[[TYPE[name] for name in MONEY_OUT]] = -1
CHANNELS: tuple[str, ...] = ("app", "web", "branch", "phone", "pos", "online", "atm")
CHANNEL = {name: code for code, name in enumerate(CHANNELS)}
DEVICES: tuple[str, ...] = ("ios", "android", "desktop")  # codes 0, 1: the customer's phone; 2: the web
ACCOUNT_ITEM = "current_account"  # the item of account_open (between the products and the fees in ITEMS)


# ------------------------------------------------------------------------------------------- the tables
@dataclass(frozen=True)
class SegmentProfile:
    """How one customer segment behaves; rates are means for a customer of activity 1 (``profiles.yaml``)."""

    name: str
    share: float  # fraction of customers in the segment
    salaried: bool  # paid a monthly salary (a pension for the retired): salary events
    default_eligible: bool  # may receive the planted default scenario (salaried employees)
    income_median: float  # median monthly income (salary, allowance or business revenue), EUR
    income_sigma: float  # log-normal sigma of income across customers
    logins_per_week: float
    card_payments_per_week: float
    transfers_in_per_month: float  # incoming transfers per month besides the salary
    transfers_out_per_month: float  # outgoing transfers per month besides the standing order
    standing_order: str  # transfer_out kind (purpose) of the monthly standing order
    standing_order_share: float  # standing-order amount as a fraction of monthly income
    app_share: float  # probability that a digital interaction uses the app rather than the web
    branch_share: float  # probability that a transfer / application / complaint / close is at a branch
    calls_per_year: float  # call-centre contacts per year
    fees_factor: float  # multiplier on the population's background fee rate
    family_allowance: bool  # family transfers in are the monthly allowance (0.9 x income), not gifts
    merchant_tilt: dict[str, float]  # multipliers on the merchants' base mix
    product_interest: tuple[float, ...]  # relative interest in each product, in products order
    transfer_in_mix: tuple[float, ...]  # relative frequency of each transfer_in kind
    transfer_out_mix: tuple[float, ...]  # relative frequency of each transfer_out kind


@dataclass(frozen=True)
class PopulationRates:
    """Shares and background rates of the whole population (``profiles.yaml`` ``population``)."""

    join_share: float  # fraction of customers who open their account during the window
    gambler_share: float  # fraction who gamble by habit (background risky card spend)
    salary_gap_share: float  # fraction of salaried customers with a 1-3 month gap (a job change)
    complaints_per_year: float  # background complaints per customer-year
    fees_per_month: float  # background fees per customer-month (times the segment's fees_factor)
    missed_payments_per_year: float  # background missed payments per customer-year
    applications_per_year: float  # background product applications per customer-year
    browse_sessions_per_month: float  # product-browsing sessions per customer-month
    late_close_share: float  # fraction of customers who close their account after the horizon
    ios_share: float  # fraction of customers whose phone runs iOS (else Android)
    paydays: np.ndarray  # int64 days of the month a salary is paid on


@dataclass(frozen=True)
class ScenarioRates:
    """How often each planted scenario is drawn (fractions of customers, or of eligible customers)."""

    churn_cause: float  # churn_complaint_fee_fade
    churn_decoy_each: float  # each churn decoy
    default_cause: float  # default_salary_stop_gambling_missed_payment, of default-eligible customers
    default_decoy_each: float  # each default decoy, of default-eligible customers
    uptake_cause: float  # uptake_view_burst
    uptake_decoy_each: float  # each uptake decoy
    churn_background: float  # account_close in the horizon without a planted scenario
    default_background: float  # default_notice in the horizon without a planted scenario
    uptake_background: float  # product_application in the horizon without a planted scenario
    risky_substitution: float  # share of planted risky payments that replace everyday card payments


@dataclass(frozen=True)
class Kinds:
    """An item vocabulary (products, transfer kinds) and the item code of each name."""

    names: tuple[str, ...]
    codes: np.ndarray  # int16 index into ITEMS


@dataclass(frozen=True)
class Mix(Kinds):
    """An item vocabulary drawn from with fixed relative weights."""

    weights: np.ndarray


@dataclass(frozen=True)
class Merchants(Kinds):
    """Merchant categories of card payments: log-normal amounts, base mix, online share."""

    median: np.ndarray  # EUR, before the customer's spend scale
    sigma: np.ndarray
    mix: np.ndarray
    online_share: np.ndarray


@dataclass(frozen=True)
class Fees(Kinds):
    """Fee kinds: log-normal amounts and mix weights."""

    median: np.ndarray  # EUR
    sigma: np.ndarray
    mix: np.ndarray


@dataclass(frozen=True)
class CloseReasons(Kinds):
    """Reasons of account_close: one mix after the planted churn cause, one for the other closes."""

    after_churn: np.ndarray
    other: np.ndarray


@dataclass(frozen=True)
class Rhythm:
    """Relative weights of the hour of day (24) and the weekday (Monday … Sunday) of a kind of event."""

    hours: np.ndarray
    weekdays: np.ndarray


@dataclass(frozen=True)
class Profiles:
    """Everything ``profiles.yaml`` holds, typed."""

    population: PopulationRates
    scenarios: ScenarioRates
    segments: tuple[SegmentProfile, ...]
    merchants: Merchants
    products: Kinds
    credit_products: Mix
    fees: Fees
    complaint_reasons: Mix
    call_topics: Mix
    transfer_in_kinds: Kinds
    transfer_out_kinds: Kinds
    close_reasons: CloseReasons
    login: Rhythm  # logins, transfers out, product browsing
    shop: Rhythm  # card payments
    office: Rhythm  # transfers in, complaints, calls, applications, missed payments
    items: tuple[str, ...]  # every item name, in code order (an item's code is its index)

    def segment_values(self, name: str) -> np.ndarray:
        """The field ``name`` of every segment, as an array indexed by segment."""
        return np.array([getattr(segment, name) for segment in self.segments])


# ------------------------------------------------------------------------------------------- the reader
class _Section:
    """One YAML mapping of the profiles file; every error names the key's path."""

    def __init__(self, data: object, where: str = "") -> None:
        if not isinstance(data, dict):
            raise _error(where, f"expected a mapping, got {data!r}")
        self.data, self.where = data, where
        self._known: set[str] = set()  # keys asked for, present or not (optional keys too)

    def path(self, key: object) -> str:
        """The dotted path of ``key`` in the file, e.g. ``segments.mass.share``."""
        return f"{self.where}.{key}" if self.where else str(key)

    def value(self, key: str, default: object = None) -> object:
        """The value of ``key``; ``default`` if it is absent, or an error where there is no default."""
        self._known.add(key)
        if key not in self.data:
            if default is not None:
                return default
            raise _error(self.where, f"missing key {key!r}")
        return self.data[key]

    def number(self, key: str, *, default: float | None = None, positive: bool = False) -> float:
        return _number(self.value(key, default), self.path(key), positive=positive)

    def share(self, key: str) -> float:
        """A probability or a fraction of customers: a number in [0, 1]."""
        value = self.number(key)
        if value > 1:
            raise _error(self.path(key), f"a share must be at most 1, got {value!r}")
        return value

    def flag(self, key: str, *, default: bool | None = None) -> bool:
        value = self.value(key, default)
        if not isinstance(value, bool):
            raise _error(self.path(key), f"expected true or false, got {value!r}")
        return value

    def name(self, key: str, allowed: tuple[str, ...]) -> str:
        value = self.value(key)
        if value not in allowed:
            raise _error(self.path(key), f"expected one of {', '.join(allowed)}, got {value!r}")
        return str(value)

    def names(self, key: str) -> tuple[str, ...]:
        value = self.value(key)
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise _error(self.path(key), f"expected a list of names, got {value!r}")
        if len(set(value)) != len(value):
            raise _error(self.path(key), "a name appears twice")
        return tuple(value)

    def weights(self, key: str, length: int) -> np.ndarray:
        """A list of ``length`` relative weights (non-negative, not all zero), as float64."""
        value, where = self.value(key), self.path(key)
        if not isinstance(value, list) or len(value) != length:
            raise _error(where, f"expected a list of {length} numbers, got {value!r}")
        return _weights([_number(v, f"{where}[{i}]") for i, v in enumerate(value)], where)

    def section(self, key: str, *, default: dict | None = None) -> _Section:
        return _Section(self.value(key, default), self.path(key))

    def by_name(
        self, key: str, allowed: tuple[str, ...] | None = None, *, mix: bool = True
    ) -> dict[str, float]:
        """A mapping name -> number, names from ``allowed`` if given; a mix: non-negative, not all zero."""
        section = self.section(key)
        unknown = [name for name in section.data if allowed is not None and name not in allowed]
        if unknown:
            raise _error(section.where, f"unknown name {unknown[0]!r} (known: {', '.join(allowed or ())})")
        values = {str(name): section.number(name) for name in section.data}
        if mix:
            _weights(list(values.values()), section.where)
        return values

    def rows(self) -> list[tuple[str, _Section]]:
        """The entries of a table keyed by name (merchants, fees, segments), in file order."""
        if not self.data:
            raise _error(self.where, "expected at least one entry")
        self._known.update(map(str, self.data))
        return [(str(name), _Section(row, self.path(name))) for name, row in self.data.items()]

    def done(self) -> None:
        """Reject keys nobody read: a misspelt optional key would silently fall back to its default."""
        unknown = [key for key in self.data if key not in self._known]
        if unknown:
            raise _error(self.where, f"unknown key {unknown[0]!r} (known: {', '.join(sorted(self._known))})")


class _Malformed(Exception):
    """A mistake in the profiles file; :func:`load_profiles` reports it as a SynthError naming the file."""


def _error(where: str, message: str) -> _Malformed:
    return _Malformed(f"{where}: {message}" if where else message)


def _number(value: object, where: str, *, positive: bool = False) -> float:
    # bool is an int to Python, and "1e-3" (no dot) a string to YAML: both are mistakes here
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _error(where, f"expected a number, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise _error(where, f"expected a {'positive' if positive else 'non-negative'} number, got {value!r}")
    return float(value)  # float(int) is exact, so the arrays hold what the literals they replaced did


def _weights(values: list[float], where: str) -> np.ndarray:
    if not any(values):
        raise _error(where, "the weights are all zero")
    return np.array(values, dtype=float)


def _table(
    section: _Section, columns: tuple[str, ...], mixes: tuple[str, ...]
) -> tuple[tuple[str, ...], dict[str, np.ndarray]]:
    """A table keyed by name with numeric ``columns``: (names, {column: float64 array in name order}).

    The ``mixes`` columns are relative weights, so they must not be all zero.
    """
    names, values = [], {column: [] for column in columns}
    for name, row in section.rows():
        names.append(name)
        for column in columns:
            values[column].append(row.number(column))
        row.done()
    for column in mixes:
        _weights(values[column], f"{section.path('*')}.{column}")
    return tuple(names), {column: np.array(values[column], dtype=float) for column in columns}


def _read_segment(name: str, row: _Section, vocab: dict[str, Kinds]) -> SegmentProfile:
    def mix(key: str, kinds: Kinds) -> tuple[float, ...]:  # in vocabulary order; a kind left out weighs 0
        weights = row.by_name(key, kinds.names)
        return tuple(weights.get(kind, 0.0) for kind in kinds.names)

    segment = SegmentProfile(
        name=name,
        share=row.number("share", positive=True),
        salaried=row.flag("salaried"),
        default_eligible=row.flag("default_eligible"),
        income_median=row.number("income_median", positive=True),
        income_sigma=row.number("income_sigma"),
        logins_per_week=row.number("logins_per_week"),
        card_payments_per_week=row.number("card_payments_per_week"),
        transfers_in_per_month=row.number("transfers_in_per_month"),
        transfers_out_per_month=row.number("transfers_out_per_month"),
        standing_order=row.name("standing_order", vocab["transfer_out_kinds"].names),
        standing_order_share=row.number("standing_order_share"),
        app_share=row.share("app_share"),
        branch_share=row.share("branch_share"),
        calls_per_year=row.number("calls_per_year"),
        fees_factor=row.number("fees_factor", default=1.0),
        family_allowance=row.flag("family_allowance", default=False),
        merchant_tilt=row.by_name("merchant_tilt", vocab["merchants"].names, mix=False),
        product_interest=mix("product_interest", vocab["products"]),
        transfer_in_mix=mix("transfer_in_mix", vocab["transfer_in_kinds"]),
        transfer_out_mix=mix("transfer_out_mix", vocab["transfer_out_kinds"]),
    )
    row.done()
    return segment


def _read_population(section: _Section) -> PopulationRates:
    paydays = section.value("paydays")
    if (
        not isinstance(paydays, list)
        or not paydays
        or not all(isinstance(day, int) and not isinstance(day, bool) and 1 <= day <= 28 for day in paydays)
    ):
        raise _error(
            f"{section.where}.paydays", f"expected a list of days of the month 1..28, got {paydays!r}"
        )
    rates = PopulationRates(
        join_share=section.share("join_share"),
        gambler_share=section.share("gambler_share"),
        salary_gap_share=section.share("salary_gap_share"),
        complaints_per_year=section.number("complaints_per_year"),
        fees_per_month=section.number("fees_per_month"),
        missed_payments_per_year=section.number("missed_payments_per_year"),
        applications_per_year=section.number("applications_per_year"),
        browse_sessions_per_month=section.number("browse_sessions_per_month"),
        late_close_share=section.share("late_close_share"),
        ios_share=section.share("ios_share"),
        paydays=np.array(paydays, dtype=np.int64),
    )
    section.done()
    return rates


def _read_scenarios(section: _Section) -> ScenarioRates:
    rates = ScenarioRates(**{key: section.share(key) for key in ScenarioRates.__dataclass_fields__})
    section.done()
    for target, decoys in rules.DECOYS.items():
        drawn = getattr(rates, f"{target}_cause") + getattr(rates, f"{target}_decoy_each") * len(decoys)
        if drawn > 1:
            raise _error(
                section.where,
                f"{target}: the cause and its {len(decoys)} decoys take {drawn:g} > 1 of the customers",
            )
    return rates


def _read_rhythm(section: _Section) -> Rhythm:
    rhythm = Rhythm(section.weights("hours", 24), section.weights("weekdays", 7))
    section.done()
    return rhythm


def _read_vocabularies(top: _Section) -> tuple[dict[str, Kinds], tuple[str, ...]]:
    """The item vocabularies with their columns and item codes, keyed like the fields of :class:`Profiles`;
    and every item name in code order."""
    merchant_names, merchant = _table(
        top.section("merchants"), ("median", "sigma", "mix", "online_share"), ("mix",)
    )
    missing = [name for name in rules.DEFAULT_RISKY_MERCHANTS if name not in merchant_names]
    if missing:
        raise _error("merchants", f"missing {', '.join(missing)} (the planted default rule's risky spend)")
    products = top.names("products")
    credit = top.by_name("credit_products", products)
    fee_names, fee = _table(top.section("fees"), ("median", "sigma", "mix"), ("mix",))
    complaints, calls = top.by_name("complaint_reasons"), top.by_name("call_topics")
    transfer_in, transfer_out = top.names("transfer_in_kinds"), top.names("transfer_out_kinds")
    close_names, close = _table(
        top.section("close_reasons"), ("after_churn", "other"), ("after_churn", "other")
    )

    # An item's code is its place in the concatenated vocabularies, so they must not share a name.
    items = merchant_names + products + (ACCOUNT_ITEM,) + fee_names + tuple(complaints) + tuple(calls)
    items += transfer_in + transfer_out + close_names
    repeated = sorted({name for name in items if items.count(name) > 1})
    if repeated:
        raise _error("", f"item vocabularies share the name(s) {', '.join(repeated)}")

    def codes(names: tuple[str, ...]) -> np.ndarray:
        return np.array([items.index(name) for name in names], dtype=np.int16)

    def mix(weights: dict[str, float]) -> Mix:
        names = tuple(weights)
        return Mix(names, codes(names), np.array(list(weights.values()), dtype=float))

    vocab = {
        "merchants": Merchants(merchant_names, codes(merchant_names), **merchant),
        "products": Kinds(products, codes(products)),
        "credit_products": mix(credit),
        "fees": Fees(fee_names, codes(fee_names), **fee),
        "complaint_reasons": mix(complaints),
        "call_topics": mix(calls),
        "transfer_in_kinds": Kinds(transfer_in, codes(transfer_in)),
        "transfer_out_kinds": Kinds(transfer_out, codes(transfer_out)),
        "close_reasons": CloseReasons(close_names, codes(close_names), **close),
    }
    return vocab, items


def load_profiles(path: str | Path = PROFILES_PATH) -> Profiles:
    """Read and check a profiles file (default: the bank's ``profiles.yaml``).

    A malformed file raises a :class:`SynthError` naming the file and the key: ``…/profiles.yaml:
    segments.mass.share: expected a positive number, got 0``.
    """
    with open(path) as handle:
        try:
            return _read_profiles(yaml.safe_load(handle))
        except (yaml.YAMLError, _Malformed) as error:
            raise SynthError(f"{path}: {error}") from None


def _read_profiles(data: object) -> Profiles:
    top = _Section(data)
    vocab, items = _read_vocabularies(top)
    segments = tuple(_read_segment(name, row, vocab) for name, row in top.section("segments").rows())
    if not any(segment.default_eligible and segment.salaried for segment in segments):
        raise _error("segments", "no salaried, default-eligible segment: the planted default rule needs one")
    rhythms = top.section("rhythms")
    profiles = Profiles(
        population=_read_population(top.section("population")),
        scenarios=_read_scenarios(top.section("scenarios")),
        segments=segments,
        **vocab,
        login=_read_rhythm(rhythms.section("login")),
        shop=_read_rhythm(rhythms.section("shop")),
        office=_read_rhythm(rhythms.section("office")),
        items=items,
    )
    rhythms.done()
    top.done()
    _freeze(profiles)
    return profiles


def _freeze(value: object) -> None:
    """Make every array of the profiles read-only: they are shared by every block of every run."""
    if isinstance(value, np.ndarray):
        value.setflags(write=False)
    elif isinstance(value, tuple):
        for item in value:
            _freeze(item)
    elif is_dataclass(value):
        for item in fields(value):
            _freeze(getattr(value, item.name))


# ---------------------------------------------------------------------------- the bank's profiles, loaded
PROFILES = load_profiles()
SEGMENTS = PROFILES.segments
ITEMS = PROFILES.items
ITEM = {name: code for code, name in enumerate(ITEMS)}

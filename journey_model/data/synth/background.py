"""The synthetic bank's everyday behaviour: one function per kind of background event, for a whole block.

:func:`draw_background` runs them in a fixed order (the order of the random draws is part of the output).
Each respects the constraints the planted scenarios put in the :class:`~.scenarios.Plan`:
logins fade where a churn scenario says so, salaries stop in a default scenario's gap, and no background
complaint, fee, risky card payment, missed payment or view of the planted product falls into the quiet
window of a scenario, where it would complete or spoil the planted pattern.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from journey_model.data.synth import rules
from journey_model.data.synth.customers import Customers, assisted, complaint_channel, digital
from journey_model.data.synth.draws import (
    Calendar,
    EventSink,
    choice,
    fee_amounts,
    in_window,
    poisson_days,
    rhythmic_days,
    sample_rows,
)
from journey_model.data.synth.profiles import CHANNEL, ITEM, PROFILES, SEGMENTS, Rhythm
from journey_model.data.synth.scenarios import TAG_BIT, Plan

DAYS_PER_MONTH = 30.4
GAMBLER_TILT = {"gambling": (8.0, 0.5), "cash_advance": (3.0, 1.0)}  # merchant mix factor: (gambler, others)
# Incoming transfer amounts per kind: (median EUR, log-normal sigma). A family transfer to a segment with
# family_allowance is the allowance (0.9 x income), a client payment business revenue (income / 2.5);
# a kind not listed here is paid like a refund.
TRANSFER_IN_AMOUNT = {
    "family": (200.0, 0.15),
    "p2p_in": (40.0, 0.9),
    "client_payment": (0.0, 0.7),
    "refund": (35.0, 0.8),
}


@dataclass
class _Block:
    """What every kind of background behaviour draws with, respects and writes into, for one block."""

    rng: np.random.Generator
    cal: Calendar
    people: Customers
    plan: Plan
    sink: EventSink

    def days(self, rate: np.ndarray, rhythm: Rhythm | None) -> tuple[np.ndarray, np.ndarray]:
        """(customer, day) of events at ``rate`` per day while each is a customer (joining .. window end).

        With a ``rhythm``: thinned by weekday, at an hour of its profile; without: a plain Poisson process.
        """
        lo, hi = self.people.join, np.full(self.people.n, self.cal.end_day)
        if rhythm is None:
            return poisson_days(self.rng, rate, lo, hi)
        return rhythmic_days(self.rng, self.cal, rate, lo, hi, rhythm)


def draw_background(
    rng: np.random.Generator, cal: Calendar, people: Customers, plan: Plan, sink: EventSink
) -> None:
    """Every customer's everyday behaviour, respecting the quiet windows the planted scenarios need."""
    block = _Block(rng, cal, people, plan, sink)
    # All draw from the block's one random stream: a new order (or a new behaviour) changes every seed's data.
    for behaviour in (
        _open_accounts,
        _logins,
        _card_payments,
        _salaries,
        _standing_orders,
        _transfers_in,
        _transfers_out,
        _fees,
        _complaints,
        _calls,
        _product_views,
        _applications,
        _missed_payments,
    ):
        behaviour(block)


def _open_accounts(b: _Block) -> None:
    """account_open of the customers who join during the window: in a branch, or in the app / on the web."""
    rng, people, sink = b.rng, b.people, b.sink
    who = np.flatnonzero(people.joined)
    channel, device = digital(rng, people, who)
    branch = rng.random(who.size) < people.branch_share[who]
    sink.add(
        who,
        people.join[who],
        "account_open",
        item=ITEM["current_account"],
        channel=np.where(branch, CHANNEL["branch"], channel),
        device=np.where(branch, -1, device),
    )


def _logins(b: _Block) -> None:
    """Logins with a weekly and daily rhythm, fading where a churn scenario says so."""
    rng, people, plan, sink = b.rng, b.people, b.plan, b.sink
    rate = people.of_segment("logins_per_week") / 7 * people.activity
    owner, day = b.days(rate, PROFILES.login)
    start, end = plan.fade_start[owner], plan.fade_end[owner]
    fading = (day >= start) & (day < end)
    level = np.maximum(
        rules.CHURN_FADE_FLOOR, 1 - (day - np.where(fading, start, day)) / rules.CHURN_FADE_RAMP_DAYS
    )
    kept = rng.random(owner.size) < np.where(fading, level, 1.0)
    owner, day = owner[kept], day[kept]
    channel, device = digital(rng, people, owner)
    sink.add(owner, day, "login", channel=channel, device=device)


def _merchant_mix(people: Customers) -> np.ndarray:
    """(n, merchants) each customer's merchant mix: the base mix, tilted by segment and by gambling habit."""
    merchants = PROFILES.merchants
    mix = np.tile(merchants.mix, (len(SEGMENTS), 1))
    for row, segment in enumerate(SEGMENTS):
        for name, factor in segment.merchant_tilt.items():
            mix[row, merchants.names.index(name)] *= factor
    customer_mix = mix[people.segment]
    for name, (gambler, other) in GAMBLER_TILT.items():
        customer_mix[:, merchants.names.index(name)] *= np.where(people.gambler, gambler, other)
    return customer_mix


def _card_payments(b: _Block) -> None:
    """Card payments in merchant categories, log-normal amounts; thinned around the planted risky spend."""
    rng, people, plan, sink = b.rng, b.people, b.plan, b.sink
    merchants = PROFILES.merchants
    customer_mix = _merchant_mix(people)
    rate = people.of_segment("card_payments_per_week") / 7 * people.activity
    owner, day = b.days(rate, PROFILES.shop)
    category = sample_rows(rng, customer_mix, owner)
    # planted risky spend replaces part of the everyday spend in its window (keeps card counts comparable)
    window = plan.risky_window[owner]
    expected = rate[owner] * (window[:, 1] - window[:, 0])
    substitution = PROFILES.scenarios.risky_substitution
    keep_share = np.clip(1 - substitution * plan.risky_count[owner] / np.maximum(expected, 1e-9), 0.3, 1.0)
    kept = ~in_window(day, window) | (rng.random(owner.size) < keep_share)
    owner, day, category = owner[kept], day[kept], category[kept]
    risky_categories = [merchants.names.index(name) for name in rules.DEFAULT_RISKY_MERCHANTS]
    risky = np.isin(category, risky_categories) & in_window(day, plan.quiet_risky[owner])
    owner, day, category = owner[~risky], day[~risky], category[~risky]
    amount = (
        merchants.median[category]
        * people.spend_scale[owner]
        * np.exp(rng.normal(0, 1, owner.size) * merchants.sigma[category])
    )
    online = rng.random(owner.size) < merchants.online_share[category]
    channel = np.where(
        category == merchants.names.index("cash_advance"),
        CHANNEL["atm"],
        np.where(online, CHANNEL["online"], CHANNEL["pos"]),
    )
    sink.add(owner, day, "card_payment", item=merchants.codes[category], channel=channel, amount=amount)


def _salaries(b: _Block) -> None:
    """Salary (pension for the retired) on the customer's payday, unless a salary gap stops it."""
    rng, cal, people, plan, sink = b.rng, b.cal, b.people, b.plan, b.sink
    gap = plan.salary_gap
    paid = (
        people.of_segment("salaried")[:, None]
        & (people.payday >= people.join[:, None])
        & (people.payday < cal.end_day)
        & ~((people.payday > gap[:, :1]) & (people.payday <= gap[:, 1:]))
    )
    owner, month = np.nonzero(paid)
    amount = people.income[owner] * np.exp(rng.normal(0, 0.02, owner.size))
    tag = np.where(plan.salary_tag[owner] == month, TAG_BIT["default"], 0)
    sink.add(owner.astype(np.int32), people.payday[owner, month], "salary", amount=amount, tag=tag)


def _standing_orders(b: _Block) -> None:
    """The monthly standing order (rent, loan repayment, payroll, savings): automatic, so no channel."""
    rng, cal, people, sink = b.rng, b.cal, b.people, b.sink
    order_day = cal.month_start[None, :-1] + (people.standing_order_day[:, None] - 1)
    order_day = order_day + 0.25 + rng.random(order_day.shape) * 0.1
    owner, month = np.nonzero((order_day >= people.join[:, None]) & (order_day < cal.end_day))
    purpose = np.array([ITEM[segment.standing_order] for segment in SEGMENTS])[people.segment[owner]]
    amount = (
        people.of_segment("standing_order_share")[owner]
        * people.income[owner]
        * np.exp(rng.normal(0, 0.01, owner.size))
    )
    sink.add(owner.astype(np.int32), order_day[owner, month], "transfer_out", item=purpose, amount=amount)


def _transfers_in(b: _Block) -> None:
    """Incoming transfers besides the salary, of the kinds the segment receives."""
    rng, people, sink = b.rng, b.people, b.sink
    rate = people.of_segment("transfers_in_per_month") / DAYS_PER_MONTH
    owner, day = b.days(rate, PROFILES.office)
    mixes = PROFILES.segment_values("transfer_in_mix")
    kind = sample_rows(rng, mixes, people.segment[owner])
    median, sigma = _transfer_in_amount(people, owner, kind)
    sink.add(
        owner,
        day,
        "transfer_in",
        item=PROFILES.transfer_in_kinds.codes[kind],
        channel=assisted(rng, people, owner),
        amount=median * np.exp(rng.normal(0, 1, owner.size) * sigma),
    )


def _transfer_in_amount(
    people: Customers, owner: np.ndarray, kind: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(median EUR, log-normal sigma) of each incoming transfer's amount, per TRANSFER_IN_AMOUNT."""
    kinds = PROFILES.transfer_in_kinds.names
    like_refund = TRANSFER_IN_AMOUNT["refund"]
    median_of, sigma_of = zip(*(TRANSFER_IN_AMOUNT.get(name, like_refund) for name in kinds))
    name = np.array(kinds, dtype=object)[kind]
    income = people.income[owner]
    median = np.array(median_of)[kind]
    allowance = (name == "family") & people.of_segment("family_allowance")[owner]
    median = np.where(allowance, 0.9 * income, median)
    median = np.where(name == "client_payment", income / 2.5, median)
    return median, np.array(sigma_of)[kind]


def _transfers_out(b: _Block) -> None:
    """Outgoing transfers besides the standing order, of the purposes the segment pays for."""
    rng, people, sink = b.rng, b.people, b.sink
    rate = people.of_segment("transfers_out_per_month") / DAYS_PER_MONTH * people.activity
    owner, day = b.days(rate, PROFILES.login)
    mixes = PROFILES.segment_values("transfer_out_mix")
    kind = sample_rows(rng, mixes, people.segment[owner])
    amount = 0.12 * people.income[owner] * np.exp(rng.normal(0, 0.8, owner.size))
    channel = assisted(rng, people, owner)
    sink.add(
        owner,
        day,
        "transfer_out",
        item=PROFILES.transfer_out_kinds.codes[kind],
        channel=channel,
        amount=amount,
    )


def _fees(b: _Block) -> None:
    """Fees, charged overnight, outside the churn scenarios' quiet windows."""
    rng, people, plan, sink = b.rng, b.people, b.plan, b.sink
    rate = people.of_segment("fees_factor") * PROFILES.population.fees_per_month / DAYS_PER_MONTH
    owner, day = b.days(rate, None)
    outside = ~in_window(day, plan.quiet_churn[owner])
    owner, day = owner[outside], day[outside]
    kind = choice(rng, PROFILES.fees.codes, PROFILES.fees.mix, owner.size)
    charged = np.floor(day) + 0.2 * rng.random(owner.size)
    sink.add(owner, charged, "fee", item=kind, amount=fee_amounts(rng, kind))


def _complaints(b: _Block) -> None:
    """Complaints (incl. app feedback and disputes), outside the churn scenarios' quiet windows."""
    rng, people, plan, sink = b.rng, b.people, b.plan, b.sink
    rate = np.full(people.n, PROFILES.population.complaints_per_year / 365)
    owner, day = b.days(rate, PROFILES.office)
    outside = ~in_window(day, plan.quiet_churn[owner])
    owner, day = owner[outside], day[outside]
    reasons = PROFILES.complaint_reasons
    item = choice(rng, reasons.codes, reasons.weights, owner.size)
    sink.add(owner, day, "complaint", item=item, channel=complaint_channel(rng, people, owner))


def _calls(b: _Block) -> None:
    """Call-centre contacts."""
    rng, people, sink = b.rng, b.people, b.sink
    rate = people.of_segment("calls_per_year") / 365
    owner, day = b.days(rate, PROFILES.office)
    topics = PROFILES.call_topics
    sink.add(
        owner,
        day,
        "call_centre",
        item=choice(rng, topics.codes, topics.weights, owner.size),
        channel=CHANNEL["phone"],
    )


def _product_views(b: _Block) -> None:
    """Browsing sessions viewing 1-3 products; not the planted product inside an uptake scenario's window."""
    rng, people, plan, sink = b.rng, b.people, b.plan, b.sink
    products = PROFILES.products
    interest = PROFILES.segment_values("product_interest")
    rate = PROFILES.population.browse_sessions_per_month / DAYS_PER_MONTH * np.sqrt(people.activity)
    session, start = b.days(rate, PROFILES.login)
    viewed = rng.choice(3, size=session.size, p=[0.5, 0.3, 0.2]) + 1  # distinct products per session
    keys = np.log(interest[people.segment[session]] + 1e-12) + rng.gumbel(
        size=(session.size, len(products.names))
    )
    ranked = np.argsort(-keys, axis=1)  # Gumbel top-k: products without replacement by interest
    slot = np.arange(3)[None, :] < viewed[:, None]
    row, position = np.nonzero(slot)
    owner = session[row]
    day = start[row] + position * rng.uniform(1, 4, row.size) / 1440  # a few minutes apart
    product = products.codes[ranked[row, position]]
    quiet = (product == plan.uptake_product[owner]) & in_window(day, plan.quiet_views[owner])
    owner, day, product = owner[~quiet], day[~quiet], product[~quiet]
    channel, device = digital(rng, people, owner)
    sink.add(owner, day, "product_view", item=product, channel=channel, device=device)


def _applications(b: _Block) -> None:
    """Product applications outside the horizon (inside it, they are outcomes: caused or background)."""
    rng, people, sink = b.rng, b.people, b.sink
    rate = np.full(people.n, PROFILES.population.applications_per_year / 365)
    owner, day = b.days(rate, PROFILES.office)
    after = day - people.cutoff[owner]
    outside = (after <= 0) | (after > rules.HORIZON_DAYS)
    owner, day = owner[outside], day[outside]
    interest = PROFILES.segment_values("product_interest")
    sink.add(
        owner,
        day,
        "product_application",
        item=PROFILES.products.codes[sample_rows(rng, interest, people.segment[owner])],
        channel=assisted(rng, people, owner),
    )


def _missed_payments(b: _Block) -> None:
    """Missed payments, outside the default scenarios' quiet windows."""
    rng, people, plan, sink = b.rng, b.people, b.plan, b.sink
    rate = np.full(people.n, PROFILES.population.missed_payments_per_year / 365)
    owner, day = b.days(rate, PROFILES.office)
    outside = ~in_window(day, plan.quiet_missed[owner])
    owner, day = owner[outside], day[outside]
    credit = PROFILES.credit_products
    sink.add(
        owner,
        day,
        "missed_payment",
        item=choice(rng, credit.codes, credit.weights, owner.size),
        amount=np.exp(rng.normal(np.log(120.0), 0.7, owner.size)),
    )

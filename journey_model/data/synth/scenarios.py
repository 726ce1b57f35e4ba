"""The planted scenarios of the synthetic bank: the causes and decoys of :mod:`~.rules`, and the outcomes.

Per block, :func:`draw_scenarios` picks for every customer and target (churn, default, uptake) nothing, the
rule's cause, or one of its decoys. The ``plant_*`` functions then write the scenario's events (tagged with
the target's bit, so the ground truth can list them) and record in a :class:`Plan` the constraints the
everyday behaviour must respect around them — logins that fade, salaries that stop, windows kept free of
background complaints, fees, risky spend, missed payments or views of the same product (so that no
background event completes or spoils a planted pattern). :func:`draw_outcomes` finally places the outcomes
after the cut-off: caused (with probability ``rules.CAUSE_KEEP``) or background.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from journey_model.data.synth import rules
from journey_model.data.synth.customers import Customers, assisted, complaint_channel, digital
from journey_model.data.synth.draws import (
    EventSink,
    choice,
    fee_amounts,
    office_time,
    sample_rows,
    time_of_day,
)
from journey_model.data.synth.profiles import CHANNEL, ITEM, PROFILES

NONE, CAUSE = 0, 1  # scenario codes; decoys are 2, 3, … in the order of rules.*_DECOYS
TAG_BIT = {"churn": 1, "default": 2, "uptake": 4}  # event tag bits: the event belongs to that scenario


@dataclass
class Plan:
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
    # (n, 2) planted risky spend falls in [lo, hi), where other card spend thins ((0, 0): none)
    risky_window: np.ndarray
    risky_count: np.ndarray  # planted risky payments (0 none)
    quiet_views: np.ndarray  # (n, 2) no background views of uptake_product in [lo, hi)
    close_day: np.ndarray  # account_close (inf = none)
    default_day: np.ndarray  # default_notice (inf = none); cards blocked after it


def draw_scenarios(rng: np.random.Generator, people: Customers) -> Plan:
    """Each customer's scenario per target; at most one planted positive (cause) per customer."""
    n, rates = people.n, PROFILES.scenarios
    churn_p = [rates.churn_cause] + [rates.churn_decoy_each] * len(rules.CHURN_DECOYS)
    default_p = [rates.default_cause] + [rates.default_decoy_each] * len(rules.DEFAULT_DECOYS)
    uptake_p = [rates.uptake_cause] + [rates.uptake_decoy_each] * len(rules.UPTAKE_DECOYS)
    churn = rng.choice(len(churn_p) + 1, size=n, p=[1 - sum(churn_p)] + churn_p).astype(np.int8)
    default = rng.choice(len(default_p) + 1, size=n, p=[1 - sum(default_p)] + default_p).astype(np.int8)
    uptake = rng.choice(len(uptake_p) + 1, size=n, p=[1 - sum(uptake_p)] + uptake_p).astype(np.int8)
    default[~people.of_segment("default_eligible")] = NONE
    churn[(default == CAUSE) & (churn == CAUSE)] = NONE
    uptake[((default == CAUSE) | (churn == CAUSE)) & (uptake == CAUSE)] = NONE
    never = np.full(n, np.inf)
    no_window = np.full((n, 2), np.inf)
    return Plan(
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


# ----------------------------------------------------------------------------------------------- churn
def plant_churn(rng: np.random.Generator, people: Customers, plan: Plan, sink: EventSink) -> None:
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
    later_t = office_time(rng, later)
    earlier_t = office_time(rng, earlier)
    complaint_t = np.where(kind == fee_before_complaint, later_t, earlier_t)
    fee_t = np.where(kind == fee_before_complaint, earlier_t, later_t)
    tag = TAG_BIT["churn"]
    reasons = PROFILES.complaint_reasons
    sink.add(
        who,
        complaint_t,
        "complaint",
        item=choice(rng, reasons.codes, reasons.weights, who.size),
        channel=complaint_channel(rng, people, who),
        tag=tag,
    )
    fee_kind = choice(rng, PROFILES.fees.codes, PROFILES.fees.mix, who.size)
    sink.add(who, fee_t, "fee", item=fee_kind, amount=fee_amounts(rng, fee_kind), tag=tag)
    recover = cutoff + rng.uniform(7, 21, who.size)
    plan.fade_start[who] = np.where(kind == no_fade, np.inf, later_t)
    plan.fade_end[who] = np.where(kind == CAUSE, np.inf, recover)
    plan.quiet_churn[who, 0] = cutoff - 140
    plan.quiet_churn[who, 1] = cutoff


# --------------------------------------------------------------------------------------------- default
OLD_REVERSED = 2  # default_decoy_old_reversed; 3 = default_decoy_wrong_order


def plant_default(rng: np.random.Generator, people: Customers, plan: Plan, sink: EventSink) -> None:
    """Salary stop, rising risky card spend and a missed payment, in the rule's order or a decoy's."""
    who = np.flatnonzero(plan.default != NONE)
    kind, cutoff = plan.default[who], people.cutoff[who]
    gap_days = rng.uniform(*rules.DEFAULT_SALARY_STOP_DAYS, who.size)
    old_missed = cutoff - rng.integers(160, 176, who.size) + rng.random(who.size)  # the old decoy's miss
    last_salary = _stop_salaries(people, plan, who, kind, gap_days, old_missed)
    first_risky, last_risky = _plant_risky_spend(rng, people, plan, sink, who, kind, last_salary, old_missed)
    missed_lo = np.where(kind == OLD_REVERSED, old_missed, last_risky + 0.5)
    missed_hi = np.select([kind == CAUSE, kind == OLD_REVERSED], [cutoff - 0.5, old_missed], last_salary - 1)
    missed = missed_lo + rng.random(who.size) * (missed_hi - missed_lo)
    credit = PROFILES.credit_products
    sink.add(
        who,
        missed,
        "missed_payment",
        item=choice(rng, credit.codes, credit.weights, who.size),
        amount=np.exp(rng.normal(np.log(150.0), 0.6, who.size)),
        tag=TAG_BIT["default"],
    )
    plan.quiet_missed[who, 0] = np.minimum(first_risky, missed) - 10
    plan.quiet_missed[who, 1] = cutoff
    # where the salary stops before the cut-off, the risky spend after the last salary is the planted one only
    stopped = kind != OLD_REVERSED
    plan.quiet_risky[who[stopped], 0] = last_salary[stopped]
    plan.quiet_risky[who[stopped], 1] = cutoff[stopped]


def _stop_salaries(
    people: Customers,
    plan: Plan,
    who: np.ndarray,
    kind: np.ndarray,
    gap_days: np.ndarray,
    old_missed: np.ndarray,
) -> np.ndarray:
    """Record the salary gap of each default scenario; returns the last salary paid before it."""
    cutoff = people.cutoff[who]
    old_gap_lo = old_missed + 30
    gap_lo = np.where(kind == OLD_REVERSED, old_gap_lo, cutoff - gap_days)
    gap_hi = np.where(kind == OLD_REVERSED, old_gap_lo + gap_days, np.inf)
    plan.salary_gap[who, 0], plan.salary_gap[who, 1] = gap_lo, gap_hi
    paydays = people.payday[who]
    paid_before = np.where(paydays <= gap_lo[:, None], paydays, -np.inf)
    last_month = np.argmax(paid_before, axis=1)
    plan.salary_tag[who] = last_month
    return paydays[np.arange(who.size), last_month]


def _plant_risky_spend(
    rng: np.random.Generator,
    people: Customers,
    plan: Plan,
    sink: EventSink,
    who: np.ndarray,
    kind: np.ndarray,
    last_salary: np.ndarray,
    old_missed: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """4..7 gambling / cash-advance payments of growing amounts in a window; returns (first, last) times."""
    cutoff = people.cutoff[who]
    lo = np.select([kind == CAUSE, kind == OLD_REVERSED], [last_salary + 3, old_missed + 2], last_salary - 70)
    hi = np.select([kind == CAUSE, kind == OLD_REVERSED], [cutoff - 10, old_missed + 28], last_salary - 15)
    count = rng.integers(rules.DEFAULT_RISKY_PAYMENTS[0], rules.DEFAULT_RISKY_PAYMENTS[1] + 1, who.size)
    owner = np.repeat(np.arange(who.size), count)
    times = lo[owner] + rng.random(owner.size) * (hi - lo)[owner]
    times = times[np.lexsort((times, owner))]
    rank = np.arange(owner.size) - np.repeat(np.cumsum(count) - count, count)
    base = np.exp(rng.normal(np.log(40.0), 0.3, who.size)) * people.spend_scale[who]
    amounts = base[owner] * rules.DEFAULT_RISK_GROWTH**rank * np.exp(rng.normal(0, 0.05, owner.size))
    gambling = rng.random(owner.size) < 0.7
    item = np.where(gambling, ITEM["gambling"], ITEM["cash_advance"])
    channel = np.where(gambling, CHANNEL["online"], CHANNEL["atm"])
    sink.add(
        who[owner], times, "card_payment", item=item, channel=channel, amount=amounts, tag=TAG_BIT["default"]
    )
    plan.risky_window[who, 0], plan.risky_window[who, 1], plan.risky_count[who] = lo, hi, count
    return times[np.cumsum(count) - count], times[np.cumsum(count) - 1]


def draw_salary_gaps(rng: np.random.Generator, people: Customers, plan: Plan) -> None:
    """Background salary gaps (a job change): 1-3 paydays missed, salaries resumed well before the cut-off."""
    n = people.n
    length = rng.choice(np.array([20.0, 50.0, 80.0]), size=n, p=[0.5, 0.35, 0.15])  # days: 1, 2 or 3 paydays
    latest = people.cutoff - rules.DEFAULT_ORACLE_SALARY_GAP_DAYS - length
    lo = people.join + 20 + rng.random(n) * np.maximum(latest - people.join - 20, 0)
    drawn = rng.random(n) < PROFILES.population.salary_gap_share
    gap = people.of_segment("salaried") & (plan.default == NONE) & drawn & (latest > people.join + 20)
    plan.salary_gap[gap, 0] = lo[gap]
    plan.salary_gap[gap, 1] = lo[gap] + length[gap]


# ---------------------------------------------------------------------------------------------- uptake
def plant_uptake(rng: np.random.Generator, people: Customers, plan: Plan, sink: EventSink) -> None:
    """Views of one product: a recent burst (rule), spread-out recent views or an old burst (decoys)."""
    who = np.flatnonzero(plan.uptake != NONE)
    kind, cutoff = plan.uptake[who], people.cutoff[who]
    spread, old_burst = 2, 3
    product = PROFILES.products.codes[
        sample_rows(rng, PROFILES.segment_values("product_interest"), people.segment[who])
    ]
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
    times = np.minimum(
        np.floor(times) + time_of_day(rng, PROFILES.login.hours, owner.size), cutoff[owner] - 1e-3
    )
    channel, device = digital(rng, people, who[owner])
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


# -------------------------------------------------------------------------------------------- outcomes
def draw_outcomes(rng: np.random.Generator, people: Customers, plan: Plan, sink: EventSink) -> None:
    """account_close / default_notice / product_application after the cut-off, caused or background."""
    n, rates = people.n, PROFILES.scenarios
    keep = rng.random((n, 3)) < rules.CAUSE_KEEP
    background = rng.random((n, 3))

    def in_horizon(first_day: int) -> np.ndarray:  # offsets in (first_day, horizon) days after the cut-off
        return office_time(rng, rng.integers(first_day, rules.HORIZON_DAYS, n).astype(float))

    close_offset, default_offset, apply_offset = in_horizon(0), in_horizon(2), in_horizon(0)
    churns = ((plan.churn == CAUSE) & keep[:, 0]) | (
        (plan.churn == NONE) & (background[:, 0] < rates.churn_background)
    )
    _close_accounts(rng, people, plan, sink, churns, close_offset)
    defaults = ((plan.default == CAUSE) & keep[:, 1]) | (
        (plan.default == NONE) & (background[:, 1] < rates.default_background)
    )
    _default_notices(rng, people, plan, sink, defaults, default_offset)
    applies = ((plan.uptake == CAUSE) & keep[:, 2]) | (
        (plan.uptake == NONE) & (background[:, 2] < rates.uptake_background)
    )
    _applications(rng, people, plan, sink, applies, apply_offset)


def _close_accounts(
    rng: np.random.Generator,
    people: Customers,
    plan: Plan,
    sink: EventSink,
    churns: np.ndarray,
    offset: np.ndarray,
) -> None:
    """account_close in the horizon for the churners; a few others close after it (not a label)."""
    n, cutoff = people.n, people.cutoff
    late = ~churns & (rng.random(n) < PROFILES.population.late_close_share)
    late_day = cutoff + rules.HORIZON_DAYS + 1 + rng.random(n) * 30
    plan.close_day = np.where(churns, cutoff + offset, np.where(late, late_day, np.inf))
    closing = np.flatnonzero(np.isfinite(plan.close_day))
    reasons = PROFILES.close_reasons
    item = np.where(
        plan.churn[closing] == CAUSE,
        choice(rng, reasons.codes, reasons.after_churn, closing.size),
        choice(rng, reasons.codes, reasons.other, closing.size),
    )
    channel = complaint_channel(rng, people, closing)
    sink.add(closing, plan.close_day[closing], "account_close", item=item, channel=channel)


def _default_notices(
    rng: np.random.Generator,
    people: Customers,
    plan: Plan,
    sink: EventSink,
    defaults: np.ndarray,
    offset: np.ndarray,
) -> None:
    """default_notice in the horizon (from its third day on); card payments stop after it."""
    plan.default_day = np.where(defaults, people.cutoff + offset, np.inf)
    who = np.flatnonzero(defaults)
    credit = PROFILES.credit_products
    sink.add(
        who,
        plan.default_day[who],
        "default_notice",
        item=choice(rng, credit.codes, credit.weights, who.size),
        amount=np.exp(rng.normal(np.log(3000.0), 0.8, who.size)),
    )


def _applications(
    rng: np.random.Generator,
    people: Customers,
    plan: Plan,
    sink: EventSink,
    applies: np.ndarray,
    offset: np.ndarray,
) -> None:
    """product_application in the horizon: the planted product after a cause, else one the segment likes."""
    who = np.flatnonzero(applies)
    random_product = PROFILES.products.codes[
        sample_rows(rng, PROFILES.segment_values("product_interest"), people.segment[who])
    ]
    product = np.where(plan.uptake[who] == CAUSE, plan.uptake_product[who], random_product)
    channel = assisted(rng, people, who)
    sink.add(who, people.cutoff[who] + offset[who], "product_application", item=product, channel=channel)

"""The synthetic bank's customers: who they are (segment, income, habits, cut-off) and how they reach it.

:func:`draw_customers` draws one block's customers from the segment profiles; the channel helpers turn a
customer's app / branch habits into the channel and device of an interaction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from journey_model.data.synth.draws import Calendar, time_of_day
from journey_model.data.synth.profiles import CHANNEL, PROFILES, SEGMENTS

JOIN_HISTORY_DAYS = 200  # a joiner opens at least this long before the cut-off: the patterns need history
REFERENCE_INCOME = 2600.0  # EUR a month: card amounts scale with (income / REFERENCE_INCOME) ** 0.3
DESKTOP = 2  # device code of the web; 0 / 1 are the customer's iOS / Android phone


@dataclass
class Customers:
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

    def of_segment(self, name: str) -> np.ndarray:
        """The segment profile's field ``name`` for every customer."""
        return PROFILES.segment_values(name)[self.segment]


def draw_customers(rng: np.random.Generator, cal: Calendar, n: int) -> Customers:
    shares = PROFILES.segment_values("share")
    segment = rng.choice(len(SEGMENTS), size=n, p=shares / shares.sum())
    activity = rng.lognormal(-0.08, 0.4, n)
    income_median = PROFILES.segment_values("income_median")[segment]
    income_sigma = PROFILES.segment_values("income_sigma")[segment]
    income = np.round(income_median * np.exp(rng.normal(0.0, 1.0, n) * income_sigma), 2)
    spend_scale = (income / REFERENCE_INCOME) ** 0.3
    app_share = np.clip(PROFILES.segment_values("app_share")[segment] + rng.normal(0, 0.15, n), 0.02, 0.98)
    branch_share = PROFILES.segment_values("branch_share")[segment]
    ios = rng.random(n) < PROFILES.population.ios_share
    gambler = rng.random(n) < PROFILES.population.gambler_share
    cutoff = cal.cutoff_days[rng.integers(0, cal.cutoff_days.size, n)]
    join, joined = _draw_joining(rng, cutoff, n)
    payday = _draw_paydays(rng, cal, n)
    standing_order_day = rng.integers(1, 6, n)
    opening_balance = np.round(income * rng.lognormal(np.log(1.5), 0.6, n), 2)
    return Customers(
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


def _draw_joining(rng: np.random.Generator, cutoff: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(join day, joined): a share of the customers open their account during the window, in office hours."""
    joined_draw = rng.random(n) < PROFILES.population.join_share
    join_room = np.maximum(cutoff - JOIN_HISTORY_DAYS, 0.0)
    join = np.floor(rng.random(n) * join_room)
    joined = joined_draw & (join > 0)
    join = np.where(joined, join + time_of_day(rng, PROFILES.office.hours, n), 0.0)
    return join, joined


def _draw_paydays(rng: np.random.Generator, cal: Calendar, n: int) -> np.ndarray:
    """(n, months) salary times: the customer's day of the month, a weekend moved to the Friday before."""
    payday_of_month = rng.choice(PROFILES.population.paydays, size=n)
    payday = cal.month_start[None, :-1] + (payday_of_month[:, None] - 1)
    weekday = (payday.astype(np.int64) + cal.start_weekday) % 7
    payday = payday - np.where(weekday == 5, 1, 0) - np.where(weekday == 6, 2, 0)
    return payday + rng.random(payday.shape) * 0.25  # credited overnight, 00:00-06:00


# ---------------------------------------------------------------------------------------------- channels
def digital(rng: np.random.Generator, people: Customers, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(channel, device) codes for digital interactions: the app on the customer's phone, or the web."""
    app = rng.random(owner.size) < people.app_share[owner]
    channel = np.where(app, CHANNEL["app"], CHANNEL["web"]).astype(np.int8)
    phone = np.where(people.ios[owner], 0, 1)
    device = np.where(app, phone, DESKTOP).astype(np.int8)
    return channel, device


def assisted(rng: np.random.Generator, people: Customers, owner: np.ndarray) -> np.ndarray:
    """Channel codes for interactions that may happen in a branch, else digitally."""
    channel, _ = digital(rng, people, owner)
    branch = rng.random(owner.size) < people.branch_share[owner]
    return np.where(branch, CHANNEL["branch"], channel).astype(np.int8)


def complaint_channel(rng: np.random.Generator, people: Customers, owner: np.ndarray) -> np.ndarray:
    """Channel codes of complaints and account closes: the phone for 40 %, else like :func:`assisted`."""
    phone = rng.random(owner.size) < 0.4
    return np.where(phone, CHANNEL["phone"], assisted(rng, people, owner)).astype(np.int8)

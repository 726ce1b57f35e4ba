"""The synthetic bank's building blocks: the calendar of the window, the random draws, the event sink.

Everything is vectorised over the customers of one block: an "owner" array says which customer (local index)
each drawn event belongs to, a "day" array when it happens (days since the window's start, fractional).
The order of the draws is part of the output: the same seed must give the same data, so a helper never
draws more or less than it did, nor in another order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from journey_model.data.synth.profiles import PROFILES, TYPE, Rhythm, SynthError

CUTOFF_MONTHS = 5  # cut-offs fall on the 1st of each of the last five months before the final month


# ------------------------------------------------------------------------------------------ calendar
@dataclass(frozen=True)
class Calendar:
    """The generation window, in days since ``start`` (midnight UTC)."""

    start: np.datetime64  # first day of the window
    start_us: int  # the same, microseconds since the epoch
    start_weekday: int  # weekday of the first day, Monday = 0
    month_start: np.ndarray  # (months + 1,) day offset of the 1st of each month, the last one = end
    cutoff_days: np.ndarray  # (CUTOFF_MONTHS,) day offsets of the cut-offs
    end_day: float  # end of the window (exclusive), days

    @classmethod
    def build(cls, start: str, months: int) -> Calendar:
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
def sample_rows(rng: np.random.Generator, probs: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """One category per entry of ``rows``, drawn from ``probs[row]`` (each row a distribution over K)."""
    k = probs.shape[1]
    cum = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
    cum[:, -1] = 1.0
    flat = (cum + np.arange(probs.shape[0])[:, None]).ravel()
    picks = np.searchsorted(flat, rows + rng.random(rows.size), side="right") - rows * k
    return np.minimum(picks, k - 1)


def choice(rng: np.random.Generator, codes: np.ndarray, mix: np.ndarray, size: int) -> np.ndarray:
    """``size`` codes drawn with the relative weights ``mix``."""
    return codes[rng.choice(len(codes), size=size, p=mix / mix.sum())]


def time_of_day(rng: np.random.Generator, hours: np.ndarray, size: int) -> np.ndarray:
    """Fractions of a day drawn from an hour-of-day profile."""
    hour = rng.choice(24, size=size, p=hours / hours.sum())
    return (hour + rng.random(size)) / 24.0


def office_time(rng: np.random.Generator, whole_days: np.ndarray) -> np.ndarray:
    """A time in office hours on each of ``whole_days``."""
    return np.floor(whole_days) + time_of_day(rng, PROFILES.office.hours, whole_days.size)


def poisson_days(
    rng: np.random.Generator, rate: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A Poisson process per customer with ``rate`` events/day on ``[lo, hi)``: (customer, day) arrays."""
    span = np.maximum(hi - lo, 0.0)
    counts = rng.poisson(rate * span)
    owner = np.repeat(np.arange(rate.size, dtype=np.int32), counts)
    return owner, lo[owner] + rng.random(owner.size) * span[owner]


def rhythmic_days(
    rng: np.random.Generator, cal: Calendar, rate: np.ndarray, lo: np.ndarray, hi: np.ndarray, rhythm: Rhythm
) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`poisson_days` with a weekday rhythm (thinning) and an hour-of-day profile."""
    accept = rhythm.weekdays / rhythm.weekdays.max()
    owner, day = poisson_days(rng, rate / accept.mean(), lo, hi)
    whole = np.floor(day)
    weekday = ((whole.astype(np.int64) + cal.start_weekday) % 7).astype(np.intp)
    keep = rng.random(owner.size) < accept[weekday]
    owner, whole = owner[keep], whole[keep]
    return owner, whole + time_of_day(rng, rhythm.hours, owner.size)


def fee_amounts(rng: np.random.Generator, kind_codes: np.ndarray) -> np.ndarray:
    """A log-normal amount for each fee of the given kinds (item codes)."""
    fees = PROFILES.fees
    kind = np.searchsorted(fees.codes, kind_codes)  # fee codes are consecutive, so sorted
    return fees.median[kind] * np.exp(rng.normal(0, 1, kind.size) * fees.sigma[kind])


def in_window(day: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Whether each ``day`` falls in its row of ``window`` (lo, hi): lo <= day < hi."""
    return (day >= window[:, 0]) & (day < window[:, 1])


# ------------------------------------------------------------------------------------------ event sink
class EventSink:
    """Collects the event columns the generators of one block draw, as small integer codes."""

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

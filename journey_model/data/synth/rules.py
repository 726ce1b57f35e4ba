"""The outcome rules planted in Journey's synthetic bank, their decoys, and oracles that evaluate them.

:mod:`journey_model.data.synth` simulates a retail bank's customers and plants three outcomes whose causes
depend on the ORDER and TIMING of events across behaviour types, so a bag-of-events count cannot recover
them while an order- and time-aware model (ATRank, a sequence model) can. Each customer gets one cut-off
``c`` (midnight UTC on the 1st of a month); outcomes are read in the horizon ``(c, c + HORIZON_DAYS]``.

``churn`` — rule ``churn_complaint_fee_fade``: a complaint, then a fee at most 14 days after it, the fee
21–70 days before the cut-off, and from the fee on the customer's logins fade (to 3 % of their usual rate
within 10 days) → ``account_close`` inside the horizon. Decoys carry the very same events (so the same
per-type counts) in the wrong order or at the wrong time and do NOT churn:

* ``churn_decoy_fee_before_complaint`` — the fee comes 0–14 days *before* the complaint, logins fade after.
* ``churn_decoy_late_fee`` — the fee comes 30–50 days after the complaint, logins fade after the fee.
* ``churn_decoy_no_fade`` — complaint then fee within 14 days, but logins carry on as usual.

``default`` — rule ``default_salary_stop_gambling_missed_payment``: the monthly salary stops (no salary
in the last 62–80 days before the cut-off), then gambling / cash-advance card spend rises (4–7 payments of
growing amounts after the last salary), then a ``missed_payment`` → ``default_notice`` inside the horizon.
Decoys (same events, and the same number of missing salaries):

* ``default_decoy_old_reversed`` — missed payment, then rising gambling, then a two-month salary gap, all
  5–6 months before the cut-off; salaries resume before the cut-off.
* ``default_decoy_wrong_order`` — rising gambling, then a missed payment, both *before* the last salary;
  the salary stops as for the rule.

``uptake`` — rule ``uptake_view_burst``: at least three views of the same product within 10 days, the last
of them at most 21 days before the cut-off (the planted burst ends 0.5–18 days before it) →
``product_application`` for THAT product inside the horizon. Decoys (same number of views of one product):

* ``uptake_decoy_spread_views`` — recent views of one product, but consecutive views 6–18 days apart.
* ``uptake_decoy_old_burst`` — a burst like the rule's, ending 45–150 days before the cut-off.

A planted cause produces its outcome with probability ``CAUSE_KEEP`` (the rest are label noise, role
``cause`` with label 0); customers without any planted scenario for a target get that outcome with a small
background probability (rule ``<target>_background``, role ``noise``, no causal events).

The oracles below evaluate the rules on ordered canonical events (as a reference scorer and to show that
order matters); they see only events strictly before each customer's cut-off.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

HORIZON_DAYS = 30  # outcomes are read in (cutoff, cutoff + HORIZON_DAYS], days
CAUSE_KEEP = 0.96  # probability that a planted cause yields its outcome (1 - label noise on causes)
TARGETS: tuple[str, ...] = ("churn", "default", "uptake")

# ----------------------------------------------------------------------------------------------- churn
CHURN_RULE = "churn_complaint_fee_fade"
CHURN_DECOYS: tuple[str, ...] = (
    "churn_decoy_fee_before_complaint",
    "churn_decoy_late_fee",
    "churn_decoy_no_fade",
)
CHURN_FEE_WITHIN_DAYS = 14.0  # the fee follows the complaint by at most this many days
CHURN_FEE_BEFORE_CUTOFF_DAYS = (21.0, 70.0)  # planted fee lies this many days before the cut-off (min, max)
CHURN_ORACLE_FEE_RECENT_DAYS = 84.0  # oracle: the fee is at most this many days before the cut-off
CHURN_LATE_FEE_DAYS = (30.0, 50.0)  # decoy: fee this many days after the complaint
CHURN_FADE_RAMP_DAYS = 10.0  # logins fall linearly to the floor over this many days after the trigger
CHURN_FADE_FLOOR = 0.03  # faded login rate as a fraction of the customer's usual rate
CHURN_ORACLE_BASELINE_DAYS = 120.0  # oracle: usual login rate measured over this window before the complaint
CHURN_ORACLE_FADE_RATIO = 0.35  # oracle: logins after the ramp at most this fraction of the expected number
CHURN_ORACLE_MIN_EXPECTED = 1.0  # oracle: a fade is only visible when at least this many logins were expected

# --------------------------------------------------------------------------------------------- default
DEFAULT_RULE = "default_salary_stop_gambling_missed_payment"
DEFAULT_DECOYS: tuple[str, ...] = ("default_decoy_old_reversed", "default_decoy_wrong_order")
DEFAULT_RISKY_MERCHANTS: tuple[str, ...] = ("gambling", "cash_advance")
DEFAULT_SALARY_STOP_DAYS = (62.0, 80.0)  # no salary paid in this many days before the cut-off (rule)
DEFAULT_ORACLE_SALARY_GAP_DAYS = 45.0  # oracle: last salary at least this many days before the cut-off
DEFAULT_ORACLE_MIN_SALARIES = 2  # oracle: salaries on record before the last one (a salaried customer)
DEFAULT_RISKY_PAYMENTS = (4, 7)  # planted rising gambling / cash-advance payments (min, max inclusive)
DEFAULT_ORACLE_MIN_RISKY = 3  # oracle: at least this many risky payments after the last salary
DEFAULT_RISK_GROWTH = 1.35  # amount growth factor from one planted risky payment to the next

# ---------------------------------------------------------------------------------------------- uptake
UPTAKE_RULE = "uptake_view_burst"
UPTAKE_DECOYS: tuple[str, ...] = ("uptake_decoy_spread_views", "uptake_decoy_old_burst")
UPTAKE_MIN_VIEWS = 3  # views of the same product that make a burst
UPTAKE_VIEWS = (3, 5)  # planted views of the product (min, max inclusive)
UPTAKE_BURST_DAYS = 10.0  # the burst's views fall within this many days
UPTAKE_RECENT_DAYS = 21.0  # the burst's last view is at most this many days before the cut-off
UPTAKE_SPREAD_GAP_DAYS = (6.0, 18.0)  # decoy: days between consecutive views (min, max)
UPTAKE_OLD_BURST_DAYS = (45.0, 150.0)  # decoy: the burst ends this many days before the cut-off

RULES: dict[str, str] = {"churn": CHURN_RULE, "default": DEFAULT_RULE, "uptake": UPTAKE_RULE}
DECOYS: dict[str, tuple[str, ...]] = {
    "churn": CHURN_DECOYS,
    "default": DEFAULT_DECOYS,
    "uptake": UPTAKE_DECOYS,
}
OUTCOME_EVENT: dict[str, str] = {
    "churn": "account_close",
    "default": "default_notice",
    "uptake": "product_application",
}

_DAY = pd.Timedelta(days=1)


def _before_cutoff(events: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Events strictly before their customer's cut-off, with the cut-off as a column."""
    frame = events.merge(labels[["customer_id", "cutoff"]], on="customer_id", how="inner")
    return frame[frame["ts"] < frame["cutoff"]]


def churn_oracle(events: pd.DataFrame, labels: pd.DataFrame) -> pd.Series:
    """True for customers whose ordered events before the cut-off satisfy ``churn_complaint_fee_fade``.

    A complaint at ``tc``, a fee at ``tf`` with ``0 < tf - tc <= 14`` days and ``tf`` at most 84 days before
    the cut-off, and faded logins: over ``[tf + 10 days, cutoff)`` at most 35 % of the logins the customer's
    usual rate (the 120 days before ``tc``, or since the first event) predicts, with at least one expected.
    """
    seen = _before_cutoff(events, labels)
    complaints = seen.loc[seen["event_type"] == "complaint", ["customer_id", "ts"]].rename(
        columns={"ts": "tc"}
    )
    fees = seen.loc[seen["event_type"] == "fee", ["customer_id", "ts", "cutoff"]].rename(columns={"ts": "tf"})
    pairs = complaints.merge(fees, on="customer_id")
    gap = pairs["tf"] - pairs["tc"]
    pairs = pairs[
        (gap > pd.Timedelta(0))
        & (gap <= CHURN_FEE_WITHIN_DAYS * _DAY)
        & (pairs["tf"] >= pairs["cutoff"] - CHURN_ORACLE_FEE_RECENT_DAYS * _DAY)
    ].reset_index(drop=True)
    result = pd.Series(False, index=pd.Index(labels["customer_id"], name="customer_id"), name="churn")
    if pairs.empty:
        return result
    pairs["pair"] = np.arange(len(pairs))
    first_seen = seen.groupby("customer_id")["ts"].min().rename("first_seen")
    pairs = pairs.merge(first_seen, left_on="customer_id", right_index=True)
    pairs["baseline_start"] = np.maximum(pairs["tc"] - CHURN_ORACLE_BASELINE_DAYS * _DAY, pairs["first_seen"])
    pairs["faded_from"] = pairs["tf"] + CHURN_FADE_RAMP_DAYS * _DAY
    logins = seen.loc[seen["event_type"] == "login", ["customer_id", "ts"]]
    joined = pairs.merge(logins, on="customer_id")
    joined["before"] = (joined["ts"] >= joined["baseline_start"]) & (joined["ts"] < joined["tc"])
    joined["after"] = (joined["ts"] >= joined["faded_from"]) & (joined["ts"] < joined["cutoff"])
    counts = joined.groupby("pair")[["before", "after"]].sum()
    counts = counts.reindex(pairs["pair"], fill_value=0)
    baseline_days = ((pairs["tc"] - pairs["baseline_start"]) / _DAY).to_numpy()
    after_days = ((pairs["cutoff"] - pairs["faded_from"]) / _DAY).to_numpy()
    expected = counts["before"].to_numpy() / np.maximum(baseline_days, 1.0) * np.maximum(after_days, 0.0)
    faded = (expected >= CHURN_ORACLE_MIN_EXPECTED) & (
        counts["after"].to_numpy() <= CHURN_ORACLE_FADE_RATIO * expected
    )
    hits = pairs.loc[faded, "customer_id"].unique()
    result.loc[hits] = True
    return result


def default_oracle(events: pd.DataFrame, labels: pd.DataFrame) -> pd.Series:
    """True for customers whose ordered events satisfy ``default_salary_stop_gambling_missed_payment``.

    The last salary before the cut-off is at least 45 days old and had at least 3 salaries before it; after
    it come at least 3 gambling / cash-advance card payments, the last larger than the first; and a
    missed payment follows the first of those payments, still before the cut-off.
    """
    seen = _before_cutoff(events, labels)
    result = pd.Series(False, index=pd.Index(labels["customer_id"], name="customer_id"), name="default")
    salaries = (
        seen[seen["event_type"] == "salary"]
        .groupby("customer_id")
        .agg(last_salary=("ts", "max"), salaries=("ts", "size"), cutoff=("cutoff", "first"))
    )
    stopped = salaries[
        (salaries["salaries"] > DEFAULT_ORACLE_MIN_SALARIES)
        & (salaries["last_salary"] <= salaries["cutoff"] - DEFAULT_ORACLE_SALARY_GAP_DAYS * _DAY)
    ]
    if stopped.empty:
        return result
    risky = seen[(seen["event_type"] == "card_payment") & seen["item"].isin(DEFAULT_RISKY_MERCHANTS)]
    risky = risky.merge(stopped[["last_salary"]], left_on="customer_id", right_index=True)
    risky = risky[risky["ts"] > risky["last_salary"]].sort_values(["customer_id", "ts"])
    spend = risky.groupby("customer_id").agg(
        risky=("ts", "size"),
        first_risky=("ts", "first"),
        first_amount=("amount", "first"),
        last_amount=("amount", "last"),
    )
    spend = spend[
        (spend["risky"] >= DEFAULT_ORACLE_MIN_RISKY) & (spend["last_amount"] > spend["first_amount"])
    ]
    missed = seen.loc[seen["event_type"] == "missed_payment", ["customer_id", "ts"]]
    missed = missed.merge(spend[["first_risky"]], left_on="customer_id", right_index=True)
    hits = missed.loc[missed["ts"] > missed["first_risky"], "customer_id"].unique()
    result.loc[hits] = True
    return result


def uptake_oracle(events: pd.DataFrame, labels: pd.DataFrame) -> pd.Series:
    """True for customers with ≥3 views of one product within 10 days, the last ≤21 days before the cut-off."""
    seen = _before_cutoff(events, labels)
    result = pd.Series(False, index=pd.Index(labels["customer_id"], name="customer_id"), name="uptake")
    views = seen.loc[seen["event_type"] == "product_view", ["customer_id", "item", "ts", "cutoff"]]
    views = views.sort_values(["customer_id", "item", "ts"])
    span = UPTAKE_MIN_VIEWS - 1
    later = views.groupby(["customer_id", "item"])["ts"].shift(-span)
    burst = (later - views["ts"] <= UPTAKE_BURST_DAYS * _DAY) & (
        later >= views["cutoff"] - UPTAKE_RECENT_DAYS * _DAY
    )
    hits = views.loc[burst.fillna(False).astype(bool), "customer_id"].unique()
    result.loc[hits] = True
    return result


def oracle_labels(events: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Every rule's oracle verdict per labelled customer: columns churn, default, uptake (bool).

    ``events`` needs customer_id, ts, event_type, item, amount; ``labels`` customer_id and cutoff.
    """
    columns = [churn_oracle(events, labels), default_oracle(events, labels), uptake_oracle(events, labels)]
    return pd.concat(columns, axis=1)

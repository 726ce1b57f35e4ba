"""The dashboard's figures (Altair / Vega-Lite, drawn by the browser)."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

PALETTE = "tableau20"


def score_histogram(histogram: pd.DataFrame, outcome: str, dimension: str | None, threshold: float | None = None
                    ) -> alt.LayerChart | alt.Chart:
    """Eligible customers per score bin, stacked by segment."""
    title = dimension.replace("_", " ") if dimension else "all"
    bars = alt.Chart(histogram).mark_bar().encode(
        x=alt.X("bin_start:Q", title=f"p({outcome})", scale=alt.Scale(domain=[0, 1], nice=False)),
        x2="bin_end:Q",
        y=alt.Y("sum(customers):Q", title="eligible customers", stack=True),
        color=alt.Color("group:N", title=title, scale=alt.Scale(scheme=PALETTE)),
        tooltip=[alt.Tooltip("group:N", title=title), alt.Tooltip("bin_start:Q", format=".3f", title="from"),
                 alt.Tooltip("bin_end:Q", format=".3f", title="to"), alt.Tooltip("customers:Q")],
    )
    if threshold is None:
        return bars.properties(height=260)
    rule = alt.Chart(pd.DataFrame({"threshold": [threshold]})).mark_rule(color="#d62728", strokeDash=[4, 3]).encode(
        x="threshold:Q", tooltip=[alt.Tooltip("threshold:Q", title="operating point", format=".3f")])
    return (bars + rule).properties(height=260)


def timeline(events: pd.DataFrame, task: str, signed: bool) -> alt.Chart:
    """One customer's journey: a dot per event on its behaviour type's lane, coloured by type, sized and shaded by
    its importance for ``task`` (events the model did not see are faint)."""
    frame = events.copy()
    magnitude = frame["importance"].abs()
    top = float(magnitude.max()) if len(frame) and magnitude.max() > 0 else 1.0
    frame["relative importance"] = magnitude / top
    frame["shade"] = np.where(frame["seen_by_model"], 0.25 + 0.75 * frame["relative importance"], 0.12)
    frame["effect"] = np.where(frame["importance"] >= 0, "raises" if signed else "attends", "lowers")
    order = list(dict.fromkeys(frame.sort_values("ts")["event_type"]))
    tooltip = [alt.Tooltip("ts:T", title="time", format="%Y-%m-%d %H:%M"), alt.Tooltip("event_type:N", title="type"),
               alt.Tooltip("importance:Q", title=f"importance for {task}", format=".4f")]
    tooltip += [alt.Tooltip(f"{c}:N") for c in ("item", "channel") if c in frame.columns]
    tooltip += [alt.Tooltip("amount:Q", format=",.2f")] if "amount" in frame.columns else []
    tooltip += [alt.Tooltip("effect:N", title="effect")] if signed else []
    return alt.Chart(frame).mark_circle(stroke="#333333", strokeWidth=0.3).encode(
        x=alt.X("ts:T", title=None, axis=alt.Axis(format="%b %Y"), scale=alt.Scale(padding=12)),
        y=alt.Y("event_type:N", title=None, sort=order, axis=alt.Axis(labelLimit=200)),
        color=alt.Color("event_type:N", title="behaviour", scale=alt.Scale(scheme=PALETTE), legend=None),
        size=alt.Size("relative importance:Q", scale=alt.Scale(range=[6, 260], domain=[0, 1]),
                      title=f"importance ({task})",
                      legend=alt.Legend(orient="bottom", direction="horizontal", values=[0.1, 0.25, 0.5, 1.0])),
        opacity=alt.Opacity("shade:Q", scale=None, legend=None),
        tooltip=tooltip,
    ).properties(height=110 + 30 * max(len(order), 4)).interactive(bind_y=False)  # the legend and axis fit inside


def psi_over_time(frame: pd.DataFrame, threshold: float) -> alt.LayerChart:
    """Each stability index report by report (points joined by lines), with the alert threshold."""
    long = frame.reset_index().melt(id_vars="report", var_name="index", value_name="psi").dropna()
    lines = alt.Chart(long).mark_line(point=alt.OverlayMarkDef(size=70)).encode(
        x=alt.X("report:N", title="current cut-off"), y=alt.Y("psi:Q", title="PSI"),
        color=alt.Color("index:N", title="index", scale=alt.Scale(scheme=PALETTE)),
        tooltip=["report:N", "index:N", alt.Tooltip("psi:Q", format=".4f")])
    rule = alt.Chart(pd.DataFrame({"threshold": [threshold]})).mark_rule(color="#d62728", strokeDash=[4, 3]).encode(
        y="threshold:Q", tooltip=[alt.Tooltip("threshold:Q", title="alert threshold")])
    return (lines + rule).properties(height=240)


def metric_bars(table: pd.DataFrame, metric: str) -> alt.Chart:
    """One metric per model version, champion highlighted."""
    frame = table.assign(label=table["model"] + " v" + table["version"].astype(str),
                         champion=table["aliases"].str.contains("champion"))
    return alt.Chart(frame).mark_bar().encode(
        x=alt.X(f"{metric}:Q"), y=alt.Y("label:N", title=None, sort="-x", axis=alt.Axis(labelLimit=320)),
        color=alt.Color("champion:N", scale=alt.Scale(domain=[True, False], range=["#f28e2b", "#9fb3c8"])),
        tooltip=["label:N", alt.Tooltip(f"{metric}:Q", format=".4f"), "architecture:N"],
    ).properties(height=max(90, 30 * len(frame)))


__all__ = ["metric_bars", "psi_over_time", "score_histogram", "timeline"]

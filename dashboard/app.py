"""The Streamlit script of `journey dashboard`: Portfolio, Customer, Models and Stability views.

Started by `journey dashboard` (which passes its options as ``JOURNEY_DASHBOARD_*`` variables), or directly with
``streamlit run dashboard/app.py`` (then ``JOURNEY_DASHBOARD_WORKDIR`` or ``work``). Links carry the view and
the customer in the URL (``?view=Customer&customer=C00000042``), so a ranked list links to each customer.
The queries live in :mod:`dashboard.data`, :mod:`dashboard.models`, :mod:`dashboard.explaining` and
:mod:`dashboard.stability`; this script only lays them out.
"""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlencode

import pandas as pd
import streamlit as st

from dashboard import charts, models, stability
from dashboard.config import DashboardConfig
from dashboard.data import (
    CACHE_DIR,
    NO_SCORES,
    SEGMENT_LABELS,
    DashboardDataError,
    Filters,
    ScoreStore,
    changes,
    find_scoring_runs,
    forecast_steps,
    outcome_reasons,
    outcomes_of,
    reasons_sentence,
    value,
)
from dashboard.explaining import CustomerExplanation, explain_customer, model_reference, open_run_model
from journey_model.data.eligibility import ineligible_reason_column
from journey_model.inference.attribution import SIGNED_METHODS

VIEWS = ("Portfolio", "Customer", "Models", "Stability")
TIMELINE_TITLE = "Journey timeline"


# ------------------------------------------------------------------------------------------ cached resources


@st.cache_resource(show_spinner=False)
def open_store(root: str, stamp: tuple[tuple[str, int], ...]) -> ScoreStore:
    """DuckDB views over the scoring runs; ``stamp`` (the manifests' mtimes) opens a new store when runs change."""
    return ScoreStore(Path(root))


@st.cache_resource(show_spinner=False, max_entries=4)
def open_scorer(run_path: str, reference: str, tracking_uri: str):  # noqa: ANN201 - (Scorer, ModelIdentity)
    store = current_store()
    run = next(r for r in store.runs if str(r.path) == run_path)
    return open_run_model(run, tracking_uri)


@st.cache_resource(show_spinner=False, max_entries=256)
def explanation_of(run_path: str, reference: str, tracking_uri: str, customer_id: str, cutoff: str
                   ) -> CustomerExplanation:
    store = current_store()
    index = next(i for i, r in enumerate(store.runs) if str(r.path) == run_path)
    scorer, _ = open_scorer(run_path, reference, tracking_uri)
    return explain_customer(scorer, store.customer_events(index, customer_id), customer_id, pd.Timestamp(cutoff))


@st.cache_resource(show_spinner=False, ttl=60)
def registry(tracking_uri: str) -> list[models.ModelVersionFacts]:
    return models.model_versions(models.client_for(tracking_uri))


def config() -> DashboardConfig:
    return DashboardConfig.from_env()


def current_store() -> ScoreStore:
    root = config().root
    runs = find_scoring_runs(root) if root.is_dir() else []
    if not runs:
        raise DashboardDataError(f"no batch-scoring output under {root}: {NO_SCORES}")
    stamp = tuple((str(r.path), (r.path / "_manifest.json").stat().st_mtime_ns) for r in runs)
    return open_store(str(root), stamp)


# ------------------------------------------------------------------------------------------ helpers


def link(view: str, **params: str) -> str:
    return "?" + urlencode({"view": view, **params})


def score_text(p: object) -> str:
    return "—" if p is None else f"{float(p):.3f}"


def pick_run(store: ScoreStore) -> int:
    labels = [r.label for r in store.runs]
    default = len(labels) - 1
    wanted = st.query_params.get("run")
    if wanted is not None and wanted.isdigit() and int(wanted) < len(labels):
        default = int(wanted)
    return st.sidebar.selectbox("Scoring run (cut-off)", range(len(labels)), index=default,
                                format_func=lambda i: labels[i], key="run")


def pick_outcome(store: ScoreStore, run: int) -> str | None:
    outcomes = outcomes_of(store.columns[run])
    if not outcomes:
        return None
    wanted = st.query_params.get("outcome")
    index = outcomes.index(wanted) if wanted in outcomes else 0
    return st.sidebar.selectbox("Outcome", outcomes, index=index, key="outcome")


# ------------------------------------------------------------------------------------------ portfolio


def portfolio_view(store: ScoreStore, run: int, outcome: str) -> None:
    started = time.perf_counter()
    st.title("Portfolio")
    scoring = store.runs[run]
    st.caption(f"Scoring run `{scoring.path.name}` · cut-off {scoring.label.split(' · ')[0]} · model "
               f"{scoring.model_name} v{scoring.model_version} · eligible customers only")
    dimensions = store.dimensions(run)
    with st.sidebar:
        st.subheader("Filters")
        split = st.selectbox("Split by", [None, *dimensions], index=1 if dimensions else 0,
                             format_func=lambda d: "nothing" if d is None else SEGMENT_LABELS.get(d, d), key="split")
        chosen = {d: st.multiselect(SEGMENT_LABELS.get(d, d), store.segment_values(run, d), key=f"filter_{d}")
                  for d in dimensions}
        min_score = st.slider(f"Lowest p({outcome})", 0.0, 1.0, 0.0, 0.01, key="min_score")
        has_flag = f"flag_{outcome}" in store.columns[run]
        flagged_only = st.checkbox("Flagged at the operating point only", key="flagged_only", disabled=not has_flag,
                                   help=None if has_flag else "these scores carry no flag column")
        top = st.number_input("Customers in the list", 10, 5000, 50, 10, key="top")
    filters = Filters({d: v for d, v in chosen.items() if v}, min_score, flagged_only)
    result = store.portfolio(run, outcome, filters, split, top=int(top))

    cols = st.columns(4)
    cols[0].metric("Scored customers", f"{result.scored:,}")
    cols[1].metric(f"Eligible for {outcome}", f"{result.eligible:,}",
                   help="customers in the outcome's population at risk (ineligible ones have no score)")
    cols[2].metric("Selected by the filters", f"{result.selected:,}")
    if result.flagged is None:
        cols[3].metric("Flagged at the operating point", "—", help="these scores carry no flag_<outcome> column")
    else:
        cols[3].metric("Flagged at the operating point", f"{result.flagged:,}",
                       help=None if result.threshold is None else f"p ≥ {result.threshold:.3f}")

    left, right = st.columns([3, 2])
    with left:
        st.subheader(f"Score distribution: p({outcome})")
        if len(result.histogram):
            st.altair_chart(charts.score_histogram(result.histogram, outcome, split, result.threshold), width="stretch")
        else:
            st.info("No eligible customer passes the filters.")
    with right:
        st.subheader(f"By {SEGMENT_LABELS.get(split, split) if split else 'population'}")
        st.dataframe(result.by_segment, hide_index=True, width="stretch", column_config={
            "group": SEGMENT_LABELS.get(split, "group") if split else "group",
            "mean": st.column_config.NumberColumn(format="%.3f"),
            "p50": st.column_config.NumberColumn(format="%.3f"),
            "p90": st.column_config.NumberColumn(format="%.3f"),
            "flagged_share": st.column_config.NumberColumn("flagged share", format="percent"),
        })
        if len(result.ineligible_by_rule):
            st.caption(f"Not eligible for {outcome} (no score, never ranked):")
            st.dataframe(result.ineligible_by_rule, hide_index=True, width="stretch")

    st.subheader(f"Ranked list: highest p({outcome}) first")
    ranked = result.ranked.copy()
    ranked.insert(2, "open", [link("Customer", customer=c, run=str(run), outcome=outcome)
                              for c in ranked["customer_id"]])
    st.dataframe(ranked, hide_index=True, width="stretch", column_config={
        "score": st.column_config.ProgressColumn(f"p({outcome})", format="%.3f", min_value=0.0, max_value=1.0),
        "open": st.column_config.LinkColumn("customer view", display_text="open"),
        "flag": st.column_config.CheckboxColumn("flagged"),
        **{d: SEGMENT_LABELS.get(d, d) for d in dimensions},
    })
    st.download_button("Export the filtered ranked list (CSV)",
                       data=lambda: store.ranked_csv(run, outcome, filters),
                       file_name=f"ranked-{outcome}-{store.runs[run].path.name}.csv", mime="text/csv",
                       key="export")
    if len(ranked):
        st.markdown("**Open a customer:** " + " · ".join(
            f"[{c}]({link('Customer', customer=c, run=str(run), outcome=outcome)})"
            for c in ranked["customer_id"].head(10)))
    st.caption(f"answered in {time.perf_counter() - started:.2f} s")


# ------------------------------------------------------------------------------------------ customer


def customer_view(store: ScoreStore, run: int, outcome: str | None) -> None:
    st.title("Customer")
    if "customer" not in st.session_state:
        st.session_state["customer"] = st.query_params.get("customer", "")
    customer_id = st.text_input("Customer id", key="customer", placeholder="e.g. C00000042").strip()
    if not customer_id:
        examples = store.ranked(run, outcome, limit=5)["customer_id"].tolist() if outcome else []
        st.info("Type a customer id. Highest scores in this run: " + ", ".join(
            f"[{c}]({link('Customer', customer=c, run=str(run))})" for c in examples))
        return
    st.query_params["customer"] = customer_id
    started = time.perf_counter()
    scored = store.customer_runs(customer_id)
    current = next((row for i, row in scored if i == run), None)
    if current is None:
        similar = store.customer_ids(run, customer_id[:-1] if len(customer_id) > 1 else customer_id, limit=8)
        st.warning(f"{customer_id} is not in scoring run `{store.runs[run].path.name}`."
                   + (f" Similar ids: {', '.join(similar)}" if similar else ""))
        return
    previous = next((row for i, row in reversed(scored) if i < run), None)
    outcomes = outcomes_of(store.columns[run])
    scoring = store.runs[run]
    cutoff = pd.Timestamp(current["cutoff"])
    st.caption(f"Scored at cut-off {cutoff:%Y-%m-%d %H:%M} UTC by {current.get('model_name', '')} "
               f"v{current.get('model_version', '')} · {current.get('n_events', '?')} events seen by the model")

    cols = st.columns(max(1, len(outcomes)))
    for col, name in zip(cols, outcomes, strict=False):
        p = value(current, f"p_{name}")
        before = value(previous, f"p_{name}") if previous else None
        flag = value(current, f"flag_{name}")
        label = f"p({name})" + (" · flagged" if flag else "")
        if p is None:
            col.metric(label, "not eligible", help=value(current, ineligible_reason_column(name)))
            col.caption(value(current, ineligible_reason_column(name)) or "no score")
        else:
            col.metric(label, f"{p:.3f}", delta=None if before is None else f"{p - before:+.3f} since previous",
                       delta_color="inverse" if name in ("churn", "default") else "normal")

    events = store.customer_events(run, customer_id)
    frame = events.to_pandas()
    before_cut = frame[frame["ts"] < cutoff].reset_index(drop=True)
    after_cut = int((frame["ts"] >= cutoff).sum())
    st.caption(f"opened in {time.perf_counter() - started:.2f} s")

    left, right = st.columns([3, 2])
    with left:
        st.subheader("Reasons")
        lines = []
        for name in outcomes:
            if value(current, f"p_{name}") is None:
                why = value(current, ineligible_reason_column(name)) or "ineligible"
                lines.append(f"- **{name}**: not scored — {why}")
                continue
            lines.append(f"- **{name}**: {outcome_reasons(current, name) or 'no reason given'}")
            groups = reasons_sentence(current.get("top_reasons"), name)
            if groups and groups != outcome_reasons(current, name):
                lines.append(f"  - events: {groups}")
        st.markdown("\n".join(lines) if lines else "No reasons in these scores (scored with --top-reasons 0).")
    with right:
        steps = forecast_steps(store.columns[run])
        st.subheader("Next events forecast")
        if steps:
            st.table(pd.DataFrame({"k": steps, "event": [current.get(f"next_event_{k}") for k in steps],
                                   "probability": [f"{value(current, f'p_next_event_{k}') or 0:.3f}" for k in steps]}),
                     hide_index=True)
        else:
            st.caption("These scores hold no next-event forecast.")

    st.subheader(TIMELINE_TITLE)
    later = f" ({after_cut} later ones not shown)" if after_cut else ""
    st.caption(f"{len(before_cut)} events before the cut-off{later}"
               + "; colour: behaviour type; size and shade: the event's importance for the chosen task "
               "(faint: older than the model's input window).")
    explained = None
    reference = model_reference(scoring)
    with st.spinner("explaining with the model that scored this run…"):
        try:
            explained = explanation_of(str(scoring.path), reference, config().resolved_tracking_uri(),
                                       customer_id, cutoff.isoformat())
        except Exception as error:  # the scores stay useful when the model cannot be opened
            st.warning(f"Per-event importance unavailable ({reference}): {error}")
    if explained is not None and explained.tasks:
        tasks = explained.tasks
        default = tasks.index(outcome) if outcome in tasks else 0
        task = st.selectbox("Importance for", tasks, index=default, key="task")
        drawn = before_cut.assign(importance=explained.importance[task].to_numpy()[:len(before_cut)],
                                  seen_by_model=explained.importance["seen_by_model"].to_numpy()[:len(before_cut)])
        st.altair_chart(charts.timeline(drawn, task, explained.method in SIGNED_METHODS), width="stretch")
        codes = explained.reason_codes.get(task, [])
        code_lines = [f"- `{c.get('code')}` {c.get('sentence')} (weight {c.get('weight', 0):.3g})" for c in codes]
        group_lines = [f"- {r['summary']}" for r in explained.reasons.get(task, [])]
        st.markdown(f"**Reason codes for {task}** (importance: {explained.method})\n\n"
                    + ("\n".join(code_lines) or "none") + f"\n\n**Top event groups for {task}**\n\n"
                    + ("\n".join(group_lines) or "none"))
    else:
        drawn = before_cut.assign(importance=1.0, seen_by_model=True)
        st.altair_chart(charts.timeline(drawn, "—", False), width="stretch")

    st.subheader("What changed since the previous cut-off")
    if previous is None:
        st.info("Only one scoring run holds this customer. Score another cut-off (`journey score --cutoff DATE "
                "--out WORK/scores-DATE`) to see what changed.")
    else:
        previous_cut = pd.Timestamp(previous["cutoff"])
        st.caption(f"{previous_cut:%Y-%m-%d} → {cutoff:%Y-%m-%d}")
        st.dataframe(changes(previous, current, outcomes), hide_index=True, width="stretch")
        between = frame[(frame["ts"] >= previous_cut) & (frame["ts"] < cutoff)]
        if len(between):
            counts = between["event_type"].value_counts().rename_axis("event_type").reset_index(name="events")
            st.caption(f"{len(between)} new events between the two cut-offs:")
            st.dataframe(counts, hide_index=True)
    with st.expander("Events before the cut-off (latest first)"):
        st.dataframe(before_cut.iloc[::-1].head(500), hide_index=True, width="stretch")


# ------------------------------------------------------------------------------------------ models


def models_view(cfg: DashboardConfig) -> None:
    st.title("Models")
    uri = cfg.resolved_tracking_uri()
    if not models.registry_available(uri):
        st.info(f"No MLflow store at {uri}: run `journey demo` (or `journey train`) first.")
        return
    versions = registry(uri)
    if not versions:
        st.info(f"No registered journey-* model in {uri}.")
        return
    champions = [v for v in versions if v.is_champion]
    st.caption(f"Registry: `{uri}` · {len(versions)} version{'' if len(versions) == 1 else 's'}")
    for v in champions:
        st.success(f"Champion: **{v.name} v{v.version}** ({v.tags.get('model', '?')}), selected on "
                   f"{v.tags.get('validation_metric', '?')} = {v.tags.get('validation_value', '?')[:6]}, "
                   f"training data hash `{v.tags.get('data_hash', '?')[:16]}`")
    split = st.radio("Metrics of", ["test", "best/val"], horizontal=True, key="metric_split")
    table = models.metrics_table(versions, split)
    st.dataframe(table, hide_index=True, width="stretch")
    numeric = [c for c in table.columns if c not in ("model", "version", "aliases", "architecture")]
    if numeric:
        default = next((i for i, c in enumerate(numeric) if c.startswith("auc/")), 0)
        metric = st.selectbox("Compare versions on", numeric, index=default, key="metric")
        st.altair_chart(charts.metric_bars(table.dropna(subset=[metric]), metric), width="stretch")

    st.subheader("Lineage: training data → run → version → alias")
    st.graphviz_chart(models.lineage_graph(versions))
    st.dataframe(models.lineage(versions), hide_index=True, width="stretch")

    st.subheader("Calibration and operating point")
    labels = [f"{v.name} v{v.version}" + (" (champion)" if v.is_champion else "") for v in versions]
    chosen = versions[st.selectbox("Version", range(len(versions)), format_func=lambda i: labels[i], key="version")]
    ece = {k: v for k, v in chosen.metrics.items() if "/ece/" in k or k.startswith("test/ece")}
    if ece:
        st.dataframe(pd.DataFrame({"metric": list(ece), "ECE": list(ece.values())}), hide_index=True)
    operating = models.operating_point_metrics(chosen)
    if operating:
        st.dataframe(pd.DataFrame({"metric": list(operating), "value": list(operating.values())}), hide_index=True)
    else:
        st.caption("No gains / lift / threshold metrics logged for this version.")
    if chosen.run_id and chosen.plots:
        client = models.client_for(uri)
        ordered = sorted(chosen.plots, key=lambda p: (not any(w in p for w in ("calibration", "gain", "lift")), p))
        cols = st.columns(2)
        for i, path in enumerate(ordered):
            try:
                local = models.download_plot(client, chosen.run_id, path, cfg.root / CACHE_DIR / "artifacts")
                cols[i % 2].image(str(local), caption=path, width="stretch")
            except Exception as error:  # an artifact store that cannot be read here
                cols[i % 2].caption(f"{path}: {error}")


# ------------------------------------------------------------------------------------------ stability


def stability_view(cfg: DashboardConfig) -> None:
    st.title("Stability")
    reports = stability.find_reports(cfg.root)
    if not reports:
        st.info(stability.HOW_TO.replace("WORKDIR", str(cfg.root)))
        return
    latest = reports[-1]
    alerts = latest.alerts()
    if alerts:
        st.error(f"{len(alerts)} stability indices above {latest.threshold:g} in {latest.path.name}: "
                 + ", ".join(f"{k} = {v:.3f}" for k, v in alerts.items()))
    else:
        st.success(f"No stability index above {latest.threshold:g} in {latest.path.name}.")
    over_time = stability.psi_over_time(reports)
    if len(over_time.columns):
        st.subheader("PSI, report by report")
        st.altair_chart(charts.psi_over_time(over_time, latest.threshold), width="stretch")
        st.dataframe(over_time, width="stretch")
    st.subheader(f"Latest report: {latest.path.name}")
    if latest.figure is not None:
        st.image(str(latest.figure), width="stretch")
    numbers = latest.numbers()
    st.dataframe(pd.DataFrame({"measure": list(numbers), "value": list(numbers.values())}), hide_index=True,
                 width="stretch")
    with st.expander("The report as written"):
        st.json(latest.content)


# ------------------------------------------------------------------------------------------ the page


def main() -> None:
    st.set_page_config(page_title="Journey dashboard", layout="wide")
    cfg = config()
    if "view" not in st.session_state:
        wanted = st.query_params.get("view", VIEWS[0])
        st.session_state["view"] = wanted if wanted in VIEWS else VIEWS[0]
    st.sidebar.title("Journey")
    view = st.sidebar.radio("View", VIEWS, key="view")
    st.query_params["view"] = view
    if view == "Models":
        models_view(cfg)
        return
    if view == "Stability":
        stability_view(cfg)
        return
    try:
        store = current_store()
    except DashboardDataError as error:
        st.error(str(error))
        return
    run = pick_run(store)
    outcome = pick_outcome(store, run)
    if view == "Portfolio":
        if outcome is None:
            st.info("These scores hold no outcome (p_<outcome>) column.")
        else:
            portfolio_view(store, run, outcome)
    else:
        customer_view(store, run, outcome)
    st.sidebar.caption(f"workdir `{cfg.root}`")


main()

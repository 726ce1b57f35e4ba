"""The figures logged with every tracked run: learning curves, ROC / PR / calibration, attention heatmaps.

Each function draws one PNG from plain data (the learning-curve rows of
:class:`journey_model.training.train.EpochHistory`, :class:`journey_model.training.metrics.OutcomeCurves`, attention weights
from ``model(batch, output_attentions=True)``), writes it atomically and returns its path. Matplotlib runs
headless (Agg).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the headless backend
import numpy as np  # noqa: E402
import torch  # noqa: E402

from journey_model.core.files import atomic_path  # noqa: E402
from journey_model.models.calibration import ReliabilityCurve  # noqa: E402
from journey_model.training.metrics import OutcomeCurves  # noqa: E402

MAX_ATTENTION_POSITIONS = 40  # most recent behaviours shown per customer in the heatmap
# Validation metrics on a 0..1, higher-is-better scale share the learning-curve panel.
SCORE_PREFIXES = ("val/auc/", "val/pr_auc/", "val/acc", "val/hr_at_", "val/ndcg_at_", "val/mrr", "val/sampled_auc",
                  "val/step_acc/")


def save_figure(fig: plt.Figure, path: str | Path) -> Path:
    """Write ``fig`` as PNG atomically (a hidden temporary file, then a rename) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path) as temporary:
            # The temporary's name ends in .tmp: the format comes from the real name.
            fig.savefig(temporary, dpi=100, format=path.suffix[1:] or None)
    finally:
        plt.close(fig)
    return path


def plot_learning_curves(history: Sequence[dict[str, float]], path: str | Path) -> Path | None:
    """Training and validation loss per epoch, and every other validation metric per epoch."""
    if not history:
        return None
    epochs = [int(row["epoch"]) for row in history]
    keys = sorted({k for row in history for k in row if k.startswith(SCORE_PREFIXES)})
    panels = 1 + (1 if keys else 0) + (1 if any("train/lr" in row for row in history) else 0)
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.6), squeeze=False)
    ax = axes[0][0]
    for key, label in (("train/loss", "train"), ("val/loss", "validation")):
        values = [row.get(key, math.nan) for row in history]
        ax.plot(epochs, values, marker="o", label=label)
    ax.set_xlabel("epoch")
    ax.set_title("loss")
    ax.legend()
    column = 1
    if keys:
        ax = axes[0][column]
        for key in keys[:12]:
            ax.plot(epochs, [row.get(key, math.nan) for row in history], marker=".", label=key.removeprefix("val/"))
        ax.set_xlabel("epoch")
        ax.set_title("validation metrics (higher is better)")
        ax.legend(fontsize=7)
        column += 1
    if column < panels:
        ax = axes[0][column]
        ax.plot(epochs, [row.get("train/lr", math.nan) for row in history], marker=".")
        ax.set_xlabel("epoch")
        ax.set_title("learning rate (end of epoch)")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_roc_pr(curves: dict[str, OutcomeCurves], path: str | Path) -> Path | None:
    """ROC and precision-recall curves of every outcome on one figure (two panels)."""
    drawable = {name: c for name, c in curves.items() if c.roc is not None}
    if not drawable:
        return None
    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(10, 4.2))
    for name, c in drawable.items():
        roc_ax.plot(c.roc.false_positive_rate, c.roc.true_positive_rate, label=f"{name} (n={c.n_known})")
        pr_ax.plot(c.precision_recall.recall, c.precision_recall.precision,
                   label=f"{name} (prevalence {c.n_positive / max(c.n_known, 1):.2f})")
    roc_ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test)")
    pr_ax.set(xlabel="recall", ylabel="precision", title="precision-recall (test)", ylim=(0, 1.02))
    roc_ax.legend(fontsize=8)
    pr_ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_calibration(curves: dict[str, OutcomeCurves], path: str | Path) -> Path | None:
    """Reliability diagram: observed positive rate against mean predicted probability per bin."""
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(5, 4.6))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfectly calibrated")
    for name, c in curves.items():
        keep = c.calibration.count > 0
        ax.plot(c.calibration.mean_predicted[keep], c.calibration.observed_rate[keep], marker="o", label=name)
    ax.set(xlabel="mean predicted probability", ylabel="observed rate", title="calibration (test)",
           xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_reliability_before_after(curves: dict[str, tuple[ReliabilityCurve, ReliabilityCurve]],
                                  ece: dict[str, tuple[float, float]], path: str | Path,
                                  split: str = "test") -> Path | None:
    """Reliability diagrams of the raw and the calibrated probabilities side by side, one line per outcome,
    ECE in the legend. Only per-bin aggregates are drawn: nothing identifies a customer."""
    if not curves:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), sharey=True)
    for column, (ax, title) in enumerate(zip(axes, ("raw model", "calibrated"))):
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfectly calibrated")
        for name, pair in curves.items():
            curve = pair[column]
            keep = curve.count > 0
            ax.plot(curve.mean_predicted[keep], curve.observed_rate[keep], marker="o",
                    label=f"{name} (ECE {ece[name][column]:.3f})")
        ax.set(xlabel="mean predicted probability", title=f"{title} ({split})", xlim=(0, 1), ylim=(0, 1))
        ax.legend(fontsize=8)
    axes[0].set_ylabel("observed rate")
    fig.tight_layout()
    return save_figure(fig, path)


def attention_rows(attentions: dict[str, torch.Tensor], row: int) -> dict[str, np.ndarray]:
    """Per-behaviour weights of customer ``row``: task / pooling attentions as they are, heads averaged;
    self-attention blocks as the attention each behaviour receives, averaged over heads and queries."""
    rows: dict[str, np.ndarray] = {}
    for name, weights in attentions.items():
        if name.startswith("forecast/"):
            continue  # decoder steps attend to the input per step; not one row per behaviour
        w = weights[row].detach().float().cpu()
        if w.dim() == 1:  # (T,)
            rows[name] = w.numpy()
        elif w.dim() == 2:  # (heads, T)
            rows[name] = w.mean(0).numpy()
        elif w.dim() == 3:  # (heads, T, T): mean over queries of attention received
            rows[f"{name} (received)"] = w.mean(0).mean(0).numpy()
    return rows


def attention_figure(attentions: dict[str, torch.Tensor], lengths: Sequence[int], event_names: Sequence[Sequence[str]],
                     titles: Sequence[str] | None = None) -> plt.Figure | None:
    """One heatmap per sampled customer: attention rows (task queries, pooling, self-attention received)
    over the customer's most recent behaviours, labelled with their event types.

    Anonymous: panels are "example 1" … "example n", in the batch's order; no customer id, value or label
    reaches the figure (``titles`` add what the caller chooses: the model's own scores).
    """
    panels = [(i, attention_rows(attentions, i)) for i in range(len(lengths))]
    panels = [(i, rows) for i, rows in panels if rows]
    if not panels:
        return None
    height = sum(0.9 + 0.32 * len(rows) for _, rows in panels) + 1.0
    fig, axes = plt.subplots(len(panels), 1, figsize=(12, height), squeeze=False)
    for ax, (i, rows) in zip(axes[:, 0], panels):
        length = int(lengths[i])
        start = max(0, length - MAX_ATTENTION_POSITIONS)
        names = list(rows)
        matrix = np.stack([rows[n][start:length] for n in names])
        image = ax.imshow(matrix, aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_xticks(range(length - start), list(event_names[i])[start:length], rotation=70, fontsize=6, ha="right")
        title = f"example {i + 1}: last {length - start} of {length} behaviours (oldest left)"
        if titles:
            title += f" — {titles[i]}"
        ax.set_title(title, fontsize=8)
        fig.colorbar(image, ax=ax, fraction=0.02, pad=0.01)
    fig.tight_layout()
    return fig


def plot_attention(attentions: dict[str, torch.Tensor], lengths: Sequence[int], event_names: Sequence[Sequence[str]],
                   path: str | Path, titles: Sequence[str] | None = None) -> Path | None:
    """:func:`attention_figure` saved to ``path`` (None when there is no attention to draw)."""
    fig = attention_figure(attentions, lengths, event_names, titles)
    return save_figure(fig, path) if fig is not None else None


def figure_texts(fig: plt.Figure) -> list[str]:
    """Every text a figure shows (titles, tick and axis labels, legends, annotations): what a reader sees."""
    return [t.get_text() for t in fig.findobj(lambda artist: hasattr(artist, "get_text")) if t.get_text()]


__all__ = ["attention_figure", "figure_texts", "plot_attention", "plot_calibration", "plot_learning_curves",
           "plot_reliability_before_after", "plot_roc_pr", "attention_rows"]

"""Train several models on the same prepared data with the same budget and put their results in one table.

Used by `journey demo`, by ``benchmarks/bench_models.py`` and (later) `journey compare`. Each model is
trained by :func:`journey_model.training.train` — the same path as `journey train` — on the same tasks,
epochs and batch size, and reported with its test metrics, training time, parameters and throughput.
Models that cannot answer a task are skipped with the reason, not silently.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from journey_model.models.registry import supported_tasks
from journey_model.tasks import parse_task
from journey_model.training import TrainConfig, TrainResult, train

COUNT_MODELS = ("markov", "most-frequent")


@dataclass
class ComparisonRow:
    model: str
    tasks: list[str]
    metrics: dict[str, float]  # test metrics, keys without the "test/" prefix
    seconds: float
    parameters: int
    epochs: int
    events_per_second: float | None = None  # training throughput, events per second
    skipped: str | None = None  # why the model was not trained


@dataclass
class Comparison:
    rows: list[ComparisonRow] = field(default_factory=list)

    def table(self, metric_keys: list[str]) -> str:
        """A fixed-width text table: one row per model, the chosen metrics, time and size."""
        header = ["model", *metric_keys, "train s", "params", "events/s"]
        lines = [header]
        for row in self.rows:
            if row.skipped:
                lines.append([row.model, f"skipped: {row.skipped}"])
                continue
            cells = [row.model]
            for key in metric_keys:
                value = row.metrics.get(key)
                cells.append("-" if value is None or math.isnan(value) else f"{value:.3f}")
            cells += [f"{row.seconds:.0f}", f"{row.parameters:,}",
                      f"{row.events_per_second:,.0f}" if row.events_per_second else "-"]
            lines.append(cells)
        widths = [max(len(line[i]) for line in lines if i < len(line)) for i in range(len(header))]
        return "\n".join("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)) for line in lines)

    def to_json(self) -> list[dict]:
        return [row.__dict__ for row in self.rows]

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.to_json(), indent=1))

    def plot(self, metric_keys: list[str], path: str | Path) -> Path:
        """Bar chart of the chosen metrics per model, saved as PNG."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = [r for r in self.rows if not r.skipped]
        fig, axes = plt.subplots(1, len(metric_keys), figsize=(4 * len(metric_keys), 0.45 * len(rows) + 1.5),
                                 squeeze=False)
        for ax, key in zip(axes[0], metric_keys):
            values = [r.metrics.get(key, float("nan")) for r in rows]
            ax.barh([r.model for r in rows], values, color="#4477aa")
            ax.set_title(key)
            ax.invert_yaxis()
            ax.set_xlim(0, 1)
        fig.tight_layout()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return Path(path)


def compare_models(models: list[str], base: TrainConfig, progress_print: bool = True) -> Comparison:
    """Train each model with ``base``'s data, tasks and budget; rows in the order given."""
    comparison = Comparison()
    requested = [parse_task(t) for t in base.tasks] if base.tasks else None
    for name in models:
        tasks = supported_tasks(name)
        usable = [t for t in requested if t in tasks] if requested else None
        if requested and not usable:
            comparison.rows.append(ComparisonRow(name, [], {}, 0.0, 0, 0,
                                                 skipped=f"answers none of {[t.value for t in requested]}"))
            continue
        config = replace(base, model=name, tasks=[t.value for t in usable] if usable else None,
                         output_dir=str(Path(base.output_dir) / "compare"))
        if name in ("bag", *COUNT_MODELS):
            config = replace(config, model_overrides={})
        result: TrainResult = train(config)
        metrics = {k.removeprefix("test/"): v for k, v in result.test_metrics.items()}
        row = ComparisonRow(name, result.tasks, metrics, result.seconds, result.parameters, result.epochs,
                            events_per_second=result.events_per_second)
        comparison.rows.append(row)
        if progress_print:
            print(f"  trained {name:<14} in {result.seconds:5.0f} s", flush=True)
    return comparison

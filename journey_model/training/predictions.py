"""Per-example test predictions of a trained model as Parquet (``--predictions-out``).

One row per test example, in the test split's order: ``customer_id``, ``cutoff``, then what the model answers —
``p_<outcome>`` (calibrated when the run fitted a calibration, else the sigmoid of the logit),
``next_event_top_ids`` / ``next_event_top_p`` and ``next_item_top_ids`` / ``next_item_top_p`` (the ``top_k``
highest-probability ids of the event-type / item vocabulary, best first, with their softmax probabilities over
the real ids). No event values and no labels are written: only who, when, and what the model said.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader

from journey_model.core.files import atomic_path
from journey_model.data.features import EVENT_TYPE_SPECIAL_IDS, FIELD_SPECIAL_IDS
from journey_model.data.prepare import read_split
from journey_model.models.base import JourneyModel
from journey_model.models.calibration import Calibration
from journey_model.training.datamodule import JourneyDataModule, PreparedSequences

TOP_K = 10


def _top(logits: torch.Tensor, excluded: tuple[int, ...] | frozenset[int], k: int) -> tuple[list, list]:
    scores = logits.float().clone()
    scores[:, [i for i in excluded if i < scores.shape[1]]] = -torch.inf
    probabilities = torch.softmax(scores, dim=1)
    values, ids = probabilities.topk(min(k, max(1, scores.shape[1] - len(excluded))), dim=1)
    return ids.tolist(), values.tolist()


@torch.no_grad()
def test_predictions(model: JourneyModel, data: JourneyDataModule, calibration: Calibration | None = None,
                     top_k: int = TOP_K) -> pa.Table:
    """The predictions of ``model`` (as it is now) for every example of the test split, in the split's order."""
    table = read_split(data.data_dir, "test", columns=["customer_id", "cutoff"])
    dataset = data.datasets.get("test") or PreparedSequences(read_split(data.data_dir, "test"))
    loader = DataLoader(dataset, batch_size=data.eval_batch_size, shuffle=False, collate_fn=data.collate)
    device = next(model.parameters(), torch.empty(0)).device
    was_training = model.training
    model.eval()
    columns: dict[str, list] = {}
    outcome_names = list(model.spec.outcome_names)
    try:
        for batch in loader:
            output = model(batch.to(device))
            if output.outcome_logits is not None:
                probabilities = torch.sigmoid(output.outcome_logits.float()).double().cpu().numpy()
                for i, name in enumerate(outcome_names):
                    columns.setdefault(f"p_{name}", []).append(probabilities[:, i])
            for name, logits, excluded in (("next_event", output.next_event_logits, EVENT_TYPE_SPECIAL_IDS),
                                           ("next_item", output.next_item_logits, FIELD_SPECIAL_IDS)):
                if logits is not None:
                    ids, values = _top(logits, excluded, top_k)
                    columns.setdefault(f"{name}_top_ids", []).extend(ids)
                    columns.setdefault(f"{name}_top_p", []).extend(values)
    finally:
        model.train(was_training)
    result: dict[str, object] = {"customer_id": table.column("customer_id"), "cutoff": table.column("cutoff")}
    for name in outcome_names:
        if f"p_{name}" in columns:
            values = np.concatenate(columns[f"p_{name}"])
            result[f"p_{name}"] = calibration.apply(name, values) if calibration is not None else values
    for key in ("next_event_top_ids", "next_event_top_p", "next_item_top_ids", "next_item_top_p"):
        if key in columns:
            result[key] = columns[key]
    return pa.table(result)


def write_predictions(path: str | Path, model: JourneyModel, data: JourneyDataModule,
                      calibration: Calibration | None = None, top_k: int = TOP_K) -> Path:
    """Write :func:`test_predictions` to ``path`` (Parquet, atomically); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = test_predictions(model, data, calibration, top_k)
    with atomic_path(path) as staged:
        pq.write_table(table, staged)
    return path


__all__ = ["TOP_K", "test_predictions", "write_predictions"]

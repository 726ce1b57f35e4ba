"""notebooks/: every analyst notebook runs top to bottom (nbclient, a real kernel) on a small synthetic workdir, and
the committed files carry no outputs.

The workdir looks like what `journey demo` leaves, only smaller: the tiny model of
:func:`test_batch_scoring.tiny_model` batch-scored at two cut-offs (``scores-2024-11/``, ``scores/``), a comparison
table in ``results/comparison.json``, and an MLflow store with one registered version aliased ``champion``. The
scoring manifests name the bundle folder, so the notebooks open the model without MLflow; the prepared dataset
is the tiny model's (``JOURNEY_PREPARED``).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from test_batch_scoring import TinyModel, tiny_model

from journey_model.inference.batch_scoring import BatchScoringConfig, score_batch
from pipelines.compare import Comparison, ComparisonRow

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
NAMES = ["01-journey-explorer", "02-model-comparison", "03-stability"]
CUTOFFS = {"scores-2024-11": "2024-11-01", "scores": "2024-12-01"}
REGISTERED = "journey-synth_bank-outcome"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> TinyModel:
    return tiny_model(tmp_path_factory.getbasetemp() / "tiny_journey_model")


def comparison_of_the_tiny_run() -> Comparison:
    """A comparison table shaped as `journey compare --json` writes it (the numbers are made up, plausible)."""
    def metrics(auc: float) -> dict[str, float]:
        return {f"{kind}/{o}": value for o in ("churn", "default", "uptake")
                for kind, value in (("auc", auc), ("pr_auc", auc / 3), ("ece", 0.03), ("lift10", 2.5),
                                    ("op_precision", 0.3), ("op_recall", 0.4))}

    return Comparison([
        ComparisonRow("atrank", ["outcome"], metrics(0.74), 12.0, 5_000, 1, 90_000.0, None, "val/loss", 0.21),
        ComparisonRow("bag", ["outcome"], metrics(0.61), 2.0, 300, 1, 400_000.0, None, "val/loss", 0.27),
        ComparisonRow("markov", ["outcome"], {}, 0.0, 0, 0, None, "answers none of ['outcome']"),
    ])


def register_champion(root: Path) -> None:
    """An MLflow store with one run and one registered version aliased champion (no model artifact: cheap)."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    experiment = client.create_experiment(REGISTERED, artifact_location=(root / "mlartifacts").as_uri())
    run = client.create_run(experiment)
    client.log_metric(run.info.run_id, "test/auc/churn", 0.74)
    client.set_terminated(run.info.run_id)
    client.create_registered_model(REGISTERED)
    version = client.create_model_version(
        REGISTERED, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id,
        tags={"model": "atrank", "data_hash": "d0e1f2a3", "validation_metric": "val/loss", "validation_value": "0.21"})
    client.set_registered_model_alias(REGISTERED, "champion", version.version)


@pytest.fixture(scope="module")
def workdir(model, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("notebooks_work")
    for folder, cutoff in CUTOFFS.items():
        score_batch(BatchScoringConfig(model=str(model.bundle), events_dir=str(model.synth), out_dir=str(root / folder),
                                       cutoff=cutoff, top_reasons=3 if folder == "scores" else 0, progress=False))
    comparison_of_the_tiny_run().save(root / "results" / "comparison.json")
    register_champion(root)
    return root


@pytest.mark.parametrize("name", NAMES)
def test_the_committed_notebook_has_no_outputs(name):
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code), \
        f"{name}: strip the outputs before committing (Jupyter: Clear Outputs of All Cells)"
    assert notebook.cells[0].cell_type == "markdown" and notebook.cells[0].source.startswith(f"# {name[:2]} ·")
    assert "JOURNEY_WORKDIR" in "".join(cell.source for cell in code)


@pytest.mark.parametrize("name", NAMES)
def test_the_notebook_runs_top_to_bottom_on_a_small_run(name, model, workdir, monkeypatch):
    monkeypatch.setenv("JOURNEY_WORKDIR", str(workdir))
    monkeypatch.setenv("JOURNEY_PREPARED", str(model.prepared))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")  # figures as outputs
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    before = sorted(p.name for p in workdir.iterdir())
    NotebookClient(notebook, timeout=180, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()  # raises on any cell's error
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any(o.output_type == "display_data" and "image/png" in o.data for o in outputs), "no figure drawn"
    assert sorted(p.name for p in workdir.iterdir()) == before  # read-only on a workdir with two runs
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    if name == "01-journey-explorer":
        assert "400 customers scored at 2024-12-01" in text and "importance by" in text
    elif name == "02-model-comparison":
        assert "best by val/loss: atrank" in text and "no MLflow store" not in text
    else:
        assert "reference: scores-2024-11 (2024-11-01)" in text and "stable" in text


def test_stability_scores_the_month_before_when_the_workdir_holds_one_run(model, tmp_path, monkeypatch):
    """What `make demo` leaves: one scoring run. Notebook 03 scores the month before as its reference."""
    score_batch(BatchScoringConfig(model=str(model.bundle), events_dir=str(model.synth), out_dir=str(tmp_path / "scores"),
                                   cutoff="2024-12-01", top_reasons=0, progress=False))
    monkeypatch.setenv("JOURNEY_WORKDIR", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    notebook = nbformat.read(NOTEBOOKS / "03-stability.ipynb", as_version=4)
    NotebookClient(notebook, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    text = "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs
                   if o.output_type == "stream")
    assert "one scoring run only: scoring 2024-11-01" in text and "reference: scores-2024-11-01 (2024-11-01)" in text
    assert (tmp_path / "scores-2024-11-01" / "_manifest.json").exists()

"""The layer contract: imports point down only, and the scoring path loads neither the trainer nor the tracker.

Layers, top to bottom (README, "Architecture"; the contracts live in pyproject.toml ``[tool.importlinter]``):

    pipelines > dashboard > serving > journey_model.tracking > journey_model.training | journey_model.inference
              > journey_model.models > journey_model.data > journey_model.core

import-linter checks the static import graph; the fresh interpreters below check what importing a module
really loads (third-party packages can pull things in that a static graph of our code does not show).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIBRARY_PACKAGES = ("journey_model", "serving", "dashboard")
# Optional extras imported where they are used, so that the library works without them installed.
OPTIONAL_IMPORTS = {"pyspark"}


def test_import_linter_contracts_are_kept():
    linter = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(linter), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
    assert result.stdout.count(" KEPT") >= 3  # the layers contract and both forbidden contracts ran


def _loaded_after_import(module: str) -> set[str]:
    code = f"import sys, {module}; print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


@pytest.mark.parametrize("module", [
    "journey_model.inference.scorer",
    "journey_model.inference.batch_scoring",
    "journey_model.inference.explain",
    "journey_model.inference.incremental",
    "journey_model.models",
])
def test_inference_and_models_load_neither_lightning_nor_mlflow(module):
    loaded = _loaded_after_import(module)
    assert "journey_model" in loaded  # the import really happened
    assert not loaded & {"lightning", "pytorch_lightning", "mlflow"}, sorted(loaded & {"lightning", "mlflow"})


@pytest.mark.parametrize("module", [
    "journey_model.data.prepare",
    "journey_model.data.ingest",
    "journey_model.data.synth",
    "pipelines.cli",
])
def test_data_jobs_and_the_cli_parser_load_no_torch(module):
    """Ingest, synth and prepare (also on Spark executors) and `journey --help` start without torch."""
    loaded = _loaded_after_import(module)
    assert "journey_model" in loaded
    assert not loaded & {"torch", "lightning", "pytorch_lightning", "mlflow"}


@pytest.mark.parametrize("module", ["journey_model.tracking.loading", "serving.service"])
def test_opening_a_model_by_uri_does_not_load_the_trainer(module):
    loaded = _loaded_after_import(module)
    assert "mlflow" in loaded  # models:/ URIs are read through MLflow
    assert not loaded & {"lightning", "pytorch_lightning"}


def _function_level_imports(path: Path) -> list[str]:
    found = []
    for function in ast.walk(ast.parse(path.read_text())):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(function):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            else:
                continue
            found += [f"{path.relative_to(ROOT)}:{node.lineno} {function.name}() imports {name}" for name in names
                      if name.split(".")[0] not in OPTIONAL_IMPORTS]
    return found


def test_no_import_hides_inside_a_function_in_the_library():
    """An import placed inside a function to break a cycle means the cut is wrong: move the shared piece down."""
    offenders = [line for package in LIBRARY_PACKAGES for path in sorted((ROOT / package).rglob("*.py"))
                 for line in _function_level_imports(path)]
    assert offenders == []


def test_the_function_level_import_check_finds_one(tmp_path):
    sample = ROOT / "tests" / "_layers_sample.py"
    sample.write_text("def f():\n    from journey_model.data import schema\n    return schema\n")
    try:
        assert _function_level_imports(sample) == ["tests/_layers_sample.py:2 f() imports journey_model.data"]
    finally:
        sample.unlink()

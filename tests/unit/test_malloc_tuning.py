"""`journey` hands glibc's malloc tuning to the processes it starts, unless told not to or already set."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from journey_model.core.resources import MALLOC_TUNING, NO_MALLOC_TUNING_ENV, tune_malloc_for_children


def test_sets_what_is_missing_and_keeps_the_users_values() -> None:
    environ = {"MALLOC_TRIM_THRESHOLD_": "1024"}
    assert tune_malloc_for_children(environ) == {"MALLOC_MMAP_MAX_": "0"}
    assert environ == {"MALLOC_TRIM_THRESHOLD_": "1024", "MALLOC_MMAP_MAX_": "0"}
    assert tune_malloc_for_children({}) == MALLOC_TUNING


def test_can_be_turned_off() -> None:
    environ = {NO_MALLOC_TUNING_ENV: "1"}
    assert tune_malloc_for_children(environ) == {}
    assert set(environ) == {NO_MALLOC_TUNING_ENV}


def test_the_journey_command_passes_the_tuning_to_its_children(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines import cli

    for name in (*MALLOC_TUNING, NO_MALLOC_TUNING_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "argv", ["journey"])
    assert cli.main() == 2  # no subcommand: the help, exit 2
    child = subprocess.run([sys.executable, "-c", "import os; print(os.environ.get('MALLOC_MMAP_MAX_'), "
                            "os.environ.get('MALLOC_TRIM_THRESHOLD_'))"], capture_output=True, text=True, check=True)
    assert child.stdout.split() == [MALLOC_TUNING["MALLOC_MMAP_MAX_"], MALLOC_TUNING["MALLOC_TRIM_THRESHOLD_"]]


def test_library_calls_of_main_leave_the_environment_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines import cli

    for name in MALLOC_TUNING:
        monkeypatch.delenv(name, raising=False)
    assert cli.main([]) == 2
    assert not any(name in os.environ for name in MALLOC_TUNING)

"""Torch threads of a training process: one per process on CPU by default (measured), `--threads N` wins."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from journey_model.training import train as train_module
from journey_model.training.config import TrainConfig


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def config(**fields) -> TrainConfig:
    return dataclasses.replace(TrainConfig(data_dir="unused"), accelerator="cpu", **fields)


def test_cpu_training_defaults_to_the_measured_thread_count() -> None:
    torch.set_num_threads(2)
    assert train_module._set_threads(config()) == train_module.CPU_DEFAULT_THREADS == 1
    assert torch.get_num_threads() == 1


def test_threads_option_overrides_the_default() -> None:
    assert train_module._set_threads(config(threads=2)) == 2
    assert train_module._set_threads(config(threads=3, devices=2)) == 3


def test_cpu_ddp_processes_take_the_default_each() -> None:
    torch.set_num_threads(2)
    assert train_module._set_threads(config(devices=2)) == 1


def test_threads_option_parses_from_the_command_line() -> None:
    from journey_model.training.config import TRAIN_SETTINGS

    parser = __import__("argparse").ArgumentParser()
    TRAIN_SETTINGS.add_arguments(parser)
    args = parser.parse_args(["--data", "d", "--threads", "2"])
    assert TRAIN_SETTINGS.from_args(args).threads == 2
    assert TRAIN_SETTINGS.from_args(parser.parse_args(["--data", "d"])).threads is None

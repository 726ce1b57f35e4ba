"""One config mechanism for every `journey` subcommand: --config, --print-config, precedence, errors, Trainer options.

Each subcommand's options are generated from its typed config dataclass (journey_model.core.settings); these
tests check what a user relies on: the printed config loads back to the same config, the command line beats
the file, which beats the environment, a wrong key fails in one line naming the file and the key, and Lightning
Trainer arguments Journey does not set itself reach the Trainer.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import yaml
from lightning.pytorch.callbacks import Callback

from journey_model.training.config import ConfigError, TrainConfig
from journey_model.training.train import train, trainer_kwargs
from pipelines.cli import SUBCOMMANDS, build_parser
from pipelines.cli import main as journey
from serving.config import SETTINGS as SERVING_SETTINGS

ROOT = Path(__file__).resolve().parents[2]

ROUND_TRIPS = {
    "prepare": ["prepare", "--events", "ev", "--out", "ds", "--cutoffs", "2024-06-01,2024-08-01", "--target",
                "churn=account_close@30", "--target", "default=loan_default@60", "--split", "customer", "--max-len",
                "50", "--time-buckets", "9", "--max-vocab-size", "1000"],
    "score": ["score", "--model", "bundle", "--events", "ev", "--out", "scores", "--cutoff", "last-event",
              "--top-reasons", "0", "--engine", "spark", "--spark-master", "local[1]", "--torch-threads", "2"],
    "serve": ["serve", "--model", "models:/m@champion", "--host", "0.0.0.0", "--port", "4000", "--max-batch", "32",
              "--batch-wait-ms", "2.5", "--workers", "2", "--timeout", "30"],
    "train": ["train", "--data", "ds", "--model", "gru-bahdanau", "--task", "outcome,next_event", "--set",
              "hidden_size=32", "--set", "dropout=0.2", "--devices", "0,1", "--limit-train-batches", "0.5",
              "--lr-schedule", "cosine", "--no-track", "--trainer-option", "accumulate_grad_batches=2"],
}


def config_of(argv: list[str]):
    """The config `journey ARGV` would run with (parsed exactly as main parses it)."""
    args = build_parser(argv).parse_args(argv)
    return args.settings.from_args(args)


def print_config(argv: list[str], capsys) -> str:
    assert journey([*argv, "--print-config"]) == 0
    return capsys.readouterr().out


@pytest.fixture(autouse=True)
def no_serving_environment(monkeypatch):
    """`journey serve` reads JOURNEY_* / BENTOML_* variables; these tests set the ones they mean."""
    for _, f in SERVING_SETTINGS.fields.values():
        monkeypatch.delenv(f.metadata["env"], raising=False)


@pytest.mark.parametrize("command", sorted(ROUND_TRIPS))
def test_print_config_round_trips_through_config(command, tmp_path, capsys):
    argv = ROUND_TRIPS[command]
    printed = print_config(argv, capsys)
    path = tmp_path / f"{command}.yaml"
    path.write_text(printed)
    again = [command, "--config", str(path)]
    assert config_of(again) == config_of(argv)
    assert print_config(again, capsys) == printed


def test_print_config_shows_the_special_options_parsed(capsys):
    prepare = yaml.safe_load(print_config(ROUND_TRIPS["prepare"], capsys))
    assert (prepare["cutoff_strategy"], prepare["cutoff_dates"]) == ("dates", ["2024-06-01", "2024-08-01"])
    assert prepare["horizon_targets"] == {"churn": ["account_close", 30.0], "default": ["loan_default", 60.0]}
    assert prepare["preprocessing"]["max_len"] == 50 and prepare["preprocessing"]["num_time_buckets"] == 9
    trained = yaml.safe_load(print_config(ROUND_TRIPS["train"], capsys))
    assert trained["model"]["model_overrides"] == {"hidden_size": 32, "dropout": 0.2}
    assert trained["trainer"]["trainer_options"] == {"accumulate_grad_batches": 2}
    assert trained["trainer"]["devices"] == "0,1" and trained["tracking"]["track"] is False


def test_every_subcommand_takes_config_and_print_config():
    parser = build_parser(None)
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert sorted(subparsers.choices) == sorted(SUBCOMMANDS)
    for name, sub in subparsers.choices.items():
        flags = {s for action in sub._actions for s in action.option_strings}
        assert {"--config", "--print-config"} <= flags, name


def test_a_command_line_option_beats_the_file_which_beats_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "prepare.yaml"
    path.write_text("events_dir: ev\nout_dir: ds\nsplit: customer\npreprocessing: {max_len: 50, min_count: 3}\n")
    config = config_of(["prepare", "--config", str(path), "--max-len", "20", "--out", "elsewhere"])
    assert (config.preprocessing.max_len, config.preprocessing.min_count) == (20, 3)
    assert (config.events_dir, config.out_dir, config.split) == ("ev", "elsewhere", "customer")

    path = tmp_path / "run.yaml"
    path.write_text("data: {data_dir: ds, batch_size: 16}\nmodel: {model_overrides: {hidden_size: 32, num_heads: 2}}\n"
                    "trainer: {max_epochs: 7, trainer_options: {accumulate_grad_batches: 4}}\n")
    config = config_of(["train", "--config", str(path), "--max-epochs", "2", "--set", "hidden_size=16",
                        "--trainer-option", "val_check_interval=0.5"])
    assert (config.batch_size, config.max_epochs) == (16, 2)
    assert config.model_overrides == {"hidden_size": 16, "num_heads": 2}  # --set adds to the file's overrides
    assert config.trainer_options == {"accumulate_grad_batches": 4, "val_check_interval": 0.5}

    monkeypatch.setenv("JOURNEY_MAX_BATCH", "64")
    monkeypatch.setenv("JOURNEY_MAX_EVENTS", "100")
    monkeypatch.setenv("BENTOML_PORT", "3100")
    path = tmp_path / "serve.yaml"
    path.write_text("max_batch_customers: 32\nport: 4000\n")
    config = config_of(["serve", "--config", str(path), "--port", "5000"])
    assert (config.max_batch_customers, config.max_events_per_customer, config.port) == (32, 100, 5000)
    assert config.host == "127.0.0.1"


@pytest.mark.parametrize(("command", "text", "key"), [
    ("prepare", "events_dir: ev\nout_dir: ds\nmax_lenn: 3\n", "'max_lenn'"),
    ("prepare", "events_dir: ev\nout_dir: ds\npreprocessing: {max_len: many}\n", "preprocessing.max_len"),
    ("train", "data: {data_dir: ds}\ntrainer: {max_epoch: 3}\n", "trainer.max_epoch"),
    ("score", "model: m\nevents_dir: ev\nout_dir: o\nengine: hadoop\n", "engine"),
    ("serve", "port: [1, 2]\n", "port"),
])
def test_a_wrong_key_or_value_in_config_fails_in_one_line_naming_file_and_key(command, text, key, tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert journey([command, "--config", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert captured.err.startswith(f"journey {command}: error: {path}")
    assert key in captured.err


def test_a_missing_config_file_or_required_option_is_one_line(tmp_path, capsys):
    assert journey(["prepare", "--config", str(tmp_path / "absent.yaml")]) == 1
    assert capsys.readouterr().err == f"journey prepare: error: config file {tmp_path / 'absent.yaml'} does not exist\n"
    assert journey(["score", "--events", "ev", "--out", "o"]) == 1
    assert capsys.readouterr().err == "journey score: error: --model is required (or model in --config)\n"


def test_an_unknown_trainer_option_fails_naming_it(tmp_path, capsys):
    common = ["-q", "train", "--data", str(tmp_path), "--no-track", "--output-dir", str(tmp_path / "runs")]
    assert journey([*common, "--trainer-option", "accumulate_grad_batchez=2"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'accumulate_grad_batchez' is not an argument of lightning.Trainer" in err
    assert "did you mean accumulate_grad_batches" in err
    # One that Journey sets from its own fields says which Journey option to use instead.
    assert journey([*common, "--trainer-option", "max_epochs=3"]) == 1
    assert "'max_epochs' is set by Journey; use --max-epochs" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="'logger' is set by Journey; use --track"):
        TrainConfig(data_dir="ds", trainer_options={"logger": True})


def test_trainer_options_reach_the_lightning_trainer():
    config = config_of(["train", "--data", "ds", "--no-track", "--trainer-option", "accumulate_grad_batches=2",
                        "--trainer-option", "enable_model_summary=true"])
    kwargs = trainer_kwargs(config)
    assert kwargs["accumulate_grad_batches"] == 2 and kwargs["enable_model_summary"] is True
    assert L.Trainer(**kwargs).accumulate_grad_batches == 2
    assert config.flat_params()["trainer.trainer_options.accumulate_grad_batches"] == "2"  # MLflow params


class _TrainerProbe(Callback):
    def on_fit_start(self, trainer, pl_module):
        self.accumulate_grad_batches = trainer.accumulate_grad_batches


def test_a_trainer_option_reaches_a_real_training_run(synthetic_journeys, tmp_path):
    prepared = synthetic_journeys(1500, seed=3, max_len=60) / "ds"  # the dataset test_training.py builds
    config = config_of(["train", "--data", str(prepared), "--model", "bag", "--task", "outcome", "--max-epochs", "1",
                        "--limit-train-batches", "2", "--limit-val-batches", "1", "--no-track", "--no-progress",
                        "--output-dir", str(tmp_path), "--trainer-option", "accumulate_grad_batches=2"])
    probe = _TrainerProbe()
    result = train(config, callbacks=[probe])
    assert probe.accumulate_grad_batches == 2 and result.epochs >= 0
    saved = yaml.safe_load((tmp_path / "bag" / "config.yaml").read_text())
    assert saved["trainer"]["trainer_options"] == {"accumulate_grad_batches": 2}


def test_building_the_parser_loads_neither_torch_nor_lightning():
    code = ("import sys; from pipelines.cli import build_parser; build_parser(['--help']); "
            "build_parser(['train']); build_parser(['serve']); "
            "print(' '.join(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'lightning', 'mlflow'})))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""

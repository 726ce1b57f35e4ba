"""`journey`: the one console command in front of Journey, with a subcommand per pipeline step.

Every subcommand's options come from one typed config dataclass through one mechanism
(:mod:`journey_model.core.settings`): ``SynthConfig``, ``IngestConfig``, ``PrepareConfig``, ``TrainConfig``,
``CompareConfig``, ``PromoteConfig``, ``ModelsConfig``, ``DemoConfig``, ``BatchScoringConfig``,
``ServingConfig``. So each subcommand takes ``--config FILE`` (YAML; options given override it) and
``--print-config`` (the resolved config as YAML, then exit), and its ``--help`` lists every field with its
unit and default. The run then calls an importable function of the library with that config
(``synth.generate``, ``prepare.prepare``, ``train.train`` …), so tests and notebooks run exactly what users run.

Only the subcommand being run gets its options built: some configs live beside code that imports torch, so
``journey --help`` stays instant and ``journey SUB`` loads only what SUB needs.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from journey_model.core.resources import tune_malloc_for_children
from journey_model.core.settings import Settings
from journey_model.training.config import TRAIN_SETTINGS, TrainConfig
from pipelines.configs import (
    COMPARE_SECTIONS,
    CompareConfig,
    DemoConfig,
    ModelsConfig,
    MonitorConfig,
    PromoteConfig,
)
from serving.config import SETTINGS as SERVING_SETTINGS
from serving.config import ServingConfig

DEBUG_ENV = "JOURNEY_DEBUG"  # set to 1: errors end with their traceback, like --debug
TERMINATED_EXIT = 143  # 128 + SIGTERM, what a shell reports for a process SIGTERM ended


class Terminated(SystemExit):
    """Raised in the main thread by SIGTERM: unwinds like Ctrl-C, so MLflow runs end KILLED and partial outputs
    are cleaned up, then `journey` exits 143 saying what was interrupted. (Lightning keeps this handler: it
    calls it after its own, which only sets ``trainer.received_sigterm``.)"""

    def __init__(self) -> None:
        super().__init__(TERMINATED_EXIT)


def _raise_terminated(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one is enough: let the cleanup run
    raise Terminated()


def _interruption_line(command: str, error: BaseException, what: str) -> str:
    notes = [note for note in getattr(error, "__notes__", []) if note]
    return f"journey {command}: {what}" + (": " + "; ".join(notes) if notes else "")

# ------------------------------------------------------------------------------------------ settings
# Configs that live beside torch-importing code are imported only when their subcommand runs.


def _synth_settings() -> Settings:
    from journey_model.data.synth import SynthConfig

    return Settings(SynthConfig)


def _ingest_settings() -> Settings:
    from journey_model.data.ingest import IngestConfig

    return Settings(IngestConfig)


def _prepare_settings() -> Settings:
    from journey_model.data.prepare import PrepareConfig

    return Settings(PrepareConfig)


def _score_settings() -> Settings:
    from journey_model.inference.batch_scoring import BatchScoringConfig

    return Settings(BatchScoringConfig)


def _dashboard_settings() -> Settings:
    from dashboard.config import SETTINGS

    return SETTINGS


def _quiet_lightning(args: argparse.Namespace) -> None:
    """Lightning's import sets its loggers back to INFO (with a handler of its own): quiet them again."""
    if not getattr(args, "verbose", False):
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            logging.getLogger(name).setLevel(logging.WARNING)


# ------------------------------------------------------------------------------------------ runs


def _run_synth(args: argparse.Namespace, config: Any) -> int:
    from journey_model.data.synth import generate

    report = generate(config.out_dir, config.customers, config.seed, start=config.start, months=config.months,
                      chunk_customers=config.chunk_customers, progress=not args.quiet)
    print(report.summary())
    return 0


def _run_ingest(args: argparse.Namespace, config: Any) -> int:
    from journey_model.data.ingest import ingest

    report = ingest(config.inputs, config.mapping, config.out_dir, strict=config.strict, chunk_rows=config.chunk_rows,
                    progress=not args.quiet, max_reject_rate=config.max_reject_rate,
                    pseudonymise=config.pseudonymise)
    print(report.summary())
    return 0


def _run_prepare(args: argparse.Namespace, config: Any) -> int:
    if config.engine == "spark":  # pyspark (an optional extra) is imported only here
        from journey_model.data.prepare_spark import prepare_spark as prepare
    else:
        from journey_model.data.prepare import prepare

    print(prepare(config, overwrite=args.overwrite, progress=not args.quiet).summary())
    return 0


def _print_run(result) -> None:  # noqa: ANN001 - TrainResult, imported lazily
    print(f"{result.model_name} ({', '.join(result.tasks)}): {result.parameters:,} parameters, "
          f"{result.epochs} epochs, {result.seconds:.0f} s")
    if result.stop_reason:
        print(f"  {result.stop_reason}")
    if result.validation_value is not None:
        print(f"  {'best ' + result.validation_metric:<32} {result.validation_value:.4f}")
    for key, value in sorted(result.test_metrics.items()):
        print(f"  {key:<32} {value:.4f}")
    if result.run_id:
        print(f"MLflow run {result.run_id}; model {result.model_uri}")
    if result.registered_version:
        print(f"registered {result.registered_model} v{result.registered_version} "
              f"(promote: journey promote --name {result.registered_model})")


def _run_train(args: argparse.Namespace, config: TrainConfig) -> int:
    from journey_model.tracking.runs import tracked_train

    _quiet_lightning(args)
    result = tracked_train(config, metrics_out=args.metrics_out, predictions_out=args.predictions_out)
    if result.global_rank == 0:  # DDP worker processes run the same command; one of them reports
        _print_run(result)
    return 0


def _run_compare(args: argparse.Namespace, config: CompareConfig) -> int:
    from journey_model.data.preprocessing import Preprocessor
    from pipelines.compare import compare_models, metric_keys_for

    _quiet_lightning(args)
    train = config.train_config()
    if not train.tasks:
        raise ValueError("journey compare needs --task (models are compared on the same tasks)")
    keys = config.metrics or metric_keys_for(train.tasks, Preprocessor.load(train.data_dir).outcome_names)
    comparison = compare_models(config.models, train, metric_keys=keys, predictions_dir=args.predictions_out)
    print(comparison.table(keys))
    if config.comparison_json:
        comparison.save(config.comparison_json)
    if comparison.parent_run_id:
        print(f"MLflow parent run {comparison.parent_run_id}")
    if comparison.registered_version:
        print(f"best model registered as {comparison.registered_model} v{comparison.registered_version} "
              f"(promote: journey promote --name {comparison.registered_model})")
    return 0


def _run_promote(args: argparse.Namespace, config: PromoteConfig) -> int:
    from mlflow.tracking import MlflowClient

    from journey_model.tracking.registry import promote
    from journey_model.tracking.store import quiet_mlflow_output, registered_model_name, resolve_tracking_uri

    name = config.name or registered_model_name(config.dataset, config.task)
    quiet_mlflow_output()
    uri = resolve_tracking_uri(config.tracking_uri)
    decision = promote(name, config.version, alias=config.alias, client=MlflowClient(uri, registry_uri=uri), by=config.by)
    print(decision.message)
    return 0


def _run_models(args: argparse.Namespace, config: ModelsConfig) -> int:
    from journey_model.models.registry import MODELS

    for name, entry in MODELS.items():
        tasks = sorted(t.value for t in entry.model_class.supported_tasks)
        if config.task is None or config.task in tasks:
            print(f"{name:<15} {entry.description}\n{'':<15} tasks: {', '.join(tasks)}")
    return 0


def _run_demo(args: argparse.Namespace, config: DemoConfig) -> int:
    from pipelines.demo import run_demo

    _quiet_lightning(args)
    run_demo(Path(config.workdir), customers=config.customers, seed=config.seed, max_epochs=config.max_epochs,
             progress=not args.quiet, models=config.models, tracking_uri=config.tracking_uri)
    return 0


def _run_score(args: argparse.Namespace, config: Any) -> int:
    from journey_model.inference.batch_scoring import score_batch
    from journey_model.tracking.loading import open_model

    print(score_batch(config, overwrite=args.overwrite, opener=open_model).summary())
    return 0


def _run_monitor(args: argparse.Namespace, config: MonitorConfig) -> int:
    from pipelines.monitor import run_monitor

    result = run_monitor(config)
    print(f"journey monitor: {result.report.summary()}\n  report {result.json_path}, figure {result.png_path}"
          + (f", MLflow run {result.run_id}" if result.run_id else ""))
    return result.report.exit_status


def _run_serve(args: argparse.Namespace, config: ServingConfig) -> int:
    model = config.model_uri
    if "://" not in model and not model.startswith(("models:/", "runs:/", "m-")) and not Path(model).is_dir():
        raise FileNotFoundError(f"--model {model!r}: no such bundle folder, and not an MLflow model URI")
    os.environ.update(config.to_env())
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    # glibc returning large tensor buffers to the OS after every free costs page faults on each forward pass.
    tune_malloc_for_children()
    command = [sys.executable, "-m", "bentoml", "serve", "serving.service:JourneyService",
               "--host", config.host, "--port", str(config.port), "--timeout-keep-alive", str(config.keep_alive)]
    if config.timeout is not None:
        command += ["--timeout", str(config.timeout)]
    sys.stdout.flush()
    os.execv(sys.executable, command)  # the server takes this process's PID: stop it with SIGTERM to that PID
    return 0  # not reached


def _run_dashboard(args: argparse.Namespace, config: Any) -> int:
    from dashboard.launch import exec_dashboard

    exec_dashboard(config)  # the Streamlit server takes this process's PID: stop it with SIGTERM to that PID
    return 0  # not reached


# ------------------------------------------------------------------------------------------ options that are no config
# What to do with output already there, and where to put a run's metrics: per invocation, not part of a job's
# config (a config file that says "overwrite" would wipe results on every rerun).


def _add_overwrite(help: str) -> Callable[[argparse.ArgumentParser], None]:
    def add(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--overwrite", action="store_true", help=help)

    return add


def _add_metrics_out(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics-out", help="write the test metrics (and run facts, per-epoch history with "
                        "seconds per epoch) here as JSON (default: none)")
    parser.add_argument("--predictions-out", metavar="FILE",
                        help="write each test example's predictions here as Parquet: customer_id, cutoff, "
                        "p_<outcome> (calibrated), next-event / next-item top-10 ids and probabilities; no event "
                        "values (default: none)")


def _add_predictions_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--predictions-out", metavar="DIR",
                        help="write each trained model's test predictions as DIR/<model>.parquet (the columns of "
                        "`journey train --predictions-out`) (default: none)")


def _no_extra(parser: argparse.ArgumentParser) -> None:
    return None


# ------------------------------------------------------------------------------------------ the command


@dataclass(frozen=True)
class Subcommand:
    """One `journey` subcommand: its help, its settings (built on demand) and what runs it."""

    help: str
    description: str
    settings: Callable[[], Settings]
    run: Callable[[argparse.Namespace, Any], int]
    extra: Callable[[argparse.ArgumentParser], None] = _no_extra


SUBCOMMANDS: dict[str, Subcommand] = {
    "synth": Subcommand(
        "write the built-in synthetic retail-bank event log (the embedded default)",
        "Write synthetic customer journeys with planted, order- and time-dependent outcomes: events/, "
        "labels.parquet, ground_truth.parquet, dataset.yaml.",
        _synth_settings, _run_synth),
    "ingest": Subcommand(
        "CSV / Parquet / JSON Lines events -> canonical event Parquet",
        "Map, parse and validate raw event files into canonical Parquet. Invalid rows are counted and written to "
        "DIR/rejects/; --strict turns the first one into an error.",
        _ingest_settings, _run_ingest),
    "prepare": Subcommand(
        "canonical events -> point-in-time sequence datasets (train/val/test)",
        "Build (customer, cut-off) examples from events strictly before each cut-off, with labels from the window "
        "after it, vocabularies, time buckets and splits.",
        _prepare_settings, _run_prepare, _add_overwrite("rebuild an existing complete dataset")),
    "train": Subcommand(
        "train one model on a prepared dataset, evaluate, record it in MLflow",
        "Train any model of the zoo on any task it supports with Lightning (accelerator auto, bf16 on GPU, DDP "
        "with --devices/--num-nodes), early stopping, the best checkpoint restored and tested; record params, "
        "metrics, plots and the pyfunc model in MLflow and register it as journey-<dataset>-<task>. Options "
        "override those of --config.",
        lambda: TRAIN_SETTINGS, _run_train, _add_metrics_out),
    "compare": Subcommand(
        "train several models with the same budget; one table, one MLflow parent run",
        "Train each model of --models on the same prepared data, tasks and budget (each a nested MLflow run under "
        "one parent run), print and log one table (test metrics, the validation metric, training time, events/s, "
        "parameters) and register the best model by the validation metric. Options are those of `journey train`.",
        lambda: Settings(CompareConfig, COMPARE_SECTIONS, exclude=("model",)), _run_compare, _add_predictions_dir),
    "promote": Subcommand(
        "move the champion alias to a model version only if it is better",
        "Compare a registered version (default: the newest) with the current @champion on the validation metric "
        "both were selected on; move the alias only when the candidate is strictly better, and say so either way.",
        lambda: Settings(PromoteConfig), _run_promote),
    "models": Subcommand(
        "list the model zoo and the tasks each model answers", "List the model zoo and the tasks each model answers.",
        lambda: Settings(ModelsConfig), _run_models),
    "demo": Subcommand(
        "the main job end to end on built-in synthetic data (no server, no download)",
        "synth -> prepare -> train and compare ATRank with the baselines (MLflow runs) -> register the best and "
        "promote it if it beats the champion -> batch-score the held-back month -> print the table and the MLflow "
        "UI command. Everything goes into WORKDIR.",
        lambda: Settings(DemoConfig), _run_demo),
    "score": Subcommand(
        "batch scoring: every customer of an event folder -> Parquet scores",
        "Stream customers from canonical event Parquet, score them with a model (bundle folder or MLflow URI) and "
        "write Parquet parts (customer_id, cutoff, model version, scores, top-k next events, top reasons). Parts "
        "appear atomically; an interrupted job resumes.",
        _score_settings, _run_score, _add_overwrite("replace scores (or an unfinished job) already in --out")),
    "monitor": Subcommand(
        "stability of a scoring run against a reference one (PSI); exit status 3 above the threshold",
        "PSI of each score (eligible customers, the reference's quantile bins), of the input length and of the "
        "event-type mix; OOV and missing-field rates against the model's vocabularies; volumes, eligible and "
        "flagged shares. Writes JSON (read by the dashboard's Stability view) and a PNG; --track logs both to "
        "MLflow. Exits 3 when any PSI is above --threshold, naming which.",
        lambda: Settings(MonitorConfig), _run_monitor),
    "serve": Subcommand(
        "start the online prediction API (BentoML) on a host and port",
        "Serve POST /predict, /explain, /update, /forget, GET /metadata, /livez, /readyz and the OpenAPI document "
        "(/docs.json) with `bentoml serve serving.service:JourneyService`. Settings come from JOURNEY_* (and "
        "BentoML's BENTOML_HOST / _PORT / _TIMEOUT) variables, then --config, then the options; the server gets "
        "them as those variables.",
        lambda: SERVING_SETTINGS, _run_serve),
    "dashboard": Subcommand(
        "start the analysts' dashboard (Streamlit) over a workdir's scores, events and registry",
        "Serve the Portfolio, Customer, Models and Stability views (Streamlit, headless) over WORKDIR: batch-scoring "
        "output (scores*/), the events it scored, the MLflow registry (mlflow.db) and monitoring reports "
        "(monitoring/*.json). Run `journey demo` first.",
        _dashboard_settings, _run_dashboard),
}


def _command_in(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv``: the first word that is not an option (global options take no value)."""
    return next((token for token in argv if not token.startswith("-")), None)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The `journey` parser; only the subcommand named in ``argv`` gets its options (``None``: every one)."""
    parser = argparse.ArgumentParser(
        prog="journey",
        description="Journey: customer-journey behaviour modelling for finance (ATRank and seq2seq models). "
        "Every subcommand takes --config FILE (YAML) and --print-config.",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true",
                        help=f"show the traceback of an error (also {DEBUG_ENV}=1) instead of one line")
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND")
    chosen = None if argv is None else _command_in(argv)
    for name, command in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.description)
        if argv is None or name == chosen:
            settings = command.settings()
            settings.add_arguments(p)
            command.extra(p)
            p.set_defaults(func=command.run, settings=settings)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:  # the `journey` command: the processes it starts (DDP, scoring workers) get the malloc tuning
        tune_malloc_for_children()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("journey_model").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    if not args.verbose:  # Lightning's hardware banner and tips are noise in a pipeline's output
        logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
        logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    # signal handlers belong to the main thread; the previous one comes back when main returns (tests call it)
    previous = signal.signal(signal.SIGTERM, _raise_terminated) \
        if threading.current_thread() is threading.main_thread() else None
    try:
        return _run(args, parser)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    settings: Settings = args.settings
    try:
        fixed = {"progress": False} if args.quiet and "progress" in settings.fields else {}
        config = settings.from_args(args, **fixed)
        if args.print_config:
            sys.stdout.write(settings.to_yaml(config))
            return 0
        return int(args.func(args, config) or 0)
    except KeyboardInterrupt as error:
        if _debug(args):
            raise
        print(_interruption_line(args.command, error, "interrupted (Ctrl-C)"), file=sys.stderr)
        return 130
    except SystemExit as error:  # ours, or Lightning's SIGTERMException (a SystemExit that would exit 0)
        if not (isinstance(error, Terminated) or type(error).__name__ == "SIGTERMException"):
            raise
        if _debug(args):
            raise
        print(_interruption_line(args.command, error, "terminated by SIGTERM"), file=sys.stderr)
        return TERMINATED_EXIT
    except Exception as error:  # every failure: one line on stderr and a non-zero exit, never a traceback
        if _debug(args):
            raise
        print(f"journey {args.command}: error: {error_line(error)}", file=sys.stderr)
        return 1


def _debug(args: argparse.Namespace) -> bool:
    return bool(args.debug or args.verbose or os.environ.get(DEBUG_ENV, "").lower() in ("1", "true", "yes"))


def error_line(error: BaseException) -> str:
    """One line saying what went wrong: our errors (ValueErrors with a clear message) as they are; anything
    else with its kind (``PermissionError: [Errno 13] Permission denied: 'out/x'``), a hint when it is a
    crash rather than a mistake."""
    text = " ".join(str(error).split())
    if isinstance(error, ValueError | FileNotFoundError) and text:
        return text
    if isinstance(error, OSError):  # PermissionError, a full disk ...: the message names the path
        return f"{type(error).__name__}: {text}"
    if isinstance(error, RecursionError):
        return f"RecursionError: {text} (input nested too deeply?); run with --debug for the traceback"
    return f"{type(error).__name__}: {text or 'no message'} (run with --debug for the traceback)"


if __name__ == "__main__":
    sys.exit(main())

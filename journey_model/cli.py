"""`journey`: the one console command in front of Journey, with a subcommand per pipeline step.

Each subcommand parses its options and calls an importable function of the library (``synth.generate``,
``ingest.ingest``, ``prepare.prepare`` …), so tests and notebooks run exactly what users run. Heavy
imports happen inside the subcommand, which keeps ``journey --help`` instant.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

DEFAULT_WORKDIR = Path("work")


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write the built-in synthetic retail-bank event log (the embedded default)",
                       description="Write synthetic customer journeys with planted, order- and time-dependent "
                       "outcomes: events/, labels.parquet, ground_truth.parquet, dataset.yaml.")
    p.add_argument("--customers", type=int, default=5000, help="number of customers (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed -> same data (default: %(default)s)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--start", default="2024-01-01", help="first day of the simulated period (default: %(default)s)")
    p.add_argument("--months", type=int, default=12, help="length of the simulated period in months (default: %(default)s)")
    p.add_argument("--chunk-customers", type=int, default=20_000, help="customers per written part (default: %(default)s)")
    p.set_defaults(func=_run_synth)


def _run_synth(args: argparse.Namespace) -> int:
    from journey_model.synth import generate

    report = generate(args.out, args.customers, args.seed, start=args.start, months=args.months,
                      chunk_customers=args.chunk_customers, progress=not args.quiet)
    print(report.summary())
    return 0


def _add_ingest(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ingest", help="CSV / Parquet / JSON Lines events -> canonical event Parquet",
                       description="Map, parse and validate raw event files into canonical Parquet. Invalid rows "
                       "are counted and written to DIR/rejects/; --strict turns the first one into an error.")
    p.add_argument("inputs", nargs="+", help="input files (CSV, .parquet, .jsonl)")
    p.add_argument("--mapping", required=True,
                   help="mapping YAML (column mapping, timestamp format and zone, dataset config); "
                   "ready ones: berka, berka_loans, taobao (a name picks journey_model/configs/NAME.yaml)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--strict", action="store_true", help="fail on the first invalid row instead of rejecting it")
    p.add_argument("--chunk-rows", type=int, default=200_000, help="rows read per chunk (default: %(default)s)")
    p.set_defaults(func=_run_ingest)


def _resolve_mapping(name: str) -> str:
    path = Path(name)
    if path.exists():
        return str(path)
    packaged = Path(__file__).parent / "configs" / f"{name}.yaml"
    if packaged.exists():
        return str(packaged)
    raise SystemExit(f"journey ingest: mapping {name!r} is neither a file nor a packaged mapping ({packaged})")


def _run_ingest(args: argparse.Namespace) -> int:
    from journey_model.ingest import ingest

    report = ingest(args.inputs, _resolve_mapping(args.mapping), args.out, strict=args.strict,
                    chunk_rows=args.chunk_rows, progress=not args.quiet)
    print(report.summary())
    return 0


def _add_prepare(sub: argparse._SubParsersAction) -> None:
    from journey_model.preprocessing import PreprocessingConfig

    d = PreprocessingConfig()
    p = sub.add_parser("prepare", help="canonical events -> point-in-time sequence datasets (train/val/test)",
                       description="Build (customer, cut-off) examples from events strictly before each cut-off, "
                       "with labels from the window after it, vocabularies, time buckets and splits.")
    p.add_argument("--events", required=True, help="folder with events/ and dataset.yaml (from ingest or synth)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--cutoffs", default="labels",
                   help="'labels' (cut-offs from a labels table), 'every-event' (each prefix predicts the next "
                   "event) or comma-separated ISO dates (default: %(default)s)")
    p.add_argument("--labels", help="labels table (default: EVENTS/labels.parquet)")
    p.add_argument("--label-horizon-days", type=float,
                   help="how many days after the cut-off the labels table's targets look (default: from "
                   "labels.json beside the table, else 0)")
    p.add_argument("--target", action="append", default=[], metavar="NAME=EVENT_TYPE@DAYS",
                   help="derive a binary target: EVENT_TYPE happens within DAYS after the cut-off (repeatable)")
    p.add_argument("--forecast-horizon-days", type=float, default=30.0,
                   help="window of the next-K forecast target, days (default: %(default)s)")
    p.add_argument("--split", choices=["time", "customer"], default="time",
                   help="out-of-time or by-customer split (default: %(default)s)")
    p.add_argument("--val-from", help="time split: first validation cut-off date (default: second-last cut-off)")
    p.add_argument("--test-from", help="time split: first test cut-off date (default: last cut-off)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="customer split: validation share (default: %(default)s)")
    p.add_argument("--test-fraction", type=float, default=0.1, help="customer split: test share (default: %(default)s)")
    p.add_argument("--max-len", type=int, default=d.max_len, help="most recent events kept per example (default: %(default)s)")
    p.add_argument("--min-count", type=int, default=d.min_count, help="vocabulary min count; rarer -> <oov> (default: %(default)s)")
    p.add_argument("--max-vocab-size", type=int, default=None, help="cap per categorical field (default: none)")
    p.add_argument("--time-unit", default=d.time_unit, help="unit of time-gap buckets (default: %(default)s)")
    p.add_argument("--time-buckets", type=int, default=d.num_time_buckets, help="log2 time buckets (default: %(default)s)")
    p.add_argument("--forecast-steps", type=int, default=d.forecast_steps, help="K of the forecast target (default: %(default)s)")
    p.add_argument("--min-history", type=int, default=1, help="drop examples with fewer input events (default: %(default)s)")
    p.add_argument("--max-examples-per-customer", type=int, help="every-event: keep the most recent N cut-offs")
    p.add_argument("--events-per-partition", type=int, default=2_000_000,
                   help="spill partition size; bounds peak memory (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="rebuild an existing complete dataset")
    p.set_defaults(func=_run_prepare)


def prepare_config_from_args(args: argparse.Namespace):  # noqa: ANN201 - PrepareConfig, imported lazily
    from journey_model.prepare import PrepareConfig, PrepareError
    from journey_model.preprocessing import PreprocessingConfig

    targets = {}
    for spec in args.target:
        try:
            name, rest = spec.split("=", 1)
            event_type, days = rest.rsplit("@", 1)
            targets[name] = [event_type, float(days)]
        except ValueError as error:
            raise PrepareError(f"--target {spec!r}: expected NAME=EVENT_TYPE@DAYS, e.g. churn=account_close@30") from error
    strategy, dates = args.cutoffs, []
    if strategy not in ("labels", "every-event"):
        strategy, dates = "dates", [d.strip() for d in args.cutoffs.split(",") if d.strip()]
    return PrepareConfig(
        events_dir=args.events, out_dir=args.out, cutoff_strategy=strategy, cutoff_dates=dates,
        labels_path=args.labels, label_horizon_days=args.label_horizon_days, horizon_targets=targets,
        forecast_horizon_days=args.forecast_horizon_days, min_history=args.min_history,
        max_examples_per_customer=args.max_examples_per_customer, split=args.split, val_from=args.val_from,
        test_from=args.test_from, val_fraction=args.val_fraction, test_fraction=args.test_fraction,
        events_per_partition=args.events_per_partition,
        preprocessing=PreprocessingConfig(
            max_len=args.max_len, min_count=args.min_count, max_vocab_size=args.max_vocab_size,
            time_unit=args.time_unit, num_time_buckets=args.time_buckets, forecast_steps=args.forecast_steps,
        ),
    )


def _run_prepare(args: argparse.Namespace) -> int:
    from journey_model.prepare import prepare

    report = prepare(prepare_config_from_args(args), overwrite=args.overwrite, progress=not args.quiet)
    print(report.summary())
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    from journey_model.config import add_config_arguments

    p = sub.add_parser("train", help="train one model on a prepared dataset, evaluate, record it in MLflow",
                       description="Train any model of the zoo on any task it supports with Lightning "
                       "(accelerator auto, bf16 on GPU, DDP with --devices/--num-nodes), early stopping, the best "
                       "checkpoint restored and tested; record params, metrics, plots and the pyfunc model in MLflow "
                       "and register it as journey-<dataset>-<task>. Options override those of --config.")
    add_config_arguments(p)
    p.add_argument("--metrics-out", help="write the test metrics (and run facts) here as JSON (default: none)")
    p.set_defaults(func=_run_train)


def _quiet_lightning(args: argparse.Namespace) -> None:
    """Lightning's import sets its loggers back to INFO (with a handler of its own): quiet them again."""
    if not getattr(args, "verbose", False):
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            logging.getLogger(name).setLevel(logging.WARNING)


def train_config_from_args(args: argparse.Namespace, **fixed: object):  # noqa: ANN201 - TrainConfig, lazily
    from journey_model.config import config_from_args

    if getattr(args, "quiet", False):
        fixed.setdefault("progress", False)
    return config_from_args(args, **fixed)


def _print_run(result) -> None:  # noqa: ANN001 - TrainResult, imported lazily
    print(f"{result.model_name} ({', '.join(result.tasks)}): {result.parameters:,} parameters, "
          f"{result.epochs} epochs, {result.seconds:.0f} s")
    if result.validation_value is not None:
        print(f"  {'best ' + result.validation_metric:<32} {result.validation_value:.4f}")
    for key, value in sorted(result.test_metrics.items()):
        print(f"  {key:<32} {value:.4f}")
    if result.run_id:
        print(f"MLflow run {result.run_id}; model {result.model_uri}")
    if result.registered_version:
        print(f"registered {result.registered_model} v{result.registered_version} "
              f"(promote: journey promote --name {result.registered_model})")


def _run_train(args: argparse.Namespace) -> int:
    from journey_model.training import train

    _quiet_lightning(args)
    result = train(train_config_from_args(args), metrics_out=args.metrics_out)
    if result.global_rank == 0:  # DDP worker processes run the same command; one of them reports
        _print_run(result)
    return 0


def _add_compare(sub: argparse._SubParsersAction) -> None:
    from journey_model.config import add_config_arguments

    p = sub.add_parser("compare", help="train several models with the same budget; one table, one MLflow parent run",
                       description="Train each model of --models on the same prepared data, tasks and budget (each "
                       "a nested MLflow run under one parent run), print and log one table (test metrics, the "
                       "validation metric, training time, events/s, parameters) and register the best model by "
                       "the validation metric. Options are those of `journey train`.")
    p.add_argument("--models", default="atrank,gru-bahdanau,lstm-luong,transformer,bag,markov",
                   help="comma-separated model names (default: %(default)s)")
    p.add_argument("--metrics", help="comma-separated test-metric columns (default: per task, e.g. auc/<outcome>)")
    p.add_argument("--json", dest="comparison_json", help="also write the table as JSON here")
    add_config_arguments(p, exclude=("model",))
    p.set_defaults(func=_run_compare)


def _run_compare(args: argparse.Namespace) -> int:
    from journey_model.compare import compare_models, metric_keys_for
    from journey_model.preprocessing import Preprocessor

    _quiet_lightning(args)
    config = train_config_from_args(args)
    if not config.tasks:
        raise ValueError("journey compare needs --task (models are compared on the same tasks)")
    keys = [k.strip() for k in args.metrics.split(",")] if args.metrics else metric_keys_for(
        config.tasks, Preprocessor.load(config.data_dir).outcome_names)
    comparison = compare_models([m.strip() for m in args.models.split(",") if m.strip()], config, metric_keys=keys)
    print(comparison.table(keys))
    if args.comparison_json:
        comparison.save(args.comparison_json)
    if comparison.parent_run_id:
        print(f"MLflow parent run {comparison.parent_run_id}")
    if comparison.registered_version:
        print(f"best model registered as {comparison.registered_model} v{comparison.registered_version} "
              f"(promote: journey promote --name {comparison.registered_model})")
    return 0


def _add_promote(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("promote", help="move the champion alias to a model version only if it is better",
                       description="Compare a registered version (default: the newest) with the current "
                       "@champion on the validation metric both were selected on; move the alias only when the "
                       "candidate is strictly better, and say so either way.")
    p.add_argument("--name", help="registered model, e.g. journey-synth_bank-outcome (or give --dataset and --task)")
    p.add_argument("--dataset", help="dataset name (DatasetConfig.name), with --task")
    p.add_argument("--task", help="task label, e.g. outcome or next_event+next_item, with --dataset")
    p.add_argument("--version", help="candidate version (default: the newest)")
    p.add_argument("--alias", default="champion", help="alias to move (default: %(default)s)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else "
                   "sqlite:///work/mlflow.db)")
    p.set_defaults(func=_run_promote)


def _run_promote(args: argparse.Namespace) -> int:
    from mlflow.tracking import MlflowClient

    from journey_model.model_registry import promote
    from journey_model.pyfunc import registered_model_name
    from journey_model.tracking import quiet_mlflow_output, resolve_tracking_uri

    if not args.name and not (args.dataset and args.task):
        raise ValueError("give --name, or --dataset and --task")
    name = args.name or registered_model_name(args.dataset, args.task)
    quiet_mlflow_output()
    client = MlflowClient(resolve_tracking_uri(args.tracking_uri), registry_uri=resolve_tracking_uri(args.tracking_uri))
    decision = promote(name, args.version, alias=args.alias, client=client)
    print(decision.message)
    return 0


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the model zoo and the tasks each model answers")
    p.set_defaults(func=_run_models)


def _run_models(args: argparse.Namespace) -> int:
    from journey_model.models.registry import MODELS

    for name, entry in MODELS.items():
        tasks = ", ".join(sorted(t.value for t in entry.model_class.supported_tasks))
        print(f"{name:<15} {entry.description}\n{'':<15} tasks: {tasks}")
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the main job end to end on built-in synthetic data (no server, no download)",
                       description="synth -> prepare -> train and compare ATRank with the baselines (MLflow runs) -> "
                       "register the best and promote it if it beats the champion -> (batch scoring hook) -> "
                       "print the table and the MLflow UI command. Everything goes into WORKDIR.")
    p.add_argument("--workdir", default=str(DEFAULT_WORKDIR), help="where data, runs, results and the MLflow store "
                   "(mlflow.db, mlartifacts/) go (default: %(default)s)")
    p.add_argument("--customers", type=int, default=5000, help="synthetic customers (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed (default: %(default)s)")
    p.add_argument("--max-epochs", type=int, default=5, help="epochs at most per model (default: %(default)s)")
    p.add_argument("--models", default="atrank,gru-bahdanau,lstm-luong,transformer,bag,markov",
                   help="comma-separated models to compare (default: %(default)s)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else "
                   "sqlite:///WORKDIR/mlflow.db)")
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from journey_model.demo import run_demo

    _quiet_lightning(args)
    run_demo(Path(args.workdir), customers=args.customers, seed=args.seed, max_epochs=args.max_epochs,
             progress=not args.quiet, models=[m.strip() for m in args.models.split(",") if m.strip()],
             tracking_uri=args.tracking_uri)
    return 0


def _add_score(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="batch scoring: every customer of an event folder -> Parquet scores",
                       description="Stream customers from canonical event Parquet, score them with a model (bundle "
                       "folder or MLflow URI) and write Parquet parts (customer_id, cutoff, model version, scores, "
                       "top-k next events, top reasons). Parts appear atomically; an interrupted job resumes.")
    p.add_argument("--model", required=True, help="model bundle folder or MLflow model URI (models:/NAME@champion)")
    p.add_argument("--events", required=True, help="folder with events/part-*.parquet (from ingest or synth)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--cutoff", default="now",
                   help="score as of this ISO date/time (UTC if no offset), 'now' (job start; kept on resume) or "
                   "'last-event' (just after each customer's last event) (default: %(default)s)")
    p.add_argument("--engine", choices=["local", "spark"], default="local",
                   help="local: streaming in this process; spark: applyInPandas on a Spark session (default: %(default)s)")
    p.add_argument("--top-reasons", type=int, default=3, help="reasons per task in the output; 0 = none (default: %(default)s)")
    p.add_argument("--chunk-customers", type=int, default=1024, help="customers scored together (default: %(default)s)")
    p.add_argument("--events-per-partition", type=int, default=2_000_000,
                   help="events per spill partition / Spark group; bounds memory (default: %(default)s)")
    p.add_argument("--spark-master", help="Spark master when no session runs (default: local[2])")
    p.add_argument("--torch-threads", type=int, default=1,
                   help="intra-op threads of the local engine; 0 = all cores. One was fastest on a shared 2-core "
                   "machine; raise it on a dedicated many-core one (Spark tasks use 1) (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace scores (or an unfinished job) already in --out")
    p.set_defaults(func=_run_score)


def _run_score(args: argparse.Namespace) -> int:
    from journey_model.batch_scoring import BatchScoringConfig, score_batch

    config = BatchScoringConfig(
        model=args.model, events_dir=args.events, out_dir=args.out, cutoff=args.cutoff, engine=args.engine,
        top_reasons=args.top_reasons, chunk_customers=args.chunk_customers,
        events_per_partition=args.events_per_partition, spark_master=args.spark_master,
        torch_threads=args.torch_threads, progress=not args.quiet,
    )
    print(score_batch(config, overwrite=args.overwrite).summary())
    return 0


def _add_serve(sub: argparse._SubParsersAction) -> None:
    from serving.config import DEFAULT_MODEL_URI, ServingConfig

    d = ServingConfig()
    p = sub.add_parser("serve", help="start the online prediction API (BentoML) on a host and port",
                       description="Serve POST /predict, /explain, /update, /forget, GET /metadata, /livez, /readyz "
                       "and the OpenAPI document (/docs.json) with `bentoml serve serving.service:JourneyService`. "
                       "Options become JOURNEY_* environment variables of the server.")
    p.add_argument("--model", default=None,
                   help=f"model bundle folder or MLflow model URI (default: $JOURNEY_MODEL_URI, else {DEFAULT_MODEL_URI})")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=3000, help="port (default: %(default)s)")
    p.add_argument("--max-customers", type=int, default=d.max_customers_per_request,
                   help="customers per request at most (default: %(default)s)")
    p.add_argument("--max-events", type=int, default=d.max_events_per_customer,
                   help="events per customer per request at most (default: %(default)s)")
    p.add_argument("--max-batch", type=int, default=d.max_batch_customers,
                   help="customers per forward pass across concurrent requests (default: %(default)s)")
    p.add_argument("--batch-wait-ms", type=float, default=d.max_batch_wait_ms,
                   help="extra wait for a batch to fill, ms (default: %(default)s)")
    p.add_argument("--state-customers", type=int, default=d.state_max_customers,
                   help="incremental states held at most, least recently used evicted (default: %(default)s)")
    p.add_argument("--torch-threads", type=int, default=d.torch_threads,
                   help="intra-op threads per worker (default: %(default)s)")
    p.add_argument("--workers", type=int, default=d.workers,
                   help="worker processes, each with the model and its own batcher and incremental state "
                   "(default: %(default)s)")
    p.set_defaults(func=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    import os

    from serving.config import ServingConfig

    model = args.model or os.environ.get("JOURNEY_MODEL_URI") or ServingConfig().model_uri
    if "://" not in model and not model.startswith(("models:/", "runs:/", "m-")) and not Path(model).is_dir():
        raise FileNotFoundError(f"--model {model!r}: no such bundle folder, and not an MLflow model URI")
    config = ServingConfig(model_uri=model, max_customers_per_request=args.max_customers,
                           max_events_per_customer=args.max_events, max_batch_customers=args.max_batch,
                           max_batch_wait_ms=args.batch_wait_ms, state_max_customers=args.state_customers,
                           torch_threads=args.torch_threads, workers=args.workers)
    os.environ.update(config.to_env())
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    # glibc returning large tensor buffers to the OS after every free costs page faults on each forward pass.
    os.environ.setdefault("MALLOC_MMAP_MAX_", "0")
    os.environ.setdefault("MALLOC_TRIM_THRESHOLD_", "68719476736")
    command = [sys.executable, "-m", "bentoml", "serve", "serving.service:JourneyService",
               "--host", args.host, "--port", str(args.port)]
    sys.stdout.flush()
    os.execv(sys.executable, command)  # the server takes this process's PID: stop it with SIGTERM to that PID
    return 0  # not reached


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="journey",
        description="Journey: customer-journey behaviour modelling for finance (ATRank and seq2seq models).",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND")
    for add in (_add_synth, _add_ingest, _add_prepare, _add_train, _add_compare, _add_promote, _add_models, _add_demo,
                _add_score, _add_serve):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
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
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as error:  # our errors are ValueErrors with a clear message
        if args.verbose:
            raise
        print(f"journey {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

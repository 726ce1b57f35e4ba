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
    p = sub.add_parser("train", help="train one model on a prepared dataset, evaluate on its test split",
                       description="Train any model of the zoo on any task it supports; writes the test metrics "
                       "as JSON with --metrics-out. Options given here override those of --config.")
    p.add_argument("--data", required=True, help="folder written by `journey prepare`")
    p.add_argument("--model", default=None, help="model name (default: atrank); see `journey models`")
    p.add_argument("--task", default=None,
                   help="comma-separated tasks: outcome, next_event, next_item, forecast (default: all the model "
                   "and data support)")
    p.add_argument("--config", help="YAML file with TrainConfig fields and a `model_overrides` mapping")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="model config field, e.g. hidden_size=64 or positional_encoding=learned (repeatable)")
    p.add_argument("--max-epochs", type=int, help="epochs at most (default: 10)")
    p.add_argument("--batch-size", type=int, help="customers per batch (default: 64)")
    p.add_argument("--lr", type=float, help="learning rate (default: the model config's)")
    p.add_argument("--patience", type=int, help="early-stopping patience in validation epochs (default: 3)")
    p.add_argument("--seed", type=int, help="random seed (default: 0)")
    p.add_argument("--accelerator", help="cpu, gpu or auto (default: auto)")
    p.add_argument("--devices", help="devices per node (default: 1)")
    p.add_argument("--output-dir", help="checkpoint folder root (default: work/runs)")
    p.add_argument("--metrics-out", help="write the test metrics (and run facts) here as JSON")
    p.set_defaults(func=_run_train)


def _parse_value(text: str) -> object:
    import yaml

    return yaml.safe_load(text)


def train_config_from_args(args: argparse.Namespace):  # noqa: ANN201 - TrainConfig, imported lazily
    import yaml

    from journey_model.training import TrainConfig

    values: dict = {}
    if args.config:
        values = yaml.safe_load(Path(args.config).read_text()) or {}
    overrides = dict(values.pop("model_overrides", {}) or {})
    for item in args.set:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected FIELD=VALUE")
        key, value = item.split("=", 1)
        overrides[key.strip()] = _parse_value(value)
    cli = {
        "model": args.model, "max_epochs": args.max_epochs, "batch_size": args.batch_size,
        "learning_rate": args.lr, "patience": args.patience, "seed": args.seed, "accelerator": args.accelerator,
        "devices": args.devices, "output_dir": args.output_dir,
        "tasks": args.task.split(",") if args.task else None,
    }
    values.update({k: v for k, v in cli.items() if v is not None})
    return TrainConfig(data_dir=args.data, model_overrides=overrides, progress=not args.quiet, **values)


def _run_train(args: argparse.Namespace) -> int:
    from journey_model.training import train

    result = train(train_config_from_args(args), metrics_out=args.metrics_out)
    print(f"{result.model_name} ({', '.join(result.tasks)}): {result.parameters:,} parameters, "
          f"{result.epochs} epochs, {result.seconds:.0f} s")
    for key, value in sorted(result.test_metrics.items()):
        print(f"  {key:<32} {value:.4f}")
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
                       description="synth -> prepare -> (train and compare models as they land) in WORKDIR.")
    p.add_argument("--workdir", default=str(DEFAULT_WORKDIR), help="where data, runs and results go (default: %(default)s)")
    p.add_argument("--customers", type=int, default=5000, help="synthetic customers (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed (default: %(default)s)")
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from journey_model.demo import run_demo

    run_demo(Path(args.workdir), customers=args.customers, seed=args.seed, progress=not args.quiet)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="journey",
        description="Journey: customer-journey behaviour modelling for finance (ATRank and seq2seq models).",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND")
    for add in (_add_synth, _add_ingest, _add_prepare, _add_train, _add_models, _add_demo):
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

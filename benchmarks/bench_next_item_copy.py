"""What copying the next item from the journey costs a training step (``next_item_copy`` on vs off).

One process, one torch thread, real batches from a prepared next-item dataset (``journey prepare`` output, e.g.
the Taobao k-core folder ``benchmarks/peers/bench_peers.py --workdir W`` leaves in ``W/taobao_prepared``). Each
model is built with copying off and on, alternately, ``--rounds`` times; a round times ``--steps`` training steps
(forward, next-item loss, backward, Adam) after three warm-up steps, as CPU seconds. The median per setting and
``os.getloadavg()`` are written to ``--out``.

    .venv/bin/python benchmarks/bench_next_item_copy.py work/peers_taobao_kcore_work/taobao_prepared
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from journey_model.models import build_model  # noqa: E402
from journey_model.training.datamodule import JourneyDataModule  # noqa: E402
from journey_model.training.losses import compute_losses  # noqa: E402

WIDTH = {"hidden_size": 64, "num_heads": 4, "field_dim": 16}  # bench_peers' common width


def ms_per_step(name: str, spec, batches: list, copy: bool) -> float:  # noqa: ANN001
    torch.manual_seed(0)
    model = build_model(name, spec, tasks=["next_item"], next_item_copy=copy, **WIDTH).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(batch) -> None:  # noqa: ANN001
        loss = compute_losses(model(batch), batch)["loss"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    for batch in batches[:3]:
        step(batch)
    start = time.process_time()
    for batch in batches:
        step(batch)
    return (time.process_time() - start) / len(batches) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prepared", type=Path, help="a prepared dataset with next-item targets")
    parser.add_argument("--models", nargs="+", default=["atrank", "gru-attn"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "next_item_copy_cost.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    data = JourneyDataModule(args.prepared, batch_size=args.batch_size)
    data.setup("fit")
    batches = [batch for _, batch in zip(range(args.steps), data.train_dataloader())]
    timings: dict[str, dict[str, list[float]]] = {}
    loads = [os.getloadavg()[0]]
    for name in args.models:
        for _ in range(args.rounds):
            for copy in (False, True):
                timings.setdefault(name, {}).setdefault(f"copy={copy}", []).append(
                    ms_per_step(name, data.feature_spec, batches, copy))
                loads.append(os.getloadavg()[0])
    summary = {name: {setting: statistics.median(values) for setting, values in per.items()}
               for name, per in timings.items()}
    for name, medians in summary.items():
        ratio = medians["copy=True"] / medians["copy=False"]
        print(f"{name}: {medians['copy=False']:.1f} ms/step without copying, {medians['copy=True']:.1f} with "
              f"(x{ratio:.3f}); rounds {timings[name]}")
    print(f"1-min load {min(loads):.1f}-{max(loads):.1f}")
    record = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "prepared": str(args.prepared),
              "batch_size": args.batch_size, "steps": len(batches), "rounds": args.rounds, "width": WIDTH,
              "torch_threads": 1, "ms_per_step": timings, "median_ms_per_step": summary,
              "loadavg_1min": [min(loads), max(loads)]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""RecBole peers (SASRec, GRU4Rec, BERT4Rec) on the exported next-item data; runs in .venvs/recbole.

Reads only the files of ``export.py recbole`` (``DATA/NAME/NAME.inter``, ``NAME.targets.tsv``, ``export.json``).
RecBole splits each customer's time-ordered interactions leave-one-out (``LS: valid_and_test``: last -> test,
second-last -> validation), which is Journey's leave-last-out; the script checks that RecBole's held-out test
and validation targets are exactly ``NAME.targets.tsv`` before training and records the check.

Metrics on the test split, full ranking over every item (no history masking, RecBole's sequential default):

* ``peer``: HR@10, NDCG@10, MRR@10 with the ``<oov>`` token never ranked and a test target that is ``<oov>``
  (an item Journey's vocabulary does not know) counted as a miss; ties counted fairly (expected value over the
  tied ranks). This is Journey's ``--unseen-as-miss`` definition (``journey_model.training.metrics.
  peer_ranking_metrics``), so the numbers compare one to one with Journey's ``test/hr_at_10/item`` etc.
* ``native``: RecBole's own evaluator (``hit@10``, ``ndcg@10``, ``mrr@10``), where ``<oov>`` is just another
  item — a model that puts the frequent ``<oov>`` token in its top 10 is credited for every unknown item, so these
  numbers are higher and are not comparable with Journey's.

Cost: per training epoch (``Trainer._train_epoch``, the pass over the training data, validation excluded) wall
seconds and CPU seconds (``time.process_time``), plus the whole run's CPU seconds from ``resource.getrusage``
(self + children) and ``os.getloadavg()`` at every epoch.

Usage (from the repository root)::

    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 .venvs/recbole/bin/python benchmarks/peers/run_recbole.py \\
        --data EXPORT_DIR --name taobao --model SASRec --seed 0 --epochs 3 --out result.json
"""

from __future__ import annotations

import os

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # RecBole reloads its best checkpoint with torch.load

import argparse
import json
import logging
import math
import resource
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch


def rusage_cpu() -> float:
    """CPU seconds (user + system) of this process and its finished children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def fair_topk_sums(scores: torch.Tensor, targets: torch.Tensor, k: int) -> tuple[float, float, float]:
    """Sums over rows of expected HR@k, NDCG@k and MRR@k when ties are broken uniformly at random."""
    target_scores = scores.gather(1, targets[:, None])
    finite = torch.isfinite(target_scores[:, 0])
    higher = (scores > target_scores).sum(1).double()
    ties = (scores == target_scores).sum(1).double()  # includes the target itself
    hr = ndcg = mrr = torch.zeros_like(higher)
    for rank in range(1, k + 1):  # P(rank) = 1/ties for rank in higher+1 .. higher+ties
        p = ((rank > higher) & (rank <= higher + ties)).double() / ties
        hr = hr + p
        ndcg = ndcg + p / math.log2(rank + 1)
        mrr = mrr + p / rank
    hr, ndcg, mrr = (v * finite for v in (hr, ndcg, mrr))
    return float(hr.sum()), float(ndcg.sum()), float(mrr.sum())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="export folder (holds NAME/)")
    parser.add_argument("--name", required=True)
    parser.add_argument("--model", required=True, choices=["SASRec", "GRU4Rec", "BERT4Rec"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--patience", type=int, default=3, help="epochs without validation NDCG@10 gain")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    began_wall, began_cpu = time.perf_counter(), rusage_cpu()
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.trainer import Trainer
    from recbole.utils import get_model, init_seed

    export = json.loads((args.data / args.name / "export.json").read_text())
    work = Path(tempfile.mkdtemp(prefix=f"recbole_{args.model}_"))
    os.chdir(work)  # RecBole writes log/ and saved/ under the working directory
    width = {"hidden_size": args.hidden, "embedding_size": args.hidden}
    if args.model in ("SASRec", "BERT4Rec"):
        width["inner_size"] = 4 * args.hidden
    config_dict = {
        "data_path": str(args.data.resolve()), "dataset": args.name,
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "MAX_ITEM_LIST_LENGTH": int(export["max_len"]), "normalize_all": False,
        "user_inter_num_interval": "[0,inf)", "item_inter_num_interval": "[0,inf)",
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
        "metrics": ["Hit", "NDCG", "MRR"], "topk": [10], "valid_metric": "NDCG@10",
        "epochs": args.epochs, "stopping_step": args.patience, "eval_step": 1,
        "train_batch_size": args.batch_size, "eval_batch_size": 256,
        "train_neg_sample_args": None, "loss_type": "CE", **width,
        "seed": args.seed, "reproducibility": True, "device": "cpu", "use_gpu": False, "gpu_id": "",
        "worker": 0, "checkpoint_dir": str(work / "saved"), "show_progress": False, "state": "WARNING",
    }
    config = Config(model=args.model, config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    logging.getLogger().setLevel(logging.WARNING)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)

    # The split check: RecBole's held-out targets are exactly Journey's leave-last-out targets.
    expected = pd.read_csv(args.data / args.name / f"{args.name}.targets.tsv", sep="\t", dtype=str)
    check = {}
    for split, loader in (("val", valid_data), ("test", test_data)):
        feat = loader._dataset.inter_feat
        users = dataset.id2token("user_id", feat["user_id"].numpy())
        items = dataset.id2token("item_id", feat["item_id"].numpy())
        got = dict(zip(users, items, strict=True))
        want = dict(expected[expected.split == split][["user_id", "item_id"]].itertuples(index=False, name=None))
        check[split] = {"users": len(got), "expected": len(want),
                        "mismatches": sum(got.get(u) != i for u, i in want.items()) + len(set(got) - set(want))}
    if any(c["mismatches"] for c in check.values()):
        print(f"SPLIT MISMATCH {check}", file=sys.stderr)

    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = Trainer(config, model)
    epochs: list[dict] = []
    inner_train_epoch = trainer._train_epoch

    def timed_train_epoch(*a, **kw):  # noqa: ANN002, ANN003
        wall, cpu = time.perf_counter(), time.process_time()
        loss = inner_train_epoch(*a, **kw)
        epochs.append({"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu,
                       "loadavg": list(os.getloadavg())})
        return loss

    trainer._train_epoch = timed_train_epoch
    best_valid, _ = trainer.fit(train_data, valid_data, saved=True, show_progress=False, verbose=False)
    native = trainer.evaluate(test_data, load_best_model=True, show_progress=False)

    # Peer convention (Journey's --unseen-as-miss): <oov> never ranked, an <oov> target is a miss.
    oov = int(dataset.token2id("item_id", export["oov_token"])) if export["oov_token"] in dataset.field2token_id[
        "item_id"] else None
    model.eval()
    sums, n, n_oov = [0.0, 0.0, 0.0], 0, 0
    with torch.no_grad():
        for interaction, _, _, positive_i in test_data:
            scores = model.full_sort_predict(interaction).view(len(positive_i), -1)
            scores[:, 0] = -math.inf
            if oov is not None:
                scores[:, oov] = -math.inf
                n_oov += int((positive_i == oov).sum())
            for i, v in enumerate(fair_topk_sums(scores, positive_i, 10)):
                sums[i] += v
            n += len(positive_i)
    peer = {"hr_at_10": sums[0] / n, "ndcg_at_10": sums[1] / n, "mrr_at_10": sums[2] / n,
            "n_ranked": n, "n_unseen": n_oov}
    record = {
        "library": "recbole", "model": args.model, "seed": args.seed, "max_epochs": args.epochs,
        "patience": args.patience, "batch_size": args.batch_size, "hidden": args.hidden, "threads": args.threads,
        "epochs": len(epochs), "epoch_times": epochs,
        "cpu_s_per_epoch": sum(e["cpu_s"] for e in epochs) / max(len(epochs), 1),
        "wall_s_per_epoch": sum(e["wall_s"] for e in epochs) / max(len(epochs), 1),
        "test_peer": peer, "test_native": {k: float(v) for k, v in native.items()},
        "best_valid_ndcg_at_10": float(best_valid) if best_valid is not None else None,
        "split_check": check, "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "items": int(dataset.item_num), "users": int(dataset.user_num),
        "run_wall_s": time.perf_counter() - began_wall, "run_cpu_s": rusage_cpu() - began_cpu,
        "loadavg_end": list(os.getloadavg()), "torch": torch.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1))
    print(json.dumps({k: record[k] for k in ("model", "seed", "epochs", "cpu_s_per_epoch", "test_peer",
                                              "split_check")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

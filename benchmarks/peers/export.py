"""ONE exporter: a Journey prepared dataset -> the peers' input files (runs in Journey's venv).

It reads only what ``journey prepare`` wrote (``train/ val/ test/`` Parquet examples and the preprocessing
artifact ``preprocessing.json``), so every peer sees exactly the examples, vocabulary and split Journey trains on:

* ``recbole`` (next item, every-event cut-offs, ``--split leave-last-out``): RecBole atomic files in
  ``OUT/NAME/``:

  - ``NAME.inter`` with the typed header ``user_id:token item_id:token timestamp:float``: each customer's
    event sequence rebuilt from the examples (the earliest example's input events, then every example's
    target event, in Journey's (cut-off, position) order). ``item_id`` is Journey's *encoded* item (its
    vocabulary token; every value Journey maps to ``<oov>`` — seen fewer than ``min_count`` times in the
    training events — is the one token ``<oov>``), so the peers see the same item inputs Journey does.
    ``timestamp`` is the event's position in the customer's sequence (0, 1, 2, ...): RecBole only orders by it,
    and it reads float fields as float32, which cannot hold Unix seconds to the second (ties and 128 s
    steps would reorder events). RecBole's ``LS: valid_and_test`` split on this time-ordered file then holds out
    each customer's last interaction for test and the one before for validation: Journey's leave-last-out.
  - ``NAME.targets.tsv``: ``user_id, split, item_id`` of every validation and test target, as Journey has
    them; ``run_recbole.py`` checks that RecBole's own split holds out exactly these.
  - ``export.json``: counts, the ``<oov>`` token, ``max_len`` (RecBole's ``MAX_ITEM_LIST_LENGTH``), the
    source artifact's hash.

  Every consecutive pair of a customer's examples is checked (the later input ends with the earlier target);
  a dataset that does not rebuild into one sequence per customer is refused.

* ``lifestream`` (outcome examples, e.g. Berka loans with ``--cutoffs labels``): ``OUT/NAME/{train,val,test}.parquet``,
  one row per Journey example (same customers, same split): ``customer_id``, ``cutoff`` (Unix s), the label
  columns ``y_<outcome>``, and the event sequences as Journey encoded them: ``event_type`` and ``cat_<field>``
  (vocabulary ids, 0 = pad, 1 = <oov>), ``num_<field>`` (Journey's transformed numerics), ``time_gap`` (seconds
  before the cut-off), ``event_time`` (Unix s of each event); plus ``export.json`` with the vocabulary sizes.

Usage::

    .venv/bin/python benchmarks/peers/export.py recbole PREPARED_DIR OUT_DIR --name taobao
    .venv/bin/python benchmarks/peers/export.py lifestream PREPARED_DIR OUT_DIR --name berka
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from journey_model.data.prepare import read_split
from journey_model.data.preprocessing import Preprocessor

SPLITS = ("train", "val", "test")
OOV_ID, PAD_ID = 1, 0  # FIELD_SPECIAL_IDS of journey_model.data.features
OOV_TOKEN = "<oov>"


class ExportError(RuntimeError):
    """The prepared dataset cannot be exported as asked."""


def _artifact(prepared: Path) -> Preprocessor:
    return Preprocessor.load(prepared)


def _examples(prepared: Path, columns: list[str]) -> pd.DataFrame:
    frames = []
    for rank, split in enumerate(SPLITS):
        table = read_split(prepared, split, columns)
        frame = table.to_pandas()
        frame["split"] = split
        frame["_split_rank"] = rank
        frame["_row"] = np.arange(len(frame))
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def customer_sequences(prepared: Path, item_field: str = "item") -> tuple[dict[str, list[int]], dict[str, dict[str, int]], dict]:
    """Per customer: the encoded item sequence rebuilt from the every-event examples, and its held-out targets.

    Returns ``(sequences, targets, stats)``: ``sequences[c]`` item ids in order, ``targets[c]`` ``{"val": id,
    "test": id}`` (the last and second-last elements of the sequence by construction; checked)."""
    column = f"cat_{item_field}"
    frame = _examples(prepared, ["customer_id", "cutoff", "length", column, "next_item"])
    frame["cut"] = frame["cutoff"].astype("int64")
    # Journey's order of a customer's examples: held-out ones last (leave-last-out), then cut-off, then input
    # length (grows by one per example until max_len), then the order prepare wrote them in.
    frame = frame.sort_values(["customer_id", "_split_rank", "cut", "length", "_row"], kind="stable")
    sequences: dict[str, list[int]] = {}
    targets: dict[str, dict[str, int]] = {}
    broken = filled = 0
    for customer, group in frame.groupby("customer_id", sort=True):
        inputs = group[column].tolist()
        nexts = group["next_item"].to_numpy()
        splits = group["split"].tolist()
        if splits[-1] != "test" or (len(splits) > 1 and splits[-2] != "val"):
            raise ExportError(f"customer {customer}: examples are not leave-last-out (last splits {splits[-2:]}); "
                              "prepare with --split leave-last-out")
        seq = [int(v) for v in inputs[0]]
        for k in range(len(group)):
            target = int(nexts[k])
            following = inputs[k + 1] if k + 1 < len(group) else None
            if following is not None and len(following):
                if target == PAD_ID:  # a purged (unknown) training target: the next example's input names it
                    target, filled = int(following[-1]), filled + 1
                elif int(following[-1]) != target:
                    broken += 1
            if target == PAD_ID:
                raise ExportError(f"customer {customer}: held-out target {k} is unknown")
            seq.append(target)
        sequences[str(customer)] = seq
        targets[str(customer)] = {"val": seq[-2], "test": seq[-1]}
    if broken:
        raise ExportError(f"{broken} consecutive example pairs do not chain (the later input does not end with "
                          "the earlier target): not every-event cut-offs with every event kept")
    stats = {"customers": len(sequences), "interactions": sum(len(s) for s in sequences.values()),
             "examples": len(frame), "targets_filled_from_next_input": filled}
    return sequences, targets, stats


def export_recbole(prepared: Path, out: Path, name: str) -> dict:
    """Write ``OUT/NAME/NAME.inter``, ``NAME.targets.tsv`` and ``export.json``; return the export record."""
    artifact = _artifact(prepared)
    item_field = artifact.config.item_field or "item"
    tokens = artifact.vocabularies[item_field].tokens
    sequences, targets, stats = customer_sequences(prepared, item_field)

    def token(i: int) -> str:
        return OOV_TOKEN if i == OOV_ID else tokens[i]

    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    users, items, stamps = [], [], []
    for customer, seq in sequences.items():
        users.extend([customer] * len(seq))
        items.extend(token(i) for i in seq)
        stamps.extend(range(len(seq)))
    inter = pd.DataFrame({"user_id:token": users, "item_id:token": items, "timestamp:float": np.asarray(stamps, float)})
    inter.to_csv(folder / f"{name}.inter", sep="\t", index=False)
    rows = [(c, s, token(t[s])) for c, t in targets.items() for s in ("val", "test")]
    pd.DataFrame(rows, columns=["user_id", "split", "item_id"]).to_csv(folder / f"{name}.targets.tsv", sep="\t",
                                                                     index=False)
    held = [t["test"] for t in targets.values()]
    record = {
        "format": "recbole", "name": name, "prepared": str(prepared), "artifact_hash": artifact.artifact_hash,
        **stats, "items_in_vocabulary": len(tokens) - artifact.vocabularies[item_field].num_reserved,
        "oov_token": OOV_TOKEN, "test_targets_oov": int(sum(i == OOV_ID for i in held)),
        "max_len": artifact.config.max_len, "timestamp": "position in the customer's sequence (0, 1, ...)",
    }
    (folder / "export.json").write_text(json.dumps(record, indent=1))
    return record


def export_lifestream(prepared: Path, out: Path, name: str) -> dict:
    """Write ``OUT/NAME/{train,val,test}.parquet`` (one row per example) and ``export.json``."""
    artifact = _artifact(prepared)
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    counts, positives = {}, {}
    label_columns: list[str] = []
    sequence_columns: list[str] = []
    for split in SPLITS:
        table = read_split(prepared, split)
        label_columns = [c for c in table.column_names if c.startswith("y_")]
        sequence_columns = ["event_type", "time_gap"] + [c for c in table.column_names
                                                          if c.startswith(("cat_", "num_"))]
        frame = table.select(["customer_id", "cutoff", "length", *sequence_columns, *label_columns]).to_pandas()
        cut = frame["cutoff"].astype("int64").to_numpy() / 1e6
        frame["cutoff"] = cut
        frame["event_time"] = [c - np.asarray(g, dtype=np.float64) for c, g in zip(cut, frame["time_gap"], strict=True)]
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), folder / f"{split}.parquet")
        counts[split] = len(frame)
        positives[split] = {c: float(np.nansum(frame[c].to_numpy(dtype=float))) for c in label_columns}
    vocab = {f"cat_{f}": len(v) for f, v in artifact.vocabularies.items() if f != "event_type"}
    vocab["event_type"] = len(artifact.vocabularies["event_type"])
    record = {"format": "lifestream", "name": name, "prepared": str(prepared), "artifact_hash": artifact.artifact_hash,
              "examples": counts, "positives": positives, "labels": label_columns, "sequences": sequence_columns,
              "vocabulary_sizes": vocab, "max_len": artifact.config.max_len}
    (folder / "export.json").write_text(json.dumps(record, indent=1))
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("format", choices=["recbole", "lifestream"])
    parser.add_argument("prepared", type=Path, help="folder written by `journey prepare`")
    parser.add_argument("out", type=Path, help="output folder (the files go to OUT/NAME/)")
    parser.add_argument("--name", required=True, help="dataset name (RecBole's `dataset`)")
    args = parser.parse_args(argv)
    export = export_recbole if args.format == "recbole" else export_lifestream
    print(json.dumps(export(args.prepared, args.out, args.name), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

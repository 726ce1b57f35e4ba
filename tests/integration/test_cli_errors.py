"""Every `journey` failure is one clear line on stderr and a non-zero exit, never a traceback: damaged inputs
(a truncated .csv.gz, deeply nested JSON, a corrupt Parquet file), an unwritable output folder, too many
rejected rows, and errors nobody foresaw (``--debug`` / JOURNEY_DEBUG=1 show the traceback)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

import journey_model.data.ingest as ingest_module
from pipelines.cli import main as journey

HEADER = "cust,when,kind,amt"
ROWS = [f"c{i},2024-01-{1 + i % 28:02d} 10:00,login,{i}.5" for i in range(400)]
MAPPING = {
    "kind": "events",
    "dataset": {"name": "bank", "categorical_fields": [], "numeric_fields": ["amount"]},
    "timestamp": {"format": "%Y-%m-%d %H:%M"},
    "columns": {"customer_id": "cust", "ts": "when", "amount": "amt"},
    "event_type": "kind",
}


def _mapping(tmp_path: Path) -> Path:
    path = tmp_path / "mapping.yaml"
    path.write_text(yaml.safe_dump(MAPPING))
    return path


def _one_line_error(capsys: pytest.CaptureFixture[str], code: int, expected_code: int = 1) -> str:
    err = capsys.readouterr().err
    assert code == expected_code, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def _ingest(tmp_path: Path, source: Path, *extra: str) -> int:
    return journey(["-q", "ingest", str(source), "--mapping", str(_mapping(tmp_path)), "--out",
                    str(tmp_path / "out"), *extra])


def test_truncated_csv_gz_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = gzip.compress(("\n".join([HEADER, *ROWS * 50]) + "\n").encode())
    source = tmp_path / "events.csv.gz"
    source.write_bytes(data[: len(data) // 2])
    err = _one_line_error(capsys, _ingest(tmp_path, source))
    assert err.startswith("journey ingest: error: ") and str(source) in err
    assert not (tmp_path / "out").exists()  # what the failed run created is gone


def test_deeply_nested_json_is_a_rejected_row_not_a_crash(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "events.jsonl"
    good = [json.dumps({"cust": f"c{i}", "when": "2024-01-02 10:00", "kind": "login"}) for i in range(30)]
    source.write_text("\n".join([*good, '{"cust": ' + "[" * 100_000 + "]" * 100_000 + "}"]) + "\n")
    assert _ingest(tmp_path, source) == 0, capsys.readouterr().err
    rejects = pq.read_table(tmp_path / "out" / "rejects").to_pylist()
    assert [(r["row"], r["reason"]) for r in rejects] == [(31, "malformed_row")]
    assert "nested too deeply" in rejects[0]["expected"]


def test_corrupt_parquet_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = pa.table({"cust": [f"c{i}" for i in range(5000)], "when": ["2024-01-02 10:00"] * 5000,
                      "kind": ["login"] * 5000, "amt": [f"{i}.5" for i in range(5000)]})
    source = tmp_path / "events.parquet"
    pq.write_table(table, source, compression="none")
    damaged = bytearray(source.read_bytes())
    for offset in range(200, len(damaged) - 2000, 97):  # page data, not the footer: the file opens
        damaged[offset] ^= 0x5A
    source.write_bytes(bytes(damaged))
    err = _one_line_error(capsys, _ingest(tmp_path, source))
    assert str(source) in err


def test_unwritable_output_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # the tests may run as root, for whom chmod does not stop a write: refuse the folder as the OS would
    def refuse(out: Path) -> bool:
        raise PermissionError(13, "Permission denied", str(out))

    monkeypatch.setattr(ingest_module, "_prepare_output", refuse)
    source = tmp_path / "events.csv"
    source.write_text("\n".join([HEADER, *ROWS]) + "\n")
    err = _one_line_error(capsys, _ingest(tmp_path, source))
    assert f"PermissionError: [Errno 13] Permission denied: '{tmp_path / 'out'}'" in err


def test_an_unforeseen_error_is_one_line_and_debug_shows_the_traceback(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("something nobody foresaw")

    monkeypatch.setattr(ingest_module, "ingest", crash)
    source = tmp_path / "events.csv"
    source.write_text("\n".join([HEADER, *ROWS]) + "\n")
    err = _one_line_error(capsys, _ingest(tmp_path, source))
    assert "RuntimeError: something nobody foresaw (run with --debug for the traceback)" in err
    with pytest.raises(RuntimeError):
        journey(["--debug", "ingest", str(source), "--mapping", str(_mapping(tmp_path)), "--out", str(tmp_path / "o")])
    monkeypatch.setenv("JOURNEY_DEBUG", "1")
    with pytest.raises(RuntimeError):
        _ingest(tmp_path, source)


def test_every_row_rejected_fails_with_the_rate_and_where_the_rejects_are(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "events.csv"
    source.write_text("\n".join([HEADER, *(row.replace("2024-01-", "01/2024/") for row in ROWS)]) + "\n")
    err = _one_line_error(capsys, _ingest(tmp_path, source))
    out = tmp_path / "out"
    assert "400 of 400 rows rejected (100.0%, above --max-reject-rate 5.0%; bad_timestamp 400)" in err
    assert str(out / "rejects") in err
    assert pq.read_table(out / "rejects").num_rows == 400  # kept for a look
    assert not (out / "events").exists() and not (out / "ingest_report.json").exists()
    # a rerun into the same folder is not refused (no report), and the limit can be raised
    assert _ingest(tmp_path, source, "--max-reject-rate", "1") == 0
    assert pq.read_table(out / "events").num_rows == 0


def test_strict_leaves_no_output_folder_behind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "events.csv"
    source.write_text("\n".join([HEADER, *ROWS, "c9,never,login,1"]) + "\n")
    err = _one_line_error(capsys, _ingest(tmp_path, source, "--strict", "--chunk-rows", "100"))
    assert "strict mode stops at the first invalid row" in err and "row 401" in err
    assert not (tmp_path / "out").exists()  # the first chunks were written, then removed with the folder
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("kept")
    assert journey(["-q", "ingest", str(source), "--mapping", str(_mapping(tmp_path)), "--out", str(mine),
                    "--strict", "--chunk-rows", "100"]) == 1
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]  # a folder that was there stays, as it was

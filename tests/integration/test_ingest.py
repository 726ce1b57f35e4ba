"""Tests of ``journey ingest`` (journey_model.data.ingest, .mapping, .readers, .transform): mappings, validation
messages, rejects, formats, time zones, chunking, the output folder contract and the examples of
docs/mapping-format.md. Every input is a real file written under tmp_path."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from journey_model.data.ingest import REPORT_FILE, IngestError, IngestReport, ingest
from journey_model.data.schema import DatasetConfig

HEADER = "cust,when,kind,merchant,amt,chan"
GOOD_ROWS = [
    "c1,2024-01-15 10:00,card_payment,grocery,-12.50,app",
    "c1,2024-07-15 10:00,login,,,web",
    "c2,2024-01-16 09:30,card_payment,fuel,-40,app",
    "c2,2024-01-17 08:00,transfer,,250.0,branch",
    "c3,2024-03-31 03:30,login,,,app",
]


def bank_mapping(**overrides: object) -> dict:
    mapping = {
        "kind": "events",
        "dataset": {"name": "bank", "categorical_fields": ["item", "channel"], "numeric_fields": ["amount"],
                    "behaviours": {"card_payment": {"categorical": ["item", "channel"], "numeric": ["amount"]},
                                   "login": {"categorical": ["channel"], "numeric": []},
                                   "transfer": {"categorical": ["channel"], "numeric": ["amount"]}}},
        "timestamp": {"format": "%Y-%m-%d %H:%M", "timezone": "Europe/Prague"},
        "columns": {"customer_id": "cust", "ts": "when", "item": "merchant", "amount": "amt", "channel": "chan"},
        "event_type": "kind",
    }
    mapping.update(overrides)
    return mapping


def write_mapping(tmp_path: Path, mapping: dict, name: str = "mapping.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(mapping, sort_keys=False))
    return path


def write_csv(tmp_path: Path, rows: list[str], name: str = "events.csv", header: str = HEADER) -> Path:
    path = tmp_path / name
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def read_events(out: Path) -> pa.Table:
    return pq.read_table(out / "events")


def read_rejects(out: Path) -> list[dict]:
    if not (out / "rejects").exists():
        return []
    return pq.read_table(out / "rejects").sort_by("row").to_pylist()


def run(tmp_path: Path, rows: list[str], out_name: str = "out", mapping: dict | None = None, **kwargs: object
        ) -> tuple[IngestReport, Path, Path]:
    source = write_csv(tmp_path, rows)
    mapping_path = write_mapping(tmp_path, mapping or bank_mapping())
    out = tmp_path / out_name
    kwargs.setdefault("max_reject_rate", 1.0)  # these tests reject on purpose; the limit has tests of its own
    report = ingest([source], mapping_path, out, progress=False, **kwargs)
    return report, out, source


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# ------------------------------------------------------------------------------------------ happy path


def test_csv_becomes_canonical_events_with_utc_times_and_dataset_yaml(tmp_path: Path) -> None:
    report, out, _ = run(tmp_path, GOOD_ROWS)
    events = read_events(out)
    config = DatasetConfig.load(out / "dataset.yaml")
    assert events.schema == config.arrow_schema()
    assert config.behaviours["login"] == {"categorical": ["channel"], "numeric": []}
    rows = events.to_pylist()
    assert [r["customer_id"] for r in rows] == ["c1", "c1", "c2", "c2", "c3"]
    # Prague is UTC+1 in winter, UTC+2 in summer; 2024-03-31 03:30 is just after the spring change (CEST)
    assert [r["ts"] for r in rows] == [utc(2024, 1, 15, 9), utc(2024, 7, 15, 8), utc(2024, 1, 16, 8, 30),
                                       utc(2024, 1, 17, 7), utc(2024, 3, 31, 1, 30)]
    assert rows[0]["item"] == "grocery" and rows[1]["item"] is None  # empty text -> null
    assert [r["amount"] for r in rows] == [-12.5, None, -40.0, 250.0, None]
    assert report.rows_read == report.rows_written == 5 and report.rows_rejected == 0
    assert report.event_types == {"card_payment": 2, "login": 2, "transfer": 1}
    saved = json.loads((out / REPORT_FILE).read_text())
    assert saved["rows_written"] == 5 and saved["kind"] == "events" and saved["dataset"] == "bank"
    assert IngestReport.load(out / REPORT_FILE).rows_read == 5
    assert not (out / "rejects").exists()
    assert "5 rows" in report.summary() and "card_payment 2" in report.summary()


def test_progress_bar_goes_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = write_csv(tmp_path, GOOD_ROWS)
    ingest([source], write_mapping(tmp_path, bank_mapping()), tmp_path / "out", progress=True)
    captured = capsys.readouterr()
    assert captured.out == "" and "ingest" in captured.err


# ------------------------------------------------------------------------------------------ validation


ROW_ERRORS = [
    # (bad row, reason, source column, offending value, text that the expected part must contain)
    ("c9,2024-01-15 10:00,card_payment,grocery,abc,app", "bad_number", "amt", "abc", "decimal number"),
    ("c9,15/01/2024,card_payment,grocery,-1,app", "bad_timestamp", "when", "15/01/2024", "'%Y-%m-%d %H:%M'"),
    ("c9,,card_payment,grocery,-1,app", "missing_timestamp", "when", "", "%Y-%m-%d %H:%M"),
    (",2024-01-15 10:00,card_payment,grocery,-1,app", "missing_customer_id", "cust", "", "non-empty"),
    ("  ,2024-01-15 10:00,card_payment,grocery,-1,app", "missing_customer_id", "cust", "  ", "non-empty"),
    ("c9,2024-01-15 10:00,,grocery,-1,app", "missing_event_type", "kind", "", "non-empty"),
    ("c9,1850-01-15 10:00,login,,,app", "timestamp_out_of_range", "when", "1850-01-15 10:00", "1900-01-01"),
]


@pytest.mark.parametrize(("row", "reason", "column", "value", "expected"), ROW_ERRORS)
def test_invalid_row_is_rejected_with_its_reason_and_raw_values(
    tmp_path: Path, row: str, reason: str, column: str, value: str, expected: str
) -> None:
    report, out, source = run(tmp_path, [GOOD_ROWS[0], row, GOOD_ROWS[2]])
    assert (report.rows_read, report.rows_written, report.rows_rejected) == (3, 2, 1)
    assert report.rejects_by_reason == {reason: 1}
    [reject] = read_rejects(out)
    assert reject["source_file"] == str(source) and reject["row"] == 2
    assert reject["column"] == column and reject["reason"] == reason and reject["value"] == value
    assert expected in reject["expected"]
    raw = json.loads(reject["raw"])
    assert list(raw) == HEADER.split(",") and ",".join(raw.values()) == row
    example = report.reject_examples[reason]
    assert str(source) in example and "row 2" in example and repr(column) in example and repr(value) in example
    assert reason in report.summary() and any("rejected" in w for w in report.warnings)


@pytest.mark.parametrize(("row", "reason", "column", "value", "expected"), ROW_ERRORS)
def test_strict_mode_raises_naming_file_row_column_and_value(
    tmp_path: Path, row: str, reason: str, column: str, value: str, expected: str
) -> None:
    with pytest.raises(IngestError) as caught:
        run(tmp_path, [GOOD_ROWS[0], row, GOOD_ROWS[2]], strict=True)
    message = str(caught.value)
    source = tmp_path / "events.csv"
    assert f"{source}: row 2, column {column!r}" in message
    assert f"got {value!r}" in message and expected in message and "strict" in message
    assert not (tmp_path / "out" / REPORT_FILE).exists()  # no report: the output is marked incomplete


def test_strict_mode_stops_at_the_first_invalid_row(tmp_path: Path) -> None:
    rows = [GOOD_ROWS[0], GOOD_ROWS[1], "c9,2024-01-15 10:00,card_payment,x,1O.5,app",
            ",2024-01-15 10:00,login,,,app"]
    with pytest.raises(IngestError, match=r"row 3, column 'amt' \(amount\).*got '1O.5'"):
        run(tmp_path, rows, strict=True, chunk_rows=2)
    with pytest.raises(IngestError, match=r"row 3, column 'amt'"):
        run(tmp_path, rows, out_name="out2", strict=True)


def test_several_problems_each_counted_once_and_arithmetic_holds(tmp_path: Path) -> None:
    rows = [
        GOOD_ROWS[0],
        ",bad-time,,,x,",  # four problems: counted once, for the first check (customer id)
        "c2,2024-01-16 09:30,card_payment,fuel,1e999,app",  # overflows to inf: not a finite number
        "c2,2024-01-16 09:30,card_payment,fuel,NaN,app",
        "c2,2024-01-16 09:30,card_payment,fuel,\"1,000\",app",  # thousands separator
        GOOD_ROWS[3],
        "c3,2024-01-16,login,,,app",  # date without the time the format asks for
    ]
    report, out, _ = run(tmp_path, rows)
    assert report.rows_read == 7 == report.rows_written + report.rows_rejected
    assert report.rejects_by_reason == {"missing_customer_id": 1, "bad_number": 3, "bad_timestamp": 1}
    rejects = read_rejects(out)
    assert [(r["row"], r["reason"]) for r in rejects] == [
        (2, "missing_customer_id"), (3, "bad_number"), (4, "bad_number"), (5, "bad_number"), (7, "bad_timestamp")]
    assert rejects[3]["value"] == "1,000"
    assert read_events(out).column("customer_id").to_pylist() == ["c1", "c2"]


def test_missing_column_is_fatal_and_lists_the_columns_present(tmp_path: Path) -> None:
    source = write_csv(tmp_path, ["c1,2024-01-15 10:00,login,,app"], header="cust,when,kind,merchant,chan")
    with pytest.raises(IngestError) as caught:
        ingest([source], write_mapping(tmp_path, bank_mapping()), tmp_path / "out", progress=False, max_reject_rate=1.0)
    message = str(caught.value)
    assert str(source) in message and "'amt' (mapped to amount)" in message
    assert "columns present: ['cust', 'when', 'kind', 'merchant', 'chan']" in message


def test_wrong_delimiter_gets_a_hint(tmp_path: Path) -> None:
    source = tmp_path / "events.csv"
    source.write_text(HEADER.replace(",", ";") + "\n" + GOOD_ROWS[0].replace(",", ";") + "\n")
    with pytest.raises(IngestError, match=r"is source.delimiter ',' right"):
        ingest([source], write_mapping(tmp_path, bank_mapping()), tmp_path / "out", progress=False, max_reject_rate=1.0)


def test_malformed_csv_rows_are_rejected_and_row_numbers_stay_right(tmp_path: Path) -> None:
    rows = [
        GOOD_ROWS[0],
        "c1,2024-01-15 11:00,login,,,web,EXTRA",  # 7 fields
        "c1,2024-01-15 12:00,login",  # 3 fields
        GOOD_ROWS[2],
        "c2,2024-01-16 09:30,card_payment,fuel,oops,app",
        GOOD_ROWS[3],
    ]
    for chunk_rows in (1, 2, 100):
        report, out, _ = run(tmp_path, rows, out_name=f"out{chunk_rows}", chunk_rows=chunk_rows)
        assert (report.rows_read, report.rows_written, report.rows_rejected) == (6, 3, 3)
        rejects = read_rejects(out)
        assert [(r["row"], r["reason"]) for r in rejects] == [
            (2, "malformed_row"), (3, "malformed_row"), (5, "bad_number")]
        assert rejects[0]["value"] == rows[1] and "6 fields separated by ','" in rejects[0]["expected"]
        assert rejects[2]["column"] == "amt" and rejects[2]["value"] == "oops"
    with pytest.raises(IngestError, match=r"row 2: the row cannot be read"):
        run(tmp_path, rows, out_name="strict", strict=True)


def test_mapping_mistakes_are_reported_with_the_mapping_file(tmp_path: Path) -> None:
    source = write_csv(tmp_path, GOOD_ROWS)
    cases = [
        (bank_mapping(colums={}), "unknown keys ['colums']"),
        (bank_mapping(columns={"customer_id": "cust", "ts": "when", "merchant_category": "merchant"}),
         "'merchant_category' is not a canonical field"),
        (bank_mapping(timestamp={"format": "yyyy-mm-dd"}), "strptime pattern"),
        (bank_mapping(timestamp={"format": "iso", "timezone": "Europe/Pargue"}), "unknown time zone"),
        (bank_mapping(event_type={"template": "{kind:>3}"}), "plain {column} fields"),
        ({k: v for k, v in bank_mapping().items() if k != "event_type"}, "no event_type"),
        (bank_mapping(kind="label"), "kind 'label'"),
    ]
    for index, (mapping, expected) in enumerate(cases):
        path = write_mapping(tmp_path, mapping, name=f"mapping{index}.yaml")
        with pytest.raises(IngestError) as caught:
            ingest([source], path, tmp_path / f"out{index}", progress=False, max_reject_rate=1.0)
        assert str(path) in str(caught.value) and expected in str(caught.value)
    with pytest.raises(IngestError, match="built-ins: .*berka"):
        ingest([source], "no_such_mapping", tmp_path / "out", progress=False, max_reject_rate=1.0)
    with pytest.raises(IngestError, match="does not exist"):
        ingest([tmp_path / "missing.csv"], write_mapping(tmp_path, bank_mapping()), tmp_path / "o", progress=False, max_reject_rate=1.0)


# ------------------------------------------------------------------------------------------ formats


def _typed_source_table() -> pa.Table:
    return pa.table({
        "cust": pa.array(["c1", "c1", "c2", "c2", "c3"]),
        "when": pa.array(["2024-01-15 10:00", "2024-07-15 10:00", "2024-01-16 09:30", "2024-01-17 08:00",
                          "2024-03-31 03:30"]),
        "kind": ["card_payment", "login", "card_payment", "transfer", "login"],
        "merchant": ["grocery", None, "fuel", None, None],
        "amt": pa.array([-12.5, None, -40.0, 250.0, None], pa.float64()),
        "chan": ["app", "web", "app", "branch", "app"],
    })


def test_csv_parquet_and_json_lines_give_the_same_events(tmp_path: Path) -> None:
    mapping = write_mapping(tmp_path, bank_mapping())
    csv_out = tmp_path / "from_csv"
    ingest([write_csv(tmp_path, GOOD_ROWS)], mapping, csv_out, progress=False, max_reject_rate=1.0)
    expected = read_events(csv_out)

    parquet_path = tmp_path / "events.parquet"
    pq.write_table(_typed_source_table(), parquet_path)
    jsonl_path = tmp_path / "events.jsonl"
    with open(jsonl_path, "w") as handle:
        for record in _typed_source_table().to_pylist():
            handle.write(json.dumps({k: v for k, v in record.items() if v is not None}) + "\n")
    gz_path = tmp_path / "events.csv.gz"
    gz_path.write_bytes(gzip.compress((tmp_path / "events.csv").read_bytes()))
    for source in (parquet_path, jsonl_path, gz_path):
        out = tmp_path / f"from_{source.name}"
        report = ingest([source], mapping, out, progress=False, max_reject_rate=1.0)
        assert report.rows_written == 5, source
        assert read_events(out).equals(expected), source


def test_parquet_native_types_timestamps_and_integers(tmp_path: Path) -> None:
    naive = pa.array([datetime(2024, 1, 15, 10), datetime(2024, 7, 15, 10)], pa.timestamp("ms"))
    table = pa.table({"cust": pa.array([101, 102], pa.int64()), "when": naive, "kind": ["a", "b"],
                      "amt": pa.array([3, 4], pa.int32())})
    mapping = bank_mapping(columns={"customer_id": "cust", "ts": "when", "amount": "amt"})
    pq.write_table(table, tmp_path / "naive.parquet")
    aware = table.set_column(1, "when", naive.cast(pa.timestamp("ms", tz="America/New_York")))
    pq.write_table(aware, tmp_path / "aware.parquet")
    out = tmp_path / "out"
    report = ingest([tmp_path / "naive.parquet", tmp_path / "aware.parquet"], write_mapping(tmp_path, mapping),
                    out, progress=False, max_reject_rate=1.0)
    assert report.rows_by_file[str(tmp_path / "naive.parquet")]["written"] == 2
    events = read_events(out).to_pylist()
    assert [e["customer_id"] for e in events] == ["101", "102", "101", "102"]
    # naive wall-clock values are Prague time; tz-aware ones are already instants (naive read as UTC)
    assert [e["ts"] for e in events] == [utc(2024, 1, 15, 9), utc(2024, 7, 15, 8), utc(2024, 1, 15, 10),
                                         utc(2024, 7, 15, 10)]
    assert [e["amount"] for e in events] == [3.0, 4.0, 3.0, 4.0]
    assert events[0]["item"] is None  # declared but not mapped: null, and said so
    assert any("no source column" in warning for warning in report.warnings)


def test_json_lines_rows_are_line_numbers_and_bad_lines_are_rejected(tmp_path: Path) -> None:
    lines = [
        json.dumps({"cust": "c1", "when": "2024-01-15 10:00", "kind": "login", "chan": "app"}),
        "",  # blank line: not a row, but lines keep their numbers
        "{not json",
        json.dumps(["a", "list"]),
        json.dumps({"cust": "c2", "when": "2024-01-15 10:00", "kind": "login", "amt": "abc"}),
        json.dumps({"when": "2024-01-15 10:00", "kind": "login"}),  # customer key absent -> null
        json.dumps({"cust": 7, "when": "2024-01-15 10:00", "kind": "login", "amt": 1.25, "extra": {"x": 1}}),
    ]
    source = tmp_path / "events.ndjson"
    source.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    report = ingest([source], write_mapping(tmp_path, bank_mapping()), out, progress=False, max_reject_rate=1.0, chunk_rows=2)
    assert (report.rows_read, report.rows_written, report.rows_rejected) == (6, 2, 4)
    rejects = read_rejects(out)
    assert [(r["row"], r["reason"]) for r in rejects] == [
        (3, "malformed_row"), (4, "malformed_row"), (5, "bad_number"), (6, "missing_customer_id")]
    assert "invalid JSON" in rejects[0]["expected"] and "found list" in rejects[1]["expected"]
    assert json.loads(rejects[2]["raw"])["amt"] == "abc"
    events = read_events(out).to_pylist()
    assert [(e["customer_id"], e["amount"]) for e in events] == [("c1", None), ("7", 1.25)]
    array = tmp_path / "array.json"
    array.write_text(json.dumps([{"cust": "c1", "when": "2024-01-15 10:00", "kind": "x"}]))
    with pytest.raises(IngestError, match=r"line 1 starts a JSON array"):
        ingest([array], write_mapping(tmp_path, bank_mapping()), tmp_path / "out3", progress=False, max_reject_rate=1.0)
    first = tmp_path / "first.jsonl"
    first.write_text(json.dumps({"customer": "c1", "when": "2024-01-15 10:00", "kind": "x"}) + "\n")
    with pytest.raises(IngestError, match=r"'cust' \(mapped to customer_id\) is missing; columns present"):
        ingest([first], write_mapping(tmp_path, bank_mapping()), tmp_path / "out2", progress=False, max_reject_rate=1.0)


# ------------------------------------------------------------------------------------------ timestamps


def _times_mapping(fmt: str, timezone: str = "UTC") -> dict:
    return bank_mapping(timestamp={"format": fmt, "timezone": timezone},
                        columns={"customer_id": "cust", "ts": "when"},
                        dataset={"name": "t", "categorical_fields": [], "numeric_fields": []})


def _ingest_times(tmp_path: Path, name: str, values: list[str], fmt: str, timezone: str = "UTC"
                  ) -> tuple[IngestReport, list[datetime], list[dict]]:
    folder = tmp_path / name
    folder.mkdir()
    source = write_csv(folder, [f"c,{v},e" for v in values], header="cust,when,kind")
    out = folder / "out"
    report = ingest([source], write_mapping(folder, _times_mapping(fmt, timezone)), out, progress=False, max_reject_rate=1.0)
    return report, read_events(out).column("ts").to_pylist(), read_rejects(out)


def test_unix_seconds_and_milliseconds_give_the_same_instants(tmp_path: Path) -> None:
    _, seconds, _ = _ingest_times(tmp_path, "s", ["1511544070", "1511544070.25", "0"], "unix_s", "Asia/Shanghai")
    _, millis, _ = _ingest_times(tmp_path, "ms", ["1511544070000", "1511544070250", "0"], "unix_ms")
    expected = [utc(2017, 11, 24, 17, 21, 10), utc(2017, 11, 24, 17, 21, 10, 250000), utc(1970, 1, 1)]
    assert seconds == millis == expected  # unix times are instants: the time zone does not move them


def test_milliseconds_read_as_seconds_are_out_of_range_with_a_hint(tmp_path: Path) -> None:
    report, kept, rejects = _ingest_times(tmp_path, "mix", ["1511544070", "1511544070000", "-1e20", "12x"],
                                          "unix_s")
    assert kept == [utc(2017, 11, 24, 17, 21, 10)]
    assert report.rejects_by_reason == {"timestamp_out_of_range": 2, "bad_timestamp": 1}
    assert "unix_s vs unix_ms" in rejects[0]["expected"] and rejects[0]["value"] == "1511544070000"
    assert "seconds since 1970" in rejects[2]["expected"]


def test_wall_clock_times_are_localised_across_daylight_saving_changes(tmp_path: Path) -> None:
    values = ["2024-01-15 12:00", "2024-07-15 12:00",
              "2024-03-31 02:30",  # does not exist in Prague: moves to the end of the gap (01:00 UTC)
              "2024-10-27 02:30"]  # happens twice: the earlier instant (CEST, 00:30 UTC)
    _, stamps, _ = _ingest_times(tmp_path, "prague", values, "%Y-%m-%d %H:%M", "Europe/Prague")
    assert stamps == [utc(2024, 1, 15, 11), utc(2024, 7, 15, 10), utc(2024, 3, 31, 1), utc(2024, 10, 27, 0, 30)]
    _, as_utc, _ = _ingest_times(tmp_path, "utc", values[:2], "%Y-%m-%d %H:%M")
    assert as_utc == [utc(2024, 1, 15, 12), utc(2024, 7, 15, 12)]


def test_iso_timestamps_with_offsets_zulu_and_naive_values(tmp_path: Path) -> None:
    values = ["2024-01-15T12:00:00+01:00", "2024-01-15T11:00:00Z", "2024-01-15 12:00:00", "2024-01-15"]
    _, stamps, _ = _ingest_times(tmp_path, "iso", values, "iso", "Europe/Prague")
    assert stamps == [utc(2024, 1, 15, 11), utc(2024, 1, 15, 11), utc(2024, 1, 15, 11), utc(2024, 1, 14, 23)]
    report, stamps, rejects = _ingest_times(tmp_path, "iso_bad", ["2024-01-15T12:00:00+01:00", "yesterday"],
                                            "iso")
    assert stamps == [utc(2024, 1, 15, 11)] and rejects[0]["reason"] == "bad_timestamp"
    assert rejects[0]["value"] == "yesterday" and "ISO 8601" in rejects[0]["expected"]


def test_two_digit_years_like_berka(tmp_path: Path) -> None:
    _, stamps, _ = _ingest_times(tmp_path, "yy", ["930101", "981231"], "%y%m%d", "Europe/Prague")
    assert stamps == [utc(1992, 12, 31, 23), utc(1998, 12, 30, 23)]


# ------------------------------------------------------------------------------------------ chunking


def test_tiny_chunks_give_the_same_output_as_one_chunk(tmp_path: Path) -> None:
    rows = []
    for i in range(23):
        amount = "x" if i % 7 == 3 else str(i)
        rows.append(f"c{i % 4},2024-01-{1 + i:02d} 10:00,{['login', 'card_payment'][i % 2]},m{i % 3},{amount},app")
    rows.insert(10, "c1,2024-01-05 10:00,login")  # malformed
    whole, out_whole, _ = run(tmp_path, rows, out_name="whole")
    tiny, out_tiny, _ = run(tmp_path, rows, out_name="tiny", chunk_rows=3)
    assert read_events(out_whole).equals(read_events(out_tiny))
    assert read_rejects(out_whole) == read_rejects(out_tiny)
    assert len(list((out_tiny / "events").glob("part-*.parquet"))) == 8  # 23 parseable rows in chunks of 3
    assert len(list((out_whole / "events").glob("part-*.parquet"))) == 1
    for report in (whole, tiny):
        assert (report.rows_read, report.rows_written, report.rows_rejected) == (24, 20, 4)
        assert report.rejects_by_reason == {"bad_number": 3, "malformed_row": 1}
        assert report.event_types == whole.event_types


def test_several_files_and_folders_in_one_ingest(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    write_csv(folder, GOOD_ROWS[:2], name="a.csv")
    write_csv(folder, GOOD_ROWS[2:] + ["c9,never,login,,,app"], name="b.csv")
    (folder / "_SUCCESS").write_text("")
    report = ingest([folder], write_mapping(tmp_path, bank_mapping()), tmp_path / "out", progress=False, max_reject_rate=1.0)
    assert report.files == [str(folder / "a.csv"), str(folder / "b.csv")]
    assert report.rows_by_file[str(folder / "b.csv")] == {"read": 4, "written": 3, "rejected": 1}
    assert read_rejects(tmp_path / "out")[0]["source_file"] == str(folder / "b.csv")
    assert read_rejects(tmp_path / "out")[0]["row"] == 4


# ------------------------------------------------------------------------------------------ output folder


def test_complete_output_is_refused_and_partial_output_is_replaced(tmp_path: Path) -> None:
    _, out, source = run(tmp_path, GOOD_ROWS)
    mapping = tmp_path / "mapping.yaml"
    with pytest.raises(IngestError, match="already holds a complete ingest"):
        ingest([source], mapping, out, progress=False, max_reject_rate=1.0)
    (out / REPORT_FILE).unlink()  # as if the run had been interrupted before the end
    (out / "events" / "part-00007.parquet").write_bytes(b"half written")
    (out / "notes.txt").write_text("mine")
    report = ingest([source], mapping, out, progress=False, max_reject_rate=1.0)
    assert sorted(p.name for p in (out / "events").iterdir()) == ["part-00000.parquet"]
    assert (out / "notes.txt").read_text() == "mine"  # only ingest's own outputs are removed
    assert report.rows_written == read_events(out).num_rows == 5
    assert not list(out.rglob("*.tmp"))


def test_all_rows_rejected_still_writes_an_empty_events_part(tmp_path: Path) -> None:
    report, out, _ = run(tmp_path, ["c1,never,login,,,app"])
    assert report.rows_written == 0 and report.rows_rejected == 1
    assert read_events(out).num_rows == 0
    assert read_events(out).schema == DatasetConfig.load(out / "dataset.yaml").arrow_schema()


# ------------------------------------------------------------------------------------------ event types, values


def test_event_type_template_value_map_globs_and_unmapped_values(tmp_path: Path) -> None:
    header = "acct,date,type,operation,amount,k"
    rows = ["1,930101,PRIJEM,VKLAD,100,", "1,930102,VYDAJ,VYBER,30,SLUZBY", "1,930103,VYDAJ,VYBER,20,",
            "1,930104,PRIJEM,,5,UROK", "2,930105,VYBER,VYBER,10,", "2,930106,NOVY,TYP,1,", "2,930107,,,1,"]
    source = write_csv(tmp_path, rows, header=header)
    mapping = {
        "dataset": {"name": "b", "categorical_fields": ["item"], "numeric_fields": ["amount"]},
        "timestamp": {"format": "%y%m%d"},
        "columns": {"customer_id": "acct", "ts": "date",
                    "item": {"column": "k", "values": {"SLUZBY": "statement_fee", "UROK": "interest"}},
                    "amount": {"column": "amount", "negate_when": {"type": ["VYDAJ", "VYBER"]}, "scale": 0.5}},
        "event_type": {"template": "{type}|{operation}|{k}",
                       "values": {"*|*|SLUZBY": "fee", "*|*|UROK": "interest", "VYDAJ|VYBER|": "withdrawal",
                                  "*|VYBER|*": "withdrawal", "PRIJEM|VKLAD|*": "deposit"}},
    }
    report = ingest([source], write_mapping(tmp_path, mapping), tmp_path / "keep", progress=False, max_reject_rate=1.0)
    events = read_events(tmp_path / "keep").to_pylist()
    assert [e["event_type"] for e in events] == ["deposit", "fee", "withdrawal", "interest", "withdrawal",
                                                 "NOVY|TYP|"]
    assert [e["amount"] for e in events] == [50.0, -15.0, -10.0, 2.5, -5.0, 0.5]
    assert [e["item"] for e in events] == [None, "statement_fee", None, "interest", None, None]
    assert report.rejects_by_reason == {"missing_event_type": 1}
    assert any("'NOVY|TYP|' (1)" in warning for warning in report.warnings)

    mapping["event_type"]["unmapped"] = "reject"
    report = ingest([source], write_mapping(tmp_path, mapping, "reject.yaml"), tmp_path / "reject",
                    progress=False, max_reject_rate=1.0)
    assert report.rejects_by_reason == {"missing_event_type": 1, "unmapped_event_type": 1}
    rejects = read_rejects(tmp_path / "reject")
    assert rejects[0]["row"] == 6 and rejects[0]["value"] == "NOVY|TYP|"
    assert rejects[0]["column"] == "type, operation, k"


# ------------------------------------------------------------------------------------------ labels


def test_labels_table_with_positive_negative_and_unknown_values(tmp_path: Path) -> None:
    source = tmp_path / "loans.csv"
    source.write_text('"loan";"acct";"date";"status";"churn"\n1;10;930705;"B";1\n2;11;930711;"A";0\n'
                      '3;12;930712;"D";\n4;13;930713;"";1\n5;14;930714;"X";0\n6;15;930715;"C";2\n')
    mapping = {
        "kind": "labels",
        "source": {"delimiter": ";"},
        "timestamp": {"format": "%y%m%d", "timezone": "Europe/Prague"},
        "labels": {"customer_id": "acct", "cutoff": "date",
                   "targets": {"default": {"column": "status", "positive": ["B", "D"], "negative": ["A", "C"]},
                               "churned": "churn"}},
    }
    out = tmp_path / "labels"
    report = ingest([source], write_mapping(tmp_path, mapping), out, progress=False, max_reject_rate=1.0)
    labels = pq.read_table(out / "labels.parquet")
    assert labels.schema.field("cutoff").type == pa.timestamp("us", tz="UTC")
    assert labels.column("customer_id").to_pylist() == ["10", "11", "12", "13"]
    assert labels.column("default").to_pylist() == [1.0, 0.0, 1.0, None]
    assert labels.column("churned").to_pylist() == [1.0, 0.0, None, 1.0]
    assert labels.column("cutoff")[0].as_py() == utc(1993, 7, 4, 22)
    assert report.label_counts == {"default": {"positive": 2, "negative": 1, "unknown": 1},
                                   "churned": {"positive": 2, "negative": 1, "unknown": 1}}
    rejects = read_rejects(out)
    assert [(r["row"], r["reason"], r["column"], r["value"]) for r in rejects] == [
        (5, "bad_label", "status", "X"), (6, "bad_label", "churn", "2")]
    assert "['B', 'D'] (1)" in rejects[0]["expected"]
    assert (report.rows_read, report.rows_written, report.rows_rejected) == (6, 4, 2)
    assert not (out / "events").exists() and (out / REPORT_FILE).exists()
    assert pc.all(pc.is_valid(labels.column("cutoff"))).as_py()


def test_row_numbers_stay_right_across_csv_read_blocks(tmp_path: Path) -> None:
    """A 2 MiB file is parsed in several 1 MiB blocks; malformed rows must not shift later row numbers."""
    malformed, bad_amount = {5_000, 25_000, 39_999}, {25_001, 40_000, 60_000}
    rows = []
    for i in range(1, 60_001):
        if i in malformed:
            rows.append(f"c{i},2024-01-15 10:00,login")
        else:
            rows.append(f"c{i},2024-01-15 10:00,login,,{'zz' if i in bad_amount else ''}{i},app")
    report, out, _ = run(tmp_path, rows, chunk_rows=7_777)
    assert (tmp_path / "events.csv").stat().st_size > 2 * 2**20 * 0.9
    rejects = read_rejects(out)
    assert [r["row"] for r in rejects] == sorted(malformed | bad_amount)
    for reject in rejects:  # each reject carries the value of its own row
        if reject["reason"] == "malformed_row":
            assert reject["value"] == f"c{reject['row']},2024-01-15 10:00,login"
        else:
            assert reject["value"] == f"zz{reject['row']}"
    events = read_events(out)
    assert report.rows_written == events.num_rows == 60_000 - 6
    numbers = [int(c[1:]) for c in events.column("customer_id").to_pylist()]
    assert numbers == [float(a) for a in events.column("amount").to_pylist()]


def test_the_same_file_twice_is_refused(tmp_path: Path) -> None:
    source = write_csv(tmp_path, GOOD_ROWS)
    with pytest.raises(IngestError, match="given twice"):
        ingest([source, tmp_path / "." / "events.csv"], write_mapping(tmp_path, bank_mapping()), tmp_path / "o",
               progress=False, max_reject_rate=1.0)


def test_long_values_are_shortened_in_messages_but_kept_in_rejects(tmp_path: Path) -> None:
    long_amount = "9" * 150 + "x" * 150
    report, out, _ = run(tmp_path, [f"c1,2024-01-15 10:00,login,,{long_amount},app"])
    assert "... (300 characters)" in report.reject_examples["bad_number"]
    assert read_rejects(out)[0]["value"] == long_amount


# ------------------------------------------------------------------------------------------ docs/mapping-format.md

MAPPING_DOC = Path(__file__).resolve().parents[2] / "docs" / "mapping-format.md"


def doc_block(heading: str, language: str) -> str:
    """The first ``language`` code block after ``heading`` in docs/mapping-format.md."""
    text = MAPPING_DOC.read_text(encoding="utf-8")
    section = text[text.index(f"\n{heading}\n"):]
    start = section.index(f"```{language}\n") + len(f"```{language}\n")
    return section[start:section.index("\n```", start)] + "\n"


def test_the_documented_full_example_mapping_ingests_as_described(tmp_path: Path) -> None:
    mapping_path = tmp_path / "example.yaml"
    mapping_path.write_text(doc_block("## A full example", "yaml"), encoding="utf-8")
    documented_rows = doc_block("## A full example", "text")  # title line, header and the two rows described
    source = tmp_path / "export.csv"
    source.write_text(documented_rows + "\n".join([
        "3;c2; 01.02.2024 12:00 ;ATM;D;;ATM;20000;1500",  # whitespace stripped
        "4;c2;25.01.2024 06:00;SAL;C;;;250000;3500",  # a credit keeps its sign
        "5;c2;31.01.2024 23:59;FEE;D;5999;BR;150;3485",  # glob 59* -> retail
        "6;c3;31.03.2024 02:30;CARD;D;5812;MB;990;10",  # in the spring gap; code 5812 not in the map: kept
        "7;c3;01.02.2024 10:00;WIRE;D;;IB;100;0",  # unmapped: reject
        "8;c3;01.01.1999 10:00;CARD;D;5411;MB;100;0",  # before valid_from
        "9;c3;01.02.2024 10:00;CARD;D;5411;MB;12,50;0",  # decimal comma
    ]) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    report = ingest([source], mapping_path, out, progress=False, max_reject_rate=1.0)

    events = read_events(out)
    documented = yaml.safe_load(mapping_path.read_text())
    config = DatasetConfig.load(out / "dataset.yaml")
    assert config == DatasetConfig.from_dict(documented["dataset"])
    assert events.schema == config.arrow_schema()
    assert events.column_names == ["customer_id", "ts", "event_type", "event_id", "item", "channel", "amount",
                                   "balance"]
    rows = events.to_pylist()
    amounts = [row.pop("amount") for row in rows]
    assert amounts == pytest.approx([-12.5, None, -200.0, 2500.0, -1.5, -9.9])  # cents, debits negative
    assert rows == [
        # the two rows the document describes
        {"customer_id": "c1", "ts": utc(2024, 1, 15, 9), "event_type": "card_payment", "event_id": "1",
         "item": "groceries", "channel": "app", "balance": 987.5},
        {"customer_id": "c1", "ts": utc(2024, 7, 15, 6, 30), "event_type": "login", "event_id": "2",
         "item": None, "channel": "web", "balance": None},
        {"customer_id": "c2", "ts": utc(2024, 2, 1, 11), "event_type": "cash_withdrawal", "event_id": "3",
         "item": None, "channel": "atm", "balance": 1500.0},
        {"customer_id": "c2", "ts": utc(2024, 1, 25, 5), "event_type": "salary", "event_id": "4",
         "item": None, "channel": None, "balance": 3500.0},
        {"customer_id": "c2", "ts": utc(2024, 1, 31, 22, 59), "event_type": "fee", "event_id": "5",
         "item": "retail", "channel": "branch", "balance": 3485.0},
        {"customer_id": "c3", "ts": utc(2024, 3, 31, 1), "event_type": "card_payment", "event_id": "6",
         "item": "5812", "channel": "app", "balance": 10.0},
    ]
    rejects = read_rejects(out)
    assert [(r["row"], r["reason"], r["column"], r["value"]) for r in rejects] == [
        (7, "unmapped_event_type", "kind, direction", "WIRE|D"),
        (8, "timestamp_out_of_range", "booked", "01.01.1999 10:00"),
        (9, "bad_number", "amount_cents", "12,50"),
    ]
    assert (report.rows_read, report.rows_written, report.rows_rejected) == (9, 6, 3)
    assert report.event_types == {"card_payment": 2, "login": 1, "cash_withdrawal": 1, "salary": 1, "fee": 1}


def test_the_documented_labels_example_mapping_ingests(tmp_path: Path) -> None:
    mapping_path = tmp_path / "labels.yaml"
    mapping_path.write_text(doc_block("## Labels tables (`kind: labels`)", "yaml"), encoding="utf-8")
    source = write_csv(tmp_path, ['1;930105;A;0', '2;930106;"D";1', '3;930107;B;', '4;930108;X;1'],
                       name="loans.csv", header="account_id;date;status;churn_flag")
    report = ingest([source], mapping_path, tmp_path / "out", progress=False, max_reject_rate=1.0)
    labels = pq.read_table(tmp_path / "out" / "labels.parquet")
    assert labels.column_names == ["customer_id", "cutoff", "default", "churned"]
    assert labels.to_pylist() == [
        {"customer_id": "1", "cutoff": utc(1993, 1, 4, 23), "default": 0.0, "churned": 0.0},
        {"customer_id": "2", "cutoff": utc(1993, 1, 5, 23), "default": 1.0, "churned": 1.0},
        {"customer_id": "3", "cutoff": utc(1993, 1, 6, 23), "default": 1.0, "churned": None},
    ]
    assert report.rejects_by_reason == {"bad_label": 1}  # X is neither positive nor negative


# ------------------------------------------------------------------------------------------ non-finite numbers, {}


def test_non_finite_numbers_are_rejected_in_every_format(tmp_path: Path) -> None:
    """NaN, ±Infinity and values that overflow float64 (1e400) are bad numbers: counted, with row and field."""
    texts = ["NaN", "nan", "inf", "-Infinity", "1e400", "-1e400"]
    report, out, _ = run(tmp_path, [f"c{i},2024-01-15 10:00,card_payment,x,{t},app" for i, t in enumerate(texts)]
                         + ["c9,2024-01-15 10:00,card_payment,x,1.5,app"])
    assert (report.rows_written, report.rejects_by_reason) == (1, {"bad_number": 6})
    assert [(r["row"], r["column"], r["value"]) for r in read_rejects(out)] == [
        (i + 1, "amt", t) for i, t in enumerate(texts)]
    # JSON Lines: bare NaN / Infinity (Python's json reads them) and 1e400 (read as inf)
    lines = ['{"cust": "c1", "when": "2024-01-15 10:00", "kind": "x", "amt": ' + t + "}"
             for t in ("NaN", "Infinity", "-Infinity", "1e400", "2.5")]
    source = tmp_path / "events.jsonl"
    source.write_text("\n".join(lines) + "\n")
    report = ingest([source], write_mapping(tmp_path, bank_mapping()), tmp_path / "j", progress=False,
                    max_reject_rate=1.0)
    assert (report.rows_written, report.rejects_by_reason) == (1, {"bad_number": 4})
    assert read_events(tmp_path / "j").column("amount").to_pylist() == [2.5]
    # Parquet: float columns holding NaN and ±inf
    parquet = tmp_path / "events.parquet"
    pq.write_table(pa.table({"cust": ["a", "b", "c", "d"], "when": ["2024-01-15 10:00"] * 4, "kind": ["x"] * 4,
                             "merchant": ["m"] * 4, "chan": ["app"] * 4,
                             "amt": [float("nan"), float("inf"), -float("inf"), 3.0]}), parquet)
    report = ingest([parquet], write_mapping(tmp_path, bank_mapping()), tmp_path / "p", progress=False,
                    max_reject_rate=1.0)
    assert (report.rows_written, report.rejects_by_reason) == (1, {"bad_number": 3})
    assert [r["row"] for r in read_rejects(tmp_path / "p")] == [1, 2, 3]


def test_empty_json_records_are_rejected_not_a_crash(tmp_path: Path) -> None:
    """A `{}` record (no column at all) is a row without a customer id: rejected, alone in a chunk or not."""
    good = json.dumps({"cust": "c1", "when": "2024-01-15 10:00", "kind": "login"})
    source = tmp_path / "events.jsonl"
    source.write_text("\n".join([good, "{}", "{}", good, "{}"]) + "\n")
    for chunk_rows in (1, 2, 100):
        out = tmp_path / f"out{chunk_rows}"
        report = ingest([source], write_mapping(tmp_path, bank_mapping()), out, progress=False, chunk_rows=chunk_rows,
                        max_reject_rate=1.0)
        assert (report.rows_written, report.rows_rejected) == (2, 3)
        rejects = read_rejects(out)
        assert [(r["row"], r["reason"]) for r in rejects] == [
            (2, "missing_customer_id"), (3, "missing_customer_id"), (5, "missing_customer_id")]
        assert all(set(json.loads(r["raw"]).values()) <= {None} for r in rejects)  # {} or the chunk's keys, null


def test_reject_rate_limit(tmp_path: Path) -> None:
    rows = [*GOOD_ROWS, "c9,never,login,,,app"]  # 1 of 6 rejected: 16.7 %
    with pytest.raises(IngestError, match=r"1 of 6 rows rejected \(16\.7%, above --max-reject-rate 10\.0%"):
        run(tmp_path, rows, max_reject_rate=0.1)
    assert (tmp_path / "out" / "rejects").is_dir() and not (tmp_path / "out" / "events").exists()
    report, _, _ = run(tmp_path, rows, max_reject_rate=0.2)  # the same folder: the failed run left no report
    assert report.rows_rejected == 1
    with pytest.raises(IngestError, match="max_reject_rate must be between 0 and 1"):
        run(tmp_path, rows, out_name="o2", max_reject_rate=5)


# ------------------------------------------------------------------------------------------ pseudonymisation

KEY = "k" * 40


def test_pseudonymised_ingest_holds_no_raw_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from journey_model.core.pseudonyms import KEY_ENV, pseudonymise

    monkeypatch.setenv(KEY_ENV, KEY)
    mapping = bank_mapping(pseudonymise=["item"])
    rows = ["Anna.Novak,2024-01-15 10:00,card_payment,Grocery Shop,-12.50,app",
            " Anna.Novak ,2024-01-18 10:00,login,,,app",  # the same id once cleaned, as without pseudonyms
            "Boris.Kral,2024-01-16 09:30,card_payment,Fuel Station,-40,app",
            "Boris.Kral,never,login,,,app",  # rejected: its value and raw row hold pseudonyms
            "Cyril.Muller,2024-01-19,x,y,1,2,3"]  # malformed: its raw text is redacted
    report, out, _ = run(tmp_path, rows, mapping=mapping)
    events = read_events(out)
    expected = pseudonymise(pa.array(["Anna.Novak", "Anna.Novak", "Boris.Kral"]), KEY.encode()).to_pylist()
    assert events.column("customer_id").to_pylist() == expected
    assert all(v is None or v.startswith("p_") and len(v) == 26 for v in events.column("item").to_pylist())
    assert report.pseudonymised == ["customer_id", "item"] and report.pseudonym_key_id
    written = b"".join(path.read_bytes() for path in out.rglob("*") if path.is_file())
    for raw in (b"Anna", b"Boris", b"Cyril", b"Grocery", b"Fuel", KEY.encode()):
        assert raw not in written, raw  # not in events, rejects (values, raw rows, malformed text) nor the report
    rejects = read_rejects(out)
    assert [r["reason"] for r in rejects] == ["bad_timestamp", "malformed_row"]
    assert json.loads(rejects[0]["raw"])["cust"] == expected[2] and rejects[1]["raw"].startswith("<redacted")
    # another key, other pseudonyms; no key or a short key: refused before anything is written
    monkeypatch.setenv(KEY_ENV, "x" * 40)
    run(tmp_path, rows[:3], out_name="other", pseudonymise=True)
    assert set(read_events(tmp_path / "other").column("customer_id").to_pylist()).isdisjoint(expected)
    monkeypatch.setenv(KEY_ENV, "short")
    with pytest.raises(ValueError, match="at least 32"):
        run(tmp_path, GOOD_ROWS, out_name="short", pseudonymise=True)
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(ValueError, match="JOURNEY_PSEUDONYM_KEY is not set"):
        run(tmp_path, GOOD_ROWS, out_name="none", pseudonymise=True)
    assert not (tmp_path / "none").exists() and not (tmp_path / "short").exists()
    with pytest.raises(IngestError, match="'amount' is not a text field"):
        run(tmp_path, GOOD_ROWS, out_name="bad", mapping=bank_mapping(pseudonymise=["amount"]))

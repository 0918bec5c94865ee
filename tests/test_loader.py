"""``importapi push`` and ``importapi.loader``: every input format, refusals named by input
line, resuming with ``--skip``, progress; against the app in process and the real server."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from importapi.loader import InputError, Load, format_of, infer, parse_keys, run
from tests.faults import FaultProxy, Faults, LoopTransport, faulty
from tests.helpers import Api, Server, run_cli, start_server, stop_server, wait_until

# Refusals, resuming and progress are the loader's and validation's, decided before the
# warehouse: those tests run on SQLite. Reading each format into stored values runs on both.


def jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def people(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"id": i, "name": f"person {i}", "score": i / 4} for i in range(start, start + n)]


def push(api: Api, *files: Path | str, faults: Faults | None = None, **options: Any) -> tuple[int, str, str]:
    """``run`` in process, as ``importapi push`` would, against the app."""
    options.setdefault("progress_interval", 3600.0)
    load = Load(
        options.pop("table", "people"),
        [str(f) for f in files],
        api.key,
        url="http://testserver",
        client_id=api.client_id,
        **options,
    )
    app = api.http.app if faults is None else faulty(api.http.app, faults)
    out, err = io.StringIO(), io.StringIO()
    code = run(load, out, err, transport=LoopTransport(app, api.http.loop))
    return code, out.getvalue(), err.getvalue()


def stored(api: Api, table: str = "people", columns: str = "*") -> list[dict[str, Any]]:
    names, rows = api.storage.warehouse.query(api.client_id, f'SELECT {columns} FROM "{table}" ORDER BY id')
    return [dict(zip(names, r)) for r in rows]


@pytest.fixture(scope="module")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("loader")
    server = start_server(folder / "warehouse", folder / "server.log", {"IMPORTAPI_ACCESS_LOG": "0"})
    yield server
    stop_server(server)


def cli_env(server: Server, url: str | None = None) -> dict[str, str]:
    return {"IMPORTAPI_API_KEY": server.key, "IMPORTAPI_URL": url or server.base}


# --- reading ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "value"),
    [
        ("12", 12),
        ("-3", -3),
        ("0", 0),
        ("007", "007"),
        ("1.5", 1.5),
        ("-2e3", -2000.0),
        ("true", True),
        ("FALSE", False),
        ("", None),
        ("inf", "inf"),
        ("nan", "nan"),
        ("1e999", "1e999"),
        ("12 ", "12 "),
        ("+1", "+1"),
        ("yes", "yes"),
        ("123456789012345678901234567890", 123456789012345678901234567890),
    ],
)
def test_csv_cells_are_inferred_per_value(cell: str, value: Any) -> None:
    assert infer(cell) == value and type(infer(cell)) is type(value)


def test_format_comes_from_the_extension_or_the_option() -> None:
    assert [format_of(p, None) for p in ("a.csv", "b.JSON", "c.jsonl", "d.ndjson")] == [
        "csv",
        "json",
        "jsonl",
        "jsonl",
    ]
    assert format_of("-", "csv") == "csv" and format_of("x.txt", "jsonl") == "jsonl"
    with pytest.raises(InputError, match="--format"):
        format_of("-", None)
    with pytest.raises(InputError, match="extension"):
        format_of("data.txt", None)
    assert parse_keys("id, region") == ["id", "region"]
    with pytest.raises(InputError):
        parse_keys("id,,x")


def test_json_lines(api: Api, tmp_path: Path) -> None:
    path = tmp_path / "people.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" + ("\n" if r["id"] == 3 else "") for r in people(250)))
    code, out, err = push(api, path, keys=["id"])
    assert code == 0, err
    assert "250 records pushed to people in 3 requests: 250 inserted, 0 replaced, 0 retries" in out
    assert stored(api)[249] == {"id": 249, "name": "person 249", "score": 62.25}


def test_a_json_array_is_streamed_and_records_keep_their_own_keys(api: Api, tmp_path: Path) -> None:
    path = tmp_path / "people.json"
    path.write_text(json.dumps([{"keys": ["id"], **r} for r in people(130)], indent=2))
    code, out, err = push(api, path)
    assert code == 0, err
    assert "130 records pushed" in out and len(stored(api)) == 130


def test_one_json_object(api: Api, tmp_path: Path) -> None:
    path = tmp_path / "one.json"
    path.write_text('  {"keys": ["id"], "id": 7, "big": 123456789012345678901234567890}')
    assert push(api, path)[0] == 0
    assert stored(api, columns="id, big") == [{"id": 7, "big": "123456789012345678901234567890"}]


def test_csv_as_strings_or_with_inferred_types(api: Api, tmp_path: Path) -> None:
    path = tmp_path / "people.csv"
    with path.open("w", newline="", encoding="utf-8-sig") as f:  # with a BOM, as spreadsheets write
        w = csv.writer(f)
        w.writerow(["id", "name", "score", "active", "note"])
        w.writerow(["1", "Ann, the first", "2.5", "true", ""])
        w.writerow(["2", "Bo\non two lines", "3", "false", "x"])
    assert push(api, path, keys=["id"], table="text")[0] == 0
    assert push(api, path, keys=["id"], table="typed", infer_types=True)[0] == 0
    assert stored(api, "text")[0] == {
        "id": "1",
        "name": "Ann, the first",
        "score": "2.5",
        "active": "true",
        "note": "",
    }
    assert stored(api, "typed") == [
        {"id": 1, "name": "Ann, the first", "score": 2.5, "active": 1, "note": None},
        {"id": 2, "name": "Bo\non two lines", "score": 3.0, "active": 0, "note": "x"},
    ]


@pytest.mark.backends("sqlite")
def test_csv_needs_keys_and_a_well_formed_table(api: Api, tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("id,name\n1,a\n2,b,extra\n")
    with pytest.raises(InputError, match="--keys"):
        push(api, path)
    code, out, err = push(api, path, keys=["id"])
    assert code == 1 and "1 record pushed" in out
    assert "p.csv line 3: 3 cells where the header has 2" in err
    assert "--skip 1" in err and stored(api) == [{"id": "1", "name": "a"}]


def test_stdin_is_streamed_in_every_format(real_server: Server, tmp_path: Path) -> None:
    inputs = {
        "jsonl": "".join(json.dumps(r) + "\n" for r in people(120)),
        "json": json.dumps(people(120)),
        "csv": "id,name\n" + "".join(f"{i},n{i}\n" for i in range(120)),
    }
    for fmt, text in inputs.items():
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "importapi",
                "push",
                f"stdin_{fmt}",
                "-",
                "--format",
                fmt,
                "--keys",
                "id",
                "--json",
            ],
            input=text,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, **cli_env(real_server)},
        )
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout)
        assert (summary["records"], summary["inserted"], summary["requests"]) == (120, 120, 2), fmt


def test_several_files_in_one_push(api: Api, tmp_path: Path) -> None:
    a = jsonl(tmp_path / "a.jsonl", people(60))
    b = tmp_path / "b.csv"
    b.write_text("id,name\n" + "".join(f"{i},n{i}\n" for i in range(60, 100)))
    code, out, _ = push(api, a, b, keys=["id"], infer_types=True)
    assert code == 0 and "100 records pushed" in out and len(stored(api)) == 100


# --- refusals and resuming -------------------------------------------------------------------


def test_a_refused_record_in_the_middle_of_a_file_stops_the_load_and_says_how_to_resume(
    real_server: Server, tmp_path: Path
) -> None:
    records: list[Any] = people(1000)
    records[436] = {"name": "nobody"}
    path = jsonl(tmp_path / "people.jsonl", records)
    done = run_cli(
        "push", "middle", str(path), "--keys", "id", "--concurrency", "1", env=cli_env(real_server)
    )
    assert done.returncode == 1
    assert "400 records pushed to middle in 4 requests" in done.stdout
    assert (
        "Error: the server refused the request holding records 401-500 "
        f"({path} lines 401-500): 400 Bad Request"
    ) in done.stderr
    assert f"  {path} line 437: key field 'id' is missing" in done.stderr
    resume = re.search(r"^  (importapi push .*)$", done.stderr, re.MULTILINE)
    assert resume and resume.group(1).endswith("--skip 400")

    records[436] = {"id": 436, "name": "fixed"}
    jsonl(path, records)
    args = resume.group(1).split()[1:]
    again = run_cli(*args, env=cli_env(real_server))
    assert again.returncode == 0, again.stderr
    assert "600 records pushed to middle in 6 requests, after skipping 400: 600 inserted" in again.stdout


@pytest.mark.backends("sqlite")
def test_a_refusal_with_requests_in_flight_resumes_from_the_last_acknowledged(
    api: Api, tmp_path: Path
) -> None:
    records: list[Any] = people(2000)
    records[1234] = {"id": [1]}
    path = jsonl(tmp_path / "p.jsonl", records)
    code, out, err = push(api, path, keys=["id"], concurrency=4, as_json=True)
    summary = json.loads(out)
    assert code == 1 and summary["status"] == "refused" and summary["resume_skip"] == 1200
    assert "p.jsonl line 1,235: key field 'id'" in err and "--skip 1200" in err
    assert len(stored(api)) >= 1200


@pytest.mark.backends("sqlite")
def test_resume_with_skip_counts_records_across_files(api: Api, tmp_path: Path) -> None:
    a = jsonl(tmp_path / "a.jsonl", people(30))
    b = jsonl(tmp_path / "b.jsonl", people(30, start=30))
    code, out, _ = push(api, a, b, keys=["id"], skip=45, as_json=True)
    assert code == 0 and json.loads(out)["records"] == 15
    assert [r["id"] for r in stored(api)] == list(range(45, 60))


@pytest.mark.backends("sqlite")
def test_unreadable_input_stops_after_what_was_read(api: Api, tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in people(150)) + '{"id": 150,\n')
    code, out, err = push(api, path, keys=["id"])
    assert code == 1 and "150 records pushed" in out
    assert "Error: " + str(path) + " line 151: not valid JSON" in err and "--skip 150" in err


def test_retries_show_in_the_summary(real_server: Server, tmp_path: Path) -> None:
    path = jsonl(tmp_path / "p.jsonl", people(300))
    with FaultProxy(
        real_server.base, Faults("pass", "503", "drop", "pass", "429")
    ) as proxy:  # "pass": the key check
        done = run_cli(
            "push", "retried", str(path), "--keys", "id", "--json", env=cli_env(real_server, proxy.url)
        )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["records"], summary["retries"], summary["acknowledged"]) == (300, 3, 300)


def test_a_wrong_key_fails_before_reading_anything(real_server: Server, tmp_path: Path) -> None:
    path = jsonl(tmp_path / "p.jsonl", people(3))
    done = run_cli(
        "push",
        "nope",
        str(path),
        "--keys",
        "id",
        env={**cli_env(real_server), "IMPORTAPI_API_KEY": "imp_000000000000_wrong"},
    )
    assert done.returncode == 1 and "not a live key of client 1" in done.stderr
    missing = run_cli(
        "push", "nope", str(path), env={"IMPORTAPI_URL": real_server.base, "IMPORTAPI_API_KEY": ""}
    )
    assert missing.returncode == 2 and "--api-key" in missing.stderr


@pytest.mark.backends("sqlite")
def test_sandbox_and_gzip(api: Api, tmp_path: Path) -> None:
    path = jsonl(tmp_path / "p.jsonl", people(120))
    faults = Faults()
    code, out, _ = push(api, path, keys=["id"], sandbox=True, gzip=True, faults=faults)
    assert code == 0 and "in the sandbox (nothing stored)" in out and "120 inserted" in out
    assert api.storage.warehouse.tables(api.client_id) == []
    assert {s.content_encoding for s in faults.data_requests()} == {"gzip"}


# --- progress --------------------------------------------------------------------------------


@pytest.mark.backends("sqlite")
def test_plain_progress_lines_when_not_on_a_terminal(api: Api, tmp_path: Path) -> None:
    path = jsonl(tmp_path / "p.jsonl", people(300))
    code, _, err = push(api, path, keys=["id"], progress_interval=0.0)
    lines = err.strip().splitlines()
    assert code == 0 and len(lines) >= 3
    assert re.fullmatch(
        r"people: 300 records \(100\.0%\) in 3 requests, [\d,]+ records/s, 0 retries, "
        r"[\d.]+ s",
        lines[-1],
    )


def test_a_live_progress_bar_on_a_terminal(real_server: Server, tmp_path: Path) -> None:
    import pty

    path = jsonl(tmp_path / "p.jsonl", people(3000))
    main, child = pty.openpty()
    env = {**os.environ, **cli_env(real_server), "TERM": "xterm-256color", "COLUMNS": "140"}
    env.pop("NO_COLOR", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "importapi", "push", "tty", str(path), "--keys", "id"],
        stdin=subprocess.DEVNULL,
        stdout=child,
        stderr=child,
        env=env,
    )
    os.close(child)
    output = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the terminal is gone once the process has exited
            break
        if not chunk:
            break
        output += chunk
    os.close(main)
    assert process.wait(timeout=60) == 0
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output.decode("utf-8", "replace"))
    assert "━" in screen and "100%" in screen
    assert re.search(r"3,000 records\s+[\d,]+ records/s", screen)
    assert "3,000 records pushed to tty in 30 requests" in screen


def test_ctrl_c_stops_after_what_was_sent_and_says_how_to_resume(real_server: Server) -> None:
    import signal
    import sqlite3

    def stored_rows() -> int:
        try:
            with closing(
                sqlite3.connect(f"file:{real_server.data_dir / 'client_1.sqlite3'}?mode=ro", uri=True)
            ) as db:
                return int(db.execute("SELECT count(*) FROM interrupted").fetchone()[0])
        except sqlite3.OperationalError:  # no table yet
            return 0

    process = subprocess.Popen(
        [sys.executable, "-m", "importapi", "push", "interrupted", "-", "--format", "jsonl", "--keys", "id"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **cli_env(real_server)},
    )
    assert process.stdin is not None
    # 250 records, and the pipe stays open: two requests go out, and the loader waits for more.
    process.stdin.write("".join(json.dumps(r) + "\n" for r in people(250)))
    process.stdin.flush()
    wait_until(lambda: stored_rows() == 200, timeout=30, what="two requests stored")
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130
    assert "200 records pushed to interrupted in 2 requests" in out
    assert "feeding it the same input" in err and err.rstrip().endswith("--skip 200")

"""The command line as a script sees it: exit codes, stdout, stderr, documents."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from conftest import Cli, Result, Target, capture_path, fixture_text
from memsnap.store.database import open_database

if TYPE_CHECKING:
    from memsnap.model import Region, Snapshot

LOCAL_SMAPS = "local-linux6.18-x86_64-c-program-sysv-memfd-deleted-newline-rwx-thread-smaps.txt"
LOCAL_MAPS = "local-linux6.18-x86_64-c-program-sysv-memfd-deleted-newline-rwx-thread-maps.txt"


def imported(cli: Cli, name: str, pid: int = 4242, *extra: str) -> int:
    done = cli("record", "--from-file", str(capture_path(name)), "--pid", str(pid), *extra)
    assert done.exit_code == 0, done.stderr
    return int(done.stdout.split()[1].rstrip(":"))


def one_line_error(result: Result, code: int) -> str:
    assert result.exit_code == code, result
    err = str(result.stderr)
    assert "Traceback" not in err and 1 <= len(err.strip().splitlines()) <= 2, err
    assert result.stdout == ""
    return err


def test_import_from_standard_input_keeps_smaps_sizes(sqlite_cli: Cli) -> None:
    done = sqlite_cli(
        "record",
        "--from-file",
        "-",
        "--pid",
        "77",
        "--label",
        "bug #12",
        input=fixture_text(LOCAL_SMAPS),
    )
    assert done.exit_code == 0, done.stderr
    assert done.stdout.startswith("snapshot 1: pid 77 (layout-demo), 37 regions")
    doc = json.loads(sqlite_cli("show", "1", "--format", "json").stdout)
    assert doc["format"] == 1 and doc["snapshot"]["label"] == "bug #12"
    assert doc["snapshot"]["source"] == "file"
    heap = next(r for r in doc["regions"] if r["kind"] == "heap")
    assert heap["rss"] is not None and heap["start"] == "0x5625c0f08000"


def test_maps_import_has_null_sizes_never_zero(sqlite_cli: Cli) -> None:
    imported(sqlite_cli, LOCAL_MAPS)
    doc = json.loads(sqlite_cli("show", "1", "--format", "json").stdout)
    assert all(r["rss"] is None and r["pss"] is None for r in doc["regions"])
    assert doc["snapshot"]["totals"]["rss"] is None


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["record", "--from-file", "x"], 2, "--pid"),
        (["record"], 2, "PID"),
        (["record", "--from-file", "/nonexistent/maps", "--pid", "1"], 1, "no such file"),
        (["record", "999999999"], 1, "no such process"),
        (["record", "notapid"], 2, "PID"),
        (["show"], 2, "ID"),
        (["show", "1", "--at", "now"], 2, "one of them"),
        (["show", "5"], 1, "no snapshot 5"),
        (["show", "1", "--style", "nonsense"], 2, "--style"),
        (["show", "1", "--kind", "bogus"], 2, "--kind"),
        (["show", "--at", "half past nine"], 2, "cannot read the time"),
        (["list", "--since", "soonish"], 2, "cannot read the time"),
        (["list", "--name", "("], 2, "regular expression"),
        (["list", "--format", "xml"], 2, "xml"),
        (["show", "1", "--no-such-option"], 2, "--no-such-option"),
    ],
)
def test_errors_are_one_or_two_plain_lines(
    sqlite_cli: Cli, args: list[str], code: int, needle: str
) -> None:
    open_database(sqlite_cli.url).close()  # an empty memsnap database
    err = one_line_error(sqlite_cli(*args), code)
    assert needle in err


def test_malformed_import_names_the_line_and_stores_nothing(
    sqlite_cli: Cli, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text(fixture_text(LOCAL_MAPS) + "this is not a maps line\n")
    err = one_line_error(sqlite_cli("record", "--from-file", str(bad), "--pid", "1"), 1)
    assert "line 38" in err and "this is not a maps line" in err
    assert sqlite_cli("list", "--format", "json").stdout.count('"id"') == 0


@pytest.mark.live
def test_kernel_thread_is_refused(sqlite_cli: Cli) -> None:
    comm = Path("/proc/2/comm")
    if not comm.exists() or comm.read_text().strip() != "kthreadd":
        pytest.skip("this machine's pid 2 is not kthreadd (a container's pid namespace)")
    err = one_line_error(sqlite_cli("record", "2"), 1)
    assert "kernel thread" in err and "pid 2" in err


@pytest.mark.live
def test_several_pids_one_failing(sqlite_cli: Cli, target: Target) -> None:
    done = sqlite_cli("record", str(target.pid), "999999999", str(os.getpid()))
    assert done.exit_code == 1
    assert "pid 999999999: no such process" in done.stderr
    assert len(done.stdout.splitlines()) == 2


def test_list_filters_and_formats(sqlite_cli: Cli) -> None:
    imported(sqlite_cli, LOCAL_MAPS, 10, "--label", "first")
    imported(sqlite_cli, "bs_prog00-ubuntu-glibc2.35-gdb-noaslr-maps.txt", 20)
    imported(sqlite_cli, LOCAL_MAPS, 10, "--label", "third")
    table = sqlite_cli("list").stdout.splitlines()
    assert table[0].split()[:4] == ["id", "taken", "at", "pid"]
    assert [line.split()[0] for line in table[2:]] == ["3", "2", "1"]
    by_pid = json.loads(sqlite_cli("list", "--pid", "10", "--format", "json").stdout)
    assert [s["id"] for s in by_pid["snapshots"]] == [3, 1]
    by_name = json.loads(sqlite_cli("list", "--name", "^prog", "--format", "json").stdout)
    assert [s["command"] for s in by_name["snapshots"]] == ["program"]
    limited = json.loads(sqlite_cli("list", "--limit", "1", "--format", "json").stdout)
    assert [s["label"] for s in limited["snapshots"]] == ["third"]
    assert json.loads(sqlite_cli("list", "--since", "1h ago", "--format", "json").stdout)[
        "snapshots"
    ]
    assert (
        json.loads(sqlite_cli("list", "--until", "1h ago", "--format", "json").stdout)["snapshots"]
        == []
    )
    rows = list(csv.DictReader(io.StringIO(sqlite_cli("list", "--format", "csv").stdout)))
    assert [r["id"] for r in rows] == ["3", "2", "1"] and rows[0]["label"] == "third"


def test_show_table_has_the_columns_of_the_original_program(sqlite_cli: Cli) -> None:
    imported(sqlite_cli, LOCAL_SMAPS)
    out = sqlite_cli("show", "1").stdout.splitlines()
    header = next(line for line in out if line.startswith("kind"))
    assert header.split() == ["kind", "start-end", "size", "pages", "perms", "rss", "path"]
    heap = next(line for line in out if line.startswith("heap"))
    # Addresses are padded to the widest one: [vsyscall] needs all 16 digits.
    assert heap.split()[:6] == [
        "heap",
        "00005625c0f08000-00005625c11ff000",
        "3.0",
        "MiB",
        "759",
        "rw-p",
    ]
    weird = next(line for line in out if "we ird" in line)
    assert weird.endswith("/var/tmp/demo/we ird\\012name.bin")  # one row, one line
    assert any(line.endswith("/var/tmp/demo/gone.bin (deleted)") for line in out)


def test_show_gaps_top_down_kind_and_summary(sqlite_cli: Cli) -> None:
    imported(sqlite_cli, LOCAL_SMAPS)
    plain = json.loads(sqlite_cli("show", "1", "--format", "json").stdout)["regions"]
    gaps = json.loads(sqlite_cli("show", "1", "--gaps", "--format", "json").stdout)["regions"]
    holes = [r for r in gaps if r["kind"] == "gap"]
    assert len(gaps) == len(plain) + len(holes) and holes
    for before, hole, after in zip(gaps, gaps[1:], gaps[2:], strict=False):
        if hole["kind"] == "gap":
            assert before["end"] == hole["start"] and hole["end"] == after["start"]
    down = json.loads(sqlite_cli("show", "1", "--top-down", "--format", "json").stdout)
    assert down["regions"] == list(reversed(plain))
    only = json.loads(
        sqlite_cli("show", "1", "--kind", "heap", "--kind", "stack", "--format", "json").stdout
    )["regions"]
    assert sorted(r["kind"] for r in only) == ["heap", "stack"]
    summary = json.loads(sqlite_cli("show", "1", "--summary", "--format", "json").stdout)
    assert summary["kinds"]["lib-text"]["regions"] == 3
    assert sum(k["size"] for k in summary["kinds"].values()) == sum(r["size"] for r in plain)
    table = sqlite_cli("show", "1", "--summary", "--style", "github").stdout
    assert "| lib-text" in table


def test_show_csv_has_every_region(sqlite_cli: Cli) -> None:
    imported(sqlite_cli, LOCAL_SMAPS)
    rows = list(csv.DictReader(io.StringIO(sqlite_cli("show", "1", "--format", "csv").stdout)))
    assert len(rows) == 37 and rows[0]["start"] == "0x5625a116b000"
    # A newline in a cell is shown as \x0a: one row, one line (the JSON has the exact text).
    weird = [r for r in rows if r["kind"] == "file"][1]
    assert weird["path"] == "/var/tmp/demo/we ird\\x0aname.bin"


def test_show_at_picks_the_process_by_pid(sqlite_cli: Cli) -> None:
    imported(sqlite_cli, LOCAL_MAPS, 10)
    imported(sqlite_cli, LOCAL_MAPS, 20)
    doc = json.loads(sqlite_cli("show", "--at", "now", "--pid", "20", "--format", "json").stdout)
    assert doc["snapshot"]["id"] == 2
    err = one_line_error(sqlite_cli("show", "--at", "1h ago", "--pid", "10"), 1)
    assert "nothing recorded" in err
    # Another import under pid 10 is another process: the pid no longer names one.
    imported(sqlite_cli, LOCAL_MAPS, 10)
    err = one_line_error(sqlite_cli("show", "--at", "now", "--pid", "10"), 1)
    assert "pid 10 names 2 recorded processes" in err and "memsnap show ID" in err


def test_colors_only_on_request_and_with_a_legend(
    sqlite_cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    import memsnap.cli.show_cmd
    from memsnap.cli.common import use_color
    from memsnap.render.snapshot import KIND_COLORS

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    # Requested: a terminal, and NO_COLOR not set; a pipe or NO_COLOR is plain text.
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setattr(sys, "stdout", Terminal())
    assert use_color()
    monkeypatch.setenv("NO_COLOR", "1")
    assert not use_color()
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert not use_color()
    monkeypatch.undo()

    imported(sqlite_cli, LOCAL_MAPS)
    plain = sqlite_cli("show", "1").stdout
    assert "\x1b[" not in plain and "legend" not in plain
    monkeypatch.setattr(memsnap.cli.show_cmd, "use_color", lambda: True)
    colored = sqlite_cli("show", "1").stdout
    heap = f"\x1b[{KIND_COLORS['heap']}m"
    assert any(line.startswith(heap + "heap") for line in colored.splitlines())
    legend = colored.splitlines()[-1]
    assert legend.startswith("legend: ") and f"{heap}heap\x1b[0m" in legend


def test_no_color_and_pipes_get_plain_text(sqlite_cli: Cli) -> None:
    imported(sqlite_cli, LOCAL_SMAPS)
    assert "\x1b[" not in sqlite_cli("show", "1").stdout


def test_every_command_has_help(sqlite_cli: Cli) -> None:
    import typer
    from typer.core import TyperGroup, TyperOption

    from memsnap.cli import app

    group = typer.main.get_command(app)
    assert isinstance(group, TyperGroup)
    names = group.list_commands(typer.Context(group))
    # The walk itself is checked: an empty or shrunken registry must not pass.
    assert {"record", "list", "show", "diff", "replay", "prune"} <= set(names)
    overview = sqlite_cli("--help")
    assert overview.exit_code == 0
    for name in names:
        command = group.commands[name]
        assert name in overview.stdout
        out = sqlite_cli(name, "--help")
        assert out.exit_code == 0 and out.stdout.startswith(f"Usage: memsnap {name} ")
        assert command.help and command.help.split("\n")[0].strip() in out.stdout
        for param in command.params:
            if isinstance(param, TyperOption) and not param.hidden:
                assert param.opts[0] in out.stdout, (name, param.opts)


def test_unopenable_database_is_exit_1(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"\x00" * 1000)
    err = one_line_error(Cli(str(path))("list"), 1)
    assert "not a memsnap database" in err


@pytest.mark.live
def test_a_command_gives_the_cycle_collector_back(sqlite_cli: Cli) -> None:
    import gc

    assert gc.isenabled()
    sqlite_cli("record", str(os.getpid()))
    assert sqlite_cli("list").exit_code == 0
    assert gc.isenabled()
    gc.disable()
    try:
        sqlite_cli("list")
        assert not gc.isenabled()  # nor turns it on where it was off
    finally:
        gc.enable()


@pytest.mark.parametrize("style", ["simple", "plain"])
def test_fast_table_is_exactly_tabulates(style: str) -> None:
    from tabulate import tabulate

    from memsnap.classify import classify
    from memsnap.parse import parse_text
    from memsnap.render.snapshot import SHOW_HEADERS, show_columns
    from memsnap.render.table import table

    mappings = parse_text(fixture_text(LOCAL_SMAPS)).mappings
    regions = [m._replace(kind=k) for m, k in zip(mappings, classify(mappings, None), strict=True)]
    for color in (False, True):
        rows = [list(row) for row in zip(*show_columns(regions, 4096, color), strict=True)]
        align = ("left", "left", "right", "right", "left", "right", "left")
        expected = tabulate(
            rows, headers=SHOW_HEADERS, tablefmt=style, disable_numparse=True, colalign=align
        )
        assert table(rows, SHOW_HEADERS, style, align) == expected


def test_colored_rows_take_their_kinds_color_and_a_legend() -> None:
    from memsnap.classify import classify
    from memsnap.parse import parse_text
    from memsnap.render.snapshot import KIND_COLORS, show_table

    mappings = parse_text(fixture_text(LOCAL_MAPS)).mappings
    regions = [m._replace(kind=k) for m, k in zip(mappings, classify(mappings, None), strict=True)]
    snap_out = show_table(_snapshot_for(regions), regions, "simple", color=True)
    heap_line = next(line for line in snap_out.splitlines() if "[heap]" in line)
    code = f"\x1b[{KIND_COLORS['heap']}m"
    assert heap_line.startswith(code + "heap") and heap_line.count(code) == 7  # every cell
    legend = snap_out.splitlines()[-1]
    assert legend.startswith("legend: ") and f"{code}heap\x1b[0m" in legend
    plain = show_table(_snapshot_for(regions), regions, "simple", color=False)
    assert "\x1b[" not in plain and "legend" not in plain


def _snapshot_for(regions: Sequence[Region]) -> Snapshot:
    from datetime import datetime, timezone

    from memsnap.model import ProcessIdentity, Snapshot, Totals

    return Snapshot(
        id=1,
        process_id=1,
        seq=1,
        taken_at=datetime.now(timezone.utc),
        identity=ProcessIdentity("h", None, 1, None),
        command="x",
        cmdline=(),
        exe=None,
        label=None,
        page_size=4096,
        kernel=None,
        source="file",
        has_smaps=False,
        totals=Totals(len(regions), 0),
    )


def test_kind_gap_shows_the_gaps_and_csv_flags_read_like_json(sqlite_cli: Cli) -> None:
    imported(sqlite_cli, LOCAL_MAPS)
    only_gaps = json.loads(sqlite_cli("show", "1", "--kind", "gap", "--format", "json").stdout)
    assert only_gaps["regions"] and {r["kind"] for r in only_gaps["regions"]} == {"gap"}
    rows = list(csv.DictReader(io.StringIO(sqlite_cli("show", "1", "--format", "csv").stdout)))
    assert {r["deleted"] for r in rows} == {"true", "false"}


def test_unforeseen_failures_are_one_line_too(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    import memsnap.store.reader

    def bug(*_args: object, **_kw: object) -> None:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(memsnap.store.reader, "list_snapshots", bug)
    open_database(sqlite_url).close()
    err = one_line_error(Cli(sqlite_url, debug=False)("list"), 1)
    assert "internal error: ZeroDivisionError" in err and "Traceback" not in err

    def locked(*_args: object, **_kw: object) -> None:
        raise OperationalError("SELECT", {}, Exception("database is locked"))

    monkeypatch.setattr(memsnap.store.reader, "list_snapshots", locked)
    err = one_line_error(Cli(sqlite_url, debug=False)("list"), 1)
    assert err.strip() == "memsnap: database error: database is locked"

    # A driver's own error (a raw cursor's fetch is not wrapped by SQLAlchemy) too.
    def disk(*_args: object, **_kw: object) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(memsnap.store.reader, "list_snapshots", disk)
    err = one_line_error(Cli(sqlite_url, debug=False)("list"), 1)
    assert err.strip() == "memsnap: database error: disk I/O error"

"""What memsnap prints: hostile names made visible, and the presentation of tables."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Cli, Target
from memsnap.model import ProcessIdentity, Region, Snapshot, Totals

# Every control character a process or a database can hand memsnap: C0, DEL, C1.
C0 = "".join(map(chr, range(0x00, 0x20)))
C1 = "".join(map(chr, range(0x80, 0xA0)))
CONTROLS = C0 + "\x7f" + C1
# A name can hold any byte but NUL and '/': C0 and DEL, C1 as UTF-8, and C1 as raw bytes
# (not UTF-8 on their own).
NAME_BYTES = (
    bytes(range(0x01, 0x20)) + b"\x7f" + C1.encode() + bytes(range(0x80, 0xA0)) + b"\x1b[8m"
)
# A window title and a screen clear, 15 bytes (all the kernel keeps), with a token of its
# own: the suite may run beside another copy of itself, whose hostile process
# `record --all --name` must not pick up.
TOKEN = uuid.uuid4().hex[:6]
COMM = f"\x1b]0;{TOKEN}\x07\x1b[2J".encode()
SHOWN_COMM = f"\\x1b]0;{TOKEN}\\x07\\x1b[2J"
LABEL = CONTROLS[1:] + "\x1b[8mconcealed"  # an argument cannot carry NUL
SGR = re.compile("\x1b\\[([0-9;]*)m")

HOSTILE = r"""
import mmap, os, sys
with open("/proc/self/comm", "wb") as f:
    f.write(bytes.fromhex(sys.argv[1]))
name = bytes.fromhex(sys.argv[2])
def mapped(path, prot):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o700)
    os.ftruncate(fd, 8192)
    return mmap.mmap(fd, 8192, mmap.MAP_SHARED, prot)
keep = [mapped(name, mmap.PROT_READ)]
print("ready", os.getpid(), flush=True)
for line in sys.stdin:
    keep.append(mapped(name + b"2", mmap.PROT_READ | mmap.PROT_EXEC))
    print("ok", flush=True)
"""


@pytest.fixture
def hostile(tmp_path: Path) -> Iterator[Target]:
    """A process whose command, arguments and mapped file names carry every control."""
    name = bytes(tmp_path) + b"/" + NAME_BYTES
    argv: list[str | bytes] = [sys.executable, "-c", HOSTILE, COMM.hex(), name.hex(), NAME_BYTES]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    target = Target.__new__(Target)
    target.proc = proc
    assert proc.stdout is not None
    ready = proc.stdout.readline().split()
    assert ready[0] == "ready", ready
    target.pid = int(ready[1])
    yield target
    target.stop()


def harmless(text: str, colours: bool = False) -> str:
    """`text`, having checked that no control character in it reaches a terminal but
    newlines between lines and (when `colours`) memsnap's own colour codes."""
    from memsnap.render.snapshot import KIND_COLORS

    if colours:
        codes = set(SGR.findall(text))
        assert codes <= {*KIND_COLORS.values(), "0"}, codes
        text = SGR.sub("", text)
    raw = sorted({c for c in text if c in CONTROLS and c != "\n"})
    assert not raw, f"raw control characters {raw!r} in {text!r}"
    return text


def test_visible_makes_every_control_character_visible() -> None:
    from memsnap.names import visible

    for char in CONTROLS:
        assert visible(f"a{char}b") == f"a\\x{ord(char):02x}b"
    assert visible("a\nb", lines=True) == "a\nb"
    # A document keeps its own lines, and nothing else of them.
    for char in CONTROLS.replace("\n", ""):
        assert visible(f"a\n{char}b\n", lines=True) == f"a\n\\x{ord(char):02x}b\n"
        colour = "\x1b[1;32ma\x1b[0m\n"
        shown = visible(f"{colour}{char}", lines=True, colours=True)
        assert shown == f"{colour}\\x{ord(char):02x}"
    assert visible("\udc9b[2J") == "\\x9b[2J"  # an undecodable byte, as before
    assert visible("\x1b[1;32mheap\x1b[0m \x1b[2J", colours=True) == (
        "\x1b[1;32mheap\x1b[0m \\x1b[2J"
    )
    assert visible("ünïcode paths stay") == "ünïcode paths stay"


def _hostile_database(cli: Cli, hostile: Target) -> str:
    """Two snapshots of the hostile process, a second process, and the hostile rows a
    shared database could hand back (a host and program path with every control)."""
    done = cli("record", str(hostile.pid), "--label", LABEL)
    assert done.exit_code == 0, done.stderr
    harmless(done.stdout + done.stderr)
    assert SHOWN_COMM in done.stdout
    hostile.send("more")
    again = cli("record", "--all", "--name", TOKEN, "--label", LABEL)
    assert again.exit_code == 0, again.stderr
    harmless(again.stdout + again.stderr)
    assert again.stdout.count(TOKEN) == 1, again.stdout
    assert cli("record", str(hostile.proc.pid), str(_other_pid())).exit_code == 0

    from sqlalchemy import func, select, update

    from memsnap.store.database import open_database
    from memsnap.store.schema import processes, regions

    database = open_database(cli.url)
    nul = "" if database.engine.dialect.name == "postgresql" else "\x00"  # PostgreSQL has no NUL
    with database.writing() as conn:
        conn.execute(
            update(processes)
            .where(processes.c.pid == hostile.pid)
            .values(host="host" + nul + CONTROLS[1:], exe="/bin/" + nul + CONTROLS[1:])
        )
        # A region row of its own words: kind, permissions and device are text too.
        first = conn.execute(select(func.min(regions.c.id))).scalar_one()
        conn.execute(
            update(regions)
            .where(regions.c.id == first)
            .values(kind="\x1b[8m", perms="\x1b[8m", dev="\x1b]0;x\x07\x9b")
        )
    database.close()
    return nul


def _other_pid() -> int:
    return subprocess.Popen(["sleep", "30"]).pid


@pytest.mark.live
def test_no_control_character_reaches_a_terminal(cli: Cli, hostile: Target) -> None:
    nul = _hostile_database(cli, hostile)
    pid = str(hostile.pid)
    outputs = {}
    for args in (
        ["list"],
        ["list", "--format", "csv"],
        ["show", "1"],
        ["show", "2", "--gaps", "--summary"],
        ["show", "2", "--format", "csv"],
        ["show", "2", "--summary", "--format", "csv"],
        ["diff", "1", "2", "--regions"],
        ["replay", "--pid", pid],
    ):
        result = cli(*args)
        assert result.exit_code == 0, (args, result.stderr)
        outputs[" ".join(args)] = harmless(result.stdout + result.stderr)
    show = outputs["show 1"]
    assert SHOWN_COMM in show and "\\x1b[8mconcealed" in show
    assert "\\x01\\x02" in show and "\\xc2\\x80" not in show and "\\x80\\x81" in show
    listed = outputs["list"].splitlines()
    assert len(listed) == 2 + 4  # a label's newline does not break its row
    rows = list(csv.DictReader(io.StringIO(outputs["show 2 --format csv"])))
    assert any(r["path"].endswith("\\x1b[8m") for r in rows)  # one row, one line each
    assert len(outputs["show 2 --format csv"].splitlines()) == len(rows) + 1
    assert "\\x1b" in outputs["diff 1 2 --regions"]

    # JSON escapes every control itself and keeps the exact text.
    for args in (["list"], ["show", "1"], ["diff", "1", "2"], ["replay", "--pid", pid]):
        result = cli(*args, "--format", "json")
        assert result.exit_code == 0, result.stderr
        doc = json.loads(harmless(result.stdout))
        values = set(_strings(doc))
        assert LABEL in values or args[0] == "diff"
        assert "host" + nul + CONTROLS[1:] in values


def _strings(doc: object) -> Iterator[str]:
    if isinstance(doc, str):
        yield doc
    elif isinstance(doc, dict):
        for value in doc.values():
            yield from _strings(value)
    elif isinstance(doc, list):
        for value in doc:
            yield from _strings(value)


@pytest.mark.live
def test_colours_survive_and_data_cannot_add_its_own(
    cli: Cli, hostile: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    from memsnap.cli import diff_cmd, show_cmd

    _hostile_database(cli, hostile)
    for module in (show_cmd, diff_cmd):
        monkeypatch.setattr(module, "use_color", lambda: True)
    for args in (["show", "1"], ["show", "2", "--summary"], ["diff", "1", "2"], ["list"]):
        result = cli(*args)
        assert result.exit_code == 0, result.stderr
        harmless(result.stdout + result.stderr, colours=True)
    assert "\x1b[1;32m" in cli("show", "1", "--gaps").stdout  # memsnap's own still work


@pytest.mark.live
def test_error_messages_show_names_harmlessly(cli: Cli, hostile: Target) -> None:
    _hostile_database(cli, hostile)
    for args, code in (
        (["show", "--at", "now"], 1),  # several processes: lists their commands
        (["show", "--at", "now", "--name", "\x1b[2Jnomatch\x9b"], 2),  # [ opens a set
        (["show", "--at", "now", "--name", "\x1bnomatch\x9b"], 1),  # matches nothing
        (["list", "--name", "\x1b[2J(\x07"], 2),  # not a regex
        (["list", "--\x1b[2J"], 2),
        (["show", "1", "--kind", "\x1b[2J"], 2),
        (["record", "--from-file", "/nonexistent/\x1b[2J\x9b", "--pid", "1"], 1),
    ):
        result = cli(*args)
        assert result.exit_code == code, (args, result)
        err = harmless(result.stderr)
        assert "Traceback" not in err and 1 <= len(err.strip().splitlines()) <= 2, err


# --- presentation ------------------------------------------------------------------------

LOCAL_SMAPS = "local-linux6.18-x86_64-c-program-sysv-memfd-deleted-newline-rwx-thread-smaps.txt"
LOCAL_MAPS = "local-linux6.18-x86_64-c-program-sysv-memfd-deleted-newline-rwx-thread-maps.txt"
MiB = 1 << 20


def _import(cli: Cli, name: str, pid: int = 4242, *extra: str) -> None:
    from conftest import capture_path

    done = cli("record", "--from-file", str(capture_path(name)), "--pid", str(pid), *extra)
    assert done.exit_code == 0, done.stderr


def _snap(id_: int, has_smaps: bool = True, kinds: dict[str, Totals] | None = None) -> Snapshot:
    from datetime import datetime, timezone

    return Snapshot(
        id=id_,
        process_id=1,
        seq=id_,
        taken_at=datetime(2026, 11, 25, 10, 0, id_, tzinfo=timezone.utc),
        identity=ProcessIdentity("h", "boot", 7, 1),
        command="demo",
        cmdline=(),
        exe=None,
        label=None,
        page_size=4096,
        kernel=None,
        source="live",
        has_smaps=has_smaps,
        totals=Totals(1, 4096, 0, 0, 0),
        kinds=kinds or {},
    )


def _region(start: int, size: int, perms: str = "rw-p", kind: str = "anon", **sizes: Any) -> Region:
    return Region(start, start + size, perms, 0, "00:00", 0, None, kind=kind, **sizes)


def test_show_summary_in_csv_is_the_summary(sqlite_cli: Cli) -> None:
    _import(sqlite_cli, LOCAL_SMAPS)
    out = sqlite_cli("show", "1", "--summary", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert list(rows[0]) == ["kind", "regions", "size", "of_total", "rss", "pss", "swap", "uss"]
    lib_text = next(r for r in rows if r["kind"] == "lib-text")
    assert lib_text["regions"] == "3" and int(lib_text["size"]) > 0
    assert abs(sum(float(r["of_total"]) for r in rows) - 1) < 1e-3


def test_summary_share_is_of_the_whole_process(sqlite_cli: Cli) -> None:
    _import(sqlite_cli, LOCAL_SMAPS)
    doc = json.loads(sqlite_cli("show", "1", "--format", "json").stdout)
    total = doc["snapshot"]["totals"]["size"]
    heap = sum(r["size"] for r in doc["regions"] if r["kind"] == "heap")
    out = sqlite_cli("show", "1", "--summary", "--kind", "heap", "--kind", "stack").stdout
    heap_row = next(line for line in out.splitlines() if line.startswith("heap")).split()
    assert heap_row[4] == f"{100 * heap / total:.1f}%" != "50.0%"


@pytest.mark.live
def test_diff_with_a_side_without_smaps_compares_what_both_have(
    sqlite_cli: Cli, target: Target
) -> None:
    assert sqlite_cli("record", str(target.pid)).exit_code == 0
    target.send("heap 1048576")
    assert sqlite_cli("record", str(target.pid), "--no-smaps").exit_code == 0
    doc = json.loads(sqlite_cli("diff", "1", "2", "--format", "json").stdout)
    assert doc["match"] == "address"
    changed = doc["regions"]["changed"]
    assert [c["after"]["kind"] for c in changed] == ["heap"], changed  # grew; nothing else
    assert changed[0]["changes"] == ["size", "end"]
    table = sqlite_cli("diff", "1", "2").stdout
    assert "snapshot 2 was recorded without smaps" in table
    assert "regions: 0 added, 0 removed, 1 changed" in table


def test_diff_regions_in_the_order_a_person_asks() -> None:
    from memsnap.diff import diff_snapshots
    from memsnap.render.diff import diff_json, diff_table

    before = [
        _region(0x1000, 4096, "r--p", rss=4096, pss=4096),  # becomes executable
        _region(0x10000, 4096, rss=4096, pss=1000),  # pss only
        _region(0x20000, 4096, rss=4096, pss=1000),  # pss only
        _region(0x30000, 8192, rss=4096, pss=4096),  # rss
        _region(0x40000, 4096, rss=4096, pss=4096),  # grows
        _region(0x50000, 4096, "r--p", rss=0, pss=0),  # loses w? no: becomes rw
        _region(0x90000, 4096, rss=0, pss=0),  # removed
    ]
    after = [
        _region(0x1000, 4096, "r-xp", rss=4096, pss=4096),
        _region(0x10000, 4096, rss=4096, pss=2024),
        _region(0x20000, 4096, rss=4096, pss=2024),
        _region(0x30000, 8192, rss=8192, pss=8192),
        _region(0x40000, 3 * MiB, rss=4096, pss=4096),
        _region(0x50000, 4096, "rw-p", rss=0, pss=0),
        _region(0x80000, 4096, rss=0, pss=0),  # added
    ]
    d = diff_snapshots(_snap(1), _snap(2), before, after, "address", set(), set())
    text = diff_table(d, "plain", color=False, all_regions=False)
    body = text.split("regions: ", 1)[1].splitlines()
    assert body[0] == "1 added, 1 removed, 6 changed (2 only in pss)"
    starts = [line.split()[2].split("-")[0] for line in body[2:-1]]
    assert starts == ["80000", "90000", "1000", "50000", "40000", "30000"]
    assert body[-1] == "~ 2 regions changed only in pss, +2.0 KiB in all (--regions lists them)"
    every = diff_table(d, "plain", color=False, all_regions=True).split("regions: ", 1)[1]
    assert [line.split()[2].split("-")[0] for line in every.splitlines()[2:]][-2:] == [
        "10000",
        "20000",
    ]
    assert len(diff_json(d)["regions"]["changed"]) == 6  # JSON keeps every change


def test_replay_names_the_kind_whose_memory_grew() -> None:
    from memsnap.diff import diff_snapshots
    from memsnap.model import Totals
    from memsnap.render.diff import replay_table

    a = _snap(1, kinds={"guard": Totals(1, 4096, 0), "anon": Totals(1, MiB, MiB)})
    b = _snap(
        2,
        kinds={
            "guard": Totals(1, 4096 + int(63.9 * MiB), 0),
            "anon": Totals(1, 51 * MiB, 51 * MiB),
        },
    )
    d = diff_snapshots(a, b, [], [], "address", set(), set())
    text = replay_table([(a, None), (b, d)], "plain")
    assert "anon +50.0 MiB rss" in text and "guard +63.9" not in text


def test_one_of_a_thing_is_singular() -> None:
    from memsnap.render.diff import replay_table
    from memsnap.render.snapshot import snapshot_heading

    s = _snap(1)
    assert "replay of pid 7 (demo) on h: 1 snapshot\n" in replay_table([(s, None)], "plain")
    assert "\n1 region, " in snapshot_heading(s)


def test_gaps_draw_the_kernel_boundary_as_what_it_is(sqlite_cli: Cli) -> None:
    from memsnap.render.snapshot import HOLE_PATH, with_gaps

    _import(sqlite_cli, LOCAL_SMAPS)
    table = sqlite_cli("show", "1", "--gaps").stdout
    assert "EiB" not in table and "PiB" not in table
    hole = next(line for line in table.splitlines() if HOLE_PATH in line).split()
    assert hole[:3] == ["gap", "0000800000000000-ffffffffff600000", "-"]
    summary = sqlite_cli("show", "1", "--gaps", "--summary").stdout
    assert "EiB" not in summary
    # 5-level page tables: user space reaches 2**56.
    stack, vsyscall = _region(0xFF000000000000, 4096), _region(0xFFFFFFFFFF600000, 4096)
    rows = with_gaps([stack, vsyscall])
    assert [(r.start, r.end, r.path) for r in rows[1:3]] == [
        (0xFF000000001000, 1 << 56, None),
        (1 << 56, 0xFFFFFFFFFF600000, HOLE_PATH),
    ]
    # A 32-bit text: its kernel split is not in it; a gap is a gap.
    low, high = _region(0x8000, 4096), _region(0xFFFF0000, 4096, "r-xp", "other")
    assert [r.path for r in with_gaps([low, high])] == [None, None, None]


def test_warnings_are_red_on_a_terminal() -> None:
    from memsnap.diff import diff_snapshots
    from memsnap.render.diff import diff_table

    rwx = _region(0x7000, 4096, "rwxp")
    d = diff_snapshots(_snap(1), _snap(2), [], [rwx], "address", set(), set())
    line = next(x for x in diff_table(d, "simple", True, False).splitlines() if "writable" in x)
    assert line.startswith("\x1b[1;31m! writable and executable") and line.endswith("\x1b[0m")
    assert "\x1b" not in diff_table(d, "simple", False, False)


def test_each_command_takes_exactly_its_formats(sqlite_cli: Cli) -> None:
    _import(sqlite_cli, LOCAL_MAPS)
    _import(sqlite_cli, LOCAL_MAPS)
    for command in (["diff", "1", "2"], ["replay", "--pid", "4242"]):
        assert "<table|json|html>" in sqlite_cli(command[0], "--help").stdout
        err = sqlite_cli(*command, "--format", "csv")
        assert err.exit_code == 2 and "Invalid value for '--format'" in err.stderr
        assert "csv" in err.stderr and err.stdout == ""
    assert "<table|json|csv|html>" in sqlite_cli("show", "--help").stdout
    assert "<table|json|csv>" in sqlite_cli("list", "--help").stdout
    bad = sqlite_cli("diff", "1", "2", "--style", "nonsense")
    assert bad.exit_code == 2 and "unknown style 'nonsense'" in bad.stderr


def test_bare_memsnap_prints_the_help_once(sqlite_cli: Cli) -> None:
    from typer.testing import CliRunner

    from memsnap.cli import app

    result = CliRunner().invoke(app, [], prog_name="memsnap")
    assert result.exit_code == 2
    assert result.stdout.count("Usage: memsnap") == 1 and "Commands:" in result.stdout
    assert "Try " not in result.stdout + result.stderr and result.stderr == ""


def test_db_after_the_command(sqlite_url: str) -> None:
    from typer.testing import CliRunner

    from conftest import capture_path
    from memsnap.cli import app

    runner = CliRunner()
    done = runner.invoke(
        app,
        ["record", "--from-file", str(capture_path(LOCAL_MAPS)), "--pid", "9", "--db", sqlite_url],
    )
    assert done.exit_code == 0, done.output
    listed = runner.invoke(app, ["list", "--format", "json", "--db", sqlite_url])
    assert listed.exit_code == 0, listed.output
    assert [s["pid"] for s in json.loads(listed.stdout)["snapshots"]] == [9]


def test_sort_by_size_largest_first(sqlite_cli: Cli) -> None:
    _import(sqlite_cli, LOCAL_SMAPS)
    for key in ("size", "rss", "pss"):
        doc = json.loads(sqlite_cli("show", "1", "--sort", key, "--format", "json").stdout)
        values = [r[key] for r in doc["regions"]]
        assert values == sorted(values, reverse=True) and values[0] > values[-1]
    plain = json.loads(sqlite_cli("show", "1", "--sort", "address", "--format", "json").stdout)
    starts = [int(r["start"], 16) for r in plain["regions"]]
    assert starts == sorted(starts)


def test_diff_sort_and_kind(sqlite_cli: Cli) -> None:
    _import(sqlite_cli, LOCAL_SMAPS, 1)
    _import(sqlite_cli, "local-linux6.18-x86_64-python-thp-hugepage-smaps.txt", 2)
    whole = json.loads(sqlite_cli("diff", "1", "2", "--format", "json").stdout)
    only = json.loads(
        sqlite_cli("diff", "1", "2", "--kind", "heap,lib-text", "--format", "json").stdout
    )
    kinds = {r["kind"] for side in ("added", "removed") for r in only["regions"][side]}
    assert kinds and kinds <= {"heap", "lib-text"}
    assert set(only["kinds"]) <= {"heap", "lib-text"} < set(whole["kinds"])
    assert only["totals"] == whole["totals"]  # the whole process's
    by_size = json.loads(sqlite_cli("diff", "1", "2", "--sort", "size", "--format", "json").stdout)
    sizes = [r["size"] for r in by_size["regions"]["added"]]
    assert sizes == sorted(sizes, reverse=True)
    table = sqlite_cli("diff", "1", "2", "--kind", "heap", "--kind", "stack").stdout
    kind_table = table.split("\nkind ", 1)[1].split("\n\n")[0].splitlines()
    assert {line.split()[0] for line in kind_table[2:]} <= {"heap", "stack", "total"}
    bad = sqlite_cli("diff", "1", "2", "--kind", "heap,gap")
    assert bad.exit_code == 2 and "unknown kind 'gap'" in bad.stderr


def test_kind_takes_comma_lists(sqlite_cli: Cli) -> None:
    _import(sqlite_cli, LOCAL_SMAPS)
    doc = json.loads(
        sqlite_cli("show", "1", "--kind", "heap,stack", "--kind", "vdso", "--format", "json").stdout
    )
    assert {r["kind"] for r in doc["regions"]} == {"heap", "stack", "vdso"}


@pytest.mark.live
def test_list_has_a_source_column(sqlite_cli: Cli, target: Target) -> None:
    _import(sqlite_cli, LOCAL_MAPS)
    assert sqlite_cli("record", str(target.pid)).exit_code == 0
    lines = sqlite_cli("list").stdout.splitlines()
    assert lines[0].split()[-2:] == ["source", "label"]
    assert [line.split()[-1] for line in lines[2:]] == ["live", "file"]  # no labels

"""Histories are one process each; --name as pgrep -f; numbers and times out of range.

A pid names a different process once it is reused, and an imported text given a pid is
a process of its own: the reading commands must never walk two processes as one
history. Live tests reuse a pid for real where the kernel lets them choose the next pid
(`/proc/sys/kernel/ns_last_pid`, root), and always by importing a text under the pid of
a process recorded and killed before.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from itertools import pairwise
from pathlib import Path

import pytest

from conftest import Cli, Result, Target, capture_path
from memsnap.errors import UsageError
from memsnap.history import group_processes
from memsnap.match import compile_name, name_matches
from memsnap.model import ProcessIdentity, Snapshot, Totals
from memsnap.timeparse import parse_time

LOCAL_MAPS = "local-linux6.18-x86_64-c-program-sysv-memfd-deleted-newline-rwx-thread-maps.txt"
NOW = datetime(2026, 11, 24, 12, 0, 0, tzinfo=timezone.utc)


def record(cli: Cli, pid: int, *extra: str) -> int:
    done = cli("record", str(pid), *extra)
    assert done.exit_code == 0, done.stderr
    return int(done.stdout.split()[1].rstrip(":"))


def imported(cli: Cli, pid: int, name: str = LOCAL_MAPS) -> int:
    done = cli("record", "--from-file", str(capture_path(name)), "--pid", str(pid))
    assert done.exit_code == 0, done.stderr
    return int(done.stdout.split()[1].rstrip(":"))


def ids(cli: Cli, *args: str) -> list[int]:
    out = cli(*args, "--format", "json")
    assert out.exit_code == 0, out.stderr
    doc = json.loads(out.stdout)
    if "steps" in doc:
        return [s["snapshot"]["id"] for s in doc["steps"]]
    if "snapshots" in doc:
        return [s["id"] for s in doc["snapshots"]]
    if "snapshot" in doc:
        return [doc["snapshot"]["id"]]
    return [doc["from"]["id"], doc["to"]["id"]]


def plain_error(result: Result, code: int) -> str:
    assert result.exit_code == code, result
    err = str(result.stderr)
    assert "Traceback" not in err and 1 <= len(err.strip().splitlines()) <= 2, err
    assert "internal error" not in err and "database error" not in err, err
    assert result.stdout == ""
    return err


# --- plain values -------------------------------------------------------------------


def snap(id_: int, process: int, pid: int, command: str, minute: int, host: str = "vm") -> Snapshot:
    return Snapshot(
        id=id_,
        process_id=process,
        seq=1,
        taken_at=NOW + timedelta(minutes=minute),
        identity=ProcessIdentity(host, "boot", pid, process * 100),
        command=command,
        cmdline=(command,),
        exe=f"/usr/bin/{command}",
        label=None,
        page_size=4096,
        kernel=None,
        source="live",
        has_smaps=True,
        totals=Totals(),
    )


def test_snapshots_group_into_processes_by_their_row_not_their_pid() -> None:
    # Newest first, as list_snapshots hands them out: python3 reused sleep's pid 1850.
    snaps = [
        snap(4, 2, 1850, "python3", 9),
        snap(3, 3, 77, "bash", 8),
        snap(2, 2, 1850, "python3", 5),
        snap(1, 1, 1850, "sleep", 0),
    ]
    seen = group_processes(snaps)
    assert [(p.process_id, p.command, p.count) for p in seen] == [
        (1, "sleep", 1),
        (2, "python3", 2),
        (3, "bash", 1),
    ]
    python = seen[1]
    assert (python.first.id, python.last.id, python.pid) == (2, 4, 1850)
    assert group_processes([]) == []


def test_name_matches_command_path_and_every_argument_as_pgrep_f() -> None:
    cmdline = ("python3", "/srv/app/target.py", "--port", "8080")
    args = ("python3", "/usr/bin/python3.11", cmdline)

    def hit(pattern: str) -> bool:
        return name_matches(compile_name(pattern), *args)

    assert hit("target.py")  # an argument, not the first
    assert hit("^--port$") and hit("^8080$")  # each argument on its own
    assert hit("python3 .*target") and hit("target.py --port 8080$")  # the whole line
    assert hit("^python3$") and hit("python3.11$")  # the command, the program path
    assert not hit("^target") and not hit("nginx")
    imported_text = ("layout-demo", "/tmp/layout-demo", ())
    assert name_matches(compile_name("demo$"), *imported_text)
    assert not name_matches(compile_name("^python"), *imported_text)


def test_a_bad_name_pattern_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="regular expression"):
        compile_name("(")


@pytest.mark.parametrize(
    "text",
    [
        "999999 days ago",
        "100000000 weeks ago",
        "9" * 400 + " days ago",
        "0001-01-01",
        "0001-01-01T00:00+05:00",
        "9999-12-31T23:00-05:00",
        "1969-12-31T23:59:59+00:00",
        "999999999999",
        "253402300800",  # 10000-01-01T00:00Z
    ],
)
def test_times_outside_what_databases_store_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError, match="1970"):
        parse_time(text, NOW)


def test_the_edges_of_the_time_range_are_accepted() -> None:
    assert parse_time("1970-01-01T00:00Z", NOW) == datetime(1970, 1, 1, tzinfo=timezone.utc)
    assert parse_time("9999-12-31T23:59:59.999999+00:00", NOW).year == 9999
    assert parse_time("253402300799", NOW).year == 9999


# --- numbers and times out of range, through the CLI on both databases ---------------

TOO_BIG = "99999999999999999999"
TWO_TO_63 = str(2**63)


@pytest.mark.parametrize(
    "args",
    [
        ["list", "--pid", TOO_BIG],
        ["list", "--pid", TWO_TO_63],
        ["list", "--pid", "0"],
        ["list", "--pid", "-1"],
        ["list", "--pid", "4194305"],
        ["show", TOO_BIG],
        ["show", TWO_TO_63],
        ["show", "0"],
        ["list", "--limit", TOO_BIG],
        ["list", "--limit", TWO_TO_63],
        ["diff", "1", TOO_BIG],
        ["diff", TWO_TO_63, "1"],
        ["diff", "--pid", TOO_BIG],
        ["replay", "--pid", TOO_BIG],
        ["replay", "--pid", TWO_TO_63],
        ["show", "--at", "now", "--pid", TWO_TO_63],
        ["list", "--since", "999999 days ago"],
        ["list", "--since", "0001-01-01"],
        ["list", "--until", "9999-12-31T23:00-05:00"],
        ["show", "--at", "999999999999"],
        ["show", "--at", "100000000 weeks ago"],
        ["show", "--at", "0001-01-01T00:00+05:00"],
        ["replay", "--pid", "1", "--since", "999999 days ago"],
        ["replay", "--pid", "1", "--until", "0001-01-01"],
    ],
)
def test_numbers_and_times_out_of_range_are_usage_errors(cli: Cli, args: list[str]) -> None:
    imported(cli, 10)
    err = plain_error(cli(*args), 2)
    times = [v for option, v in pairwise(args) if option in ("--at", "--since", "--until")]
    if any(value != "now" for value in times):
        assert "memsnap's times run from 1970-01-01 to 9999-12-31 (UTC)" in err, err
    else:
        assert "is not in the range" in err, err


def test_ids_that_fit_no_row_are_simply_not_there(cli: Cli) -> None:
    imported(cli, 10)
    # In range for memsnap, past what PostgreSQL's INTEGER row ids hold.
    for args in (["show", "2147483648"], ["diff", "1", str(2**63 - 1)]):
        err = plain_error(cli(*args), 1)
        assert "no snapshot" in err
    assert ids(cli, "list", "--pid", "4194304") == []
    assert ids(cli, "list", "--limit", str(2**63 - 1)) == [1]
    assert ids(cli, "list", "--since", "1970-01-01T00:00Z", "--until", "9999-12-31") == [1]


# --- one process per history: a pid reused -------------------------------------------


def killed_sleep(cli: Cli) -> int:
    """The pid of a `sleep` recorded once and then killed (its pid is free again)."""
    proc = subprocess.Popen(["sleep", "60"])
    try:
        record(cli, proc.pid)
    finally:
        proc.kill()
        proc.wait()
    return proc.pid


@pytest.mark.live
def test_an_import_under_a_dead_process_pid_is_another_history(cli: Cli) -> None:
    pid = killed_sleep(cli)
    time.sleep(0.01)
    between = datetime.now(timezone.utc)
    time.sleep(0.01)
    imported(cli, pid)
    imported(cli, pid)  # each import is a process of its own: never the same as another

    for args, choose in (
        (["replay", "--pid", str(pid)], "narrow it to one with --since/--until"),
        (["show", "--at", "now", "--pid", str(pid)], "by its id (memsnap show ID)"),
        (["diff", "--pid", str(pid)], "by id (memsnap diff A B)"),
    ):
        err = plain_error(cli(*args), 1)
        assert f"pid {pid} names 3 recorded processes" in err, err
        assert "sleep" in err and "layout-demo" in err, err
        assert choose in err, err

    # A listing's rows are the choice: every snapshot, and a note naming the processes.
    listed = cli("list", "--pid", str(pid), "--format", "json")
    assert listed.exit_code == 0
    assert [s["id"] for s in json.loads(listed.stdout)["snapshots"]] == [3, 2, 1]
    note = listed.stderr.strip()
    assert len(note.splitlines()) == 1 and f"pid {pid} names 3 processes" in note, note
    assert "sleep" in note and "layout-demo" in note
    # Narrowed by time to one process, the history is that process's alone.
    assert ids(cli, "replay", "--pid", str(pid), "--until", between.isoformat()) == [1]
    assert ids(cli, "show", "--at", between.isoformat(), "--pid", str(pid)) == [1]
    # One process listed: no note.
    alone = cli("list", "--pid", str(pid), "--until", between.isoformat())
    assert alone.exit_code == 0 and alone.stderr == ""


def spawn_with_pid(pid: int, argv: list[str]) -> subprocess.Popen[str] | None:
    """A process started with exactly this pid, or None where the kernel does not let
    us choose (writing ns_last_pid needs root; another process may take it first)."""
    for _ in range(100):
        try:
            with open("/proc/sys/kernel/ns_last_pid", "w") as f:
                f.write(str(pid - 1))
        except OSError:
            return None
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        if proc.pid == pid:
            return proc
        proc.kill()
        proc.wait()
    return None


@pytest.mark.live
def test_a_reused_pid_is_two_histories_issue_10_1(cli: Cli) -> None:
    pid = killed_sleep(cli)
    between = datetime.now(timezone.utc)
    time.sleep(0.01)
    script = "import time, zlib, json; print('ready', flush=True); time.sleep(60)"
    python = spawn_with_pid(pid, [sys.executable, "-c", script])
    if python is None:
        pytest.skip("the kernel's next pid can be chosen only by root (ns_last_pid)")
    try:
        assert python.stdout is not None and python.stdout.readline().strip() == "ready"
        command = Path(f"/proc/{pid}/comm").read_text().strip()
        second = record(cli, pid)
        third = record(cli, pid)
    finally:
        python.kill()
        python.wait()

    err = plain_error(cli("replay", "--pid", str(pid)), 1)
    assert f"pid {pid} names 2 recorded processes" in err
    assert "sleep" in err and command in err
    plain_error(cli("show", "--at", "now", "--pid", str(pid)), 1)
    plain_error(cli("diff", "--pid", str(pid)), 1)

    replay = cli("replay", "--pid", str(pid), "--since", between.isoformat())
    assert replay.exit_code == 0, replay.stderr
    assert "2 snapshots" in replay.stdout and "sleep" not in replay.stdout
    assert ids(cli, "replay", "--pid", str(pid), "--since", between.isoformat()) == [second, third]
    assert ids(cli, "replay", "--pid", str(pid), "--until", between.isoformat()) == [1]
    listed = cli("list", "--pid", str(pid))
    assert listed.exit_code == 0 and "2 processes" in listed.stderr


# --- --name as pgrep -f, replay --name, diff --pid ------------------------------------


@pytest.fixture
def python_target(tmp_path: Path) -> Iterator[int]:
    """`python3 .../target.py`: a process whose command and program say python."""
    script = tmp_path / "target.py"
    script.write_text("import sys, time\nprint('ready', flush=True)\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    yield proc.pid
    proc.kill()
    proc.wait()


@pytest.mark.live
def test_name_finds_a_script_by_its_argument(cli: Cli, python_target: int) -> None:
    other = subprocess.Popen(["sleep", "60"])
    try:
        done = cli("record", str(python_target), str(other.pid), "--name", "target.py")
        assert done.exit_code == 0, done.stderr
        assert len(done.stdout.splitlines()) == 1 and f"pid {python_target}" in done.stdout
        first = record(cli, python_target)
        record(cli, other.pid)
    finally:
        other.kill()
        other.wait()
    second = record(cli, python_target)
    assert ids(cli, "list", "--name", "target.py") == [second, first, 1]
    assert ids(cli, "show", "--at", "now", "--name", "target.py") == [second]
    assert ids(cli, "replay", "--name", "target.py") == [1, first, second]
    assert ids(cli, "replay", "--name", "target.py", "--pid", str(python_target)) == [
        1,
        first,
        second,
    ]
    # More than one process matches: they are listed, none is chosen.
    err = plain_error(cli("replay", "--name", "target.py|^sleep$"), 1)
    assert f"{python_target}" in err and f"{other.pid}" in err
    err = plain_error(cli("replay", "--name", "^nothing-like-this$"), 1)
    assert "no snapshots of --name '^nothing-like-this$'" in err, err
    plain_error(cli("replay"), 2)


@pytest.mark.live
def test_diff_pid_is_the_last_two_snapshots_of_that_process(cli: Cli, target: Target) -> None:
    imported(cli, 10)  # another process: the database is there, the pid is not in it
    err = plain_error(cli("diff", "--pid", str(target.pid)), 1)
    assert f"no snapshots of pid {target.pid}" in err, err
    first = record(cli, target.pid)
    err = plain_error(cli("diff", "--pid", str(target.pid)), 1)
    assert "one snapshot" in err
    target.send("heap 10485760")
    second = record(cli, target.pid)
    target.send("dlopen libz.so.1")
    third = record(cli, target.pid)
    assert first < second < third
    by_pid = cli("diff", "--pid", str(target.pid), "--format", "json")
    by_ids = cli("diff", str(second), str(third), "--format", "json")
    assert by_pid.exit_code == 0, by_pid.stderr
    assert json.loads(by_pid.stdout) == json.loads(by_ids.stdout)
    assert json.loads(by_pid.stdout)["libraries"]["loaded"][0].endswith("libz.so.1.2.13")
    plain_error(cli("diff", "1", "--pid", str(target.pid)), 2)
    plain_error(cli("diff", "1"), 2)


# --- a pattern that backtracks forever: Ctrl-C ends it --------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.live
def test_ctrl_c_ends_a_name_pattern_that_backtracks_forever(tmp_path: Path) -> None:
    db = str(tmp_path / "m.db")
    runner = Cli(db)
    # A program whose name the pattern (a+)+$ backtracks over for ever (2**60 ways).
    long_name = tmp_path / ("a" * 60 + "b")
    maps = (
        capture_path(LOCAL_MAPS).read_text().replace("/usr/local/bin/layout-demo", f"{long_name}")
    )
    done = runner("record", "--from-file", "-", "--pid", "5", input=maps)
    assert done.exit_code == 0, done.stderr
    proc = subprocess.Popen(
        [sys.executable, "-m", "memsnap", "--db", db, "list", "--name", "(a+)+$"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "MEMSNAP_DEBUG"},
        # Ctrl-C as a terminal delivers it: a suite run in the background (where the
        # shell ignores SIGINT, and children inherit that) must not hand that on.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        # Start-up and the query take a fraction of a second of CPU: a process still
        # running after several seconds of CPU is stuck in the pattern.
        deadline = time.monotonic() + 120
        while cpu_seconds(proc.pid) < 3 and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert out == ""
    assert err.strip() == "memsnap: interrupted", err


def test_name_help_says_it_is_a_python_regex_like_pgrep_f(sqlite_cli: Cli) -> None:
    for command in ("list", "show", "replay"):
        text = " ".join(sqlite_cli(command, "--help").stdout.split())
        assert "--name" in text and "pgrep -f" in text, (command, text)


def test_a_diff_of_two_processes_reports_repeated_equal_regions_whole(
    cli: Cli, tmp_path: Path
) -> None:
    # A text may hold the same line twice (a hostile or edited capture): the pairing's
    # light regions are then equal tuples, and each reported one must still be read
    # back whole, from its own row (they differ in a field pairing does not read).
    app = "00400000-00401000 r-xp 00000000 fe:00 5 /usr/bin/app\nRss: 4 kB\nPrivate_Dirty: 0 kB\n"
    lib = "7f0000000000-7f0000001000 r-xp 00000000 fe:00 12 /usr/lib/libtwice.so\n"
    a = tmp_path / "a.txt"
    a.write_text(app)
    b = tmp_path / "b.txt"
    b.write_text(
        app + lib + "Rss: 4 kB\nPrivate_Dirty: 4 kB\n" + lib + "Rss: 4 kB\nPrivate_Dirty: 0 kB\n"
    )
    for pid, text in ((1, a), (2, b)):
        done = cli("record", "--from-file", str(text), "--pid", str(pid))
        assert done.exit_code == 0, done.stderr
    shown = cli("diff", "1", "2", "--format", "json")
    assert shown.exit_code == 0, shown.stderr
    added = json.loads(shown.stdout)["regions"]["added"]
    assert sorted((r["path"], r["private_dirty"]) for r in added) == [
        ("/usr/lib/libtwice.so", 0),
        ("/usr/lib/libtwice.so", 4096),
    ]

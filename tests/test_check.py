"""`memsnap check` end to end: a helper process (tests/helpers/findings.c) builds each
trigger for real, `memsnap record` stores it, and `memsnap check` must report it (and
not before the trigger: the negative case is the same process a moment earlier). Also
the exit codes, the documents, the restart view, `--history` on a recorded history, and
`check --live` on this machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import Cli, Target

pytestmark = pytest.mark.live


def record(cli: Cli, pid: int, *extra: str) -> int:
    done = cli("record", str(pid), *extra)
    assert done.exit_code == 0, done.stderr
    found = re.match(r"snapshot (\d+):", done.stdout)
    assert found, done.stdout
    return int(found.group(1))


def check_json(cli: Cli, *args: str) -> dict[str, Any]:
    done = cli("check", "--format", "json", "--fail-on", "critical", *args)
    assert done.exit_code in (0, 3), done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def fired(cli: Cli, snapshot: int, rule: str) -> set[int]:
    """The region starts `check ID --rule RULE` reports."""
    doc = check_json(cli, str(snapshot), "--rule", rule)
    assert all(f["rule"] == rule for f in doc["findings"])
    return {int(f["region"]["start"], 16) for f in doc["findings"] if f["region"]}


def object_start(cli: Cli, snapshot: int, path: Path) -> int:
    done = cli("show", str(snapshot), "--format", "json")
    regions = json.loads(done.stdout)["regions"]
    return min(int(r["start"], 16) for r in regions if r["path"] == str(path) and "x" in r["perms"])


# --- each rule through the CLI: fires on its trigger, not before ----------------------------

Trigger = Callable[[Target, Path, Path], None]


def _send(command: str) -> Trigger:
    def trigger(helper: Target, _libz: Path, _tmp: Path) -> None:
        helper.send(command)

    return trigger


def _dlopen_system(helper: Target, libz: Path, _tmp: Path) -> None:
    helper.send(f"dlopen {libz}")


def _dlopen_copy(helper: Target, libz: Path, tmp: Path) -> None:
    shutil.copyfile(libz, tmp / "libz-copy.so")
    helper.send(f"dlopen {tmp / 'libz-copy.so'}")


@pytest.mark.parametrize(
    ("rule", "prepare", "trigger"),
    [
        ("wx", _send("rw"), _send("rwx")),
        ("anon-exec", _send("rw"), _send("rwx")),
        ("memfd-exec", _send("memfd-dual"), _send("memfd")),
        ("exec-stack", _send("rw"), _send("exec-stack")),
        ("exec-heap", _send("rw"), _send("exec-heap")),
        ("ddexec", _send("rw"), _send("ddexec")),
        ("dirty-text", _dlopen_copy, _send("patch zlibVersion")),
        ("exec-from-tmp", _dlopen_system, _dlopen_copy),
        ("deleted-code", _dlopen_copy, lambda _h, _l, tmp: (tmp / "libz-copy.so").unlink()),
    ],
)
def test_rule_fires_through_check(
    sqlite_cli: Cli,
    helper: Target,
    libz: Path,
    tmp_dir: Path,
    rule: str,
    prepare: Trigger,
    trigger: Trigger,
) -> None:
    prepare(helper, libz, tmp_dir)
    before = record(sqlite_cli, helper.pid)
    trigger(helper, libz, tmp_dir)
    after = record(sqlite_cli, helper.pid)
    old, new = fired(sqlite_cli, before, rule), fired(sqlite_cli, after, rule)
    assert new - old, f"{rule} did not fire on its trigger"
    # The negative case: the same process before the trigger has none of these.
    assert not (new - old) & old


def record_an_upgrade(cli: Cli, helper: Target, libz: Path, tmp_dir: Path) -> tuple[int, int, int]:
    """A library loaded and recorded, then replaced on disk as an upgrade does (a new file
    renamed over the old one) and recorded again: the two snapshots and where the
    library's first mapping starts. Maps only: smaps' Pss of a shared library moves
    whenever another process maps it."""
    lib = tmp_dir / "libz-app.so"
    shutil.copyfile(libz, lib)
    helper.send(f"dlopen {lib}")
    before = record(cli, helper.pid, "--no-smaps")
    start = object_start(cli, before, lib)
    shutil.copyfile(libz, tmp_dir / "libz-app.so.new")
    os.rename(tmp_dir / "libz-app.so.new", lib)
    after = record(cli, helper.pid, "--no-smaps")
    return before, start, after


def test_replaced_code_is_recorded_in_unchanged_copies(
    sqlite_cli: Cli, sqlite_url: str, helper: Target, libz: Path, tmp_dir: Path
) -> None:
    """Once a library is replaced the maps text stops changing, and each later snapshot
    is an unchanged copy of the one before (equal digests, no region compared). The stat
    through /proc/PID/root must be taken and stored for those copies all the same."""
    before, start, after = record_an_upgrade(sqlite_cli, helper, libz, tmp_dir)
    copy = record(sqlite_cli, helper.pid, "--no-smaps")
    with sqlite3.connect(sqlite_url) as conn:
        shares = dict(conn.execute("SELECT id, kinds_from FROM snapshots"))
    # The copy's shortcut: it shares the per-kind totals of the snapshot it copies.
    assert shares[copy] == after and shares[after] is None
    assert fired(sqlite_cli, before, "replaced-code") == set()  # negative case
    assert fired(sqlite_cli, after, "replaced-code") == {start}
    assert fired(sqlite_cli, copy, "replaced-code") == {start}


def test_replaced_code_fires_on_a_central_database_after_a_push(
    tmp_path: Path, db_url: str, helper: Target, libz: Path, tmp_dir: Path
) -> None:
    """The stat is taken where the process runs; a push carries it with each snapshot
    (the whole copy and the one-row unchanged copy alike), so `check` on the central
    database says what it says locally."""
    here = Cli(str(tmp_path / "local.db"))
    before, start, after = record_an_upgrade(here, helper, libz, tmp_dir)
    assert here("push", db_url).exit_code == 0
    copy = record(here, helper.pid, "--no-smaps")  # goes over as one row
    done = here("push", db_url)
    assert done.exit_code == 0, done.stderr
    central = Cli(db_url)
    listed = json.loads(central("list", "--format", "json").stdout)
    by_seq = {s["seq"]: s["id"] for s in listed["snapshots"]}
    assert sorted(by_seq) == [1, 2, 3], listed
    local = {1: before, 2: after, 3: copy}
    for seq, central_id in by_seq.items():
        assert fired(central, central_id, "replaced-code") == fired(
            here, local[seq], "replaced-code"
        )
    assert fired(central, by_seq[3], "replaced-code") == {start}


def test_replaced_code_through_rename_and_not_on_imports(
    sqlite_cli: Cli, helper: Target, libz: Path, tmp_dir: Path
) -> None:
    lib = tmp_dir / "libz-app.so"
    shutil.copyfile(libz, lib)
    helper.send(f"dlopen {lib}")
    before = record(sqlite_cli, helper.pid)
    start = object_start(sqlite_cli, before, lib)
    shutil.copyfile(libz, tmp_dir / "libz-app.so.new")
    os.rename(tmp_dir / "libz-app.so.new", lib)
    after = record(sqlite_cli, helper.pid)
    assert fired(sqlite_cli, before, "replaced-code") == set()
    assert fired(sqlite_cli, after, "replaced-code") == {start}
    # An imported text carries no stat of the files: the rule cannot fire on it.
    smaps = Path(f"/proc/{helper.pid}/smaps").read_bytes()
    done = sqlite_cli("record", "--from-file", "-", "--pid", "4242", input=smaps)
    numbered = re.match(r"snapshot (\d+):", done.stdout)
    assert numbered, done.stdout
    imported = int(numbered.group(1))
    assert fired(sqlite_cli, imported, "deleted-code") == {start}
    assert fired(sqlite_cli, imported, "replaced-code") == set()


def test_written_then_executable_through_check(cli: Cli, helper: Target) -> None:
    """On SQLite and PostgreSQL: the history this rule reads is asked for with a LIKE
    pattern, whose `%` the PostgreSQL driver takes for a placeholder unless it is bound."""
    page = helper.address("rw")
    record(cli, helper.pid)
    second = record(cli, helper.pid)
    assert fired(cli, second, "w-then-x") == set()  # written, never executable
    helper.send(f"make-x {page:x}")
    third = record(cli, helper.pid)
    assert fired(cli, third, "w-then-x") == {page}
    assert fired(cli, second, "w-then-x") == set()  # not yet at the second


# --- exit codes -----------------------------------------------------------------------------


def test_exit_codes(sqlite_cli: Cli, helper: Target, libz: Path, tmp_dir: Path) -> None:
    _dlopen_copy(helper, libz, tmp_dir)
    medium = record(sqlite_cli, helper.pid)  # exec-from-tmp: medium only
    assert sqlite_cli("check", str(medium)).exit_code == 0  # default --fail-on high
    assert sqlite_cli("check", str(medium), "--fail-on", "medium").exit_code == 3
    assert sqlite_cli("check", str(medium), "--fail-on", "low").exit_code == 3
    helper.send("exec-stack")
    high = record(sqlite_cli, helper.pid)
    assert sqlite_cli("check", str(high)).exit_code == 3
    assert sqlite_cli("check", str(high), "--fail-on", "critical").exit_code == 0
    assert sqlite_cli("check", "--pid", str(helper.pid)).exit_code == 3  # latest: high
    assert sqlite_cli("check", str(medium), str(high), "--rule", "wx").exit_code == 0
    for usage in (
        ["--fail-on", "severe"],
        ["--rule", "no-such-rule"],
        ["--format", "xml"],
        [str(high), "--pid", "1"],
        ["--live", str(high)],
    ):
        done = sqlite_cli("check", *usage)
        assert done.exit_code == 2, usage
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) <= 2
    missing = sqlite_cli("check", "999999")
    assert missing.exit_code == 1 and missing.stderr.strip() == "memsnap: no snapshot 999999"


def test_fail_on_default_is_the_rules_default() -> None:
    from memsnap.cli.check_cmd import Severity
    from memsnap.findings import DEFAULT_FAIL_ON, SEVERITIES

    assert [s.value for s in Severity] == list(SEVERITIES)
    assert Severity.high.value == DEFAULT_FAIL_ON


def test_ignore_file(sqlite_cli: Cli, helper: Target, tmp_path: Path) -> None:
    helper.send("rwx")
    snap = record(sqlite_cli, helper.pid)
    assert sqlite_cli("check", str(snap), "--fail-on", "medium").exit_code == 3
    ignore = tmp_path / "ignore"
    program = re.escape(os.readlink(f"/proc/{helper.pid}/exe"))
    ignore.write_text(f"# accepted here\nwx,anon-exec,exec-from-tmp {program}\n")
    done = sqlite_cli("check", str(snap), "--fail-on", "medium", "--ignore", str(ignore))
    assert done.exit_code == 0, done.stdout
    ignore.write_text("wx [unclosed\n")
    bad = sqlite_cli("check", str(snap), "--ignore", str(ignore))
    assert bad.exit_code == 2 and "line 1" in bad.stderr


# --- documents -------------------------------------------------------------------------------


def test_json_csv_and_openmetrics_documents(sqlite_cli: Cli, helper: Target) -> None:
    page = helper.address("rwx")
    snap = record(sqlite_cli, helper.pid)
    doc = check_json(sqlite_cli, str(snap), "--rule", "wx")
    assert doc["format"] == 1
    assert doc["checked"] == {"snapshots": 1, "processes": 1}
    [finding] = doc["findings"]
    assert set(finding) == {"rule", "severity", "title", "why", "snapshot", "region", "notes"}
    assert (finding["rule"], finding["severity"], finding["notes"]) == ("wx", "medium", [])
    shown = json.loads(sqlite_cli("show", str(snap), "--format", "json").stdout)
    assert finding["snapshot"] == shown["snapshot"]
    assert finding["region"] in shown["regions"]
    assert finding["region"]["start"] == f"0x{page:x}"
    with_history = check_json(sqlite_cli, str(snap), "--rule", "wx", "--history")
    assert with_history["findings"][0]["first_seen"]["id"] == snap
    assert with_history["findings"][0]["last_seen"] is None

    csv = sqlite_cli("check", str(snap), "--rule", "wx", "--format", "csv").stdout
    header, row = csv.splitlines()
    assert header.startswith("rule,severity,title,why,snapshot_id,")
    assert row.startswith("wx,medium,") and f"0x{page:x}" in row

    om = sqlite_cli("check", str(snap), "--rule", "wx,exec-stack", "--format", "openmetrics")
    lines = om.stdout.splitlines()
    assert lines[-1] == "# EOF" and om.stdout.endswith("# EOF\n")
    samples = [line for line in lines if line.startswith("memsnap_finding{")]
    assert len(samples) == 1
    assert 'rule="wx",severity="medium",host="' in samples[0]
    assert f'pid="{helper.pid}"' in samples[0] and samples[0].endswith(" 1")
    assert 'memsnap_findings{rule="wx",severity="medium"} 1' in lines
    assert 'memsnap_findings{rule="exec-stack",severity="high"} 0' in lines


# --- what needs a restart ---------------------------------------------------------------------


def test_restart_view_lists_each_library_with_its_processes(
    sqlite_cli: Cli, findings_binary: Path, libz: Path, tmp_dir: Path
) -> None:
    lib = tmp_dir / "libz-old.so"
    shutil.copyfile(libz, lib)
    first, second, third = (Target(findings_binary) for _ in range(3))
    try:
        first.send(f"dlopen {lib}")
        second.send(f"dlopen {lib}")
        lib.unlink()  # an upgrade removed it; the two still run the old code
        for t in (first, second, third):
            record(sqlite_cli, t.pid)
        done = sqlite_cli("check", "--rule", "deleted-code,replaced-code")
        print(done.stdout)
        assert done.exit_code == 0
        [line] = [line for line in done.stdout.splitlines() if line.startswith(str(lib))]
        assert "deleted" in line
        assert f"{first.pid} (findings)" in line and f"{second.pid} (findings)" in line
        assert str(third.pid) not in done.stdout
        assert "1 library to restart for, in 2 processes" in done.stdout
    finally:
        for t in (first, second, third):
            t.stop()


# --- --history ---------------------------------------------------------------------------------


def test_history_first_and_last_seen(sqlite_cli: Cli, helper: Target) -> None:
    """The trigger appears between snapshots 2 and 3 and is gone at 5."""
    helper.send("rw")
    ids = [record(sqlite_cli, helper.pid), record(sqlite_cli, helper.pid)]
    page = helper.address("rwx")
    ids += [record(sqlite_cli, helper.pid), record(sqlite_cli, helper.pid)]

    def seen(snapshot: int) -> list[tuple[int | None, int | None]]:
        doc = check_json(sqlite_cli, str(snapshot), "--rule", "wx", "--history")
        return [
            (
                f["first_seen"]["id"] if f["first_seen"] else None,
                f["last_seen"]["id"] if f["last_seen"] else None,
            )
            for f in doc["findings"]
            if f["region"]["start"] == f"0x{page:x}"
        ]

    assert seen(ids[3]) == [(ids[2], None)]  # still there at the latest snapshot
    helper.send(f"make-x {page:x}")  # no longer writable: wx is gone
    ids.append(record(sqlite_cli, helper.pid))
    assert seen(ids[1]) == []
    assert seen(ids[2]) == [(ids[2], ids[3])]
    assert seen(ids[3]) == [(ids[2], ids[3])]
    assert seen(ids[4]) == []
    table = sqlite_cli("check", str(ids[3]), "--rule", "wx", "--history").stdout
    print(table)
    assert re.search(rf"wx .* {ids[2]} at \S+ \S+ +{ids[3]} at ", table)
    # anon-exec stood from snapshot 3 on and still does.
    doc = check_json(sqlite_cli, "--pid", str(helper.pid), "--rule", "anon-exec", "--history")
    [anon] = [f for f in doc["findings"] if f["region"]["start"] == f"0x{page:x}"]
    assert (anon["first_seen"]["id"], anon["last_seen"]) == (ids[2], None)


# --- this machine -------------------------------------------------------------------------------

# The workplace's own tool runners re-execute themselves from a sealed memfd (comm
# "memfd:sealed-…", exe "/memfd:sealed-<hex> (deleted)"): true positives of memfd-exec,
# accepted on this site as an operator would, with an ignore file naming exactly them.
SITE_IGNORE = "memfd-exec ^/?memfd:sealed-[0-9a-f]+\n"


def test_check_live_on_this_machine(
    sqlite_cli: Cli, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`check --live --fail-on high` with the site's ignore file exits 0: nothing else at
    high or above. Everything found, the ignored findings included, is printed (on the
    terminal, whatever pytest captures) so that it can be quoted."""
    ignore = tmp_path / "site-ignore"
    ignore.write_text(SITE_IGNORE)
    done = sqlite_cli("check", "--live", "--ignore", str(ignore), "--fail-on", "high")
    everything = check_json(sqlite_cli)  # the same snapshots, nothing ignored
    with_ignore = check_json(sqlite_cli, "--ignore", str(ignore))
    with capsys.disabled():
        print(f"\ncheck --live: exit {done.exit_code}; {done.stderr.strip()}")
        print(f"{len(everything['findings'])} findings, the ignored ones included:")
        for f in everything["findings"]:
            s = f["snapshot"]
            print(f"  {f['severity']:8} {f['rule']:13} {s['pid']} ({s['command']}): {f['why']}")
    serious = [f for f in with_ignore["findings"] if f["severity"] in ("high", "critical")]
    # Other test suites run on this machine too, and their helpers build these
    # triggers on purpose: those (and only those) are not this machine's own processes.
    foreign = [f for f in serious if _test_helper(f["snapshot"])]
    assert serious == foreign, "\n".join(f["why"] for f in serious if f not in foreign)
    assert done.exit_code == (3 if serious else 0)
    assert everything["checked"]["processes"] > 1


def _test_helper(snapshot: dict[str, Any]) -> bool:
    """A findings helper another test started (built by pytest into a temporary dir)."""
    exe = snapshot.get("exe") or ""
    return bool(re.search(r"/pytest-\d+/[^/]*helper\d*/findings( \(deleted\))?$", exe))

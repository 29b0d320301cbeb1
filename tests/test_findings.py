"""The findings rules of `memsnap check` on plain `Region` values and on real captures.

Every literal region has its fields all different from the defaults of the others (start,
end, offset, device, inode, sizes), so a rule reading the wrong field cannot pass.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import fixture_text
from memsnap.classify import classify
from memsnap.errors import UsageError
from memsnap.findings import (
    DEFAULT_FAIL_ON,
    RULES,
    SEVERITIES,
    SNAPSHOT_RULES,
    Facts,
    Finding,
    Reported,
    Seen,
    anon_exec,
    at_or_above,
    check,
    ddexec,
    deleted_code,
    dirty_text,
    exec_from_tmp,
    exec_heap,
    exec_stack,
    exit_code,
    ignored,
    is_replaced,
    jit_likely,
    load_ignore,
    memfd_exec,
    ordered,
    parse_ignore,
    parse_rules,
    parse_severity,
    replaced_code,
    replaced_objects,
    severity_rank,
    w_then_x,
    without_ignored,
    wx,
)
from memsnap.model import ProcessIdentity, Region, Snapshot, Totals
from memsnap.parse import parse_text
from memsnap.render.findings import findings_csv, findings_json, findings_openmetrics, label_value
from memsnap.render.snapshot import region_json, snapshot_json

NO_FACTS = Facts()


def region(
    start: int = 0x7F3A_1C20_5000,
    end: int = 0x7F3A_1C20_8000,
    perms: str = "r-xp",
    offset: int = 0x3000,
    dev: str = "fe:01",
    inode: int = 917_503,
    path: str | None = "/usr/lib/x86_64-linux-gnu/libz.so.1.2.13",
    deleted: bool = False,
    kind: str = "lib-text",
    **sizes: int | None,
) -> Region:
    base: dict[str, Any] = dict(
        rss=12288,
        pss=6144,
        shared_clean=8192,
        shared_dirty=0,
        private_clean=4096,
        private_dirty=0,
        referenced=12288,
        anonymous=0,
        anon_huge=0,
        swap=0,
        swap_pss=0,
        locked=0,
    )
    base.update(sizes)
    return Region(start, end, perms, offset, dev, inode, path, deleted, **base, kind=kind)


def anon(start: int, perms: str, kind: str = "anon", path: str | None = None) -> Region:
    return region(start, start + 0x2000, perms, 0, "00:00", 0, path, kind=kind)


def rules_of(findings: list[Finding]) -> list[str]:
    return [f.rule for f in findings]


# --- the rule table -----------------------------------------------------------------------


def test_rule_table_is_the_issues() -> None:
    assert {r.id: r.severity for r in RULES.values()} == {
        "memfd-exec": "critical",
        "exec-stack": "high",
        "exec-heap": "high",
        "dirty-text": "high",
        "ddexec": "high",
        "wx": "medium",
        "anon-exec": "medium",
        "exec-from-tmp": "medium",
        "deleted-code": "medium",
        "replaced-code": "medium",
        "w-then-x": "low",
    }
    assert all(r.title and "\n" not in r.title for r in RULES.values())
    # w-then-x looks across snapshots; every other rule looks at one.
    assert set(SNAPSHOT_RULES) == set(RULES) - {"w-then-x"}


def test_findings_carry_their_rules_severity_and_title() -> None:
    found = check([anon(0x7F00_0000_0000, "rwxp")], NO_FACTS)
    assert {(f.rule, f.severity, f.title) for f in found} == {
        ("wx", "medium", RULES["wx"].title),
        ("anon-exec", "medium", RULES["anon-exec"].title),
    }


# --- memfd-exec --------------------------------------------------------------------------


def test_memfd_exec_fires_on_an_executable_memfd_mapping() -> None:
    payload = region(path="/memfd:payload", deleted=True, kind="shmem", dev="00:01", inode=71)
    [f] = memfd_exec([payload], NO_FACTS)
    assert f.rule == "memfd-exec" and f.severity == "critical" and f.region == payload
    assert "/memfd:payload" in f.why and "0x7f3a1c205000" in f.why
    assert f.notes == ()


def test_memfd_exec_leaves_data_memfds_and_runc_alone() -> None:
    data = region(perms="rw-p", path="/memfd:buffer", deleted=True, kind="shmem", inode=72)
    runc = region(path="/memfd:runc_cloned:/proc/self/exe", deleted=True, inode=73)
    assert memfd_exec([data, runc], NO_FACTS) == []
    assert memfd_exec([runc], Facts(exe="/memfd:runc_cloned:/proc/self/exe")) == []


def test_memfd_exec_fires_on_a_program_run_from_a_memfd() -> None:
    # An imported text may not show the mapping; the exe alone says it.
    [f] = memfd_exec([anon(0x5600_0000_0000, "rw-p")], Facts(exe="/memfd:x"))
    assert f.region is None and "/memfd:x" in f.why
    # With the mapping, one finding, on it.
    text = region(path="/memfd:x", deleted=True, dev="00:01", inode=74)
    [f] = memfd_exec([text], Facts(exe="/memfd:x"))
    assert f.region == text


def test_a_jits_dual_mapped_memfd_is_wx_not_memfd_exec() -> None:
    # asmjit (Erlang's JIT), xbyak, .NET: one memfd mapped shared twice, rw and rx.
    writable = region(0x7F76_D2A0_0000, 0x7F76_D4A0_0000, "rw-s", 0, "00:01", 30, "/memfd:vmem")
    code = region(0x7F76_D4A0_0000, 0x7F76_D6A0_0000, "r-xs", 0, "00:01", 30, "/memfd:vmem")
    assert memfd_exec([writable, code], NO_FACTS) == []
    [f] = wx([writable, code], NO_FACTS)
    assert f.region == code and f.notes == ("dual-mapped",)
    assert "0x7f76d2a00000" in f.why and "0x7f76d4a00000" in f.why
    # Executable shared alone (written through the fd, then mapped): still memfd-exec.
    other = region(0x7F76_D800_0000, 0x7F76_D900_0000, "r-xs", 0, "00:01", 31, "/memfd:vmem")
    assert [f.region for f in memfd_exec([writable, other], NO_FACTS)] == [other]


def test_memfd_exec_notes_jit_code_memfds_and_keeps_them() -> None:
    qt = region(path="/memfd:JITCode:QtQml", deleted=True, dev="00:05", inode=8828)
    [f] = memfd_exec([qt], NO_FACTS)
    assert f.notes == ("jit-likely",) and f.severity == "critical"


# --- exec-stack, exec-heap ---------------------------------------------------------------


def test_exec_stack_fires_on_stacks_with_x() -> None:
    stack = anon(0x7FFD_0000_0000, "rwxp", "stack", "[stack]")
    thread = anon(0x7F00_1000_0000, "rwxp", "thread-stack")
    plain = anon(0x7FFE_0000_0000, "rw-p", "stack", "[stack]")
    other = anon(0x7F00_2000_0000, "rwxp", "anon")
    found = exec_stack([stack, thread, plain, other], NO_FACTS)
    assert [f.region for f in found] == [stack, thread]
    assert "[stack]" in found[0].why and "thread-stack" in found[1].why


def test_exec_heap_fires_on_the_heap_with_x() -> None:
    heap = anon(0x5600_0000_0000, "rwxp", "heap", "[heap]")
    assert [f.region for f in exec_heap([heap], NO_FACTS)] == [heap]
    assert exec_heap([anon(0x5600_0000_0000, "rw-p", "heap", "[heap]")], NO_FACTS) == []
    assert exec_heap([anon(0x5600_0000_0000, "rwxp", "anon")], NO_FACTS) == []


# --- dirty-text --------------------------------------------------------------------------


def test_dirty_text_fires_on_code_copied_on_write() -> None:
    patched = region(private_dirty=4096, anonymous=4096)
    [f] = dirty_text([patched], NO_FACTS)
    assert f.region == patched and "4096 bytes" in f.why
    # Swapped out, a copied page is still a copied page.
    swapped = region(private_dirty=0, anonymous=0, swap=8192)
    assert len(dirty_text([swapped], NO_FACTS)) == 1


def test_dirty_text_ignores_page_cache_not_yet_written_back() -> None:
    # A library copied a moment ago and loaded: the page cache is dirty, so smaps says
    # Private_Dirty, but no page was copied (Anonymous 0): nothing was patched.
    fresh = region(private_dirty=65536, anonymous=0)
    assert dirty_text([fresh], NO_FACTS) == []


def test_dirty_text_on_old_kernels_uses_private_dirty() -> None:
    old = region(private_dirty=4096, anonymous=None)
    assert len(dirty_text([old], NO_FACTS)) == 1


def test_dirty_text_needs_an_executable_file_mapping_and_smaps() -> None:
    data = region(perms="rw-p", kind="lib-data", private_dirty=4096, anonymous=4096)
    vdso = region(perms="r-xp", dev="00:00", inode=0, path="[vdso]", kind="vdso", anonymous=4096)
    jit = anon(0x7F00_0000_0000, "r-xp")._replace(anonymous=4096, private_dirty=4096)
    unread: dict[str, Any] = dict.fromkeys(("private_dirty", "anonymous", "swap"))
    maps_only = region(**unread)
    assert dirty_text([data, vdso, jit, maps_only], NO_FACTS) == []


# --- ddexec ---------------------------------------------------------------------------------


def ddexec_trace(**changes: Any) -> Region:
    return anon(0x0666_0000, "r--p")._replace(**changes)


def test_ddexec_fires_on_its_trace() -> None:
    trace = ddexec_trace()
    [f] = ddexec([trace], NO_FACTS)
    assert f.region == trace and "0x6660000" in f.why
    # Device numbers as an old or imported text may print them.
    assert len(ddexec([ddexec_trace(dev="0:0")], NO_FACTS)) == 1


@pytest.mark.parametrize(
    "changes",
    [
        {"start": 0x1000_0000, "end": 0x1000_2000},  # at the threshold, not below it
        {"perms": "rw-p"},
        {"perms": "r--s"},
        {"offset": 0x1000},
        {"dev": "00:01"},
        {"dev": "garbage"},
        {"path": "[anon:scudo:primary]"},  # a pseudo-path: osquery's pseudo = 1
        {"path": "/usr/bin/prog", "dev": "00:00", "inode": 0},
    ],
)
def test_ddexec_needs_every_condition(changes: dict[str, object]) -> None:
    assert ddexec([ddexec_trace(**changes)], NO_FACTS) == []


# --- wx, anon-exec, jit-likely --------------------------------------------------------------


def test_wx_fires_on_writable_and_executable_regions() -> None:
    rwx = anon(0x7F00_0000_0000, "rwxp")
    rwxs = region(perms="rwxs", path="/memfd:Xbyak::abc", dev="00:05", inode=19960170)
    found = wx(
        [rwx, rwxs, anon(0x7F00_1000_0000, "r-xp"), anon(0x7F00_2000_0000, "rw-p")], NO_FACTS
    )
    assert [f.region for f in found] == [rwx, rwxs]
    assert all(f.notes == () for f in found)


def test_anon_exec_fires_on_executable_memory_with_no_file() -> None:
    plain = anon(0x7F00_0000_0000, "r-xp")
    named = anon(0x54C0_0000, "r-xp", path="[anon:dalvik-zygote-jit-code-cache]")
    heap = anon(0x5600_0000_0000, "rwxp", "heap", "[heap]")
    found = anon_exec([plain, named, heap], NO_FACTS)
    assert [f.region for f in found] == [plain, named, heap]


@pytest.mark.parametrize("page", ["[vdso]", "[vsyscall]", "[vectors]", "[uprobes]", "[sigpage]"])
def test_anon_exec_leaves_the_kernels_code_pages_alone(page: str) -> None:
    assert anon_exec([anon(0xFFFF_0000, "r-xp", "other", page)], NO_FACTS) == []


def test_anon_exec_leaves_file_backed_code_alone() -> None:
    assert anon_exec([region(), region(path="/memfd:x", inode=5)], NO_FACTS) == []


@pytest.mark.parametrize(
    "facts",
    [
        Facts(command="java"),
        Facts(command="x", exe="/usr/lib/jvm/java-17-openjdk-amd64/bin/java"),
        Facts(command="MainThread", cmdline=("/usr/bin/node", "server.js")),
        Facts(command="chromium", cmdline=("/usr/lib/chromium/chromium", "--type=renderer")),
        Facts(command="dotnet"),
        Facts(command="beam.smp"),
    ],
)
def test_wx_and_anon_exec_note_jit_runtimes_and_keep_the_finding(facts: Facts) -> None:
    code = anon(0x7F00_0000_0000, "rwxp")
    found = wx([code], facts) + anon_exec([code], facts)
    assert rules_of(found) == ["wx", "anon-exec"]
    assert all(f.notes == ("jit-likely",) for f in found)


def test_jit_likely_by_the_runtimes_library() -> None:
    # Any Java launcher (javac, keytool, a wrapper) is a JVM: it maps libjvm.so.
    libjvm = region(path="/usr/lib/jvm/java-17/lib/server/libjvm.so", inode=1717840)
    assert jit_likely(Facts(command="javac"), [libjvm])
    assert jit_likely(Facts(), [region(path="/usr/lib/libQt5Qml.so.5.15.1")])
    assert not jit_likely(Facts(command="javac"), [region()])
    assert not jit_likely(Facts(command="nodejs-helper-script"), [])
    # Only an executable mapping of it counts (a data file named so does not).
    assert not jit_likely(Facts(), [region(perms="r--p", path="/srv/libjvm.so")])


# --- exec-from-tmp -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/tmp/x/libevil.so", "/var/tmp/a.out", "/dev/shm/payload", "/run/user/0/lib.so"]
)
def test_exec_from_tmp_fires_on_code_from_temporary_directories(path: str) -> None:
    text = region(path=path)
    data = region(0x7F3A_1C20_8000, 0x7F3A_1C20_9000, "rw-p", 0x6000, path=path, kind="lib-data")
    [f] = exec_from_tmp([text, data], NO_FACTS)
    assert f.region == text and path in f.why


@pytest.mark.parametrize(
    "path",
    [
        "/usr/lib/x86_64-linux-gnu/libz.so.1",
        "/tmpfs/lib.so",  # not /tmp
        "/home/u/tmp/lib.so",
        "/tmp/jna--1234/jna2910467811938153475.tmp",  # JNA's unpacked library
        "/tmp/jna8512.tmp",
        "/root/.cache/JNA/temp/jna1.tmp",
        "/tmp/ffiQ3x9Zb",  # libffi's closure trampolines
        "/dev/shm/ffiAbC123",
        "/tmp/orcexec.QCuZ6M",  # GStreamer's ORC JIT
    ],
)
def test_exec_from_tmp_leaves_other_places_and_known_helpers_alone(path: str) -> None:
    assert exec_from_tmp([region(path=path)], NO_FACTS) == []


def test_exec_from_tmp_needs_an_executable_object() -> None:
    assert exec_from_tmp([region(perms="r--p", path="/tmp/data.bin", kind="file")], NO_FACTS) == []


def test_exec_from_tmp_does_not_spare_a_helper_name_in_a_subdirectory() -> None:
    # libffi writes straight into the directory; "ffi..." deeper down is someone else.
    assert len(exec_from_tmp([region(path="/tmp/x/ffi123456")], NO_FACTS)) == 1


# --- deleted-code ---------------------------------------------------------------------------


def library(path: str, deleted: bool, inode: int = 917_503, dev: str = "fe:01") -> list[Region]:
    """A library's usual four mappings."""
    return [
        region(
            0x7F3A_1C20_0000,
            0x7F3A_1C20_3000,
            "r--p",
            0,
            dev,
            inode,
            path,
            deleted,
            kind="lib-rodata",
        ),
        region(0x7F3A_1C20_3000, 0x7F3A_1C21_5000, "r-xp", 0x3000, dev, inode, path, deleted),
        region(
            0x7F3A_1C21_5000,
            0x7F3A_1C21_B000,
            "r--p",
            0x15000,
            dev,
            inode,
            path,
            deleted,
            kind="lib-rodata",
        ),
        region(
            0x7F3A_1C21_C000,
            0x7F3A_1C21_D000,
            "rw-p",
            0x1B000,
            dev,
            inode,
            path,
            deleted,
            kind="lib-data",
        ),
    ]


def test_deleted_code_fires_once_per_deleted_object() -> None:
    lib = library("/usr/lib/x86_64-linux-gnu/libssl.so.3", deleted=True)
    [f] = deleted_code(lib, NO_FACTS)
    assert f.region == lib[1]  # its executable mapping
    assert f.why == "/usr/lib/x86_64-linux-gnu/libssl.so.3 was deleted after the process mapped it"
    assert f.title == "runs a deleted library"


def test_deleted_code_names_the_program() -> None:
    prog = [r._replace(kind=r.kind.removeprefix("lib-")) for r in library("/usr/sbin/sshd", True)]
    [f] = deleted_code(prog, NO_FACTS)
    assert "(the program)" in f.why


@pytest.mark.parametrize(
    "path",
    [
        "/memfd:payload",
        "memfd:old-style",
        "/SYSV0000002a",
        "/dev/zero",
        "/drm mm object",
        "/[aio]",
        "/#8671",
        "/tmp/jna--1/jna42.tmp",
        "/tmp/ffiXa81bC",
        "/run/user/1000/orcexec.xL2b7d",
    ],
)
def test_deleted_code_leaves_needrestarts_exceptions_alone(path: str) -> None:
    assert deleted_code(library(path, deleted=True), NO_FACTS) == []


def test_deleted_code_needs_deleted_code() -> None:
    assert deleted_code(library("/usr/lib/libssl.so.3", deleted=False), NO_FACTS) == []
    data = [r for r in library("/srv/cache.db", deleted=True) if "x" not in r.perms]
    assert deleted_code(data, NO_FACTS) == []


def test_deleted_code_keeps_deleted_files_in_temporary_directories() -> None:
    # needrestart skips /tmp altogether; code run from a deleted temp file is a dropper's.
    assert len(deleted_code(library("/tmp/x/libz.so", deleted=True), NO_FACTS)) == 1


# --- replaced-code ---------------------------------------------------------------------------


def test_replaced_code_fires_on_objects_found_replaced() -> None:
    lib = library("/usr/lib/libc.so.6", deleted=False, inode=4242, dev="08:02")
    facts = Facts(replaced=frozenset({("/usr/lib/libc.so.6", "08:02", 4242)}))
    [f] = replaced_code(lib, facts)
    assert f.region == lib[1] and "/usr/lib/libc.so.6" in f.why and "4242" in f.why


def test_replaced_code_needs_the_same_object_found_replaced() -> None:
    lib = library("/usr/lib/libc.so.6", deleted=False, inode=4242, dev="08:02")
    for other in [
        ("/usr/lib/libc.so.6", "08:02", 4243),
        ("/usr/lib/libc.so.6", "08:03", 4242),
        ("/usr/lib/libm.so.6", "08:02", 4242),
    ]:
        assert replaced_code(lib, Facts(replaced=frozenset({other}))) == []
    assert replaced_code(lib, NO_FACTS) == []


def test_replaced_code_leaves_memfds_alone() -> None:
    lib = library("/memfd:x", deleted=True, inode=9, dev="00:01")
    assert replaced_code(lib, Facts(replaced=frozenset({("/memfd:x", "00:01", 9)}))) == []


def test_is_replaced_compares_inode_and_device() -> None:
    sda2 = os.makedev(8, 2)
    assert not is_replaced("08:02", 4242, sda2, 4242)
    assert is_replaced("08:02", 4242, sda2, 4243)
    assert is_replaced("08:02", 4242, os.makedev(8, 3), 4242)
    # Three-digit majors and 20-bit minors, as the kernel prints them.
    assert not is_replaced("103:3", 7, os.makedev(0x103, 3), 7)
    assert not is_replaced("fd:10005", 7, os.makedev(0xFD, 0x10005), 7)


def test_is_replaced_on_btrfs_compares_inodes_only() -> None:
    # btrfs subvolumes: maps says 00:2d, stat says another anonymous device.
    assert not is_replaced("00:2d", 263, os.makedev(0, 0x2E), 263)
    assert is_replaced("00:2d", 263, os.makedev(0, 0x2E), 264)
    # Unnamed on either side is enough (needrestart also counts majors 144-146).
    assert not is_replaced("08:02", 263, os.makedev(0, 0x2E), 263)
    assert not is_replaced("90:01", 263, os.makedev(8, 2), 263)
    assert not is_replaced("nonsense", 263, os.makedev(8, 2), 263)


def stat_result(dev: int, ino: int) -> os.stat_result:
    return os.stat_result((0o100755, ino, dev, 1, 0, 0, 4096, 0, 0, 0))


def test_replaced_objects_stats_each_executable_object_once() -> None:
    lib = library("/usr/lib/libc.so.6", deleted=True, inode=4242, dev="08:02")
    data = region(path="/srv/data", perms="r--p", inode=77, kind="file")
    asked: list[str] = []

    def stat(path: str) -> os.stat_result | None:
        asked.append(path)
        return stat_result(os.makedev(8, 2), 9999)

    assert replaced_objects([*lib, data], stat) == {("/usr/lib/libc.so.6", "08:02", 4242)}
    assert asked == ["/usr/lib/libc.so.6"]
    # Nothing at the path: deleted, not replaced; the same file: neither.
    assert replaced_objects(lib, lambda p: None) == frozenset()
    assert replaced_objects(lib, lambda p: stat_result(os.makedev(8, 2), 4242)) == frozenset()


# --- w-then-x --------------------------------------------------------------------------------


A = 0x7F00_0000_0000


def test_w_then_x_fires_when_written_memory_becomes_executable() -> None:
    history = [[anon(A, "rw-p")], [anon(A, "r-xp")], [anon(A, "r-xp")]]
    [(index, f)] = w_then_x(history)
    assert index == 1 and f.rule == "w-then-x" and f.severity == "low"
    assert f.region == anon(A, "r-xp") and "0x7f0000000000" in f.why
    # Written in the first, gone in the second, executable in the third.
    [(index, _)] = w_then_x([[anon(A, "rw-p")], [], [anon(A, "r-xp")]])
    assert index == 2


@pytest.mark.parametrize(
    "history",
    [
        [[anon(A, "rw-p")], [anon(A, "rw-p")]],  # never executable
        [[anon(A, "r-xp")], [anon(A, "rw-p")]],  # the other way round
        [[anon(A, "rwxp")], [anon(A, "r-xp")]],  # executable all along: `wx`'s business
        [[anon(A, "rw-p")], [anon(A + 0x1000, "r-xp")]],  # another address
        [[region(A, perms="rw-p")], [region(A, perms="r-xp")]],  # a file's pages
        [[anon(A, "rw-p"), anon(A, "r-xp")]],  # one snapshot only
    ],
)
def test_w_then_x_needs_written_then_executable_at_one_address(
    history: list[list[Region]],
) -> None:
    assert w_then_x(history) == []


# --- check, --rule -------------------------------------------------------------------------


def test_check_runs_every_rule_or_those_named() -> None:
    regions = [anon(A, "rwxp"), *library("/tmp/x/lib.so", deleted=True)]
    assert sorted(rules_of(check(regions, NO_FACTS))) == [
        "anon-exec",
        "deleted-code",
        "exec-from-tmp",
        "wx",
    ]
    assert rules_of(check(regions, NO_FACTS, ["deleted-code", "w-then-x"])) == ["deleted-code"]


def test_parse_rules() -> None:
    assert parse_rules("deleted-code,replaced-code") == ("deleted-code", "replaced-code")
    assert parse_rules(" wx , ") == ("wx",)
    with pytest.raises(UsageError, match="'nope'"):
        parse_rules("wx,nope")
    with pytest.raises(UsageError):
        parse_rules(",")


# --- severities, --fail-on ----------------------------------------------------------------


def test_severities_are_ordered() -> None:
    assert SEVERITIES == ("info", "low", "medium", "high", "critical")
    assert [severity_rank(s) for s in SEVERITIES] == [0, 1, 2, 3, 4]
    assert at_or_above("high", "high") and at_or_above("critical", "medium")
    assert not at_or_above("medium", "high")


def test_parse_severity() -> None:
    assert parse_severity("HIGH ") == "high"
    with pytest.raises(UsageError, match="--fail-on: unknown severity 'severe'"):
        parse_severity("severe")


def finding(rule: str) -> Finding:
    return Finding(rule, RULES[rule].severity, RULES[rule].title, "why", None)


def test_exit_code_is_3_at_or_above_fail_on() -> None:
    assert DEFAULT_FAIL_ON == "high"
    assert exit_code([]) == 0
    assert exit_code([finding("wx"), finding("w-then-x")]) == 0
    assert exit_code([finding("wx"), finding("exec-stack")]) == 3
    assert exit_code([finding("memfd-exec")], "critical") == 3
    assert exit_code([finding("exec-heap")], "critical") == 0
    assert exit_code([finding("w-then-x")], "low") == 3
    assert exit_code([finding("w-then-x")], "info") == 3


# --- --ignore FILE ----------------------------------------------------------------------------


IGNORE = """\
# JIT runtimes here are expected
wx,anon-exec ^/usr/lib/jvm/

   # indented comment, then a blank line

deleted-code path=^/opt/legacy/
* command=^backup-agent\\b
exec-from-tmp command=--plugin-dir /tmp/plugins
"""


def test_parse_ignore_reads_rules_regexes_and_targets() -> None:
    rules = parse_ignore(IGNORE, "ignore.txt")
    assert [(r.rules, r.pattern.pattern, r.on, r.line) for r in rules] == [
        (frozenset({"wx", "anon-exec"}), "^/usr/lib/jvm/", "either", 2),
        (frozenset({"deleted-code"}), "^/opt/legacy/", "path", 6),
        (None, r"^backup-agent\b", "command", 7),
        (frozenset({"exec-from-tmp"}), "--plugin-dir /tmp/plugins", "command", 8),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("wx\n", "ignore.txt line 1: expected a rule id and a regex: 'wx'"),
        ("# ok\nwx ok\nno-such-rule x\n", "ignore.txt line 3: unknown rule 'no-such-rule'"),
        ("\n\nwx,nope,anon-exec x\n", "ignore.txt line 3: unknown rule 'nope'"),
        ("wx (unclosed\n", "ignore.txt line 1: bad regex '(unclosed'"),
        ("wx path=[z-a]\n", "ignore.txt line 1: bad regex '[z-a]'"),
    ],
)
def test_parse_ignore_names_the_bad_line(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        parse_ignore(text, "ignore.txt")


JAVA = Facts(
    command="java", cmdline=("/usr/bin/java", "-jar", "app.jar"), exe="/usr/lib/jvm/bin/java"
)


def test_ignored_by_path_or_command() -> None:
    rules = parse_ignore(IGNORE)
    jvm_code = Finding("wx", "medium", "t", "w", region(path="/usr/lib/jvm/lib/libjvm.so"))
    anon_code = Finding("wx", "medium", "t", "w", anon(A, "rwxp"))
    assert ignored(jvm_code, NO_FACTS, rules)  # by the path
    assert ignored(anon_code, JAVA, rules)  # by the program path /usr/lib/jvm/...
    assert not ignored(anon_code, Facts(command="python3"), rules)
    # The rule must match: deleted-code is not silenced by the wx line.
    deleted = Finding("deleted-code", "medium", "t", "w", region(path="/usr/lib/jvm/x.so"))
    assert not ignored(deleted, JAVA, rules)


def test_ignored_path_or_command_only() -> None:
    rules = parse_ignore(IGNORE)
    legacy = Finding("deleted-code", "medium", "t", "w", region(path="/opt/legacy/lib.so"))
    assert ignored(legacy, NO_FACTS, rules)
    # path= looks at the path only: a command of that name does not count.
    other = Finding("deleted-code", "medium", "t", "w", region(path="/usr/lib/lib.so"))
    assert not ignored(other, Facts(command="/opt/legacy/run"), rules)
    # command= looks at the command line only, with every argument (as pgrep -f).
    tmp = Finding("exec-from-tmp", "medium", "t", "w", region(path="/tmp/plugins/a.so"))
    assert not ignored(tmp, NO_FACTS, rules)
    app = Facts(command="app", cmdline=("app", "--plugin-dir", "/tmp/plugins"))
    assert ignored(tmp, app, rules)
    # `*` covers every rule.
    agent = Facts(command="backup-agent")
    assert ignored(finding("memfd-exec"), agent, rules)
    assert not ignored(finding("memfd-exec"), Facts(command="backup-agents"), rules)


def test_without_ignored() -> None:
    rules = parse_ignore("wx .\n")
    kept = without_ignored([finding("wx"), finding("anon-exec")], JAVA, rules)
    assert rules_of(kept) == ["anon-exec"]


def test_load_ignore(tmp_path: Path) -> None:
    good = tmp_path / "ignore"
    good.write_text("wx ^java$\n")
    assert [r.line for r in load_ignore(str(good))] == [1]
    bad = tmp_path / "bad"
    bad.write_text("\nwx\n")
    with pytest.raises(UsageError, match=f"{re.escape(str(bad))} line 2"):
        load_ignore(str(bad))
    with pytest.raises(UsageError, match="cannot read"):
        load_ignore(str(tmp_path / "missing"))
    huge = tmp_path / "huge"
    huge.write_bytes(b"# " + b"x" * (1 << 20) + b"\n")
    with pytest.raises(UsageError, match="over 1 MiB"):
        load_ignore(str(huge))


# --- documents ----------------------------------------------------------------------------------


def snapshot(
    id: int = 7, pid: int = 5973, command: str = "target", host: str = "web-1"
) -> Snapshot:
    return Snapshot(
        id=id,
        process_id=3,
        seq=2,
        taken_at=datetime(2026, 11, 24, 22, 54, 23, 120511, tzinfo=timezone.utc),
        identity=ProcessIdentity(host, "b00t", pid, 123456),
        command=command,
        cmdline=("./target", "--serve"),
        exe="/srv/target",
        label=None,
        page_size=4096,
        kernel="6.18.0",
        source="live",
        has_smaps=True,
        totals=Totals(31, 123456789, 4567890, 4000000, 0),
    )


DELETED_LIB = library("/usr/lib/x86_64-linux-gnu/libssl.so.3", deleted=True)
DELETED = deleted_code(DELETED_LIB, NO_FACTS)[0]
FIRST = Seen(12, datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc))


def test_findings_json_is_the_contracts() -> None:
    snap = snapshot()
    rep = Reported(snap, DELETED, FIRST, None)
    doc = findings_json([rep], snapshots=41, processes=40)
    assert doc == {
        "checked": {"snapshots": 41, "processes": 40},
        "findings": [
            {
                "rule": "deleted-code",
                "severity": "medium",
                "title": "runs a deleted library",
                "why": (
                    "/usr/lib/x86_64-linux-gnu/libssl.so.3 was deleted after the process mapped it"
                ),
                "snapshot": snapshot_json(snap),
                "region": region_json(DELETED_LIB[1], 4096),
                "notes": [],
            }
        ],
    }
    with_history = findings_json([rep], 41, 40, history=True)["findings"][0]
    assert with_history["first_seen"] == {"id": 12, "taken_at": "2026-11-20T10:00:00+00:00"}
    assert with_history["last_seen"] is None
    gone = Reported(snap, DELETED, FIRST, Seen(13, datetime(2026, 11, 21, tzinfo=timezone.utc)))
    assert findings_json([gone], 1, 1, history=True)["findings"][0]["last_seen"] == {
        "id": 13,
        "taken_at": "2026-11-21T00:00:00+00:00",
    }
    # A process-wide finding has no region.
    exe = memfd_exec([], Facts(exe="/memfd:x"))[0]
    item = findings_json([Reported(snap, exe)], 1, 1)["findings"][0]
    assert item["region"] is None


def test_findings_csv() -> None:
    wx_finding = wx([anon(A, "rwxp")], JAVA)[0]
    text = findings_csv([Reported(snapshot(), DELETED), Reported(snapshot(8), wx_finding)])
    lines = text.split("\n")
    assert lines[0] == (
        "rule,severity,title,why,snapshot_id,taken_at,host,pid,command,start,end,perms,path,"
        "deleted,kind,notes"
    )
    assert lines[1] == (
        "deleted-code,medium,runs a deleted library,/usr/lib/x86_64-linux-gnu/libssl.so.3 was "
        "deleted after the process mapped it,7,2026-11-24T22:54:23.120511+00:00,web-1,5973,"
        "target,0x7f3a1c203000,0x7f3a1c215000,r-xp,/usr/lib/x86_64-linux-gnu/libssl.so.3,true,"
        "lib-text,"
    )
    assert lines[2].startswith("wx,medium,") and lines[2].endswith(",,false,anon,jit-likely")
    history = findings_csv([Reported(snapshot(), DELETED, FIRST)], history=True).split("\n")
    assert history[0].endswith(",first_seen_id,first_seen_at,last_seen_id,last_seen_at")
    assert history[1].endswith(",12,2026-11-20T10:00:00+00:00,,")


def test_label_values_are_escaped_as_openmetrics_says() -> None:
    assert label_value('a\\b"c\nd') == 'a\\\\b\\"c\\nd'
    # A byte that is not UTF-8, or a control character that could drive a terminal
    # reading the file, becomes the text `\xNN`, whose backslash is escaped in turn.
    assert label_value("caf\udcc3") == "caf\\\\xc3"
    assert label_value("\x1b]0;pwned\x07\r") == "\\\\x1b]0;pwned\\\\x07\\\\x0d"


def test_findings_openmetrics() -> None:
    odd = '/tmp/we"ird\\dir\nlib.so'
    lib = library(odd, deleted=True)
    reported = [
        Reported(snapshot(command='ev"il\n'), deleted_code(lib, NO_FACTS)[0]),
        Reported(snapshot(8, pid=77, host="db-2"), wx([anon(A, "rwxp")], NO_FACTS)[0]),
        Reported(snapshot(8, pid=77, host="db-2"), wx([anon(A + 0x4000, "rwxp")], NO_FACTS)[0]),
    ]
    text = findings_openmetrics(reported)
    lines = text.split("\n")
    assert text.endswith("# EOF\n")
    escaped = '/tmp/we\\"ird\\\\dir\\nlib.so'
    assert (
        'memsnap_finding{rule="deleted-code",severity="medium",host="web-1",pid="5973",'
        f'command="ev\\"il\\n",path="{escaped}",address="0x7f3a1c203000"}} 1'
    ) in lines
    # Two anonymous regions of one process: two samples, told apart by their address.
    assert (
        'memsnap_finding{rule="wx",severity="medium",host="db-2",pid="77",command="target",'
        'path="",address="0x7f0000000000"} 1'
    ) in lines
    assert (
        'memsnap_finding{rule="wx",severity="medium",host="db-2",pid="77",command="target",'
        'path="",address="0x7f0000004000"} 1'
    ) in lines
    counts = [line for line in lines if line.startswith("memsnap_findings{")]
    assert len(counts) == len(RULES)  # every rule checked, zero included
    assert 'memsnap_findings{rule="wx",severity="medium"} 2' in counts
    assert 'memsnap_findings{rule="deleted-code",severity="medium"} 1' in counts
    assert 'memsnap_findings{rule="memfd-exec",severity="critical"} 0' in counts
    # Each family's metadata comes before its samples; no line holds a raw newline.
    assert lines.index("# TYPE memsnap_finding gauge") < lines.index(
        "# TYPE memsnap_findings gauge"
    )
    assert lines.count("# EOF") == 1 and lines[-1] == ""
    assert all(line.startswith(("#", "memsnap_finding")) for line in lines[:-1])


def test_findings_openmetrics_never_repeats_a_label_set() -> None:
    # The same region of one process found in two of its snapshots: one sample.
    found = wx([anon(A, "rwxp")], NO_FACTS)[0]
    text = findings_openmetrics(
        [Reported(snapshot(7), found), Reported(snapshot(8), found)], rules=["wx"]
    )
    samples = [line for line in text.split("\n") if line.startswith("memsnap_finding{")]
    assert samples == [
        'memsnap_finding{rule="wx",severity="medium",host="web-1",pid="5973",command="target",'
        'path="",address="0x7f0000000000"} 2'
    ]
    assert 'memsnap_findings{rule="wx",severity="medium"} 2' in text
    assert "anon-exec" not in text  # only the rules checked are counted


def test_ordered_puts_the_most_severe_first() -> None:
    reps = [
        Reported(snapshot(9, pid=3), finding("w-then-x")),
        Reported(snapshot(8, pid=2), finding("wx")),
        Reported(snapshot(7, pid=9), finding("memfd-exec")),
        Reported(snapshot(6, pid=1), finding("wx")),
    ]
    assert [(r.finding.rule, r.snapshot.pid) for r in ordered(reps)] == [
        ("memfd-exec", 9),
        ("wx", 1),
        ("wx", 2),
        ("w-then-x", 3),
    ]


# --- real captures ---------------------------------------------------------------------------


def captured(name: str) -> list[Region]:
    mappings = sorted(parse_text(fixture_text(name)).mappings, key=lambda m: m.start)
    return [m._replace(kind=k) for m, k in zip(mappings, classify(mappings, None), strict=True)]


def summary(name: str) -> dict[tuple[str, tuple[str, ...]], int]:
    out: dict[tuple[str, tuple[str, ...]], int] = {}
    for f in check(captured(name), NO_FACTS):
        out[(f.rule, f.notes)] = out.get((f.rule, f.notes), 0) + 1
    return out


LOCAL_C = "local-linux6.18-x86_64-c-program-sysv-memfd-deleted-newline-rwx-thread-maps.txt"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # A C program with a memfd mapped executable and an rwx page: exactly those.
        (LOCAL_C, {("memfd-exec", ()): 1, ("wx", ()): 1, ("anon-exec", ()): 1}),
        # JVMs: the code cache is rwx and marked, by the libjvm.so they map.
        (
            "hs_err-jvm7-x86_64-rhel5-kernel2.6.18-jboss-maps.txt",
            {("wx", ("jit-likely",)): 1, ("anon-exec", ("jit-likely",)): 1},
        ),
        (
            "execore-elasticsearch-jdk-docker-x86_64-maps.txt",
            {("wx", ("jit-likely",)): 3, ("anon-exec", ("jit-likely",)): 3},
        ),
        # An old uclibc init with READ_IMPLIES_EXEC: heap and stack executable.
        (
            "hikvision-arm-uclibc-oldkernel-init-no-pss-smaps.txt",
            {("exec-stack", ()): 1, ("exec-heap", ()): 1, ("wx", ()): 2, ("anon-exec", ()): 2},
        ),
        # Qt's QML JIT keeps each piece of code in a memfd: critical, and marked.
        (
            "gomarkablestream-remarkable2-xochitl-armv7-32bit-maps.txt",
            {("memfd-exec", ("jit-likely",)): 74},
        ),
        # Android ART: its dual-mapped jit-cache is wx, its zygote cache (written by the
        # zygote, not here) is memfd-exec; ARM's [sigpage] and [vectors] are no finding.
        (
            "unidbg-rootfs-android-arm64-app-scudo-kgsl-maps.txt",
            {
                ("memfd-exec", ("jit-likely",)): 1,
                ("wx", ("dual-mapped", "jit-likely")): 1,
                ("wx", ("jit-likely",)): 4,
                ("anon-exec", ("jit-likely",)): 5,
            },
        ),
        ("innofirmware-zynq-armv7-linux4.4-innominer-stack-tid-smaps.txt", {}),
        ("local-linux6.18-x86_64-python-thp-hugepage-smaps.txt", {}),
        ("zteorange-router-armv7-uclibc-sysv-devmem-smaps.txt", {}),
    ],
)
def test_rules_on_real_captures(
    name: str, expected: dict[tuple[str, tuple[str, ...]], int]
) -> None:
    assert summary(name) == expected


# --- hostile rows ----------------------------------------------------------------------------

sizes = st.one_of(st.none(), st.integers(min_value=0, max_value=2**64))
hostile_regions = st.builds(
    Region,
    start=st.integers(min_value=0, max_value=2**64 - 1),
    end=st.integers(min_value=0, max_value=2**64 - 1),
    perms=st.one_of(st.text(max_size=6), st.sampled_from(["rwxp", "r-xs", "rw-s", "r--p"])),
    offset=st.integers(min_value=0, max_value=2**64 - 1),
    dev=st.one_of(st.text(max_size=12), st.sampled_from(["00:00", "fe:01", "0:0"])),
    inode=st.integers(min_value=0, max_value=2**64 - 1),
    path=st.one_of(
        st.none(),
        st.text(max_size=40),
        st.sampled_from(["[heap]", "[stack]", "/memfd:x", "/tmp/a.so", "[vdso]"]),
    ),
    deleted=st.booleans(),
    rss=sizes,
    private_dirty=sizes,
    anonymous=sizes,
    swap=sizes,
    kind=st.one_of(st.text(max_size=12), st.sampled_from(["heap", "stack", "text"])),
)


@settings(max_examples=300, deadline=None)
@given(
    snapshots=st.lists(st.lists(hostile_regions, max_size=8), min_size=1, max_size=3),
    command=st.text(max_size=20),
    exe=st.one_of(st.none(), st.text(max_size=20)),
)
def test_rules_take_any_row_a_database_hands_back(
    snapshots: list[list[Region]], command: str, exe: str | None
) -> None:
    # A shared database's rows are written by whoever can write to it: no rule may
    # fail on them, and every finding points at one of the regions it was given.
    facts = Facts(command, (command,), exe)
    reported = []
    for regions in snapshots:
        for f in check(regions, facts):
            assert f.region is None or f.region in regions
            assert f.rule in RULES and f.severity == RULES[f.rule].severity
            reported.append(Reported(snapshot(command=command), f))
    for index, f in w_then_x(snapshots):
        assert f.region in snapshots[index]
    # And every document of them is written whole, one sample per line.
    findings_json(reported, len(snapshots), 1, history=True)
    findings_csv(reported, history=True)
    text = findings_openmetrics(reported)
    lines = text.split("\n")  # OpenMetrics ends a line at "\n" only
    assert lines[-2:] == ["# EOF", ""]
    samples = [line for line in lines if line.startswith("memsnap_finding{")]
    assert len(samples) == len(set(samples))
    assert len(lines) - 1 == 5 + len(RULES) + len(samples)

"""The findings rules against the kernel: a helper process (tests/helpers/findings.c)
builds each trigger for real, its smaps is read, parsed and classified as `record` does,
and the rules run on the regions. Each trigger is compared with the same process before
it (the negative case), so what the helper always has (its program lives under /tmp)
does not blur the picture.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import Target
from memsnap.capture.procfs import Proc
from memsnap.capture.record import layouts_from_files
from memsnap.classify import Threads, classify
from memsnap.errors import ProcessError
from memsnap.findings import (
    Facts,
    Finding,
    at_or_above,
    check,
    replaced_objects,
    w_then_x,
)
from memsnap.model import Region
from memsnap.parse import parse_text

pytestmark = pytest.mark.live

Seen = set[tuple[str, int]]  # (rule, region start)


def through_root(pid: int) -> Callable[[str], os.stat_result | None]:
    """stat as the process sees a path (what the capture layer will record)."""

    def stat(path: str) -> os.stat_result | None:
        try:
            return os.stat(f"/proc/{pid}/root{path}")
        except (OSError, ValueError):
            return None

    return stat


def read(pid: int) -> tuple[list[Region], Facts]:
    """The process's regions, classified as `record` classifies them, and its facts."""
    proc = Proc()
    capture = proc.capture(pid)
    parsed = parse_text(capture.raw)
    threads = Threads(capture.threads.known, some_unknown=capture.threads.unknown > 0)
    kinds = classify(
        parsed.mappings,
        capture.info.exe,
        threads,
        layouts_from_files(proc, pid),
        capture.info.page_size,
    )
    regions = [m._replace(kind=k) for m, k in zip(parsed.mappings, kinds, strict=True)]
    replaced = replaced_objects(regions, through_root(pid))
    info = capture.info
    return regions, Facts(info.command, info.cmdline, info.exe, replaced)


def findings(pid: int) -> list[Finding]:
    regions, facts = read(pid)
    return check(regions, facts)


def seen(found: list[Finding]) -> Seen:
    return {(f.rule, f.region.start) for f in found if f.region is not None}


def new_since(before: list[Finding], after: list[Finding]) -> Seen:
    return seen(after) - seen(before)


def region_at(pid: int, address: int) -> Region:
    regions, _ = read(pid)
    return next(r for r in regions if r.start <= address < r.end)


def object_start(pid: int, path: Path) -> int:
    """The start of the first executable mapping of a file: where its findings sit."""
    regions, _ = read(pid)
    return min(r.start for r in regions if r.path == str(path) and "x" in r.perms)


# --- one snapshot --------------------------------------------------------------------------


def test_rwx_page(helper: Target) -> None:
    before = findings(helper.pid)
    helper.address("rw")  # without the trigger: a written page, not executable
    assert new_since(before, findings(helper.pid)) == set()
    page = helper.address("rwx")
    assert region_at(helper.pid, page).perms == "rwxp"  # the kernel agrees
    assert new_since(before, findings(helper.pid)) == {("wx", page), ("anon-exec", page)}


def test_executable_memfd(helper: Target) -> None:
    before = findings(helper.pid)
    # A JIT-style dual mapping of a memfd is `wx`, not fileless code.
    dual = helper.address("memfd-dual")
    after = findings(helper.pid)
    assert new_since(before, after) == {("wx", dual)}
    assert [f.notes for f in after if f.region and f.region.start == dual] == [("dual-mapped",)]
    code = helper.address("memfd")
    mapped = region_at(helper.pid, code)
    assert (mapped.path, mapped.perms, mapped.deleted) == ("/memfd:payload", "r-xp", True)
    assert new_since(after, findings(helper.pid)) == {("memfd-exec", code)}


def test_library_deleted_after_loading(helper: Target, libz: Path, tmp_dir: Path) -> None:
    copy = tmp_dir / "libz-copy.so"
    shutil.copyfile(libz, copy)
    before = findings(helper.pid)
    helper.send(f"dlopen {copy}")
    loaded = findings(helper.pid)
    start = object_start(helper.pid, copy)
    # Loaded from /tmp: exec-from-tmp; not deleted yet: no deleted-code.
    assert new_since(before, loaded) == {("exec-from-tmp", start)}
    copy.unlink()
    assert region_at(helper.pid, start).deleted  # the kernel says "(deleted)"
    # Nothing at the path any more: deleted, not replaced.
    assert new_since(loaded, findings(helper.pid)) == {("deleted-code", start)}


def test_library_replaced_through_rename(helper: Target, libz: Path, tmp_dir: Path) -> None:
    lib = tmp_dir / "libz-app.so"
    shutil.copyfile(libz, lib)
    helper.send(f"dlopen {lib}")
    start = object_start(helper.pid, lib)
    loaded = findings(helper.pid)
    assert ("replaced-code", start) not in seen(loaded)
    # An upgrade: the new version is written beside the old and renamed over it.
    shutil.copyfile(libz, tmp_dir / "libz-app.so.new")
    os.rename(tmp_dir / "libz-app.so.new", lib)
    _, facts = read(helper.pid)
    mapped = region_at(helper.pid, start)
    assert facts.replaced == {(str(lib), mapped.dev, mapped.inode)}
    assert mapped.inode != lib.stat().st_ino
    # Renaming over a file unlinks the old one, so the kernel says "(deleted)" as well.
    assert new_since(loaded, findings(helper.pid)) == {
        ("replaced-code", start),
        ("deleted-code", start),
    }


def test_executable_stack(helper: Target) -> None:
    before = findings(helper.pid)
    assert not any(f.rule == "exec-stack" for f in before)
    stack = helper.address("exec-stack")
    assert region_at(helper.pid, stack).path == "[stack]"
    assert new_since(before, findings(helper.pid)) == {
        ("exec-stack", stack),
        ("wx", stack),
        ("anon-exec", stack),
    }


def test_executable_heap(helper: Target) -> None:
    before = findings(helper.pid)
    assert not any(f.rule == "exec-heap" for f in before)
    heap = helper.address("exec-heap")
    assert region_at(helper.pid, heap).kind == "heap"
    assert new_since(before, findings(helper.pid)) == {
        ("exec-heap", heap),
        ("wx", heap),
        ("anon-exec", heap),
    }


def test_text_page_patched_in_memory(helper: Target, libz: Path, tmp_dir: Path) -> None:
    # A copy made just now: its page cache is dirty until written back, so smaps shows
    # its text as Private_Dirty although nothing changed it. That alone is no finding.
    lib = tmp_dir / "libz-fresh.so"
    shutil.copyfile(libz, lib)
    before = findings(helper.pid)
    helper.send(f"dlopen {lib}")
    loaded = findings(helper.pid)
    assert not any(f.rule == "dirty-text" for f in loaded)
    page = helper.address("patch zlibVersion")
    patched = region_at(helper.pid, page)
    assert patched.perms == "r-xp" and patched.path == str(lib) and patched.anonymous
    assert new_since(loaded, findings(helper.pid)) == {("dirty-text", patched.start)}
    assert not any(f.rule == "dirty-text" for f in before)


def test_ddexec_trace(helper: Target) -> None:
    before = findings(helper.pid)
    page = helper.address("ddexec")
    assert page < 0x10000000
    assert new_since(before, findings(helper.pid)) == {("ddexec", page)}


def test_code_from_system_and_helper_paths_is_not_from_tmp(
    helper: Target, libz: Path, tmp_dir: Path
) -> None:
    before = findings(helper.pid)
    helper.send(f"dlopen {libz}")  # /usr/lib...
    jna = tmp_dir / "jna7348295.tmp"  # Java Native Access's unpacked library
    shutil.copyfile(libz, jna)
    helper.send(f"dlopen {jna}")
    jna.unlink()
    assert region_at(helper.pid, object_start(helper.pid, jna)).deleted
    assert new_since(before, findings(helper.pid)) == set()


# --- across snapshots ---------------------------------------------------------------------


def test_written_then_executable(helper: Target) -> None:
    page = helper.address("rw")
    first, _ = read(helper.pid)
    second, _ = read(helper.pid)
    assert w_then_x([first, second]) == []  # without the trigger
    helper.send(f"make-x {page:x}")
    third, _ = read(helper.pid)
    found = w_then_x([first, second, third])
    assert [(index, f.rule, f.region.start if f.region else None) for index, f in found] == [
        (2, "w-then-x", page)
    ]


# --- this machine ---------------------------------------------------------------------------


def test_every_process_of_this_machine(capsys: pytest.CaptureFixture[str]) -> None:
    """The rules on every process this test may read: each finding points at one of
    its process's regions and carries its rule's severity. Those at high or above are
    printed (`pytest -s`): the README and the check command's notes list them."""
    proc = Proc()
    checked = 0
    serious = []
    for pid in proc.pids():
        try:
            regions, facts = read(pid)
        except ProcessError:  # gone, a kernel thread, forbidden: record --all skips those
            continue
        checked += 1
        for f in check(regions, facts):
            assert f.region is None or f.region in regions
            if at_or_above(f.severity, "high"):
                serious.append(f"{pid} {facts.command}: {f.rule} ({f.severity}): {f.why}")
    assert checked > 0
    with capsys.disabled():
        print(f"\n{checked} processes checked; at high or above: {len(serious)}")
        for line in serious:
            print("  " + line)

"""Kinds of the notable regions of each real capture (imported: no ELF headers at hand,
no exe link, no thread stack pointers, so the fallbacks are what is tested here)."""

from __future__ import annotations

from collections import Counter

import pytest

from conftest import fixture_text
from memsnap.classify import classify
from memsnap.model import KINDS, Mapping
from memsnap.parse import parse_text

LOCAL_C = "local-linux6.18-x86_64-c-program-sysv-memfd-deleted-newline-rwx-thread-maps.txt"


def classified(name: str) -> list[tuple[Mapping, str]]:
    mappings = sorted(parse_text(fixture_text(name)).mappings, key=lambda m: m.start)
    return list(zip(mappings, classify(mappings, None), strict=True))


def kinds_by_path(name: str, path: str) -> Counter[str]:
    return Counter(k for m, k in classified(name) if m.path == path)


def kind_at(name: str, start: int) -> str:
    return next(k for m, k in classified(name) if m.start == start)


def test_local_c_program_every_region() -> None:
    expected = [
        "rodata",
        "text",
        "rodata",
        "rodata",
        "data",
        "bss",
        "heap",
        "guard",
        "thread-stack",
        "shmem",
        "shmem",
        *["lib-rodata", "lib-text", "lib-rodata", "lib-rodata", "lib-data"],
        "anon",
        *["lib-rodata", "lib-text", "lib-rodata", "lib-rodata", "lib-data"],
        "lib-bss",
        "file",
        "file",
        "anon",
        "anon",
        "vvar",
        "vvar",
        "vdso",
        *["lib-rodata", "lib-text", "lib-rodata", "lib-rodata", "lib-data"],
        "stack",
        "vsyscall",
    ]
    assert [k for _, k in classified(LOCAL_C)] == expected


def test_anonymous_neighbour_of_a_library_is_not_its_bss() -> None:
    # 7 MiB the program mmapped landed right after libz's data: not libz's bss.
    assert kind_at(LOCAL_C, 0x7FDE86ACA000) == "anon"
    assert kind_at(LOCAL_C, 0x7FDE873A2000) == "lib-bss"  # libc's own 52 KiB bss


def test_every_kind_is_from_the_contract() -> None:
    from conftest import MAPS

    captures = sorted(MAPS.glob("*.txt"))
    assert len(captures) >= 31, f"the captures are missing from {MAPS}"
    for path in captures:
        if "smaps_rollup" not in path.name:  # refused: not a map
            assert {k for _, k in classified(path.name)} <= set(KINDS)


def test_shared_anonymous_as_dev_zero_and_executable_stack() -> None:
    name = "bcc-dummy_proc_map-x86_64-dev-zero-deleted.txt"
    assert set(kinds_by_path(name, "/dev/zero")) == {"shmem"}
    assert kinds_by_path(name, "[stack]") == Counter(stack=1)


def test_vvar_vclock_is_vvar() -> None:
    name = "binary-hacks-rebooted-vvar_vclock-linux6.13-x86_64-maps.txt"
    assert kinds_by_path(name, "[vvar_vclock]") == Counter(vvar=1)
    assert kinds_by_path(name, "/usr/lib/x86_64-linux-gnu/libc.so.6") == Counter(
        {"lib-rodata": 3, "lib-text": 1, "lib-data": 1}
    )


def test_old_kernel_thread_stacks_and_library_gaps() -> None:
    name = "fuglu-bug17-glibc-memory-map-python2-stack-tid.txt"
    stacks = [k for m, k in classified(name) if m.path and m.path.startswith("[stack")]
    assert stacks == ["stack"] * 8
    assert kinds_by_path(name, "/lib/x86_64-linux-gnu/libc-2.13.so") == Counter(
        {"lib-text": 1, "guard": 1, "lib-rodata": 1, "lib-data": 1}
    )
    rwx = [k for m, k in classified(name) if m.perms == "rwxp"]
    assert rwx == ["anon"]
    assert kinds_by_path(name, "/usr/bin/python2.7") == Counter(text=1, rodata=1, data=1)


def test_arm_sigpage_and_vectors_are_other() -> None:
    name = "innofirmware-zynq-armv7-linux4.4-innominer-stack-tid-maps.txt"
    assert kinds_by_path(name, "[sigpage]") == Counter(other=1)
    assert kinds_by_path(name, "[vectors]") == Counter(other=1)


def test_sysv_shared_memory_and_devices() -> None:
    name = "zteorange-router-armv7-uclibc-sysv-devmem-maps.txt"
    sysv = Counter(k for m, k in classified(name) if m.path and m.path.startswith("/SYSV"))
    assert sysv == Counter(shmem=2)
    assert set(kinds_by_path(name, "/dev/mem")) == {"file"}
    assert kinds_by_path(name, "[heap]") == Counter(heap=2)


def test_android_names() -> None:
    name = "unidbg-rootfs-android-arm64-app-scudo-kgsl-maps.txt"
    pairs = classified(name)
    tls = Counter(
        (m.perms, k) for m, k in pairs if m.path and m.path.startswith("[anon:stack_and_tls:")
    )
    assert set(tls) == {("---p", "guard"), ("rw-p", "thread-stack")}
    assert {k for m, k in pairs if m.path == "[anon:scudo:primary]"} == {"anon"}
    assert set(kinds_by_path(name, "/dev/kgsl-3d0")) == {"file"}
    memfd = {k for m, k in pairs if m.path and m.path.startswith("/memfd:jit")}
    assert memfd == {"shmem"}
    assert {k for m, k in pairs if m.path and m.path.startswith("/dev/ashmem")} == {"shmem"}


def test_jit_memfd_executable_is_still_shared_memory() -> None:
    name = "gomarkablestream-remarkable2-xochitl-armv7-32bit-maps.txt"
    jit = {
        (m.perms, k) for m, k in classified(name) if m.path == "/memfd:JITCode:QtQml" and m.deleted
    }
    assert jit and {k for _, k in jit} == {"shmem"}
    assert set(kinds_by_path(name, "/dev/fb0")) == {"file"}
    assert kinds_by_path(name, "/usr/bin/xochitl")["text"] == 1


def test_old_vsyscall_layout_and_jvm_code_cache() -> None:
    name = "hs_err-jvm7-x86_64-rhel5-kernel2.6.18-jboss-maps.txt"
    assert kinds_by_path(name, "[vsyscall]") == Counter(vsyscall=1)
    assert {k for m, k in classified(name) if m.perms == "rwxp" and m.path is None} == {"anon"}


def test_jvm_thread_stacks_by_guard_pages() -> None:
    name = "hs_err-jvm7-i386-32bit-jboss-2441-maps.txt"
    counts = Counter(k for _, k in classified(name))
    assert counts["thread-stack"] >= 900 and counts["guard"] >= counts["thread-stack"]


def test_cds_archive_is_a_file_and_execute_only_vsyscall() -> None:
    name = "execore-elasticsearch-jdk-docker-x86_64-maps.txt"
    jsa = {k for m, k in classified(name) if m.path and m.path.endswith("classes.jsa")}
    assert jsa == {"file"}
    assert kinds_by_path(name, "[vsyscall]") == Counter(vsyscall=1)


def test_program_without_leading_slash_and_anon_jit_cache() -> None:
    assert kinds_by_path(
        "pprof-cppbench-legacy-profile-maps-x86_64.txt", "cppbench_server_main"
    ) == Counter(text=1, data=1)
    aosp = "aosp-libmeminfo-maps_short-android-x86_64.txt"
    assert kinds_by_path(aosp, "[anon:dalvik-zygote-jit-code-cache]") == Counter(anon=1)


def test_rollup_is_refused_and_kernel_thread_is_empty() -> None:
    from memsnap.errors import ParseError

    with pytest.raises(ParseError, match="smaps_rollup"):
        classified("prometheus-procfs-smaps_rollup-x86_64.txt")
    assert classified("zteorange-router-kthreadd-pid2-empty-maps.txt") == []


@pytest.mark.parametrize(
    "name",
    [
        "local-linux6.18-x86_64-python-thp-hugepage-maps.txt",
        "prometheus-procfs-go-alertmanager-smaps-x86_64.txt",
    ],
)
def test_program_bss_after_its_data(name: str) -> None:
    kinds = [k for _, k in classified(name)]
    assert kinds.count("bss") == 1
    assert kinds[kinds.index("bss") - 1] == "data"


def test_exe_decides_the_program() -> None:
    mappings = sorted(parse_text(fixture_text(LOCAL_C)).mappings, key=lambda m: m.start)
    kinds = classify(mappings, "/usr/lib/x86_64-linux-gnu/libz.so.1.2.13")
    libz = [
        k
        for m, k in zip(mappings, kinds, strict=True)
        if m.path == "/usr/lib/x86_64-linux-gnu/libz.so.1.2.13"
    ]
    assert libz == ["rodata", "text", "rodata", "rodata", "data"]
    demo = [
        k for m, k in zip(mappings, kinds, strict=True) if m.path == "/usr/local/bin/layout-demo"
    ]
    assert demo == ["lib-rodata", "lib-text", "lib-rodata", "lib-rodata", "lib-data"]


def test_thread_stacks_by_stack_pointer_and_by_guard() -> None:
    from memsnap.classify import Threads

    text = (
        "7f0000000000-7f0000001000 ---p 00000000 00:00 0 \n"
        "7f0000001000-7f0000801000 rw-p 00000000 00:00 0 \n"
        "7f0000801000-7f0000802000 ---p 00000000 00:00 0 \n"
        "7f0000802000-7f0001002000 rw-p 00000000 00:00 0 \n"
    )
    mappings = parse_text(text).mappings
    # Every thread told its stack pointer: only the region holding one is a stack.
    told = classify(mappings, None, Threads((0x7F00010011F0,), some_unknown=False))
    assert told == ["guard", "anon", "guard", "thread-stack"]
    # Some did not: a writable region right above a small guard is taken as one too.
    untold = classify(mappings, None, Threads((), some_unknown=True))
    assert untold == ["guard", "thread-stack", "guard", "thread-stack"]

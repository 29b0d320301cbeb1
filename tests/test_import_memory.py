"""A huge import, and reading it back, with bounded memory: measured in a real process.

The bound is a resource, not a timing: peak resident size (`ru_maxrss` of the child, as
`/usr/bin/time -v` reports it) of `memsnap record --from-file` on a 200 MB smaps text,
then of `show --summary` and `show --format csv` of what it stored.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

LIMIT = 300 << 20
TEXT_BYTES = 200_000_000

# One smaps block as a 6.x kernel prints it; every field present.
_FIELDS = (
    "Size:                  4 kB\nKernelPageSize:        4 kB\nMMUPageSize:           4 kB\n"
    "Rss:                   4 kB\nPss:                   4 kB\nPss_Dirty:             4 kB\n"
    "Shared_Clean:          0 kB\nShared_Dirty:          0 kB\nPrivate_Clean:         0 kB\n"
    "Private_Dirty:         4 kB\nReferenced:            4 kB\nAnonymous:             4 kB\n"
    "KSM:                   0 kB\nLazyFree:              0 kB\nAnonHugePages:         0 kB\n"
    "ShmemPmdMapped:        0 kB\nFilePmdMapped:         0 kB\nShared_Hugetlb:        0 kB\n"
    "Private_Hugetlb:       0 kB\nSwap:                  0 kB\nSwapPss:               0 kB\n"
    "Locked:                0 kB\nTHPeligible:           0\nVmFlags: rd wr mr mw me ac sd\n"
)


def write_huge_smaps(path: Path, size: int) -> int:
    """A process of one-page mappings, libraries among anonymous memory, as a big JVM or
    Elasticsearch has them; returns how many mappings."""
    count, written, address = 0, 0, 0x7F0000000000
    with open(path, "w") as f:
        block: list[str] = []
        while written < size:
            if count % 1000 == 0:
                perms, inode = "r-xp", 900000 + count // 1000
                name = f"/usr/lib/x86_64-linux-gnu/library-{count // 1000:05d}.so.1"
            else:
                perms, inode, name = ("---p" if count % 2 else "rw-p"), 0, ""
            head = f"{address:x}-{address + 4096:x} {perms} 00000000 fe:01 {inode}"
            block.append(head.ljust(73) + name + "\n" + _FIELDS)
            address += 4096
            count += 1
            if len(block) == 5000:
                chunk = "".join(block)
                f.write(chunk)
                written += len(chunk)
                block = []
        f.write("".join(block))
    return count


# Runs a command and reports its peak resident size. A child's ru_maxrss includes the
# high-water mark of the image it was forked from (the kernel keeps it across exec), so
# measured straight from pytest every command would weigh at least as much as pytest
# itself by then: the command is started from this small launcher instead.
_LAUNCHER = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(child.pid, 0)
sys.stderr.write(f"\\nmaxrss {usage.ru_maxrss} exit {os.waitstatus_to_exitcode(status)}\\n")
"""


def peak_of(argv: list[str], out: int = subprocess.DEVNULL) -> tuple[int, str]:
    """The peak resident size of a command in bytes, and its stderr."""
    done = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, *argv], stdout=out, stderr=subprocess.PIPE, check=True
    )
    err, _, last = done.stderr.decode().rstrip("\n").rpartition("\n")
    _, maxrss, _, code = last.split()
    assert code == "0", err
    return int(maxrss) * 1024, err


@pytest.mark.slow
def test_a_200_mb_import_and_its_show_stay_under_300_mib(tmp_path: Path) -> None:
    text = tmp_path / "huge-smaps.txt"
    count = write_huge_smaps(text, TEXT_BYTES)
    assert text.stat().st_size >= TEXT_BYTES and count > 200_000
    db = str(tmp_path / "huge.db")
    memsnap = [sys.executable, "-m", "memsnap", "--db", db]
    peaks = {}
    peaks["record"], _ = peak_of([*memsnap, "record", "--from-file", str(text), "--pid", "1"])
    text.unlink()
    peaks["summary"], _ = peak_of([*memsnap, "show", "1", "--summary"])
    csv_out = tmp_path / "show.csv"
    with open(csv_out, "wb") as f:
        peaks["csv"], _ = peak_of([*memsnap, "show", "1", "--format", "csv"], f.fileno())
    with open(csv_out, "rb") as f:
        lines = sum(1 for _ in f)
    assert lines == count + 1  # every region, and the header
    assert all(peak <= LIMIT for peak in peaks.values()), {
        k: f"{v / 2**20:.0f} MiB" for k, v in peaks.items()
    }

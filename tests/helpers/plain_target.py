"""A live process for the tests that need no C compiler: part of target.c's protocol.

Started as `python3 plain_target.py`, it prints `ready PID`, then reads one command per
line on stdin and answers one line ("ok ..." with any address involved, or "err ..."):
    pages N | anon BYTES | dlopen PATH | quit
`pages` and `anon` map memory through libc, as target.c does, so the kernel sees the
same layouts; the interpreter's own mappings come along (what is asserted about them is
the tests' business).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import sys

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_MAP_FAILED = ctypes.c_void_p(-1).value
_PRIVATE_ANON = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
_kept: list[object] = []  # what dlopen loaded stays loaded


def _map(size: int, prot: int) -> int | None:
    address = _libc.mmap(None, size, prot, _PRIVATE_ANON, -1, 0)
    return None if address in (None, _MAP_FAILED) else int(address)


def pages(n: int) -> str:
    """N one-page mappings with alternating protections: the kernel cannot merge them,
    so the process gets N more regions."""
    page = mmap.PAGESIZE
    start = _map(n * page, mmap.PROT_READ)
    if start is None:
        return "err mmap"
    for i in range(0, n, 2):
        if _libc.mprotect(start + i * page, page, mmap.PROT_READ | mmap.PROT_WRITE) != 0:
            return "err mprotect"
    return f"ok {start:#x}"


def anon(size: int) -> str:
    """`size` bytes of private anonymous memory, every page touched (resident)."""
    start = _map(size, mmap.PROT_READ | mmap.PROT_WRITE)
    if start is None:
        return "err mmap"
    ctypes.memset(start, 1, size)
    return f"ok {start:#x}"


def dlopen(path: str) -> str:
    try:
        _kept.append(ctypes.CDLL(path))
    except OSError as e:
        return f"err {e}"
    return "ok"


def main() -> None:
    print("ready", os.getpid(), flush=True)
    for line in sys.stdin:
        command, _, arg = line.strip().partition(" ")
        if command == "quit":
            print("ok", flush=True)
            return
        if command == "pages":
            answer = pages(int(arg))
        elif command == "anon":
            answer = anon(int(arg))
        elif command == "dlopen":
            answer = dlopen(arg)
        else:
            answer = f"err unknown command {command}"
        print(answer, flush=True)


if __name__ == "__main__":
    main()

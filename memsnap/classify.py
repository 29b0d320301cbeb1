"""Giving every mapping exactly one kind from the kinds table of docs/interface.md: pure, no I/O.

The rules, in the order they are tried:

1. Pseudo-paths name themselves: `[heap]`, `[stack]` (and `[stack:TID]`), `[vdso]`,
   `[vvar]`/`[vvar_vclock]`, `[vsyscall]`; `[anon_shmem:...]` is shared memory; an
   `[anon:...]` name is anonymous memory (Android's `[anon:stack_and_tls:TID]` is a
   thread stack); any other bracketed name is `other`.
2. No access at all (`---p`) is a guard page or a reservation, whatever backs it.
3. Shared-memory paths: `/SYSV...`, `/dev/shm/...`, `memfd:...`, `/dev/ashmem...`, and
   `/dev/zero` mapped shared (how the kernel names shared anonymous memory).
4. File-backed mappings are grouped into objects by (path, device, inode). An object with
   any executable mapping is the program if its path is the one `/proc/PID/exe` names
   (for an imported text: the lowest-addressed executable object), else a library. Its
   executable mappings are text, writable ones data, the rest rodata. Other files are
   `file`.
5. bss is the anonymous memory an object's own ELF program headers call for (the
   `LayoutSource` reads them). Where they cannot be read, an anonymous `rw-p` mapping
   that starts exactly where the object's writable data ends, and is no larger than
   `FALLBACK_BSS_LIMIT`, is taken as bss: the kernel places unrelated mappings right
   beside libraries and merges neighbours, so adjacency alone would call a 7 MiB buffer
   "libz's bss".
6. A thread stack is the anonymous mapping holding a thread's stack pointer. When some
   threads' pointers are unknown (a thread running, an imported text), an anonymous
   `rw-p` mapping directly above a small `---p` guard is taken as one.
7. Any other anonymous mapping is `anon` when private, `shmem` when shared.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from memsnap.elf import LoadLayout
from memsnap.model import Mapping

FALLBACK_BSS_LIMIT = 4 << 20
GUARD_LIMIT = 1 << 20

_PSEUDO = {
    "[heap]": "heap",
    "[stack]": "stack",
    "[vdso]": "vdso",
    "[vvar]": "vvar",
    "[vvar_vclock]": "vvar",
    "[vsyscall]": "vsyscall",
}
_SHMEM_PREFIXES = ("/SYSV", "/dev/shm/", "/memfd:", "memfd:", "/dev/ashmem")

# Given an object's offset-0 mapping, its ELF load layout, or None when unreadable.
LayoutSource = Callable[[Mapping], "LoadLayout | None"]


def _no_layouts(_: Mapping) -> LoadLayout | None:
    return None


@dataclass(frozen=True, slots=True)
class Threads:
    """What is known of a process's threads: their stack pointers, and whether some
    threads' pointers are unknown (then the guard-page rule is used as well)."""

    stack_pointers: tuple[int, ...] = ()
    some_unknown: bool = True


def _pseudo_kind(m: Mapping) -> str | None:
    path = m.path
    if path is None or not path.startswith("["):
        return None
    kind = _PSEUDO.get(path)
    if kind is not None:
        return kind
    if path.startswith("[stack:"):
        return "stack"
    if path.startswith("[anon_shmem:"):
        return "shmem"
    if path.startswith("[anon:"):
        if m.perms == "---p":
            return "guard"
        return "thread-stack" if path.startswith("[anon:stack_and_tls:") else None
    return "other"


def is_shmem_path(path: str, perms: str) -> bool:
    if path.startswith(_SHMEM_PREFIXES):
        return True
    return path == "/dev/zero" and perms.endswith("s")


def classify(
    mappings: Sequence[Mapping],
    exe: str | None,
    threads: Threads | None = None,
    layouts: LayoutSource = _no_layouts,
    page_size: int = 4096,
) -> list[str]:
    """The kind of each mapping, in the same order."""
    threads = threads or Threads()
    kinds: list[str | None] = [None] * len(mappings)
    objects: dict[tuple[str, str, int], list[int]] = {}

    for i, m in enumerate(mappings):
        if m.path is None:  # most mappings of a big process: tested first, inline
            if m.perms == "---p":
                kinds[i] = "guard"
            continue  # anonymous: decided below, once objects and their bss are known
        pseudo = _pseudo_kind(m)
        if pseudo is not None:
            kinds[i] = pseudo
        elif m.perms == "---p":
            kinds[i] = "guard"
        elif m.path.startswith("[anon:"):
            continue
        elif is_shmem_path(m.path, m.perms):
            kinds[i] = "shmem"
        else:
            objects.setdefault((m.path, m.dev, m.inode), []).append(i)

    program = _program_key(mappings, objects, exe)
    bss_ranges: list[tuple[int, int, str]] = []
    fallback_starts: dict[int, str] = {}
    for key, members in objects.items():
        if not any(mappings[i].executable for i in members):
            for i in members:
                kinds[i] = "file"
            continue
        prefix = "" if key == program else "lib-"
        for i in members:
            perms = mappings[i].perms
            part = "text" if "x" in perms else "data" if "w" in perms else "rodata"
            kinds[i] = prefix + part
        base = _base_mapping(mappings, members)
        layout = layouts(base)
        if layout is not None:
            bss_ranges.extend(
                (s, e, prefix + "bss") for s, e in layout.bss_ranges(base.start, page_size)
            )
        else:
            last = max(members, key=lambda i: mappings[i].end)
            if "w" in mappings[last].perms:
                fallback_starts[mappings[last].end] = prefix + "bss"

    bss_ranges.sort()
    range_starts = [r[0] for r in bss_ranges]
    stack_pointers = sorted(threads.stack_pointers)
    for i, m in enumerate(mappings):
        if kinds[i] is not None:
            continue
        if m.perms.endswith("s"):
            kinds[i] = "shmem"
        elif m.perms == "rw-p" and (bss := _bss_kind(m, bss_ranges, range_starts, fallback_starts)):
            kinds[i] = bss
        elif _holds_pointer(m, stack_pointers) or (
            threads.some_unknown and _above_guard(mappings, i)
        ):
            kinds[i] = "thread-stack"
        else:
            kinds[i] = "anon"
    return [k or "other" for k in kinds]


def _program_key(
    mappings: Sequence[Mapping],
    objects: dict[tuple[str, str, int], list[int]],
    exe: str | None,
) -> tuple[str, str, int] | None:
    executable = [
        key for key, members in objects.items() if any(mappings[i].executable for i in members)
    ]
    if exe is not None:
        for key in executable:
            if key[0] == exe:
                return key
        return None
    if not executable:
        return None
    return min(executable, key=lambda key: min(mappings[i].start for i in objects[key]))


def _base_mapping(mappings: Sequence[Mapping], members: list[int]) -> Mapping:
    """The object's offset-0 mapping (its ELF header), else its lowest one."""
    at_zero = [mappings[i] for i in members if mappings[i].offset == 0]
    pool = at_zero or [mappings[i] for i in members]
    return min(pool, key=lambda m: m.start)


def _bss_kind(
    m: Mapping,
    ranges: list[tuple[int, int, str]],
    starts: list[int],
    fallback_starts: dict[int, str],
) -> str | None:
    if m.path is not None:
        return None
    pos = bisect.bisect_right(starts, m.start) - 1
    if pos >= 0:
        start, end, kind = ranges[pos]
        if start <= m.start and m.end <= end:
            return kind
    fallback = fallback_starts.get(m.start)
    if fallback is not None and m.size <= FALLBACK_BSS_LIMIT:
        return fallback
    return None


def _holds_pointer(m: Mapping, pointers: list[int]) -> bool:
    if not pointers or "w" not in m.perms:
        return False
    pos = bisect.bisect_left(pointers, m.start)
    return pos < len(pointers) and pointers[pos] < m.end


def _above_guard(mappings: Sequence[Mapping], i: int) -> bool:
    m = mappings[i]
    if i == 0 or m.perms != "rw-p" or m.path is not None:
        return False
    below = mappings[i - 1]
    return (
        below.end == m.start
        and below.perms == "---p"
        and below.path is None
        and below.size <= GUARD_LIMIT
    )


# --- a text too big to hold: the same rules, a mapping at a time ---------------------------

ObjectKey = tuple[str, str, int]
# Executable objects a streamed text may hold: each needs a few mappings kept while the
# text is read (a process of 262,144 mappings with four per library has 65,536).
MAX_STREAMED_OBJECTS = 65536
# File-backed objects (executable or not) pass 1 keeps what pass 2 would gather for.
MAX_SEEN_OBJECTS = 65536


def object_key(m: Mapping) -> ObjectKey | None:
    """The object a mapping belongs to, as `classify` groups them; None for mappings
    that are not part of a file-backed object (anonymous, pseudo, guard, shared)."""
    path = m.path
    if path is None or m.perms == "---p" or path.startswith("["):
        return None
    if is_shmem_path(path, m.perms):
        return None
    return (path, m.dev, m.inode)


@dataclass(slots=True)
class _ObjectSeen:
    """What `classify` asks of an executable object's members: its lowest start, its
    offset-0 mapping (else its lowest one) and the member that ends last."""

    lowest: Mapping
    at_zero: Mapping | None
    last: Mapping


class StreamClassifier:
    """`classify` for a text read several times rather than held (an import of millions
    of mappings). Pass 1 (`see_executable`) finds the executable objects, pass 2
    (`see_member`, only when pass 1 met too many objects to keep) what classifying needs
    of them, then `kind` names each mapping in text order, given the one before it. The
    text must be in address order, as the kernel prints it: then the kinds are exactly
    those `classify` gives."""

    def __init__(self) -> None:
        self.executable: set[ObjectKey] = set()
        self.seen: dict[ObjectKey, _ObjectSeen] = {}
        # Pass 1 saw every file-backed object (few enough): pass 2 is not needed.
        self.complete = True
        self.prefix: dict[ObjectKey, str] = {}
        self.program: ObjectKey | None = None
        self.bss_ranges: list[tuple[int, int, str]] = []
        self.range_starts: list[int] = []
        self.fallback_starts: dict[int, str] = {}

    def see_executable(self, mappings: Iterable[Mapping]) -> bool:
        """Pass 1; False once more than MAX_STREAMED_OBJECTS executable objects.

        While the text holds at most that many file-backed objects in all, pass 1 also
        does pass 2's work for every one of them (most texts: then `complete` says so
        and pass 2 is not needed)."""
        executable, seen = self.executable, self.seen
        for m in mappings:
            key = object_key(m)
            if key is None:
                continue
            if "x" in m.perms:
                executable.add(key)
            if self.complete:
                self._see(key, m)
                if len(seen) > MAX_SEEN_OBJECTS:
                    self.complete = False
                    seen.clear()
        return len(executable) <= MAX_STREAMED_OBJECTS

    def see_member(self, mappings: Iterable[Mapping]) -> None:
        """Pass 2 (in text order: ties are broken as `classify` breaks them)."""
        executable = self.executable
        for m in mappings:
            key = object_key(m)
            if key is not None and key in executable:
                self._see(key, m)

    def _see(self, key: ObjectKey, m: Mapping) -> None:
        found = self.seen.get(key)
        if found is None:
            self.seen[key] = _ObjectSeen(m, m if m.offset == 0 else None, m)
            return
        if m.start < found.lowest.start:
            found.lowest = m
        if m.offset == 0 and (found.at_zero is None or m.start < found.at_zero.start):
            found.at_zero = m
        if m.end > found.last.end:
            found.last = m

    def plan(self, layouts: LayoutSource = _no_layouts, page_size: int = 4096) -> None:
        """After pass 2: the program (the lowest-addressed executable object, as for any
        imported text), each object's bss."""
        # Objects that turned out not to be executable are files: forgotten here.
        self.seen = {k: v for k, v in self.seen.items() if k in self.executable}
        if self.seen:
            self.program = min(self.seen, key=lambda key: self.seen[key].lowest.start)
        for key, found in self.seen.items():
            prefix = "" if key == self.program else "lib-"
            self.prefix[key] = prefix
            base = found.at_zero or found.lowest
            layout = layouts(base)
            if layout is not None:
                self.bss_ranges.extend(
                    (s, e, prefix + "bss") for s, e in layout.bss_ranges(base.start, page_size)
                )
            elif "w" in found.last.perms:
                self.fallback_starts[found.last.end] = prefix + "bss"
        self.bss_ranges.sort()
        self.range_starts = [r[0] for r in self.bss_ranges]

    def kind(self, m: Mapping, below: Mapping | None) -> str:
        """Pass 3: the kind of `m`, `below` being the mapping printed just before it."""
        path = m.path
        if path is not None:
            pseudo = _pseudo_kind(m)
            if pseudo is not None:
                return pseudo
            if m.perms == "---p":
                return "guard"
            if not path.startswith("[anon:"):
                if is_shmem_path(path, m.perms):
                    return "shmem"
                prefix = self.prefix.get((path, m.dev, m.inode))
                if prefix is None:
                    return "file"
                perms = m.perms
                return prefix + ("text" if "x" in perms else "data" if "w" in perms else "rodata")
        elif m.perms == "---p":
            return "guard"
        if m.perms.endswith("s"):
            return "shmem"
        if m.perms == "rw-p" and (
            bss := _bss_kind(m, self.bss_ranges, self.range_starts, self.fallback_starts)
        ):
            return bss
        # An imported text knows no thread's stack pointer: the guard-page rule decides.
        if below is not None and _above_guard([below, m], 1):
            return "thread-stack"
        return "anon"

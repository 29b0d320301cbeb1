"""What is suspicious about a layout: the rules of `memsnap check`. Pure, no I/O.

Each rule has an id, a default severity, a one-line title, and a function from a
snapshot's classified regions (plus the few process facts it needs, `Facts`) to its
findings; each finding's `why` names the path or the address concerned. `w-then-x` alone
looks across a process's history (`w_then_x`). The rules follow the tools that asked these
questions first, and take their false-positive lists from them:

- needrestart: deleted and replaced code (its `blacklist_mappings` and its inode/device
  comparison, with unnamed devices compared by inode only);
- Volatility's `linux.malfind`: `rwx` regions, executable regions with no file, and
  executable pages that are dirty;
- Falco ("Fileless execution via memfd_create", runc's `memfd:runc_cloned:` allowed) and
  Tracee (TRC-5, fileless execution, also from `/dev/shm`);
- osquery-defense-kit's DDexec query (`3-overwritten-memory-map-ddexec-linux.sql`).

A JIT runtime (JVM, V8, .NET) has anonymous writable-and-executable code by design: its
`wx` and `anon-exec` findings carry the note "jit-likely" and are kept, never hidden.

Also here: `--ignore FILE` rules (`parse_ignore`, `ignored`), severities and the
`--fail-on` decision (exit 3), and what a report holds (`Reported`, in `ordered` order);
its JSON, CSV and OpenMetrics documents are `memsnap.render.findings`'.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from memsnap.errors import UsageError
from memsnap.model import Region, Snapshot
from memsnap.replacement import ObjectKey as ObjectKey
from memsnap.replacement import executable_objects, is_file
from memsnap.replacement import is_replaced as is_replaced
from memsnap.replacement import replaced_objects as replaced_objects

# The catalogue, named here too: what check reports is read as `findings.RULES` etc.
from memsnap.rules import DEFAULT_FAIL_ON as DEFAULT_FAIL_ON
from memsnap.rules import FAIL_EXIT as FAIL_EXIT
from memsnap.rules import RANK as RANK
from memsnap.rules import RULES as RULES
from memsnap.rules import SEVERITIES as SEVERITIES
from memsnap.rules import Rule as Rule
from memsnap.rules import at_or_above as at_or_above
from memsnap.rules import parse_rules as parse_rules
from memsnap.rules import parse_severity as parse_severity
from memsnap.rules import severity_rank as severity_rank


def exit_code(findings: Iterable[Finding], fail_on: str = DEFAULT_FAIL_ON) -> int:
    """3 when any finding is at or above `fail_on`, else 0 (`check`'s exit code)."""
    return FAIL_EXIT if any(at_or_above(f.severity, fail_on) for f in findings) else 0


@dataclass(frozen=True, slots=True)
class Facts:
    """What the rules need to know of a process beyond its regions.

    `replaced` holds the objects (path, device, inode) that were found, at record time,
    to name another file on disk when stat'ed through `/proc/PID/root/PATH`: it cannot be
    recomputed later, so the capture layer records it (see `replaced_objects`).
    """

    command: str = ""
    cmdline: tuple[str, ...] = ()
    exe: str | None = None
    replaced: frozenset[ObjectKey] = frozenset()


@dataclass(frozen=True, slots=True)
class Finding:
    """One rule firing on one region (or, for a process-wide fact, on none)."""

    rule: str
    severity: str
    title: str
    why: str
    region: Region | None
    notes: tuple[str, ...] = ()


def _finding(rule_id: str, why: str, region: Region | None, notes: tuple[str, ...] = ()) -> Finding:
    rule = RULES[rule_id]
    return Finding(rule.id, rule.severity, rule.title, why, region, notes)


def _span(r: Region) -> str:
    return f"0x{r.start:x}-0x{r.end:x}"


def _where(r: Region) -> str:
    """A region for a `why`: its path (or "anonymous memory"), address range and perms."""
    name = r.path if r.path is not None else "anonymous memory"
    return f"{name} at {_span(r)} ({r.perms})"


# Pages the kernel itself maps executable into every process (or on some architectures):
# not code anyone wrote there. `[sigpage]` is ARM's signal-return page, the kernel's like
# `[vectors]` (arch/arm/kernel/process.c); the real ARM captures in tests/fixtures have it.
KERNEL_CODE_PAGES = frozenset({"[vdso]", "[vsyscall]", "[vectors]", "[uprobes]", "[sigpage]"})


def has_no_file(r: Region) -> bool:
    """Memory no file backs: anonymous, `[heap]`, `[stack]`, `[anon:NAME]`, ..."""
    return r.path is None or (r.path.startswith("[") and r.path not in KERNEL_CODE_PAGES)


def _first_executable(members: list[Region]) -> Region:
    return next(r for r in members if "x" in r.perms)


# -- memfd-exec ----------------------------------------------------------------------------

# runc re-executes itself from a sealed memfd on purpose (its CVE-2019-5736 defence); Falco's
# `known_memfd_execution_processes` allows exactly this name.
_MEMFD_ALLOWED = ("/memfd:runc_cloned:", "memfd:runc_cloned:")
_MEMFD = ("/memfd:", "memfd:")


def _is_memfd(path: str | None) -> bool:
    return path is not None and path.startswith(_MEMFD) and not path.startswith(_MEMFD_ALLOWED)


def _writable_shared(regions: Sequence[Region]) -> set[tuple[str, int]]:
    """(device, inode) of the files the process maps shared and writable."""
    return {
        (r.dev, r.inode) for r in regions if "w" in r.perms and r.perms.endswith("s") and is_file(r)
    }


def _dual_mapped(r: Region, writable: set[tuple[str, int]]) -> bool:
    """An executable shared mapping of a file the process also maps shared and writable:
    code written through one address and run through the other. JIT code heaps are made
    so to keep each page W^X: asmjit (Erlang's BEAM JIT), xbyak and .NET's double mapper
    map one memfd twice. A loaded ELF never is: the loader and execve map it private."""
    return "x" in r.perms and r.perms.endswith("s") and is_file(r) and (r.dev, r.inode) in writable


def memfd_exec(regions: Sequence[Region], facts: Facts) -> list[Finding]:
    """An executable mapping of a memfd, or a program that runs from one. A JIT's dual
    mapping of a memfd is `wx` instead (see `_dual_mapped`)."""
    writable = _writable_shared(regions)
    out = [
        _finding("memfd-exec", f"code runs from {_where(r)}, a file that only exists in memory", r)
        for r in regions
        if "x" in r.perms and _is_memfd(r.path) and not _dual_mapped(r, writable)
    ]
    if _is_memfd(facts.exe) and not any(f.region and f.region.path == facts.exe for f in out):
        mapped = next((r for r in regions if r.path == facts.exe), None)
        out.append(
            _finding("memfd-exec", f"the program itself runs from {facts.exe}, a memfd", mapped)
        )
    if not out:
        return out
    # A JIT's code memfd is marked like its anonymous code, and still reported: a name is
    # whatever the process chose to call its memfd.
    runtime = jit_likely(facts, regions)
    return [
        replace(f, notes=("jit-likely",))
        if runtime or (f.region is not None and _JIT_MEMFDS.match(f.region.path or ""))
        else f
        for f in out
    ]


# -- exec-stack, exec-heap ----------------------------------------------------------------


def exec_stack(regions: Sequence[Region], facts: Facts) -> list[Finding]:
    """A process or thread stack that is executable."""
    return [
        _finding("exec-stack", f"the {r.kind} {_where(r)} is executable", r)
        for r in regions
        if r.kind in ("stack", "thread-stack") and "x" in r.perms
    ]


def exec_heap(regions: Sequence[Region], facts: Facts) -> list[Finding]:
    """A heap that is executable."""
    return [
        _finding("exec-heap", f"the heap {_where(r)} is executable", r)
        for r in regions
        if r.kind == "heap" and "x" in r.perms
    ]


# -- dirty-text -----------------------------------------------------------------------------


def _written(r: Region) -> int | None:
    """Bytes of a file mapping the process has copied on write: anonymous pages (or
    their swap) in a file's mapping. Private_Dirty alone would also count page-cache
    pages not yet written back: a library copied a moment ago and then loaded shows
    all of its text as private dirty, and none of it changed. Old kernels without the
    Anonymous field leave Private_Dirty as the only measure."""
    if r.anonymous is not None:
        return r.anonymous + (r.swap or 0)
    return r.private_dirty


def dirty_text(regions: Sequence[Region], facts: Facts) -> list[Finding]:
    """Executable file pages the process has written to: its private copy of the code
    differs from the file. Volatility's malfind reports "dirty+exec" pages the same way.
    Debuggers' breakpoints and uprobes write there too. Needs smaps."""
    out = []
    for r in regions:
        if is_file(r) and "x" in r.perms and (written := _written(r)):
            why = f"{_where(r)} holds {written} bytes of code written in memory"
            out.append(_finding("dirty-text", why, r))
    return out


# -- ddexec --------------------------------------------------------------------------------

# osquery-defense-kit's DDexec query asks for `start LIKE '0x0%'` on osquery's
# "0x" + the kernel's address text. The kernel prints addresses with at least eight hex
# digits, so a leading zero means an address below 0x10000000.
DDEXEC_BELOW = 0x10000000


def _device_is_zero(dev: str) -> bool:
    try:
        return all(int(part, 16) == 0 for part in dev.split(":"))
    except ValueError:
        return False


def ddexec(regions: Sequence[Region], facts: Facts) -> list[Finding]:
    """The trace DDexec leaves: an anonymous, non-pseudo `r--p` mapping at offset 0 on
    device 00:00, low in the address space (the defense-kit query's conditions)."""
    return [
        _finding(
            "ddexec",
            f"{_where(r)}: a private read-only anonymous mapping below 0x{DDEXEC_BELOW:x}",
            r,
        )
        for r in regions
        if r.path is None
        and r.perms == "r--p"
        and r.offset == 0
        and _device_is_zero(r.dev)
        and r.start < DDEXEC_BELOW
    ]


# -- wx, anon-exec ----------------------------------------------------------------------------

# Runtimes that compile code at run time into anonymous memory, by command name or program
# file name. Chromium's helpers (renderer, GPU, utility) are the same program started with
# `--type=...`; Electron applications embed it. macOS-style helper names come in imports.
# Erlang's BEAM (beam.smp, e.g. under RabbitMQ) has had a JIT since OTP 24.
_JIT_NAMES = re.compile(
    r"(java|javaw|jshell|node|nodejs|dotnet|beam\.smp|electron|chromium|chromium-browser"
    r"|chrome|google-chrome.*|headless_shell|(chromium|google chrome) helper.*)",
    re.IGNORECASE,
)
# The same runtimes embedded in a program of another name (any Java launcher, an
# application embedding node or .NET), and Android's ART and Qt's QML engine, which JIT
# too (the real Android and reMarkable captures in tests/fixtures show their code heaps).
_JIT_LIBRARIES = re.compile(
    r"lib(jvm|coreclr|clrjit|node|v8|art|monosgen-2\.0|Qt\d*Qml)\.so(\.[0-9]+)*"
)
# memfds JIT compilers keep code in: Qt's QML JIT ("JITCode:..."), ART ("jit-cache",
# "jit-zygote-cache"), asmjit ("vmem"), xbyak ("Xbyak::..."), .NET ("doublemapper").
_JIT_MEMFDS = re.compile(
    r"/?memfd:(JITCode:|jit-cache|jit-zygote-cache|vmem$|Xbyak::|doublemapper)"
)


def _basename(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def jit_likely(facts: Facts, regions: Sequence[Region] = ()) -> bool:
    """Whether the process is a known JIT runtime (JVM, V8 in node or Chromium, .NET,
    BEAM, ART, Qt QML): by its command, its program's or first argument's file name, or
    an executable mapping of the runtime's library."""
    names = [facts.command, *(_basename(p) for p in (facts.exe, *facts.cmdline[:1]) if p)]
    if any(_JIT_NAMES.fullmatch(name) for name in names):
        return True
    return any(
        r.path is not None and "x" in r.perms and _JIT_LIBRARIES.fullmatch(_basename(r.path))
        for r in regions
    )


def wx(regions: Sequence[Region], facts: Facts) -> list[Finding]:
    """A region both writable and executable (malfind's first test), or executable
    memory that the process can also write through a second, shared mapping of the same
    file (note "dual-mapped")."""
    out = []
    writable = _writable_shared(regions)
    for r in regions:
        if "w" in r.perms and "x" in r.perms:
            out.append(_finding("wx", f"{_where(r)} is writable and executable", r))
        elif _dual_mapped(r, writable):
            twin = next(
                t for t in regions if (t.dev, t.inode) == (r.dev, r.inode) and "w" in t.perms
            )
            why = f"{_where(r)} is executable, and writable as {_where(twin)}"
            out.append(_finding("wx", why, r, ("dual-mapped",)))
    return _noted(out, facts, regions)


def _noted(out: list[Finding], facts: Facts, regions: Sequence[Region]) -> list[Finding]:
    """The findings with "jit-likely" added when the process is a JIT runtime (worked
    out only when there is a finding to note: most processes have none)."""
    if not out or not jit_likely(facts, regions):
        return out
    return [replace(f, notes=(*f.notes, "jit-likely")) for f in out]


def anon_exec(regions: Sequence[Region], facts: Facts) -> list[Finding]:
    """An executable region that no file backs, but the kernel's own code pages (malfind:
    executable and no `vm_file`, `[vdso]` aside)."""
    out = [
        _finding("anon-exec", f"{_where(r)} is executable and no file backs it", r)
        for r in regions
        if "x" in r.perms and has_no_file(r)
    ]
    return _noted(out, facts, regions)


# -- exec-from-tmp, deleted-code, replaced-code ----------------------------------------------

TEMP_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run")

# Helpers that map code from temporary files by design, from needrestart's
# `blacklist_mappings`: Java Native Access unpacks its library as jna<digits>.tmp (or under
# ~/.cache/JNA/), libffi writes closure trampolines to an ffiXXXXXX file in a temporary
# directory (mkostemp's template) when it cannot map anonymous rwx memory, and GStreamer's
# ORC compiler writes orcexec.XXXXXX files.
_TEMP_HELPERS = (
    re.compile(r"/jna[^/]*\.tmp$"),
    re.compile(r"/\.cache/JNA/"),
    re.compile(r"^(/var)?/(tmp|dev/shm)/ffi[^/]*$"),
    re.compile(r"/orcexec\.[^/]*$"),
)

# Mappings needrestart never calls stale (`blacklist_mappings` in needrestart.conf): SysV
# and DRM shared memory, devices, memfds, aio(7) rings, plasmashell's "/#N" files, and the
# temporary helpers above. Its "(/var)?/tmp/" and "/run/" entries are left out: code run
# from a deleted temporary file is what a dropper leaves, and `exec-from-tmp` names it.
_NOT_STALE = (
    re.compile(r"^/(SYSV[0-9a-fA-F]{8}|drm(\s|$)|dev/)"),
    re.compile(r"^/?memfd:"),
    re.compile(r"^/\[aio\]"),
    re.compile(r"/#\d+$"),
    *_TEMP_HELPERS,
)


def _matches_any(path: str, patterns: Sequence[re.Pattern[str]]) -> bool:
    return any(p.search(path) for p in patterns)


def _in_temp_dir(path: str) -> bool:
    return any(path.startswith(d + "/") for d in TEMP_DIRS)


def exec_from_tmp(regions: Sequence[Region], facts: Facts) -> list[Finding]:
    """An executable object mapped from /tmp, /var/tmp, /dev/shm or /run (Tracee's
    fileless-execution signature also looks at /dev/shm), but the known helpers."""
    out = []
    for (path, _, _), members in executable_objects(regions).items():
        if _in_temp_dir(path) and not _matches_any(path, _TEMP_HELPERS):
            r = _first_executable(members)
            out.append(_finding("exec-from-tmp", f"{path} is mapped executable at {_span(r)}", r))
    return out


def _role(r: Region) -> str:
    return " (the program)" if r.kind in ("text", "rodata", "data", "bss") else ""


def deleted_code(regions: Sequence[Region], facts: Facts) -> list[Finding]:
    """An executable object whose file was deleted (needrestart's "uses deleted")."""
    out = []
    for (path, _, _), members in executable_objects(regions).items():
        if any(r.deleted for r in members) and not _matches_any(path, _NOT_STALE):
            r = _first_executable(members)
            why = f"{path}{_role(r)} was deleted after the process mapped it"
            out.append(_finding("deleted-code", why, r))
    return out


def replaced_code(regions: Sequence[Region], facts: Facts) -> list[Finding]:
    """An executable object whose path now names another file (needrestart's "uses
    obsolete"), as found at record time (`Facts.replaced`). Replacing a file by rename
    also unlinks the old one, so such an object is usually `deleted-code` as well."""
    out = []
    for key, members in executable_objects(regions).items():
        path, _, inode = key
        if key in facts.replaced and not _matches_any(path, _NOT_STALE):
            r = _first_executable(members)
            why = (
                f"{path}{_role(r)} on disk is now another file than the one mapped "
                f"(inode {inode} on device {r.dev})"
            )
            out.append(_finding("replaced-code", why, r))
    return out


# -- every per-snapshot rule ------------------------------------------------------------------

RuleFunction = Callable[[Sequence[Region], Facts], list[Finding]]

SNAPSHOT_RULES: dict[str, RuleFunction] = {
    "memfd-exec": memfd_exec,
    "exec-stack": exec_stack,
    "exec-heap": exec_heap,
    "dirty-text": dirty_text,
    "ddexec": ddexec,
    "wx": wx,
    "anon-exec": anon_exec,
    "exec-from-tmp": exec_from_tmp,
    "deleted-code": deleted_code,
    "replaced-code": replaced_code,
}


def check(
    regions: Sequence[Region], facts: Facts, rules: Iterable[str] | None = None
) -> list[Finding]:
    """Every finding of the per-snapshot rules (all, or those named) on one snapshot."""
    chosen = SNAPSHOT_RULES if rules is None else [r for r in rules if r in SNAPSHOT_RULES]
    out: list[Finding] = []
    for rule_id in chosen:
        out.extend(SNAPSHOT_RULES[rule_id](regions, facts))
    return out


# -- w-then-x -----------------------------------------------------------------------------------


def w_then_x(history: Sequence[Sequence[Region]]) -> list[tuple[int, Finding]]:
    """Across one process's snapshots, oldest first: memory no file backs that was
    writable (and not executable) at an address in one snapshot and is executable at the
    same address in a later one, as a JIT or an unpacker leaves it. Each address is
    reported once, with the index of the snapshot where it was first seen executable."""
    written: dict[int, int] = {}  # start -> index of the snapshot it was seen writable in
    reported: set[int] = set()
    out: list[tuple[int, Finding]] = []
    for index, regions in enumerate(history):
        for r in regions:
            if not has_no_file(r):
                continue
            if "x" in r.perms:
                before = written.get(r.start)
                if before is not None and before < index and r.start not in reported:
                    reported.add(r.start)
                    why = (
                        f"{_where(r)} was written as {_span(r)} in snapshot {before + 1} "
                        f"of {len(history)} and is executable in snapshot {index + 1}"
                    )
                    out.append((index, _finding("w-then-x", why, r)))
            elif "w" in r.perms:
                written.setdefault(r.start, index)
    return out


# --- --ignore FILE ----------------------------------------------------------------------------

IGNORE_LIMIT = 1 << 20  # bytes: an ignore file is a short hand-written list


@dataclass(frozen=True, slots=True)
class IgnoreRule:
    """One line of an ignore file: rule ids (or every rule) and a regex searched in the
    finding's path (`on="path"`), the process's command (`on="command"`) or either."""

    rules: frozenset[str] | None  # None: every rule
    pattern: re.Pattern[str]
    on: str = "either"
    line: int = 0


_ON_PREFIXES = {"path=": "path", "command=": "command"}


def parse_ignore(text: str, source: str = "ignore file") -> list[IgnoreRule]:
    """The rules of an ignore file: one per line, `RULE REGEX`, where RULE is a rule id,
    a comma list of them or `*`, and REGEX (the rest of the line) is searched in the
    path of the finding's region and in the command, program and arguments of its process;
    `path=REGEX` or `command=REGEX` searches only one of them. Lines starting with `#`
    and blank lines are skipped. A bad line is a `UsageError` naming it."""
    out = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        if len(parts) < 2:
            raise UsageError(f"{source} line {number}: expected a rule id and a regex: {line!r}")
        rule_text, regex = parts
        rules: frozenset[str] | None = None
        if rule_text != "*":
            ids = [r for r in rule_text.split(",") if r]
            unknown = [r for r in ids if r not in RULES]
            if unknown or not ids:
                raise UsageError(
                    f"{source} line {number}: unknown rule {', '.join(map(repr, unknown))} "
                    f"(rules: {', '.join(RULES)}, or *)"
                )
            rules = frozenset(ids)
        on = "either"
        for prefix, target in _ON_PREFIXES.items():
            if regex.startswith(prefix):
                on, regex = target, regex[len(prefix) :]
                break
        try:
            pattern = re.compile(regex)
        except re.error as exc:
            raise UsageError(f"{source} line {number}: bad regex {regex!r}: {exc}") from None
        out.append(IgnoreRule(rules, pattern, on, number))
    return out


def load_ignore(path: str) -> list[IgnoreRule]:
    """`parse_ignore` of a file; one that cannot be read is a `UsageError` too."""
    try:
        with open(path, "rb") as f:
            data = f.read(IGNORE_LIMIT + 1)
    except OSError as exc:
        raise UsageError(f"--ignore: cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > IGNORE_LIMIT:
        raise UsageError(f"--ignore: {path} is over {IGNORE_LIMIT >> 20} MiB")
    return parse_ignore(data.decode("utf-8", "surrogateescape"), path)


def _command_texts(facts: Facts) -> list[str]:
    """The process's names as `--name` matches them (as `pgrep -f` does)."""
    return [t for t in (facts.command, facts.exe, " ".join(facts.cmdline)) if t]


def ignored(finding: Finding, facts: Facts, rules: Sequence[IgnoreRule]) -> bool:
    """Whether a user's ignore rule covers this finding."""
    path = finding.region.path if finding.region is not None else None
    for rule in rules:
        if rule.rules is not None and finding.rule not in rule.rules:
            continue
        if rule.on != "command" and path is not None and rule.pattern.search(path):
            return True
        if rule.on != "path" and any(rule.pattern.search(t) for t in _command_texts(facts)):
            return True
    return False


def without_ignored(
    findings: Iterable[Finding], facts: Facts, rules: Sequence[IgnoreRule]
) -> list[Finding]:
    return [f for f in findings if not ignored(f, facts, rules)]


# --- documents ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Seen:
    """A snapshot a finding was seen in (for `--history`)."""

    id: int
    taken_at: datetime


@dataclass(frozen=True, slots=True)
class Reported:
    """A finding with the snapshot it was found in, as the documents show it."""

    snapshot: Snapshot
    finding: Finding
    first_seen: Seen | None = None
    last_seen: Seen | None = None  # None while it still holds at the latest snapshot


def ordered(reported: Iterable[Reported]) -> list[Reported]:
    """Most severe first, then by host, pid, snapshot and address."""
    return sorted(
        reported,
        key=lambda r: (
            -RANK[r.finding.severity],
            r.snapshot.host,
            r.snapshot.pid,
            r.snapshot.id,
            r.finding.region.start if r.finding.region is not None else -1,
            r.finding.rule,
        ),
    )

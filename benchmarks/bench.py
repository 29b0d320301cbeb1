"""memsnap against `pmap -X` on the same process, in the same run.

Builds a helper process with N one-page mappings of alternating protections (the kernel
cannot merge them), then times each memsnap command against `pmap -X PID`, alternating
the two so both see the same machine state, and prints medians and their ratio.

    python benchmarks/bench.py                 # 60,000 mappings, 5 rounds
    python benchmarks/bench.py --mappings 20000 --rounds 3

`record --all` is measured on the machine as it is, then again with `--busy` (200) more
idle processes, as on a busier host.

To compare two versions of memsnap in the same run (each row then alternates `pmap -X`
with every version, and prints one line per version), install each into its own venv
and name them:

    python benchmarks/bench.py --memsnap /tmp/old/bin/memsnap --memsnap .venv/bin/memsnap

Needs a C compiler (for the helper), pmap (procps) and an installed `memsnap`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

HELPER_SOURCE = Path(__file__).resolve().parent.parent / "tests" / "helpers" / "target.c"


def run(argv: list[str]) -> tuple[float, int]:
    """Wall time of one command and its peak resident size in bytes."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        err = proc.stderr.read().decode() if proc.stderr else ""
        sys.exit(f"{' '.join(argv)} failed ({proc.returncode}): {err.strip()}")
    return elapsed, usage.ru_maxrss * 1024


class Helper:
    """A live process with many mappings, built from the tests' helper program."""

    def __init__(self, workdir: Path, mappings: int) -> None:
        cc = shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            sys.exit("a C compiler (cc) is needed to build the helper process")
        binary = workdir / "target"
        subprocess.run(
            [cc, "-O1", "-o", str(binary), str(HELPER_SOURCE), "-ldl", "-lpthread"], check=True
        )
        self.proc = subprocess.Popen(
            [str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        self.pid = int(self.proc.stdout.readline().split()[1])
        self.send(f"pages {mappings}")

    def send(self, command: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        if not answer.startswith("ok"):
            sys.exit(f"helper: {command}: {answer}")
        return answer

    def regions(self) -> int:
        with open(f"/proc/{self.pid}/maps", "rb") as f:
            return f.read().count(b"\n")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


Row = tuple[str, float, float, float, float | None, int]


def compare(
    name: str,
    memsnap: Callable[[str], list[str]],
    baseline: list[str],
    rounds: int,
    target: float | None,
    prepare: Callable[[], None] | None = None,
) -> list[Row]:
    """One row per version in VERSIONS: each round runs every version, then the baseline.

    `memsnap(version)` gives the command line for one version (its own executable and
    its own database files).
    """
    ours: dict[str, list[float]] = {v: [] for v in VERSIONS}
    peaks: dict[str, list[int]] = {v: [] for v in VERSIONS}
    theirs = []
    for _ in range(rounds):
        for version in VERSIONS:
            if prepare is not None:
                prepare()
            elapsed, peak = run(memsnap(version))
            ours[version].append(elapsed)
            peaks[version].append(peak)
        theirs.append(run(baseline)[0])
    b = statistics.median(theirs)
    rows = []
    for version in VERSIONS:
        a = statistics.median(ours[version])
        label = name if len(VERSIONS) == 1 else f"{name} [{LABELS[version]}]"
        rows.append((label, a, b, a / b, target, max(peaks[version])))
    return rows


# The memsnap executables measured, and a short label for each (set in main()).
VERSIONS: list[str] = []
LABELS: dict[str, str] = {}


def pmap_each(pids: list[int]) -> list[str]:
    """One shell running `pmap -X` once for each process, as a person would loop it."""
    return ["sh", "-c", " ".join(f"pmap -X {p} >/dev/null 2>&1;" for p in pids) + " true"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mappings", type=int, default=60_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--busy", type=int, default=200, help="idle processes added for a second --all run"
    )
    parser.add_argument(
        "--memsnap",
        action="append",
        default=[],
        metavar="PATH",
        help="a memsnap executable to measure (repeat to compare versions; default: PATH's)",
    )
    args = parser.parse_args()
    found = shutil.which("memsnap")
    chosen = args.memsnap or ([found] if found else [])
    if not chosen or shutil.which("pmap") is None:
        sys.exit("needs an installed memsnap and pmap on PATH")
    for index, path in enumerate(chosen):
        VERSIONS.append(str(Path(path).absolute()))
        LABELS[VERSIONS[-1]] = f"{index + 1}:{Path(path).absolute().parent.parent.name}"

    results: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        helper = Helper(work, args.mappings)
        other = Helper(work, args.mappings)
        counter = iter(range(10**6))

        def db(version: str, name: str = "bench") -> str:
            """Each version's own database file of that name."""
            return str(work / f"{VERSIONS.index(version)}-{name}.db")

        def on_every(*argv: str, name: str = "bench") -> None:
            for version in VERSIONS:
                run([version, "--db", db(version, name), *argv])

        try:
            pid = str(helper.pid)
            pmap = ["pmap", "-X", pid]
            # A database that exists and holds one small snapshot, not yet this process.
            on_every("record", str(os.getpid()))

            def fresh_db(version: str) -> list[str]:
                copy = work / f"fresh-{next(counter)}.db"
                shutil.copy(db(version), copy)
                return [version, "--db", str(copy), "record", pid]

            print(f"helper pid {pid}: {helper.regions()} mappings; {args.rounds} rounds\n")
            results += compare("record (new process)", fresh_db, pmap, args.rounds, 0.8)
            on_every("record", pid)  # snapshot 2
            results += compare(
                "record (unchanged)",
                lambda v: [v, "--db", db(v), "record", pid],
                pmap,
                args.rounds,
                0.4,
            )
            helper.send("rwx")  # a small change, then a snapshot to diff against
            on_every("record", pid)
            last = str(2 + args.rounds + 1)
            results += compare(
                "diff (two snapshots of it)",
                lambda v: [v, "--db", db(v), "diff", "2", last],
                pmap,
                args.rounds,
                0.5,
            )
            on_every("record", str(other.pid))
            other_id = str(2 + args.rounds + 2)
            results += compare(
                "diff (two different processes)",
                lambda v: [v, "--db", db(v), "diff", last, other_id],
                pmap,
                args.rounds,
                1.0,
            )
            results += compare(
                "show (table)",
                lambda v: [v, "--db", db(v), "show", "2"],
                pmap,
                args.rounds,
                1.0,
            )

            # Memory: a changed process is compared region by region with its last
            # snapshot, the path that holds the most at once. No time target.
            def change() -> None:
                helper.send("rwx")

            results += compare(
                "record (changed since last time)",
                lambda v: [v, "--db", db(v), "record", pid],
                pmap,
                args.rounds,
                None,
                prepare=change,
            )
        finally:
            helper.stop()
            other.stop()
        on_every("record", str(os.getpid()), name="small")
        results += compare(
            "list (small db) vs import sqlalchemy",
            lambda v: [v, "--db", db(v, "small"), "list"],
            [sys.executable, "-c", "import sqlalchemy"],
            args.rounds,
            1.5,
        )
        # The whole machine as it is, then as a busier host: `--busy` more idle
        # processes, where what each process costs matters more than start-up.
        for extra in (0, args.busy):
            idle = [subprocess.Popen(["sleep", "3600"]) for _ in range(extra)]
            try:
                results += record_all(work, lambda v: db(v, "small"), counter, args.rounds)
            finally:
                for p in idle:
                    p.kill()
                    p.wait()

    print(f"{'what':52} {'memsnap':>9} {'baseline':>9} {'ratio':>7} {'target':>7}  peak RSS")
    for name, ours, theirs, ratio, target, peak in results:
        flag = "" if target is None else "ok" if ratio <= target else "OVER"
        goal = "-" if target is None else f"{target:6.2f}x"
        print(
            f"{name:52} {ours:8.3f}s {theirs:8.3f}s {ratio:6.2f}x {goal:>7}  "
            f"{peak / 2**20:6.0f} MiB  {flag}"
        )


def record_all(
    work: Path, small: Callable[[str], str], counter: Iterator[int], rounds: int
) -> list[Row]:
    """`record --all`, first time and again, against `pmap -X` once for each process."""
    everyone = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    machine = {}
    for version in VERSIONS:
        machine[version] = str(work / f"machine-{next(counter)}.db")
        shutil.copy(small(version), machine[version])

    def fresh_machine_db(version: str) -> list[str]:
        copy = work / f"machine-{next(counter)}.db"
        shutil.copy(small(version), copy)  # an existing database that has not seen them yet
        return [version, "--db", str(copy), "record", "--all"]

    first = compare(
        f"record --all, first time ({len(everyone)} pids)",
        fresh_machine_db,
        pmap_each(everyone),
        rounds,
        1.0,
    )
    for version in VERSIONS:
        run([version, "--db", machine[version], "record", "--all"])
    again = compare(
        f"record --all, again ({len(everyone)} pids)",
        lambda v: [v, "--db", machine[v], "record", "--all"],
        pmap_each(everyone),
        rounds,
        1.0,
    )
    return first + again


if __name__ == "__main__":
    main()

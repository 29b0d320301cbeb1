"""`memsnap check`'s tables: findings grouped by process, and "what needs a restart"
(each deleted or replaced library with the processes still mapping it)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from memsnap.findings import SEVERITIES, Reported, Seen
from memsnap.names import visible
from memsnap.render.snapshot import local_time
from memsnap.render.table import table
from memsnap.units import plural

# The rules whose findings are a library to restart for.
RESTART_RULES = frozenset({"deleted-code", "replaced-code"})


def _seen(seen: Seen | None, still: str) -> str:
    return still if seen is None else f"{seen.id} at {local_time(seen.taken_at)}"


def summary_line(reported: Sequence[Reported], snapshots: int, processes: int) -> str:
    """`3 findings in 2 processes (1 high, 2 medium); 41 snapshots of 41 processes checked`."""
    checked = f"{plural(snapshots, 'snapshot')} of {plural(processes, 'process', 'processes')}"
    if not reported:
        return f"no findings; {checked} checked"
    counts = Counter(r.finding.severity for r in reported)
    by_severity = ", ".join(f"{counts[s]} {s}" for s in reversed(SEVERITIES) if counts[s])
    hit = len({r.snapshot.process_id for r in reported})
    return (
        f"{plural(len(reported), 'finding')} in {plural(hit, 'process', 'processes')} "
        f"({by_severity}); {checked} checked"
    )


def by_process(
    reported: Sequence[Reported], style: str, history: bool, snapshots: int, processes: int
) -> str:
    """One block per snapshot checked: its process in a heading, then its findings."""
    groups: dict[int, list[Reported]] = {}
    for rep in reported:
        groups.setdefault(rep.snapshot.id, []).append(rep)
    headers = ["severity", "rule", "why", "notes"]
    if history:
        headers += ["first seen", "last seen"]
    blocks = []
    for reps in groups.values():
        s = reps[0].snapshot
        head = (
            f"pid {s.pid} ({visible(s.command)}) on {visible(s.host)}: "
            f"snapshot {s.id} at {local_time(s.taken_at)}"
        )
        rows = []
        for rep in reps:
            f = rep.finding
            row = [f.severity, f.rule, visible(f.why), ", ".join(f.notes)]
            if history:
                row += [_seen(rep.first_seen, "-"), _seen(rep.last_seen, "still")]
            rows.append(row)
        blocks.append(head + "\n" + table(rows, headers, style, ["left"] * len(headers)))
    blocks.append(summary_line(reported, snapshots, processes))
    return "\n\n".join(blocks)


def restart_view(reported: Sequence[Reported], style: str, snapshots: int, processes: int) -> str:
    """What needs a restart: each deleted or replaced library (or program), what became
    of it, and the processes still mapping it."""
    libraries: dict[str, tuple[set[str], dict[int, str]]] = {}
    for rep in reported:
        f, s = rep.finding, rep.snapshot
        if f.rule not in RESTART_RULES or f.region is None or f.region.path is None:
            continue
        what, procs = libraries.setdefault(f.region.path, (set(), {}))
        what.add("deleted" if f.rule == "deleted-code" else "replaced")
        procs[s.process_id] = f"{s.pid} ({visible(s.command)})"
    if not libraries:
        return summary_line(reported, snapshots, processes)
    rows = [
        [visible(path), ", ".join(sorted(what)), ", ".join(procs.values())]
        for path, (what, procs) in sorted(libraries.items())
    ]
    headers = ["library", "on disk", "processes still mapping it"]
    needing = len({r.snapshot.process_id for r in reported if r.finding.rule in RESTART_RULES})
    footer = (
        f"{plural(len(rows), 'library', 'libraries')} to restart for, in "
        f"{plural(needing, 'process', 'processes')}; "
        f"{plural(snapshots, 'snapshot')} of {plural(processes, 'process', 'processes')} checked"
    )
    return table(rows, headers, style, ["left"] * 3) + "\n\n" + footer

"""`memsnap check` over a recorded history, pure: which snapshots to check, the findings
of one with its process's history, and since when each finding stands.

The rules are `memsnap.findings`; the store hands this module plain values (a process's
snapshots as `Step`s, region rows as `Row`s with the first and last snapshot each lived
in, `memsnap.store.findings_rows`). For `--history` a finding is followed back and forth
through those rows at its address alone: a row lives unchanged across many snapshots, so
rows, not snapshots, are what is read. Also here: the stored form of the replaced objects
recorded with each live snapshot (`encode`, `decode`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from memsnap import findings as rules_
from memsnap.findings import Facts, Finding, IgnoreRule, Reported, Seen
from memsnap.match import name_matches
from memsnap.model import Region, Snapshot
from memsnap.replacement import ObjectKey
from memsnap.replacement import decode as decode
from memsnap.replacement import encode as encode

# A region unchanged but for its smaps sizes (which change while a finding stands).
_IDENTITY = ("start", "end", "perms", "offset", "dev", "inode", "path", "deleted", "kind")


@dataclass(frozen=True, slots=True)
class Selection:
    """Which snapshots to check: ids, or the latest of each process narrowed so."""

    ids: tuple[int, ...] = ()
    pid: int | None = None
    name: re.Pattern[str] | None = None
    host: str | None = None
    since: datetime | None = None
    live: bool = False  # the ids are what `--live` just recorded (perhaps none)


def latest_of_each(newest_first: Sequence[Snapshot], sel: Selection) -> list[Snapshot]:
    """From snapshots newest first (already narrowed by pid and time), the latest of each
    process that the host and name keep, by host, pid and id."""
    latest: dict[int, Snapshot] = {}
    for snap in newest_first:
        if snap.process_id in latest:
            continue
        if sel.host is not None and snap.host != sel.host:
            continue
        if sel.name is not None and not name_matches(
            sel.name, snap.command, snap.exe, snap.cmdline
        ):
            continue
        latest[snap.process_id] = snap
    return sorted(latest.values(), key=lambda s: (s.host, s.pid, s.id))


@dataclass(frozen=True, slots=True)
class Step:
    """One snapshot of a process, as the history walk needs it."""

    id: int
    seq: int
    taken_at: datetime
    replaced: frozenset[ObjectKey] | None  # None: not known (an import, an old snapshot)


@dataclass(frozen=True, slots=True)
class Row:
    """A region row with the snapshots (by seq) it lived in: first..last (None: still)."""

    region: Region
    first: int
    last: int | None

    def covers(self, seq: int) -> bool:
        return self.first <= seq and (self.last is None or self.last >= seq)


def _same(a: Region, b: Region) -> bool:
    return all(getattr(a, f) == getattr(b, f) for f in _IDENTITY)


def _fires_alone(rule: str, region: Region, facts: Facts) -> bool:
    """Whether a rule fires on this one region, with the process's facts at that step."""
    if rule == "w-then-x":  # it was written before; what stands is executable memory
        return "x" in region.perms and rules_.has_no_file(region)
    return any(f.rule == rule for f in rules_.SNAPSHOT_RULES[rule]([region], facts))


def _holds(finding: Finding, row: Row, step: Step, facts: Facts) -> bool:
    """Whether `finding` also stands on this row at this step (the row covers it): the
    same mapping (address and file), on which the rule fires. A rule that needed other
    regions to fire (a dual mapping's twin) holds while the mapping is unchanged."""
    r, other = finding.region, row.region
    assert r is not None
    if (other.start, other.path, other.dev, other.inode) != (r.start, r.path, r.dev, r.inode):
        return False
    replaced = step.replaced or frozenset()
    return _fires_alone(finding.rule, other, replace(facts, replaced=replaced)) or (
        finding.rule != "replaced-code" and _same(other, r)
    )


def _span(
    finding: Finding, at: int, steps: list[Step], rows: list[Row], facts: Facts
) -> tuple[Seen, Seen | None]:
    """The first snapshot of the unbroken run of snapshots the finding stands in around
    step `at`, and its last (None when the run reaches the process's latest snapshot)."""
    if finding.region is None:  # a fact of the process (its program): all its life
        return Seen(steps[0].id, steps[0].taken_at), None
    mine = [row for row in rows if row.region.start == finding.region.start]

    def stands(i: int) -> bool:
        step = steps[i]
        return any(row.covers(step.seq) and _holds(finding, row, step, facts) for row in mine)

    first = at
    while first > 0 and stands(first - 1):
        first -= 1
    last = at
    while last + 1 < len(steps) and stands(last + 1):
        last += 1
    first_seen = Seen(steps[first].id, steps[first].taken_at)
    if last == len(steps) - 1:
        return first_seen, None
    return first_seen, Seen(steps[last].id, steps[last].taken_at)


def facts_of(snap: Snapshot, replaced: frozenset[ObjectKey] | None) -> Facts:
    return Facts(snap.command, snap.cmdline, snap.exe, replaced or frozenset())


def _w_then_x(
    steps: list[Step], at: int, fileless: list[Row], layout_now: Sequence[Region]
) -> list[Finding]:
    """`w-then-x` for a snapshot: over its process's snapshots up to it, the addresses
    written in one and executable in a later one that are still executable in it."""
    history = [[row.region for row in fileless if row.covers(s.seq)] for s in steps[: at + 1]]
    now = {r.start: r for r in layout_now if "x" in r.perms}
    out = []
    for _, finding in rules_.w_then_x(history):
        assert finding.region is not None
        here = now.get(finding.region.start)
        if here is not None:
            out.append(replace(finding, region=here))
    return out


def findings_of(
    snap: Snapshot,
    regions: Sequence[Region],
    rules: Sequence[str],
    steps: Sequence[Step] = (),
    fileless: Sequence[Row] = (),
    ignore: Sequence[IgnoreRule] = (),
) -> list[Finding]:
    """The findings of one snapshot: the per-snapshot rules on its regions with its
    process's facts (the replaced objects from its `Step`), and `w-then-x` over the
    process's steps up to it (`fileless`: its rows no file backs); the ignored ones out."""
    at = index_of(snap, steps)
    replaced = steps[at].replaced if steps else None
    facts = facts_of(snap, replaced)
    found = rules_.check(regions, facts, rules)
    if "w-then-x" in rules and at > 0:
        found += _w_then_x(list(steps), at, list(fileless), regions)
    return rules_.without_ignored(found, facts, ignore)


def index_of(snap: Snapshot, steps: Sequence[Step]) -> int:
    return next((i for i, s in enumerate(steps) if s.id == snap.id), 0)


def with_history(
    snap: Snapshot, found: Sequence[Finding], steps: Sequence[Step], rows: Sequence[Row]
) -> list[Reported]:
    """Each finding with the snapshots it was first and last seen in (`rows`: the
    process's region rows at the findings' addresses)."""
    at = index_of(snap, steps)
    facts = facts_of(snap, steps[at].replaced if steps else None)
    out = []
    for f in found:
        first, last = _span(f, at, list(steps), list(rows), facts)
        out.append(Reported(snap, f, first, last))
    return out

"""A running process's classified layout, read now and never stored: `show PID --live`
and `diff ID --live`.

It takes the same steps as `record` (capture, parse, classify) and hands back the same
plain values the store would: a `Snapshot` (id 0, no process row; JSON shows its id as
null) and its `Region`s in ascending address order, named as the store names them.
"""

from __future__ import annotations

from datetime import datetime, timezone

from memsnap.capture.procfs import Proc
from memsnap.capture.record import classify_capture
from memsnap.diff import Diff, diff_snapshots, libraries
from memsnap.model import MAPPING_FIELDS, Region, Snapshot, combine, regions_of, totals_by_kind
from memsnap.names import escape_undecodable

_PATH = MAPPING_FIELDS.index("path")


def live_layout(proc: Proc, pid: int, smaps: bool = True) -> tuple[Snapshot, list[Region]]:
    """Read and classify process `pid` now (`ProcessError` when it cannot be read)."""
    taken_at = datetime.now(timezone.utc)
    capture = proc.capture(pid, smaps=smaps)
    parsed, kinds = classify_capture(proc, capture)
    by_kind = totals_by_kind(parsed.columns, kinds)
    info = capture.info
    snapshot = Snapshot(
        id=0,
        process_id=0,
        seq=0,
        taken_at=taken_at,
        identity=info.identity,
        command=escape_undecodable(info.command),
        cmdline=tuple(map(escape_undecodable, info.cmdline)),
        exe=None if info.exe is None else escape_undecodable(info.exe),
        label=None,
        page_size=info.page_size,
        kernel=info.kernel,
        source="live",
        has_smaps=capture.has_smaps,
        totals=combine(by_kind.values()),
        kinds=by_kind,
    )
    # Paths as the store keeps them: a byte that is not UTF-8 as `\xNN`.
    columns = list(parsed.columns)
    columns[_PATH] = [
        p if p is None or p.isascii() else escape_undecodable(p) for p in columns[_PATH]
    ]
    regions = regions_of(tuple(columns), kinds)
    regions.sort(key=lambda r: r.start)
    return snapshot, regions


def diff_with_live(
    before: Snapshot, before_regions: list[Region], after: Snapshot, after_regions: list[Region]
) -> Diff:
    """A stored snapshot against a live read: by address when both are one process (same
    host, boot, pid and start time), else by identity, as `diff` pairs two snapshots."""
    same = before.identity.boot_id is not None and before.identity == after.identity
    return diff_snapshots(
        before,
        after,
        before_regions,
        after_regions,
        "address" if same else "identity",
        libraries(before_regions),
        libraries(after_regions),
    )

"""The store's one face for the rest of memsnap: save, read back, prune.

`Repository` is `Writer` (what capture sees: save a snapshot, save an unchanged one) plus
the reading `memsnap.history` orchestrates (snapshot lists with filters, one snapshot, a
snapshot's layout, the regions changed between two snapshots of one process, a layout
for pairing and the whole regions a diff reports), what a push has to copy, and
`prune`. It owns the connection and the transactions, and turns every database failure
into `DatabaseError`: no caller sees SQLAlchemy or a driver. Reads share one
connection, opened on first use and closed with the repository (`with Repository(db)
as repo:`), so a command sees one state of the database.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from datetime import datetime, tzinfo
from types import TracebackType
from typing import TYPE_CHECKING

from sqlalchemy import Connection

from memsnap.model import Region, Snapshot, SnapshotFilter, Totals
from memsnap.store import push as pushing
from memsnap.store import reader
from memsnap.store.database import Database, database_errors
from memsnap.store.writer import Writer

if TYPE_CHECKING:
    # What only `check` and `prune` use is imported when they run: every command
    # builds a repository, and start-up is part of each command's time.
    from memsnap.checking import Row, Step
    from memsnap.retention import Policy
    from memsnap.store import prune as pruning


class Repository(Writer):
    """memsnap's storage, in memsnap's values (see the module's docstring)."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self._open = ExitStack()
        self._conn: Connection | None = None
        # What each `pairing_layout` handed out: its regions (in address order), their
        # row ids and their starts. A region is found again by bisecting the starts and
        # then looking for the very object (equal tuples may repeat in an imported text);
        # only the few regions a diff reports are ever looked for.
        self._sides: list[tuple[list[Region], list[int], list[int]]] = []

    def __enter__(self) -> Repository:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._sides.clear()
        self._conn = None
        with database_errors():
            self._open.close()

    def _reading(self) -> Connection:
        if self._conn is None:
            self._conn = self._open.enter_context(self.db.reading())
        return self._conn

    # --- reading ---------------------------------------------------------------------

    def snapshots(self, flt: SnapshotFilter) -> list[Snapshot]:
        """The snapshots matching the filter, newest first."""
        with database_errors():
            return reader.list_snapshots(self._reading(), flt)

    def snapshot(self, snapshot_id: int) -> Snapshot:
        """One snapshot with its kind totals; `NotFoundError` when there is no such id."""
        with database_errors():
            return reader.get_snapshot(self._reading(), snapshot_id)

    def kind_totals(self, snapshot_id: int) -> dict[str, Totals]:
        with database_errors():
            return reader.kind_totals(self._reading(), snapshot_id)

    def layout(self, snap: Snapshot) -> list[Region]:
        """Every region of a snapshot, in ascending address order."""
        with database_errors():
            return reader.layout(self._reading(), snap)

    def iter_layout(self, snap: Snapshot, *, descending: bool = False) -> Iterator[list[Region]]:
        """Every region of a snapshot a batch at a time, in address order (highest
        first when `descending`), for a snapshot too big to hold whole."""
        with database_errors():
            yield from reader.iter_layout(self._reading(), snap, descending=descending)

    def changed(self, a: Snapshot, b: Snapshot) -> tuple[list[Region], list[Region]]:
        """For two snapshots of one process (a before b): the regions of a gone by b and
        those of b that a did not have. Unchanged regions are never read."""
        with database_errors():
            return reader.changed_regions(self._reading(), a, b)

    def unchanged_paths(self, a: Snapshot, b: Snapshot, candidates: set[str]) -> set[str]:
        """Which of `candidates` (paths) have a region unchanged from a to b."""
        with database_errors():
            return reader.paths_alive_at_both(self._reading(), a, b, candidates)

    def pairing_layout(self, snap: Snapshot) -> list[Region]:
        """A snapshot's regions with only the fields pairing compares (others None), in
        address order; `whole` gives back the full regions of any of these."""
        with database_errors():
            regions, ids = reader.pairing_layout(self._reading(), snap)
        self._sides.append((regions, ids, [r.start for r in regions]))
        return regions

    def _row_of(self, region: Region) -> int:
        for regions, ids, starts in self._sides:
            i = bisect_left(starts, region.start)
            while i < len(regions) and starts[i] == region.start:
                if regions[i] is region:
                    return ids[i]
                i += 1
        raise KeyError(f"a region pairing_layout did not hand out: {region!r}")

    def whole(self, regions: Sequence[Region]) -> list[Region]:
        """The full regions of regions `pairing_layout` handed out, in the same order."""
        rows = [self._row_of(r) for r in regions]
        with database_errors():
            found = reader.regions_by_id(self._reading(), sorted(set(rows)))
        return [found[row] for row in rows]

    # --- what `check` reads besides layouts (see `memsnap.store.findings_rows`) ---------

    def steps(self, process_id: int) -> list[Step]:
        from memsnap.store import findings_rows

        with database_errors():
            return findings_rows.steps(self._reading(), process_id)

    def rows_at(self, process_id: int, starts: set[int]) -> list[Row]:
        from memsnap.store import findings_rows

        with database_errors():
            return findings_rows.rows_at(self._reading(), process_id, starts)

    def fileless_rows(self, process_id: int) -> list[Row]:
        from memsnap.store import findings_rows

        with database_errors():
            return findings_rows.fileless_rows(self._reading(), process_id)

    # --- what a push copies (see `memsnap.store.push`) ----------------------------------

    def hosts(self) -> list[str]:
        """The hosts this database holds processes of."""
        with database_errors():
            return pushing.local_hosts(self._reading())

    def replaced_of(self, snap: Snapshot) -> str | None:
        """The replaced executable objects stored with a snapshot (see `reader`)."""
        with database_errors():
            return reader.replaced_of(self._reading(), snap.id)

    def unpushed(
        self,
        latest: dict[pushing.LiveKey, int],
        imports: set[pushing.ImportKey],
        since: datetime | None = None,
    ) -> pushing.Pending:
        """The snapshots a target holding `latest` and `imports` lacks, and how many it
        has; only the new ones are read."""
        with database_errors():
            return pushing.unpushed(self._reading(), latest, imports, since)

    def unchanged_since(self, snap: Snapshot, before: int) -> bool:
        """Whether the snapshot's layout is that of its process's snapshot at seq
        `before` (see `memsnap.store.push.unchanged_since`)."""
        with database_errors():
            return pushing.unchanged_since(self._reading(), snap, before)

    # --- forgetting ------------------------------------------------------------------

    def prune(
        self,
        policy: Policy,
        chosen: pruning.Selection,
        tz: tzinfo | None,
        now: datetime,
        dry_run: bool = False,
        after_each: Callable[[int], None] | None = None,
    ) -> pruning.PruneResult:
        """Apply `policy` to every chosen process, one transaction each, then give the
        space back (see `memsnap.store.prune`)."""
        from memsnap.store import prune as pruning

        with database_errors():
            return pruning.prune(self.db, policy, chosen, tz, now, dry_run, after_each)

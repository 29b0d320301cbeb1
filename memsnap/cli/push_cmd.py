"""`memsnap push URL`: copy the local snapshots another database does not have yet.

Which snapshots those are, and how one is written there, is `memsnap.store.push`'s; this
module asks the target what it holds, reads the local snapshots it lacks (through
`memsnap.store.repository`, only those), copies a snapshot at a time and prints what
happened. The local database is only read.
"""

from __future__ import annotations

from enum import Enum
from functools import partial

import typer

from memsnap.cli.common import database, echo
from memsnap.errors import UsageError


class PushFormat(str, Enum):
    table = "table"
    json = "json"


def push(
    ctx: typer.Context,
    url: str = typer.Argument(
        ...,
        metavar="URL",
        show_default=False,
        help="The database to copy into: a SQLAlchemy URL or a SQLite file path "
        "(created if need be).",
    ),
    since: str | None = typer.Option(
        None,
        "--since",
        metavar="TIME",
        help="Only snapshots taken at or after TIME (ISO 8601, epoch, '2h ago').",
    ),
    fmt: PushFormat = typer.Option(
        PushFormat.table, "--format", "-f", help="Output format: table or json."
    ),
) -> None:
    """Copy every local snapshot the database at URL does not have yet.

    Idempotent (a second push copies nothing), resumable (a push cut short leaves whole
    snapshots there, and the next one goes on from them) and incremental (only what is
    new is read and sent). The local database is never changed.
    """
    from memsnap.render import snapshot as render
    from memsnap.store.database import open_database, resolve_url, safe_url
    from memsnap.store.push import PushResult, copy_snapshot, target_state
    from memsnap.store.repository import Repository
    from memsnap.timeparse import parse_time
    from memsnap.units import plural

    if not url.strip():
        raise UsageError("push needs the URL (or file path) of the database to copy into")
    start = parse_time(since) if since else None
    target_url = resolve_url(url)
    source_url = resolve_url(ctx.obj["db"] if ctx.obj else None)
    if target_url == source_url:
        raise UsageError("push copies into another database, not the one --db names")
    result = PushResult()
    # The local database is only read: never migrated either.
    with database(ctx, migrate=False) as source:
        target = open_database(url, create=True)
        try:
            with Repository(source) as src:
                # The target is asked about the local hosts only (a central database
                # holds many), then only the local snapshots it lacks are read.
                with target.reading() as conn:
                    latest, imports = target_state(conn, src.hosts())
                pending = src.unpushed(latest, imports, start)
                result.already_there = pending.already_there
                # Per process, the seq of the local snapshot the target's latest is.
                there = pending.at_target
                # Each process's in seq order: a push cut short leaves a prefix there.
                for snap in pending.snapshots:
                    before = there.pop(snap.process_id, None)
                    replaced = src.replaced_of(snap)
                    if before is not None and src.unchanged_since(snap, before):
                        # Copied as one row when the target is still at `before`; its
                        # layout is read only if not.
                        copy = partial(
                            copy_snapshot,
                            snap=snap,
                            regions=partial(src.layout, snap),
                            after=before,
                            replaced=replaced,
                        )
                    else:
                        copy = partial(
                            copy_snapshot, snap=snap, regions=src.layout(snap), replaced=replaced
                        )
                    if target.write(copy) is None:
                        result.already_there += 1
                    else:
                        result.copied += 1
                        there[snap.process_id] = snap.seq
        finally:
            target.close()
    masked = safe_url(target_url)
    if fmt is PushFormat.json:
        echo(
            render.dumps(
                {"copied": result.copied, "already_there": result.already_there, "target": masked}
            )
        )
    else:
        echo(
            f"copied {plural(result.copied, 'snapshot')} to {masked}; "
            f"{result.already_there} already there"
        )

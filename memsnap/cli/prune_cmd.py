"""`memsnap prune`: forget the snapshots no keep rule holds, per process.

The policy is `memsnap.retention`'s (restic's `forget`), the deleting and the vacuum
`memsnap.store.prune`'s; this module reads the options and prints what happened.
"""

from __future__ import annotations

import typer

from memsnap.cli.common import (
    DOCUMENT_FORMAT_OPTION,
    STYLE_OPTION,
    DocumentFormat,
    database,
    echo,
)
from memsnap.cli.picking import KEEP, host_option, name_option, pid_option


def prune(
    ctx: typer.Context,
    keep_last: int = KEEP["last"],
    keep_within: str | None = KEEP["within"],
    keep_hourly: int = KEEP["hourly"],
    keep_daily: int = KEEP["daily"],
    keep_weekly: int = KEEP["weekly"],
    pid: int | None = pid_option("Only processes with this pid."),
    name: str | None = name_option(),
    host: str | None = host_option(),
    dry_run: bool = typer.Option(
        False, "--dry-run", "-n", help="List what would be removed; remove nothing."
    ),
    fmt: DocumentFormat = DOCUMENT_FORMAT_OPTION,
    style: str = STYLE_OPTION,
) -> None:
    """Forget old snapshots, per process, keeping what the --keep rules say.

    A process's first and latest snapshots are always kept, and so is every snapshot
    any rule keeps. The snapshots kept read back exactly as before; the space of the
    others is given back to the file system (SQLite) or to the database (PostgreSQL).
    """
    from datetime import datetime, timezone

    from memsnap.match import compile_name
    from memsnap.render import snapshot as render
    from memsnap.retention import Policy, parse_duration, require_rule
    from memsnap.store.prune import Selection
    from memsnap.store.repository import Repository
    from memsnap.units import human, plural

    policy = Policy(
        last=keep_last,
        hourly=keep_hourly,
        daily=keep_daily,
        weekly=keep_weekly,
        within=parse_duration(keep_within) if keep_within is not None else None,
    )
    require_rule(policy)
    chosen = Selection(pid=pid, name=None if name is None else compile_name(name), host=host)
    with database(ctx) as db, Repository(db) as store:
        # Periods are the local time zone's (tz None), as `list` shows times.
        result = store.prune(policy, chosen, None, datetime.now(timezone.utc), dry_run)
    if result.vacuum_error is not None:
        echo(
            f"memsnap: the snapshots were removed, but giving the space back failed: "
            f"{result.vacuum_error}",
            err=True,
        )
    if fmt is DocumentFormat.json:
        echo(
            render.dumps(
                {
                    "removed": [render.snapshot_json(s) for s in result.removed],
                    "kept": result.kept,
                    "freed_bytes": result.freed_bytes,
                    "dry_run": dry_run,
                    "processes": result.processes,
                }
            )
        )
        return
    gone = len(result.removed)
    if dry_run:
        if result.removed:
            echo(render.list_table(result.removed, style))
        echo(
            f"would remove {plural(gone, 'snapshot')}, keep {result.kept}, of "
            f"{plural(result.processes, 'process', 'processes')} under {policy.describe()}, "
            "with each one's first and latest; dry run: nothing removed"
        )
    else:
        echo(
            f"removed {plural(gone, 'snapshot')}, kept {result.kept}, of "
            f"{plural(result.processes, 'process', 'processes')}; freed {human(result.freed_bytes)}"
        )

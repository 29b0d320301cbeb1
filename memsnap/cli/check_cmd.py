"""`memsnap check`: the findings of stored (or freshly recorded) snapshots, and the exit
code a cron job or a CI step acts on (3 when one is at or above `--fail-on`)."""

from __future__ import annotations

import re
from enum import Enum
from typing import TYPE_CHECKING

import typer

from memsnap.cli.common import OUTPUT_OPTION, STYLE_OPTION, database, echo, emit
from memsnap.cli.picking import ID_MAX, host_option, name_option, pid_option
from memsnap.errors import UsageError
from memsnap.rules import RULES

if TYPE_CHECKING:
    from memsnap.checking import Selection
    from memsnap.findings import IgnoreRule, Reported
    from memsnap.model import Snapshot
    from memsnap.store.database import Database


class CheckFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"
    openmetrics = "openmetrics"


# --fail-on's default is DEFAULT_FAIL_ON (high); a test holds the two together.
class Severity(str, Enum):
    """The severities `--fail-on` takes (memsnap.findings.SEVERITIES, lowest first)."""

    info = "info"
    low = "low"
    medium = "medium"
    high = "high"
    critical = "critical"


def check(
    ctx: typer.Context,
    ids: list[int] = typer.Argument(
        None,
        metavar="[ID ...]",
        min=1,
        max=ID_MAX,
        show_default=False,
        help="Snapshots to check (default: the latest snapshot of each process).",
    ),
    pid: int | None = pid_option("Only the process with this pid."),
    name: str | None = name_option(),
    host: str | None = host_option(),
    since: str | None = typer.Option(
        None,
        "--since",
        metavar="TIME",
        help="Only processes with a snapshot taken at or after TIME (its latest is checked).",
    ),
    live: bool = typer.Option(
        False,
        "--live",
        help="Record every process memsnap may read first (as record --all), then check "
        "those snapshots.",
    ),
    history: bool = typer.Option(
        False,
        "--history",
        help="Give the snapshot each finding was first seen in, and last seen in if gone.",
    ),
    rule: str | None = typer.Option(
        None,
        "--rule",
        metavar="ID[,ID]",
        help="Only these rules: " + ", ".join(RULES) + ". deleted-code,replaced-code "
        "on a table lists what needs a restart.",
    ),
    ignore: str | None = typer.Option(
        None,
        "--ignore",
        metavar="FILE",
        help="Known findings to leave out: one 'RULE REGEX' per line (RULE a rule id, a "
        "comma list or *; REGEX searched in the path and the command).",
    ),
    fail_on: Severity = typer.Option(
        Severity.high,
        "--fail-on",
        help="Exit 3 when a finding is at or above this severity: info, low, medium, high "
        "or critical.",
    ),
    fmt: CheckFormat = typer.Option(
        CheckFormat.table,
        "--format",
        "-f",
        help="Output format: table, json, csv or openmetrics (node_exporter's textfile collector).",
    ),
    style: str = STYLE_OPTION,
    output: str | None = OUTPUT_OPTION,
) -> None:
    """Look for suspicious memory: fileless, writable-and-executable, deleted or
    replaced code. Exit 3 when a finding is at or above --fail-on."""
    from memsnap import findings
    from memsnap.checking import Selection
    from memsnap.match import compile_name
    from memsnap.timeparse import parse_time

    if ids and (pid is not None or name is not None or host is not None or since is not None):
        raise UsageError("IDs name the snapshots: no --pid, --name, --host or --since with them")
    if live and (ids or host is not None or since is not None):
        raise UsageError("--live checks what it records now: no IDs, --host or --since")
    rules = findings.parse_rules(rule) if rule is not None else tuple(RULES)
    ignore_rules = findings.load_ignore(ignore) if ignore is not None else []
    pattern = None if name is None else compile_name(name)
    threshold = findings.parse_severity(fail_on.value)
    with database(ctx, create=live) as db:
        if live:
            recorded = _record_all(db, pid, pattern)
            selection = Selection(ids=tuple(recorded), live=True)
        else:
            selection = Selection(
                tuple(ids or ()),
                pid,
                pattern,
                host,
                parse_time(since) if since is not None else None,
            )
        snaps, reported = _check(db, selection, rules, ignore_rules, history)
    processes = len({s.process_id for s in snaps})
    _print(reported, len(snaps), processes, fmt, style, rules, history, output)
    code = findings.exit_code((r.finding for r in reported), threshold)
    if code:
        raise typer.Exit(code)


def _record_all(db: Database, pid: int | None, pattern: re.Pattern[str] | None) -> list[int]:
    """Record every process (or the one pid) as `record --all` does; the ids stored.
    What could not be read is counted on standard error, as `record --all` says it."""
    from memsnap.capture.procfs import Proc
    from memsnap.capture.sweep import Sweep

    sweep = Sweep(db, Proc(), name=pattern)
    targets = [pid] if pid is not None else sweep.all_pids()
    result = sweep.run(targets)
    echo(f"memsnap: {result.summary()}", err=True)
    if pid is not None and pid in result.errors:
        from memsnap.errors import MemsnapError

        raise MemsnapError(result.errors[pid])
    return [r.snapshot_id for r in result.recorded]


def _check(
    db: Database,
    sel: Selection,
    rules: tuple[str, ...],
    ignore: list[IgnoreRule],
    history: bool,
) -> tuple[list[Snapshot], list[Reported]]:
    """The snapshots selected (the ids named, or the latest of each process the filters
    keep) and their findings (with since when, for `history`), most severe first. A
    process's rows are read only when `w-then-x` or --history needs them."""
    from memsnap import checking, findings
    from memsnap.model import SnapshotFilter
    from memsnap.store.repository import Repository

    reported: list[Reported] = []
    steps_of: dict[int, list[checking.Step]] = {}
    with Repository(db) as store:
        if sel.ids or sel.live:
            snaps = [store.snapshot(i) for i in dict.fromkeys(sel.ids)]
        else:
            flt = SnapshotFilter(pid=sel.pid, since=sel.since)
            snaps = checking.latest_of_each(store.snapshots(flt), sel)
        for snap in snaps:
            steps = steps_of.get(snap.process_id)
            if steps is None:
                steps = steps_of[snap.process_id] = store.steps(snap.process_id)
            at = checking.index_of(snap, steps)
            fileless = (
                store.fileless_rows(snap.process_id) if "w-then-x" in rules and at > 0 else []
            )
            regions = store.layout(snap)
            found = checking.findings_of(snap, regions, rules, steps, fileless, ignore)
            if not found:
                continue
            if history:
                starts = {f.region.start for f in found if f.region is not None}
                rows = store.rows_at(snap.process_id, starts)
                reported += checking.with_history(snap, found, steps, rows)
            else:
                reported += [findings.Reported(snap, f) for f in found]
    return snaps, findings.ordered(reported)


def _print(
    reported: list[Reported],
    snapshots: int,
    processes: int,
    fmt: CheckFormat,
    style: str,
    rules: tuple[str, ...],
    history: bool,
    output: str | None,
) -> None:
    from memsnap.render import findings as documents
    from memsnap.render import findings_table
    from memsnap.render.snapshot import dumps

    if fmt is CheckFormat.json:
        text = dumps(documents.findings_json(reported, snapshots, processes, history))
    elif fmt is CheckFormat.csv:
        text = documents.findings_csv(reported, history).rstrip("\n")
    elif fmt is CheckFormat.openmetrics:
        text = documents.findings_openmetrics(reported, rules).rstrip("\n")
    elif set(rules) <= findings_table.RESTART_RULES and not history:
        text = findings_table.restart_view(reported, style, snapshots, processes)
    else:
        text = findings_table.by_process(reported, style, history, snapshots, processes)
    emit(text, output)

"""How a command is told which snapshots or processes: ids, `--pid`, `--name`, `--limit`.

Each is declared here once, with its range, so that a number out of range is a usage
error (exit 2, one line) where it is parsed, before a database sees it: SQLite cannot
bind an integer past 2**63 - 1, and PostgreSQL would answer "integer out of range".
Times are checked where they are parsed (`memsnap.timeparse`).
"""

from __future__ import annotations

from typing import Any

import typer

# The kernel's PID_MAX_LIMIT: /proc/sys/kernel/pid_max cannot be set above it.
PID_MAX = 4_194_304
# A signed 64-bit integer: the widest row id (and LIMIT) either database takes.
ID_MAX = 2**63 - 1

NAME_HELP = (
    "Only processes whose command line (whole, or any one argument), command or program "
    "path matches this Python regular expression, as pgrep -f does."
)


def pid_option(help: str) -> Any:
    return typer.Option(None, "--pid", metavar="PID", min=1, max=PID_MAX, help=help)


def name_option(help: str = NAME_HELP) -> Any:
    return typer.Option(None, "--name", metavar="REGEX", help=help)


def id_argument(metavar: str, help: str) -> Any:
    return typer.Argument(None, metavar=metavar, min=1, max=ID_MAX, show_default=False, help=help)


def limit_option() -> Any:
    return typer.Option(None, "--limit", metavar="N", min=1, max=ID_MAX, help="At most this many.")


def host_option(
    help: str = "Only this host's snapshots (the name `record --host-id` gave).",
) -> Any:
    return typer.Option(None, "--host", metavar="HOST", help=help)


def keep_count_option(flag: str, help: str) -> Any:
    return typer.Option(0, flag, min=0, max=10**9, metavar="N", help=help)


def keep_options() -> dict[str, Any]:
    """The keep rules of `prune` and of a watch that prunes as it goes."""
    return {
        "last": keep_count_option("--keep-last", "Keep the N newest snapshots."),
        "within": typer.Option(
            None,
            "--keep-within",
            metavar="DURATION",
            help="Keep every snapshot taken within DURATION (30m, 12h, 7d, 2w, 1d12h) of "
            "the process's latest.",
        ),
        "hourly": keep_count_option(
            "--keep-hourly", "Keep the newest snapshot of each of the last N hours that have one."
        ),
        "daily": keep_count_option("--keep-daily", "The same for days (local time)."),
        "weekly": keep_count_option(
            "--keep-weekly", "The same for weeks (ISO weeks, from Monday)."
        ),
    }


KEEP = keep_options()

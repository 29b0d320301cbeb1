"""Which processes a `--name REGEX` selects. Pure.

A pattern is a Python regular expression (`re`), searched, as `pgrep -f` does, in the
whole command line (its arguments joined by spaces) and also in the command name, the
program path and each argument on its own, so that `^target.py$` finds
`python3 target.py`. An imported text has no command line: its command and program path
are what there is.

Names are chosen by whoever runs a process, and Python's `re` backtracks: a pattern
with nested repetition such as `(a+)+$` can take longer than anyone will wait on a long
name. memsnap does not put a time limit on it (no limit fits both a slow machine and a
2 MiB command line); Ctrl-C stops such a search like any other (exit 130), and the
interface documents it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from memsnap.errors import UsageError


def compile_name(text: str) -> re.Pattern[str]:
    """The pattern of a `--name`, or a `UsageError` saying why it is not one."""
    try:
        return re.compile(text)
    except (re.error, RecursionError, OverflowError) as exc:
        raise UsageError(f"--name {text!r} is not a valid regular expression: {exc}") from None


def name_matches(
    pattern: re.Pattern[str], command: str, exe: str | None, cmdline: Sequence[str]
) -> bool:
    """Whether a process is selected: its command line (whole or any one argument),
    its command name or its program path holds a match."""
    if len(cmdline) > 1 and pattern.search(" ".join(cmdline)):
        return True
    return any(pattern.search(text) for text in (command, exe or "", *cmdline))

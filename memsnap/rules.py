"""The catalogue of `memsnap check`'s rules and severities: ids, default severities,
titles, and the parsing of the names a user gives for them.

Apart from the rules themselves (`memsnap.findings`) because the command line names them
in its help: every command builds that help, and the rules' patterns are compiled only
when `check` runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from memsnap.errors import UsageError

# --- severities -----------------------------------------------------------------------

SEVERITIES: tuple[str, ...] = ("info", "low", "medium", "high", "critical")
RANK = {name: rank for rank, name in enumerate(SEVERITIES)}
DEFAULT_FAIL_ON = "high"
FAIL_EXIT = 3  # what `check` exits with when a finding is at or above --fail-on


def severity_rank(severity: str) -> int:
    """The place of a severity in the order info < low < medium < high < critical."""
    return RANK[severity]


def at_or_above(severity: str, threshold: str) -> bool:
    return RANK[severity] >= RANK[threshold]


def parse_severity(text: str, option: str = "--fail-on") -> str:
    """A severity named by the user, or `UsageError` listing the valid ones."""
    name = text.strip().lower()
    if name not in RANK:
        raise UsageError(f"{option}: unknown severity {text!r} (one of {', '.join(SEVERITIES)})")
    return name


# --- rules ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    severity: str
    title: str


# In the order of the issue's table (and of `memsnap check`'s help).
RULES: dict[str, Rule] = {
    rule.id: rule
    for rule in (
        Rule("memfd-exec", "critical", "runs code from a memfd (fileless)"),
        Rule("exec-stack", "high", "executable stack"),
        Rule("exec-heap", "high", "executable heap"),
        Rule("dirty-text", "high", "code patched in memory"),
        Rule("ddexec", "high", "trace of the DDexec in-memory loader"),
        Rule("wx", "medium", "writable and executable memory"),
        Rule("anon-exec", "medium", "executable memory with no file behind it"),
        Rule("exec-from-tmp", "medium", "runs code from a temporary directory"),
        Rule("deleted-code", "medium", "runs a deleted library"),
        Rule("replaced-code", "medium", "runs a library replaced on disk"),
        Rule("w-then-x", "low", "memory written, then made executable"),
    )
}


def parse_rules(text: str, option: str = "--rule") -> tuple[str, ...]:
    """Rule ids from a comma list (`deleted-code,replaced-code`), or `UsageError`."""
    ids = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [i for i in ids if i not in RULES]
    if unknown or not ids:
        raise UsageError(
            f"{option}: unknown rule {', '.join(map(repr, unknown)) or repr(text)} "
            f"(rules: {', '.join(RULES)})"
        )
    return ids

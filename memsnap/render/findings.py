"""Findings as documents: `check --format json`, `csv` and `openmetrics`. Pure.

The findings themselves, and which are reported in what order, are `memsnap.findings`'.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from memsnap.findings import RULES, Reported, Seen
from memsnap.names import visible
from memsnap.render.snapshot import hexaddr, region_json, snapshot_json, to_csv


def _seen_json(seen: Seen | None) -> dict[str, Any] | None:
    return None if seen is None else {"id": seen.id, "taken_at": seen.taken_at.isoformat()}


def findings_json(
    reported: Sequence[Reported], snapshots: int, processes: int, history: bool = False
) -> dict[str, Any]:
    """`check --format json` (without `format`, which `render.dumps` puts first)."""
    items = []
    for rep in reported:
        f = rep.finding
        item: dict[str, Any] = {
            "rule": f.rule,
            "severity": f.severity,
            "title": f.title,
            "why": f.why,
            "snapshot": snapshot_json(rep.snapshot),
            "region": None if f.region is None else region_json(f.region, rep.snapshot.page_size),
            "notes": list(f.notes),
        }
        if history:
            item["first_seen"] = _seen_json(rep.first_seen)
            item["last_seen"] = _seen_json(rep.last_seen)
        items.append(item)
    return {"checked": {"snapshots": snapshots, "processes": processes}, "findings": items}


FINDINGS_CSV_FIELDS = [
    "rule",
    "severity",
    "title",
    "why",
    "snapshot_id",
    "taken_at",
    "host",
    "pid",
    "command",
    "start",
    "end",
    "perms",
    "path",
    "deleted",
    "kind",
    "notes",
]
FINDINGS_HISTORY_CSV_FIELDS = [
    *FINDINGS_CSV_FIELDS,
    "first_seen_id",
    "first_seen_at",
    "last_seen_id",
    "last_seen_at",
]


def findings_csv(reported: Sequence[Reported], history: bool = False) -> str:
    """`check --format csv`: one row per finding."""
    rows = []
    for rep in reported:
        f, s, r = rep.finding, rep.snapshot, rep.finding.region
        row: dict[str, Any] = {
            "rule": f.rule,
            "severity": f.severity,
            "title": f.title,
            "why": f.why,
            "snapshot_id": s.id,
            "taken_at": s.taken_at.isoformat(),
            "host": s.host,
            "pid": s.pid,
            "command": s.command,
            "start": hexaddr(r.start) if r else None,
            "end": hexaddr(r.end) if r else None,
            "perms": r.perms if r else None,
            "path": r.path if r else None,
            "deleted": r.deleted if r else None,
            "kind": r.kind if r else None,
            "notes": ";".join(f.notes),
        }
        if history:
            first, last = rep.first_seen, rep.last_seen
            row["first_seen_id"] = first.id if first else None
            row["first_seen_at"] = first.taken_at.isoformat() if first else None
            row["last_seen_id"] = last.id if last else None
            row["last_seen_at"] = last.taken_at.isoformat() if last else None
        rows.append(row)
    fields = FINDINGS_HISTORY_CSV_FIELDS if history else FINDINGS_CSV_FIELDS
    return to_csv(rows, fields)


def label_value(text: str) -> str:
    """A label value as OpenMetrics writes it: backslash, double quote and newline
    escaped. Other control characters, and bytes that are not UTF-8, are shown as
    `\\xNN` text first (`names.visible`), as in every text memsnap writes."""
    shown = visible(text, lines=True)
    return shown.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: Sequence[tuple[str, str]]) -> str:
    return "{" + ",".join(f'{k}="{label_value(v)}"' for k, v in pairs) + "}"


def findings_openmetrics(reported: Sequence[Reported], rules: Iterable[str] | None = None) -> str:
    """`check --format openmetrics`, for node_exporter's textfile collector.

    One `memsnap_finding` sample per finding (value 1) with labels rule, severity, host,
    pid, command and path, and `address` (the region's start): two anonymous regions of
    one process break the same rule with the same path, and a family may not hold one
    label set twice. The same region found in two snapshots of one process is one
    sample, its value the number of findings. Then `memsnap_findings` per rule checked
    (zero included), and `# EOF`.
    """
    samples: dict[str, int] = {}
    counts = {rule_id: 0 for rule_id in (RULES if rules is None else rules)}
    for rep in reported:
        f, s, r = rep.finding, rep.snapshot, rep.finding.region
        labels = _labels(
            [
                ("rule", f.rule),
                ("severity", f.severity),
                ("host", s.host),
                ("pid", str(s.pid)),
                ("command", s.command),
                ("path", (r.path or "") if r is not None else ""),
                ("address", f"0x{r.start:x}" if r is not None else ""),
            ]
        )
        samples[labels] = samples.get(labels, 0) + 1
        counts[f.rule] = counts.get(f.rule, 0) + 1
    lines = [
        "# TYPE memsnap_finding gauge",
        "# HELP memsnap_finding A finding of memsnap check: 1 per finding.",
        *(f"memsnap_finding{labels} {n}" for labels, n in samples.items()),
        "# TYPE memsnap_findings gauge",
        "# HELP memsnap_findings The number of findings of each rule.",
        *(
            f"memsnap_findings{_labels([('rule', rule_id), ('severity', RULES[rule_id].severity)])}"
            f" {n}"
            for rule_id, n in counts.items()
        ),
        "# EOF",
    ]
    return "\n".join(lines) + "\n"

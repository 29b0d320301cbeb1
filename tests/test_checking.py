"""`memsnap check`'s pure parts on plain values: the stored replaced objects (hostile
text included), which snapshots are checked, since when a finding stands, and the
executable objects a capture's text names."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from conftest import MAPS
from memsnap.capture.replaced import executable_files, executable_mappings
from memsnap.checking import (
    Row,
    Selection,
    Step,
    decode,
    encode,
    findings_of,
    latest_of_each,
    with_history,
)
from memsnap.errors import ParseError
from memsnap.match import compile_name
from memsnap.model import ProcessIdentity, Region, Snapshot, Totals
from memsnap.parse import parse_text

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc)


def snapshot(id: int, process_id: int = 1, seq: int = 1, host: str = "vm", pid: int = 10,
             command: str = "app") -> Snapshot:  # fmt: skip
    return Snapshot(
        id=id,
        process_id=process_id,
        seq=seq,
        taken_at=T0 + timedelta(minutes=id),
        identity=ProcessIdentity(host, "boot", pid, 100),
        command=command,
        cmdline=(command,),
        exe=f"/usr/bin/{command}",
        label=None,
        page_size=4096,
        kernel=None,
        source="live",
        has_smaps=True,
        totals=Totals(1, 4096, None, None, None, None),
    )


def test_replaced_objects_round_trip_and_hostile_text() -> None:
    keys = {("/usr/lib/libssl.so.3", "fe:00", 339907), ("/opt/a b\n", "00:2a", 1)}
    assert decode(encode(keys)) == frozenset(keys)
    assert decode(encode(set())) == frozenset()
    assert decode(None) is None  # not known: an import, or older than the column
    for hostile in ("", "{", "{}", '"x"', "3", "null"):
        assert decode(hostile) is None
    mixed = '[["/a", "fe:00", 1], ["/b", "fe:00", true], ["/c", 1, 2], ["/d"], 5]'
    assert decode(mixed) == frozenset({("/a", "fe:00", 1)})


def test_latest_snapshot_of_each_process_narrowed() -> None:
    newest_first = [
        snapshot(5, process_id=1, seq=3),
        snapshot(4, process_id=2, pid=11, command="db", host="other"),
        snapshot(3, process_id=1, seq=2),
        snapshot(2, process_id=3, pid=12, command="web"),
        snapshot(1, process_id=1, seq=1),
    ]
    assert [s.id for s in latest_of_each(newest_first, Selection())] == [4, 5, 2]
    assert [s.id for s in latest_of_each(newest_first, Selection(host="vm"))] == [5, 2]
    named = Selection(name=compile_name("^/usr/bin/w"))
    assert [s.id for s in latest_of_each(newest_first, named)] == [2]


RWX = Region(0x7F0000000000, 0x7F0000001000, "rwxp", 0, "00:00", 0, None, rss=4096)


def test_history_follows_the_mapping_not_its_sizes_and_stops_at_a_gap() -> None:
    """wx stands from seq 2 to 4 (its rss changes at 3, a new row); at 5 the page is
    r-x: wx is gone, anon-exec still stands and reaches the latest step."""
    steps = [Step(10 + i, i, T0 + timedelta(minutes=i), frozenset()) for i in range(1, 6)]
    rows = [
        Row(RWX, 2, 2),
        Row(RWX._replace(rss=8192), 3, 4),
        Row(RWX._replace(perms="r-xp"), 5, None),
    ]
    at_4 = snapshot(14, seq=4)
    found = findings_of(at_4, [rows[1].region], ["wx", "anon-exec"], steps)
    spans = {
        r.finding.rule: (r.first_seen.id if r.first_seen else None, r.last_seen)
        for r in with_history(at_4, found, steps, rows)
    }
    assert spans["anon-exec"] == (12, None)
    first, last = spans["wx"]
    assert first == 12 and last is not None and last.id == 14


def test_replaced_code_stands_only_where_the_stat_said_so() -> None:
    lib = Region(0x7F0000000000, 0x7F0000010000, "r-xp", 0, "fe:00", 77, "/usr/lib/libz.so")
    key = ("/usr/lib/libz.so", "fe:00", 77)
    steps = [
        Step(1, 1, T0, None),  # an old snapshot: not known
        Step(2, 2, T0 + timedelta(minutes=1), frozenset({key})),
        Step(3, 3, T0 + timedelta(minutes=2), frozenset({key})),
    ]
    at_3 = snapshot(3, seq=3)
    found = findings_of(at_3, [lib], ["replaced-code"], steps)
    assert [f.rule for f in found] == ["replaced-code"]
    [rep] = with_history(at_3, found, steps, [Row(lib, 1, None)])
    assert rep.first_seen is not None and rep.first_seen.id == 2 and rep.last_seen is None
    assert findings_of(snapshot(1, seq=1), [lib], ["replaced-code"], steps) == []


def test_executable_mappings_of_a_smaps_text() -> None:
    text = (
        b"55d0c0a00000-55d0c0a01000 r--p 00000000 fe:00 12 /usr/bin/app\n"
        b"Size:                  4 kB\n"
        b"55d0c0a01000-55d0c0a02000 r-xp 00001000 fe:00 12 /usr/bin/app\n"
        b"Size:                  4 kB\n"
        b"7f0000000000-7f0000001000 r-xp 00000000 fe:00 99 /usr/lib/libgone.so (deleted)\n"
        b"VmFlags: rd ex mr mw me\n"
        b"7f0000002000-7f0000003000 rw-p 00000000 00:00 0\n"
    )
    found = executable_mappings(text)
    assert [(r.path, r.deleted, r.inode) for r in found] == [
        ("/usr/bin/app", False, 12),
        ("/usr/lib/libgone.so", True, 99),
    ]
    assert executable_mappings(b"\xff\x00 garbage r-xp\n") == []


def test_executable_mappings_skip_anonymous_code_and_candidates_inside_paths() -> None:
    text = (
        b"7f0000000000-7f0000001000 r-xp 00000000 00:00 0\n"  # anonymous code: no file
        b"7f0000001000-7f0000002000 rw-p 00000000 fe:00 7 /tmp/a r-xp 0 fe:00 8 /b\n"
        b"7f0000002000-7f0000003000 r-xp 00000000 fe:00 9 /tmp/c r-xp 0 fe:00 8 /d\n"
        b"7ffd00000000-7ffd00001000 r-xp 00000000 00:00 0 [vdso]\n"
        b"not a header r-xp 0 fe:00 8 /e\n"  # not parsed: it would fail the whole text
    )
    found = executable_mappings(text)
    # The rw-p line's path holds a header-like text: it is not an executable mapping;
    # the r-xp line counts once, whatever its path holds.
    assert [(r.start, r.path, r.inode) for r in found] == [
        (0x7F0000002000, "/tmp/c r-xp 0 fe:00 8 /d", 9)
    ]


@pytest.mark.parametrize("name", sorted(p.name for p in MAPS.glob("*.txt")))
def test_executable_files_from_text_and_from_parsed_mappings_agree(name: str) -> None:
    # An unchanged copy finds them in the text, a new or changed snapshot among its parsed
    # mappings: both must name the same files, on every capture.
    raw = (MAPS / name).read_bytes()
    try:
        parsed = parse_text(raw, saved=True)
    except ParseError:
        return  # a capture the parser refuses is never recorded

    def headers(regions: list[Region]) -> list[tuple[object, ...]]:
        return [r[: Region._fields.index("deleted") + 1] for r in regions]

    from_text = executable_mappings(raw.replace(b"\r\n", b"\n"))
    assert headers(from_text) == headers(executable_files(parsed.mappings))

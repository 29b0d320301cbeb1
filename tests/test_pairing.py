"""Pairing regions and rendering diffs, on `Region` literals: no database, no process.

Every field of a literal region holds a value no other field holds, so a renderer or a
pairing that swapped two fields (rss for pss, offset for inode, start for end) cannot
pass.
"""

from __future__ import annotations

import json
import random
import re
from datetime import datetime, timezone
from typing import Any

import pytest

from memsnap.diff import (
    ADDRESS_FIELDS,
    SMAPS_COMPARED,
    Diff,
    RegionChange,
    diff_snapshots,
    libraries,
    pair_by_address,
    pair_by_identity,
)
from memsnap.model import ProcessIdentity, Region, Snapshot, columns_of, combine, totals_by_kind

PAGE = 4096
KiB = 1024

# Distinct in every field, and no size equal to another size.
SMAPS = {
    "rss": 11 * PAGE,
    "pss": 7 * PAGE,
    "shared_clean": 3 * PAGE,
    "shared_dirty": 1 * PAGE,
    "private_clean": 2 * PAGE,
    "private_dirty": 5 * PAGE,
    "referenced": 9 * PAGE,
    "anonymous": 6 * PAGE,
    "anon_huge": 13 * PAGE,
    "swap": 4 * PAGE,
    "swap_pss": 8 * PAGE,
    "locked": 10 * PAGE,
}


def region(
    start: int,
    end: int,
    kind: str,
    path: str | None = None,
    perms: str = "rw-p",
    offset: int = 0x5000,
    **changed: Any,
) -> Region:
    """A region whose fields all differ from one another; `changed` overrides any."""
    fields: dict[str, Any] = {
        "start": start,
        "end": end,
        "perms": perms,
        "offset": offset if path and not path.startswith("[") else 0,
        "dev": "fd:02" if path and not path.startswith("[") else "00:00",
        "inode": 31337 if path and not path.startswith("[") else 0,
        "path": path,
        "deleted": False,
        **SMAPS,
        "vm_flags": "rd wr mr mw me ac",
        "kind": kind,
    }
    fields.update(changed)
    return Region(**fields)


TEXT = region(0x55D000400000, 0x55D000408000, "text", "/usr/bin/prog", "r-xp", 0x1000)
DATA = region(0x55D000408000, 0x55D000409000, "data", "/usr/bin/prog", "rw-p", 0x8000)
HEAP = region(0x55D001000000, 0x55D001021000, "heap", "[heap]")
LIBC = region(0x7F3A10028000, 0x7F3A101BD000, "lib-text", "/usr/lib/libc.so.6", "r-xp", 0x28000)
STACK = region(0x7FFC3A000000, 0x7FFC3A021000, "stack", "[stack]")
LAYOUT = [TEXT, DATA, HEAP, LIBC, STACK]


# --- pairing by address: two snapshots of one process ----------------------------------


def test_an_unchanged_layout_has_no_differences() -> None:
    assert pair_by_address(LAYOUT, list(LAYOUT)) == ([], [], [])
    assert pair_by_identity(LAYOUT, list(LAYOUT)) == ([], [], [])


def test_a_heap_growing_in_place_changes_its_end() -> None:
    grown = HEAP._replace(end=HEAP.end + 0x21000, rss=SMAPS["rss"] + 33 * PAGE)
    removed, added, changed = pair_by_address(LAYOUT, [TEXT, DATA, grown, LIBC, STACK])
    assert (removed, added) == ([], [])
    assert changed == [RegionChange(HEAP, grown, ("size", "end", "rss"))]


def test_a_moved_heap_is_removed_and_added_by_address_and_paired_by_identity() -> None:
    moved = HEAP._replace(start=0x55D002000000, end=0x55D002021000, pss=SMAPS["pss"] - PAGE)
    after = [TEXT, DATA, moved, LIBC, STACK]
    assert pair_by_address(LAYOUT, after) == ([HEAP], [moved], [])
    # Across processes addresses mean nothing: only what it holds is a change.
    assert pair_by_identity(LAYOUT, after) == ([], [], [RegionChange(HEAP, moved, ("pss",))])


def test_a_stack_growing_down_keeps_its_end() -> None:
    grown = STACK._replace(start=STACK.start - 0x180000, rss=SMAPS["rss"] + 0x180000)
    removed, added, changed = pair_by_address(LAYOUT, [TEXT, DATA, HEAP, LIBC, grown])
    assert (removed, added) == ([], [])
    assert changed == [RegionChange(STACK, grown, ("size", "start", "rss"))]


def test_a_stack_is_paired_by_its_end_only_with_the_same_path_and_kind() -> None:
    # Same end, another path or another kind: not the same region.
    for other in (
        STACK._replace(start=STACK.start - PAGE, path="[stack:77]"),
        STACK._replace(start=STACK.start - PAGE, kind="anon"),
    ):
        assert pair_by_address([STACK], [other]) == ([STACK], [other], [])


def test_a_region_split_in_two_keeps_its_start_and_adds_the_rest() -> None:
    whole = region(0x7F3A20000000, 0x7F3A20008000, "anon")
    low = whole._replace(end=0x7F3A20004000, rss=4 * PAGE)
    high = whole._replace(start=0x7F3A20004000, perms="r--p", rss=4 * PAGE)
    # mprotect on the upper half: the lower half is the old region cut short.
    assert pair_by_address([whole], [low, high]) == (
        [],
        [high],
        [RegionChange(whole, low, ("size", "end", "rss"))],
    )
    # By identity, both halves have the old one's identity: the first in address order
    # pairs, the other is new.
    assert pair_by_identity([whole], [high, low]) == (
        [],
        [high],
        [RegionChange(whole, low, ("size", "rss"))],
    )


def test_a_change_only_in_what_is_not_compared_is_no_change() -> None:
    # Recorded once without smaps: rss, pss and swap are left out of the comparison.
    fields = tuple(f for f in ADDRESS_FIELDS if f not in SMAPS_COMPARED)
    touched = HEAP._replace(rss=0, pss=0, swap=0)
    assert pair_by_address([HEAP], [touched], fields) == ([], [], [])
    assert pair_by_address([HEAP], [touched]) == (
        [],
        [],
        [RegionChange(HEAP, touched, ("rss", "pss", "swap"))],
    )


# --- identical repeated regions --------------------------------------------------------


def guards(*starts: int) -> list[Region]:
    return [region(s, s + PAGE, "guard", None, "---p", **dict.fromkeys(SMAPS, 0)) for s in starts]


def test_identical_repeated_regions_pair_in_address_order() -> None:
    before = guards(0x7F0000000000, 0x7F0000100000, 0x7F0000200000)
    after = guards(0x7E1000000000, 0x7E1000100000, 0x7E1000200000)
    assert pair_by_identity(before, after) == ([], [], [])
    # One fewer: the last in address order is the one gone.
    assert pair_by_identity(before, after[:2]) == ([before[2]], [], [])
    # One more: the last is the one new, whatever order they were handed in.
    extra = guards(0x7E1000300000)
    assert pair_by_identity(before, [*extra, *reversed(after)]) == ([], extra, [])
    # The middle one made readable is the change, paired with the middle one.
    opened = [after[0], after[1]._replace(perms="r--p"), after[2]]
    assert pair_by_identity(before, opened) == (
        [],
        [],
        [RegionChange(before[1], opened[1], ("perms",))],
    )


def test_identical_repeated_regions_by_address_lose_the_right_one() -> None:
    before = guards(0x7F0000000000, 0x7F0000100000, 0x7F0000200000)
    assert pair_by_address(before, [before[0], before[2]]) == ([before[1]], [], [])


# --- identity pairing across randomised addresses --------------------------------------


def randomised(layout: list[Region], rng: random.Random) -> list[Region]:
    """The same layout as another run would have it, region for region: each object
    (program, library, heap, stack) moved by a page-aligned offset of its own, never 0."""
    shifts: dict[str | None, int] = {}
    moved = []
    for r in layout:
        key = r.path if r.path else r.kind
        shift = shifts.setdefault(key, rng.randrange(1, 1 << 28) * PAGE)
        moved.append(r._replace(start=r.start + shift, end=r.end + shift))
    return moved


def program_layout() -> list[Region]:
    libc = "/usr/lib/x86_64-linux-gnu/libc.so.6"
    base = 0x7F3A10000000
    return [
        TEXT,
        DATA,
        HEAP,
        region(base, base + 0x28000, "lib-rodata", libc, "r--p", 0),
        region(base + 0x28000, base + 0x1BD000, "lib-text", libc, "r-xp", 0x28000),
        region(base + 0x1BD000, base + 0x215000, "lib-rodata", libc, "r--p", 0x1BD000),
        region(base + 0x215000, base + 0x219000, "lib-data", libc, "rw-p", 0x214000),
        region(base + 0x219000, base + 0x226000, "lib-bss", None, "rw-p"),
        *guards(0x7F3A20000000, 0x7F3A20801000),
        region(0x7F3A20001000, 0x7F3A20801000, "thread-stack", None, "rw-p"),
        region(0x7F3A20802000, 0x7F3A21002000, "thread-stack", None, "rw-p"),
        STACK,
        region(0x7FFC3A1F0000, 0x7FFC3A1F2000, "vdso", "[vdso]", "r-xp"),
    ]


@pytest.mark.parametrize("seed", range(8))
def test_identity_pairing_sees_through_randomised_addresses(seed: int) -> None:
    rng = random.Random(seed)
    before = program_layout()
    after = randomised(before, rng)
    shuffled = rng.sample(after, len(after))  # the order they come in does not matter
    assert pair_by_identity(before, shuffled) == ([], [], [])
    # By address, nothing is the same region: that is why two processes pair by identity.
    assert pair_by_address(before, shuffled) == (
        before,
        sorted(after, key=lambda r: r.start),
        [],
    )

    # One region of the second run holds more: that one, and only that, has changed.
    i = rng.randrange(len(after))
    touched = after[i]._replace(rss=SMAPS["rss"] + PAGE)
    after[i] = touched
    assert pair_by_identity(before, rng.sample(after, len(after))) == (
        [],
        [],
        [RegionChange(before[i], touched, ("rss",))],
    )


# --- the renderers -----------------------------------------------------------------------


def snapshot(id_: int, regions: list[Region], has_smaps: bool = True, pid: int = 4242) -> Snapshot:
    kinds = totals_by_kind(columns_of(regions), [r.kind for r in regions])
    return Snapshot(
        id=id_,
        process_id=1,
        seq=id_,
        taken_at=datetime(2026, 1, 2, 3, 4, 5 + id_, tzinfo=timezone.utc),
        identity=ProcessIdentity(host="box", boot_id="b00t", pid=pid, start_ticks=777),
        command="prog",
        cmdline=("prog", "--serve"),
        exe="/usr/bin/prog",
        label=None,
        page_size=PAGE,
        kernel="6.18.0",
        source="live",
        has_smaps=has_smaps,
        totals=combine(kinds.values()),
        kinds=kinds,
    )


LIBZ = region(0x7F3A30000000, 0x7F3A30014000, "lib-text", "/usr/lib/libz.so.1.2.13", "r-xp", 0x2000)
RWX = region(0x7F3A40000000, 0x7F3A40001000, "anon", None, "rwxp")


def a_diff() -> Diff:
    """A heap that grew, a library loaded, a writable and executable page, a stack that
    grew down, libc's text made executable from a readable mapping."""
    before = [TEXT, DATA, HEAP, LIBC._replace(perms="r--p"), STACK]
    grown = HEAP._replace(end=HEAP.end + 0x100000, rss=SMAPS["rss"] + 0x100000)
    deeper = STACK._replace(start=STACK.start - 0x2000)
    after = [TEXT, DATA, grown, LIBC, LIBZ, RWX, deeper]
    return diff_snapshots(
        snapshot(1, before),
        snapshot(2, after),
        before,
        after,
        "address",
        libraries(before),
        libraries(after),
    )


def expected_region_json(r: Region) -> dict[str, Any]:
    """A region as the JSON names it, written out field by field (not by the renderer)."""
    return {
        "start": hex(r.start),
        "end": hex(r.end),
        "size": r.end - r.start,
        "pages": (r.end - r.start) // PAGE,
        "perms": r.perms,
        "offset": r.offset,
        "device": r.dev,
        "inode": r.inode,
        "path": r.path,
        "deleted": r.deleted,
        "kind": r.kind,
        "rss": r.rss,
        "pss": r.pss,
        "shared_clean": r.shared_clean,
        "shared_dirty": r.shared_dirty,
        "private_clean": r.private_clean,
        "private_dirty": r.private_dirty,
        "referenced": r.referenced,
        "anonymous": r.anonymous,
        "anon_huge": r.anon_huge,
        "swap": r.swap,
        "swap_pss": r.swap_pss,
        "locked": r.locked,
        "vm_flags": r.vm_flags,
    }


def test_diff_json_names_every_field_in_its_place() -> None:
    from memsnap.render.diff import diff_json
    from memsnap.render.snapshot import dumps

    d = a_diff()
    doc = json.loads(dumps(diff_json(d)))
    assert doc["match"] == "address"
    assert doc["libraries"] == {"loaded": ["/usr/lib/libz.so.1.2.13"], "unloaded": []}
    assert doc["heap"] == {
        "before": {"size": 0x21000, "rss": HEAP.rss},
        "after": {"size": 0x121000, "rss": SMAPS["rss"] + 0x100000},
        "delta": {"size": 0x100000, "rss": 0x100000},
    }
    assert doc["stack"]["delta"] == {"size": 0x2000, "rss": 0}
    assert doc["regions"]["added"] == [expected_region_json(LIBZ), expected_region_json(RWX)]
    assert doc["regions"]["removed"] == []
    changed = [(c["after"]["kind"], c["changes"]) for c in doc["regions"]["changed"]]
    assert changed == [
        ("heap", ["size", "end", "rss"]),
        ("lib-text", ["perms"]),
        ("stack", ["size", "start"]),
    ]
    (libc,) = [c for c in doc["regions"]["changed"] if c["after"]["kind"] == "lib-text"]
    assert libc["before"] == expected_region_json(LIBC._replace(perms="r--p"))
    assert libc["after"] == expected_region_json(LIBC)
    assert doc["callouts"]["writable_executable"] == [expected_region_json(RWX)]
    assert doc["callouts"]["new_executable"] == [
        expected_region_json(LIBZ),
        expected_region_json(RWX),
    ]
    assert [m["after"]["perms"] for m in doc["callouts"]["made_executable"]] == ["r-xp"]
    assert doc["totals"]["delta"]["size"] == 0x100000 + 0x2000 + LIBZ.size + RWX.size
    assert doc["from"]["id"] == 1 and doc["to"]["id"] == 2


def cells(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


def test_diff_table_says_each_change_once_in_its_place() -> None:
    from memsnap.render.diff import diff_table

    lines = diff_table(a_diff(), "plain", color=False, all_regions=True).splitlines()
    assert lines[0] == "diff 1 -> 2: pid 4242 (prog) on box"
    assert lines[1].endswith(" (1s later); same process: matched by address")
    start = lines.index("libraries: 1 loaded, 0 unloaded")
    assert lines[start + 1 : start + 3] == ["  + /usr/lib/libz.so.1.2.13", ""]
    # heap and stack, then the kinds largest change first, then the total.
    movements = [
        cells(line) for line in lines[start + 3 :] if line[:1] in ("h", "s", "l", "a", "t")
    ]
    assert movements == [
        ["heap", "132.0 KiB", "1.1 MiB", "+1.0 MiB", "44.0 KiB", "1.0 MiB", "+1.0 MiB"],
        ["stack", "132.0 KiB", "140.0 KiB", "+8.0 KiB", "44.0 KiB", "44.0 KiB", "0 B"],
        ["heap", "132.0 KiB", "1.1 MiB", "+1.0 MiB", "44.0 KiB", "1.0 MiB", "+1.0 MiB"],
        ["lib-text", "1.6 MiB", "1.7 MiB", "+80.0 KiB", "44.0 KiB", "88.0 KiB", "+44.0 KiB"],
        ["stack", "132.0 KiB", "140.0 KiB", "+8.0 KiB", "44.0 KiB", "44.0 KiB", "0 B"],
        ["anon", "0 B", "4.0 KiB", "+4.0 KiB", "0 B", "44.0 KiB", "+44.0 KiB"],
        ["total", "1.9 MiB", "3.0 MiB", "+1.1 MiB", "220.0 KiB", "1.3 MiB", "+1.1 MiB"],
    ]
    callouts = [line for line in lines if line.startswith("! ")]
    assert callouts == [
        "! writable and executable: 0x7f3a40000000-0x7f3a40001000 rwxp anon 4.0 KiB",
        "! new executable memory: 0x7f3a30000000-0x7f3a30014000 r-xp lib-text 80.0 KiB "
        "/usr/lib/libz.so.1.2.13",
        "! made executable (r--p -> r-xp): 0x7f3a10028000-0x7f3a101bd000 r-xp lib-text 1.6 MiB "
        "/usr/lib/libc.so.6",
    ]
    count = lines.index("regions: 2 added, 0 removed, 3 changed")
    assert cells(lines[count + 1]) == [
        "kind",
        "start-end",
        "size",
        "perms",
        "rss",
        "path",
        "changes",
    ]
    # Added first, then permission changes (newly executable first), then sizes.
    assert [cells(line) for line in lines[count + 2 :]] == [
        [
            "+",
            "lib-text",
            "7f3a30000000-7f3a30014000",
            "80.0 KiB",
            "r-xp",
            "44.0 KiB",
            "/usr/lib/libz.so.1.2.13",
            "added",
        ],
        ["+", "anon", "7f3a40000000-7f3a40001000", "4.0 KiB", "rwxp", "44.0 KiB", "added"],
        [
            "~",
            "lib-text",
            "7f3a10028000-7f3a101bd000",
            "1.6 MiB",
            "r--p->r-xp",
            "44.0 KiB",
            "/usr/lib/libc.so.6",
            "perms",
        ],
        [
            "~",
            "heap",
            "55d001000000-55d001121000",
            "+1.0 MiB -> 1.1 MiB",
            "rw-p",
            "+1.0 MiB -> 1.0 MiB",
            "[heap]",
            "size,end,rss",
        ],
        [
            "~",
            "stack",
            "7ffc39ffe000-7ffc3a021000",
            "+8.0 KiB -> 140.0 KiB",
            "rw-p",
            "44.0 KiB",
            "[stack]",
            "size,start",
        ],
    ]

"""Importing saved texts (`record --from-file`): what a bug report's attachment can be.

Line ends that travelled through Windows, files that are not maps at all, values no
kernel prints and no column holds, and the options that say whose text it is.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import Cli, Result, capture_path, fixture_text
from memsnap.errors import ParseError
from memsnap.parse import parse_lines, parse_text

LOCAL_SMAPS = "local-linux6.18-x86_64-c-program-sysv-memfd-deleted-newline-rwx-thread-smaps.txt"
LOCAL_MAPS = "local-linux6.18-x86_64-c-program-sysv-memfd-deleted-newline-rwx-thread-maps.txt"
ROLLUP = "prometheus-procfs-smaps_rollup-x86_64.txt"
# The longest path text the kernel prints: PATH_MAX - 1 bytes, each escaped as `\ooo`,
# then " (deleted)".
MAX_PATH_TEXT = 4 * 4095 + len(" (deleted)")


def one_line_error(result: Result, code: int) -> str:
    assert result.exit_code == code, result
    err = str(result.stderr)
    assert "Traceback" not in err and 1 <= len(err.strip().splitlines()) <= 2, err
    assert result.stdout == ""
    return err


def nothing_stored(cli: Cli) -> bool:
    listed = cli("list", "--format", "json")
    if listed.exit_code == 1:  # refused before the database was even created
        return "nothing recorded" in listed.stderr
    return bool(json.loads(listed.stdout)["snapshots"] == [])


def regions_of(cli: Cli, snapshot: int) -> list[dict[str, object]]:
    doc = json.loads(cli("show", str(snapshot), "--format", "json").stdout)
    return list(doc["regions"])


# --- CRLF -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [LOCAL_SMAPS, LOCAL_MAPS])
def test_crlf_text_imports_as_its_lf_original(sqlite_cli: Cli, name: str) -> None:
    text = fixture_text(name)
    assert "\r" not in text
    crlf = text.replace("\n", "\r\n").encode("utf-8", "surrogateescape")
    assert sqlite_cli("record", "--from-file", str(capture_path(name)), "--pid", "7").exit_code == 0
    done = sqlite_cli("record", "--from-file", "-", "--pid", "7", input=crlf)
    assert done.exit_code == 0, done.stderr
    lf, converted = regions_of(sqlite_cli, 1), regions_of(sqlite_cli, 2)
    assert converted == lf
    kinds = {r["kind"] for r in converted}
    assert {"heap", "stack", "text"} <= kinds
    assert not any("\r" in str(r["path"]) for r in converted)


def test_crlf_on_both_parser_paths() -> None:
    text = fixture_text(LOCAL_SMAPS)
    lines = text.rstrip("\n").split("\n")
    crlf = text.replace("\n", "\r\n")
    # The fast bytes path (a regular smaps text)...
    assert parse_text(crlf, saved=True) == parse_text(text)
    # ...and the line parser, given lines that still end in CR.
    assert parse_lines([line + "\r" for line in lines], saved=True) == parse_lines(lines)
    # An irregular text goes to the line parser from parse_text as well.
    irregular = "00400000-00401000 r-xp 00000000 08:02 1 /bin/x\r\nRss: 4 kB\r\nPss: 4 kB\r\n"
    irregular += "00401000-00402000 rw-p 00001000 08:02 1 /bin/x\r\nPss: 8 kB\r\nRss: 8 kB\r\n"
    parsed = parse_text(irregular, saved=True)
    assert [(m.path, m.rss, m.pss) for m in parsed.mappings] == [
        ("/bin/x", 4096, 4096),
        ("/bin/x", 8192, 8192),
    ]


def test_a_live_text_keeps_a_trailing_cr_in_a_name() -> None:
    # Only a saved text's line ends are a transport artefact: the kernel prints a name
    # ending in CR as it is.
    (m,) = parse_text("00400000-00401000 r--p 00000000 08:01 12   /tmp/odd\r\n").mappings
    assert m.path == "/tmp/odd\r"


# --- what is not a map -------------------------------------------------------------------


def test_smaps_rollup_is_refused_saying_what_it_is(cli: Cli) -> None:
    err = one_line_error(cli("record", "--from-file", str(capture_path(ROLLUP)), "--pid", "5"), 1)
    assert "line 1" in err and "smaps_rollup" in err and "not a memory map" in err
    assert nothing_stored(cli)


# --- values too big ------------------------------------------------------------------------

TOO_BIG = [
    (
        "0-ffffffffffffffff rw-p 00000000 00:00 0\n0-ffffffffffffffff rw-p 00000000 00:00 0\n",
        2,
        "total size",
    ),
    (
        "00400000-00401000 rw-p 00000000 00:00 0\nRss: 99999999999999999999 kB\n",
        2,
        "too big",
    ),
    # 2**53 kB is 2**63 bytes: one past the column.
    ("00400000-00401000 rw-p 00000000 00:00 0\nRss: 9007199254740992 kB\n", 2, "too big"),
    # Each fits; their sum does not.
    (
        "00400000-00401000 rw-p 00000000 00:00 0\nRss: 4503599627370496 kB\n"
        "00401000-00402000 rw-p 00000000 00:00 0\nRss: 4503599627370496 kB\n",
        4,
        "total rss",
    ),
    # Private clean + private dirty is the snapshot's USS.
    (
        "00400000-00401000 rw-p 00000000 00:00 0\nPrivate_Clean: 4503599627370496 kB\n"
        "Private_Dirty: 4503599627370496 kB\n",
        3,
        "total uss",
    ),
]


@pytest.mark.parametrize(("text", "lineno", "why"), TOO_BIG)
def test_values_too_big_to_store_name_their_line(
    cli: Cli, text: str, lineno: int, why: str
) -> None:
    err = one_line_error(cli("record", "--from-file", "-", "--pid", "3", input=text), 1)
    assert f"line {lineno}:" in err and why in err
    assert nothing_stored(cli)


def test_the_largest_storable_values_are_stored(cli: Cli) -> None:
    text = (
        "0-8000000000000000 rw-p 00000000 00:00 0\nRss: 9007199254740991 kB\n"
        "8000000000000000-ffffffffffffffff rw-p ffffffffffffffff ff:ff 18446744073709551615\n"
    )
    done = cli("record", "--from-file", "-", "--pid", "3", input=text)
    assert done.exit_code == 0, done.stderr
    doc = json.loads(cli("show", "1", "--format", "json").stdout)
    assert doc["snapshot"]["totals"]["size"] == 2**64 - 1
    assert doc["snapshot"]["totals"]["rss"] == 9007199254740991 * 1024
    assert doc["regions"][1]["inode"] == 2**64 - 1


@pytest.mark.parametrize("digit", ["²", "٣"])
def test_digits_that_are_not_ascii_are_not_a_size(digit: str) -> None:
    with pytest.raises(ParseError, match="not a size") as info:
        parse_text(f"00400000-00401000 rw-p 00000000 00:00 0\nRss: {digit} kB\n")
    assert info.value.lineno == 2


def test_a_path_longer_than_the_kernel_prints_is_refused(cli: Cli, tmp_path: Path) -> None:
    head = "00400000-00401000 r--p 00000000 08:01 12   /"
    longest = head + "\\012" * ((MAX_PATH_TEXT - 1) // 4) + "x" * ((MAX_PATH_TEXT - 1) % 4)
    assert len(longest) - len(head) + 1 == MAX_PATH_TEXT
    (m,) = parse_text(longest).mappings  # the longest a kernel can print is fine
    assert m.path is not None
    big = tmp_path / "huge.txt"
    big.write_text(
        "00400000-00401000 r-xp 00000000 08:01 12   /bin/ok\n" + head + "y" * 5_000_000 + "\n"
    )
    err = one_line_error(cli("record", "--from-file", str(big), "--pid", "3"), 1)
    # Streamed (a big file): the line is refused before it is read whole.
    assert "line 2:" in err and "longer than the kernel prints" in err
    assert len(err) < 400  # the line is shown cut short
    small = tmp_path / "small.txt"
    small.write_text(head + "y" * (MAX_PATH_TEXT + 1) + "\n")
    err = one_line_error(cli("record", "--from-file", str(small), "--pid", "3"), 1)
    assert "line 1:" in err and "a path longer than the kernel prints" in err
    assert len(err) < 400
    assert nothing_stored(cli)


# --- options --------------------------------------------------------------------------------


@pytest.mark.parametrize("pid", ["-1", "0", "4194305", "99999999999"])
def test_import_pid_out_of_range_is_a_usage_error(sqlite_cli: Cli, pid: str) -> None:
    err = one_line_error(
        sqlite_cli("record", "--from-file", str(capture_path(LOCAL_MAPS)), "--pid", pid), 2
    )
    assert "--pid" in err
    assert nothing_stored(sqlite_cli)


def test_import_pid_limits_are_accepted(sqlite_cli: Cli) -> None:
    for pid in ("1", "4194304"):
        path = str(capture_path(LOCAL_MAPS))
        assert sqlite_cli("record", "--from-file", path, "--pid", pid).exit_code == 0


def test_no_smaps_with_from_file_stores_no_sizes(sqlite_cli: Cli) -> None:
    path = str(capture_path(LOCAL_SMAPS))
    done = sqlite_cli("record", "--from-file", path, "--pid", "8", "--no-smaps")
    assert done.exit_code == 0, done.stderr
    assert sqlite_cli("record", "--from-file", str(capture_path(LOCAL_MAPS)), "--pid", "8")
    doc = json.loads(sqlite_cli("show", "1", "--format", "json").stdout)
    assert doc["snapshot"]["has_smaps"] is False
    assert doc["snapshot"]["totals"]["rss"] is None
    assert all(r["rss"] is None and r["vm_flags"] is None for r in doc["regions"])
    # The same layout as the maps text of the same moment.
    assert regions_of(sqlite_cli, 1) == regions_of(sqlite_cli, 2)


def test_taken_at_and_host_id(cli: Cli) -> None:
    path = str(capture_path(LOCAL_MAPS))
    done = cli(
        "record",
        "--from-file",
        path,
        "--pid",
        "9",
        "--taken-at",
        "2026-11-20T08:30:00+00:00",
        "--host-id",
        "web-7",
    )
    assert done.exit_code == 0, done.stderr
    snap = json.loads(cli("show", "1", "--format", "json").stdout)["snapshot"]
    assert snap["taken_at"] == "2026-11-20T08:30:00+00:00"
    assert snap["host"] == "web-7"
    found = cli("show", "--at", "2026-11-20T09:00:00+00:00", "--format", "json")
    assert json.loads(found.stdout)["snapshot"]["id"] == 1
    assert cli("record", "--from-file", path, "--pid", "9").exit_code == 0
    default = json.loads(cli("show", "2", "--format", "json").stdout)["snapshot"]
    assert default["host"] == "(imported)"


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--taken-at", "half past nine"], "cannot read the time"),
        (["--host-id", ""], "--host-id"),
        (["--host-id", "h" * 256], "--host-id"),
    ],
)
def test_bad_import_options_are_usage_errors(
    sqlite_cli: Cli, extra: list[str], needle: str
) -> None:
    path = str(capture_path(LOCAL_MAPS))
    err = one_line_error(sqlite_cli("record", "--from-file", path, "--pid", "3", *extra), 2)
    assert needle in err
    assert nothing_stored(sqlite_cli)


@pytest.mark.parametrize("extra", [["--taken-at", "now"]])
def test_import_options_need_from_file(sqlite_cli: Cli, extra: list[str]) -> None:
    err = one_line_error(sqlite_cli("record", "1", *extra), 2)
    assert "--from-file" in err


def test_an_import_is_its_own_process(cli: Cli) -> None:
    path = str(capture_path(LOCAL_MAPS))
    for _ in range(2):
        assert cli("record", "--from-file", path, "--pid", "11").exit_code == 0
    doc = json.loads(cli("diff", "1", "2", "--format", "json").stdout)
    # Same pid, same host, same text: still never proven the same process.
    assert doc["match"] == "identity"
    one, two = (json.loads(cli("show", i, "--format", "json").stdout) for i in ("1", "2"))
    assert one["snapshot"]["seq"] == two["snapshot"]["seq"] == 1


# --- streamed imports: the same snapshot as a whole one -------------------------------------

ALL = sorted(p.name for p in capture_path(LOCAL_MAPS).parent.glob("*.txt"))
MAPS_CAPTURES = [n for n in ALL if n != ROLLUP and "empty" not in n]


def snapshot_doc(cli: Cli, snapshot: int) -> dict[str, object]:
    doc = json.loads(cli("show", str(snapshot), "--format", "json").stdout)
    for volatile in ("id", "taken_at"):
        del doc["snapshot"][volatile]
    return dict(doc)


@pytest.mark.parametrize("name", MAPS_CAPTURES)
@pytest.mark.parametrize("passes", [2, 3])
def test_a_streamed_import_is_the_whole_import(
    sqlite_cli: Cli, monkeypatch: pytest.MonkeyPatch, name: str, passes: int
) -> None:
    import memsnap.capture.record
    import memsnap.classify

    if passes == 3:  # too many objects to keep in pass 1: a pass of their own
        monkeypatch.setattr(memsnap.classify, "MAX_SEEN_OBJECTS", 0)
    path = str(capture_path(name))
    assert sqlite_cli("record", "--from-file", path, "--pid", "5").exit_code == 0
    whole = snapshot_doc(sqlite_cli, 1)
    monkeypatch.setattr(memsnap.capture.record, "IN_MEMORY_IMPORT_BYTES", 0)
    monkeypatch.setattr(memsnap.capture.record, "IMPORT_PIECE_BYTES", 700)  # many pieces
    done = sqlite_cli("record", "--from-file", path, "--pid", "5")
    starts = [m.start for m in parse_text(fixture_text(name)).mappings]
    if starts != sorted(starts):
        err = one_line_error(done, 1)
        assert "out of address order" in err
        return
    assert done.exit_code == 0, done.stderr
    assert snapshot_doc(sqlite_cli, 2) == whole


def test_a_streamed_import_refuses_what_a_whole_one_refuses(
    sqlite_cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    import memsnap.capture.record

    monkeypatch.setattr(memsnap.capture.record, "IN_MEMORY_IMPORT_BYTES", 0)
    monkeypatch.setattr(memsnap.capture.record, "IMPORT_PIECE_BYTES", 200)
    for text, lineno, why in TOO_BIG:
        err = one_line_error(sqlite_cli("record", "--from-file", "-", "--pid", "3", input=text), 1)
        assert f"line {lineno}:" in err and why in err
    good = fixture_text(LOCAL_SMAPS)
    bad = good + "this is not a maps line\n"
    err = one_line_error(sqlite_cli("record", "--from-file", "-", "--pid", "3", input=bad), 1)
    assert f"line {good.count(chr(10)) + 1}:" in err
    rollup = fixture_text(ROLLUP)
    err = one_line_error(sqlite_cli("record", "--from-file", "-", "--pid", "3", input=rollup), 1)
    assert "smaps_rollup" in err
    crlf = good.replace("\n", "\r\n")
    assert sqlite_cli("record", "--from-file", "-", "--pid", "3", input=crlf).exit_code == 0
    assert sqlite_cli("record", "--from-file", "-", "--pid", "3", input=good).exit_code == 0
    assert snapshot_doc(sqlite_cli, 1)["regions"] == snapshot_doc(sqlite_cli, 2)["regions"]
    nul = good[:500] + "\0" + good[500:]
    err = one_line_error(
        sqlite_cli("record", "--from-file", "-", "--pid", "3", input=nul.encode()), 1
    )
    assert "NUL" in err
    assert len(json.loads(sqlite_cli("list", "--format", "json").stdout)["snapshots"]) == 2


# --- reading a huge snapshot: streamed, the same text -----------------------------------

SHOWN = [LOCAL_SMAPS, "aosp-libmeminfo-smaps_short-android-x86_64.txt", LOCAL_MAPS]


@pytest.mark.parametrize("name", SHOWN)
@pytest.mark.parametrize(
    "options",
    [
        ["--format", "json"],
        ["--format", "csv"],
        [],
        ["--style", "plain"],
        ["--top-down", "--format", "json"],
        ["--kind", "anon", "--kind", "lib-text", "--format", "csv"],
        ["--kind", "lib-text", "--top-down"],
        ["--kind", "heap", "--format", "json"],  # one row
        ["--kind", "vsyscall", "--format", "json"],  # none
        ["--kind", "vsyscall", "--format", "csv"],
        ["--style", "grid"],  # not laid out a row at a time: the whole layout is read
    ],
)
def test_a_streamed_show_prints_what_a_whole_show_prints(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, name: str, options: list[str]
) -> None:
    import memsnap.store.reader

    assert cli("record", "--from-file", str(capture_path(name)), "--pid", "5").exit_code == 0
    whole = cli("show", "1", *options)
    assert whole.exit_code == 0, whole.stderr
    monkeypatch.setattr(memsnap.store.reader, "STREAM_REGIONS", 0)
    monkeypatch.setattr(memsnap.store.reader, "_STREAM_BATCH", 3)  # many batches
    streamed = cli("show", "1", *options)
    assert streamed.exit_code == 0, streamed.stderr
    assert streamed.stdout == whole.stdout


def test_a_streamed_table_in_colour_is_the_whole_table(
    sqlite_cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    import memsnap.cli.show_cmd
    import memsnap.store.reader

    monkeypatch.setattr(memsnap.cli.show_cmd, "use_color", lambda: True)
    assert sqlite_cli("record", "--from-file", str(capture_path(LOCAL_SMAPS)), "--pid", "5")
    whole = sqlite_cli("show", "1")
    monkeypatch.setattr(memsnap.store.reader, "STREAM_REGIONS", 0)
    monkeypatch.setattr(memsnap.store.reader, "_STREAM_BATCH", 4)
    streamed = sqlite_cli("show", "1")
    assert "\x1b[" in whole.stdout and "legend:" in whole.stdout
    assert streamed.stdout == whole.stdout


@pytest.mark.parametrize("name", SHOWN)
@pytest.mark.parametrize("kinds", [[], ["anon", "heap"]])
def test_a_summary_from_stored_totals_is_the_summary_of_the_regions(
    cli: Cli, name: str, kinds: list[str]
) -> None:
    from memsnap.render import snapshot as render
    from memsnap.store import reader as history
    from memsnap.store.database import open_database

    assert cli("record", "--from-file", str(capture_path(name)), "--pid", "5").exit_code == 0
    db = open_database(cli.url)
    try:
        with db.reading() as conn:
            snap = history.get_snapshot(conn, 1)
            regions = [r for r in history.layout(conn, snap) if not kinds or r.kind in kinds]
    finally:
        db.close()
    options = [x for k in kinds for x in ("--kind", k)]
    table = cli("show", "1", "--summary", *options).stdout
    assert table == render.summary_table(snap, regions, "simple", False) + "\n"
    doc = json.loads(cli("show", "1", "--summary", "--format", "json", *options).stdout)
    assert doc["kinds"] == render.summary_json(regions)
    csv_text = cli("show", "1", "--summary", "--format", "csv", *options).stdout
    assert csv_text == render.summary_csv(regions, snap.totals.size) + "\n"


def test_a_summary_reads_no_region(sqlite_cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    import memsnap.store.reader

    assert sqlite_cli("record", "--from-file", str(capture_path(LOCAL_SMAPS)), "--pid", "5")

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("a summary read the regions")

    monkeypatch.setattr(memsnap.store.reader, "layout", refuse)
    monkeypatch.setattr(memsnap.store.reader, "iter_layout", refuse)
    for fmt in ("table", "json", "csv"):
        done = sqlite_cli("show", "1", "--summary", "--format", fmt)
        assert done.exit_code == 0 and "heap" in done.stdout
    done = sqlite_cli("show", "1", "--summary", "--kind", "heap,stack", "--format", "json")
    assert set(json.loads(done.stdout)["kinds"]) == {"heap", "stack"}

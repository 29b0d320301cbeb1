"""A first record with its stages overlapped (capture/pipeline.py, `record.record_new`)
stores exactly the snapshot a record without the overlap stores, in one transaction.

The same text is recorded both ways through a fake /proc tree holding a real process's
smaps (read once from the C helper), so that both records read identical bytes: a live
process's pss moves between two reads. Pieces are made small here, so that a text of a
few thousand mappings goes through many of them (a real record uses 2 MiB pieces).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Cli, Target, _pg_schema
from fakeproc import MAPS, FakeProc, FakeProcess, FakeProcTree, smaps_of
from memsnap.capture import pipeline, record
from memsnap.capture.procfs import PF_EXITING, Proc, read_bytes
from memsnap.capture.record import record_pid
from memsnap.errors import ParseError, ProcessChanged, ProcessGone
from memsnap.store import writer
from memsnap.store.database import Database, open_database

FAKE_PID = 4242
THREAD_SYSCALL = "7 0x0 0x0 0x0 0x0 0x0 0x0 0x7ffc3a01fe40 0x55d000401234\n"
SMALL_PIECE = 64 << 10


def test_last_block_start_finds_the_last_whole_header() -> None:
    text = b"1000-2000 r--p 0 00:00 0\nRss: 4 kB\n3000-4000 rw-p 0 00:00 0\nRss: 8 kB\nPs"
    assert text[pipeline.last_block_start(text) :].startswith(b"3000-4000")
    # A header cut short is not yet a line: the block before it may still go on.
    assert pipeline.last_block_start(b"1000-2000 r--p 0 00:00 0\nRss: 4 kB\n30") == 0
    maps = b"1000-2000 r--p 0 00:00 0\n3000-4000 rw-p 0 00:00 0\n"
    assert maps[pipeline.last_block_start(maps) :] == b"3000-4000 rw-p 0 00:00 0\n"
    assert pipeline.last_block_start(b"Rss: 4 kB\n" * 300) == 0
    assert pipeline.last_block_start(b"") == 0


def fake_proc(tmp_path: Path, smaps: str, maps: str = MAPS) -> FakeProc:
    proc = FakeProc(FakeProcTree(tmp_path / "proc"))
    proc.tree.add(
        FakeProcess(FAKE_PID, maps=maps, smaps=smaps, threads={FAKE_PID + 1: THREAD_SYSCALL})
    )
    return proc


def shown(url: str, snapshot_id: int) -> Any:
    """`show --format json` of a snapshot, without the time it was taken."""
    out = Cli(url)("show", str(snapshot_id), "--format", "json")
    assert out.exit_code == 0, out.stderr
    doc = json.loads(out.stdout)
    del doc["snapshot"]["taken_at"]
    return doc


@pytest.fixture
def plain_url(db_url: str) -> Iterator[str]:
    """A second empty database of the same kind, for the record without the overlap."""
    if "://" not in db_url:
        yield db_url + ".plain"
        return
    yield from _pg_schema()


def record_both_ways(
    proc: Proc, pid: int, urls: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> tuple[Any, Any]:
    """The JSON of one record with the overlap and of one without, each into a fresh
    database (a second record of the same process would be an unchanged copy)."""
    docs = []
    # The overlapped record must not have fallen back to the whole-text path (which
    # stores the same snapshot, and so would hide a piece cut in the wrong place).
    whole_text = []
    plain = record.record_capture

    def spy(*args: Any, **kwargs: Any) -> Any:
        whole_text.append(os.environ["MEMSNAP_PIPELINE"])
        return plain(*args, **kwargs)

    monkeypatch.setattr(record, "record_capture", spy)
    for mode, url in zip(("1", "0"), urls, strict=True):
        monkeypatch.setenv("MEMSNAP_PIPELINE", mode)
        db = open_database(url)
        try:
            done = record_pid(db, proc, pid)
        finally:
            db.close()
        docs.append(shown(url, done.snapshot_id))
    assert whole_text == ["0"]
    return docs[0], docs[1]


@pytest.fixture(scope="module")
def helper_smaps(target_binary: Path) -> tuple[str, str]:
    """The maps and smaps of the C helper holding 3,000 more mappings (a real text)."""
    t = Target(target_binary)
    try:
        t.send("pages 3000")
        t.send("thread")
        smaps = read_bytes(f"/proc/{t.pid}/smaps").decode("utf-8", "surrogateescape")
        maps = read_bytes(f"/proc/{t.pid}/maps").decode("utf-8", "surrogateescape")
    finally:
        t.stop()
    return maps, smaps


@pytest.mark.live
def test_overlapped_record_stores_what_a_plain_one_stores(
    tmp_path: Path,
    db_url: str,
    plain_url: str,
    helper_smaps: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    maps, smaps = helper_smaps
    proc = fake_proc(tmp_path, smaps, maps)
    monkeypatch.setattr(pipeline, "PIECE_BYTES", SMALL_PIECE)
    overlapped, plain = record_both_ways(proc, FAKE_PID, (db_url, plain_url), monkeypatch)
    assert len(smaps) > 20 * SMALL_PIECE
    assert len(overlapped["regions"]) == maps.count("\n") > 3000
    assert overlapped == plain


@pytest.mark.parametrize("piece", [40, 150, 200, 333, 500])
def test_a_small_process_in_many_pieces_stores_the_same(
    tmp_path: Path, db_url: str, plain_url: str, monkeypatch: pytest.MonkeyPatch, piece: int
) -> None:
    proc = fake_proc(tmp_path, smaps_of(MAPS))
    # Pieces shorter than a line, than a block, or holding a few: the four blocks are
    # cut everywhere.
    monkeypatch.setattr(pipeline, "PIECE_BYTES", piece)
    overlapped, plain = record_both_ways(proc, FAKE_PID, (db_url, plain_url), monkeypatch)
    assert [r["kind"] for r in overlapped["regions"]] == ["text", "data", "heap", "stack"]
    assert overlapped == plain


# An object whose executable mapping lies far above its first one: while the text is
# still being read, the first is taken for a plain file; the whole text says it is the
# library's read-only data, and every row is written again with the right kinds.
FAR_APART = (
    "7f0000000000-7f0000001000 r--p 00000000 fd:02 77        /usr/lib/libfar.so\n"
    + "".join(
        f"{0x7F0000002000 + 0x2000 * i:x}-{0x7F0000003000 + 0x2000 * i:x} rw-p 00000000 00:00 0 \n"
        for i in range(400)
    )
    + "7f0001000000-7f0001001000 r-xp 00001000 fd:02 77        /usr/lib/libfar.so\n"
    + MAPS.split("\n", 2)[2].replace("55d001000000-55d001021000", "7f0002000000-7f0002021000")
)


def test_kinds_guessed_wrong_while_reading_are_written_right(
    tmp_path: Path, db_url: str, plain_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc = fake_proc(tmp_path, smaps_of(FAR_APART), FAR_APART)
    monkeypatch.setattr(pipeline, "PIECE_BYTES", 4096)
    overlapped, plain = record_both_ways(proc, FAKE_PID, (db_url, plain_url), monkeypatch)
    assert overlapped["regions"][0]["kind"] == "lib-rodata"
    assert overlapped == plain


def database_state(db: Database) -> list[tuple[Any, ...]]:
    """Every row of memsnap's tables, in order."""
    tables = ("processes", "snapshots", "regions", "snapshot_kinds", "paths")
    with db.reading() as conn:
        return [
            (t, *row)
            for t in tables
            for row in conn.exec_driver_sql(f"SELECT * FROM {t} ORDER BY 1").all()
        ]


def file_digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "failure",
    ["exec after the read", "exit after the read", "unparsable late line"],
)
def test_a_failed_overlapped_record_leaves_the_database_as_it_was(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    monkeypatch.setattr(pipeline, "PIECE_BYTES", 4096)
    monkeypatch.setenv("MEMSNAP_PIPELINE", "1")
    smaps = smaps_of(FAR_APART)
    if failure == "unparsable late line":
        # The last block's Rss: the pieces before it are written before it is met.
        at = smaps.rindex("Rss:")
        smaps = smaps[:at] + "Rss: 4x kB" + smaps[smaps.index("\n", at) :]
    proc = fake_proc(tmp_path, smaps, FAR_APART)
    # Something recorded before, which must stay as it is.
    proc.tree.add(FakeProcess(FAKE_PID + 7, start_ticks=99))
    db = open_database(db_url)
    record_pid(db, proc, FAKE_PID + 7)
    db.close()
    sqlite = "://" not in db_url
    before = file_digest(db_url) if sqlite else None
    db = open_database(db_url)
    rows = database_state(db)
    # The failure is met only once region rows were written in the transaction: the
    # stat after the read (and so the last block's parse) waits for the first INSERT.
    written = threading.Event()
    insert = writer._insert_values

    def spy(conn: Any, values: list[Any]) -> int:
        done = insert(conn, values)
        if done:
            written.set()
        return done

    monkeypatch.setattr(writer, "_insert_values", spy)
    change: dict[str, Any] = {}
    expected: type[Exception] = ParseError
    if failure == "exec after the read":
        change, expected = {"space": (0x400000, 0x401000, 0x7FFF0000)}, ProcessChanged
    elif failure == "exit after the read":
        flags = proc.tree.processes[FAKE_PID].flags | PF_EXITING
        change, expected = {"flags": flags}, ProcessGone

    def after_the_read() -> None:
        assert written.wait(30)
        if change:
            proc.tree.change(FAKE_PID, **change)

    proc.on_read("smaps", lambda: proc.on_read("stat", after_the_read))
    with pytest.raises(expected):
        record_pid(db, proc, FAKE_PID)
    assert written.is_set()
    assert database_state(db) == rows
    db.close()
    if sqlite:
        assert file_digest(db_url) == before


@pytest.mark.live
def test_a_reader_never_sees_part_of_a_snapshot(
    target: Target, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real process of 20,000 more mappings (7 pieces of 2 MiB), recorded while
    another connection counts the snapshots and the rows: it sees nothing, then all."""
    target.send("pages 20000")
    monkeypatch.setenv("MEMSNAP_PIPELINE", "1")
    maps = read_bytes(f"/proc/{target.pid}/maps").decode()
    db, watcher = open_database(db_url), open_database(db_url)
    seen: list[tuple[int, int]] = []
    stop = threading.Event()

    def count() -> tuple[int, int]:
        with watcher.reading() as conn:
            row = conn.exec_driver_sql(
                "SELECT (SELECT count(*) FROM snapshots), (SELECT count(*) FROM regions)"
            ).one()
        return int(row[0]), int(row[1])

    def poll() -> None:
        while not stop.is_set():
            seen.append(count())

    polling = threading.Thread(target=poll)
    polling.start()
    try:
        done = record_pid(db, Proc(), target.pid)
    finally:
        stop.set()
        polling.join()
    seen.append(count())
    db.close()
    watcher.close()
    regions = done.totals.regions
    assert regions == maps.count("\n") > 20000
    assert set(seen) == {(0, 0), (1, regions)} or set(seen) == {(1, regions)}
    assert len(seen) > 2


@pytest.mark.live
def test_a_live_process_recorded_both_ways(
    target: Target, db_url: str, plain_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same real process recorded with and without the overlap: the same regions
    and kinds (its sizes may move between the two reads: pss follows other processes),
    and the regions are the kernel's."""
    target.send("pages 6000")
    target.send("thread")
    monkeypatch.setattr(pipeline, "PIECE_BYTES", 256 << 10)
    overlapped, plain = record_both_ways(Proc(), target.pid, (db_url, plain_url), monkeypatch)
    fields = ("start", "end", "perms", "path", "kind", "device", "inode", "offset")
    layout = [tuple(r[f] for f in fields) for r in overlapped["regions"]]
    assert layout == [tuple(r[f] for f in fields) for r in plain["regions"]]
    maps = read_bytes(f"/proc/{target.pid}/maps").decode().splitlines()
    kernel = [line.split() for line in maps]
    assert [(r[0], r[1], r[2]) for r in layout] == [
        (*(f"0x{int(x, 16):x}" for x in f[0].split("-")), f[1]) for f in kernel
    ]

"""`memsnap push`: every local snapshot copied once, in seq order, a transaction each;
idempotent, resumable after SIGKILL, never changing the local database; the central
`show`, `diff` and `replay` the same documents as the local ones but for ids."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event

from conftest import Cli, Target, capture_path

pytestmark = pytest.mark.live

ANDROID_SMAPS = "aosp-libmeminfo-smaps_short-android-x86_64.txt"


@pytest.fixture
def local_url(tmp_path: Path) -> str:
    """The local database: a SQLite file beside (never the same as) the target."""
    return str(tmp_path / "local.db")


def without_ids(doc: Any) -> Any:
    """The document with every snapshot `id` left out (ids are each database's own)."""
    if isinstance(doc, dict):
        return {k: without_ids(v) for k, v in doc.items() if k != "id"}
    if isinstance(doc, list):
        return [without_ids(v) for v in doc]
    return doc


def snapshots(cli: Cli) -> list[dict[str, Any]]:
    result = cli("list", "--format", "json")
    if result.exit_code == 1 and "nothing recorded" in result.stderr:
        return []
    assert result.exit_code == 0, result
    found: list[dict[str, Any]] = json.loads(result.stdout)["snapshots"]
    return found


def key(snap: dict[str, Any]) -> tuple[Any, ...]:
    """A snapshot's identity across databases."""
    return (
        snap["host"],
        snap.get("boot_id"),
        snap["pid"],
        snap.get("start_ticks"),
        snap["seq"],
        snap["taken_at"],
    )


def by_key(cli: Cli) -> dict[tuple[Any, ...], int]:
    return {key(s): s["id"] for s in snapshots(cli)}


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def recorded_history(local: Cli, target: Target) -> None:
    """A live process changing its layout between snapshots, recorded under two host
    ids, an unchanged re-record, and an import."""
    pid = str(target.pid)
    assert local("record", pid).exit_code == 0
    for change in ("heap 1048576", "dlopen libz.so.1", "anon 4194304", "unmap-anon"):
        target.send(change)
        assert local("record", pid).exit_code == 0
    assert local("record", pid).exit_code == 0  # unchanged
    assert local("record", pid, "--host-id", "other-host").exit_code == 0
    maps = str(capture_path("aosp-libmeminfo-smaps_short-android-x86_64.txt"))
    assert local("record", "--from-file", maps, "--pid", "42").exit_code == 0


def push(local: Cli, url: str, *extra: str) -> dict[str, Any]:
    result = local("push", url, "--format", "json", *extra)
    assert result.exit_code == 0, result
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def test_push_copies_everything_once_and_reads_back_the_same(
    local_url: str, db_url: str, target: Target
) -> None:
    local, central = Cli(local_url), Cli(db_url)
    recorded_history(local, target)
    before = file_digest(Path(local_url))
    mine = by_key(local)
    assert len(mine) == 8
    first = push(local, db_url)
    assert (first["copied"], first["already_there"]) == (8, 0)
    assert first["format"] == 1 and "target" in first
    theirs = by_key(central)
    assert set(theirs) == set(mine)
    for k, local_id in mine.items():
        a = json.loads(local("show", str(local_id), "--format", "json").stdout)
        b = json.loads(central("show", str(theirs[k]), "--format", "json").stdout)
        assert without_ids(a) == without_ids(b)
    pid = str(target.pid)
    host = socket.gethostname()
    replays = [
        json.loads(c("replay", "--pid", pid, "--host", host, "--format", "json").stdout)
        for c in (local, central)
    ]
    assert without_ids(replays[0]) == without_ids(replays[1])
    assert len(replays[0]["steps"]) == 6
    # The same process on two hosts: a diff pairs by identity, and agrees too.
    ids = sorted(mine.items(), key=lambda kv: kv[1])
    last_live = [i for k, i in ids if k[0] == host][-1]
    other = next(i for k, i in ids if k[0] == "other-host")
    local_diff = json.loads(local("diff", str(last_live), str(other), "--format", "json").stdout)
    to_central = {mine_id: theirs[k] for k, mine_id in mine.items()}
    central_diff = json.loads(
        central(
            "diff", str(to_central[last_live]), str(to_central[other]), "--format", "json"
        ).stdout
    )
    assert local_diff["match"] == central_diff["match"] == "identity"
    assert without_ids(local_diff) == without_ids(central_diff)
    # Idempotent, and the local database was only read.
    again = push(local, db_url)
    assert (again["copied"], again["already_there"]) == (0, 8)
    assert by_key(central) == theirs
    assert file_digest(Path(local_url)) == before


def test_push_is_incremental(local_url: str, db_url: str, target: Target) -> None:
    local, central = Cli(local_url), Cli(db_url)
    pid = str(target.pid)
    for _ in range(2):
        assert local("record", pid).exit_code == 0
    assert push(local, db_url)["copied"] == 2
    target.send("heap 65536")
    assert local("record", pid).exit_code == 0
    doc = push(local, db_url)
    assert (doc["copied"], doc["already_there"]) == (1, 2)
    assert set(by_key(central)) == set(by_key(local))
    newest = [
        json.loads(c("show", "--at", "now", "--pid", pid, "--format", "json").stdout)
        for c in (local, central)
    ]
    assert without_ids(newest[0]) == without_ids(newest[1])


@contextmanager
def rows_read_from(path: Path) -> Iterator[Counter[str]]:
    """Count every row the SQLite file at `path` hands to memsnap, by what it is: a
    snapshot row (its columns hold seq and taken_at), a region row (start_addr), or
    another. A hook on every engine's new connections puts a row factory on those to
    that file."""
    counts: Counter[str] = Counter()

    def count(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> tuple[Any, ...]:
        names = {d[0] for d in cursor.description}
        shape = "snapshot" if {"seq", "taken_at"} <= names else "other"
        counts["region" if "start_addr" in names else shape] += 1
        return row

    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        if isinstance(dbapi_conn, sqlite3.Connection):
            main = dbapi_conn.execute("PRAGMA database_list").fetchone()[2]
            if main and Path(main) == path:
                dbapi_conn.row_factory = count

    event.listen(Engine, "connect", on_connect)
    try:
        yield counts
    finally:
        event.remove(Engine, "connect", on_connect)


def shares_kinds(url: str) -> dict[int, bool]:
    """Which snapshots of a SQLite file are one-row unchanged copies (sharing the
    per-kind totals of an earlier snapshot), by id."""
    with sqlite3.connect(url) as conn:
        return {i: k is not None for i, k in conn.execute("SELECT id, kinds_from FROM snapshots")}


def test_a_second_push_reads_only_what_is_new(
    local_url: str, tmp_path: Path, target: Target
) -> None:
    local = Cli(local_url)
    central_url = str(tmp_path / "central.db")
    pid = str(target.pid)
    # Maps only: an unrecorded Pss move cannot turn a re-record into a change.
    for change in (None, "heap 1048576", None, "anon 4194304", None, None):
        if change is not None:
            target.send(change)
        assert local("record", pid, "--no-smaps").exit_code == 0
    with rows_read_from(Path(local_url)) as first:
        assert push(local, central_url)["copied"] == 6
    listed = snapshots(local)
    copies = shares_kinds(local_url)
    assert sum(copies.values()) == 3  # seqs 3, 5 and 6
    assert first["snapshot"] == 6
    # An unchanged snapshot goes over as one row: its layout is not read.
    assert first["region"] == sum(s["totals"]["regions"] for s in listed if not copies[s["id"]])
    target.send("heap 65536")
    assert local("record", pid, "--no-smaps").exit_code == 0
    assert local("record", pid, "--no-smaps").exit_code == 0
    with rows_read_from(Path(local_url)) as second:
        doc = push(local, central_url)
    assert (doc["copied"], doc["already_there"]) == (2, 6)
    changed, unchanged = reversed(snapshots(local)[:2])
    # Only the two new snapshots, and the changed one's layout, are read: nothing of
    # the six before.
    assert second["snapshot"] == 2
    assert second["region"] == changed["totals"]["regions"]
    with rows_read_from(Path(local_url)) as third:
        assert push(local, central_url)["copied"] == 0
    assert (third["snapshot"], third["region"]) == (0, 0)
    # The target stores the copies as compactly, and reads each back the same.
    central = Cli(central_url)
    theirs = by_key(central)
    there = shares_kinds(central_url)
    for k, local_id in by_key(local).items():
        assert there[theirs[k]] == shares_kinds(local_url)[local_id]
        a = json.loads(local("show", str(local_id), "--format", "json").stdout)
        b = json.loads(central("show", str(theirs[k]), "--format", "json").stdout)
        assert without_ids(a) == without_ids(b)
        a = json.loads(local("show", str(local_id), "--summary", "--format", "json").stdout)
        b = json.loads(central("show", str(theirs[k]), "--summary", "--format", "json").stdout)
        assert without_ids(a) == without_ids(b)
    assert unchanged["seq"] == changed["seq"] + 1


def test_unchanged_since_says_what_the_layouts_say(local_url: str, target: Target) -> None:
    """The push's one-row copy rests on `unchanged_since`: for every two snapshots of a
    real process (also with the ones between them pruned), it says "unchanged" exactly
    when `show` gives the two the same regions; "move" shifts a resident page from one
    region to another, every total staying; "dlclose" only takes regions away."""
    from memsnap.model import SnapshotFilter
    from memsnap.store.database import open_database
    from memsnap.store.repository import Repository

    local = Cli(local_url)
    pid = str(target.pid)
    target.send("pair")
    steps = (None, "move", None, "dlopen libz.so.1", "dlclose", None, "heap 65536", "grow", None)
    for change in steps:
        if change is not None:
            target.send(change)
        assert local("record", pid).exit_code == 0

    def regions(snapshot_id: int) -> Any:
        return json.loads(local("show", str(snapshot_id), "--format", "json").stdout)["regions"]

    said: set[bool] = set()
    for prune in (None, "--keep-last"):
        if prune is not None:
            out = local("prune", prune, "3", "--pid", pid)  # keeps seqs 1 and the last 3
            assert out.exit_code == 0, out.stderr
        db = open_database(local_url)
        try:
            with Repository(db) as repo:
                snaps = sorted(repo.snapshots(SnapshotFilter(pid=target.pid)), key=lambda s: s.seq)
                for i, later in enumerate(snaps):
                    for earlier in snaps[:i]:
                        same = regions(earlier.id) == regions(later.id)
                        assert repo.unchanged_since(later, earlier.seq) is same, (
                            earlier.seq,
                            later.seq,
                        )
                        said.add(same)
        finally:
            db.close()
    assert said == {True, False}


def test_push_since(local_url: str, db_url: str, target: Target) -> None:
    local, central = Cli(local_url), Cli(db_url)
    pid = str(target.pid)
    assert local("record", pid).exit_code == 0
    assert local("record", pid).exit_code == 0
    second = snapshots(local)[0]
    doc = push(local, db_url, "--since", second["taken_at"])
    assert doc["copied"] == 1
    assert [s["seq"] for s in snapshots(central)] == [2]


KILLER = """
import os, signal, sys
import memsnap.store.push as p
original, calls = p.copy_snapshot, [0]
def copy_then_die(conn, **how):
    calls[0] += 1
    got = original(conn, **how)
    if calls[0] == int(os.environ["DIE_AT"]):
        os.kill(os.getpid(), signal.SIGKILL)  # inside the snapshot's transaction
    return got
p.copy_snapshot = copy_then_die
from memsnap.cli import app
sys.argv = ["memsnap", *sys.argv[1:]]
app()
"""


def test_a_push_killed_halfway_is_completed_by_the_next(
    local_url: str, db_url: str, target: Target, tmp_path: Path
) -> None:
    local, central = Cli(local_url), Cli(db_url)
    recorded_history(local, target)
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    killed = subprocess.run(
        [sys.executable, str(script), "--db", local_url, "push", db_url],
        env={**os.environ, "DIE_AT": "4"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -9, killed
    halfway = by_key(central)
    assert len(halfway) == 3  # the fourth snapshot's transaction died with the push
    doc = push(local, db_url)
    assert (doc["copied"], doc["already_there"]) == (5, 3)
    mine, theirs = by_key(local), by_key(central)
    assert set(theirs) == set(mine)
    for k, local_id in mine.items():
        a = json.loads(local("show", str(local_id), "--format", "json").stdout)
        b = json.loads(central("show", str(theirs[k]), "--format", "json").stdout)
        assert without_ids(a) == without_ids(b)


def test_push_errors_are_one_line(local_url: str, tmp_path: Path, target: Target) -> None:
    local = Cli(local_url)
    assert local("record", str(target.pid)).exit_code == 0
    same = local("push", local_url)
    assert same.exit_code == 2 and "another database" in same.stderr
    missing = Cli(str(tmp_path / "none.db"))("push", str(tmp_path / "t.db"))
    assert missing.exit_code == 1 and "nothing recorded" in missing.stderr
    assert not (tmp_path / "t.db").exists()


def test_push_never_upgrades_the_local_database(local_url: str, tmp_path: Path) -> None:
    # A database an older memsnap wrote (its schema one revision behind): a push reads
    # it and must not change it, so it refuses it rather than migrating it.
    from test_compact import _alembic

    from memsnap.store.database import open_database

    local = Cli(local_url)
    done = local("record", "--from-file", str(capture_path(ANDROID_SMAPS)), "--pid", "7")
    assert done.exit_code == 0, done.stderr
    db = open_database(local_url)
    try:
        with db.engine.begin() as conn:
            _alembic(conn, "0005_replaced")
    finally:
        db.close()
    files = sorted(tmp_path.glob("local.db*"))
    before = {f.name: f.read_bytes() for f in files}
    refused = local("push", str(tmp_path / "central.db"))
    assert refused.exit_code == 1
    assert refused.stderr.count("\n") == 1 and "older than this memsnap" in refused.stderr
    assert {f.name: f.read_bytes() for f in sorted(tmp_path.glob("local.db*"))} == before

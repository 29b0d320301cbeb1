"""`--output FILE` on the reading commands, and `--format html` through the CLI."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from test_render_html import DATA

from conftest import Cli, Result, Target


class Recorded(Cli):
    """A database holding two snapshots of one live process (a history), and its pid."""

    pid: int

    def __call__(self, *args: str, input: str | bytes | None = None) -> Result:
        return super().__call__(*(a.replace("{pid}", str(self.pid)) for a in args), input=input)


@pytest.fixture
def recorded(sqlite_url: str, target: Target) -> Recorded:
    cli = Recorded(sqlite_url)
    cli.pid = target.pid
    for change in ("heap 1000000", "anon 1048576"):
        done = cli("record", str(target.pid))
        assert done.exit_code == 0, done.stderr
        target.send(change)
    return cli


@pytest.mark.live
@pytest.mark.parametrize(
    "args",
    [
        ("list",),
        ("list", "--format", "json"),
        ("show", "1"),
        ("show", "1", "--format", "csv"),
        ("show", "1", "--map"),
        ("show", "1", "--format", "html"),
        ("diff", "1", "2", "--format", "json"),
        ("diff", "1", "2", "--format", "html"),
        ("replay", "--pid", "{pid}"),
        ("replay", "--pid", "{pid}", "--format", "html"),
        ("check", "2"),
        ("check", "2", "--format", "openmetrics"),
    ],
)
def test_output_writes_the_document_to_a_private_file(
    recorded: Recorded, tmp_path: Path, args: tuple[str, ...]
) -> None:
    out = tmp_path / "doc.out"
    done = recorded(*args, "-o", str(out))
    assert done.exit_code == 0, done.stderr
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and str(out) in done.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert out.read_text(encoding="utf-8") == recorded(*args).stdout


@pytest.mark.live
def test_output_replaces_a_planted_symlink_and_never_writes_through_it(
    recorded: Recorded, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    link = tmp_path / "page.html"
    link.symlink_to(victim)
    done = recorded("show", "1", "--format", "html", "--output", str(link))
    assert done.exit_code == 0, done.stderr
    assert victim.read_text() == "keep me\n"
    assert not link.is_symlink() and "<!doctype html>" in link.read_text()
    assert stat.S_IMODE(link.stat().st_mode) == 0o600


@pytest.mark.live
def test_an_existing_file_becomes_private_and_no_temporary_file_is_left(
    recorded: Recorded, tmp_path: Path
) -> None:
    out = tmp_path / "list.txt"
    out.write_text("old\n")
    out.chmod(0o644)
    assert recorded("list", "-o", str(out)).exit_code == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and "old" not in out.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["list.txt", "memsnap.db"]


@pytest.mark.live
def test_output_to_a_fifo_writes_into_it_and_leaves_it_a_fifo(
    recorded: Recorded, tmp_path: Path
) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    # The read end opened first, without waiting for a writer; a list fits its buffer.
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        done = recorded("list", "-o", str(fifo))
        assert done.exit_code == 0, done.stderr
        got = [os.read(reader, 1 << 16).decode()]
    finally:
        os.close(reader)
    assert stat.S_ISFIFO(fifo.lstat().st_mode)  # not replaced by a file
    assert got == [recorded("list").stdout]


@pytest.mark.live
@pytest.mark.parametrize(
    "where", ["missing-dir/page.html", "."], ids=["missing folder", "a directory"]
)
def test_an_unwritable_output_is_one_line_and_exit_1(
    recorded: Recorded, tmp_path: Path, where: str
) -> None:
    done = recorded("show", "1", "--format", "html", "-o", str(tmp_path / where))
    assert done.exit_code == 1
    assert done.stderr.startswith("memsnap: cannot write ") and done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr


@pytest.mark.live
def test_html_is_refused_where_there_is_no_page(recorded: Recorded) -> None:
    done = recorded("list", "--format", "html")
    assert done.exit_code == 2 and "html" in done.stderr


@pytest.mark.live
def test_html_pages_through_the_cli_carry_the_recorded_data(recorded: Recorded) -> None:
    shown = json.loads(recorded("show", "1", "--format", "json").stdout)
    page = recorded("show", "1", "--format", "html").stdout
    found = DATA.search(page)
    assert found is not None
    data = json.loads(found.group(1))
    starts = [row[0] for row in data["maps"][0]["regions"]]
    assert starts == [r["start"] for r in shown["regions"]]
    # --gaps adds rows to a table; the page draws the holes itself, never as regions.
    gapped = DATA.search(recorded("show", "1", "--gaps", "--format", "html").stdout)
    assert gapped is not None
    assert json.loads(gapped.group(1))["maps"] == data["maps"]
    diff = recorded("diff", "1", "2", "--format", "html")
    assert diff.exit_code == 0 and "<!doctype html>" in diff.stdout
    replay = recorded("replay", "--pid", "{pid}", "--format", "html")
    assert replay.exit_code == 0 and "replay: 2 snapshots" in replay.stdout

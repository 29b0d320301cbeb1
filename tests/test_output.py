"""What memsnap prints: hostile names made visible, and the presentation of tables."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Cli, Target

# Every control character a process or a database can hand memsnap: C0, DEL, C1.
C0 = "".join(map(chr, range(0x00, 0x20)))
C1 = "".join(map(chr, range(0x80, 0xA0)))
CONTROLS = C0 + "\x7f" + C1
# A name can hold any byte but NUL and '/': C0 and DEL, C1 as UTF-8, and C1 as raw bytes
# (not UTF-8 on their own).
NAME_BYTES = (
    bytes(range(0x01, 0x20)) + b"\x7f" + C1.encode() + bytes(range(0x80, 0xA0)) + b"\x1b[8m"
)
COMM = b"\x1b]0;pwned\x07\x1b[2J"  # 14 bytes: the kernel keeps 15
LABEL = CONTROLS[1:] + "\x1b[8mconcealed"  # an argument cannot carry NUL
SGR = re.compile("\x1b\\[([0-9;]*)m")

HOSTILE = r"""
import mmap, os, sys
with open("/proc/self/comm", "wb") as f:
    f.write(bytes.fromhex(sys.argv[1]))
name = bytes.fromhex(sys.argv[2])
def mapped(path, prot):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o700)
    os.ftruncate(fd, 8192)
    return mmap.mmap(fd, 8192, mmap.MAP_SHARED, prot)
keep = [mapped(name, mmap.PROT_READ)]
print("ready", os.getpid(), flush=True)
for line in sys.stdin:
    keep.append(mapped(name + b"2", mmap.PROT_READ | mmap.PROT_EXEC))
    print("ok", flush=True)
"""


@pytest.fixture
def hostile(tmp_path: Path) -> Iterator[Target]:
    """A process whose command, arguments and mapped file names carry every control."""
    name = bytes(tmp_path) + b"/" + NAME_BYTES
    argv = [sys.executable, "-c", HOSTILE, COMM.hex(), name.hex(), NAME_BYTES]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    target = Target.__new__(Target)
    target.proc = proc
    assert proc.stdout is not None
    ready = proc.stdout.readline().split()
    assert ready[0] == "ready", ready
    target.pid = int(ready[1])
    yield target
    target.stop()


def harmless(text: str, colours: bool = False) -> str:
    """`text`, having checked that no control character in it reaches a terminal but
    newlines between lines and (when `colours`) memsnap's own colour codes."""
    from memsnap.render import KIND_COLORS

    if colours:
        codes = set(SGR.findall(text))
        assert codes <= {*KIND_COLORS.values(), "0"}, codes
        text = SGR.sub("", text)
    raw = sorted({c for c in text if c in CONTROLS and c != "\n"})
    assert not raw, f"raw control characters {raw!r} in {text!r}"
    return text


def test_visible_makes_every_control_character_visible() -> None:
    from memsnap.names import visible

    for char in CONTROLS:
        assert visible(f"a{char}b") == f"a\\x{ord(char):02x}b"
    assert visible("a\nb", lines=True) == "a\nb"
    assert visible("\udc9b[2J") == "\\x9b[2J"  # an undecodable byte, as before
    assert visible("\x1b[1;32mheap\x1b[0m \x1b[2J", colours=True) == (
        "\x1b[1;32mheap\x1b[0m \\x1b[2J"
    )
    assert visible("ünïcode paths stay") == "ünïcode paths stay"


def _hostile_database(cli: Cli, hostile: Target) -> str:
    """Two snapshots of the hostile process, a second process, and the hostile rows a
    shared database could hand back (a host and program path with every control)."""
    done = cli("record", str(hostile.pid), "--label", LABEL)
    assert done.exit_code == 0, done.stderr
    harmless(done.stdout + done.stderr)
    assert "\\x1b]0;pwned\\x07\\x1b[2J" in done.stdout
    hostile.send("more")
    again = cli("record", "--all", "--name", "pwned", "--label", LABEL)
    assert again.exit_code == 0, again.stderr
    harmless(again.stdout + again.stderr)
    assert again.stdout.count("pwned") == 1
    assert cli("record", str(hostile.proc.pid), str(_other_pid())).exit_code == 0

    from sqlalchemy import update

    from memsnap.store.database import open_database
    from memsnap.store.schema import processes

    database = open_database(cli.url)
    nul = "" if database.engine.dialect.name == "postgresql" else "\x00"  # PostgreSQL has no NUL
    with database.writing() as conn:
        conn.execute(
            update(processes)
            .where(processes.c.pid == hostile.pid)
            .values(host="host" + nul + CONTROLS[1:], exe="/bin/" + nul + CONTROLS[1:])
        )
    database.close()
    return nul


def _other_pid() -> int:
    return subprocess.Popen(["sleep", "30"]).pid


def test_no_control_character_reaches_a_terminal(cli: Cli, hostile: Target) -> None:
    nul = _hostile_database(cli, hostile)
    pid = str(hostile.pid)
    outputs = {}
    for args in (
        ["list"],
        ["list", "--format", "csv"],
        ["show", "1"],
        ["show", "2", "--gaps", "--summary"],
        ["show", "2", "--format", "csv"],
        ["show", "2", "--summary", "--format", "csv"],
        ["diff", "1", "2", "--regions"],
        ["replay", "--pid", pid],
    ):
        result = cli(*args)
        assert result.exit_code == 0, (args, result.stderr)
        outputs[" ".join(args)] = harmless(result.stdout + result.stderr)
    show = outputs["show 1"]
    assert "\\x1b]0;pwned\\x07\\x1b[2J" in show and "\\x1b[8mconcealed" in show
    assert "\\x01\\x02" in show and "\\xc2\\x80" not in show and "\\x80\\x81" in show
    listed = outputs["list"].splitlines()
    assert len(listed) == 2 + 4  # a label's newline does not break its row
    rows = list(csv.DictReader(io.StringIO(outputs["show 2 --format csv"])))
    assert any(r["path"].endswith("\\x1b[8m") for r in rows)  # one row, one line each
    assert len(outputs["show 2 --format csv"].splitlines()) == len(rows) + 1
    assert "\\x1b" in outputs["diff 1 2 --regions"]

    # JSON escapes every control itself and keeps the exact text.
    for args in (["list"], ["show", "1"], ["diff", "1", "2"], ["replay", "--pid", pid]):
        result = cli(*args, "--format", "json")
        assert result.exit_code == 0, result.stderr
        doc = json.loads(harmless(result.stdout))
        values = set(_strings(doc))
        assert LABEL in values or args[0] == "diff"
        assert "host" + nul + CONTROLS[1:] in values


def _strings(doc: object) -> Iterator[str]:
    if isinstance(doc, str):
        yield doc
    elif isinstance(doc, dict):
        for value in doc.values():
            yield from _strings(value)
    elif isinstance(doc, list):
        for value in doc:
            yield from _strings(value)


def test_colours_survive_and_data_cannot_add_its_own(
    cli: Cli, hostile: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    from memsnap.cli import diff_cmd, show_cmd

    _hostile_database(cli, hostile)
    for module in (show_cmd, diff_cmd):
        monkeypatch.setattr(module, "use_color", lambda: True)
    for args in (["show", "1"], ["show", "2", "--summary"], ["diff", "1", "2"], ["list"]):
        result = cli(*args)
        assert result.exit_code == 0, result.stderr
        harmless(result.stdout + result.stderr, colours=True)
    assert "\x1b[1;32m" in cli("show", "1", "--gaps").stdout  # memsnap's own still work


def test_error_messages_show_names_harmlessly(cli: Cli, hostile: Target) -> None:
    _hostile_database(cli, hostile)
    for args in (
        ["show", "--at", "now"],  # several processes: lists their commands
        ["show", "--at", "now", "--name", "\x1b[2Jnomatch\x9b"],
        ["list", "--name", "\x1b[2J(\x07"],
        ["list", "--\x1b[2J"],
        ["show", "1", "--kind", "\x1b[2J"],
        ["record", "--from-file", "/nonexistent/\x1b[2J\x9b", "--pid", "1"],
    ):
        result = cli(*args)
        assert result.exit_code in (1, 2), (args, result)
        err = harmless(result.stderr)
        assert "Traceback" not in err and 1 <= len(err.strip().splitlines()) <= 2, err

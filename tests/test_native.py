"""The optional C scanner (memsnap/_smaps.c) against the Python parsers.

Every text is parsed twice, with the scanner and with memsnap.parse.NATIVE set to None
(the Python parsers alone), and the two must give the same `Parsed` (mappings, has_smaps
and columns) or the same refusal (the same line named): every capture in tests/fixtures,
as a live read, as a saved text and in import pieces, and hypothesis-generated texts, the
regular shapes a kernel prints and hostile ones. Where a text is regular the scanner must
actually have taken it (a spy counts its answers), so a scanner that always gave up could
not pass. Pure, but for the install without a compiler (slow, live).
"""

from __future__ import annotations

import errno
import io
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import memsnap.parse as parse
from conftest import FIXTURES, Target
from memsnap.errors import ParseError
from memsnap.model import SMAPS_FIELDS
from memsnap.parse import Parsed, Sums, parse_piece, parse_text, read_pieces

ROOT = Path(__file__).resolve().parent.parent
BUILT = parse.NATIVE
needs_native = pytest.mark.skipif(
    BUILT is None, reason="memsnap._smaps was not built (or MEMSNAP_NATIVE=0)"
)

# Every capture: maps and smaps texts of tests/fixtures (not the JSON of the peers' output).
CAPTURES = sorted(
    str(p.relative_to(FIXTURES))
    for p in FIXTURES.rglob("*")
    if p.is_file() and p.suffix not in (".json", ".md") and "restic" not in p.parts
)
# The captures the scanner leaves to the Python parsers, and why.
DECLINED = {
    # a `Name:` line in some blocks only: not one stride
    "maps/aosp-libmeminfo-smaps_short-android-x86_64.txt",
    # smaps_rollup: refused with the line parser's message
    "maps/prometheus-procfs-smaps_rollup-x86_64.txt",
}


class Spy:
    """The scanner, counting the texts it took and the ones it gave up on."""

    def __init__(self, scan: Any) -> None:
        self.scan = scan
        self.taken = 0
        self.declined = 0

    def __call__(self, *args: Any) -> Any:
        result = self.scan(*args)
        if result is None:
            self.declined += 1
        else:
            self.taken += 1
        return result


@contextmanager
def scanner(scan: Any) -> Iterator[None]:
    saved = parse.NATIVE
    parse.NATIVE = scan
    try:
        yield
    finally:
        parse.NATIVE = saved


Outcome = tuple[str, Any]


def outcome(run: Callable[[], Parsed]) -> Outcome:
    try:
        parsed = run()
    except ParseError as exc:
        return "refused", str(exc)
    return "parsed", (parsed.mappings, parsed.has_smaps, parsed.columns)


def import_outcome(text: bytes, budget: int) -> Outcome:
    """An import's pieces one by one, with the totals they leave."""
    sums = Sums()
    pieces: list[Outcome] = []
    try:
        for first_line, lines in read_pieces(io.BytesIO(text), budget):
            pieces.append(outcome(lambda: parse_piece(lines, first_line, sums)))  # noqa: B023
    except ParseError as exc:
        pieces.append(("refused", str(exc)))
    return "pieces", (pieces, sums.size, sums.values)


def both_ways(run: Callable[[], Any]) -> tuple[Any, Spy]:
    """`run` with the scanner and without it: equal, or the test fails."""
    spy = Spy(BUILT)
    with scanner(spy):
        native = run()
    with scanner(None):
        python = run()
    assert native == python
    return native, spy


def every_route(text: bytes, budget: int = 1 << 12) -> Spy:
    """The same text as a live read, a saved text (str, as an import file is read whole),
    in small pieces of the column parser, and in import pieces: each route equal both
    ways. The spy's counts are summed over the routes."""
    total = Spy(None)
    routes: list[Callable[[], Any]] = [
        lambda: outcome(lambda: parse_text(text)),
        lambda: outcome(lambda: parse_text(text, piece=budget)),
        lambda: outcome(lambda: parse_text(text.decode("utf-8", "surrogateescape"), saved=True)),
        lambda: import_outcome(text, budget),
    ]
    for route in routes:
        _, spy = both_ways(route)
        total.taken += spy.taken
        total.declined += spy.declined
    return total


@needs_native
@pytest.mark.parametrize("name", CAPTURES)
def test_every_capture_parses_the_same_both_ways(name: str) -> None:
    text = (FIXTURES / name).read_bytes()
    spy = every_route(text, budget=700)
    assert BUILT is not None
    whole = BUILT(text, parse._NATIVE_KEYS, parse.MAX_PATH_TEXT, parse.MAX_SIZE // 1024)
    assert (whole is None) == (name in DECLINED)
    if name not in DECLINED:
        # Every route of a regular capture goes through the scanner, every piece of it.
        assert spy.declined == 0, f"{name}: the scanner gave up on a regular capture"
        assert spy.taken >= (4 if text.strip() else 3)  # an empty text has no import piece


@needs_native
@pytest.mark.parametrize("name", [n for n in CAPTURES if "smaps" in n and n not in DECLINED])
@pytest.mark.parametrize("cut", [1, 2, 3])
def test_a_text_cut_inside_its_last_block_is_left_to_python(name: str, cut: int) -> None:
    """The last block short of its last lines (a read cut short): the scanner gives up
    rather than hand out a row with holes, and the Python parsers read what is there."""
    lines = (FIXTURES / name).read_bytes().rstrip(b"\n").split(b"\n")
    text = b"\n".join(lines[:-cut])
    assert BUILT is not None
    assert BUILT(text, parse._NATIVE_KEYS, parse.MAX_PATH_TEXT, parse.MAX_SIZE // 1024) is None
    every_route(text, budget=700)


# --- generated texts --------------------------------------------------------------------

KEPT = [key for _, key in SMAPS_FIELDS]
# Keys memsnap does not keep, as kernels print them.
IGNORED = ["Size", "KernelPageSize", "MMUPageSize", "Pss_Dirty", "KSM", "LazyFree"]
IGNORED += ["ShmemPmdMapped", "FilePmdMapped", "Shared_Hugetlb", "Private_Hugetlb"]
IGNORED += ["THPeligible", "ProtectionKey"]
FLAGS = ["rd", "wr", "ex", "sh", "mr", "mw", "me", "ms", "gd", "pf", "dw", "lo", "io", "ac"]
PADDING = st.text(" ", min_size=1, max_size=12)
# A path's bytes: anything but a newline, including what is not UTF-8 and a NUL.
PATH_BYTES = st.binary(min_size=1, max_size=40).map(lambda b: b.replace(b"\n", b"_"))


@st.composite
def header(draw: st.DrawFn) -> bytes:
    start = draw(st.integers(0, 2**44))
    end = start + draw(st.integers(0, 2**32))
    perms = "".join(draw(st.sampled_from(c)) for c in ("r-", "w-", "x-", "ps"))
    offset = draw(st.integers(0, 2**64 - 1))
    dev = f"{draw(st.integers(0, 4095)):02x}:{draw(st.integers(0, 2**20)):02x}"
    if draw(st.booleans()):
        dev = dev.upper()
    inode = draw(st.integers(0, 2**64 - 1))
    width = draw(st.sampled_from([8, 12, 16]))
    line = f"{start:0{width}x}-{end:0{width}x} {perms} {offset:08x} {dev}{draw(PADDING)}{inode}"
    kind = draw(st.sampled_from(["none", "padded", "bytes", "deleted", "named"]))
    if kind == "none":
        return line.encode()
    gap = draw(st.text(" \t", min_size=1, max_size=30)).encode()
    if kind == "padded":  # padding and nothing after it
        return line.encode() + gap
    name = draw(PATH_BYTES).lstrip(b" \t").rstrip(b"\r") or b"x"
    if kind == "deleted":
        name += b" (deleted)"
    if kind == "named":
        name = draw(st.sampled_from([b"[heap]", b"[stack]", b"[vdso]", b"/a\\012b", b"[anon:x y]"]))
    return line.encode() + gap + name


@st.composite
def regular_texts(draw: st.DrawFn) -> bytes:
    """A text of the shape a kernel prints: maps, or smaps whose blocks all have the
    same keys in the same order (a random choice of kept and other keys, any order)."""
    count = draw(st.integers(1, 6))
    keys: list[str] = []
    if draw(st.booleans()):
        keys = draw(st.lists(st.sampled_from([*KEPT, *IGNORED, "VmFlags"]), unique=True))
    lines: list[bytes] = []
    for _ in range(count):
        lines.append(draw(header()))
        for key in keys:
            pad = draw(st.text(" \t", min_size=1, max_size=10))
            if key == "VmFlags":
                flags = draw(st.lists(st.sampled_from(FLAGS), max_size=6))
                lines.append(f"VmFlags: {' '.join(flags)}{draw(st.text(' ', max_size=2))}".encode())
            elif key in KEPT:
                kib = draw(st.one_of(st.integers(0, 300), st.integers(0, 2**40)))
                lines.append(f"{key}:{pad}{kib} kB{draw(st.text(' ', max_size=2))}".encode())
            else:
                lines.append(f"{key}:{pad}{draw(st.integers(0, 99))}".encode())
    end = draw(st.sampled_from([b"", b"\n", b"\n\n", b" \n\t\n"]))
    return b"\n".join(lines) + end


@st.composite
def hostile_texts(draw: st.DrawFn) -> bytes:
    """A regular text with one to three things a kernel never prints done to it."""
    lines = draw(regular_texts()).split(b"\n")
    for _ in range(draw(st.integers(1, 3))):
        if not lines:  # all dropped
            break
        how = draw(
            st.sampled_from(
                [
                    "spacing",
                    "huge",
                    "drop",
                    "duplicate",
                    "swap",
                    "extra",
                    "nul",
                    "bytes",
                    "crlf",
                    "cr",
                    "truncate",
                    "tail",
                    "blank",
                    "unit",
                ]
            )
        )
        i = draw(st.integers(0, len(lines) - 1))
        if how == "spacing":
            old = draw(st.sampled_from([b" ", b":", b"-", b" kB"]))
            new = draw(st.sampled_from([b"\t", b"  ", b"", b" \t", b"\x0b", b"\xa0"]))
            lines[i] = lines[i].replace(old, old.rstrip(b" ") + new, 1)
        elif how == "huge":
            digits = draw(st.sampled_from(["9" * 16, "9" * 17, "9" * 21, str(2**53), str(2**64)]))
            lines[i] = re.sub(rb"[0-9]+", digits.encode(), lines[i], count=1)
        elif how == "drop":
            del lines[i]
        elif how == "duplicate":
            lines.insert(i, lines[i])
        elif how == "swap" and i + 1 < len(lines):
            lines[i], lines[i + 1] = lines[i + 1], lines[i]
        elif how == "extra":
            extra = draw(st.sampled_from([b"Foo: 1 kB", b"Rss: 4 kB", b"VmFlags: rd", b"Name: x"]))
            lines.insert(i, extra)
        elif how in ("nul", "bytes"):
            insert = b"\0" if how == "nul" else draw(st.binary(min_size=1, max_size=3))
            at = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:at] + insert + lines[i][at:]
        elif how == "crlf":
            return b"\r\n".join(lines)
        elif how == "cr":
            lines[i] += b"\r"
        elif how == "truncate":
            text = b"\n".join(lines)
            return text[: draw(st.integers(0, len(text)))]
        elif how == "tail":  # the last lines gone, as from a read cut short
            del lines[-draw(st.integers(1, 3)) :]
        elif how == "blank":
            lines.insert(i, draw(st.sampled_from([b"", b" ", b"\t"])))
        elif how == "unit":
            lines[i] = lines[i].replace(b" kB", draw(st.sampled_from([b" KB", b" MB", b""])), 1)
    return b"\n".join(lines)


SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@needs_native
@SETTINGS
@given(regular_texts(), st.sampled_from([64, 300, 4096]))
def test_regular_texts_take_the_scanner_and_parse_the_same(text: bytes, budget: int) -> None:
    spy = every_route(text, budget)
    # Random address ranges can add up past a snapshot's totals: then the column parser
    # gives up too, and the line parser names the line.
    overflow = outcome(lambda: parse_text(text))[0] == "refused"
    if not overflow:
        assert spy.declined == 0, "the scanner gave up on a regular text"
        # (an import refuses a NUL byte before any parser sees the text)
        assert spy.taken >= (3 if b"\0" in text else 4)


@needs_native
@SETTINGS
@given(hostile_texts(), st.sampled_from([64, 300, 4096]))
def test_hostile_texts_parse_or_are_refused_the_same(text: bytes, budget: int) -> None:
    every_route(text, budget)


@needs_native
@SETTINGS
@given(st.binary(max_size=300))
def test_arbitrary_bytes_parse_or_are_refused_the_same(text: bytes) -> None:
    every_route(text, 64)


@needs_native
def test_the_scanner_refuses_what_the_column_parser_checks() -> None:
    """The bounds the Python column parser checks, each once: the scanner gives up (and
    the Python parsers name the line) rather than answer."""
    scan = Spy(BUILT)
    good = b"00400000-00401000 r-xp 00000000 08:02 1 /bin/x\nRss: 4 kB\nPss: 4 kB"
    bad = [
        b"00402000-00401000 r-xp 00000000 08:02 1 /bin/x",  # ends before it starts
        b"00401000-00402000 r-xp 00000000 08:02 18446744073709551616 /bin/x",  # inode 2**64
        b"00401000-00402000 r-xp 00000000 08:02 1 /" + b"x" * parse.MAX_PATH_TEXT,
        b"00401000-00402000 r-xp 00000000 08:02 1 [rollup]",
        b"00401000-00402000 r-xp 00000000 08:02 1 /bin/x\nRss: 99999999999999999 kB",  # 17
        b"00401000-00402000 r-xp 00000000 08:02 1 /bin/x\nRss: 9007199254740992 kB",  # 2**53
    ]
    for line in bad:
        text = good + b"\n" + (line if b"\n" in line else line + b"\nRss: 8 kB") + b"\nPss: 8 kB"
        with scanner(scan):
            native = outcome(lambda: parse_text(text))  # noqa: B023
        assert native[0] == "refused", line
        with scanner(None):
            assert outcome(lambda: parse_text(text)) == native  # noqa: B023
    assert scan.taken == 0
    # The largest size a column holds is taken (alone in its column's total).
    most = good.replace(b"Rss: 4", b"Rss: 0") + b"\n00401000-00402000 r-xp 00000000 08:02 1 /bin/x"
    with scanner(scan):
        (_, m) = parse_text(most + b"\nRss: 9007199254740991 kB\nPss: 8 kB").mappings
    assert m.rss == (2**53 - 1) * 1024 and scan.taken == 1


@needs_native
def test_a_60k_mapping_text_is_taken_and_parses_the_same() -> None:
    """As large as a process gets (60,000 one-page mappings with the kernel's 24 keys),
    with the paths, devices and sizes varying from block to block."""
    block = (FIXTURES / "maps/local-linux6.18-x86_64-python-thp-hugepage-smaps.txt").read_bytes()

    def moved(i: int) -> bytes:
        def shift(m: re.Match[bytes]) -> bytes:
            by = i << 36 if int(m[2], 16) < 2**48 else 0  # [vsyscall] stays where it is
            return b"%016x-%016x " % (int(m[1], 16) + by, int(m[2], 16) + by)

        return re.sub(rb"^([0-9a-f]+)-([0-9a-f]+) ", shift, block, flags=re.M)

    text = b"".join(moved(i) for i in range(60_000 // block.count(b"VmFlags") + 1))
    (result, spy) = both_ways(lambda: outcome(lambda: parse_text(text)))
    assert spy.taken == 1 and result[0] == "parsed" and len(result[1][0]) >= 60_000


# --- the whole-file read -------------------------------------------------------------------


def _read_all() -> Callable[[int], bytes]:
    from memsnap.capture import procfs

    if procfs.READ_ALL is None:
        pytest.skip("memsnap._smaps was not built (or MEMSNAP_NATIVE=0)")
    return procfs.READ_ALL


def _python_read(path: str | Path) -> bytes:
    with open(path, "rb", buffering=0) as f:
        return f.readall()


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 65537, 3 * 65536 + 17, 5_000_000])
def test_read_all_reads_a_file_to_its_end(tmp_path: Path, size: int) -> None:
    """Sizes around the first buffer's (64 KiB) and several doublings past it."""
    read_all = _read_all()
    path = tmp_path / "data"
    data = os.urandom(size)
    path.write_bytes(data)
    with open(path, "rb", buffering=0) as f:
        f.read(3)  # from where the file stands, as FileIO.readall
        assert read_all(f.fileno()) == data[3:]
    with open(path, "rb", buffering=0) as f:
        assert read_all(f.fileno()) == data


@pytest.mark.live
def test_read_all_reads_a_big_smaps_as_python_does(target: Target) -> None:
    """A /proc text is written a page or so per read() call: thousands of them here."""
    read_all = _read_all()
    target.send("pages 5000")
    for name in ("maps", "smaps"):
        path = f"/proc/{target.pid}/{name}"
        with open(path, "rb", buffering=0) as f:
            native = read_all(f.fileno())
        python = _python_read(path)
        assert len(native) > 1 << 17 and native.count(b"\n") > 5000  # past 2 doublings
        # smaps' Pss of the shared libraries moves as other processes start and stop:
        # the maps text is compared whole, smaps' lines but for their values.
        assert _shape(native, name) == _shape(python, name)


def _shape(text: bytes, name: str) -> list[bytes]:
    lines = text.split(b"\n")
    return lines if name == "maps" else [line.split(b":")[0] for line in lines]


def test_read_all_raises_the_errno_of_a_failed_read(tmp_path: Path) -> None:
    read_all = _read_all()
    fd = os.open(tmp_path, os.O_RDONLY)  # a directory: read() fails with EISDIR
    try:
        with pytest.raises(IsADirectoryError):
            read_all(fd)
    finally:
        os.close(fd)
    with pytest.raises(OSError) as bad:
        read_all(fd)  # closed
    assert bad.value.errno == errno.EBADF


# --- building it, or not ----------------------------------------------------------------


def test_the_scanner_was_built_where_it_is_required() -> None:
    """CI (.ci/run) sets MEMSNAP_REQUIRE_NATIVE=1: there the extension must have been
    compiled and be in use, or this fails (an install that quietly fell back would
    otherwise pass every test with the Python parser alone)."""
    if os.environ.get("MEMSNAP_REQUIRE_NATIVE") == "1":
        assert BUILT is not None, "memsnap._smaps was not built (or MEMSNAP_NATIVE=0)"


def test_memsnap_native_0_turns_the_scanner_off(tmp_path: Path) -> None:
    code = "import memsnap.parse as p; print(p.NATIVE is None)"
    for value, off in (("0", "True"), ("1", str(BUILT is None))):
        env = {**os.environ, "MEMSNAP_NATIVE": value}
        # (run away from a checkout, whose memsnap/ may not hold the built extension)
        out = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout.strip() == off


# What a source tree holds that `pip install .` reads.
SOURCE = ["memsnap", "migrations", "setup.py", "pyproject.toml", "MANIFEST.in", "README.md"]


@pytest.mark.slow
@pytest.mark.live
def test_without_a_compiler_memsnap_installs_and_records(tmp_path: Path, target: Target) -> None:
    """`pip install .` where the C compiler fails (CC=false): the install succeeds
    without the extension, and `memsnap record` works with the Python parser."""
    src = tmp_path / "src"
    src.mkdir()
    for name in [*SOURCE, "alembic.ini"]:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
        else:
            shutil.copy2(path, src / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {**os.environ, "CC": "false", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("MEMSNAP_NATIVE", None)
    install = subprocess.run(
        [str(venv / "bin/pip"), "install", "--quiet", str(src)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    python = str(venv / "bin/python")
    probe = "import memsnap.parse as p, importlib.util as u; "
    probe += "print(p.NATIVE, u.find_spec('memsnap._smaps'))"
    # (run away from the checkout, whose memsnap/ may hold an extension built in place)
    out = subprocess.run(
        [python, "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["None", "None"]
    assert not list((venv / "lib").rglob("_smaps*.so"))
    db = tmp_path / "m.db"
    for args in (["record", str(target.pid)], ["show", "--pid", str(target.pid), "--at", "now"]):
        run = subprocess.run(
            [str(venv / "bin/memsnap"), "--db", str(db), *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        assert run.returncode == 0, run.stderr
    assert "[heap]" in run.stdout or "[stack]" in run.stdout

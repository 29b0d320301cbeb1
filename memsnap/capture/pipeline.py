"""Reading and parsing a big map on two threads of their own, while the caller writes.

A first record of a process of 60,000 mappings spends its time in stages that need not
wait for each other: the kernel writing smaps a page per `read()`, parsing 1.5 million
lines, SQLite inserting the rows. The kernel's read and SQLite's step let go of the
interpreter lock, so a reader thread (read and hash each piece), a parser thread (cut the
text at block boundaries, parse each piece) and the caller (classify and insert the
pieces parsed so far, in the thread that owns the database connection) overlap. The time
comes close to the longest stage's rather than their sum.

`OverlappedRead` hands out the parsed pieces in text order; what the caller writes from
them is only good once `capture` says the whole text was read under the rules of
`Proc.capture` (the process alive and the same before and after). Until then, and if it
raises, the caller's transaction must be rolled back. A piece the fast parser refuses
stops the parsing: the caller then parses the whole text (`raw`) as `Proc.capture`'s
caller does, so that every error is reported as before, naming its line.

The overlap is not used unless asked for (MEMSNAP_PIPELINE=1): measured on a quiet
machine once smaps was parsed in C, it made a first record slower, not faster (README,
Performance): its threads add work of their own (a piece is classified twice, the
interpreter lock changes hands at every page the kernel hands out).
"""

from __future__ import annotations

import contextlib
import queue
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace

from memsnap.capture.procfs import Capture, MapReader
from memsnap.parse import Parsed, Sums, _parse_in_pieces

# Bytes of text per piece: a smaller piece fills and drains the pipeline sooner, a larger
# one costs fewer rounds. A text that fits in one piece is read whole, with no thread.
PIECE_BYTES = 2 << 20
# The most lines searched back for the start of a piece's last block (a kernel prints
# about 25 per block); a text with none is carried into the next piece whole.
_BLOCK_LINES = 256


# How often, while the stages overlap, the thread holding the interpreter lock is asked
# to let go of it (Python's default is 5 ms). The database thread asks for the lock back
# after each SQLite step of a 200-row INSERT (about 0.5 ms); with the default it waits out
# the parser's 5 ms each time and manages one INSERT per 5 ms while the parser runs.
SWITCH_INTERVAL = 0.0005


@contextlib.contextmanager
def switching_often() -> Iterator[None]:
    """Python's thread switch interval set to `SWITCH_INTERVAL` for the duration."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(min(before, SWITCH_INTERVAL))
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def last_block_start(text: bytes) -> int:
    """Where the last whole-lined block of `text` begins: the start of its last complete
    header line (a line whose first word does not end with ':'); 0 when there is none
    within reach. The text before it holds whole blocks; a block may go on after it."""
    pos = text.rfind(b"\n")
    for _ in range(_BLOCK_LINES):
        if pos < 0:
            return 0
        begin = text.rfind(b"\n", 0, pos) + 1
        first = text[begin:pos].split(None, 1)
        if first and not first[0].endswith(b":"):
            return begin
        pos = begin - 1
    return 0


class OverlappedRead:
    """A process's map read and parsed on two threads, a piece at a time.

    `first` is the text's first piece, already read (the caller reads it to learn
    whether the text is big enough to be worth threads). `settle` is run on each parsed
    piece in the parser thread (the kernel's ` (deleted)` told from a name's own)."""

    def __init__(self, reader: MapReader, first: bytes, settle: Callable[[Parsed], None]) -> None:
        self._reader = reader
        self._settle = settle
        self.raw: list[bytes] = []  # the text's pieces as read, for `whole_text`
        self._pieces: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._parsed: list[Parsed] = []
        self._done = threading.Condition()
        self._parsing = True  # the parser thread has more to hand out
        self._fast = True  # every piece so far took the fast parser
        self._stop = False
        self._capture: Capture | None = None
        self._error: BaseException | None = None
        self._read_thread = threading.Thread(target=self._read, args=(first,), daemon=True)
        self._parse_thread = threading.Thread(target=self._parse, daemon=True)
        self._read_thread.start()
        self._parse_thread.start()

    # --- the reader thread ---------------------------------------------------------

    def _read(self, first: bytes) -> None:
        try:
            piece = first
            while True:
                self.raw.append(piece)
                self._pieces.put(piece)
                if len(piece) < PIECE_BYTES or self._stop:
                    break
                piece = self._reader.read(PIECE_BYTES)
            if not self._stop:
                self._capture = self._reader.capture()
        except BaseException as exc:  # handed to the caller's thread, raised there
            self._error = exc
        finally:
            self._reader.close()
            self._pieces.put(None)

    # --- the parser thread ---------------------------------------------------------

    def _parse(self) -> None:
        carry = b""
        sums = Sums()
        try:
            while True:
                piece = self._pieces.get()
                if piece is None:
                    body, carry = carry, b""
                elif cut := last_block_start(piece):
                    # Cut in the piece itself: the carry (less than a block) and the
                    # piece are copied once, not joined first and then cut. The
                    # piece's first line may end the carry's last: it is never taken
                    # for a header (`last_block_start` returns 0 for it).
                    body, carry = carry + piece[:cut], piece[cut:]
                else:
                    body, carry = b"", carry + piece
                if body and self._fast and not self._stop:
                    parsed = _parse_in_pieces(body, PIECE_BYTES, sums)
                    if parsed is None:
                        self._fast = False
                    else:
                        self._settle(parsed)
                        with self._done:
                            self._parsed.append(parsed)
                            self._done.notify_all()
                if piece is None:
                    break
        except BaseException as exc:
            self._error = exc
            self._stop = True
        finally:
            with self._done:
                self._parsing = False
                self._done.notify_all()

    # --- the caller's thread -------------------------------------------------------

    def piece(self, i: int) -> Parsed | None:
        """The `i`-th parsed piece, waiting for it; None past the last (or once a piece
        was refused by the fast parser: see `capture`). A failed read is raised here."""
        with self._done:
            self._done.wait_for(lambda: len(self._parsed) > i or not self._parsing)
            if self._error is not None:
                raise self._error
            return self._parsed[i] if i < len(self._parsed) and self._fast else None

    @property
    def all_parsed(self) -> bool:
        """Whether every piece of the text was parsed by the fast parser (after `capture`)."""
        return self._fast and not self._parsing

    def capture(self) -> Capture:
        """Once the whole text was read: its capture (without the text itself: see
        `whole_text`), or the `ProcessError` that says it is not whole."""
        self._read_thread.join()
        self._parse_thread.join()
        if self._error is not None:
            raise self._error
        assert self._capture is not None
        return self._capture

    def whole_text(self) -> Capture:
        """`capture` with the whole text in it, for the caller that parses it whole."""
        return replace(self.capture(), raw=b"".join(self.raw))

    def abandon(self) -> None:
        """Stop reading and parsing (the caller failed): the threads end soon after."""
        self._stop = True

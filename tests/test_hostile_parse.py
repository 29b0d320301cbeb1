"""The parser against everything: every line the kernel could print, and garbage."""

from __future__ import annotations

import contextlib
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memsnap.errors import ParseError
from memsnap.model import Mapping
from memsnap.parse import _column_sizes, format_header, parse_text

U64 = st.integers(min_value=0, max_value=2**64 - 1)
# Any character a file name can hold: everything but NUL and '/' in one component.
NO_SURROGATES: tuple[Literal["Cs"]] = ("Cs",)
NAME_CHARS = st.characters(blacklist_characters="\x00/", blacklist_categories=NO_SURROGATES)


@st.composite
def kernel_lines(draw: st.DrawFn) -> Mapping:
    start = draw(st.integers(min_value=0, max_value=2**64 - 2))
    end = draw(st.integers(min_value=start, max_value=2**64 - 1))
    perms = draw(
        st.tuples(
            st.sampled_from("r-"),
            st.sampled_from("w-"),
            st.sampled_from("x-"),
            st.sampled_from("ps"),
        ).map("".join)
    )
    dev = draw(
        st.tuples(st.integers(0, 4095), st.integers(0, 255)).map(lambda d: f"{d[0]:02x}:{d[1]:02x}")
    )
    path = draw(
        st.one_of(
            st.none(),
            st.lists(st.text(NAME_CHARS, min_size=1, max_size=30), min_size=1, max_size=5).map(
                lambda parts: "/" + "/".join(parts)
            ),
            st.sampled_from(
                [
                    "[heap]",
                    "[stack]",
                    "[vdso]",
                    "[vvar]",
                    "[vsyscall]",
                    "[anon:some name]",
                    "[stack:1234]",
                    "[uprobes]",
                ]
            ),
        )
    )
    if path is not None:
        # The kernel cannot tell these apart from its own escapes and markers.
        path = path.replace("\\012", "_").rstrip(" \t")
        if path.endswith(" (deleted)") or path == "/":
            path = path + "x"
    deleted = path is not None and path.startswith("/") and draw(st.booleans())
    return Mapping(start, end, perms, draw(U64), dev, draw(U64), path, deleted)


@settings(max_examples=400, deadline=None)
@given(st.lists(kernel_lines(), min_size=1, max_size=8))
def test_every_printable_line_parses_back_to_itself(mappings: list[Mapping]) -> None:
    text = "\n".join(format_header(m) for m in mappings) + "\n"
    # Overlapping random mappings can add up past what a snapshot's total can hold:
    # then the line where the sum passes 2**64-1 is named.
    running = [sum(m.size for m in mappings[: i + 1]) for i in range(len(mappings))]
    over = next((i for i, total in enumerate(running) if total >= 2**64), None)
    if over is None:
        assert parse_text(text).mappings == mappings
    else:
        with pytest.raises(ParseError, match="total size") as info:
            parse_text(text)
        assert info.value.lineno == over + 1


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=400))
def test_arbitrary_text_parses_or_names_a_line(text: str) -> None:
    try:
        parsed = parse_text(text)
    except ParseError as exc:
        assert 1 <= exc.lineno <= text.count("\n") + 1
        assert f"line {exc.lineno}:" in str(exc)
    else:
        assert all(m.start <= m.end for m in parsed.mappings)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_crash(raw: bytes) -> None:
    with contextlib.suppress(ParseError):
        parse_text(raw.decode("utf-8", "surrogateescape"))


@pytest.mark.parametrize(
    ("shown", "path", "deleted"),
    [
        ("/tmp/" + "d" * 4000, "/tmp/" + "d" * 4000, False),
        ("/tmp/a (deleted) b", "/tmp/a (deleted) b", False),
        ("/tmp/a (deleted) b (deleted)", "/tmp/a (deleted) b", True),
        ("/tmp/nl\\012here", "/tmp/nl\nhere", False),
        # A file literally named with a backslash-zero-one-two is printed by the kernel
        # exactly as a newline would be: the two cannot be told apart, so both read back
        # as newlines, the kernel's meaning.
        ("/tmp/lit\\012\\012", "/tmp/lit\n\n", False),
        ("/tmp/tab\there", "/tmp/tab\there", False),
        ("/tmp/\udcff\udcfe", "/tmp/\udcff\udcfe", False),
    ],
)
def test_hostile_names(shown: str, path: str, deleted: bool) -> None:
    (m,) = parse_text(f"7f0000000000-7f0000001000 r--p 00000000 08:01 12   {shown}").mappings
    assert (m.path, m.deleted) == (path, deleted)


def test_every_byte_value_in_a_name() -> None:
    name = bytes(b for b in range(1, 256) if b not in b"\n/").decode("utf-8", "surrogateescape")
    (m,) = parse_text(f"00400000-00401000 r--p 00000000 08:01 12   /tmp/{name}").mappings
    assert m.path == f"/tmp/{name}".rstrip(" ")


@pytest.mark.parametrize(
    "number",
    [b"1_0", b"+1", b"-1", b"\xd9\xa3", b"99999999999999999", b"9999999999999999"],
)
def test_a_size_column_with_one_odd_number_is_left_to_the_line_parser(number: bytes) -> None:
    # int() takes "1_0" and "+1"; 17 digits, or 16 past 2**63-1 bytes, cannot be stored.
    column = [b"Rss:                 12 kB", b"Rss:                 " + number + b" kB"]
    assert _column_sizes(column, b"Rss") is None
    assert _column_sizes(column[:1], b"Rss") == [12 * 1024]

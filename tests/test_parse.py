"""The parser on real captures from other machines and on hand-made corner cases."""

from __future__ import annotations

import pytest

from conftest import MAPS, fixture_text
from memsnap.errors import ParseError
from memsnap.parse import format_header, parse_text

ALL_CAPTURES = sorted(p.name for p in MAPS.glob("*.txt"))
ROLLUP = "prometheus-procfs-smaps_rollup-x86_64.txt"
# smaps_rollup is a capture of what memsnap refuses (one sum, not a map): test_import.py.
CAPTURES = [name for name in ALL_CAPTURES if name != ROLLUP]


def test_the_captures_are_in_the_repository() -> None:
    # An empty glob would make every parametrised test below vanish without a failure.
    assert len(ALL_CAPTURES) >= 31 and ROLLUP in ALL_CAPTURES, f"captures missing from {MAPS}"


def header_lines(text: str) -> list[str]:
    return [
        line
        for line in text.split("\n")
        if line.strip() and not line.split(None, 1)[0].endswith(":")
    ]


@pytest.mark.parametrize("name", CAPTURES)
def test_every_capture_parses_one_mapping_per_header_line(name: str) -> None:
    text = fixture_text(name)
    parsed = parse_text(text)
    headers = header_lines(text)
    assert len(parsed.mappings) == len(headers)
    for line, m in zip(headers, parsed.mappings, strict=True):
        start, end = line.split()[0].split("-")
        assert (m.start, m.end) == (int(start, 16), int(end, 16))
        assert m.perms == line.split()[1]
        assert m.inode == int(line.split()[4])
    assert parsed.has_smaps == ("smaps" in name)


def test_kernel_lines_round_trip_byte_for_byte() -> None:
    # The local captures are the kernel's own output: printing a parsed line back must
    # give the same text, path escapes and ` (deleted)` included.
    for name in (
        "local-linux6.18-x86_64-c-program-sysv-memfd-deleted-newline-rwx-thread-maps.txt",
        "local-linux6.18-x86_64-python-thp-hugepage-maps.txt",
    ):
        lines = [ln for ln in fixture_text(name).split("\n") if ln]
        for line, m in zip(lines, parse_text("\n".join(lines)).mappings, strict=True):
            assert format_header(m) == line


def test_path_escape_deleted_flag_and_spaces() -> None:
    m = parse_text(
        fixture_text(
            "local-linux6.18-x86_64-c-program-sysv-memfd-deleted-newline-rwx-thread-maps.txt"
        )
    ).mappings
    by_start = {x.start: x for x in m}
    weird = by_start[0x7FDE873B5000]
    assert weird.path == "/var/tmp/demo/we ird\nname.bin" and not weird.deleted
    gone = by_start[0x7FDE873B1000]
    assert gone.path == "/var/tmp/demo/gone.bin" and gone.deleted
    sysv = by_start[0x7FDE8699B000]
    assert sysv.path == "/SYSV00000000" and sysv.deleted and sysv.dev == "00:01"
    vsyscall = m[-1]
    assert vsyscall.start == 0xFFFFFFFFFF600000 and vsyscall.path == "[vsyscall]"


def test_every_field_lands_in_its_own_place() -> None:
    # Every field differs, so a swapped field cannot pass.
    line = "7f0011223000-7f0011245000 r-xs 000a1000 103:0f 987654321   /opt/a b/lib.so (deleted)"
    (m,) = parse_text(line).mappings
    assert (m.start, m.end, m.perms, m.offset, m.dev, m.inode, m.path, m.deleted) == (
        0x7F0011223000,
        0x7F0011245000,
        "r-xs",
        0xA1000,
        "103:0f",
        987654321,
        "/opt/a b/lib.so",
        True,
    )


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("[anon:dalvik-main space (region space)]", "[anon:dalvik-main space (region space)]"),
        ("[anon_shmem:pool]", "[anon_shmem:pool]"),
        ("[stack:1234]", "[stack:1234]"),
        ("[vvar_vclock]", "[vvar_vclock]"),
        ("[uprobes]", "[uprobes]"),
    ],
)
def test_pseudo_paths_keep_their_brackets(path: str, expected: str) -> None:
    (m,) = parse_text(f"00400000-00401000 rw-p 00000000 00:00 0   {path}").mappings
    assert m.path == expected


def test_32bit_and_large_inode_and_anonymous_offsets() -> None:
    m = parse_text(fixture_text("hs_err-jvm7-i386-32bit-jboss-2441-maps.txt")).mappings
    assert all(x.end <= 2**32 for x in m)
    big = parse_text(fixture_text("rust-minidump-linux-mini-docker-large-inode-maps.txt")).mappings
    assert max(x.inode for x in big) == 8612374361
    arc = parse_text(fixture_text("arc-readonly-fs-android-adbd-armv7-oldkernel-maps.txt")).mappings
    anon = [x for x in arc if x.path is None]
    assert any(x.offset == x.start for x in anon)  # old kernels: offset = address


def test_smaps_sizes_in_bytes_and_missing_fields_stay_none() -> None:
    hik = parse_text(fixture_text("hikvision-arm-uclibc-oldkernel-init-no-pss-smaps.txt"))
    first = hik.mappings[0]
    assert first.rss == 48 * 1024 and first.shared_clean == 32 * 1024
    assert first.private_clean == 16 * 1024
    assert first.pss is None and first.swap is None and first.vm_flags is None
    tabs = parse_text(fixture_text("isatispro-mm-raspbian-armv7-nfs-thpeligible-tabs-smaps.txt"))
    assert all(m.rss is not None for m in tabs.mappings)
    prom = parse_text(fixture_text("prometheus-procfs-go-alertmanager-smaps-x86_64.txt"))
    assert sum(m.swap or 0 for m in prom.mappings) > 0


def test_empty_vmflags_and_unknown_keys() -> None:
    text = (
        "00400000-00452000 r-xp 00000000 08:02 173521      /usr/bin/dbus\n"
        "Size:                328 kB\nRss:                  48 kB\nFutureField:  7 kB\n"
        "ProtectionKey:         0\nVmFlags:\n"
    )
    (m,) = parse_text(text).mappings
    assert m.rss == 48 * 1024 and m.vm_flags == "" and m.pss is None


def test_empty_maps_is_no_mappings() -> None:
    assert parse_text(fixture_text("zteorange-router-kthreadd-pid2-empty-maps.txt")).mappings == []


@pytest.mark.parametrize(
    ("text", "lineno"),
    [
        ("00400000-00401000 r-xp 00000000 08:02 1 /bin/x\ngarbage here\n", 2),
        ("00400000 r-xp 00000000 08:02 1 /bin/x\n", 1),
        ("Rss: 4 kB\n", 1),
        ("00400000-00401000 r-xp 00000000 08:02 1 /bin/x\nRss: many kB\n", 2),
        ("00401000-00400000 r-xp 00000000 08:02 1 /bin/x\n", 1),
        ("00400000-00401000 rxxp 00000000 08:02 1 /bin/x\n", 1),
    ],
)
def test_malformed_lines_name_their_number(text: str, lineno: int) -> None:
    with pytest.raises(ParseError) as info:
        parse_text(text)
    assert info.value.lineno == lineno
    assert f"line {lineno}:" in str(info.value)


# Captures whose blocks are not all alike, so the fast path (which slices lines by one
# stride) must hand them to the line parser. Every other capture is regular and must
# take the fast path: a fast path that gave up everywhere would otherwise go unnoticed.
IRREGULAR = {
    # Android kernels print a `Name:` line only in named anonymous blocks: the first
    # block is one line longer than the rest.
    "aosp-libmeminfo-smaps_short-android-x86_64.txt",
}


def test_the_irregular_captures_exist() -> None:
    assert set(CAPTURES) >= IRREGULAR


def capture_lines(name: str) -> list[str]:
    lines = fixture_text(name).split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


@pytest.mark.parametrize("name", CAPTURES)
def test_fast_path_agrees_with_the_line_parser(name: str) -> None:
    from memsnap.parse import _parse_strided, parse_lines

    lines = capture_lines(name)
    # The fast path reads the kernel's bytes; the line parser decoded text.
    fast = _parse_strided([line.encode("utf-8", "surrogateescape") for line in lines])
    if name in IRREGULAR:
        assert fast is None
        assert parse_lines(lines).mappings  # the line parser reads it instead
    else:
        assert fast is not None, f"{name} is regular but left the fast path"
        assert fast == parse_lines(lines)


def test_fast_path_refuses_irregular_blocks() -> None:
    from memsnap.parse import _parse_strided

    block = ["00400000-00401000 r-xp 00000000 08:02 1 /bin/x", "Rss: 4 kB", "Pss: 4 kB"]
    swapped = ["00401000-00402000 r-xp 00000000 08:02 1 /bin/x", "Pss: 8 kB", "Rss: 8 kB"]
    assert _parse_strided([line.encode() for line in block + swapped]) is None
    parsed = parse_text("\n".join(block + swapped))  # the line parser gets it right
    assert [(m.rss, m.pss) for m in parsed.mappings] == [(4096, 4096), (8192, 8192)]


@pytest.mark.parametrize("name", CAPTURES)
@pytest.mark.parametrize("piece", [60, 700, 5000])
@pytest.mark.parametrize("native", [True, False], ids=["native", "python"])
def test_parsing_in_pieces_takes_the_fast_path_and_agrees(
    name: str, piece: int, native: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cutting a text into pieces (to bound memory on huge smaps) neither leaves the fast
    path on a regular text nor changes the result; how fast it is lives in benchmarks/.
    With the C scanner (when built; it takes the whole text) and without it (the Python
    column parser a piece at a time)."""
    import memsnap.parse
    from memsnap.parse import _parse_in_pieces, parse_lines

    if not native:
        monkeypatch.setattr(memsnap.parse, "NATIVE", None)

    text = fixture_text(name)
    pieces = _parse_in_pieces(text.encode("utf-8", "surrogateescape"), piece)
    if name in IRREGULAR:
        assert pieces is None
    else:
        assert pieces is not None, f"{name} in pieces of {piece} left the fast path"
        assert pieces == parse_lines(capture_lines(name))


@pytest.mark.parametrize(
    "bad_header",
    [
        "junk 00401000-00402000 r-xp 00000000 08:02 1 /bin/x",  # text before the range
        "00401000-00402000 r-xp 00000000 08:02 1234567890123456789012345 /bin/x",  # inode
    ],
)
def test_fast_path_refuses_what_the_line_parser_refuses(bad_header: str) -> None:
    """A regular smaps text with one malformed header must not slip through the fast path
    (which matches all headers at once) where the line parser names the line."""
    good = ["00400000-00401000 r-xp 00000000 08:02 1 /bin/x", "Rss: 4 kB", "Pss: 4 kB"]
    text = "\n".join([*good, bad_header, "Rss: 8 kB", "Pss: 8 kB"])
    with pytest.raises(ParseError) as info:
        parse_text(text)
    assert info.value.lineno == 4


def test_a_mapping_is_a_region_whose_kind_is_not_named_yet() -> None:
    """Both parsers hand out `Region`s (the one declaration of a region's fields) with
    the declared default kind, and their columns are the fields before the kind, in the
    declaration's order: the store's rows line up with them by position."""
    from memsnap.model import MAPPING_FIELDS, REGION_FIELDS, UNNAMED_KIND, Region
    from memsnap.parse import _parse_strided, parse_lines

    assert [f.name for f in REGION_FIELDS] == [*MAPPING_FIELDS, "kind"]
    assert UNNAMED_KIND == Region._field_defaults["kind"] == "other"
    lines = capture_lines("local-linux6.18-x86_64-python-thp-hugepage-smaps.txt")
    fast = _parse_strided([line.encode() for line in lines])
    assert fast is not None
    slow = parse_lines(lines)
    for parsed in (fast, slow):
        assert parsed.mappings and {type(m) for m in parsed.mappings} == {Region}
        assert {m.kind for m in parsed.mappings} == {UNNAMED_KIND}
        assert len(parsed.columns) == len(MAPPING_FIELDS)
        for name, column in zip(MAPPING_FIELDS, parsed.columns, strict=True):
            assert column == [getattr(m, name) for m in parsed.mappings], name
    assert fast.mappings == slow.mappings

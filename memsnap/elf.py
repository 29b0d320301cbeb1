"""Just enough ELF to know where an object's bss lies once it is mapped.

An object's bss is the part of a writable `PT_LOAD` segment past its file contents
(`p_memsz` beyond `p_filesz`). The loader maps the first partial page with the file and
the rest as anonymous memory; that anonymous memory is what memsnap calls bss. Where it
lies follows from the load bias: the address of the object's offset-0 mapping minus its
first segment's page-aligned `p_vaddr`.

Pure: it parses the first bytes of a file (the ELF and program headers, a few hundred
bytes); reading them from a mapped file is `memsnap.capture.record`'s.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_PT_LOAD = 1
_PF_W = 2
HEAD_BYTES = 16384  # where every toolchain puts the program headers: right after the ELF header


@dataclass(frozen=True, slots=True)
class Segment:
    vaddr: int
    filesz: int
    memsz: int
    flags: int
    align: int


@dataclass(frozen=True, slots=True)
class LoadLayout:
    """The `PT_LOAD` segments of one ELF object, in file order."""

    segments: tuple[Segment, ...]

    def bss_ranges(self, base: int, page_size: int) -> list[tuple[int, int]]:
        """The anonymous bss address ranges when the offset-0 mapping starts at `base`."""
        if not self.segments:
            return []
        mask = ~(page_size - 1)
        bias = base - (self.segments[0].vaddr & mask)
        ranges = []
        for seg in self.segments:
            if not seg.flags & _PF_W or seg.memsz <= seg.filesz:
                continue
            file_end = bias + seg.vaddr + seg.filesz
            anon_start = (file_end + page_size - 1) & mask
            anon_end = (bias + seg.vaddr + seg.memsz + page_size - 1) & mask
            if anon_end > anon_start:
                ranges.append((anon_start, anon_end))
        return ranges


def parse_load_layout(header: bytes) -> LoadLayout | None:
    """The load segments from an ELF file's first bytes, or None if it is not ELF."""
    if len(header) < 64 or header[:4] != b"\x7fELF":
        return None
    elf_class, data = header[4], header[5]
    if data not in (1, 2) or elf_class not in (1, 2):
        return None
    end = "<" if data == 1 else ">"
    if elf_class == 2:
        (phoff,) = struct.unpack_from(end + "Q", header, 32)
        phentsize, phnum = struct.unpack_from(end + "HH", header, 54)
        fmt, fields = (
            end + "IIQQQQQQ",
            ("type", "flags", "offset", "vaddr", "paddr", "filesz", "memsz", "align"),
        )
    else:
        (phoff,) = struct.unpack_from(end + "I", header, 28)
        phentsize, phnum = struct.unpack_from(end + "HH", header, 42)
        fmt, fields = (
            end + "IIIIIIII",
            ("type", "offset", "vaddr", "paddr", "filesz", "memsz", "flags", "align"),
        )
    size = struct.calcsize(fmt)
    if phentsize < size or phoff + phnum * phentsize > len(header):
        return None
    segments = []
    for i in range(phnum):
        values = dict(
            zip(fields, struct.unpack_from(fmt, header, phoff + i * phentsize), strict=True)
        )
        if values["type"] == _PT_LOAD:
            segments.append(
                Segment(
                    values["vaddr"],
                    values["filesz"],
                    values["memsz"],
                    values["flags"],
                    values["align"],
                )
            )
    return LoadLayout(tuple(segments))

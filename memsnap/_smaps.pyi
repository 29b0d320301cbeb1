"""The optional C extension (memsnap/_smaps.c): the scanner of a maps or smaps text (see
memsnap.parse) and the whole-file read (see memsnap.capture.procfs)."""

# What `scan` returns: stride, starts, ends, perms, offsets, devs, inodes, raw paths, one
# size column per key (None: no block has that key), VmFlags (None: none).
Scanned = tuple[
    int,
    list[int],
    list[int],
    list[str],
    list[int],
    list[str],
    list[int],
    list[bytes],
    tuple[list[int] | None, ...],
    list[str] | None,
]

def scan(
    text: bytes, keys: tuple[bytes, ...], max_path: int, max_kib: int, /
) -> Scanned | None: ...
def read_all(fd: int, /) -> bytes: ...

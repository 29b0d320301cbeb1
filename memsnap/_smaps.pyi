"""The optional C extension (memsnap/_smaps.c): the scanner of a maps or smaps text (see
memsnap.parse) and the whole-file read (see memsnap.capture.procfs)."""

def scan(
    text: bytes, keys: tuple[bytes, ...], max_path: int, max_kib: int, /
) -> (
    tuple[
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
    | None
): ...
def read_all(fd: int, /) -> bytes: ...

"""The optional C scanner of a maps or smaps text (memsnap/_smaps.c); see memsnap.parse."""

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

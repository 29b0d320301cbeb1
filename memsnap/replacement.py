"""Which executable files a process maps, and whether their path names another file
now (an upgrade renamed a new file over the old one): the fact `check`'s replaced-code
reads, taken by `record` with every live snapshot and stored with it. Pure.

Apart from the rules (`memsnap.findings`) because every `record` needs it: the rules'
patterns need not be compiled for it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence

from memsnap.model import Region

ObjectKey = tuple[str, str, int]  # (path, device, inode): one mapped file


def is_file(r: Region) -> bool:
    return r.path is not None and not r.path.startswith("[") and r.inode != 0


def executable_objects(regions: Sequence[Region]) -> dict[ObjectKey, list[Region]]:
    """The executable mapped files, each with its mappings in address order."""
    groups: dict[ObjectKey, list[Region]] = {}
    for r in regions:
        if is_file(r):
            assert r.path is not None
            groups.setdefault((r.path, r.dev, r.inode), []).append(r)
    return {
        key: sorted(members, key=lambda r: r.start)
        for key, members in groups.items()
        if any("x" in r.perms for r in members)
    }


# Device majors with no backing device, whose numbers say nothing across a stat: 0 is the
# kernel's "unnamed" major (btrfs subvolumes, overlayfs, tmpfs, NFS); needrestart also
# treats 144-146 (the extended unnamed majors, e.g. OpenVZ's simfs) so.
_UNNAMED_MAJORS = frozenset({0, 144, 145, 146})


def is_replaced(dev: str, inode: int, stat_dev: int, stat_ino: int) -> bool:
    """Whether the file now at a mapping's path is another file than the one mapped.

    `dev` and `inode` are the mapping's (the maps text's "fe:00" and inode); `stat_dev`
    and `stat_ino` what stat says of the path now. On an unnamed device (major 0: btrfs
    reports another device number through stat than through maps) only the inodes are
    compared, as needrestart does.
    """
    if inode != stat_ino:
        return True
    try:
        major_text, minor_text = dev.split(":")
        major, minor = int(major_text, 16), int(minor_text, 16)
    except ValueError:
        return False  # a device we cannot read: the inodes agree, that is all we know
    if major in _UNNAMED_MAJORS or os.major(stat_dev) in _UNNAMED_MAJORS:
        return False
    return (major, minor) != (os.major(stat_dev), os.minor(stat_dev))


def replaced_objects(
    regions: Sequence[Region], stat: Callable[[str], os.stat_result | None]
) -> frozenset[ObjectKey]:
    """The executable objects whose path names another file now, for `Facts.replaced`.

    `stat(path)` stats a path as the process sees it (the capture layer passes one that
    goes through `/proc/PID/root`) and returns None when there is nothing there: a path
    that is gone is deleted, not replaced.
    """
    found = set()
    for key, _ in executable_objects(regions).items():
        path, dev, inode = key
        st = stat(path)
        if st is not None and is_replaced(dev, inode, st.st_dev, st.st_ino):
            found.add(key)
    return frozenset(found)


def encode(found: frozenset[ObjectKey] | set[ObjectKey]) -> str:
    """Replaced objects as a snapshot row keeps them: a JSON list of [path, device, inode]."""
    return json.dumps(sorted([list(key) for key in found]))


def decode(text: str | None) -> frozenset[ObjectKey] | None:
    """The stored list back as object keys; None when not known. A database's text is as
    hostile as a process's: what is not such a list is not known either, and entries of
    another shape are dropped."""
    if text is None:
        return None
    try:
        items = json.loads(text)
    except ValueError:
        return None
    if not isinstance(items, list):
        return None
    keys: set[ObjectKey] = set()
    for item in items:
        if (
            isinstance(item, list)
            and len(item) == 3
            and isinstance(item[0], str)
            and isinstance(item[1], str)
            and isinstance(item[2], int)
            and not isinstance(item[2], bool)
        ):
            keys.add((item[0], item[1], item[2]))
    return frozenset(keys)

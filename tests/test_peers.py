"""jc's parse of systemd's maps and smaps is an independent oracle: memsnap, importing the
same text with `record --from-file`, must agree region for region."""

from __future__ import annotations

import json

import pytest

from conftest import PEERS, Cli

SMAPS_SIZES = {
    "Rss": "rss",
    "Pss": "pss",
    "Shared_Clean": "shared_clean",
    "Shared_Dirty": "shared_dirty",
    "Private_Clean": "private_clean",
    "Private_Dirty": "private_dirty",
    "Referenced": "referenced",
    "Anonymous": "anonymous",
    "AnonHugePages": "anon_huge",
    "Swap": "swap",
    "SwapPss": "swap_pss",
    "Locked": "locked",
}
PERM_LETTERS = {"read": "r", "write": "w", "execute": "x"}


def jc_perms(words: list[str]) -> str:
    letters = {PERM_LETTERS[w] for w in words if w in PERM_LETTERS}
    return (
        ("r" if "r" in letters else "-")
        + ("w" if "w" in letters else "-")
        + ("x" if "x" in letters else "-")
        + ("s" if "shared" in words else "p")
    )


@pytest.mark.parametrize("sample", ["pid_maps", "pid_smaps", "pid_smaps_unknown_flag"])
def test_import_agrees_with_jc(cli: Cli, sample: str) -> None:
    expected = json.loads((PEERS / "jc" / f"{sample}.json").read_text())
    done = cli("record", "--from-file", str(PEERS / "jc" / sample), "--pid", "1")
    assert done.exit_code == 0, done.stderr
    snapshot_id = done.stdout.split()[1].rstrip(":")
    shown = cli("show", snapshot_id, "--format", "json")
    regions = json.loads(shown.stdout)["regions"]
    assert len(regions) == len(expected)
    for mine, theirs in zip(regions, expected, strict=True):
        assert mine["start"] == "0x" + theirs["start"]
        assert mine["end"] == "0x" + theirs["end"]
        assert mine["perms"] == jc_perms(theirs["perms"])
        assert mine["offset"] == int(theirs["offset"], 16)
        assert mine["device"] == f"{theirs['maj']}:{theirs['min']}"
        assert mine["inode"] == theirs["inode"]
        assert mine["path"] == (theirs.get("pathname") or None)  # jc: "" or absent
        if "Size" in theirs:
            assert mine["size"] == theirs["Size"] * 1024
            for key, attr in SMAPS_SIZES.items():
                assert mine[attr] == theirs[key] * 1024, (key, mine["start"])
            assert mine["vm_flags"].split() == theirs["VmFlags"]
        else:
            assert mine["rss"] is None

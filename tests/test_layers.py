"""The import direction of memsnap's layers, read from the source with `ast`. Pure.

The rule, written once (`MAY_IMPORT`); the README's Development section says it in words:

    core      memsnap/*.py (model, parse, classify, diff, findings, ...): only the core
    store     memsnap/store/ and migrations/: the core; the only home of SQLAlchemy and Alembic
    render    memsnap/render/: only the core
    capture   memsnap/capture/: the core and the store's writing side (never its reading)
    history   memsnap/history.py: only the core (it reads through the store's face, passed in)
    cli       memsnap/cli/ and memsnap/__main__.py: anything; the only home of Typer

Every import counts, the ones inside functions (memsnap's lazy imports) included.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "memsnap"

MAY_IMPORT: dict[str, set[str]] = {
    "core": {"core"},
    "store": {"core", "store"},
    "render": {"core", "render"},
    "capture": {"core", "store", "capture"},
    "history": {"core", "history"},
    "cli": {"core", "store", "render", "capture", "history", "cli"},
}
# Third-party packages only one layer may import (start-up cost, and one owner each).
ONLY_IN: dict[str, str] = {
    "sqlalchemy": "store",
    "alembic": "store",
    "typer": "cli",
    "click": "cli",
}
# Modules of a layer another layer may not import although it may import the layer: the
# capture side writes snapshots and never reads the history back.
NOT_FROM: dict[str, tuple[str, ...]] = {
    "capture": ("memsnap.store.reader", "memsnap.store.repository", "memsnap.store.prune")
}

SUBPACKAGES = {"store", "render", "capture", "cli"}


def layer_of(module: str) -> str:
    """The layer of a module of memsnap (dotted name) or of the migrations."""
    parts = module.split(".")
    if parts[0] == "migrations":
        return "store"
    assert parts[0] == "memsnap", module
    if len(parts) == 1:
        return "core"
    head = parts[1]
    if head in SUBPACKAGES:
        return head
    if head == "__main__":
        return "cli"
    if head == "history":
        return "history"
    return "core"


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, text: str) -> Iterator[tuple[int, str]]:
    """Every module `path` imports (line, dotted name), at any depth of the file."""
    tree = ast.parse(text, str(path))
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package[: len(package) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            for alias in node.names:
                # Named in full: `from memsnap import history` imports a module.
                yield node.lineno, f"{base}.{alias.name}"


def sources() -> list[Path]:
    return sorted(
        [*PACKAGE.rglob("*.py"), *(ROOT / "migrations").rglob("*.py")],
        key=lambda p: str(p),
    )


def violations(path: Path, text: str | None = None) -> list[str]:
    """What `path` (or `text`, read as if it were that module) imports against the rule."""
    mine = layer_of(module_name(path))
    found = []
    for line, name in imports(path, path.read_text() if text is None else text):
        top = name.split(".")[0]
        where = f"{path.relative_to(ROOT)}:{line}"
        if top == "memsnap":
            theirs = layer_of(name)
            if theirs not in MAY_IMPORT[mine]:
                found.append(f"{where}: {mine} imports {theirs} ({name})")
            elif any(name.startswith(banned) for banned in NOT_FROM.get(mine, ())):
                found.append(f"{where}: {mine} imports {name}")
        elif top in ONLY_IN and ONLY_IN[top] != mine:
            found.append(f"{where}: {mine} imports {top}, which only {ONLY_IN[top]} may")
    return found


def test_the_package_has_the_layers_the_rule_names() -> None:
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert packages == SUBPACKAGES
    assert (PACKAGE / "history.py").exists()


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_layer_imports_one_above_it(path: Path) -> None:
    assert violations(path) == []


def test_the_check_sees_a_wrong_import() -> None:
    """The rule catches each kind of wrong import, lazy ones and relative ones too."""
    wrong = {
        "memsnap/model.py": "from memsnap.store import schema\n",
        "memsnap/render/table.py": "def f():\n    from memsnap.history import x\n",
        "memsnap/history.py": "from memsnap.store import repository\n",
        "memsnap/render/diff.py": "from memsnap import history\n",
        "memsnap/capture/record.py": "from memsnap.store.reader import layout\n",
        "memsnap/store/writer.py": "from ..capture import procfs\n",
        "memsnap/parse.py": "import sqlalchemy\n",
        "memsnap/diff.py": "import typer\n",
        "migrations/env.py": "from memsnap.cli import app\n",
    }
    for rel, text in wrong.items():
        assert len(violations(ROOT / rel, text)) == 1, rel
    assert violations(ROOT / "memsnap/cli/common.py", "import typer, sqlalchemy\n") == [
        "memsnap/cli/common.py:1: cli imports sqlalchemy, which only store may"
    ]

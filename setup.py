"""The parts of the build pyproject.toml cannot declare: the optional C extension, and
the migrations folder shipped inside the package."""

from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_py import build_py


class BuildPy(build_py):  # type: ignore[misc]
    """The Alembic scripts live at the top of the repository (migrations/) and are
    shipped inside the installed package as memsnap/migrations, where memsnap.store finds
    them. Copied here rather than mapped as a package of their own (package_dir): a
    mapping would make an editable install find memsnap through setuptools' import hook
    instead of a path entry (an editable install finds migrations/ at the top of the
    checkout, as memsnap.store.database.migrations_dir looks there too)."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for source in sorted(Path("migrations").rglob("*")):
            if source.suffix in (".py", ".mako") and "__pycache__" not in source.parts:
                target = Path(self.build_lib, "memsnap", source)
                self.mkpath(str(target.parent))
                self.copy_file(str(source), str(target))


setup(
    cmdclass={"build_py": BuildPy},
    ext_modules=[
        # optional: when it cannot be compiled (no compiler, no Python headers) the
        # install goes on, and memsnap.parse uses its Python parsers alone.
        Extension(
            "memsnap._smaps",
            ["memsnap/_smaps.c"],
            optional=True,
            extra_compile_args=["-O2", "-Wall", "-Wextra"],
        )
    ],
)

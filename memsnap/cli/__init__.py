"""The `memsnap` command: Typer wiring, the global `--db`, and errors -> exit codes.

Each command lives in its own module; this one only assembles them. `MemsnapGroup` is
where every failure becomes one or two plain lines on standard error and the exit code
docs/interface.md names: 1 for a runtime failure (`MemsnapError`), 2 for a usage error (bad
option, malformed time), 130 for Ctrl-C. No traceback reaches a person. It also lets the
global `--db` follow the command (`memsnap list --db x`), as people type it.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import typer
from typer.core import TyperGroup, TyperOption

from memsnap import __version__
from memsnap.errors import MemsnapError, MemsnapInterrupted, UsageError

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def fail(message: str, code: int) -> None:
    """The one or two lines of an error; any name in it shows its control characters
    as `\\xNN` (echo's net), so an error cannot drive the terminal either."""
    from memsnap.cli.common import echo

    echo(f"memsnap: {message}", err=True)
    sys.exit(code)


def _db_after_command(ctx: typer.Context, _param: object, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(dict)["db"] = value


class MemsnapGroup(TyperGroup):
    """Runs a command and turns whatever it raises into a message and an exit code."""

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        """The command, also taking the global `--db` after its name (it wins over one
        given before, as the later of two options does)."""
        command = super().get_command(ctx, cmd_name)
        if command is not None and not any(p.name == "db_after_command" for p in command.params):
            command.params.append(
                TyperOption(
                    param_decls=["--db", "db_after_command"],
                    metavar="TARGET",
                    expose_value=False,
                    callback=_db_after_command,
                    help="Database (as before the command): a file path or a SQLAlchemy URL.",
                )
            )
        return command

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        # A 60,000-mapping process becomes a million short-lived objects, freed by
        # reference counting; the cycle collector would walk them over and over for
        # cycles they do not have (a fifth of `record`'s time). It is off while a command
        # runs, and a watch collects after each round (`watch.every`).
        collecting = gc.isenabled()
        gc.disable()
        try:
            result = super().main(
                args=args,
                prog_name=prog_name,
                complete_var=complete_var,
                standalone_mode=False,
                windows_expand_args=windows_expand_args,
                **extra,
            )
        except UsageError as exc:
            fail(str(exc), EXIT_USAGE)
        except MemsnapInterrupted as exc:
            fail(str(exc), exc.exit_code)
        except MemsnapError as exc:
            fail(str(exc), EXIT_FAILURE)
        except (KeyboardInterrupt, typer.Abort):
            fail("interrupted", EXIT_INTERRUPTED)
        except typer.TyperException as exc:
            # Typer's own usage errors (unknown option, bad value): exit code 2.
            hint = ""
            ctx = getattr(exc, "ctx", None)
            if ctx is not None and exc.exit_code == EXIT_USAGE:
                hint = f"\nTry '{ctx.command_path} --help' for help."
            fail(f"{exc.format_message()}{hint}", exc.exit_code)
        except OSError as exc:  # e.g. the disk filled up while writing output
            fail(f"{exc.strerror or exc}", EXIT_FAILURE)
        except Exception as exc:
            if os.environ.get("MEMSNAP_DEBUG"):
                raise
            fail(_unexpected(exc), EXIT_FAILURE)
        finally:
            if collecting:
                gc.enable()
        if result == EXIT_INTERRUPTED:
            # Typer turned a Ctrl-C that landed outside memsnap's own handling into a
            # bare exit code; say so all the same.
            fail("interrupted", EXIT_INTERRUPTED)
        sys.exit(result if isinstance(result, int) else 0)


def _unexpected(exc: Exception) -> str:
    """One line for a failure memsnap did not foresee (MEMSNAP_DEBUG=1 shows the
    traceback), as a bug to report. A database's failures are not among them: the store
    turns each into a `DatabaseError`."""
    return (
        f"internal error: {type(exc).__name__}: {exc} "
        "(please report it; MEMSNAP_DEBUG=1 shows where)"
    )


app = typer.Typer(
    cls=MemsnapGroup,
    help="Record, classify, diff and replay Linux process memory maps over time.",
    invoke_without_command=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"memsnap {__version__}")
        raise typer.Exit()


@app.callback()
def _global(
    ctx: typer.Context,
    db: str | None = typer.Option(
        None,
        "--db",
        envvar="MEMSNAP_DB",
        metavar="TARGET",
        help="Database: a file path (SQLite) or a SQLAlchemy URL. Default: "
        "$XDG_DATA_HOME/memsnap/memsnap.db.",
    ),
    version: bool = typer.Option(
        False,
        "--version",
        callback=_version,
        is_eager=True,
        help="Print memsnap's version and exit.",
    ),
) -> None:
    ctx.obj = {"db": db}
    if ctx.invoked_subcommand is None:
        # Bare `memsnap`: the help, once, on standard output, as git does; exit 2, as a
        # command line that names no command is not one that did something.
        typer.echo(ctx.get_help())
        raise typer.Exit(EXIT_USAGE)


def _register() -> None:
    from memsnap.cli import (
        check_cmd,
        diff_cmd,
        list_cmd,
        prune_cmd,
        push_cmd,
        record_cmd,
        replay_cmd,
        show_cmd,
    )

    app.command("record")(record_cmd.record)
    app.command("list")(list_cmd.list_snapshots)
    app.command("show")(show_cmd.show)
    app.command("diff")(diff_cmd.diff)
    app.command("replay")(replay_cmd.replay)
    app.command("prune")(prune_cmd.prune)
    app.command("check")(check_cmd.check)
    app.command("push")(push_cmd.push)


_register()


def main() -> NoReturn:
    """The `memsnap` command: the app, then the process ends at once (`end`)."""
    try:
        app()
    except SystemExit as exc:
        end(exc.code)
    end(0)


def end(code: object) -> NoReturn:
    """End the process as `sys.exit(code)` would, without tearing the interpreter down.

    Freeing what a command built one object at a time (a snapshot of a 60,000-mapping
    process is a million objects) and finalizing every imported module costs a big
    record or show a tenth of its time (README, Performance), for nothing: the kernel
    takes the memory back whole. What an exit must still do is done first: the atexit
    handlers run and the standard streams are flushed. Every thread memsnap starts is a
    daemon, which an exit leaves behind too, and every file it writes is closed (and
    renamed into place) before its command returns."""
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message"): printed, status 1, as Python does
        if sys.stderr is not None:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write(f"{code}\n")
        status = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        # None: started with the descriptor closed (`>&-`). A reader gone (EPIPE) or a
        # stream closed: nothing is left to tell it.
        if stream is not None:
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
    os._exit(status & 0xFF)

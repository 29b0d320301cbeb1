"""The exceptions memsnap raises on purpose; the CLI turns each into a plain message.

`MemsnapError` means a runtime failure (exit 1); `UsageError` means the caller asked for
something malformed (exit 2). Anything else escaping the CLI is a bug.
"""

from __future__ import annotations


class MemsnapError(Exception):
    """A runtime failure with a message fit to show a person as it is."""


class UsageError(MemsnapError):
    """Malformed input from the caller: a bad option value, a malformed time."""


class ProcessError(MemsnapError):
    """A process could not be read: gone, forbidden, a kernel thread, reused pid."""


class ProcessGone(ProcessError):
    """The process has exited: no such pid, a zombie, or its pid now names another."""


class ProcessChanged(ProcessError):
    """The process ran a new program (exec) while its map was read: the text is not whole."""


class ProcessDenied(ProcessError):
    """Reading the process needs rights memsnap does not have."""


class KernelThread(ProcessError):
    """A kernel thread: it has no user address space to record."""


class ParseError(MemsnapError):
    """A maps or smaps text that is not what the kernel prints; names the line."""

    def __init__(self, lineno: int, line: str, why: str) -> None:
        shown = line if len(line) <= 120 else line[:117] + "..."
        super().__init__(f"line {lineno}: {why}: {shown!r}")
        self.lineno = lineno
        self.line = line


class DatabaseError(MemsnapError):
    """A database that cannot be opened, is not memsnap's, or is newer than us."""


class NotFoundError(MemsnapError):
    """A snapshot, process or time with nothing recorded for it."""


class MemsnapInterrupted(MemsnapError):
    """Ctrl-C (exit 130), or SIGTERM in a watch (exit 143), after whatever was finished
    has been kept."""

    def __init__(self, message: str, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class SeveralProcesses(MemsnapError):
    """What was asked for names more than one recorded process (a pid reused, a name
    matching several): the message lists them and says how to choose."""

"""What every command family shares: opening the repository, and the one way messages reach
stderr (git's `fatal:` / `error:` / `warning:` lines, our `git-theta-like:` notes)."""

from __future__ import annotations

import click

from git_theta_like.display import printable
from git_theta_like.errors import ThetaLikeError
from git_theta_like.gitio.repo import Repo


def open_repo() -> Repo:
    """The repository of the current directory."""
    return Repo(".")


def error_line(e: ThetaLikeError | Exception) -> tuple[str, int]:
    """The message and exit status for an error that ends a command: git's `fatal: ...` and 128
    where git itself would die (exit_status 128), else `error: ...` and 1."""
    status = getattr(e, "exit_status", 1)
    text = "fatal: " if status == 128 else "error: "
    text += _lines(str(e))
    hint = getattr(e, "hint", None)
    if hint:
        text += f"\n{hint}"
    return text, status


def note(msg: str) -> None:
    """What the command did, on stderr (`git-theta-like: ...`)."""
    click.echo(f"git-theta-like: {msg}", err=True)


def error(msg: str) -> None:
    """One item that failed while the command goes on (git's `error: ...`); the command exits 1."""
    click.echo(f"error: {_lines(msg)}", err=True)


def warning(msg: str) -> None:
    click.echo(f"warning: {_lines(msg)}", err=True)


def _lines(text: str) -> str:
    """text with its control characters escaped (display.printable), its line breaks kept."""
    return "\n".join(printable(line) for line in text.split("\n"))


def _version_line() -> str:
    import platform

    from git_theta_like import __version__

    py = platform.python_version()
    return f"git-theta-like/{__version__} (Python {py}; {platform.system().lower()} {platform.machine()})"


VERSION_LINE = _version_line()

"""Man pages from the click command tree: `git-theta-like.1` (the overview, which
`git help theta-like` opens) and `git-theta-like-COMMAND.1` for each command a user runs, in
roff (man(7) macros), so the pages always say what `--help` says.

The wheel ships them (docs/man, rendered by `python -m git_theta_like.cli.manpage docs/man` and
kept current by a test) into `<prefix>/share/man/man1`: man finds that directory for an
environment whose `bin` is on PATH. `git theta-like install` writes them there when they are
missing (`install_pages`: a checkout run from source); `python -m git_theta_like.cli.manpage DIR`
writes them into any DIR."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import click

PROG = "git-theta-like"


def _escape(text: str) -> str:
    """text for roff: backslashes and hyphens escaped, no line starting with a control character."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line for line in text.split("\n"))


def _paragraphs(text: str) -> list[str]:
    """click help text as paragraphs (blank-line separated; click's \\b no-rewrap marker dropped)."""
    out = []
    for block in inspect.cleandoc(text).split("\n\n"):
        lines = [ln for ln in block.split("\n") if ln.strip() != "\b"]
        if lines:
            out.append(" ".join(ln.strip() for ln in lines))
    return out


def _header(name: str, version: str) -> list[str]:
    return [f'.TH "{name.upper()}" "1" "" "{PROG} {version}" "{PROG} Manual"', ".nh", ".ad l"]


def command_page(cmd: click.Command, name: str, version: str, parent: click.Context | None = None) -> str:
    """The man page of `git theta-like NAME` (run under `parent`, the group's context, whose
    settings, `-h` among them, a command inherits)."""
    ctx = click.Context(cmd, parent=parent, info_name=name)
    page = _header(f"{PROG}-{name}", version)
    page += [".SH NAME", _escape(f"{PROG}-{name} - {cmd.get_short_help_str(limit=120)}")]
    page += [
        ".SH SYNOPSIS",
        f".B git theta\\-like {_escape(name)}",
        _escape(" ".join(cmd.collect_usage_pieces(ctx))),
    ]
    if cmd.help:
        page.append(".SH DESCRIPTION")
        for i, para in enumerate(_paragraphs(cmd.help)):
            page += ([".PP"] if i else []) + [_escape(para)]
    options = [rec for p in cmd.get_params(ctx) if (rec := p.get_help_record(ctx)) is not None]
    if options:
        page.append(".SH OPTIONS")
        for opts, help_text in options:
            page += [".TP", f".B {_escape(opts)}", _escape(help_text or "")]
    page += [".SH SEE ALSO", f".BR {PROG} (1)"]
    return "\n".join(page) + "\n"


def overview_page(group: click.Group, commands: dict[str, click.Command], version: str) -> str:
    """`git-theta-like.1`: what the tool is, and every command with its one-line summary."""
    page = _header(PROG, version)
    page += [".SH NAME", _escape(f"{PROG} - {group.get_short_help_str(limit=120)}")]
    page += [".SH SYNOPSIS", ".B git theta\\-like", "\\fICOMMAND\\fR [\\fIOPTIONS\\fR] [\\fIARGS\\fR]"]
    if group.help:
        page.append(".SH DESCRIPTION")
        for i, para in enumerate(_paragraphs(group.help)):
            page += ([".PP"] if i else []) + [_escape(para)]
    page.append(".SH COMMANDS")
    for name, cmd in commands.items():
        page += [".TP", f".BR {PROG}\\-{_escape(name)} (1)", _escape(cmd.get_short_help_str(limit=120))]
    page += [".SH SEE ALSO", ".BR git (1),", ".BR git\\-lfs (1)"]
    return "\n".join(page) + "\n"


def pages(group: click.Group, version: str) -> dict[str, str]:
    """file name -> roff, for the overview and every command not hidden (those git runs)."""
    ctx = click.Context(group, info_name=PROG, **group.context_settings)  # as make_context applies them
    commands: dict[str, click.Command] = {}
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if cmd is not None and not cmd.hidden:
            commands[name] = cmd
    out = {f"{PROG}.1": overview_page(group, commands, version)}
    for name, cmd in commands.items():
        out[f"{PROG}-{name}.1"] = command_page(cmd, name, version, ctx)
    return out


def write_pages(directory: Path) -> list[Path]:
    """Every page into directory; a page already there with the same text is left alone, the
    others written atomically (several installs may run at once)."""
    import os
    import tempfile

    from git_theta_like import __version__
    from git_theta_like.cli import main

    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, text in pages(main, __version__).items():
        target = directory / file_name
        try:
            same = target.read_text() == text
        except OSError:
            same = False
        if not same:
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{file_name}.")
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        written.append(target)
    return written


def install_pages() -> Path | None:
    """The pages into `<sys.prefix>/share/man/man1` (a virtual environment, or a user's prefix),
    when that is writable; None when it is not (a system Python): best effort, never an error."""
    from git_theta_like import __version__

    directory = Path(sys.prefix) / "share" / "man" / "man1"
    try:  # written by this version already: nothing to do (rendering them costs ~0.5 s)
        if f'"{PROG} {__version__}"' in (directory / f"{PROG}.1").read_text().split("\n", 1)[0]:
            return directory
    except OSError:
        pass
    try:
        write_pages(directory)
    except OSError:
        return None
    return directory


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m git_theta_like.cli.manpage DIR")
    for path in write_pages(Path(sys.argv[1])):
        print(path)

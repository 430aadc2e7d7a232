"""`.gitattributes`: editing for `track` / `untrack` (one line per pattern, other lines
untouched), git's wildmatch rules for its patterns, and which filter a path gets."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

DRIVER = "theta-like"
OUR_ATTRS = [f"filter={DRIVER}", f"diff={DRIVER}", f"merge={DRIVER}", "-text"]
LFS_ATTRS = ["filter=lfs", "diff=lfs", "merge=lfs", "-text"]  # what `git lfs track` writes
# attributes that another tool's tracking sets and ours replaces (e.g. git-lfs's)
REPLACED = ("filter=", "diff=", "merge=", "text", "-text", "!text")


def _split(line: str) -> tuple[str, list[str]] | None:
    s = line.strip()
    if not s or s.startswith("#"):
        return None
    parts = s.split()
    return parts[0], parts[1:]


_GLOB_SPECIAL = re.compile(r"([*?\[\]\\!])")


def scope_pattern(pattern: str, prefix: str) -> str:
    """A pattern given in directory `prefix` (relative to the repository root, "" for the root),
    as a root `.gitattributes` pattern matching the same files: what git-lfs's `track` gets by
    writing the pattern into that directory's `.gitattributes`. A pattern without a slash matches
    at any depth below the directory (`*.bin` in `sub` -> `sub/**/*.bin`); one with a slash is
    relative to it (`a/*.pt` -> `sub/a/*.pt`, `/x.gguf` -> `sub/x.gguf`); `./` and `../` are
    resolved. ValueError when the result would leave the repository, or the directory's name has
    whitespace (a pattern cannot hold it)."""
    prefix = prefix.strip("/")
    if not prefix or prefix == ".":
        return pattern
    if any(c.isspace() for c in prefix):
        raise ValueError(
            f"the directory {prefix!r} has whitespace in its name, which a .gitattributes pattern "
            "cannot hold: run track from the repository's root with a pattern for it"
        )
    parts = [_GLOB_SPECIAL.sub(r"\\\1", d) for d in prefix.split("/")]
    body = pattern.lstrip("/")
    if "/" not in pattern.rstrip("/"):
        return "/".join([*parts, "**", body])
    for seg in body.split("/"):
        if seg == "..":
            if not parts:
                raise ValueError(f"{pattern!r} (in {prefix}/) leaves the repository")
            parts.pop()
        elif seg != ".":
            parts.append(seg)
    if not parts:
        raise ValueError(f"{pattern!r} (in {prefix}/) names no file")
    return "/".join(parts)


def tracked_patterns(path: Path) -> list[str]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        sp = _split(line)
        if sp and f"filter={DRIVER}" in sp[1]:
            out.append(sp[0])
    return out


def track(path: Path, patterns: list[str], dry_run: bool = False) -> list[str]:
    """Add our attributes for each pattern; returns the patterns that changed (with dry_run,
    those that would, writing nothing)."""
    lines = path.read_text().splitlines() if path.is_file() else []
    changed = []
    for pat in patterns:
        want = f"{pat} {' '.join(OUR_ATTRS)}"
        for i, line in enumerate(lines):
            sp = _split(line)
            if sp and sp[0] == pat:
                keep = [a for a in sp[1] if not a.startswith(REPLACED)]
                new = " ".join([pat, *keep, *OUR_ATTRS])
                if new != line:
                    lines[i] = new
                    changed.append(pat)
                break
        else:
            lines.append(want)
            changed.append(pat)
    if changed and not dry_run:
        path.write_text("\n".join(lines) + "\n")
    return changed


def untrack(path: Path, patterns: list[str]) -> list[str]:
    """Remove our attributes for each pattern (dropping lines left empty); returns those removed."""
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    out, removed = [], []
    for line in lines:
        sp = _split(line)
        if sp and sp[0] in patterns and f"filter={DRIVER}" in sp[1]:
            keep = [a for a in sp[1] if a not in OUR_ATTRS]
            removed.append(sp[0])
            if keep:
                out.append(" ".join([sp[0], *keep]))
            continue
        out.append(line)
    if removed:
        path.write_text("\n".join(out) + "\n" if out else "")
    return removed


_REGEX_CACHE: dict[str, re.Pattern[str]] = {}


def _glob_regex(pattern: str) -> str:
    """A gitattributes (wildmatch) pattern as a regex over a slash-separated path."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        at_start = i == 0 or pattern[i - 1] == "/"
        if pattern.startswith("**/", i) and at_start:
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i) and at_start and i + 2 == n:
            out.append(".*")
            i += 2
        elif c == "*":
            while i < n and pattern[i] == "*":
                i += 1
            out.append("[^/]*")
            continue
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            j = i + 1
            if j < n and pattern[j] in "!^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                out.append(re.escape(c))
                i += 1
            else:
                body = pattern[i + 1 : j]
                if body[:1] in ("!", "^"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = j + 1
        elif c == "\\" and i + 1 < n:
            out.append(re.escape(pattern[i + 1]))
            i += 2
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


def pattern_matches(pattern: str, path: str) -> bool:
    """Whether a root `.gitattributes` pattern applies to path (relative to the repository root):
    a pattern without a slash matches the file name at any depth, one with a slash the whole path."""
    if pattern.endswith("/"):
        return False  # gitattributes patterns for directories match no file
    regex = _REGEX_CACHE.get(pattern)
    if regex is None:
        anchored = "/" in pattern
        regex = re.compile(_glob_regex(pattern.lstrip("/") if anchored else pattern), re.DOTALL)
        _REGEX_CACHE[pattern] = regex
    target = path if "/" in pattern else path.rsplit("/", 1)[-1]
    return regex.fullmatch(target) is not None


def selects(pattern: str, path: str) -> bool:
    """Whether an include/exclude path pattern (gitignore(5) rules, as git-lfs reads
    `lfs.fetchinclude` and `fetch -I`) names path: the file itself, or a directory above it
    (`models` and `models/` select everything under a `models` directory, `*.bin` every .bin
    file, `ckpt/v*` what is under ckpt/v1/ too)."""
    dir_only = pattern.endswith("/")
    pat = pattern.rstrip("/")
    if not pat:
        return False
    parts = path.split("/")
    last = len(parts) - 1 if dir_only else len(parts)
    return any(pattern_matches(pat, "/".join(parts[:i])) for i in range(1, last + 1))


def _attr_lines(text: str) -> Iterator[tuple[int, str, list[str]]]:
    """(line number, pattern, attributes) of every pattern line."""
    for i, line in enumerate(text.splitlines()):
        parts = line.split()
        if not parts or parts[0].startswith("#") or parts[0].startswith("[attr]"):
            continue
        yield i, parts[0], parts[1:]


def lfs_patterns(text: str) -> list[str]:
    """The patterns a `.gitattributes` text gives `filter=lfs`."""
    return [pat for _, pat, attrs in _attr_lines(text) if "filter=lfs" in attrs]


def effective_filter(text: str, path: str) -> str | None:
    """The filter driver a root `.gitattributes` text gives path (the last matching line wins)."""
    value: str | None = None
    for _, pat, attrs in _attr_lines(text):
        if not pattern_matches(pat, path):
            continue
        for a in attrs:
            if a.startswith("filter="):
                value = a[len("filter=") :]
            elif a in ("-filter", "!filter"):
                value = None
    return value


def retrack(text: str, patterns: list[str]) -> str:
    """text with our attributes for each pattern, replacing git-lfs's on that pattern's line (as
    `git theta-like track` does) or, for a pattern without a line, on a new line at the end."""
    lines = text.splitlines()
    for pat in patterns:
        for i, p, attrs in _attr_lines("\n".join(lines)):
            if p == pat:
                keep = [a for a in attrs if not a.startswith(REPLACED)]
                lines[i] = " ".join([pat, *keep, *OUR_ATTRS])
                break
        else:
            lines.append(" ".join([pat, *OUR_ATTRS]))
    return "\n".join(lines) + "\n" if lines else ""


def as_lfs(text: str) -> str:
    """text with git-lfs's attributes in place of ours (the inverse of `retrack`): on each line that
    gives `filter=theta-like`, the attributes ours replace give way to `filter=lfs diff=lfs
    merge=lfs -text`; every other line, and each line's ending, as it is."""
    out: list[str] = []
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        parts = body.split()
        if len(parts) > 1 and not parts[0].startswith(("#", "[attr]")) and f"filter={DRIVER}" in parts[1:]:
            keep = [a for a in parts[1:] if not a.startswith(REPLACED)]
            body = " ".join([parts[0], *keep, *LFS_ATTRS])
        out.append(body + line[len(line.rstrip("\r\n")) :])
    return "".join(out)

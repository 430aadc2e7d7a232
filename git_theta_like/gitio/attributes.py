"""`.gitattributes` editing for `track` / `untrack`: one line per pattern, other lines untouched."""

from __future__ import annotations

from pathlib import Path

DRIVER = "theta-like"
OUR_ATTRS = [f"filter={DRIVER}", f"diff={DRIVER}", f"merge={DRIVER}", "-text"]
# attributes that another tool's tracking sets and ours replaces (e.g. git-lfs's)
_REPLACED = ("filter=", "diff=", "merge=", "text", "-text")


def _split(line: str) -> tuple[str, list[str]] | None:
    s = line.strip()
    if not s or s.startswith("#"):
        return None
    parts = s.split()
    return parts[0], parts[1:]


def tracked_patterns(path: Path) -> list[str]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        sp = _split(line)
        if sp and f"filter={DRIVER}" in sp[1]:
            out.append(sp[0])
    return out


def track(path: Path, patterns: list[str]) -> list[str]:
    """Add our attributes for each pattern; returns the patterns that changed."""
    lines = path.read_text().splitlines() if path.is_file() else []
    changed = []
    for pat in patterns:
        want = f"{pat} {' '.join(OUR_ATTRS)}"
        for i, line in enumerate(lines):
            sp = _split(line)
            if sp and sp[0] == pat:
                keep = [a for a in sp[1] if not a.startswith(_REPLACED)]
                new = " ".join([pat, *keep, *OUR_ATTRS])
                if new != line:
                    lines[i] = new
                    changed.append(pat)
                break
        else:
            lines.append(want)
            changed.append(pat)
    if changed:
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

"""The textconv view of a checkpoint (`diff.theta-like.textconv = git-theta-like diff-textconv`):
what `git log -p`, `git show` and `git diff --stat` show without `--ext-diff`: a header, then one
line per tensor (name, dtype, shape, content hash, no offsets), so a changed tensor is one changed
line and an inserted tensor does not shift the others.

git runs the textconv once per blob and side, so this module is the whole start-up of that
process (the executable serves it without the command line, see __main__.py): it imports the
manifest and display helpers only; a checkpoint file (not a manifest) loads the formats. With
`diff.theta-like.cachetextconv` (set by install) git keeps each blob's output in
`refs/notes/textconv/theta-like`, so a second `git log -p` runs no textconv at all.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from git_theta_like import dtypes
from git_theta_like.display import printable
from git_theta_like.manifest import MAGIC, Manifest, escape_name, is_manifest


def _listing(
    fmt: str, size: int, skeleton: tuple[str, int], tensors: list[tuple[str, str, tuple[int, ...], str]]
) -> str:
    from git_theta_like.display import human_count, human_size

    params = sum(dtypes.numel(shape) for _, _, shape, _ in tensors)
    lines = [
        f"# git-theta-like checkpoint: {fmt}, {len(tensors)} tensors, {human_count(params)} params, "
        f"{human_size(size)}",
        f"# header/metadata sha256:{skeleton[0][:16]} ({skeleton[1]} bytes)",
    ]
    for name, dtype, shape, raw in tensors:
        shown = printable(escape_name(name))  # C1 and bidi controls are not percent-escaped
        lines.append(f"{shown} {printable(dtype)} [{','.join(map(str, shape))}] sha256:{raw[:16]}")
    return "\n".join(lines) + "\n"


def manifest_listing(m: Manifest) -> str:
    """The textconv view: a header, then one line per tensor, in file order, without offsets."""
    return _listing(
        m.format,
        m.size,
        (m.skeleton.raw, m.skeleton_length),
        [(t.name, t.dtype, t.shape, t.obj.raw) for t in m.tensors],
    )


def checkpoint_listing(path: Path) -> str | None:
    """The same view of a checkpoint file (what its manifest's listing is), from hashing its
    tensors one at a time; nothing is stored. None when no format parses the file."""
    from git_theta_like import formats
    from git_theta_like.errors import FormatError

    with open(path, "rb") as f:
        reader = formats.ByteReader(f)
        parser = formats.detect(reader.peek(formats.SNIFF_BYTES))
        if parser is None:
            return None
        skeleton = hashlib.sha256()
        skeleton_len = 0
        tensors = []
        try:
            for event in parser.split(reader):
                reader.mark()
                if isinstance(event, formats.Skeleton):
                    skeleton.update(event.data)
                    skeleton_len += len(event.data)
                else:
                    i = event.info
                    tensors.append((i.name, i.dtype, i.shape, hashlib.sha256(event.data).hexdigest()))
        except FormatError:
            return None
    return _listing(parser.name, path.stat().st_size, (skeleton.hexdigest(), skeleton_len), tensors)


def textconv_output(file: str) -> bytes:
    """A manifest, or a checkpoint git smudged or found in the working tree, as its listing;
    anything else as it is."""
    with open(file, "rb") as f:
        head = f.read(len(MAGIC))
    if is_manifest(head):
        return manifest_listing(Manifest.from_bytes(Path(file).read_bytes())).encode()
    listing = checkpoint_listing(Path(file))
    return listing.encode() if listing is not None else Path(file).read_bytes()


def serve_textconv(file: str) -> int:
    """`git-theta-like diff-textconv FILE` without the command line: the listing on stdout;
    an error as git-theta-like's other commands report it (exit 1)."""
    import sys

    from git_theta_like.errors import ThetaLikeError

    try:
        out = textconv_output(file)
    except (ThetaLikeError, OSError) as e:
        print(f"git-theta-like: error: {e}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(out)
    sys.stdout.flush()
    return 0

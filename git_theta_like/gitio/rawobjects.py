"""Git's raw object formats where pygit2 is too slow or too lax for a history rewrite: tree
entries (mode, name, raw id) in git's sort order, commit headers, and signatures."""

from __future__ import annotations

SIGNATURE_HEADERS = (b"gpgsig", b"gpgsig-sha256")


_SIGNATURE_STARTS = (
    b"-----BEGIN PGP SIGNATURE-----",
    b"-----BEGIN SSH SIGNATURE-----",
    b"-----BEGIN SIGNED MESSAGE-----",
)


BLOB_MODES = (b"100644", b"100755", b"100664")


TREE_MODE = b"40000"


TreeEntry = tuple[bytes, bytes, bytes]  # mode, name, raw object id


def parse_tree(data: bytes, id_len: int) -> list[TreeEntry]:
    entries: list[TreeEntry] = []
    pos = 0
    while pos < len(data):
        sp = data.index(b" ", pos)
        nul = data.index(b"\0", sp)
        entries.append((data[pos:sp], data[sp + 1 : nul], data[nul + 1 : nul + 1 + id_len]))
        pos = nul + 1 + id_len
    return entries


def tree_key(entry: TreeEntry) -> bytes:
    return entry[1] + b"/" if entry[0] == TREE_MODE else entry[1]


def split_headers(data: bytes) -> tuple[list[bytes], bytes]:
    """A commit or tag: its header fields (continuation lines folded in) and the rest."""
    head, sep, body = data.partition(b"\n\n")
    fields: list[bytes] = []
    for line in head.split(b"\n"):
        if line.startswith(b" ") and fields:
            fields[-1] += b"\n" + line
        else:
            fields.append(line)
    return fields, sep + body


def strip_signature(message: bytes) -> bytes:
    """A tag message without the signature git appends to signed tags."""
    cut = len(message)
    for start in _SIGNATURE_STARTS:
        i = message.rfind(start)
        if i != -1 and (i == 0 or message[i - 1 : i] == b"\n"):
            cut = min(cut, i)
    return message[:cut]

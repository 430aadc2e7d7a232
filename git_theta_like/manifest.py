"""The manifest: the small text file Git stores in place of a tracked checkpoint.

Versioned, deterministic and line-oriented, so that a changed tensor is one changed line in
`git diff`, `git log -p` or a pull-request view. The full specification is docs/manifest.md:

    git-theta-like manifest v1 format=safetensors size=90868376
    skeleton 8192 <raw sha256> <object id> <stored bytes> <codec>
    tensor <name> <dtype> <shape> <offset> <length> <raw sha256> <object id> <stored> <codec>
    ...

Fields are separated by one space; names are percent-escaped (`%`, `"`, whitespace and
control characters; the empty name is `""`); shapes are written `[d0,d1,...]` (`[]` for a 0-d
tensor). Tensor lines are in file order. Optional `key=value` fields may follow the codec;
readers ignore keys they don't know.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from git_theta_like.errors import ManifestError

MAGIC = "git-theta-like manifest"
VERSION = "v1"
HEADER_RE = re.compile(r"^git-theta-like manifest (v[0-9]{1,9}) format=(\S+) size=(\S+)$")
MAX_DIGITS = 19  # every number in a manifest is below 10^19 (sizes, offsets, dimensions)
_NUMBER = re.compile(rf"[0-9]{{1,{MAX_DIGITS}}}")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_ESCAPE = re.compile(r'[%"\x00-\x20\x7f]')


def is_manifest(data: bytes | bytearray | memoryview) -> bool:
    return bytes(data[: len(MAGIC)]) == MAGIC.encode()


def escape_name(name: str) -> str:
    """Percent-escape `%`, `"`, whitespace and control characters; the empty name is `""`."""
    return _ESCAPE.sub(lambda m: f"%{ord(m.group()):02X}", name) or '""'


def unescape_name(text: str) -> str:
    if text == '""':
        return ""
    return re.sub(r"%([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), text)


@dataclass(frozen=True)
class ObjectRef:
    """One stored object: the hash of the raw bytes it decodes to, its id, size and codec."""

    raw: str
    oid: str
    stored: int
    codec: str
    extra: tuple[tuple[str, str], ...] = ()

    def fields(self) -> list[str]:
        return [self.raw, self.oid, str(self.stored), self.codec, *(f"{k}={v}" for k, v in self.extra)]

    @property
    def depth(self) -> int:
        """Length of the delta chain behind the object (0 for a keyframe), as its line says."""
        value = dict(self.extra).get("depth", "0")
        return int(value) if _NUMBER.fullmatch(value) else 0


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    length: int
    obj: ObjectRef

    def line(self) -> str:
        shape = "[" + ",".join(str(d) for d in self.shape) + "]"
        head = ["tensor", escape_name(self.name), self.dtype, shape, str(self.offset), str(self.length)]
        return " ".join(head + self.obj.fields())


@dataclass
class Manifest:
    format: str
    size: int  # bytes of the checkpoint file
    skeleton_length: int
    skeleton: ObjectRef
    tensors: list[TensorEntry] = field(default_factory=list)

    def to_text(self) -> str:
        lines = [f"{MAGIC} {VERSION} format={self.format} size={self.size}"]
        lines.append(" ".join(["skeleton", str(self.skeleton_length), *self.skeleton.fields()]))
        lines.extend(t.line() for t in self.tensors)
        return "\n".join(lines) + "\n"

    def to_bytes(self) -> bytes:
        return self.to_text().encode("utf-8")

    def objects(self) -> list[tuple[str, ObjectRef]]:
        """(what, object) for every object the file needs, skeleton first."""
        return [("skeleton", self.skeleton)] + [(f"tensor {t.name!r}", t.obj) for t in self.tensors]

    @property
    def stored_size(self) -> int:
        """Bytes of the distinct objects this manifest references."""
        seen: dict[str, int] = {}
        for _, o in self.objects():
            seen[o.oid] = o.stored
        return sum(seen.values())

    def validate(self) -> None:
        """Check that skeleton + tensors tile the file exactly."""
        pos = 0
        covered = 0
        for t in self.tensors:
            if t.offset < pos:
                raise ManifestError(f"tensor {t.name!r} overlaps the tensor before it")
            pos = t.offset + t.length
            covered += t.length
        if pos > self.size or covered + self.skeleton_length != self.size:
            raise ManifestError(
                f"tensors ({covered} bytes) and skeleton ({self.skeleton_length} bytes) "
                f"do not add up to the file size {self.size}"
            )

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Manifest:
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise ManifestError("manifest is not UTF-8 text") from None
        return cls.from_text(text)

    @classmethod
    def from_text(cls, text: str) -> Manifest:
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        if not lines:
            raise ManifestError("empty manifest")
        m = HEADER_RE.match(lines[0])
        if not m:
            if lines[0].startswith(MAGIC):
                raise ManifestError(f"unsupported manifest header: {lines[0][:80]!r}")
            raise ManifestError("not a git-theta-like manifest")
        if m.group(1) != VERSION:
            raise ManifestError(
                f"manifest version {m.group(1)} is newer than this git-theta-like understands "
                f"({VERSION}); upgrade git-theta-like"
            )
        fmt = m.group(2)
        try:
            size = _count(m.group(3))
        except ValueError as e:
            raise ManifestError(f"manifest header is malformed ({e})") from None
        skeleton: tuple[int, ObjectRef] | None = None
        tensors: list[TensorEntry] = []
        for n, line in enumerate(lines[1:], start=2):
            parts = line.split(" ")
            try:
                if parts[0] == "skeleton" and skeleton is None:
                    skeleton = (_count(parts[1]), _objref(parts[2:]))
                elif parts[0] == "tensor":
                    tensors.append(
                        TensorEntry(
                            unescape_name(parts[1]),
                            parts[2],
                            _shape(parts[3]),
                            _count(parts[4]),
                            _count(parts[5]),
                            _objref(parts[6:]),
                        )
                    )
                else:
                    raise ValueError(f"unexpected line kind {parts[0][:40]!r}")
            except (IndexError, ValueError) as e:
                if line.startswith(("<<<<<<<", "=======", ">>>>>>>")):
                    raise ManifestError(
                        f"manifest line {n} is a merge-conflict marker: resolve the conflict "
                        "(see `git theta-like mergetool`) instead of editing the manifest"
                    ) from None
                raise ManifestError(f"manifest line {n} is malformed ({e}): {line[:120]!r}") from None
        if skeleton is None:
            raise ManifestError("manifest has no skeleton line")
        manifest = cls(fmt, size, skeleton[0], skeleton[1], tensors)
        manifest.validate()
        return manifest


def parse_count(text: str) -> int | None:
    """A non-negative decimal integer of at most MAX_DIGITS ASCII digits, or None."""
    return int(text) if _NUMBER.fullmatch(text) else None


def is_object_id(text: str) -> bool:
    """64 lowercase hex digits (a SHA-256: raw hashes and object ids)."""
    return _HEX64.fullmatch(text) is not None


def _count(text: str) -> int:
    if not _NUMBER.fullmatch(text):
        raise ValueError(f"{text[:30]!r} is not a non-negative integer of at most {MAX_DIGITS} digits")
    return int(text)


def _shape(text: str) -> tuple[int, ...]:
    if not (text.startswith("[") and text.endswith("]")):
        raise ValueError(f"shape {text[:40]!r} is not [d0,d1,...]")
    inner = text[1:-1]
    return tuple(_count(d) for d in inner.split(",")) if inner else ()


def _objref(parts: list[str]) -> ObjectRef:
    raw, oid, stored, codec = parts[0], parts[1], parts[2], parts[3]
    if not _HEX64.match(raw) or not _HEX64.match(oid):
        raise ValueError("hashes must be 64 lowercase hex digits")
    extra = []
    for kv in parts[4:]:
        k, sep, v = kv.partition("=")
        if not sep:
            raise ValueError(f"extra field {kv[:40]!r} is not key=value")
        extra.append((k, v))
    return ObjectRef(raw, oid, _count(stored), codec, tuple(extra))

"""The write side of PyTorch zip checkpoints: a skeleton (every byte but the storages) whose
storage records get new CRC-32 fields when their tensors' bytes change (a merged checkpoint keeps
the zip layout of one side, byte for byte, except those fields)."""

from __future__ import annotations

import bisect
import struct
from typing import Any

from git_theta_like.errors import FormatError
from git_theta_like.formats.pytorch import extra_field, zip64_values
from git_theta_like.manifest import Manifest


class ZipCrcPatcher:
    """Updates the CRC-32 fields of the storage records of a PyTorch zip skeleton."""

    def __init__(self, layout: Manifest, skeleton: bytearray) -> None:
        """`layout`: the manifest whose tensors sit where the skeleton's records say."""
        self.skel = skeleton
        self.offsets = [t.offset for t in layout.tensors]
        self.ends = [t.offset + t.length for t in layout.tensors]
        self.before = [0]  # tensor bytes before tensor i
        for t in layout.tensors:
            self.before.append(self.before[-1] + t.length)
        self.fields: dict[int, list[int]] = {}  # tensor index -> skeleton positions of its CRCs
        self._scan(layout)

    def skel_pos(self, file_offset: int) -> int:
        """Skeleton position of a file offset that lies outside every tensor."""
        i = bisect.bisect_right(self.offsets, file_offset)
        if i and file_offset < self.ends[i - 1]:
            raise FormatError("zip structure points inside tensor data")
        return file_offset - self.before[i]

    def _u(self, fmt: str, file_offset: int) -> tuple[Any, ...]:
        p = self.skel_pos(file_offset)
        return struct.unpack_from(fmt, self.skel, p)

    def _scan(self, layout: Manifest) -> None:
        skel = self.skel
        end = skel.rfind(b"PK\x05\x06", max(0, len(skel) - 65557))
        if end < 0:
            raise FormatError("PyTorch zip skeleton has no end-of-central-directory record")
        (entries, cd_size, cd_off) = struct.unpack_from("<HII", skel, end + 10)
        if 0xFFFFFFFF in (cd_size, cd_off) or entries == 0xFFFF:
            loc = end - 20
            if skel[loc : loc + 4] != b"PK\x06\x07":
                raise FormatError("PyTorch zip skeleton lacks its zip64 locator")
            (z64_off,) = struct.unpack_from("<Q", skel, loc + 8)
            (entries, cd_size, cd_off) = self._u("<32xQQQ", z64_off)
        by_offset = {t.offset: i for i, t in enumerate(layout.tensors)}
        pos = cd_off
        for _ in range(entries):
            sig, flags, method, csize, usize, nlen, elen, clen, local = self._u("<4s4xHH8xIIHHH8xI", pos)
            if sig != b"PK\x01\x02":
                raise FormatError("PyTorch zip skeleton: bad central directory entry")
            extra_at = pos + 46 + nlen
            if 0xFFFFFFFF in (usize, csize, local):
                p = self.skel_pos(extra_at)
                zip64 = extra_field(bytes(skel[p : p + elen]), 1)
                usize, csize, local = zip64_values(zip64, [usize, csize, local], f"entry at {pos}")
            lsig, lflags, lnlen, lelen = self._u("<4s2xH18xHH", local)
            if lsig != b"PK\x03\x04":
                raise FormatError("PyTorch zip skeleton: bad local header")
            data = local + 30 + lnlen + lelen
            i = by_offset.get(data)
            if i is not None and method == 0:
                if usize != layout.tensors[i].length:
                    raise FormatError(f"zip record of tensor {layout.tensors[i].name!r} has another size")
                positions = [self.skel_pos(pos) + 16]
                if lflags & 0x0008:
                    d = self.skel_pos(data + usize)
                    positions.append(d + 4 if skel[d : d + 4] == b"PK\x07\x08" else d)
                else:
                    positions.append(self.skel_pos(local) + 14)
                self.fields[i] = positions
            pos += 46 + nlen + elen + clen

    def patch(self, index: int, crc: int) -> None:
        if index not in self.fields:
            raise FormatError("a changed tensor of a PyTorch zip has no zip record of its own")
        for p in self.fields[index]:
            struct.pack_into("<I", self.skel, p, crc)

"""How a merge streams its result into clean (merge/execute.py): merged tensors computed into
buffers of their own are handed over uncopied, everything else is read as before."""

from __future__ import annotations

from git_theta_like.formats import ByteReader
from git_theta_like.merge.execute import IterSource


def test_whole_buffers_are_handed_to_clean_uncopied_and_the_rest_is_read() -> None:
    header = b"HEAD"
    merged = bytearray(b"m" * 1000)  # a merged tensor (_in_blocks: a bytearray of its own)
    as_view = bytearray(b"v" * 500)
    shared = b"s" * 300  # bytes (not a buffer that can be handed over)
    part = bytearray(b"p" * 200)
    reader = ByteReader(IterSource(iter([header, merged, memoryview(as_view), shared, part])))
    assert bytes(reader.read_exact(4)) == header
    got = reader.read_exact(1000)
    assert got is merged and reader.position == 1004
    assert reader.read_exact(500) is as_view
    s = reader.read_exact(300)
    assert bytes(s) == shared and s is not shared
    assert bytes(reader.read_exact(50)) == b"p" * 50  # a part of a buffer: copied
    assert bytes(reader.read_exact(150)) == b"p" * 150
    assert reader.at_eof() and reader.position == 2004


def test_a_buffer_of_another_size_is_read_through_readinto() -> None:
    a, b = bytearray(b"a" * 10), bytearray(b"b" * 10)
    reader = ByteReader(IterSource(iter([a, b])))
    got = reader.read_exact(15)
    assert bytes(got) == b"a" * 10 + b"b" * 5
    assert bytes(reader.read_exact(5)) == b"b" * 5
    assert reader.at_eof()

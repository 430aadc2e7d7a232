"""scripts/netproxy.py, the shaped link of `scripts/bench --sections network`: bytes arrive intact
both ways and are counted, a round trip costs at least the RTT, a transfer at least its size over
the rate, and latency does not throttle a stream. Bounds are generous: the machine is shared."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from netproxy import NetProxy  # noqa: E402


@pytest.fixture
def echo() -> Iterator[int]:
    """A TCP server on loopback that sends back every byte it gets; yields its port."""
    srv = socket.create_server(("127.0.0.1", 0))
    conns: list[socket.socket] = []

    def handle(c: socket.socket) -> None:
        with c:
            while data := c.recv(1 << 16):
                c.sendall(data)

    def serve() -> None:
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            conns.append(c)
            threading.Thread(target=handle, args=(c,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield srv.getsockname()[1]
    srv.close()
    for c in conns:
        c.close()


def echo_through(port: int, data: bytes) -> tuple[bytes, float]:
    """Send data over one new connection while reading the echo; (echo, seconds)."""
    got = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as c:

        def read() -> None:
            while len(got) < len(data):
                chunk = c.recv(1 << 16)
                if not chunk:
                    return
                got.extend(chunk)

        t = time.monotonic()
        reader = threading.Thread(target=read)
        reader.start()
        c.sendall(data)
        reader.join()
        return bytes(got), time.monotonic() - t


def test_bytes_intact_and_counted_both_ways(echo: int) -> None:
    data = os.urandom(3 << 20)
    with NetProxy(("127.0.0.1", echo), rtt=0.01, mbit=0) as p:
        back, _ = echo_through(p.port, data)
        back2, _ = echo_through(p.port, b"second connection")
        assert back == data and back2 == b"second connection"
        assert p.bytes_up == p.bytes_down == len(data) + len(b"second connection")
        assert p.connections == 2


def test_round_trip_takes_the_rtt_and_a_new_connection_a_handshake_more(echo: int) -> None:
    rtt = 0.1
    with (
        NetProxy(("127.0.0.1", echo), rtt=rtt, mbit=0) as p,
        socket.create_connection(("127.0.0.1", p.port), timeout=10) as c,
    ):
        t = time.monotonic()
        c.sendall(b"x")
        assert c.recv(1) == b"x"
        first = time.monotonic() - t
        times = []
        for _ in range(3):
            t = time.monotonic()
            c.sendall(b"y")
            assert c.recv(1) == b"y"
            times.append(time.monotonic() - t)
    assert first >= 2 * rtt * 0.95, first  # handshake + request/response
    assert min(times) >= rtt * 0.95, times


def test_transfer_takes_its_size_over_the_rate(echo: int) -> None:
    mbit = 16.0  # 2 MB/s per direction
    data = os.urandom(2_000_000)
    with NetProxy(("127.0.0.1", echo), rtt=0.002, mbit=mbit, handshake=False) as p:
        back, seconds = echo_through(p.port, data)
    assert back == data
    assert seconds >= len(data) / (mbit * 1e6 / 8) * 0.9, seconds


def test_rate_is_shared_by_the_connections(echo: int) -> None:
    """Two connections at once share one link: together they take their summed size over the rate."""
    mbit = 16.0
    data = os.urandom(1_000_000)
    out: list[tuple[bytes, float]] = []
    with NetProxy(("127.0.0.1", echo), rtt=0.002, mbit=mbit, handshake=False) as p:
        t = time.monotonic()
        threads = [threading.Thread(target=lambda: out.append(echo_through(p.port, data))) for _ in range(2)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        seconds = time.monotonic() - t
    assert [b for b, _ in out] == [data, data]
    assert seconds >= 2 * len(data) / (mbit * 1e6 / 8) * 0.9, seconds


def test_latency_does_not_throttle_a_stream(echo: int) -> None:
    """Chunks are in flight together: 2 MB at 2 MB/s over a 400 ms RTT takes about 1.4 s, not the
    6 s and more that waiting out the latency per 64 KiB chunk would take."""
    rtt, mbit = 0.4, 16.0
    data = os.urandom(2_000_000)
    with NetProxy(("127.0.0.1", echo), rtt=rtt, mbit=mbit, handshake=False) as p:
        back, seconds = echo_through(p.port, data)
    assert back == data
    ideal = len(data) / (mbit * 1e6 / 8) + rtt
    assert ideal * 0.9 <= seconds < ideal + 3.0, seconds

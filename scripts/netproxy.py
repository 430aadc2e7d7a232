"""A user-space TCP proxy on loopback that shapes the link like a real network.

This kernel has no netem qdisc, so `scripts/bench --sections network` puts this proxy between
the Git LFS client and the LFS server. Every connection to the proxy is forwarded to one
upstream address, both directions, with:

- a one-way latency of half the round-trip time, applied per chunk: each chunk read is stamped
  with the time it finishes crossing the link and released to the other side at that time plus
  the latency, so many chunks are in flight at once and latency does not reduce throughput;
- a rate limit per direction (full duplex), shared by every connection, as one link is: chunks
  are serialised onto the link one after another at `rate` bits per second (a token bucket
  without burst); the reader stops reading while more than `queue_bytes` wait for the link, so
  a fast sender is held back by TCP back-pressure rather than buffered in memory; at most
  `window_bytes` per connection and direction are in flight (a receiver that stops reading
  stops its sender, as a TCP window does);
- one round trip before the first byte of a new connection is forwarded, the cost of a TCP
  handshake (on loopback connect() returns at once);
- byte counters each way (`bytes_up`: client to server, `bytes_down`: server to client) and a
  count of connections.

Not modelled: packet loss, jitter, TCP slow start (the proxy ends each TCP connection on
loopback, so a new connection sends at the link's rate from its first round trip).

    with NetProxy(("127.0.0.1", 8080), rtt=0.040, mbit=200) as p:
        url = f"http://127.0.0.1:{p.port}/..."; ...; p.bytes_up, p.bytes_down

or by hand: `python scripts/netproxy.py UPSTREAM_PORT [--rtt-ms 40] [--mbit 200] [--port 0]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import threading
import time
from typing import Any

CHUNK = 64 << 10
_EOF = b""


class Link:
    """One direction of the shaped link: serialisation at `rate` bytes/s, then `delay` s."""

    def __init__(self, rate: float, delay: float, queue_bytes: int) -> None:
        self.rate, self.delay = rate, delay
        self.queue_s = queue_bytes / rate if rate else 0.0
        self.free_at = 0.0  # when the link has finished sending what it was given

    def send(self, n: int) -> float:
        """Put n bytes on the link; return when they arrive at the far end."""
        now = time.monotonic()
        if self.rate:
            self.free_at = max(now, self.free_at) + n / self.rate
        else:
            self.free_at = now
        return self.free_at + self.delay

    def backlog(self) -> float:
        """Seconds the sender should wait before reading more (the link's queue is full)."""
        return self.free_at - time.monotonic() - self.queue_s


class NetProxy:
    """The proxy, serving on 127.0.0.1:`port` from its own thread and event loop.

    `rtt` in seconds, `mbit` in Mbit/s per direction (0: unlimited). Counters may be read from
    any thread while it runs.
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        rtt: float = 0.040,
        mbit: float = 200.0,
        port: int = 0,
        queue_bytes: int = 256 << 10,
        handshake: bool = True,
        window_bytes: int = 4 << 20,
    ) -> None:
        self.upstream, self.rtt, self.mbit = upstream, rtt, mbit
        self.handshake, self.window_bytes = handshake, window_bytes
        rate = mbit * 1e6 / 8
        self.up = Link(rate, rtt / 2, queue_bytes)
        self.down = Link(rate, rtt / 2, queue_bytes)
        self.port = port
        self.bytes_up = 0
        self.bytes_down = 0
        self.connections = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle

    def start(self) -> NetProxy:
        ready = threading.Event()
        failed: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._accept, "127.0.0.1", self.port)
                )
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as e:  # reported by start()
                failed.append(e)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="netproxy", daemon=True)
        self._thread.start()
        ready.wait()
        if failed:
            raise failed[0]
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or loop.is_closed():
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for t in list(self._tasks):
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), loop)
        thread.join(timeout=10)

    def __enter__(self) -> NetProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset_counters(self) -> None:
        self.bytes_up = self.bytes_down = self.connections = 0

    # -- forwarding

    async def _accept(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        s_writer: asyncio.StreamWriter | None = None
        pipes: list[asyncio.Task[None]] = []
        try:
            opened = asyncio.open_connection(*self.upstream)
            if self.handshake:
                (s_reader, s_writer), _ = await asyncio.gather(opened, asyncio.sleep(self.rtt))
            else:
                s_reader, s_writer = await opened
            pipes = [
                asyncio.create_task(self._pipe(c_reader, s_writer, self.up, "up")),
                asyncio.create_task(self._pipe(s_reader, c_writer, self.down, "down")),
            ]
            await asyncio.wait(pipes, return_when=asyncio.FIRST_EXCEPTION)
        except OSError:
            pass  # the upstream cannot be reached: close the client's connection
        except asyncio.CancelledError:
            pass  # stop(): end quietly (asyncio reports a cancelled connection task as an error)
        finally:
            for t in pipes:  # one side failed (reset): stop the other
                t.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            for w in (c_writer, s_writer):
                if w is not None:
                    w.close()
            for w in (c_writer, s_writer):
                if w is not None:
                    with contextlib.suppress(OSError):
                        await w.wait_closed()
            self._tasks.discard(task)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: Link, way: str
    ) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        window = _Window(self.window_bytes)

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if data is _EOF:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
                await window.release(len(data))

        sender = asyncio.create_task(deliver())
        try:
            while True:
                data = await reader.read(CHUNK)
                if way == "up":
                    self.bytes_up += len(data)
                else:
                    self.bytes_down += len(data)
                await window.take(len(data))
                queue.put_nowait((link.send(len(data)), data))
                if not data:
                    break
                wait = link.backlog()
                if wait > 0:
                    await asyncio.sleep(wait)
            await sender
        finally:
            if not sender.done():
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sender


class _Window:
    """Bytes in flight on one direction of one connection, at most `limit` (a TCP window: a
    receiver that stops reading holds the sender back instead of filling the proxy's memory)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0
        self.cond = asyncio.Condition()

    async def take(self, n: int) -> None:
        async with self.cond:
            await self.cond.wait_for(lambda: self.used < self.limit)
            self.used += n

    async def release(self, n: int) -> None:
        async with self.cond:
            self.used -= n
            self.cond.notify_all()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("upstream_port", type=int, help="forward to 127.0.0.1:UPSTREAM_PORT")
    ap.add_argument("--port", type=int, default=0, help="listen on this port (0: any free one)")
    ap.add_argument("--rtt-ms", type=float, default=40.0)
    ap.add_argument("--mbit", type=float, default=200.0, help="rate per direction, Mbit/s (0: unlimited)")
    args = ap.parse_args(argv)
    with NetProxy(("127.0.0.1", args.upstream_port), args.rtt_ms / 1000, args.mbit, args.port) as p:
        print(f"ready {p.port}", flush=True)
        try:
            while True:
                time.sleep(5)
                print(f"up {p.bytes_up} B, down {p.bytes_down} B, {p.connections} connections", flush=True)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()

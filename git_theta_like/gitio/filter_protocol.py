"""Git's long-running filter protocol (gitattributes(5), "Long Running Filter Process"), the
framing side only: handshake, requests and answers. What a filter does with the content is the
filter server's business (filters/server.py).

After the handshake (`git-filter-client`, `version=2`, then capabilities), each request is a list
of `key=value` lines (`command=clean|smudge`, `pathname=...`), a flush, the content, and a flush.
A filter answers `status=success`, the filtered content and an empty status list; on failure
`status=error` (before any content) or, mid-stream, a flush followed by `status=error`.

With the `delay` capability, a smudge request marked `can-delay=1` may be answered
`status=delayed` (no content). Git then asks `command=list_available_blobs` (no content
section); the filter names the paths it can answer now, and git asks for each of them again,
with empty content. Git keeps asking until the list comes back empty.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO

from git_theta_like.errors import ProtocolError
from git_theta_like.gitio.pktline import ContentSource, PktReader, PktWriter


@dataclass
class Request:
    command: str
    pathname: str
    fields: dict[str, str]
    content: ContentSource


class FilterChannel:
    """One filter process's conversation with git over stdin / stdout."""

    def __init__(self, stdin: BinaryIO, stdout: BinaryIO) -> None:
        self.reader = PktReader(stdin)
        self.writer = PktWriter(stdout)

    def handshake(self, offered: Iterable[str]) -> set[str]:
        """Agree on version 2 and the capabilities both sides have (`clean`, `smudge`, ...)."""
        try:
            return self._handshake(offered)
        except EOFError:
            raise ProtocolError("git closed the connection during the filter handshake") from None

    def _handshake(self, offered: Iterable[str]) -> set[str]:
        hello = self.reader.read_text_list()
        if "git-filter-client" not in hello or "version=2" not in hello:
            raise ProtocolError(f"unexpected filter handshake {hello!r}")
        self.writer.text_list(["git-filter-server", "version=2"])
        self.writer.flush()
        caps = set(self.reader.read_text_list())
        agreed = [f"capability={c}" for c in offered if f"capability={c}" in caps]
        self.writer.text_list(agreed)
        self.writer.flush()
        return {c.partition("=")[2] for c in agreed}

    def next_request(self) -> Request | None:
        """The next request (its content not yet read), or None when git closed the pipe."""
        try:
            lines = self.reader.read_text_list()
        except EOFError:
            return None
        fields = dict(line.partition("=")[::2] for line in lines)
        return Request(fields.get("command", ""), fields.get("pathname", ""), fields, self.reader.content())

    def begin_success(self) -> None:
        self.writer.text_list(["status=success"])

    def content(self, data: bytes | bytearray | memoryview) -> None:
        self.writer.content(data)

    def end_success(self) -> None:
        """End the content stream, then an empty status list: status stays "success"."""
        self.writer.flush_packet()
        self.writer.flush_packet()
        self.writer.flush()

    def success(self, data: bytes | bytearray | memoryview) -> None:
        self.begin_success()
        self.content(data)
        self.end_success()

    def delayed(self) -> None:
        """Answer a `can-delay=1` smudge request later (see list_available)."""
        self.writer.text_list(["status=delayed"])
        self.writer.flush()

    def available(self, paths: Iterable[str]) -> None:
        """Answer `list_available_blobs`: the delayed paths git may ask for again now."""
        self.writer.text_list([f"pathname={p}" for p in paths])
        self.writer.flush()
        self.writer.text_list(["status=success"])
        self.writer.flush()

    def error(self, started: bool = False) -> None:
        """Report failure: before any content, or (started) after a partial content stream."""
        if started:
            self.writer.flush_packet()
        self.writer.text_list(["status=error"])
        self.writer.flush()

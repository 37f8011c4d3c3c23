"""A request body sent from a file: by ``sendfile`` on a plain connection, read in pieces on TLS.

aiohttp writes a request's body through a payload object. This one hands the span's bytes to the
kernel, which copies them from the page cache to the socket: no copy through user space, no
thread hop per piece, where the streamed path costs both for every 256 KiB. A TLS connection
encrypts in user space, so there the bytes are read off the loop and written in pieces. Written
for asyncio, as aiohttp is.
"""

from __future__ import annotations

import asyncio
from typing import BinaryIO

import aiohttp.payload
import anyio.to_thread
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_writer import StreamWriter

from engine.registry.api import FileSpan

#: Bytes handed to one ``sendfile`` call. Each call waits for the socket's buffer to empty
#: first, so the step trades a small stall for the pace at which progress is told.
SENDFILE_STEP = 4 << 20
#: Bytes read per piece where ``sendfile`` cannot serve (TLS).
READ_SIZE = 1 << 20


class FileSpanPayload(aiohttp.payload.Payload):
    """The bytes of one ``FileSpan``, read from its file each time the request is sent."""

    def __init__(self, span: FileSpan) -> None:
        super().__init__(span)
        self._span = span
        self._size = span.size

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("a file's bytes are not text")

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        span = self._span
        file = await anyio.to_thread.run_sync(span.path.open, "rb")
        try:
            sent = 0
            plain = _plain(writer)
            if plain is not None:
                sent = await _send_natively(*plain, file, span)
            if sent < span.size:
                await _send_pieces(writer, file, span, sent)
        finally:
            file.close()


def _plain(writer: AbstractStreamWriter) -> tuple[StreamWriter, asyncio.Transport] | None:
    """The writer and its transport when the kernel can write to the connection's socket (not
    on TLS, which encrypts in user space)."""
    if not isinstance(writer, StreamWriter):
        return None
    transport = writer.transport
    if transport is None or transport.get_extra_info("sslcontext") is not None:
        return None
    return writer, transport


async def _send_natively(
    writer: StreamWriter, transport: asyncio.Transport, file: BinaryIO, span: FileSpan
) -> int:
    """Send the span with ``sendfile``; how much went: all of it, unless the kernel will not
    send from that file (asyncio says so before a byte of the call went). A file that ends
    early raises."""
    writer.send_headers()  # aiohttp holds them back to join the body's first write
    loop = asyncio.get_running_loop()
    sent = 0
    while sent < span.size:
        count = min(SENDFILE_STEP, span.size - sent)
        try:
            went = await loop.sendfile(transport, file, span.offset + sent, count, fallback=False)
        except asyncio.SendfileNotAvailableError:
            break
        if went < count:
            raise EOFError(f"{span.path}: ended {span.size - sent - went} bytes early")
        sent += went
        if span.on_sent is not None:
            span.on_sent(went)
    return sent


async def _send_pieces(
    writer: AbstractStreamWriter, file: BinaryIO, span: FileSpan, start: int
) -> None:
    """The span from ``start`` in pieces read off the loop; each piece a new bytes object, since
    a TLS transport may keep a piece it has not yet encrypted."""
    await anyio.to_thread.run_sync(file.seek, span.offset + start)
    remaining = span.size - start
    while remaining > 0:
        piece = await anyio.to_thread.run_sync(file.read, min(READ_SIZE, remaining))
        if not piece:
            raise EOFError(f"{span.path}: ended {remaining} bytes early")
        await writer.write(piece)
        remaining -= len(piece)
        if span.on_sent is not None:
            span.on_sent(len(piece))

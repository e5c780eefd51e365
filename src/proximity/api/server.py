"""The HTTP server: uvicorn with httptools, bounded against clients that never finish a request.

uvicorn's httptools protocol reads a request head for as long as a client sends it and holds every
byte (uvicorn issue 157), and accepts every connection it can. Unauthenticated clients could grow
the service's memory without end, or hold descriptors until a heal fails with "Too many open
files". This protocol adds, before any request reaches the application:

- a connection cap, checked on the raw TCP connection before any TLS work (TLS is done here with
  ``loop.start_tls`` for that reason): a connection over the cap is closed at once, so clients
  never hold more than ``max_connections`` descriptors, well below the process's limit;
- a deadline for the TLS handshake and for each request head (the request line and headers);
- a cap on the head's size (431) and on its number of header fields (431).

httptools is kept (rather than h11, which caps the head itself) because it parses about twice as
fast, and the status endpoint's p99 under load is a target of the benchmark.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import ssl
from dataclasses import dataclass

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

FD_RESERVE = 256  # descriptors never given to clients: the service's own files, pipes of the commands a heal runs


# What may arrive with the TLS handshake, before the connection is handed to the parser: a head
# and the start of its body (the API takes bodies of at most 1 MiB).
EARLY_LIMIT = 2 * 1024 * 1024


@dataclass(frozen=True)
class Limits:
    max_connections: int = 512  # client connections at once, streams included
    head_timeout: float = 10.0  # seconds for the TLS handshake, and for each request's line and headers
    max_head_bytes: int = 32 * 1024  # the request line and all headers (nginx's default is 4 x 8 KiB)
    max_headers: int = 100  # header fields (Apache's LimitRequestFields)

    def fitted(self) -> Limits:
        """These limits, with the connection cap lowered so that clients leave ``FD_RESERVE`` descriptors free."""
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY or soft - FD_RESERVE >= self.max_connections:
            return self
        cap = max(1, soft - FD_RESERVE)
        log.warning("the descriptor limit is %d: serving at most %d connections at once", soft, cap)
        return Limits(cap, self.head_timeout, self.max_head_bytes, self.max_headers)


def _refusal(status: bytes, reason: str) -> bytes:
    body = reason.encode()
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body)


class BoundedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits above (``limits`` and ``tls`` are set per server)."""

    limits: Limits = Limits()
    tls: ssl.SSLContext | None = None
    open_connections = 0  # per class: every accepted connection until it is lost

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        cls = type(self)
        if cls.open_connections >= self.limits.max_connections:
            self.transport = None  # type: ignore[assignment]
            transport.abort()  # the descriptor is freed now; nothing was read
            return
        cls.open_connections += 1
        self._counted, self._head_open = True, True
        self._head_chunks = self._head_fields = self._header_count = 0
        self._head_timer = self.loop.call_later(self.limits.head_timeout, self._head_expired, transport)
        if self.tls is None:
            super().connection_made(transport)
            return
        transport.pause_reading()  # the ClientHello waits for start_tls
        self._early = bytearray()  # what the TLS layer hands over before start_tls returns
        self.loop.create_task(self._start_tls(transport))

    async def _start_tls(self, raw: asyncio.Transport) -> None:
        try:
            wrapped = await self.loop.start_tls(raw, self, self.tls, server_side=True,
                                                ssl_handshake_timeout=self.limits.head_timeout)
        except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError, RuntimeError) as exc:
            log.debug("TLS handshake failed: %r", exc)
            raw.abort()
            self._uncount()
            return
        if wrapped is None or wrapped.is_closing():
            self._uncount()
            return
        super().connection_made(wrapped)
        early, self._early = bytes(self._early), None
        if self._early_head_too_large(early):
            self._refuse(b"431 Request Header Fields Too Large", "the request head is too large")
        elif early:
            self.data_received(early)

    def connection_lost(self, exc: Exception | None) -> None:
        if not getattr(self, "_counted", False):
            return  # refused at the door, or already counted out
        self._uncount()
        if self.transport is not None:
            super().connection_lost(exc)

    def _uncount(self) -> None:
        if getattr(self, "_counted", False):
            self._counted = False
            type(self).open_connections -= 1
            self._cancel_head_timer()

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_expired(self, transport: asyncio.Transport) -> None:
        self._head_timer = None
        if self._head_open and not transport.is_closing():
            transport.abort()  # a client that has not sent its request head (or TLS handshake) in time

    def _refuse(self, status: bytes, reason: str) -> None:
        self._head_open = False
        self._cancel_head_timer()
        self.transport.write(_refusal(status, reason))
        self.transport.close()
        self.parser = None  # type: ignore[assignment]  # nothing more is parsed

    def data_received(self, data: bytes) -> None:
        step = self.limits.max_head_bytes
        if self.transport is None and getattr(self, "_early", None) is not None:
            self._early += data  # decrypted before start_tls returned: kept for the parser, within the caps
            if self._early_head_too_large(self._early) or len(self._early) > EARLY_LIMIT:
                self._early = bytearray(b"\0" * (2 * step + 1))  # over: refused once the connection is made
            return
        while data and self.parser is not None and self.transport is not None and not self.transport.is_closing():
            # Inside a request head the parser gets at most `step` bytes at a time, so that a head over the
            # cap is refused with 431 before the parser holds much more (or fails on its own, with 400).
            piece, data = (data[:step], data[step:]) if self._head_open else (data, b"")
            super().data_received(piece)
            if self._head_open and self.parser is not None:  # this piece did not end the head
                self._head_chunks += len(piece)
                self._check_head()

    def _early_head_too_large(self, early: bytes | bytearray) -> bool:
        """Bytes that came with the handshake hold no end of a head within the cap. (What follows a
        head that ended in time is its body: the Door answers for that, 401 or 413.)"""
        cap = 2 * self.limits.max_head_bytes
        return len(early) > cap and b"\r\n\r\n" not in early[:cap]

    def _check_head(self) -> None:
        # Both counts are at most the head's size: the chunks that did not end it, and its fields so far.
        if max(self._head_chunks, self._head_fields) > self.limits.max_head_bytes and self.parser is not None:
            self._refuse(b"431 Request Header Fields Too Large",
                         f"the request line and headers are over {self.limits.max_head_bytes} bytes")

    # httptools callbacks. A head that arrives in one chunk is measured here, field by field.
    def on_message_begin(self) -> None:
        if self.parser is None:
            return
        super().on_message_begin()
        self._head_open = True
        self._head_chunks = self._head_fields = self._header_count = 0
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.head_timeout, self._head_expired, self.transport)

    def on_url(self, url: bytes) -> None:
        if self.parser is not None:
            super().on_url(url)
            self._head_fields += len(url)
            self._check_head()

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.parser is None:
            return
        self._header_count += 1
        if self._header_count <= self.limits.max_headers:
            super().on_header(name, value)
        self._head_fields += len(name) + len(value) + 4
        self._check_head()

    def on_headers_complete(self) -> None:
        if self.parser is None:
            return
        self._head_open = False
        self._cancel_head_timer()
        if self._header_count > self.limits.max_headers:
            self._refuse(b"431 Request Header Fields Too Large",
                         f"more than {self.limits.max_headers} header fields")
            return  # no request cycle: what the parser reads next is dropped (parser is None)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self.parser is not None and self.cycle is not None:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self.parser is not None and self.cycle is not None:
            super().on_message_complete()


def protocol_for(limits: Limits, tls: ssl.SSLContext | None) -> type[BoundedProtocol]:
    """A protocol class of its own per server: its own limits, TLS context and connection count."""
    return type("ProximityHTTP", (BoundedProtocol,), {"limits": limits, "tls": tls, "open_connections": 0})


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


def run(app, host: str, port: int, limits: Limits, cert_file: str | None = None, key_file: str | None = None) -> None:
    """Serve ``app`` until SIGTERM or SIGINT (``limits`` as given: see :meth:`Limits.fitted`)."""
    import uvicorn

    tls = tls_context(cert_file, key_file) if cert_file and key_file else None
    # No access log (one line per request is most of a cheap request's cost) and no proxy
    # headers: the service is reached directly, never through a reverse proxy it should trust.
    # uvloop starts reading a new connection right after connection_made, whatever the protocol paused,
    # so the ClientHello would reach this protocol before start_tls: TLS runs on asyncio's loop.
    # Open job streams end at most 5 s after SIGTERM, so a stop never waits for a stream's own end.
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, proxy_headers=False,
                http=protocol_for(limits, tls), timeout_keep_alive=5, timeout_graceful_shutdown=5,
                loop="asyncio" if tls else "auto")

"""uvicorn's HTTP protocol with TCP_NODELAY on every connection.

With several workers, uvicorn hands each worker the listening socket, and the accepted
connections then keep Nagle's algorithm on: a response written in two parts (head, body) waits
for the client's delayed ACK, ~40 ms per request. Setting TCP_NODELAY per connection removes it.
The fast C parser (httptools) is used when installed, else h11.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _Base
except ImportError:  # pragma: no cover - httptools is a dependency; h11 is uvicorn's own fallback
    from uvicorn.protocols.http.h11_impl import H11Protocol as _Base  # type: ignore[assignment]


class NoDelayHTTPProtocol(_Base):
    """The HTTP/1.1 protocol uvicorn would pick, with TCP_NODELAY set when a connection opens."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)

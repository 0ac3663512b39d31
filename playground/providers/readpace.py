"""Paced reads from upstream connections: many small chunks read as one.

A streaming provider writes each token as a chunk of its own, and every read of the socket
costs the same Python work however little it brings (the event loop's wake-up, anyio's timeout
scope, httpcore and h11): read by read, that was most of a busy server's CPU. Watchers get at
most a frame per FRAME_INTERVAL anyway, so once a reply has begun its reads need not be
sooner than that.

`PacedBackend` wraps an httpcore network backend; each connection it opens is a `PacedStream`
whose `pace` (seconds, 0 = off) the reader of a response sets through the response's
`network_stream` extension (httpcore's, for HTTP/1.1). While it is set, a read that comes less
than `pace` after the previous one returned first waits out the rest: what the provider sends
meanwhile gathers in the socket and arrives with that read, in one piece. Only the wait before
reading the network is paced; whatever httpcore already holds is passed on at once, and the
read's own timeout starts after the wait.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import ssl
import time
import urllib.request
import weakref
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx


class PacedStream(httpcore.AsyncNetworkStream):
    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self.inner = inner
        self.pace = 0.0
        self.read_at = 0.0  # when the last read returned (time.monotonic())

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self.pace > 0:
            wait = self.read_at + self.pace - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        try:
            return await self.inner.read(max_bytes, timeout)
        finally:
            self.read_at = time.monotonic()

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self.inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return PacedStream(await self.inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self.inner.get_extra_info(info)


class PacedBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self.inner.connect_tcp(
            host, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )
        return PacedStream(stream)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self.inner.connect_unix_socket(
            path, timeout=timeout, socket_options=socket_options
        )
        return PacedStream(stream)

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def paced(stream: Any, pace: float) -> PacedStream | None:
    """Set `pace` on a response's network stream (its `network_stream` extension), if it is
    one of ours; the stream, to set it back with, or None."""
    if isinstance(stream, PacedStream):
        stream.pace = pace
        return stream
    return None


def transport(
    context: ssl.SSLContext,
    keepalive_expiry: float,
    inner: httpcore.AsyncNetworkBackend | None = None,
    *,
    trust_env: bool = True,
) -> httpx.AsyncHTTPTransport:
    """An httpx transport whose connections are PacedStreams (over `inner`'s, or anyio's).
    httpx takes no network backend: its transport is a thin wrapper around an httpcore pool
    (which also maps httpcore's errors to httpx's), so the pool is replaced with one that
    uses ours. tests/providers/test_address_policy.py fails if a future httpx stops routing
    through it."""
    made = httpx.AsyncHTTPTransport(verify=context, trust_env=trust_env)
    made._pool = httpcore.AsyncConnectionPool(
        ssl_context=context,
        max_connections=200,
        max_keepalive_connections=32,
        keepalive_expiry=keepalive_expiry,
        http1=True,
        http2=False,
        network_backend=PacedBackend(inner),
    )
    return made


# Clients whose streaming requests go straight to their transport: see send().
_direct: weakref.WeakKeyDictionary[httpx.AsyncClient, httpx.AsyncBaseTransport] = (
    weakref.WeakKeyDictionary()
)


def client(
    made: httpx.AsyncHTTPTransport, *, trust_env: bool = True, **options: Any
) -> httpx.AsyncClient:
    """An AsyncClient over `made` (from transport()) that keeps no cookie: it is shared by
    every user's requests, so a cookie one provider reply set would go out with the next
    user's. Its requests may go through send()."""
    jar = http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    shared = httpx.AsyncClient(transport=made, trust_env=trust_env, cookies=jar, **options)
    # A proxy from the environment is one of the client's mounts, chosen per URL by the
    # client: only without one does every request go to `made`.
    if not trust_env or not urllib.request.getproxies():
        _direct[shared] = made
    return shared


async def send(shared: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
    """`shared.send(request, stream=True)` for a client from client(): the transport
    answers it directly. The client's own layers (auth and redirect flows, event hooks, the
    cookie jar's parsing of every response, the elapsed-time wrapper) cost a quarter of a
    millisecond of a turn's CPU and do nothing here: no auth, no redirect followed, no
    cookie kept. Any other client, or one with a proxy, sends as usual."""
    made = _direct.get(shared)
    if made is None or shared.is_closed:
        return await shared.send(request, stream=True)
    response = await made.handle_async_request(request)
    response.request = request
    return response

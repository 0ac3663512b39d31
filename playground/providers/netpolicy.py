"""Which addresses a custom endpoint may reach, checked at every connection, not only on save.

A custom endpoint's URL is typed by an admin, and every user's turn then makes the server
connect there: without a check it could read a cloud metadata service (169.254.169.254 hands
out credentials) or anything else the server can reach. A check when the URL is saved is not
enough, because the name can resolve elsewhere later (DNS rebinding). So the name is resolved
right before each connection, every answer is checked, and the socket is opened to the checked
address itself: there is no second lookup an attacker could answer differently. TLS still
verifies the certificate for the name in the URL (httpcore passes the URL's host as SNI and
server_hostname), and the Host header is the URL's host.

Spellings need no special parsing: getaddrinfo turns 2852039166, 0251.0376.0251.0376,
0xA9FEA9FE and 169.254.43518 into 169.254.169.254, and IPv6 forms that embed an IPv4 address
(::ffff:a.b.c.d, ::ffff:0:a.b.c.d, 64:ff9b::/96, 2002::/16, ::a.b.c.d) are unwrapped before
the check.

Pure Python + httpx/httpcore, like client.py: no Django. The policy comes in as an argument.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import ssl
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpcore
import httpx

from playground.providers import readpace

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Never reachable, whatever the setting: link-local (the metadata services of AWS, GCP,
# Azure and Oracle live at 169.254.169.254), the cloud metadata addresses outside it, and
# addresses that are not a single real host.
_METADATA = {
    ipaddress.ip_address("169.254.169.254"): "a cloud metadata address",
    ipaddress.ip_address("fd00:ec2::254"): "a cloud metadata address",  # AWS over IPv6
    ipaddress.ip_address("100.100.100.200"): "a cloud metadata address",  # Alibaba Cloud
    ipaddress.ip_address("168.63.129.16"): "a cloud metadata address",  # Azure wire server
}
_ALWAYS_REFUSED = [
    (ipaddress.ip_network("169.254.0.0/16"), "a link-local address"),
    (ipaddress.ip_network("fe80::/10"), "a link-local address"),
    (ipaddress.ip_network("0.0.0.0/8"), "an unspecified address"),
    (ipaddress.ip_network("::/128"), "an unspecified address"),
    (ipaddress.ip_network("224.0.0.0/4"), "a multicast address"),
    (ipaddress.ip_network("ff00::/8"), "a multicast address"),
    (ipaddress.ip_network("240.0.0.0/4"), "a reserved address"),
    # Local-use NAT64 (RFC 8215): where the IPv4 address sits depends on the translator's
    # prefix length, so it cannot be unwrapped and checked; Python 3.11 calls it global.
    (ipaddress.ip_network("64:ff9b:1::/48"), "a local-use NAT64 address"),
]
# Reachable only where PLAYGROUND_ENDPOINT_ALLOW_PRIVATE is on: teams run their own GPU boxes.
_PRIVATE = [
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
    ipaddress.ip_network("10.0.0.0/8"),
    ipaddress.ip_network("172.16.0.0/12"),
    ipaddress.ip_network("192.168.0.0/16"),
    ipaddress.ip_network("100.64.0.0/10"),  # carrier-grade NAT, often a VPN such as Tailscale
    ipaddress.ip_network("fc00::/7"),
]
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# IPv4-translated (SIIT, RFC 2765): Python 3.11 calls ::ffff:0:7f00:1 global, not loopback.
_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")


class AddressRefused(httpcore.ConnectError):
    """The endpoint's host is, or resolves to, an address the policy refuses. Never retried."""


class NameNotResolved(httpcore.ConnectError):
    """DNS has no address for the endpoint's host."""


class InvalidPort(httpcore.ConnectError):
    """The endpoint's URL names a port no TCP connection can have (a row saved before the
    check on save): refused here, where the socket would raise OverflowError instead."""


def unwrap(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 spelling carries, or the address itself."""
    if isinstance(address, ipaddress.IPv4Address):
        return address
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64 or address in _TRANSLATED:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    # The deprecated IPv4-compatible form ::a.b.c.d (but not :: and ::1 themselves).
    if int(address) >> 32 == 0 and int(address) > 1:
        return ipaddress.IPv4Address(int(address))
    return address


def refusal(address: IPAddress, allow_private: bool) -> str | None:
    """Why the policy refuses this address, or None when it may be connected to."""
    plain = unwrap(address)
    for candidate in {address, plain}:
        if candidate in _METADATA:
            return _METADATA[candidate]
        for network, why in _ALWAYS_REFUSED:
            if candidate.version == network.version and candidate in network:
                return why
    if any(plain.version == n.version and plain in n for n in _PRIVATE):
        if allow_private:
            return None
        return "a loopback or private address (PLAYGROUND_ENDPOINT_ALLOW_PRIVATE is off)"
    if not plain.is_global:
        return "not a public address"
    return None


@dataclass(frozen=True)
class AddressPolicy:
    allow_private: bool = False

    def check(self, host: str, addresses: Iterable[IPAddress]) -> None:
        """Raise AddressRefused if any address `host` resolved to is refused.

        All of them, not only the one used: a name that answers with a metadata address
        among others is refused outright."""
        for address in addresses:
            why = refusal(address, self.allow_private)
            if why:
                shown = host if host == str(address) else f"{host} ({address})"
                raise AddressRefused(f"The endpoint address {shown} is {why}; refused.")


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def _addresses(infos: list[tuple[Any, ...]]) -> list[IPAddress]:
    found: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    return found


async def resolve(host: str, port: int) -> list[IPAddress]:
    literal = _literal(host)
    if literal is not None:
        return [literal]
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise NameNotResolved(f"DNS: the name {host} does not resolve ({exc}).") from exc
    return _addresses(infos)


def resolve_now(host: str, port: int = 443) -> list[IPAddress]:
    """resolve() for sync code (checking a URL as it is saved)."""
    literal = _literal(host)
    if literal is not None:
        return [literal]
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise NameNotResolved(f"DNS: the name {host} does not resolve ({exc}).") from exc
    return _addresses(infos)


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore network backend: resolve, check, then connect to the checked address."""

    def __init__(
        self, policy: AddressPolicy, inner: httpcore.AsyncNetworkBackend | None = None
    ) -> None:
        self.policy = policy
        self.inner = inner or httpcore.AnyIOBackend()
        self.connected: list[str] = []  # addresses opened, newest last (tests read it)

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if not 0 < port < 65536:
            raise InvalidPort(
                f"The endpoint URL names port {port}; a port is between 1 and 65535: "
                "correct the base URL."
            )
        try:
            async with asyncio.timeout(timeout):
                addresses = await resolve(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"DNS: no answer for {host} in time.") from None
        self.policy.check(host, addresses)
        failure: Exception | None = None
        for address in addresses:
            try:
                stream = await self.inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except httpcore.ConnectError as exc:
                failure = exc
                continue
            del self.connected[:-20]
            self.connected.append(str(address))
            return stream
        assert failure is not None  # resolve() returns at least one address or raises
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise AddressRefused("Endpoints are reached over TCP only.")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()


def guarded_client(
    policy: AddressPolicy,
    *,
    keepalive_expiry: float = 4.0,
    timeout: httpx.Timeout | None = None,
    verify: ssl.SSLContext | None = None,
) -> httpx.AsyncClient:
    """An AsyncClient whose every new connection goes through the policy. No redirects are
    followed (a 3xx could point anywhere) and no proxy from the environment is used (the
    proxy, not us, would then pick the address)."""
    context = verify or _ssl_context()
    transport = readpace.transport(
        context, keepalive_expiry, GuardedBackend(policy), trust_env=False
    )
    return readpace.client(
        transport,
        follow_redirects=False,
        trust_env=False,
        timeout=timeout or httpx.Timeout(10.0),
    )


@dataclass
class _LoopClients:
    clients: dict[tuple[AddressPolicy, float], httpx.AsyncClient] = field(default_factory=dict)


# Pooled per event loop, like client.py's shards: a client's connections belong to the loop
# that opened them.
_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopClients] = (
    weakref.WeakKeyDictionary()
)


def pooled_client(policy: AddressPolicy, keepalive_expiry: float) -> httpx.AsyncClient:
    """The running loop's shared guarded client for this policy (streams reuse connections)."""
    loop = asyncio.get_running_loop()
    entry = _per_loop.get(loop)
    if entry is None:
        entry = _per_loop[loop] = _LoopClients()
    key = (policy, keepalive_expiry)
    client = entry.clients.get(key)
    if client is None or client.is_closed:
        client = entry.clients[key] = guarded_client(policy, keepalive_expiry=keepalive_expiry)
    return client


async def aclose_clients() -> None:
    entry = _per_loop.pop(asyncio.get_running_loop(), None)
    for client in entry.clients.values() if entry else []:
        await client.aclose()

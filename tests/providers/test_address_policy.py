"""Custom endpoints reach only the addresses the policy allows, checked at every connection."""

from __future__ import annotations

import ipaddress

import httpx
import pytest

from playground.providers import netpolicy, readpace
from playground.providers.client import (
    ConnectionProblem,
    Endpoint,
    StreamError,
    Timeouts,
    request_json,
    stream,
)
from tests.upstream import Behaviour, FakeUpstream

OPEN = netpolicy.AddressPolicy(allow_private=True)
CLOSED = netpolicy.AddressPolicy(allow_private=False)
FAST = Timeouts(connect=1.0, read=2.0, write=2.0, pool=2.0, backoff_base=0.01)
BODY = {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}

# Every spelling of the metadata address (and its neighbours) a URL can carry.
METADATA_SPELLINGS = [
    "169.254.169.254",
    "2852039166",  # decimal
    "0251.0376.0251.0376",  # octal
    "0xA9FEA9FE",  # hex
    "0xa9.0xfe.0xa9.0xfe",  # hex per byte
    "169.254.43518",  # two-part
    "0251.254.169.254",  # mixed octal
    "[::ffff:169.254.169.254]",  # IPv4-mapped
    "[::ffff:a9fe:a9fe]",  # IPv4-mapped, hex
    "[::169.254.169.254]",  # IPv4-compatible
    "[64:ff9b::a9fe:a9fe]",  # NAT64
    "[64:ff9b:1::a9fe:a9fe]",  # local-use NAT64 (RFC 8215): Python 3.11 calls it global
    "[2002:a9fe:a9fe::]",  # 6to4
    "[fd00:ec2::254]",  # AWS metadata over IPv6
    "169.254.0.1",  # anywhere in link-local
    "[fe80::1]",  # IPv6 link-local
    "100.100.100.200",  # Alibaba Cloud metadata
    "168.63.129.16",  # Azure wire server
    "0.0.0.0",
]
LOOPBACK_SPELLINGS = ["127.0.0.1", "2130706433", "0177.0.0.1", "0x7f.0.0.1", "[::1]", "127.1"]
PRIVATE_SPELLINGS = ["10.0.0.5", "172.16.3.4", "192.168.1.20", "[fd12:3456::1]", "100.64.0.9"]


async def refused_reason(host: str, policy: netpolicy.AddressPolicy, port: int = 80) -> str:
    endpoint = Endpoint(f"http://{host}:{port}/v1", policy=policy)
    with pytest.raises(ConnectionProblem) as caught:
        await request_json(endpoint, None, "GET", endpoint.url("models"), timeout=1.0)
    return caught.value.reason


def expected(host: str) -> str:
    # httpx itself rejects a few octal spellings as invalid URLs: no connection either way.
    try:
        httpx.URL(f"http://{host}/")
    except httpx.InvalidURL:
        return "url"
    return "address"


@pytest.mark.parametrize("host", METADATA_SPELLINGS)
async def test_metadata_and_link_local_are_refused_in_every_spelling(host: str) -> None:
    assert await refused_reason(host, OPEN) == expected(host)
    assert await refused_reason(host, CLOSED) == expected(host)


@pytest.mark.parametrize("host", METADATA_SPELLINGS)
def test_the_check_on_save_refuses_every_spelling_too(host: str) -> None:
    bare = host.strip("[]")
    with pytest.raises(netpolicy.AddressRefused):
        OPEN.check(bare, netpolicy.resolve_now(bare))


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS + PRIVATE_SPELLINGS)
async def test_loopback_and_private_are_refused_when_the_setting_is_off(host: str) -> None:
    assert await refused_reason(host, CLOSED) == expected(host)
    bare = host.strip("[]")
    with pytest.raises(netpolicy.AddressRefused):
        CLOSED.check(bare, netpolicy.resolve_now(bare))


@pytest.mark.parametrize("host", ["127.0.0.1", "2130706433", "0x7f.0.0.1", "127.1", "localhost"])
async def test_loopback_is_reached_when_the_setting_allows_it(
    upstream: FakeUpstream, host: str
) -> None:
    endpoint = Endpoint(f"http://{host}:{upstream.port}/v1", policy=OPEN)
    answer = await request_json(endpoint, None, "GET", endpoint.url("models"))
    assert answer.status == 200
    assert upstream.requests[-1].path == "/v1/models"


def test_the_refusal_names_the_reason() -> None:
    with pytest.raises(netpolicy.AddressRefused, match="cloud metadata"):
        OPEN.check("2852039166", [ipaddress.ip_address("169.254.169.254")])
    with pytest.raises(netpolicy.AddressRefused, match="PLAYGROUND_ENDPOINT_ALLOW_PRIVATE"):
        CLOSED.check("gpu-box", [ipaddress.ip_address("10.1.2.3")])
    OPEN.check("gpu-box", [ipaddress.ip_address("10.1.2.3")])
    CLOSED.check("api.example", [ipaddress.ip_address("93.184.215.14")])


@pytest.mark.parametrize(
    ("spelling", "carried"),
    [
        ("::ffff:0:7f00:1", "loopback or private"),
        ("::ffff:0:a00:5", "loopback or private"),
        ("::ffff:0:a9fe:a9fe", "cloud metadata"),
        ("::ffff:0:a9fe:1", "link-local"),
    ],
)
def test_ipv4_translated_addresses_are_checked_as_the_ipv4_address_they_carry(
    spelling: str, carried: str
) -> None:
    # ::ffff:0:a.b.c.d (SIIT, RFC 2765) carries an IPv4 address; Python calls the range
    # global. The policy alone is asked: no connection is made to any of these.
    address = ipaddress.ip_address(spelling)
    assert carried in (netpolicy.refusal(address, allow_private=False) or "")
    assert netpolicy.unwrap(address) == ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    with pytest.raises(netpolicy.AddressRefused):
        CLOSED.check(spelling, netpolicy.resolve_now(spelling))
    assert netpolicy.refusal(ipaddress.ip_address("::ffff:0:808:808"), False) is None


def test_one_bad_answer_among_good_ones_refuses_the_name() -> None:
    answers = [ipaddress.ip_address("10.0.0.2"), ipaddress.ip_address("169.254.169.254")]
    with pytest.raises(netpolicy.AddressRefused):
        OPEN.check("two-faced.example", answers)


async def test_the_name_is_resolved_again_at_every_connection_and_a_rebind_is_refused(
    upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Saved while it pointed at the GPU box, then the name moves to the metadata service:
    the next connection checks the new answer and is refused."""
    answers = iter(["127.0.0.1", "169.254.169.254"])
    asked: list[str] = []

    async def rebinding(host: str, port: int) -> list[netpolicy.IPAddress]:
        asked.append(host)
        return [ipaddress.ip_address(next(answers))]

    monkeypatch.setattr(netpolicy, "resolve", rebinding)
    endpoint = Endpoint(f"http://gpu-box.test:{upstream.port}/v1", policy=OPEN)
    first = await request_json(endpoint, None, "GET", endpoint.url("models"))
    assert first.status == 200
    # The connection went to the checked address, while Host still names the server.
    assert upstream.requests[-1].headers["host"] == f"gpu-box.test:{upstream.port}"
    with pytest.raises(ConnectionProblem) as caught:
        await request_json(endpoint, None, "GET", endpoint.url("models"))
    assert caught.value.reason == "address"
    assert asked == ["gpu-box.test", "gpu-box.test"]
    assert len(upstream.requests) == 1


async def test_the_socket_goes_to_the_address_that_was_checked(
    upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No second lookup: the name is resolved once, by us, and the socket opened to that IP."""
    lookups: list[str] = []

    async def once(host: str, port: int) -> list[netpolicy.IPAddress]:
        lookups.append(host)
        return [ipaddress.ip_address("127.0.0.1")]

    monkeypatch.setattr(netpolicy, "resolve", once)
    client = netpolicy.guarded_client(OPEN)
    async with client:
        response = await client.get(f"http://does-not-exist.invalid:{upstream.port}/v1/models")
    assert response.status_code == 200  # .invalid never resolves: only our answer was used
    paced = client._transport._pool._network_backend  # type: ignore[attr-defined]
    assert isinstance(paced, readpace.PacedBackend)
    backend = paced.inner
    assert isinstance(backend, netpolicy.GuardedBackend)
    assert backend.connected == ["127.0.0.1"] and lookups == ["does-not-exist.invalid"]


async def test_a_stream_to_a_refused_address_fails_at_once_without_retries() -> None:
    endpoint = Endpoint("http://0xA9FEA9FE/v1", policy=OPEN)
    events = [e async for e in stream(endpoint, None, BODY, timeouts=FAST)]
    assert len(events) == 1 and isinstance(events[0], StreamError)
    assert "cloud metadata" in events[0].error.message


async def test_streams_through_the_policy_reach_an_allowed_server(upstream: FakeUpstream) -> None:
    endpoint = Endpoint(upstream.base_url, policy=OPEN)
    events = [e async for e in stream(endpoint, None, BODY, timeouts=FAST)]
    assert not any(isinstance(e, StreamError) for e in events)
    refused = Endpoint(upstream.base_url, policy=CLOSED)
    events = [e async for e in stream(refused, None, BODY, timeouts=FAST)]
    assert isinstance(events[-1], StreamError)
    assert "PLAYGROUND_ENDPOINT_ALLOW_PRIVATE" in events[-1].error.message
    assert len(upstream.requests) == 1


async def test_redirects_are_not_followed(upstream: FakeUpstream) -> None:
    upstream.script(Behaviour(status=302, headers={"Location": "http://169.254.169.254/"}))
    endpoint = Endpoint(upstream.base_url, policy=OPEN)
    events = [e async for e in stream(endpoint, None, BODY, timeouts=FAST)]
    assert isinstance(events[-1], StreamError) and "302" in events[-1].error.message
    assert len(upstream.requests) == 1


async def test_unix_sockets_are_refused() -> None:
    backend = netpolicy.GuardedBackend(OPEN)
    with pytest.raises(netpolicy.AddressRefused):
        await backend.connect_unix_socket("/run/docker.sock")


def test_the_setting_defaults_on_only_in_the_embedded_default() -> None:
    import os
    import subprocess
    import sys

    code = "from django.conf import settings; print(settings.PLAYGROUND_ENDPOINT_ALLOW_PRIVATE)"
    env = {k: v for k, v in os.environ.items() if k != "PLAYGROUND_ENDPOINT_ALLOW_PRIVATE"}
    env["DJANGO_SETTINGS_MODULE"] = "playground.settings"
    embedded = {k: v for k, v in env.items() if k != "DATABASE_URL"}
    team = {**env, "DATABASE_URL": "postgres://u:p@127.0.0.1:5432/x"}

    def read(environ: dict[str, str]) -> str:
        run = [sys.executable, "-c", f"import django; django.setup(); {code}"]
        return subprocess.run(run, env=environ, capture_output=True, text=True).stdout.strip()

    assert read(embedded) == "True"
    assert read(team) == "False"
    assert read({**team, "PLAYGROUND_ENDPOINT_ALLOW_PRIVATE": "on"}) == "True"


def self_signed(tmp_path, name: str) -> tuple[str, str]:
    """A certificate for `name` only (not for 127.0.0.1), and its key, as PEM files."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


async def test_tls_to_the_checked_address_still_verifies_the_urls_name(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The socket goes to the checked IP, but SNI and certificate checks use the URL's host."""
    import asyncio
    import ssl

    cert, key = self_signed(tmp_path, "gpu-box.test")
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    seen_sni: list[str | None] = []
    server_context.sni_callback = lambda sock, name, ctx: seen_sni.append(name)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]

    async def to_loopback(host: str, port: int) -> list[netpolicy.IPAddress]:
        return [ipaddress.ip_address("127.0.0.1")]

    monkeypatch.setattr(netpolicy, "resolve", to_loopback)
    trusting = ssl.create_default_context(cafile=cert)
    async with server:
        async with netpolicy.guarded_client(OPEN, verify=trusting) as client:
            response = await client.get(f"https://gpu-box.test:{port}/v1/models")
        assert response.status_code == 200 and response.text == "ok"
        assert seen_sni == ["gpu-box.test"]
        # The same server by its IP fails verification: the name, not the address, is checked.
        async with netpolicy.guarded_client(OPEN, verify=trusting) as client:
            with pytest.raises(httpx.ConnectError):
                await client.get(f"https://127.0.0.1:{port}/v1/models")


async def test_a_port_out_of_range_is_a_connection_error_not_a_crash() -> None:
    # A row saved before the URL's port was checked on save: the socket would raise
    # OverflowError, which no caller expects.
    backend = netpolicy.GuardedBackend(OPEN)
    with pytest.raises(netpolicy.InvalidPort, match="port 70000"):
        await backend.connect_tcp("127.0.0.1", 70000)
    endpoint = Endpoint("http://127.0.0.1:70000/v1", policy=OPEN)
    with pytest.raises(ConnectionProblem) as caught:
        await request_json(endpoint, None, "GET", endpoint.url("models"), timeout=1.0)
    assert caught.value.reason == "url" and "port 70000" in caught.value.message
    events = [e async for e in stream(endpoint, None, BODY, timeouts=FAST)]
    assert len(events) == 1 and isinstance(events[0], StreamError)
    assert "port 70000" in events[0].error.message

"""Test connection, Discover models, Probe and /tokenize against the fake upstream."""

from __future__ import annotations

import socket
import threading

import pytest

from playground.providers import discovery, netpolicy, specs
from playground.providers.client import Endpoint
from tests.upstream import Behaviour, FakeUpstream

OPEN = netpolicy.AddressPolicy(allow_private=True)
KEY = "sk-lab-0123456789"


@pytest.fixture
def upstream(server: FakeUpstream) -> FakeUpstream:
    server.reset()
    server.default = Behaviour(tokens=["OK"])
    return server


def lab(upstream: FakeUpstream) -> Endpoint:
    return Endpoint(upstream.base_url, policy=OPEN)


async def test_a_reachable_server_gets_a_full_verdict(upstream: FakeUpstream) -> None:
    verdict = await discovery.test_connection(lab(upstream), None)
    assert verdict.ok and verdict.reachable and verdict.auth_ok
    assert verdict.models == 2 and verdict.rtt_ms is not None and verdict.rtt_ms >= 0
    assert "2 models listed" in verdict.message
    assert len(upstream.requests) == 1  # one request


async def test_a_wrong_key_is_told_as_401(upstream: FakeUpstream) -> None:
    upstream.require_key = KEY
    verdict = await discovery.test_connection(lab(upstream), "sk-wrong-key-000")
    assert (verdict.ok, verdict.reason, verdict.reachable, verdict.auth_ok) == (
        False,
        "401",
        True,
        False,
    )
    assert "Invalid API Key" in verdict.message and "sk-wrong" not in verdict.message
    assert (await discovery.test_connection(lab(upstream), KEY)).ok
    assert upstream.requests[-1].headers["authorization"] == f"Bearer {KEY}"


async def test_nothing_listening_is_told_as_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    verdict = await discovery.test_connection(
        Endpoint(f"http://127.0.0.1:{port}/v1", policy=OPEN), None
    )
    assert (verdict.ok, verdict.reason) == (False, "refused")


async def test_an_unknown_name_is_told_as_dns() -> None:
    verdict = await discovery.test_connection(
        Endpoint("http://gpu-box.invalid/v1", policy=OPEN), None
    )
    assert (verdict.ok, verdict.reason) == (False, "dns")
    assert "gpu-box.invalid" in verdict.message


async def test_a_silent_server_is_told_as_timeout() -> None:
    with socket.socket() as sock:  # listens, never accepts an HTTP exchange
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        endpoint = Endpoint(f"http://127.0.0.1:{sock.getsockname()[1]}/v1", policy=OPEN)
        answer_in = 0.3
        problem = None
        try:
            await discovery.request_json(
                endpoint, None, "GET", endpoint.url("models"), timeout=answer_in
            )
        except discovery.ConnectionProblem as exc:
            problem = exc
    assert problem is not None and problem.reason == "timeout"


async def test_a_plain_http_server_behind_https_is_told_as_tls() -> None:
    """A server that answers a TLS hello in plain HTTP, as when https:// is given for http."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)

        def answer_in_plain_text() -> None:
            conn, _ = sock.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

        thread = threading.Thread(target=answer_in_plain_text, daemon=True)
        thread.start()
        endpoint = Endpoint(f"https://127.0.0.1:{sock.getsockname()[1]}/v1", policy=OPEN)
        verdict = await discovery.test_connection(endpoint, None)
        thread.join(2)
    assert (verdict.ok, verdict.reason) == (False, "tls")
    assert verdict.message.startswith("TLS:")


async def test_a_metadata_address_is_told_as_address() -> None:
    verdict = await discovery.test_connection(Endpoint("http://2852039166/v1", policy=OPEN), None)
    assert (verdict.ok, verdict.reason) == (False, "address")


async def test_discover_lists_models_with_vllm_context_windows(upstream: FakeUpstream) -> None:
    listed = await discovery.discover(lab(upstream), None)
    assert [m.id for m in listed] == ["gemma-3-27b-it", "gemma-3-4b-it"]
    assert {m.context_window for m in listed} == {8192}
    upstream.max_model_len = None  # llama.cpp gives none: entered by hand
    assert {m.context_window for m in await discovery.discover(lab(upstream), None)} == {None}


async def test_probe_records_what_a_llama_cpp_like_server_refuses(upstream: FakeUpstream) -> None:
    upstream.refuse = {
        "json_schema": "Input should be 'text' or 'json_object'",
        "image_url": "image input is not supported by this server",
    }
    upstream.default = Behaviour(tokens=["OK"], reasoning=["hmm"])
    results = await discovery.probe(lab(upstream), None, "gemma-3-4b-it")
    assert results["basic"]["ok"]
    assert results[specs.TOOLS]["ok"] and results[specs.LOGPROBS]["ok"]
    assert results[specs.THINKING]["ok"]
    assert not results[specs.JSON_SCHEMA]["ok"]
    assert "Input should be 'text' or 'json_object'" in results[specs.JSON_SCHEMA]["detail"]
    assert not results[specs.IMAGES]["ok"]
    assert results["tokenize"]["ok"]
    sent = [r.body for r in upstream.requests if r.path.endswith("/chat/completions")]
    assert all(b["max_tokens"] <= 16 and b["stream"] is False for b in sent)


async def test_probe_stops_when_even_a_plain_request_fails(upstream: FakeUpstream) -> None:
    upstream.default = Behaviour(status=404)
    results = await discovery.probe(lab(upstream), None, "nope")
    assert list(results) == ["basic"] and not results["basic"]["ok"]


async def test_tokenize_reads_both_servers_shapes(upstream: FakeUpstream) -> None:
    assert await discovery.count_tokens(lab(upstream), None, "m", "one two three") == 3
    body = upstream.requests[-1].body
    assert upstream.requests[-1].path == "/tokenize" and body["content"] == body["prompt"]
    upstream.tokenize = False
    assert await discovery.count_tokens(lab(upstream), None, "m", "one two") is None


async def test_probe_finds_which_wire_formats_the_server_answers(upstream: FakeUpstream) -> None:
    upstream.default = Behaviour(tokens=["OK"])
    upstream.formats = {"chat", "messages"}  # like llama.cpp's server: no /v1/responses
    try:
        results = await discovery.probe(lab(upstream), "k-1", "gemma-3-4b-it")
    finally:
        upstream.formats = {"chat", "responses", "messages"}
    assert results[specs.MESSAGES]["ok"] and not results[specs.RESPONSES]["ok"]
    assert "refused (404)" in results[specs.RESPONSES]["detail"]
    asked = {r.path: r for r in upstream.requests}
    messages = asked["/v1/messages"]
    assert messages.body["max_tokens"] == 1 and "stream" not in messages.body
    assert messages.headers["x-api-key"] == "k-1" and "anthropic-version" in messages.headers
    assert asked["/v1/responses"].body["max_output_tokens"] == 16

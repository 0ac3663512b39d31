"""View code: each snippet, run for real against the fake upstream, sends the same body."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

import pytest

from playground.chat import export
from playground.providers import formats
from playground.providers.specs import GEMMA_4_E4B
from tests import upstream as fake
from tests.conftest import SECRET_KEY_VALUE
from tests.html import attr, find_all

BODY = {
    "model": "gemma-4-e4b",
    "messages": [
        {"role": "system", "content": "Be brief. Quote 'single' and \"double\"; $HOME stays."},
        {"role": "user", "content": "Ünïcode ✓ and a\nnewline"},
    ],
    "temperature": 0.3,
    "seed": 42,
    "stop": ["\n\n", "END"],
    "enable_thinking": False,
    "min_p": 0.05,
    "logprobs": True,
    "top_logprobs": 3,
    "stream": True,
    "stream_options": {"include_usage": True},
}


def run_snippet(kind: str, code: str, base_url: str) -> subprocess.CompletedProcess:
    code = code.replace("https://api.empiriolabs.ai/v1", base_url)
    env = dict(os.environ, EMPIRIOLABS_API_KEY="env-key-123")
    command = ["bash", "-c", code] if kind == "curl" else [sys.executable, "-c", code]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("kind", ["curl", "openai", "httpx"])
def test_each_snippet_sends_exactly_the_saved_request(kind, upstream, settings):
    settings.PLAYGROUND_PROVIDER_BASE_URLS = {}
    code = {k: c for k, _, c in export.snippets(BODY, GEMMA_4_E4B)}[kind]
    assert "$EMPIRIOLABS_API_KEY" in code or "EMPIRIOLABS_API_KEY" in code
    result = run_snippet(kind, code, upstream.base_url)
    assert result.returncode == 0, result.stderr
    received = upstream.requests[-1]
    assert received.body == BODY
    assert received.headers["authorization"] == "Bearer env-key-123"
    if kind != "curl":
        assert result.stdout.strip() == upstream.default.text


def test_no_snippet_contains_a_key(settings):
    settings.PLAYGROUND_PROVIDER_BASE_URLS = {}
    for fmt in GEMMA_4_E4B.formats:
        for _, _, code in export.snippets(FORMAT_BODY, GEMMA_4_E4B, fmt):
            assert SECRET_KEY_VALUE not in code
            assert "https://api.empiriolabs.ai" in code


def test_no_snippet_shows_the_credentials_of_a_proxy_url(settings):
    # A deployment routes the provider through a gateway whose URL carries its password
    # (PLAYGROUND_PROVIDER_BASE_URLS): every reader of a reply's code would see it.
    settings.PLAYGROUND_PROVIDER_BASE_URLS = {
        "empiriolabs": "https://gw:hunter2-GW@gateway.internal:8443/v1"
    }
    for fmt in GEMMA_4_E4B.formats:
        for _, _, code in export.snippets(FORMAT_BODY, GEMMA_4_E4B, fmt):
            assert "hunter2" not in code and "gw:" not in code
            assert "https://gateway.internal:8443" in code


# Parameters each of the other formats carries, in the playground's saved shape.
FORMAT_BODY = {
    "model": "gemma-4-e4b",
    "messages": [
        {"role": "system", "content": "Be brief. Quote 'single' and \"double\"; $HOME stays."},
        {"role": "user", "content": "Ünïcode ✓ and a\nnewline"},
    ],
    "temperature": 0.3,
    "top_p": 0.9,
    "max_tokens": 2000,
    "reasoning_effort": "low",
    "stream": True,
    "stream_options": {"include_usage": True},
}
MESSAGES_BODY = {**FORMAT_BODY, "stop": ["END"], "enable_thinking": True, "thinking_budget": 1024}


@pytest.mark.parametrize(
    ("fmt", "kind", "body"),
    [
        ("responses", "curl", FORMAT_BODY),
        ("responses", "openai", FORMAT_BODY),
        ("responses", "httpx", FORMAT_BODY),
        ("messages", "curl", MESSAGES_BODY),
        ("messages", "anthropic", MESSAGES_BODY),
        ("messages", "httpx", MESSAGES_BODY),
    ],
)
def test_each_formats_snippets_send_the_body_the_playground_sends(
    fmt, kind, body, upstream, settings
):
    settings.PLAYGROUND_PROVIDER_BASE_URLS = {}
    code = {k: c for k, _, c in export.snippets(body, GEMMA_4_E4B, fmt)}[kind]
    code = code.replace("https://api.empiriolabs.ai", upstream.base_url.removesuffix("/v1"))
    env = dict(os.environ, EMPIRIOLABS_API_KEY="env-key-123")
    command = ["bash", "-c", code] if kind == "curl" else [sys.executable, "-c", code]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    received = upstream.requests[-1]
    assert received.path == f"/v1{formats.PATHS[fmt]}"
    assert received.body == formats.to_wire(GEMMA_4_E4B, fmt, body)
    assert fake._key_from(received.headers) == "env-key-123"
    if fmt == "messages":
        assert received.headers["anthropic-version"] == formats.ANTHROPIC_VERSION
        assert "responses.create" not in code
    if kind == "openai":
        assert "client.responses.create(**request)" in code
    if kind == "anthropic":
        assert "client.messages.create(**request, extra_body=extra_body)" in code
    if kind != "curl":
        assert result.stdout.strip() == upstream.default.text


def test_the_curl_snippet_quotes_a_base_url_the_shell_would_run(upstream, settings, tmp_path):
    from playground.providers.specs import Provider

    settings.PLAYGROUND_PROVIDER_BASE_URLS = {}
    marker = tmp_path / "ran"
    base_url = f"{upstream.base_url}?x=$(touch {marker})&y=1"
    code = export.as_curl(BODY, Provider("lab-vllm", "Lab", base_url))
    run_snippet("curl", code, upstream.base_url)  # curl refuses that URL: the shell must not
    assert not marker.exists()
    assert shlex.split(code.splitlines()[0].rstrip("\\"))[1] == f"{base_url}/chat/completions"


def test_a_custom_endpoint_gets_its_own_variable_name():
    from playground.providers.specs import Provider

    assert export.key_variable(Provider("lab-vllm", "Lab", "http://x/v1")) == "LAB_VLLM_API_KEY"


@pytest.mark.django_db
def test_view_code_shows_all_three_snippets_for_a_reply(client, user, conversation, settings):
    from playground.chat.models import Message

    settings.PLAYGROUND_PROVIDER_BASE_URLS = {}
    reply = Message.objects.create(
        conversation=conversation,
        role="assistant",
        model="empiriolabs:gemma-4-e4b",
        request_body=BODY,
    )
    client.force_login(user)
    page = client.get(f"/m/{reply.pk}/code/", headers={"HX-Request": "true"}).content.decode()
    assert len(find_all(page, "div", class_="snippet")) == 3
    assert "chat.completions.create" in page
    copies = [attr(button, "data-copy") for button in find_all(page, "button", data_copy=True)]
    assert "$EMPIRIOLABS_API_KEY" in page and copies
    assert all(copy.startswith(f"code-{reply.pk}-") for copy in copies)
    assert "extra_body" in page  # enable_thinking and min_p are not openai SDK keywords


@pytest.mark.django_db
def test_view_code_of_another_users_reply_is_404(client, other_user, conversation):
    from playground.chat.models import Message

    reply = Message.objects.create(
        conversation=conversation,
        role="assistant",
        model="empiriolabs:gemma-4-e4b",
        request_body=BODY,
    )
    client.force_login(other_user)
    assert client.get(f"/m/{reply.pk}/code/").status_code == 404


@pytest.mark.django_db
def test_view_code_of_a_messages_reply_shows_the_anthropic_snippet(
    client, user, conversation, settings
):
    from playground.chat.models import Message

    settings.PLAYGROUND_PROVIDER_BASE_URLS = {}
    reply = Message.objects.create(
        conversation=conversation,
        role="assistant",
        model="empiriolabs:gemma-4-e4b",
        wire_format="messages",
        request_body=MESSAGES_BODY,
    )
    client.force_login(user)
    page = client.get(f"/m/{reply.pk}/code/", headers={"HX-Request": "true"}).content.decode()
    assert "messages.create" in page and "/v1/messages" in page
    assert "chat.completions" not in page and "budget_tokens" in page

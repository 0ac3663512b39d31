"""A known key, and the passwords in URL settings, go through every path; none comes out."""

from __future__ import annotations

import json
import logging

import pytest
from channels.db import database_sync_to_async
from django.test import AsyncClient, Client

from playground.accounts import crypto
from playground.accounts.models import ApiKey
from playground.chat.models import Message
from tests.conftest import SECRET_KEY_VALUE
from tests.upstream import Behaviour

# The whole key, and the part of it that the page never shows (all but the last four).
NEEDLES = (SECRET_KEY_VALUE, SECRET_KEY_VALUE[:-4])


def assert_clean(where: str, text: str) -> None:
    for needle in NEEDLES:
        assert needle not in text, f"the API key leaked into {where}"


def broken_encrypt(plaintext, keys=None):
    # Far from the test's own lines: the debug page shows source around every frame.
    raise RuntimeError("disk on fire")


@pytest.mark.django_db(transaction=True)
async def test_the_key_never_reaches_a_page_frame_log_or_error(
    upstream, user, api_key, conversation, connect, caplog
):
    caplog.set_level(logging.DEBUG)
    upstream.script(
        Behaviour(tokens=["Fine", "."]),
        Behaviour(status=401, echo_key_in_error=True),
        Behaviour(status=400, echo_key_in_error=True),
        Behaviour(tokens=["a", "b", "c"], mid_stream_error={"message": "boom"}, error_after=1),
    )
    ok, socket = await connect(user, conversation.pk)
    for prompt, status in [
        ("one", "complete"),
        ("two", "error"),
        ("three", "error"),
        ("four", "error"),
    ]:
        await socket.send_prompt(prompt)
        await socket.until(lambda f, s=status: f"status-{s}" in f)
    # The upstream really got the key, and really echoed it back.
    assert upstream.requests[1].headers["authorization"] == f"Bearer {SECRET_KEY_VALUE}"

    for frame in socket.frames:
        assert_clean("a WebSocket frame", frame)
    async for message in Message.objects.filter(conversation=conversation):
        assert_clean(
            "a saved message", json.dumps(message.request_body) + message.error + message.text
        )
    errors = [m.error async for m in Message.objects.exclude(error="")]
    assert len(errors) == 3 and any("API key" in e for e in errors)

    await database_sync_to_async(user.__class__.objects.filter(pk=user.pk).update)(
        is_staff=True, is_superuser=True
    )
    web = AsyncClient()
    await web.aforce_login(user)
    for path in [
        f"/c/{conversation.pk}/",
        "/keys/",
        "/admin/accounts/apikey/",
        f"/admin/accounts/apikey/{api_key.pk}/change/",
    ]:
        response = await web.get(path)
        assert response.status_code == 200, path
        assert_clean(f"the page {path}", response.content.decode())

    for record in caplog.records:
        assert_clean("a log line", record.getMessage() + str(record.exc_info or ""))
    assert_clean("the log", caplog.text)


@pytest.mark.django_db
def test_the_key_is_not_on_the_debug_page_when_saving_fails(settings, user, monkeypatch):
    settings.DEBUG = True

    def broken(plaintext, keys=None):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(crypto, "encrypt", broken)
    client = Client(raise_request_exception=False)
    client.force_login(user)
    response = client.post("/keys/", {"provider": "empiriolabs", "key": SECRET_KEY_VALUE})
    assert response.status_code == 500
    page = response.content.decode()
    assert "disk on fire" in page  # it really is the debug page, with frames and locals
    assert_clean("the debug page", page)
    assert not ApiKey.objects.exists()


@pytest.mark.django_db
def test_the_key_is_not_on_the_debug_page_when_a_send_fails(settings, user, api_key, monkeypatch):
    """A failure after decryption (here: creating the rows) must not show the plaintext."""
    from django.views.debug import ExceptionReporter

    from playground.chat import services
    from playground.chat.models import Conversation

    conversation = Conversation.objects.create(owner=user, model="empiriolabs:gemma-4-e4b")

    def broken(*args, **kwargs):
        raise RuntimeError("database on fire")

    monkeypatch.setattr(services, "_insert", broken)  # the rows are written through it
    settings.DEBUG = True
    try:
        services.start_turn(
            conversation,
            user,
            text="hi",
            model_key=conversation.model,
            system_prompt="",
            channel="run.x",
        )
    except RuntimeError as exc:
        import sys

        report = ExceptionReporter(None, *sys.exc_info()).get_traceback_html()
        assert "database on fire" in report and "api_key" in report
        assert_clean("the debug traceback", report)
        assert_clean("the exception", repr(exc))
    else:
        pytest.fail("start_turn should have failed")


@pytest.mark.django_db
def test_credentials_in_url_settings_are_not_on_the_debug_page(settings, user, monkeypatch):
    settings.DEBUG = True
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [{"address": "redis://:hunter2-REDIS@redis.internal:6379/0"}]},
        }
    }
    settings.PLAYGROUND_ARCHIVE_URL = "postgres://ada:hunter2-PG@db.internal/archive"

    monkeypatch.setattr(crypto, "encrypt", broken_encrypt)
    client = Client(raise_request_exception=False)
    client.force_login(user)
    response = client.post("/keys/", {"provider": "empiriolabs", "key": "sk-valid-looking-key"})
    page = response.content.decode()
    assert response.status_code == 500 and "disk on fire" in page
    # The settings really are on the page, only without their passwords.
    assert "redis.internal:6379" in page and "db.internal/archive" in page
    assert "hunter2" not in page

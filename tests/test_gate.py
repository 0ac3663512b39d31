"""The one middleware in front of the consumers (gate.py): the checks of the stack it
replaced, in one frame per socket."""

from __future__ import annotations

import asyncio

import pytest
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.core.exceptions import ImproperlyConfigured
from django.urls import path

from playground.chat.consumers import ConversationConsumer
from playground.gate import SocketGate
from tests.conftest import ORIGIN

pytestmark = [pytest.mark.django_db(transaction=True)]


def awaited_frames(task: asyncio.Future) -> list[str]:
    """The coroutines an application task is suspended in, outermost first."""
    names = []
    coro = task.get_coro()  # type: ignore[attr-defined]
    while coro is not None and hasattr(coro, "cr_code"):
        names.append(coro.cr_code.co_qualname)
        coro = coro.cr_await
    return names


async def test_an_open_socket_waits_in_one_middleware_frame(user, conversation, connect):
    connected, socket = await connect(user, conversation.pk)
    assert connected
    assert "transcript" in await socket.receive()
    frames = awaited_frames(socket.communicator.future)
    # ProtocolTypeRouter, the gate, then the consumer's own (as_asgi's app, __call__, ...).
    assert frames[:2] == ["ProtocolTypeRouter.__call__", "SocketGate.__call__"], frames
    assert frames[2] == "AsyncConsumer.as_asgi.<locals>.app", frames
    assert not any("Middleware" in name or "Validator" in name for name in frames), frames


async def test_the_consumer_gets_the_user_session_cookies_and_route(user, conversation, connect):
    connected, socket = await connect(user, conversation.pk)
    assert connected
    scope = socket.communicator.scope
    inner = socket.communicator.future.get_coro().cr_await.cr_await.cr_frame.f_locals["scope"]
    assert inner["user"] == user
    assert inner["session"].session_key in scope_cookie(scope)
    assert inner["url_route"] == {"args": (), "kwargs": {"pk": conversation.pk}}
    assert "sessionid" in inner["cookies"]


def scope_cookie(scope) -> str:
    return dict(scope["headers"])[b"cookie"].decode()


async def test_an_unknown_path_is_refused(user):
    from playground.asgi import application

    communicator = WebsocketCommunicator(
        application, "/ws/nowhere/", headers=[(b"host", b"127.0.0.1:8000"), (b"origin", ORIGIN)]
    )
    with pytest.raises(ValueError, match="No route found"):
        await communicator.connect(timeout=5)


async def test_an_origin_outside_allowed_hosts_is_refused_before_the_same_origin_check(
    settings, user, conversation, connect
):
    # Same host and port as the Host header, so only the ALLOWED_HOSTS check can refuse it.
    settings.ALLOWED_HOSTS = ["example.com"]
    from playground.asgi import application

    gate = SocketGate(application.application_mapping["websocket"].routes)
    communicator = WebsocketCommunicator(
        gate,
        f"/ws/conversations/{conversation.pk}/",
        headers=[(b"host", b"127.0.0.1:8000"), (b"origin", ORIGIN)],
    )
    connected, _ = await communicator.connect(timeout=5)
    assert not connected


def test_a_router_inside_the_gate_is_refused():
    with pytest.raises(ImproperlyConfigured):
        SocketGate([path("ws/", URLRouter([path("x/", ConversationConsumer.as_asgi())]))])


@pytest.mark.parametrize("origin", [b"http://[::1", b"http://127.0.0.1:8000\xff"])
async def test_an_origin_no_url_parser_reads_is_refused_not_an_error(
    user, conversation, connect, origin
):
    connected, _ = await connect(user, conversation.pk, origin=origin)
    assert not connected

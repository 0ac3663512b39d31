"""Who may open, watch, run and change a conversation: on every socket and every view."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from playground.accounts.models import Membership, Team
from playground.chat.models import Conversation, Message

pytestmark = [pytest.mark.django_db(transaction=True)]


async def cut_off(socket) -> bool:
    """Told that it no longer has access, then closed with 4403, and nothing in between."""
    told = await socket.communicator.receive_output(timeout=2)
    closed = await socket.communicator.receive_output(timeout=2)
    return (
        told["type"] == "websocket.send"
        and "no longer have access" in told["text"]
        and closed == {"type": "websocket.close", "code": 4403}
    )


async def test_it_refuses_an_anonymous_socket(conversation, connect):
    ok, _ = await connect(None, conversation.pk)
    assert not ok


async def test_it_rejects_foreign_origin(user, conversation, connect):
    ok, _ = await connect(user, conversation.pk, origin=b"https://evil.example")
    assert not ok


async def test_it_rejects_null_origin(user, conversation, connect):
    ok, _ = await connect(user, conversation.pk, origin=b"null")
    assert not ok


async def test_it_rejects_another_port_on_the_same_host(user, conversation, connect):
    # The host is allowed, but a page on :3000 is another site than the one on :8000.
    ok, _ = await connect(user, conversation.pk, origin=b"http://127.0.0.1:3000")
    assert not ok


async def test_it_rejects_an_origin_without_its_port(user, conversation, connect):
    ok, _ = await connect(user, conversation.pk, origin=b"http://127.0.0.1")
    assert not ok


async def test_it_accepts_an_origin_listed_in_csrf_trusted_origins(
    settings, user, conversation, connect
):
    # Behind a proxy that rewrites Host, the public origin is the one trusted for CSRF.
    settings.CSRF_TRUSTED_ORIGINS = ["https://localhost:8443"]
    ok, socket = await connect(user, conversation.pk, origin=b"https://localhost:8443")
    assert ok
    await socket.close()
    ok, _ = await connect(user, conversation.pk, origin=b"https://localhost:9443")
    assert not ok


async def test_it_rejects_a_socket_without_origin(user, conversation, connect):
    ok, _ = await connect(user, conversation.pk, origin=None)
    assert not ok


async def test_it_refuses_another_users_conversation_by_id(other_user, conversation, connect):
    ok, _ = await connect(other_user, conversation.pk)
    assert not ok


async def test_it_refuses_a_conversation_that_does_not_exist(user, connect):
    ok, _ = await connect(user, 999999)
    assert not ok


async def test_it_checks_permission_on_every_message(
    upstream, user, api_key, conversation, connect
):
    ok, socket = await connect(user, conversation.pk)
    assert ok
    await socket.drain()
    await conversation.adelete()
    await socket.send_prompt("Still here?")
    assert await cut_off(socket)
    assert upstream.requests == []


async def test_a_deactivated_user_is_cut_off_at_the_next_message(
    upstream, user, api_key, conversation, connect
):
    ok, socket = await connect(user, conversation.pk)
    await socket.drain()
    user.is_active = False
    await user.asave()
    await socket.send_prompt("Hi")
    assert await cut_off(socket)
    assert await Message.objects.acount() == 0


@database_sync_to_async
def team_conversation(owner, member, role):
    team = Team.objects.create(name="Lab")
    Membership.objects.create(team=team, user=owner, role=Membership.Role.OWNER)
    Membership.objects.create(team=team, user=member, role=role)
    return Conversation.objects.create(owner=owner, team=team, model="empiriolabs:gemma-4-e4b")


async def test_a_team_viewer_can_watch_but_not_send_or_stop(
    upstream, user, other_user, api_key, connect
):
    shared = await team_conversation(user, other_user, Membership.Role.VIEWER)
    ok, socket = await connect(other_user, shared.pk)
    assert ok
    await socket.drain()
    await socket.send_prompt("Hi")
    assert "watch this conversation but not run" in await socket.until(
        lambda f: "composer-error" in f
    )
    await socket.send(action="stop")
    assert "not stop" in await socket.until(lambda f: "composer-error" in f)
    assert await Message.objects.acount() == 0


async def test_a_teammate_watches_a_run_live(upstream, user, other_user, api_key, connect):
    from tests.upstream import Behaviour

    upstream.default = Behaviour(n_tokens=20, interval=0.01)
    shared = await team_conversation(user, other_user, Membership.Role.MEMBER)
    ok, owner_socket = await connect(user, shared.pk)
    ok, mate_socket = await connect(other_user, shared.pk)
    await owner_socket.send_prompt("Hello team")
    await mate_socket.until(lambda f: "status-complete" in f)
    assert any("tok19" in f for f in mate_socket.frames)


# HTTP


def test_pages_require_login(client, user):
    response = client.get("/keys/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_a_user_cannot_open_another_users_conversation(client, other_user, conversation):
    client.force_login(other_user)
    assert client.get(f"/c/{conversation.pk}/").status_code == 404


def test_a_user_cannot_rename_or_delete_another_users_conversation(
    client, other_user, conversation
):
    client.force_login(other_user)
    assert client.post(f"/c/{conversation.pk}/rename/", {"title": "Mine"}).status_code == 404
    assert client.post(f"/c/{conversation.pk}/delete/").status_code == 404
    conversation.refresh_from_db()
    assert conversation.title == ""


def test_the_sidebar_lists_only_visible_conversations(client, user, other_user, conversation):
    Conversation.objects.create(owner=other_user, title="Eve's secret plans", model="x")
    client.force_login(user)
    page = client.get(f"/c/{conversation.pk}/").content.decode()
    assert "Eve&#x27;s secret plans" not in page and "Eve's secret plans" not in page


async def test_a_watcher_removed_from_the_team_stops_receiving_pushes(
    upstream, user, other_user, api_key, connect, settings
):
    settings.PLAYGROUND_RUN = {**settings.PLAYGROUND_RUN, "REAUTH_INTERVAL": 0}
    shared = await team_conversation(user, other_user, Membership.Role.MEMBER)
    ok, mate = await connect(other_user, shared.pk)
    await mate.drain()
    await Membership.objects.filter(user=other_user).adelete()
    ok, owner = await connect(user, shared.pk)
    await owner.send_prompt("Confidential plan")
    await owner.until(lambda f: "status-complete" in f)
    assert await cut_off(mate)
    assert not any("Confidential" in f for f in mate.frames)


async def test_logging_out_ends_the_sockets_rights(upstream, user, api_key, conversation, connect):
    from channels.db import database_sync_to_async
    from django.contrib.sessions.models import Session

    ok, socket = await connect(user, conversation.pk)
    await socket.drain()
    await database_sync_to_async(Session.objects.all().delete)()  # what logout does
    await socket.send_prompt("Still me?")
    assert await cut_off(socket)
    assert upstream.requests == []


async def test_a_socket_that_floods_is_told_to_slow_down(user, conversation, connect):
    ok, socket = await connect(user, conversation.pk)
    await socket.drain()
    for _ in range(25):
        await socket.send(action="nothing")
    frame = await socket.until(lambda f: "slow down" in f)
    assert "Too many messages" in frame

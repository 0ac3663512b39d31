"""A socket keeps its access decision instead of asking the database on every message, and
loses it the moment anything that decides access changes: removed from the team, demoted to
viewer, logged out, deactivated, a new password, the conversation deleted. The socket is told
at once, without having to send anything, and can no longer send."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.test import Client

from playground.accounts.models import Membership, Team
from playground.chat import access
from playground.chat.models import Conversation, Message

pytestmark = [pytest.mark.django_db(transaction=True)]

MODEL = "empiriolabs:gemma-4-e4b"


@pytest.fixture(autouse=True)
def _no_periodic_recheck(settings) -> None:
    """Only revocation may end access here, not the periodic re-check."""
    settings.PLAYGROUND_RUN = {**settings.PLAYGROUND_RUN, "REAUTH_INTERVAL": 3600}


@database_sync_to_async
def team_conversation(owner, member, role=Membership.Role.MEMBER) -> Conversation:
    team = Team.objects.create(name="Lab")
    Membership.objects.create(team=team, user=owner, role=Membership.Role.OWNER)
    Membership.objects.create(team=team, user=member, role=role)
    return Conversation.objects.create(owner=owner, team=team, model=MODEL)


async def open_socket(connect, user, conversation_id):
    ok, socket = await connect(user, conversation_id)
    assert ok
    await socket.drain()
    return socket


async def told_and_closed(socket) -> bool:
    """Told in plain words, then closed with 4403, before it sent anything."""
    told = await socket.communicator.receive_output(timeout=2)
    closed = await socket.communicator.receive_output(timeout=2)
    return (
        told["type"] == "websocket.send"
        and "no longer have access" in told["text"]
        and closed == {"type": "websocket.close", "code": 4403}
    )


async def test_messages_after_the_first_do_not_read_the_database_for_access(
    user, conversation, connect, monkeypatch
):
    socket = await open_socket(connect, user, conversation.pk)
    checks = []
    original = access.get_conversation_and_role

    def counting(*args, **kwargs):
        checks.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(access, "get_conversation_and_role", counting)
    for _ in range(3):
        await socket.send(action="nothing")
        await socket.until(lambda f: "Unknown action" in f)
    assert checks == []


async def test_a_member_removed_from_the_team_is_cut_off_at_once(
    upstream, user, other_user, api_key, connect
):
    shared = await team_conversation(user, other_user)
    mate = await open_socket(connect, other_user, shared.pk)
    membership = await Membership.objects.aget(user=other_user)
    await membership.adelete()
    assert await told_and_closed(mate)
    assert upstream.requests == []


async def test_a_removed_member_cannot_send_even_before_being_told(
    upstream, user, other_user, api_key, connect
):
    shared = await team_conversation(user, other_user)
    mate = await open_socket(connect, other_user, shared.pk)
    await Membership.objects.filter(user=other_user).adelete()
    await mate.send_prompt("Sneaking one in")
    await mate.communicator.receive_nothing(timeout=0.3)
    assert await Message.objects.acount() == 0
    assert upstream.requests == []


async def test_a_member_demoted_to_viewer_is_told_and_can_no_longer_send(
    upstream, user, other_user, api_key, connect
):
    shared = await team_conversation(user, other_user)
    mate = await open_socket(connect, other_user, shared.pk)
    membership = await Membership.objects.aget(user=other_user)
    membership.role = Membership.Role.VIEWER
    await membership.asave()
    frame = await mate.receive()
    assert "now watch this conversation but not run it" in frame
    await mate.send_prompt("Still a member?")
    assert "watch this conversation but not run" in await mate.until(
        lambda f: "composer-error" in f
    )
    assert await Message.objects.acount() == 0
    assert upstream.requests == []


async def test_a_viewer_promoted_to_member_may_send_at_once(
    upstream, user, other_user, api_key, connect
):
    shared = await team_conversation(user, other_user, Membership.Role.VIEWER)
    from playground.accounts.models import ApiKey
    from tests.conftest import SECRET_KEY_VALUE

    await database_sync_to_async(ApiKey.store)(
        provider="empiriolabs", plaintext=SECRET_KEY_VALUE, user=other_user
    )
    mate = await open_socket(connect, other_user, shared.pk)
    membership = await Membership.objects.aget(user=other_user)
    membership.role = Membership.Role.MEMBER
    await membership.asave()
    await mate.drain()
    await mate.send_prompt("Now I may")
    await mate.until(lambda f: "status-complete" in f)
    assert await Message.objects.filter(created_by=other_user).acount() == 2


async def test_deleting_the_team_cuts_off_its_members(upstream, user, other_user, connect):
    shared = await team_conversation(user, other_user)
    mate = await open_socket(connect, other_user, shared.pk)
    await database_sync_to_async(Team.objects.all().delete)()
    assert await told_and_closed(mate)


async def test_logging_out_cuts_off_that_sessions_sockets(user, conversation, connect):
    client = Client()
    await database_sync_to_async(client.force_login)(user)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    ok, socket = await connect(user, conversation.pk, cookie=cookie)
    assert ok
    await socket.drain()
    ok, elsewhere = await connect(user, conversation.pk)  # another browser, still signed in
    await elsewhere.drain()
    response = await database_sync_to_async(client.post)("/logout/")
    assert response.status_code == 302
    assert await told_and_closed(socket)
    await elsewhere.send(action="nothing")
    assert "Unknown action" in await elsewhere.until(lambda f: "composer-error" in f)


async def test_a_deactivated_user_is_cut_off_at_once(user, conversation, connect):
    socket = await open_socket(connect, user, conversation.pk)
    user.is_active = False
    await user.asave()
    assert await told_and_closed(socket)


async def test_a_new_password_cuts_off_the_old_sessions(user, conversation, connect):
    socket = await open_socket(connect, user, conversation.pk)
    fresh = await get_user_model().objects.aget(pk=user.pk)
    fresh.set_password("a brand new passphrase")
    await fresh.asave()
    assert await told_and_closed(socket)


async def test_saving_a_user_without_access_changes_keeps_the_socket(user, conversation, connect):
    socket = await open_socket(connect, user, conversation.pk)
    user.first_name = "Ada"
    await user.asave()
    assert await socket.communicator.receive_nothing(timeout=0.3)


async def test_deleting_the_conversation_cuts_off_its_watchers(user, conversation, connect):
    socket = await open_socket(connect, user, conversation.pk)
    await conversation.adelete()
    assert await told_and_closed(socket)


async def test_a_revocation_from_another_process_arrives_through_the_channel_layer(
    user, other_user, connect
):
    shared = await team_conversation(user, other_user)
    mate = await open_socket(connect, other_user, shared.pk)
    # Another process removes the member: this process's counters never hear of it (a
    # QuerySet update sends no signals), only the channel-layer message does.
    elsewhere = await Team.objects.acreate(name="Elsewhere")
    await Membership.objects.filter(user=other_user).aupdate(team=elsewhere)
    await get_channel_layer().group_send(access.user_group(other_user.pk), {"type": access.REVOKE})
    assert await told_and_closed(mate)


def test_revoking_outside_an_event_loop_tells_this_process_and_does_not_fail(user):
    before = access.epoch(user.pk, 0)
    access.revoke_access([user.pk])
    assert access.epoch(user.pk, 0) != before

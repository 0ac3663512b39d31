"""The team Activity page: streaming now and the last 50 finished, live over the socket."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from playground.accounts.models import ApiKey, Membership, Team
from playground.chat import activity
from playground.chat.models import Conversation, Message
from tests.conftest import ORIGIN, Socket, session_cookie
from tests.html import find, find_all, text
from tests.upstream import Behaviour

MODEL = "empiriolabs:gemma-4-e4b"


def make_lab(user, other_user) -> Team:
    team = Team.create(name="Lab", owner=other_user)
    team.add_member(user, Membership.Role.VIEWER)
    ApiKey.store(provider="empiriolabs", plaintext="sk-team-key-for-activity-0001", team=team)
    return team


def finished_reply(conversation, n: int = 0) -> Message:
    return Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        text=f"answer {n}",
        model=MODEL,
        created_by=conversation.owner,
        total_ms=1234,
    )


@pytest.mark.django_db
def test_the_page_lists_streaming_and_finished_replies_of_the_team_only(client, user, other_user):
    lab = make_lab(user, other_user)
    shared = Conversation.objects.create(owner=other_user, team=lab, model=MODEL, title="Plan")
    done = finished_reply(shared)
    running = Message.objects.create(
        conversation=shared, role="assistant", status="streaming", model=MODEL,
        created_by=other_user,
    )  # fmt: skip
    private = Conversation.objects.create(owner=other_user, model=MODEL, title="Private")
    finished_reply(private)
    client.force_login(user)
    page = client.get(f"/teams/{lab.pk}/activity/").content.decode()
    streaming = find(page, id="activity-streaming")
    assert [dict(li.attributes)["id"] for li in find_all(streaming, "li")] == [f"act-{running.pk}"]
    assert "eve" in text(streaming) and "Plan" in text(streaming)
    finished = find(page, id="activity-finished")
    assert [dict(li.attributes)["id"] for li in find_all(finished, "li")] == [f"fin-{done.pk}"]
    assert "Private" not in page
    assert f'ws-connect="/ws/teams/{lab.pk}/activity/"' in page


@pytest.mark.django_db
def test_strangers_get_no_activity_page(client, user, other_user):
    lab = Team.create(name="Lab", owner=other_user)
    client.force_login(user)
    assert client.get(f"/teams/{lab.pk}/activity/").status_code == 404


async def open_activity(user, team_id) -> tuple[bool, Socket]:
    from playground.asgi import application

    cookie = await database_sync_to_async(session_cookie)(user)
    headers = [(b"host", b"127.0.0.1:8000"), (b"origin", ORIGIN), (b"cookie", cookie)]
    communicator = WebsocketCommunicator(
        application, f"/ws/teams/{team_id}/activity/", headers=headers
    )
    connected, _ = await communicator.connect(timeout=5)
    return connected, Socket(communicator)


pytestmark_live = pytest.mark.django_db(transaction=True)


@pytestmark_live
async def test_a_teammates_run_appears_streams_and_finishes_live(
    upstream, user, other_user, connect, settings
):
    settings.PLAYGROUND_RUN = {**settings.PLAYGROUND_RUN, "CHECKPOINT_INTERVAL": 0.05}
    upstream.default = Behaviour(n_tokens=12, interval=0.03)
    lab = await database_sync_to_async(make_lab)(user, other_user)
    shared = await Conversation.objects.acreate(
        owner=other_user, team=lab, model=MODEL, title="Live one"
    )
    ok, watcher = await open_activity(user, lab.pk)
    assert ok
    first = await watcher.receive()
    assert 'id="activity-streaming"' in first and 'id="activity-finished"' in first
    ok, sender = await connect(other_user, shared.pk)
    await sender.send_prompt("Go")
    started = await watcher.until(lambda f: "act-" in f and "Live one" in f)
    reply = await Message.objects.aget(conversation=shared, role="assistant")
    assert f'id="act-{reply.pk}"' in started and "eve" in started
    progress = await watcher.until(lambda f: "tokens so far" in f)
    assert f'id="act-{reply.pk}-progress"' in progress
    done = await watcher.until(lambda f: f"fin-{reply.pk}" in f)
    assert f'<li id="act-{reply.pk}" hx-swap-oob="delete">' in done
    assert "Complete" in done


@pytestmark_live
async def test_personal_runs_never_reach_a_team_activity_page(
    upstream, user, other_user, api_key, connect
):
    lab = await database_sync_to_async(make_lab)(user, other_user)
    mine = await Conversation.objects.acreate(owner=user, model=MODEL, title="Mine only")
    ok, watcher = await open_activity(other_user, lab.pk)
    await watcher.receive()
    ok, sender = await connect(user, mine.pk)
    await sender.send_prompt("Private")
    await sender.until(lambda f: "status-complete" in f)
    assert await watcher.communicator.receive_nothing(timeout=0.3)


@pytestmark_live
async def test_strangers_and_removed_members_get_no_activity(
    upstream, user, other_user, connect, django_user_model
):
    lab = await database_sync_to_async(make_lab)(user, other_user)
    stranger = await database_sync_to_async(django_user_model.objects.create_user)("mallory")
    ok, _ = await open_activity(stranger, lab.pk)
    assert not ok
    shared = await Conversation.objects.acreate(owner=other_user, team=lab, model=MODEL)
    ok, watcher = await open_activity(user, lab.pk)
    await watcher.receive()
    await Membership.objects.filter(team=lab, user=user).adelete()
    ok, sender = await connect(other_user, shared.pk)
    await sender.send_prompt("After you left")
    output = await watcher.communicator.receive_output(timeout=2)
    assert output["type"] == "websocket.close"
    assert not any("act-" in frame for frame in watcher.frames[1:])


@pytestmark_live
async def test_the_finished_list_keeps_the_last_50(upstream, user, other_user, connect):
    lab = await database_sync_to_async(make_lab)(user, other_user)
    shared = await Conversation.objects.acreate(owner=other_user, team=lab, model=MODEL)
    old = [await database_sync_to_async(finished_reply)(shared, n) for n in range(50)]
    ok, watcher = await open_activity(user, lab.pk)
    await watcher.receive()
    ok, sender = await connect(other_user, shared.pk)
    await sender.send_prompt("One more")
    done = await watcher.until(lambda f: 'hx-swap-oob="afterbegin"' in f)
    assert f'<li id="fin-{old[0].pk}" hx-swap-oob="delete">' in done
    assert activity.FINISHED_SHOWN == 50


@pytestmark_live
async def test_logging_out_ends_the_activity_socket(upstream, user, other_user, connect, settings):
    settings.PLAYGROUND_RUN = {**settings.PLAYGROUND_RUN, "CHECKPOINT_INTERVAL": 0.05}
    upstream.default = Behaviour(n_tokens=8, interval=0.03)
    lab = await database_sync_to_async(make_lab)(user, other_user)
    shared = await Conversation.objects.acreate(owner=other_user, team=lab, model=MODEL)
    ok, watcher = await open_activity(user, lab.pk)
    await watcher.receive()
    from django.contrib.sessions.models import Session

    await Session.objects.all().adelete()  # logging out everywhere
    ok, sender = await connect(other_user, shared.pk)
    await sender.send_prompt("Not after logging out")
    output = await watcher.communicator.receive_output(timeout=2)
    assert output["type"] == "websocket.close"
    assert not any("act-" in frame for frame in watcher.frames[1:])


@pytestmark_live
async def test_an_activity_socket_takes_a_slot_and_gives_it_back(
    user, other_user, conversation, connect, settings, monkeypatch
):
    from playground.chat import consumers

    settings.PLAYGROUND_MAX_SOCKETS = 1
    fresh = consumers.SocketSlots()
    monkeypatch.setattr(consumers, "slots", fresh)
    lab = await database_sync_to_async(make_lab)(user, other_user)
    ok, watcher = await open_activity(user, lab.pk)
    await watcher.receive()
    assert fresh.taken == 1
    ok, chat = await connect(user, conversation.pk)
    output = await chat.communicator.receive_output(timeout=5)
    assert output == {"type": "websocket.close", "code": consumers.AT_CAPACITY}
    await watcher.close()
    assert fresh.taken == 0
    ok, again = await open_activity(user, lab.pk)
    assert ok and fresh.taken == 1


@pytestmark_live
async def test_a_reply_deleted_while_it_streams_leaves_the_streaming_list(
    upstream, user, other_user, connect
):
    """Its run still says that it ended; the row goes although the reply is gone, instead
    of showing as streaming until the page is loaded again."""
    from playground.chat import runs

    upstream.default = Behaviour(n_tokens=100, interval=0.05)
    lab = await database_sync_to_async(make_lab)(user, other_user)
    shared = await Conversation.objects.acreate(
        owner=other_user, team=lab, model=MODEL, title="Doomed"
    )
    ok, watcher = await open_activity(user, lab.pk)
    await watcher.receive()
    ok, sender = await connect(other_user, shared.pk)
    await sender.send_prompt("Go")
    await watcher.until(lambda f: "act-" in f and "Doomed" in f)
    reply = await Message.objects.aget(conversation=shared, role="assistant")
    await runs.stop(shared.messages.all())  # as the delete view does
    await shared.adelete()
    await runs.wait(reply.pk)
    await watcher.drain()
    assert any(f'<li id="act-{reply.pk}" hx-swap-oob="delete">' in f for f in watcher.frames)

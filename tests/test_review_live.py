"""Review changes reach the conversation's other watchers live (playground/review/live.py).

A teammate's thumbs, score, labels, comment or review status makes every other socket on the
conversation send its page a loader that fetches that bar (or the status) through the
ordinary views, as the page's own user. The author's sockets are left alone (their page drew
the change already), and so is a page that shows another branch."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from playground.accounts.models import Membership, Team
from playground.chat.models import Conversation, Message
from playground.review import annotating

pytestmark = [pytest.mark.django_db(transaction=True)]
MODEL = "empiriolabs:gemma-4-e4b"


def is_refresh(frame: str) -> bool:
    return 'id="review-refresh"' in frame


@database_sync_to_async
def team_reply(owner, watcher, role=Membership.Role.VIEWER):
    team = Team.create(name="Lab", owner=owner)
    team.add_member(watcher, role)
    conversation = Conversation.objects.create(owner=owner, team=team, model=MODEL)
    ask = Message.objects.create(conversation=conversation, role="user", text="Q", created_by=owner)
    reply = Message.objects.create(
        conversation=conversation, role="assistant", parent=ask, text="A"
    )
    return conversation, reply


async def test_a_teammates_annotation_and_comment_refresh_the_bar_elsewhere_only(
    user, other_user, connect
):
    conversation, reply = await team_reply(other_user, user)
    ok, watcher = await connect(user, conversation.pk)  # a viewer: reads and watches
    ok, author = await connect(other_user, conversation.pk)
    await watcher.drain()
    await author.drain()
    await database_sync_to_async(annotating.annotate)(other_user, reply, thumbs=-1)
    frame = await watcher.until(is_refresh)
    assert f'hx-get="/review/m/{reply.pk}/"' in frame
    assert f'hx-target="#review-{reply.pk}"' in frame and 'hx-trigger="load"' in frame
    await database_sync_to_async(annotating.add_comment)(other_user, reply, "Wrong city")
    assert f"/review/m/{reply.pk}/" in await watcher.until(is_refresh)
    await author.drain()
    assert not any(is_refresh(f) for f in author.frames)  # drawn by its own request


async def test_a_review_status_refreshes_the_status_and_the_view_draws_it(
    client, user, other_user, connect
):
    conversation, reply = await team_reply(other_user, user)
    ok, watcher = await connect(user, conversation.pk)
    await watcher.drain()
    await database_sync_to_async(annotating.set_status)(other_user, conversation, "flagged")
    frame = await watcher.until(is_refresh)
    url = f"/review/c/{conversation.pk}/status/"
    assert f'hx-get="{url}"' in frame and 'hx-target="#review-status"' in frame

    def fetch(who):
        client.force_login(who)
        return client.get(url)

    shown = await database_sync_to_async(fetch)(user)
    assert shown.status_code == 200
    assert "Flagged" in shown.content.decode() and "set by" in shown.content.decode()
    assert "<select" not in shown.content.decode()  # a viewer reads it, cannot change it


async def test_the_status_view_is_only_for_those_who_may_see_it(client, user, django_user_model):
    stranger = await database_sync_to_async(django_user_model.objects.create_user)("mallory")
    conversation, _ = await team_reply(user, await _user(django_user_model, "ben"))

    def fetch():
        client.force_login(stranger)
        return client.get(f"/review/c/{conversation.pk}/status/")

    assert (await database_sync_to_async(fetch)()).status_code == 404


@database_sync_to_async
def _user(model, name):
    return model.objects.create_user(name)


async def test_a_reply_on_another_branch_than_the_page_shows_is_not_fetched(
    user, other_user, connect
):
    conversation, reply = await team_reply(other_user, user)

    @database_sync_to_async
    def regenerate():
        sibling = Message.objects.create(
            conversation=conversation, role="assistant", parent=reply.parent, text="B"
        )
        Conversation.objects.filter(pk=conversation.pk).update(active_leaf=sibling)
        return sibling

    sibling = await regenerate()
    ok, watcher = await connect(user, conversation.pk)  # shows the newer branch
    await watcher.drain()
    await database_sync_to_async(annotating.annotate)(other_user, reply, score=4)
    await database_sync_to_async(annotating.annotate)(other_user, sibling, score=5)
    frame = await watcher.until(is_refresh)
    assert f"/review/m/{sibling.pk}/" in frame
    await watcher.drain()
    assert not any(f"/review/m/{reply.pk}/" in f for f in watcher.frames)


async def test_a_member_removed_meanwhile_gets_nothing(user, other_user, connect):
    conversation, reply = await team_reply(other_user, user, Membership.Role.MEMBER)
    ok, watcher = await connect(user, conversation.pk)
    await watcher.drain()

    @database_sync_to_async
    def remove():
        Membership.objects.filter(user=user).delete()

    await remove()
    await database_sync_to_async(annotating.annotate)(other_user, reply, thumbs=1)
    # The removal closes the socket (tests/test_team_removal.py); whatever came before the
    # close, no refresh was among it.
    outputs = []
    while not outputs or outputs[-1]["type"] != "websocket.close":
        outputs.append(await watcher.communicator.receive_output(timeout=5))
    assert not any(is_refresh(o.get("text", "")) for o in outputs)

"""End to end: a member removed on the team page loses their open sockets at once (no
periodic re-check involved), both on a team conversation and on the Activity page, and the
run they were watching streams on without them."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from django.test import Client

from playground.accounts.models import ApiKey, Membership, Team
from playground.chat.models import Conversation
from tests.test_activity import open_activity
from tests.upstream import Behaviour

pytestmark = [pytest.mark.django_db(transaction=True)]
MODEL = "empiriolabs:gemma-4-e4b"


@database_sync_to_async
def make_lab(user, other_user) -> tuple[Team, Conversation]:
    team = Team.create(name="Lab", owner=other_user)
    team.add_member(user, Membership.Role.MEMBER)
    ApiKey.store(provider="empiriolabs", plaintext="sk-team-key-removal-0001", team=team)
    shared = Conversation.objects.create(owner=other_user, team=team, model=MODEL, title="Plan")
    return team, shared


@database_sync_to_async
def remove_on_the_team_page(owner, team: Team, member) -> int:
    """What the owner's browser does: POST the Remove button's form."""
    client = Client()
    client.force_login(owner)
    membership = team.memberships.get(user=member)
    return client.post(f"/teams/{team.pk}/members/{membership.pk}/remove/").status_code


async def test_a_removed_members_open_sockets_are_closed_at_once(
    upstream, user, other_user, connect, settings
):
    # A day: any closing below comes from the removal, not from a periodic re-check.
    settings.PLAYGROUND_RUN = {**settings.PLAYGROUND_RUN, "REAUTH_INTERVAL": 86400.0}
    upstream.default = Behaviour(n_tokens=200, interval=0.02)
    team, shared = await make_lab(user, other_user)
    ok, watcher = await connect(user, shared.pk)
    assert ok
    await watcher.drain()
    ok, activity = await open_activity(user, team.pk)
    assert ok
    await activity.receive()
    ok, owner = await connect(other_user, shared.pk)
    await owner.send_prompt("The plan, streaming")
    await watcher.until(lambda f: f.startswith("+t"))  # watching the run live

    assert await remove_on_the_team_page(other_user, team, user) == 302

    closed = await watcher.communicator.receive_output(timeout=2)
    while closed["type"] != "websocket.close":  # frames already on their way, then the close
        closed = await watcher.communicator.receive_output(timeout=2)
    assert closed["code"] == 4403
    closed = await activity.communicator.receive_output(timeout=2)
    while closed["type"] != "websocket.close":
        closed = await activity.communicator.receive_output(timeout=2)
    assert closed["code"] == 4403
    # The run goes on for those still allowed to watch it.
    await owner.until(lambda f: "status-complete" in f, timeout=15)
    # And a new socket is refused.
    ok, _ = await connect(user, shared.pk)
    assert not ok

"""A team conversation belongs to the team: a member's role decides, not who created it."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from django.core.exceptions import PermissionDenied

from playground.accounts.models import ApiKey, Membership, Team
from playground.chat import services
from playground.chat.access import get_conversation_for_user
from playground.chat.models import Attachment, Conversation, Message, Preset
from playground.providers import catalog

MODEL = "empiriolabs:gemma-4-e4b"
HX = {"HX-Request": "true"}


def make_team(**roles) -> Team:
    team = Team.objects.create(name="Lab")
    for user, role in roles.values():
        Membership.objects.create(team=team, user=user, role=role)
    return team


@pytest.fixture
def team(user, other_user) -> Team:
    """ada created the conversation as a member; eve owns the team."""
    return make_team(ada=(user, Membership.Role.MEMBER), eve=(other_user, Membership.Role.OWNER))


@pytest.fixture
def shared(user, team) -> Conversation:
    return Conversation.objects.create(owner=user, team=team, model=MODEL, title="Shared")


def demote(user, team) -> None:
    Membership.objects.filter(team=team, user=user).update(role=Membership.Role.VIEWER)


def remove(user, team) -> None:
    Membership.objects.filter(team=team, user=user).delete()


@pytest.mark.django_db
def test_a_removed_owner_loses_the_team_conversation(client, user, team, shared):
    remove(user, team)
    client.force_login(user)
    assert client.get(f"/c/{shared.pk}/").status_code == 404
    assert client.post(f"/c/{shared.pk}/rename/", {"title": "Mine"}).status_code == 404
    assert not Conversation.objects.visible_to(user).exists()


@pytest.mark.django_db
def test_a_removed_owner_loses_the_images_of_the_team_conversation(user, other_user, team, shared):
    image = Attachment.objects.create(
        owner=other_user, file="attachments/x.png", sha256="0" * 64,
        content_type="image/png", size=1, width=1, height=1,
    )  # fmt: skip
    prompt = Message.objects.create(conversation=shared, role=Message.Role.USER, text="look")
    prompt.attachments.add(image)
    assert Attachment.objects.visible_to(user).filter(pk=image.pk).exists()
    remove(user, team)
    assert not Attachment.objects.visible_to(user).filter(pk=image.pk).exists()


@pytest.mark.django_db
def test_a_demoted_owner_can_view_but_not_run(client, user, team, shared):
    demote(user, team)
    client.force_login(user)
    assert client.get(f"/c/{shared.pk}/").status_code == 200
    assert client.post(f"/c/{shared.pk}/rename/", {"title": "Mine"}).status_code == 403
    shared.refresh_from_db()
    assert shared.title == "Shared" and not shared.can_run(user)
    with pytest.raises(PermissionDenied):
        get_conversation_for_user(user, shared.pk, run=True)


@pytest.mark.django_db
def test_a_demoted_owner_cannot_spend_the_team_key(user, team, shared):
    ApiKey.store(provider="empiriolabs", plaintext="sk-team-key-0123456789", team=team)
    provider = catalog.get_model(MODEL).provider
    assert services.resolve_api_key(user, shared, provider)[0] == "sk-team-key-0123456789"
    demote(user, team)
    with pytest.raises(services.TurnError, match="API key"):
        services.resolve_api_key(user, shared, provider)


@pytest.mark.django_db
def test_a_personal_conversation_is_run_only_by_its_owner(user, other_user, conversation):
    assert conversation.can_run(user) and not conversation.can_run(other_user)


@pytest.mark.django_db
@pytest.mark.parametrize("action", ["settings", "rename", "preset load"])
def test_a_viewer_is_refused_not_hidden(client, user, other_user, action):
    team = make_team(ada=(user, Membership.Role.OWNER), eve=(other_user, Membership.Role.VIEWER))
    shared = Conversation.objects.create(owner=user, team=team, model=MODEL, title="Shared")
    preset = Preset.objects.create(owner=other_user, name="Hot", model=MODEL, params={})
    url = {
        "settings": f"/c/{shared.pk}/settings/",
        "rename": f"/c/{shared.pk}/rename/",
        "preset load": f"/c/{shared.pk}/presets/{preset.pk}/load/",
    }[action]
    client.force_login(other_user)
    data = {"model": MODEL, "system_prompt": "Mine now", "title": "Mine", "param:seed": "1"}
    assert client.post(url, data, headers=HX).status_code == 403
    shared.refresh_from_db()
    assert (shared.title, shared.system_prompt, shared.params) == ("Shared", "", {})


@pytest.mark.django_db(transaction=True)
async def test_a_demoted_owners_socket_cannot_send(upstream, user, team, connect):
    shared = await database_sync_to_async(Conversation.objects.create)(
        owner=user, team=team, model=MODEL
    )
    await database_sync_to_async(demote)(user, team)
    ok, socket = await connect(user, shared.pk)
    assert ok
    await socket.drain()
    await socket.send_prompt("Still mine?")
    assert "not run" in await socket.until(lambda f: "composer-error" in f)
    assert await Message.objects.acount() == 0
    assert upstream.requests == []

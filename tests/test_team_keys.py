"""Team keys: admins save them write-only, members spend them unseen, and every reply says
which key paid (id, whose, last four; never the key)."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from playground.accounts.models import ApiKey, Membership, Team
from playground.chat.keys import RULE
from playground.chat.models import Conversation, Message
from tests.conftest import SECRET_KEY_VALUE, reply_of
from tests.html import find, text

MODEL = "empiriolabs:gemma-4-e4b"
OTHER_PROVIDER_MODEL = "aimlapi:google/gemma-3n-e4b-it"
TEAM_KEY = "sk-team-TEAMCANARY-5e1d-1234"


def make_lab(user, other_user, *, user_role=Membership.Role.MEMBER) -> Team:
    team = Team.create(name="Lab", owner=other_user)
    team.add_member(user, user_role)
    return team


def head(page) -> str:
    return text(find(page, id="conversation-head"))


@pytest.mark.django_db
def test_a_team_admin_saves_a_key_that_nobody_sees_again(client, user, other_user):
    lab = make_lab(user, other_user, user_role=Membership.Role.ADMIN)
    client.force_login(user)
    response = client.post(f"/teams/{lab.pk}/keys/", {"provider": "empiriolabs", "key": TEAM_KEY})
    assert response.status_code == 302
    key = ApiKey.objects.get(team=lab, provider="empiriolabs")
    assert key.user is None and TEAM_KEY not in key.ciphertext and key.reveal() == TEAM_KEY
    for viewer in (user, other_user):
        client.force_login(viewer)
        page = client.get(f"/teams/{lab.pk}/").content.decode()
        assert "Team key ••••1234" in page
        assert TEAM_KEY not in page and TEAM_KEY[:-4] not in page


@pytest.mark.django_db
def test_a_team_key_is_validated_like_a_personal_one(client, user, other_user):
    lab = make_lab(user, other_user)
    client.force_login(other_user)
    response = client.post(f"/teams/{lab.pk}/keys/", {"provider": "empiriolabs", "key": "a b"})
    assert response.status_code == 400
    assert "does not look like an API key" in text(find(response.content, role="alert"))
    response = client.post(f"/teams/{lab.pk}/keys/", {"provider": "nope", "key": TEAM_KEY})
    assert response.status_code == 400 and not ApiKey.objects.exists()


@pytest.mark.django_db
def test_members_neither_save_nor_delete_the_team_key(client, user, other_user):
    lab = make_lab(user, other_user)
    ApiKey.store(provider="empiriolabs", plaintext=TEAM_KEY, team=lab)
    client.force_login(user)
    page = client.get(f"/teams/{lab.pk}/").content.decode()
    assert "Team key ••••1234" in page and 'name="key"' not in page
    data = {"provider": "empiriolabs", "key": "sk-members-own-attempt"}
    assert client.post(f"/teams/{lab.pk}/keys/", data).status_code == 403
    assert client.post(f"/teams/{lab.pk}/keys/empiriolabs/delete/").status_code == 403
    assert ApiKey.objects.get(team=lab).reveal() == TEAM_KEY


@pytest.mark.django_db
def test_an_admin_deletes_the_team_key(client, user, other_user):
    lab = make_lab(user, other_user)
    ApiKey.store(provider="empiriolabs", plaintext=TEAM_KEY, team=lab)
    client.force_login(other_user)
    assert client.post(f"/teams/{lab.pk}/keys/empiriolabs/delete/").status_code == 302
    assert not ApiKey.objects.filter(team=lab).exists()


@pytest.mark.django_db
def test_the_header_says_which_key_pays_and_the_rule(client, user, other_user, api_key):
    lab = make_lab(user, other_user)
    shared = Conversation.objects.create(owner=user, team=lab, model=MODEL)
    personal = Conversation.objects.create(owner=user, model=MODEL)
    client.force_login(user)
    # No team key yet: the sender's own pays.
    page = client.get(f"/c/{shared.pk}/").content
    assert "your key ••••4068" in head(page) and RULE in head(page)
    ApiKey.store(provider="empiriolabs", plaintext=TEAM_KEY, team=lab)
    page = client.get(f"/c/{shared.pk}/").content
    assert "team key ••••1234" in head(page) and "your key" not in head(page)
    # A personal conversation never spends a team's key.
    page = client.get(f"/c/{personal.pk}/").content
    assert "your key ••••4068" in head(page) and "team key" not in head(page)
    assert TEAM_KEY not in page.decode() and SECRET_KEY_VALUE not in page.decode()


@pytest.mark.django_db
def test_switching_model_redraws_whose_key_pays(client, user, other_user):
    lab = make_lab(user, other_user)
    ApiKey.store(provider="empiriolabs", plaintext=TEAM_KEY, team=lab)
    shared = Conversation.objects.create(owner=user, team=lab, model=MODEL)
    client.force_login(user)
    response = client.post(
        f"/c/{shared.pk}/settings/",
        {"model": OTHER_PROVIDER_MODEL},
        headers={"HX-Request": "true"},
    )
    head_oob = find(response.content, id="conversation-head")
    assert dict(head_oob.attributes)["hx-swap-oob"] == "true"
    # The team has a key for EmpirioLabs only: for this model nobody's key pays yet.
    assert "no AI/ML API key: add yours" in text(head_oob)


pytestmark_async = pytest.mark.django_db(transaction=True)


@database_sync_to_async
def team_conversation(user, other_user, *, team_key: bool) -> Conversation:
    lab = make_lab(user, other_user)
    if team_key:
        ApiKey.store(provider="empiriolabs", plaintext=TEAM_KEY, team=lab)
    return Conversation.objects.create(owner=other_user, team=lab, model=MODEL)


@pytestmark_async
async def test_a_team_conversation_spends_the_team_key_and_the_reply_records_it(
    upstream, user, other_user, api_key, connect
):
    shared = await team_conversation(user, other_user, team_key=True)
    ok, socket = await connect(user, shared.pk)
    await socket.send_prompt("On the team")
    done = await socket.until(lambda f: "status-complete" in f)
    assert upstream.requests[-1].headers["authorization"] == f"Bearer {TEAM_KEY}"
    reply = await reply_of(shared)
    team_key = await ApiKey.objects.aget(team_id=shared.team_id)
    assert (reply.key_id, reply.key_owner, reply.key_last_four) == (team_key.pk, "team", "1234")
    assert "team key ••••1234" in done
    assert not any(TEAM_KEY in frame for frame in socket.frames)
    assert TEAM_KEY not in str(reply.request_body)


@pytestmark_async
async def test_without_a_team_key_the_senders_own_key_pays(
    upstream, user, other_user, api_key, connect
):
    shared = await team_conversation(user, other_user, team_key=False)
    ok, socket = await connect(user, shared.pk)
    await socket.send_prompt("Mine pays")
    assert "ada's key ••••4068" in await socket.until(lambda f: "status-complete" in f)
    assert upstream.requests[-1].headers["authorization"] == f"Bearer {SECRET_KEY_VALUE}"
    reply = await reply_of(shared)
    assert (reply.key_id, reply.key_owner, reply.key_last_four) == (api_key.pk, "user", "4068")


@pytestmark_async
async def test_a_reply_keeps_the_key_it_used_after_the_key_is_deleted(
    upstream, user, other_user, api_key, connect
):
    shared = await team_conversation(user, other_user, team_key=True)
    ok, socket = await connect(user, shared.pk)
    await socket.send_prompt("Attributed")
    await socket.until(lambda f: "status-complete" in f)
    used = (await reply_of(shared)).key_id
    await ApiKey.objects.filter(team_id=shared.team_id).adelete()
    reply = await Message.objects.aget(role="assistant", conversation=shared)
    assert reply.key_id == used and reply.key_last_four == "1234"

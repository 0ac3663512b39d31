"""Renaming and deleting a prompt: names stay unique per space, the read API follows the new
name, protected labels keep both for admins, and a prompt replies came from is archived so
those replies and History's filter by its versions stay intact."""

from __future__ import annotations

import pytest

from playground.accounts.models import Membership, Team
from playground.chat.models import Conversation, Message
from playground.prompts import play
from playground.prompts.models import (
    AccessToken,
    LabelMove,
    Prompt,
    PromptLabel,
    PromptRun,
    PromptSession,
    PromptVersion,
)

MODEL = "empiriolabs:gemma-4-e4b"
pytestmark = pytest.mark.django_db


def make_prompt(owner, team=None, name="support") -> Prompt:
    prompt = Prompt.objects.create(owner=owner, team=team, name=name)
    version = prompt.add_version(owner, system_prompt="For {{company}}", model=MODEL)
    prompt.set_label("production", version, owner)
    return prompt


@pytest.fixture
def team(user, other_user, django_user_model):
    team = Team.create(name="Acme", owner=user)
    team.add_member(other_user, Membership.Role.VIEWER)
    for name, role in (("mia", "member"), ("adam", "admin")):
        team.add_member(django_user_model.objects.create_user(name, password="x"), role)
    return team


def member(team, role):
    return team.memberships.get(role=role).user


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _reply_from(prompt: Prompt, user) -> Message:
    conversation = Conversation.objects.create(owner=user, team=prompt.team, model=MODEL)
    Message.objects.create(conversation=conversation, role="user", text="Hi")
    reply = Message.objects.create(conversation=conversation, role="assistant", text="Kept text")
    PromptRun.objects.create(message=reply, version=prompt.versions.get(), variables={"a": "b"})
    return reply


# -- rename -------------------------------------------------------------------------------------


def test_renaming_moves_the_read_api_to_the_new_name(client, user):
    prompt = make_prompt(user)
    _, token = AccessToken.issue(user, name="bot")
    client.force_login(user)

    response = client.post(f"/prompts/{prompt.pk}/rename/", {"name": "support-v2"})

    assert response.status_code == 302 and response["Location"] == f"/prompts/{prompt.pk}/"
    assert Prompt.objects.get(pk=prompt.pk).name == "support-v2"
    new = client.get("/api/prompts/support-v2?label=production", headers=bearer(token))
    assert new.status_code == 200 and new.json()["prompt"] == "support-v2"
    assert client.get("/api/prompts/support", headers=bearer(token)).status_code == 404


def test_a_name_taken_in_the_space_is_refused_with_a_clear_error(client, user):
    prompt = make_prompt(user)
    make_prompt(user, name="taken")
    client.force_login(user)

    response = client.post(f"/prompts/{prompt.pk}/rename/", {"name": "taken"})

    assert response.status_code == 400
    assert "There is already a prompt named taken in this space." in response.content.decode()
    assert Prompt.objects.get(pk=prompt.pk).name == "support"


def test_htmx_gets_the_form_back_with_the_error(client, user):
    prompt = make_prompt(user)
    make_prompt(user, name="taken")
    client.force_login(user)

    response = client.post(
        f"/prompts/{prompt.pk}/rename/", {"name": "taken"}, headers={"HX-Request": "true"}
    )

    page = response.content.decode()
    assert response.status_code == 422  # swapped in (base.html's responseHandling)
    assert page.lstrip().startswith('<form id="rename-form"')  # the fragment, not the page
    assert 'role="alert"' in page and "already a prompt named taken" in page
    assert 'value="taken"' in page and 'aria-invalid="true"' in page
    ok = client.post(
        f"/prompts/{prompt.pk}/rename/", {"name": "fresh"}, headers={"HX-Request": "true"}
    )
    assert ok["HX-Redirect"] == f"/prompts/{prompt.pk}/"


def test_the_same_name_in_another_space_is_fine(client, user, team):
    make_prompt(user, team=team, name="shared")
    prompt = make_prompt(user)
    client.force_login(user)
    client.post(f"/prompts/{prompt.pk}/rename/", {"name": "shared"})
    assert Prompt.objects.get(pk=prompt.pk).name == "shared"


def test_a_name_that_cannot_go_in_a_url_is_refused(client, user):
    prompt = make_prompt(user)
    client.force_login(user)
    response = client.post(f"/prompts/{prompt.pk}/rename/", {"name": "a b/c"})
    assert response.status_code == 400 and "goes in the read API" in response.content.decode()
    assert Prompt.objects.get(pk=prompt.pk).name == "support"


def test_viewers_and_strangers_cannot_rename_or_delete(client, team, django_user_model):
    prompt = make_prompt(member(team, "owner"), team)
    client.force_login(member(team, "viewer"))
    assert client.post(f"/prompts/{prompt.pk}/rename/", {"name": "x"}).status_code == 403
    assert client.post(f"/prompts/{prompt.pk}/delete/").status_code == 403
    assert b"Rename or delete" not in client.get(f"/prompts/{prompt.pk}/").content
    client.force_login(django_user_model.objects.create_user("stranger"))
    assert client.post(f"/prompts/{prompt.pk}/rename/", {"name": "x"}).status_code == 404
    assert client.post(f"/prompts/{prompt.pk}/delete/").status_code == 404
    assert Prompt.objects.filter(pk=prompt.pk, name="support").exists()


def test_a_protected_label_keeps_rename_and_delete_for_admins(client, team):
    prompt = make_prompt(member(team, "owner"), team)
    prompt.protect_label(prompt.labels.get(), True, member(team, "owner"))
    client.force_login(member(team, "member"))

    renamed = client.post(f"/prompts/{prompt.pk}/rename/", {"name": "other"})
    assert renamed.status_code == 403 and "protected label" in renamed.content.decode()
    deleted = client.post(f"/prompts/{prompt.pk}/delete/")
    assert deleted.status_code == 403 and "protected label" in deleted.content.decode()
    assert Prompt.objects.filter(pk=prompt.pk, name="support", deleted=None).exists()

    client.force_login(member(team, "admin"))
    client.post(f"/prompts/{prompt.pk}/rename/", {"name": "other"})
    assert Prompt.objects.get(pk=prompt.pk).name == "other"
    client.post(f"/prompts/{prompt.pk}/delete/")
    assert not Prompt.objects.filter(pk=prompt.pk).exists()


# -- delete -------------------------------------------------------------------------------------


def test_the_confirm_page_says_what_deleting_does(client, user):
    prompt = make_prompt(user)
    _reply_from(prompt, user)
    client.force_login(user)

    page = client.get(f"/prompts/{prompt.pk}/delete/").content.decode()

    assert "Delete support?" in page and "1 reply came from its versions" in page
    assert f'action="/prompts/{prompt.pk}/delete/"' in page
    assert Prompt.objects.filter(pk=prompt.pk, deleted=None).exists()  # a GET changes nothing


def test_a_prompt_no_reply_came_from_is_removed_with_its_versions(client, user):
    prompt = make_prompt(user)
    client.force_login(user)

    response = client.post(f"/prompts/{prompt.pk}/delete/")

    assert response.status_code == 302 and response["Location"] == "/prompts/"
    assert not Prompt.objects.exists()
    assert not PromptVersion.objects.exists() and not PromptLabel.objects.exists()
    assert not LabelMove.objects.exists()


def test_a_prompt_replies_came_from_is_archived_and_history_still_filters_by_it(client, user):
    prompt = make_prompt(user)
    version = prompt.versions.get()
    reply = _reply_from(prompt, user)
    opened = play.open_in_playground(version, user)
    _, token = AccessToken.issue(user, name="bot")
    client.force_login(user)

    client.post(f"/prompts/{prompt.pk}/delete/")

    archived = Prompt.objects.get(pk=prompt.pk)
    assert archived.deleted is not None
    assert Message.objects.get(pk=reply.pk).text == "Kept text"
    assert PromptRun.objects.get(message=reply).version_id == version.pk
    assert not PromptSession.objects.filter(conversation=opened).exists()
    listed = client.get("/prompts/").content.decode()
    assert "Deleted support." in listed and f"/prompts/{prompt.pk}/" not in listed
    assert client.get(f"/prompts/{prompt.pk}/").status_code == 404
    assert client.get("/api/prompts/support", headers=bearer(token)).status_code == 404
    assert b'id="prompt-variables"' not in client.get(f"/c/{opened.pk}/").content

    history = client.get("/review/", {"prompt_version": version.pk})
    assert history.status_code == 200
    page = history.content.decode()
    assert f'id="history-{reply.conversation_id}"' in page
    assert f'<option value="{version.pk}" selected>support v1 (deleted)</option>' in page

    # The name is free again.
    client.post("/prompts/new/", {"name": "support", "model": MODEL, "message_role": ["user"]})
    assert Prompt.objects.filter(name="support", deleted=None).exclude(pk=prompt.pk).exists()


def test_a_re_run_of_an_archived_prompts_reply_is_still_recorded(user):
    """The archive keeps the versions, so the record a Re-run copies still points somewhere."""
    prompt = make_prompt(user)
    reply = _reply_from(prompt, user)
    prompt.delete_by(user)
    again = Message.objects.create(conversation=reply.conversation, role="assistant", text="2")
    play.record_rerun(None, original=reply, reply=again)
    assert PromptRun.objects.get(message=again).version.prompt_id == prompt.pk

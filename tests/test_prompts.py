"""The prompt library over HTTP: versions, labels, diff, rollback, Open in playground, History."""

from __future__ import annotations

import html

import pytest

from playground.accounts.models import Membership, Team
from playground.chat.models import Conversation, Message
from playground.prompts import library
from playground.prompts.models import (
    LabelMove,
    Prompt,
    PromptError,
    PromptRun,
    PromptSession,
    PromptVersion,
    VariableValues,
)

MODEL = "empiriolabs:gemma-4-e4b"
pytestmark = pytest.mark.django_db


def new_prompt_data(**extra):
    data = {
        "name": "support-reply",
        "description": "Answers a ticket",
        "system_prompt": "You answer for {{company}}.",
        "model": MODEL,
        "params": '{"temperature": 0.5}',
        "tools": "",
        "response_format": "",
        "message_role": ["user"],
        "message_content": ["Ticket: {{ticket}}"],
        "note": "first",
    }
    data.update(extra)
    return data


def make_prompt(owner, team=None, name="support-reply") -> Prompt:
    prompt = Prompt.objects.create(owner=owner, team=team, name=name)
    prompt.add_version(
        owner,
        system_prompt="You answer for {{company}}.",
        messages=[{"role": "user", "content": "Ticket: {{ticket}}"}],
        model=MODEL,
        params={"temperature": 0.5},
    )
    return prompt


@pytest.fixture
def team(user, other_user, django_user_model):
    team = Team.create(name="Acme", owner=user)
    team.add_member(other_user, Membership.Role.VIEWER)
    for name, role in (("mia", "member"), ("adam", "admin")):
        member = django_user_model.objects.create_user(name, password="x")
        team.add_member(member, role)
    return team


def member(team, role):
    return team.memberships.get(role=role).user


def test_creating_a_prompt_saves_version_1_in_the_current_space(client, user):
    client.force_login(user)
    response = client.post("/prompts/new/", new_prompt_data())

    prompt = Prompt.objects.get(name="support-reply")
    assert response.status_code == 302 and response["Location"] == f"/prompts/{prompt.pk}/"
    version = prompt.versions.get()
    assert (version.number, version.model, version.params) == (1, MODEL, {"temperature": 0.5})
    assert version.messages == [{"role": "user", "content": "Ticket: {{ticket}}"}]
    assert prompt.team is None and library.variables_of(version) == ["company", "ticket"]


def test_it_refuses_parameters_the_model_does_not_document(client, user):
    client.force_login(user)
    response = client.post("/prompts/new/", new_prompt_data(params='{"temprature": 1}'))

    assert response.status_code == 200 and "temprature" in response.content.decode()
    assert not Prompt.objects.exists()


def test_a_nul_or_lone_surrogate_in_a_message_or_the_parameters_is_refused(client, user):
    # PostgreSQL keeps no NUL in jsonb: a message holding one was a 500 there. The
    # parameters' JSON can spell one, or a lone surrogate, which no database keeps.
    client.force_login(user)
    response = client.post("/prompts/new/", new_prompt_data(message_content=["Ticket\x00"]))
    page = html.unescape(response.content.decode())
    assert response.status_code == 200
    assert "A message holds a NUL character (\\u0000), which cannot be stored." in page
    response = client.post("/prompts/new/", new_prompt_data(params='{"stop": ["\\ud800"]}'))
    page = html.unescape(response.content.decode())
    assert "stop holds a lone surrogate (\\ud800), which cannot be stored" in page
    assert not Prompt.objects.exists()


def test_it_refuses_a_name_that_cannot_go_in_a_url(client, user):
    client.force_login(user)
    response = client.post("/prompts/new/", new_prompt_data(name="a b/c"))

    assert "goes in the read API" in response.content.decode()
    assert not Prompt.objects.exists()


def test_saving_a_change_makes_a_new_version_and_keeps_the_old_one(client, user):
    prompt = make_prompt(user)
    client.force_login(user)
    data = new_prompt_data(system_prompt="You answer briefly for {{company}}.", note="briefer")
    response = client.post(f"/prompts/{prompt.pk}/versions/new/", data)

    assert response.status_code == 302
    v1, v2 = prompt.versions.order_by("number")
    assert v1.system_prompt == "You answer for {{company}}."
    assert (v2.number, v2.system_prompt, v2.note) == (2, data["system_prompt"], "briefer")


def test_a_version_is_never_edited_in_place(user):
    version = make_prompt(user).versions.get()
    version.system_prompt = "changed"
    with pytest.raises(PromptError):
        version.save()
    assert PromptVersion.objects.get(pk=version.pk).system_prompt == "You answer for {{company}}."


def test_moving_a_label_records_who_and_from_where(client, user):
    prompt = make_prompt(user)
    prompt.add_version(user, model=MODEL, system_prompt="v2")
    client.force_login(user)
    client.post(f"/prompts/{prompt.pk}/labels/", {"name": "production", "version": "1"})
    response = client.post(f"/prompts/{prompt.pk}/labels/", {"name": "Production", "version": "2"})

    assert response.status_code == 302
    label = prompt.labels.get()
    assert (label.name, label.version.number) == ("production", 2)
    moves = list(LabelMove.objects.order_by("id"))
    assert [(m.from_version and m.from_version.number, m.to_version.number) for m in moves] == [
        (None, 1),
        (1, 2),
    ]
    assert moves[-1].moved_by == user
    page = client.get(f"/prompts/{prompt.pk}/").content.decode()
    assert "v1 → v2" in page and "by ada" in page


def test_a_protected_label_moves_only_for_admins(client, team):
    owner = member(team, "owner")
    prompt = make_prompt(owner, team)
    prompt.add_version(owner, model=MODEL, system_prompt="v2")
    label = prompt.set_label("production", prompt.versions.get(number=1), owner)
    client.force_login(member(team, "member"))
    refused = client.post(f"/prompts/{prompt.pk}/labels/{label.pk}/protect/", {"protected": "1"})
    assert refused.status_code == 403
    client.force_login(member(team, "admin"))
    client.post(f"/prompts/{prompt.pk}/labels/{label.pk}/protect/", {"protected": "1"})
    label.refresh_from_db()
    assert label.protected

    client.force_login(member(team, "member"))
    response = client.post(f"/prompts/{prompt.pk}/labels/", {"name": "production", "version": "2"})
    assert response.status_code == 403 and "protected" in response.content.decode()
    label.refresh_from_db()
    assert label.version.number == 1
    client.force_login(member(team, "admin"))
    client.post(f"/prompts/{prompt.pk}/labels/", {"name": "production", "version": "2"})
    label.refresh_from_db()
    assert label.version.number == 2


def test_the_diff_shows_changed_words_and_parameters_side_by_side(client, user):
    prompt = make_prompt(user)
    prompt.add_version(
        user,
        system_prompt="You answer politely for {{company}}.",
        messages=[{"role": "user", "content": "Ticket: {{ticket}}"}],
        model=MODEL,
        params={"temperature": 0.9, "top_p": 0.8},
    )
    client.force_login(user)
    page = client.get(f"/prompts/{prompt.pk}/diff/?a=1&b=2").content.decode()

    assert "You answer<ins> politely</ins> for" in page
    assert "<td>temperature</td><td><code>0.5</code></td><td><code>0.9</code></td>" in page
    assert "<td>top_p</td><td><code>—</code></td><td><code>0.8</code></td>" in page
    assert 'Message 1 (user) <span class="muted">· unchanged' in page


def test_restoring_an_old_version_copies_it_into_a_new_one(client, user):
    prompt = make_prompt(user)
    prompt.add_version(user, model=MODEL, system_prompt="worse")
    client.force_login(user)
    client.post(f"/prompts/{prompt.pk}/v/1/restore/")

    v3 = prompt.versions.get(number=3)
    assert v3.system_prompt == "You answer for {{company}}." and v3.params == {"temperature": 0.5}
    assert v3.note == "Restored from version 1"


def test_viewers_read_prompts_but_change_nothing(client, team):
    prompt = make_prompt(member(team, "owner"), team)
    client.force_login(member(team, "viewer"))

    assert client.get(f"/prompts/{prompt.pk}/").status_code == 200
    assert client.get(f"/prompts/{prompt.pk}/v/1/").status_code == 200
    assert client.get(f"/prompts/{prompt.pk}/diff/?a=1&b=1").status_code == 200
    assert client.post(f"/prompts/{prompt.pk}/versions/new/", new_prompt_data()).status_code == 403
    assert client.post(f"/prompts/{prompt.pk}/v/1/restore/").status_code == 403
    labels = client.post(f"/prompts/{prompt.pk}/labels/", {"name": "x", "version": "1"})
    assert labels.status_code == 403
    assert client.post(f"/prompts/{prompt.pk}/v/1/open/").status_code == 403
    assert prompt.versions.count() == 1 and not prompt.labels.exists()
    assert not Conversation.objects.exists()


def test_strangers_get_404_everywhere(client, user, other_user):
    prompt = make_prompt(user)
    client.force_login(other_user)
    base = f"/prompts/{prompt.pk}"
    for url in (f"{base}/", f"{base}/v/1/", f"{base}/diff/"):
        assert client.get(url).status_code == 404
    assert client.post(f"{base}/v/1/open/").status_code == 404
    assert client.post(f"{base}/labels/", {"name": "x", "version": "1"}).status_code == 404


def test_the_list_shows_only_the_current_spaces_prompts(client, user, other_user, team):
    make_prompt(user, name="mine")
    make_prompt(other_user, name="theirs")
    make_prompt(user, team, name="teamwork")
    client.force_login(user)
    page = client.get("/prompts/").content.decode()
    assert "mine" in page and "theirs" not in page and "teamwork" not in page
    client.post("/space/", {"space": str(team.pk)})
    page = client.get("/prompts/").content.decode()
    assert "teamwork" in page and "mine" not in page


def test_open_in_playground_fills_the_playground_and_shows_the_variables_panel(client, user):
    prompt = make_prompt(user)
    VariableValues.objects.create(user=user, prompt=prompt, values={"company": "Acme"})
    client.force_login(user)
    response = client.post(f"/prompts/{prompt.pk}/v/1/open/")

    conversation = Conversation.objects.get()
    assert response["Location"] == f"/c/{conversation.pk}/"
    assert conversation.model == MODEL and conversation.params == {"temperature": 0.5}
    assert conversation.system_prompt == "You answer for {{company}}."
    assert PromptSession.objects.get(conversation=conversation).version.number == 1
    page = client.get(f"/c/{conversation.pk}/").content.decode()
    assert 'id="prompt-variables"' in page
    assert 'name="var:company" rows="2" form="composer">Acme</textarea>' in page
    assert 'name="var:ticket" rows="2" form="composer"></textarea>' in page
    assert "Ticket: {{ticket}}" in page


def test_history_filters_by_prompt_version_and_variable_value(client, user):
    prompt = make_prompt(user)
    version = prompt.versions.get()
    hit = Conversation.objects.create(owner=user, model=MODEL, title="from the prompt")
    miss = Conversation.objects.create(owner=user, model=MODEL, title="plain chat")
    for c in (hit, miss):
        Message.objects.create(conversation=c, role="user", text="hi")
    reply = Message.objects.create(conversation=hit, role="assistant", text="ok")
    Message.objects.create(conversation=miss, role="assistant", text="ok")
    PromptRun.objects.create(message=reply, version=version, variables={"ticket": "refund"})
    client.force_login(user)

    page = client.get(f"/review/?prompt_version={version.pk}").content.decode()
    assert "from the prompt" in page and "plain chat" not in page
    page = client.get("/review/?prompt_var=ticket%3Drefund").content.decode()
    assert "from the prompt" in page and "plain chat" not in page
    page = client.get("/review/?prompt_var=ticket%3Dother").content.decode()
    assert "from the prompt" not in page


def test_the_playground_settings_save_as_a_new_version(client, user):
    prompt = make_prompt(user)
    client.force_login(user)
    client.post(f"/prompts/{prompt.pk}/v/1/open/")
    conversation = Conversation.objects.get()
    client.post(
        f"/c/{conversation.pk}/settings/",
        {"model": MODEL, "system_prompt": "Terse, for {{company}}.", "param:temperature": "1.1"},
        headers={"HX-Request": "true"},
    )
    response = client.post(f"/prompts/playground/{conversation.pk}/save/")

    assert response["Location"] == f"/c/{conversation.pk}/"
    v2 = prompt.versions.get(number=2)
    assert (v2.system_prompt, v2.params) == ("Terse, for {{company}}.", {"temperature": 1.1})
    assert v2.messages == prompt.versions.get(number=1).messages
    assert PromptSession.objects.get(conversation=conversation).version == v2


def test_a_viewer_cannot_save_the_playground_as_a_version(client, team):
    owner = member(team, "owner")
    prompt = make_prompt(owner, team)
    client.force_login(owner)
    client.post(f"/prompts/{prompt.pk}/v/1/open/")
    conversation = Conversation.objects.get()
    client.force_login(member(team, "viewer"))

    assert client.post(f"/prompts/playground/{conversation.pk}/save/").status_code == 403
    assert prompt.versions.count() == 1


def test_the_variables_panel_is_hidden_from_those_who_cannot_see_the_prompt(client, team):
    owner, mate = member(team, "owner"), member(team, "member")
    prompt = make_prompt(owner)  # personal
    client.force_login(owner)
    client.post(f"/prompts/{prompt.pk}/v/1/open/")
    conversation = Conversation.objects.get()
    client.post(f"/c/{conversation.pk}/move/", {"team": team.pk})
    assert b'id="prompt-variables"' in client.get(f"/c/{conversation.pk}/").content

    client.force_login(mate)
    page = client.get(f"/c/{conversation.pk}/")
    assert page.status_code == 200 and b'id="prompt-variables"' not in page.content


@pytest.mark.parametrize("number", ["NaN", "Infinity", "1e309"])
def test_json_with_a_number_json_cannot_hold_is_refused(client, user, number):
    # Python's json reads these, but a version's fields must be JSON again (SQLite checks it).
    client.force_login(user)
    tools = (
        '[{"type": "function", "function": {"name": "f", "parameters": '
        f'{{"type": "object", "properties": {{"n": {{"type": "number", "maximum": {number}}}}}}}'
        "}}]"
    )
    response = client.post("/prompts/new/", new_prompt_data(tools=tools))
    assert response.status_code == 200
    assert "This is not valid JSON." in response.content.decode()
    assert not Prompt.objects.exists()
    prompt = make_prompt(user)
    response = client.post(f"/prompts/{prompt.pk}/versions/new/", new_prompt_data(tools=tools))
    assert response.status_code == 200
    assert "This is not valid JSON." in response.content.decode()
    assert prompt.versions.count() == 1


@pytest.mark.parametrize(
    "extra",
    [
        {"response_format": '{"type": "json_schema", "json_schema": "reply"}'},
        {"params": '{"tool_choice": {"type": "function", "function": "f"}}'},
        {"params": '{"tool_choice": {"type": "function", "function": {"name": 5}}}'},
    ],
)
def test_a_json_field_of_the_wrong_shape_is_refused(client, user, extra):
    client.force_login(user)
    tools = '[{"type": "function", "function": {"name": "f"}}]'
    response = client.post("/prompts/new/", new_prompt_data(tools=tools, **extra))
    assert response.status_code == 200
    assert not Prompt.objects.exists()

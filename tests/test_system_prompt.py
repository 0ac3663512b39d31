"""One limit on the system prompt, refused the same way wherever it is saved or sent."""

from __future__ import annotations

import html

import pytest
from channels.db import database_sync_to_async

from playground.chat.models import Conversation, LastSettings, Message, Preset
from playground.chat.services import MAX_SYSTEM_CHARS

HX = {"HX-Request": "true"}
MODEL = "empiriolabs:gemma-4-e4b"
TOO_LONG = "x" * (MAX_SYSTEM_CHARS + 1)
REFUSAL = f"The system prompt is too long: at most {MAX_SYSTEM_CHARS:,} characters."


def system_prompt_error(page: str) -> str:
    marker = '<p class="error" id="system-prompt-error" hx-swap-oob="true">'
    assert marker in page
    return html.unescape(page.split(marker, 1)[1].split("</p>", 1)[0])


@pytest.fixture
def panel(client, user, conversation):
    client.force_login(user)
    conversation.system_prompt = "Be brief."
    conversation.params = {"seed": 1}
    conversation.save()
    return client


@pytest.mark.django_db
def test_the_panel_refuses_a_system_prompt_over_the_limit_and_saves_nothing(
    panel, user, conversation
):
    response = panel.post(
        f"/c/{conversation.pk}/settings/",
        {"model": MODEL, "system_prompt": TOO_LONG, "param:seed": "7"},
        headers=HX,
    )

    page = response.content.decode()
    assert response.status_code == 200
    assert system_prompt_error(page) == REFUSAL
    assert "Nothing was saved" in page
    conversation.refresh_from_db()
    assert conversation.system_prompt == "Be brief." and conversation.params == {"seed": 1}
    assert not LastSettings.objects.filter(user=user).exists()


@pytest.mark.django_db
def test_the_panel_saves_a_system_prompt_at_the_limit_and_clears_the_error(panel, conversation):
    at_limit = "y" * MAX_SYSTEM_CHARS
    response = panel.post(
        f"/c/{conversation.pk}/settings/", {"model": MODEL, "system_prompt": at_limit}, headers=HX
    )

    page = response.content.decode()
    assert system_prompt_error(page) == "" and "Saved." in page
    conversation.refresh_from_db()
    assert conversation.system_prompt == at_limit


@pytest.mark.django_db
def test_the_panel_refuses_it_on_a_model_switch_too(panel, conversation):
    response = panel.post(
        f"/c/{conversation.pk}/settings/",
        {"model": "aimlapi:google/gemma-3n-e4b-it", "system_prompt": TOO_LONG},
        headers=HX,
    )

    assert system_prompt_error(response.content.decode()) == REFUSAL
    conversation.refresh_from_db()
    assert conversation.model == MODEL and conversation.system_prompt == "Be brief."


@pytest.mark.django_db
def test_a_preset_with_a_system_prompt_over_the_limit_is_refused(panel, user, conversation):
    response = panel.post(
        f"/c/{conversation.pk}/presets/",
        {"preset_name": "Long", "model": MODEL, "system_prompt": TOO_LONG},
        headers=HX,
    )

    page = html.unescape(response.content.decode())
    assert response.status_code == 200
    assert f'<p class="error">Fix these first: {REFUSAL}</p>' in page
    assert not Preset.objects.filter(owner=user).exists()


@pytest.mark.django_db(transaction=True)
async def test_sending_with_a_system_prompt_over_the_limit_is_refused(user, conversation, connect):
    ok, socket = await connect(user, conversation.pk)
    await socket.send(action="send", text="Hi", model=MODEL, system_prompt=TOO_LONG)

    frame = await socket.until(lambda f: 'id="system-prompt-error"' in f)
    assert system_prompt_error(frame) == REFUSAL
    assert "Fix the highlighted settings: nothing was sent." in frame
    assert not await Message.objects.filter(conversation=conversation).aexists()
    saved = await database_sync_to_async(Conversation.objects.get)(pk=conversation.pk)
    assert saved.system_prompt == ""
    await socket.close()


# PostgreSQL keeps no NUL in text or jsonb: the save was a 500 there (SQLite kept it). A lone
# surrogate, which only a JSON escape over the socket can spell, no database keeps.
NUL_REFUSAL = "The system prompt holds a NUL character (\\u0000), which cannot be stored."


@pytest.mark.django_db
def test_the_panel_and_a_preset_refuse_a_system_prompt_holding_a_nul_or_lone_surrogate(
    panel, user, conversation
):
    response = panel.post(
        f"/c/{conversation.pk}/settings/",
        {"model": MODEL, "system_prompt": "Be\x00 brief.", "param:seed": "7"},
        headers=HX,
    )
    page = response.content.decode()
    assert response.status_code == 200
    assert system_prompt_error(page) == NUL_REFUSAL
    assert "Nothing was saved: the system prompt cannot be stored." in page
    conversation.refresh_from_db()
    assert conversation.system_prompt == "Be brief." and conversation.params == {"seed": 1}

    response = panel.post(
        f"/c/{conversation.pk}/presets/",
        {"preset_name": "Nul", "model": MODEL, "system_prompt": "Be\x00 brief."},
        headers=HX,
    )
    assert response.status_code == 200
    assert f"Fix these first: {NUL_REFUSAL}" in html.unescape(response.content.decode())
    assert not Preset.objects.filter(owner=user).exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("char", "named"),
    [("\x00", "a NUL character (\\u0000)"), ("\udfff", "a lone surrogate (\\udfff)")],
)
async def test_sending_a_system_prompt_holding_a_nul_or_lone_surrogate_is_refused(
    char, named, upstream, user, api_key, conversation, connect
):
    ok, socket = await connect(user, conversation.pk)
    await socket.send(action="send", text="Hi", model=MODEL, system_prompt=f"Be{char} brief.")

    frame = await socket.until(lambda f: 'id="system-prompt-error"' in f)
    refusal = f"The system prompt holds {named}, which cannot be stored."
    assert system_prompt_error(frame) == refusal
    assert "Fix the highlighted settings: nothing was sent." in frame
    assert upstream.requests == []
    assert not await Message.objects.filter(conversation=conversation).aexists()
    await socket.close()

"""A prompt version in the playground: the send fills the templates in, the reply records the
version and values, an undefined variable blocks the send, and no client can forge the record."""

from __future__ import annotations

import html

import pytest
from channels.db import database_sync_to_async

from playground.chat.models import Conversation, Message
from playground.prompts import play
from playground.prompts.models import Prompt, PromptRun, VariableValues
from tests.conftest import reply_of

pytestmark = [pytest.mark.django_db(transaction=True)]
MODEL = "empiriolabs:gemma-4-e4b"


def _opened(user, messages=None):
    prompt = Prompt.objects.create(owner=user, name="support")
    version = prompt.add_version(
        user,
        system_prompt="You answer for {{company}}.",
        messages=messages or [{"role": "user", "content": "Ticket: {{ticket}}"}],
        model=MODEL,
        params={"temperature": 0.5},
    )
    return version, play.open_in_playground(version, user)


async def test_a_send_fills_the_templates_in_and_records_version_and_values(
    upstream, user, api_key, connect
):
    version, conversation = await database_sync_to_async(_opened)(user)
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt(
        "",
        system_prompt="You answer for {{company}}.",
        prompt_version=str(version.pk),
        **{"var:company": "Acme", "var:ticket": "My {{order}} is late", "param:temperature": "0.5"},
    )
    await socket.until(lambda f: "status-complete" in f)

    body = upstream.requests[-1].body
    assert body["messages"] == [
        {"role": "system", "content": "You answer for Acme."},
        {"role": "user", "content": "Ticket: My {{order}} is late"},
    ]
    reply = await reply_of(conversation)
    run = await PromptRun.objects.select_related("version").aget(message=reply)
    assert run.version.pk == version.pk and not run.edited
    assert run.variables == {"company": "Acme", "ticket": "My {{order}} is late"}
    saved = await Conversation.objects.aget(pk=conversation.pk)
    assert saved.system_prompt == "You answer for {{company}}."  # the template stays
    remembered = await VariableValues.objects.aget(user=user)
    assert remembered.values["company"] == "Acme"
    await socket.close()


async def test_an_undefined_variable_blocks_the_send_with_a_clear_message(
    upstream, user, api_key, connect
):
    version, conversation = await database_sync_to_async(_opened)(user)
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt(
        "",
        system_prompt="You answer for {{company}}.",
        prompt_version=str(version.pk),
        **{"var:company": "Acme", "var:ticket": ""},
    )

    frame = await socket.until(lambda f: "composer-error" in f)
    assert "{{ticket}}" in frame and "nothing was sent" in frame
    assert not await Message.objects.filter(conversation=conversation).aexists()
    assert upstream.requests == []
    await socket.close()


@pytest.mark.parametrize(
    ("char", "named"),
    [("\x00", "a NUL character (\\u0000)"), ("\ud800", "a lone surrogate (\\ud800)")],
)
async def test_a_value_holding_a_nul_or_lone_surrogate_blocks_the_send(
    char, named, upstream, user, api_key, connect
):
    # The values are remembered (jsonb) before the turn: PostgreSQL refused \u0000, every
    # database a lone surrogate, and the socket closed on the error.
    version, conversation = await database_sync_to_async(_opened)(user)
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt(
        "",
        system_prompt="You answer for {{company}}.",
        prompt_version=str(version.pk),
        **{"var:company": f"Ac{char}me", "var:ticket": "late"},
    )

    frame = html.unescape(await socket.until(lambda f: "composer-error" in f))
    refusal = f"The value of {{{{company}}}} holds {named}, which cannot be stored"
    assert f"{refusal}: nothing was sent." in frame
    assert not await Message.objects.filter(conversation=conversation).aexists()
    assert not await VariableValues.objects.aexists()
    assert upstream.requests == []
    await socket.close()


async def test_the_message_box_is_a_template_too_and_marks_the_reply_edited(
    upstream, user, api_key, connect
):
    version, conversation = await database_sync_to_async(_opened)(user)
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt(
        r"Urgent \{{x}}: {{ticket}}",
        system_prompt="You answer for {{company}}.",
        prompt_version=str(version.pk),
        **{"var:company": "Acme", "var:ticket": "refund"},
    )
    await socket.until(lambda f: "status-complete" in f)

    assert upstream.requests[-1].body["messages"][-1]["content"] == "Urgent {{x}}: refund"
    run = await PromptRun.objects.aget(message=await reply_of(conversation))
    assert run.edited
    await socket.close()


async def test_example_messages_start_the_conversation_on_the_first_send(
    upstream, user, api_key, connect
):
    examples = [
        {"role": "user", "content": "Ticket: {{example}}"},
        {"role": "assistant", "content": "Sorry about {{example}}."},
        {"role": "user", "content": "Ticket: {{ticket}}"},
    ]
    version, conversation = await database_sync_to_async(_opened)(user, examples)
    ok, socket = await connect(user, conversation.pk)
    values = {"var:company": "Acme", "var:ticket": "late", "var:example": "broken"}
    await socket.send_prompt(
        "", system_prompt="You answer for {{company}}.", prompt_version=str(version.pk), **values
    )
    # The example reply is complete too: wait for the new one.
    await socket.until(lambda f: "status-complete" in f and "Sorry about" not in f)

    assert [m["content"] for m in upstream.requests[-1].body["messages"]] == [
        "You answer for Acme.",
        "Ticket: broken",
        "Sorry about broken.",
        "Ticket: late",
    ]
    shown = "".join(socket.frames)
    assert "Sorry about broken." in shown and shown.index("Ticket: broken") < shown.index(
        "Ticket: late"
    )
    await socket.close()


async def test_a_prompt_version_the_user_cannot_see_is_refused(
    upstream, user, other_user, api_key, connect
):
    version, _ = await database_sync_to_async(_opened)(other_user)
    conversation = await Conversation.objects.acreate(owner=user, model=MODEL)
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("hi", prompt_version=str(version.pk), **{"var:company": "x"})

    frame = await socket.until(lambda f: "composer-error" in f)
    assert "not yours" in frame
    assert not await Message.objects.filter(conversation=conversation).aexists()
    await socket.close()


async def test_a_client_cannot_forge_the_record(upstream, user, api_key, connect):
    version, conversation = await database_sync_to_async(_opened)(user)
    ok, socket = await connect(user, conversation.pk)
    forged = {"version": version.pk, "variables": {"a": "b"}, "edited": False}
    await socket.send_prompt("plain", prompt_plan=forged)
    await socket.until(lambda f: "status-complete" in f)

    assert not await PromptRun.objects.aexists()
    await socket.close()


async def test_a_reply_sent_with_other_parameters_is_marked_edited(
    upstream, user, api_key, connect
):
    version, conversation = await database_sync_to_async(_opened)(user)
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt(
        "",
        system_prompt="You answer for {{company}}.",
        prompt_version=str(version.pk),
        **{"var:company": "Acme", "var:ticket": "late", "param:temperature": "1.3"},
    )
    await socket.until(lambda f: "status-complete" in f)

    run = await PromptRun.objects.aget(message=await reply_of(conversation))
    assert run.edited
    await socket.close()


async def test_a_prompt_version_of_another_space_is_refused(upstream, user, api_key, connect):
    """A version of a team's prompt sent from a personal conversation (the user may see
    both) would record the reply against the team's prompt: its History filter, its reply
    count and whether deleting archives it would then count a reply no member can see."""
    from playground.accounts.models import Team

    def _team_version():
        team = Team.create(name="Support", owner=user)
        prompt = Prompt.objects.create(owner=user, team=team, name="support")
        return prompt.add_version(user, system_prompt="For {{company}}.", model=MODEL)

    version = await database_sync_to_async(_team_version)()
    conversation = await Conversation.objects.acreate(owner=user, model=MODEL)
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("hi", prompt_version=str(version.pk), **{"var:company": "x"})

    frame = await socket.until(lambda f: "composer-error" in f)
    assert "another space" in frame
    assert not await Message.objects.filter(conversation=conversation).aexists()
    assert not await PromptRun.objects.aexists()
    await socket.close()

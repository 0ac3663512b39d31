"""Re-run: a reply is asked for again with exactly the request that produced it."""

from __future__ import annotations

import pytest

from tests.conftest import reply_of

pytestmark = [pytest.mark.django_db(transaction=True)]
GEMMA_4 = "empiriolabs:gemma-4-e4b"


async def test_rerun_sends_the_same_request_again(upstream, user, api_key, conversation, connect):
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("Roll a die", **{"param:seed": "42", "param:temperature": "1.2"})
    await socket.until(lambda f: "status-complete" in f)
    first = await reply_of(conversation)
    await socket.send(action="rerun", message_id=first.pk)
    await socket.until(lambda f: f"msg-{first.pk}" not in f and "status-complete" in f)
    second = await reply_of(conversation)
    assert second.pk != first.pk and second.parent_id == first.parent_id
    assert upstream.requests[-1].body == upstream.requests[-2].body == first.request_body
    assert upstream.requests[-1].body["seed"] == 42


async def test_rerun_of_another_conversations_reply_is_refused(
    upstream, user, api_key, conversation, connect
):
    from playground.chat.models import Conversation

    other = await Conversation.objects.acreate(owner=user, model=GEMMA_4)
    ok, socket = await connect(user, other.pk)
    await socket.send_prompt("Hi")
    await socket.until(lambda f: "status-complete" in f)
    foreign = await reply_of(other)
    ok, socket = await connect(user, conversation.pk)
    await socket.send(action="rerun", message_id=foreign.pk)
    assert "cannot be re-run" in await socket.until(lambda f: "composer-error" in f)


def _opened_prompt(user):
    from playground.prompts import play
    from playground.prompts.models import Prompt

    prompt = Prompt.objects.create(owner=user, name="support")
    version = prompt.add_version(
        user,
        system_prompt="You answer for {{company}}.",
        messages=[{"role": "user", "content": "Ticket: {{ticket}}"}],
        model=GEMMA_4,
    )
    return version, play.open_in_playground(version, user)


async def test_a_rerun_of_a_prompt_reply_records_the_same_version_and_values(
    upstream, user, api_key, connect
):
    from channels.db import database_sync_to_async
    from django.test import Client

    from playground.prompts.models import PromptRun

    version, conversation = await database_sync_to_async(_opened_prompt)(user)
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt(
        "",
        system_prompt="You answer for {{company}}.",
        prompt_version=str(version.pk),
        **{"var:company": "Acme", "var:ticket": "Late order"},
    )
    await socket.until(lambda f: "status-complete" in f)
    first = await reply_of(conversation)
    await socket.send(action="rerun", message_id=first.pk)
    await socket.until(lambda f: f"msg-{first.pk}" not in f and "status-complete" in f)
    second = await reply_of(conversation)
    assert second.pk != first.pk

    run = await PromptRun.objects.aget(message=second)
    assert run.version_id == version.pk
    assert run.variables == {"company": "Acme", "ticket": "Late order"}
    assert not run.edited

    # History's prompt-version filter finds the conversation through the re-run alone.
    await PromptRun.objects.filter(message=first).adelete()

    def history() -> bytes:
        client = Client()
        client.force_login(user)
        return client.get("/review/", {"prompt_version": version.pk}).content

    assert f'id="history-{conversation.pk}"'.encode() in await database_sync_to_async(history)()
    await socket.close()


async def test_a_rerun_of_a_plain_reply_records_no_prompt_version(
    upstream, user, api_key, conversation, connect
):
    from playground.prompts.models import PromptRun

    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("Plain")
    await socket.until(lambda f: "status-complete" in f)
    first = await reply_of(conversation)
    await socket.send(action="rerun", message_id=first.pk)
    await socket.until(lambda f: f"msg-{first.pk}" not in f and "status-complete" in f)
    assert not await PromptRun.objects.aexists()


async def test_a_rerun_in_a_compare_column_keeps_its_prompt_version(upstream, user, api_key):
    import asyncio

    from channels.db import database_sync_to_async

    from playground.chat.models import Message
    from playground.prompts.models import PromptRun
    from tests.test_compare import compare_with_a_templated_version, finish, open_group

    group, version = await database_sync_to_async(compare_with_a_templated_version)(user)
    ok, socket = await open_group(user, group.pk)
    await socket.drain()
    await socket.send(action="send", text="About it", **{"var:company": "Acme"})
    await socket.until(lambda f: "composer-sent" in f or 'id="prompt"' in f)
    await finish(group)
    first = await PromptRun.objects.select_related("message").aget()

    await socket.send(action="rerun", message_id=first.message_id)
    replies = Message.objects.filter(
        conversation_id=first.message.conversation_id, role="assistant"
    )
    async with asyncio.timeout(5):
        while await replies.acount() < 2:
            await asyncio.sleep(0.02)
    await finish(group)

    again = await PromptRun.objects.exclude(message_id=first.message_id).aget()
    assert again.version_id == version.pk and again.variables == first.variables
    await socket.close()

"""The run's own machinery, below the socket."""

from __future__ import annotations

import asyncio

import pytest

from playground.chat import runs
from playground.providers.specs import GEMMA_4_E4B


def make_run() -> runs.Run:
    return runs.Run(runs.RunRequest(1, 1, "run.test", GEMMA_4_E4B, {"messages": []}, "k"))


async def test_the_publisher_stops_when_cancelled_just_as_new_text_arrives():
    # On Python 3.11 asyncio.wait_for swallows a cancellation that lands while the awaited
    # event fires; the run then waited forever and never saved its reply.
    run = make_run()
    publisher = asyncio.create_task(run._publish_loop())
    await asyncio.sleep(0)
    run._wake.set()
    publisher.cancel()
    done, _ = await asyncio.wait([publisher], timeout=1)
    assert publisher in done


def test_the_key_is_not_in_the_run_requests_repr():
    assert "'k'" not in repr(make_run().request) and "api_key" not in repr(make_run().request)


def test_a_delta_is_split_at_what_a_socket_has_shown():
    from playground.chat.consumers import _beyond

    assert _beyond(0, 0, "abc") == "abc"
    assert _beyond(2, 0, "abc") == "c"
    assert _beyond(5, 0, "abc") == ""
    assert _beyond(1, 3, "def") is None  # a gap: frames were lost, ask for a snapshot


async def test_a_stop_after_the_reply_finished_changes_nothing():
    run = make_run()
    run._stream_task = asyncio.create_task(asyncio.sleep(5))  # still draining the connection
    run.finish_reason = "tool_calls"
    await run.layer.send("run.test", {"type": "run.stop"})
    await run.layer.send("run.test", {"type": "run.end"})
    await run._listen()
    assert run.stopped is False and not run._stream_task.cancelled()
    run._stream_task.cancel()


@pytest.mark.django_db(transaction=True)
async def test_a_failed_final_save_still_ends_the_reply_and_tells_the_watchers(
    conversation, monkeypatch
):
    from playground.chat.models import Message

    reply = await Message.objects.acreate(
        conversation=conversation, role="assistant", status="streaming"
    )
    run = runs.Run(runs.RunRequest(reply.pk, conversation.pk, "run.t", GEMMA_4_E4B, {}, None))
    run.text.shown = "partial"
    watcher = await run.layer.new_channel()
    await run.layer.group_add(run.group, watcher)

    async def broken():
        raise RuntimeError("disk full")

    monkeypatch.setattr(run, "_save_final", broken)
    monkeypatch.setattr(runs, "SAVE_RETRIES", ())
    await run._finish()
    await reply.arefresh_from_db()
    assert reply.status == "error" and reply.text == "partial"
    assert (await run.layer.receive(watcher))["type"] == "run.done"


@pytest.mark.django_db(transaction=True)
async def test_a_final_save_that_fails_for_a_moment_is_tried_again_and_keeps_the_reply(
    conversation, monkeypatch
):
    from playground.chat.models import Message

    reply = await Message.objects.acreate(
        conversation=conversation, role="assistant", status="streaming"
    )
    run = runs.Run(runs.RunRequest(reply.pk, conversation.pk, "run.t", GEMMA_4_E4B, {}, None))
    run.text.shown = "the whole reply"
    save, failures = run._save_final, []

    async def down_twice():
        if len(failures) < 2:
            failures.append(1)
            raise RuntimeError("database restarting")
        await save()

    monkeypatch.setattr(run, "_save_final", down_twice)
    monkeypatch.setattr(runs, "SAVE_RETRIES", (0.01,))
    await run._finish()
    await reply.arefresh_from_db()
    assert (reply.status, reply.text) == ("complete", "the whole reply")

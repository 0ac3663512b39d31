"""The sidebar and the saved transcript: newest first, titles, rename, delete, stale runs."""

from __future__ import annotations

import html
import time
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone
from pytest_django.asserts import assertInHTML

from playground.chat.models import NO_PROGRESS, PROCESS_GONE, Conversation, Message
from tests.html import attr, find, has, text

pytestmark = pytest.mark.django_db


def test_home_opens_an_empty_conversation_instead_of_piling_up_new_ones(client, user):
    client.force_login(user)
    first = client.get("/")
    second = client.get("/")
    assert first["Location"] == second["Location"]
    assert Conversation.objects.count() == 1


def test_home_starts_a_new_conversation_once_the_newest_has_messages(client, user, conversation):
    Message.objects.create(conversation=conversation, role="user", text="Hi")
    client.force_login(user)
    response = client.get("/")
    assert Conversation.objects.count() == 2
    assert response["Location"] != f"/c/{conversation.pk}/"


def test_a_new_conversation_removes_empty_ones_left_for_a_day_and_nothing_else(
    client, user, other_user
):
    day_ago = timezone.now() - timedelta(days=1, minutes=1)
    abandoned = Conversation.objects.create(owner=user, model="x")
    used = Conversation.objects.create(owner=user, model="x")
    Message.objects.create(conversation=used, role="user", text="Hi")
    someone_elses = Conversation.objects.create(owner=other_user, model="x")
    named = Conversation.objects.create(owner=user, model="x", title="Kept: it has a name")
    old = [abandoned.pk, used.pk, someone_elses.pk, named.pk]
    Conversation.objects.filter(pk__in=old).update(updated=day_ago)
    recent = Conversation.objects.create(owner=user, model="x")  # perhaps open in another tab
    client.force_login(user)
    response = client.post("/c/new/")
    assert response.status_code == 302
    left = set(Conversation.objects.values_list("pk", flat=True))
    assert abandoned.pk not in left
    assert {used.pk, someone_elses.pk, named.pk, recent.pk} <= left
    assert len(left) == 5  # the four kept and the new one


def test_the_sidebar_is_newest_first(client, user):
    old = Conversation.objects.create(owner=user, title="Older", model="x")
    new = Conversation.objects.create(owner=user, title="Newer", model="x")
    Conversation.objects.filter(pk=old.pk).update(updated=timezone.now() - timedelta(days=1))
    client.force_login(user)
    page = client.get(f"/c/{new.pk}/").content.decode()
    assert page.index("Newer") < page.index("Older")


def test_the_title_comes_from_the_first_message():
    conversation = Conversation(model="x")
    conversation.title_from("  Explain   the\nCAP theorem " + "x" * 100)
    assert conversation.title.startswith("Explain the CAP theorem") and conversation.title.endswith(
        "…"
    )
    conversation.title_from("Something else")
    assert conversation.title.startswith("Explain")


def test_a_conversation_is_renamed(client, user, conversation):
    client.force_login(user)
    form = client.get(f"/c/{conversation.pk}/rename/", headers={"HX-Request": "true"})
    assert has(form.content, "input", name="title")
    response = client.post(
        f"/c/{conversation.pk}/rename/",
        {"title": "  Gemma   tests "},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 200 and b"Gemma tests" in response.content
    conversation.refresh_from_db()
    assert conversation.title == "Gemma tests"


def test_an_empty_title_is_refused(client, user, conversation):
    client.force_login(user)
    response = client.post(f"/c/{conversation.pk}/rename/", {"title": "   "})
    assert b"cannot be empty" in response.content
    conversation.refresh_from_db()
    assert conversation.title == ""


def test_a_title_holding_a_nul_is_refused_not_a_crash(client, user, conversation):
    # PostgreSQL keeps no NUL in text: the save was a 500 there (SQLite kept it).
    conversation.title = "Kept"
    conversation.save()
    client.force_login(user)
    response = client.post(
        f"/c/{conversation.pk}/rename/", {"title": "New\x00title"}, headers={"HX-Request": "true"}
    )
    assert response.status_code == 200
    assert has(response.content, "input", name="title")
    assert "The title holds a NUL character (\\u0000), which cannot be stored." in html.unescape(
        response.content.decode()
    )
    conversation.refresh_from_db()
    assert conversation.title == "Kept"


def test_delete_asks_for_confirmation_and_removes_everything(client, user, conversation):
    Message.objects.create(conversation=conversation, role="user", text="Hi")
    conversation.title_from("Hi")
    conversation.save()
    client.force_login(user)
    page = client.get(f"/c/{conversation.pk}/").content.decode()
    assert has(page, hx_post=f"/c/{conversation.pk}/delete/", hx_confirm=True)
    response = client.post(
        f"/c/{conversation.pk}/delete/",
        headers={"HX-Request": "true", "HX-Current-URL": f"http://testserver/c/{conversation.pk}/"},
    )
    assert response["HX-Redirect"] == "/"
    assert not Conversation.objects.exists() and not Message.objects.exists()


def test_delete_needs_post(client, user, conversation):
    client.force_login(user)
    assert client.get(f"/c/{conversation.pk}/delete/").status_code == 405
    assert Conversation.objects.exists()


def test_a_reply_whose_run_died_is_marked_interrupted(client, user, conversation, settings):
    settings.PLAYGROUND_RUN = {**settings.PLAYGROUND_RUN, "STALE_AFTER": 60}
    stale = Message.objects.create(
        conversation=conversation,
        role="assistant",
        status="streaming",
        text="Half a rep",
        checkpoint_at=timezone.now() - timedelta(seconds=61),
    )
    fresh = Message.objects.create(
        conversation=conversation,
        parent=stale,  # on the shown branch: the transcript is the active branch
        role="assistant",
        status="streaming",
        checkpoint_at=timezone.now(),
    )
    client.force_login(user)
    page = client.get(f"/c/{conversation.pk}/").content.decode()
    stale.refresh_from_db()
    fresh.refresh_from_db()
    assert stale.status == "interrupted" and stale.text == "Half a rep"
    assert fresh.status == "streaming"
    # Nothing tells whether its process died or hangs: the message says no more than that.
    assert "This reply stopped making progress" in page
    assert stale.error == NO_PROGRESS


def test_with_a_shared_cache_a_reply_whose_liveness_key_expired_is_marked_sooner(
    client, user, conversation, settings
):
    from playground.chat import liveness

    settings.PLAYGROUND_SHARED_CACHE = True  # the test's LocMem cache stands in for Redis
    settings.PLAYGROUND_RUN = {**settings.PLAYGROUND_RUN, "STALE_AFTER": 60, "ALIVE_TTL": 10}
    quiet = timezone.now() - timedelta(seconds=11)
    gone = Message.objects.create(
        conversation=conversation, role="assistant", status="streaming", checkpoint_at=quiet
    )
    alive = Message.objects.create(  # on the shown branch: the transcript is the active one
        conversation=conversation,
        parent=gone,
        role="assistant",
        status="streaming",
        checkpoint_at=quiet,
    )
    cache.set(liveness.key(alive.pk), 1, 10)
    cache.set(liveness.SINCE, time.time() - 60)  # the keys have been kept for a while
    client.force_login(user)
    page = client.get(f"/c/{conversation.pk}/").content.decode()
    gone.refresh_from_db()
    alive.refresh_from_db()
    assert (gone.status, gone.error) == ("interrupted", PROCESS_GONE)
    assert alive.status == "streaming"
    assert "The server process writing this reply stopped before it finished." in page


def test_the_page_shows_the_figures_under_a_reply(client, user, conversation):
    Message.objects.create(
        conversation=conversation,
        role="assistant",
        status="complete",
        text="**Hi**",
        reasoning="Thinking about it",
        finish_reason="stop",
        usage={"prompt_tokens": 12, "completion_tokens": 34, "total_tokens": 46},
        ttft_ms=123.4,
        total_ms=2000,
        tokens_per_second=18.5,
        cost="0.03",
        model="empiriolabs:gemma-4-e4b",
    )
    client.force_login(user)
    page = client.get(f"/c/{conversation.pk}/").content.decode()
    for expected in [
        "12 + 34 tokens",
        "TTFT 123 ms",
        "2000 ms total",
        "18.5 tok/s",
        "$0.0300",
        "finish: stop",
        "Gemma 4 E4B",
        "Thinking about it",
    ]:
        assert expected in page, expected
    assertInHTML("<strong>Hi</strong>", page)
    assert "Thinking about it" in text(find(page, "details", class_="reasoning"))


@pytest.mark.django_db(transaction=True)
async def test_the_sidebar_learns_the_title_live(upstream, user, api_key, conversation, connect):
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("Plan a trip to Oslo")
    frame = await socket.until(lambda f: has(f, id=f"conv-{conversation.pk}"))
    item = find(frame, "li", id=f"conv-{conversation.pk}", hx_swap_oob="true")
    assert "Plan a trip to Oslo" in text(item)
    await socket.until(lambda f: "status-complete" in f)


@pytest.mark.django_db(transaction=True)
async def test_the_first_send_fills_the_hidden_row_under_today(
    upstream, user, api_key, conversation, connect
):
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("Plan a trip to Oslo")
    frame = await socket.until(lambda f: has(f, id=f"conv-{conversation.pk}"))
    item = find(frame, "li", id=f"conv-{conversation.pk}", hx_swap_oob="true")
    assert "current" in attr(item, "class").split()
    assert text(find(frame, "li", id="day-today", hx_swap_oob="true")) == "Today"
    await socket.until(lambda f: "status-complete" in f)
    # Later sends only update the row.
    await socket.send_prompt("And Bergen?")
    frame = await socket.until(lambda f: has(f, id=f"conv-{conversation.pk}"))
    assert not has(frame, id="day-today")
    await socket.until(lambda f: "status-complete" in f)


@pytest.mark.parametrize("at", ["²", "٣", "abc", "-1", "99999999999999999999999"])
def test_an_at_that_names_no_message_opens_the_active_branch(client, user, conversation, at):
    # str.isdigit() is true of "²", which int() refuses: the page must not fail on it.
    client.force_login(user)
    response = client.get(f"/c/{conversation.pk}/", {"at": at})
    assert response.status_code == 200

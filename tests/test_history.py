"""History: everything a user may see, filtered by the URL, newest first, a page at a time."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from playground.accounts.models import Membership, Team
from playground.chat.models import Attachment, Conversation, Message
from playground.review import history
from tests.html import attr, find, find_all, has, text

pytestmark = pytest.mark.django_db

URL = "/review/"


@pytest.fixture
def team(user, other_user):
    team = Team.objects.create(name="Lab")
    Membership.objects.create(team=team, user=user, role="member")
    Membership.objects.create(team=team, user=other_user, role="member")
    return team


def conv(owner, title, *, team=None, model="empiriolabs:gemma-4-e4b", when=None, **kw):
    c = Conversation.objects.create(owner=owner, title=title, team=team, model=model, **kw)
    if when is not None:
        Conversation.objects.filter(pk=c.pk).update(updated=when)
        c.refresh_from_db()
    return c


def titles(response) -> list[str]:
    return [text(a) for a in find_all(response.content, "a", class_="history-title")]


def get(client, user, **params):
    client.force_login(user)
    return client.get(URL, params)


def test_it_lists_personal_and_team_conversations_newest_first(client, user, other_user, team):
    conv(user, "mine old", when=datetime(2026, 1, 1, tzinfo=UTC))
    conv(other_user, "team new", team=team, when=datetime(2026, 3, 1, tzinfo=UTC))
    conv(user, "mine mid", when=datetime(2026, 2, 1, tzinfo=UTC))
    response = get(client, user)
    assert response.status_code == 200
    assert titles(response) == ["team new", "mine mid", "mine old"]


def test_it_never_shows_another_users_personal_conversation_or_a_foreign_team(
    client, user, other_user, django_user_model
):
    outsider_team = Team.objects.create(name="Elsewhere")
    Membership.objects.create(team=outsider_team, user=other_user)
    conv(other_user, "eve private")
    conv(other_user, "eve team", team=outsider_team)
    conv(user, "ada own")
    response = get(client, user)
    assert titles(response) == ["ada own"]
    assert b"eve private" not in response.content and b"eve team" not in response.content
    # Naming the foreign team (or its member) in the URL is refused, not answered with rows.
    response = get(client, user, space=str(outsider_team.pk))
    assert response.status_code == 400
    assert b"eve team" not in response.content
    response = get(client, user, author=str(other_user.pk))
    assert response.status_code == 400


def test_it_filters_by_space(client, user, other_user, team):
    conv(user, "personal one")
    conv(other_user, "lab one", team=team)
    assert titles(get(client, user, space="personal")) == ["personal one"]
    assert titles(get(client, user, space=str(team.pk))) == ["lab one"]


def test_it_filters_by_model_and_endpoint(client, user):
    conv(user, "gemma four")
    conv(user, "gemma three", model="aimlapi:google/gemma-3n-e4b-it")
    assert titles(get(client, user, model="aimlapi:google/gemma-3n-e4b-it")) == ["gemma three"]
    assert titles(get(client, user, endpoint="empiriolabs")) == ["gemma four"]
    assert get(client, user, model="nowhere:none").status_code == 400


def test_it_filters_by_author_who_started_or_wrote_in_it(client, user, other_user, team):
    conv(user, "ada started")
    written = conv(user, "eve wrote here", team=team)
    Message.objects.create(conversation=written, role="user", text="hi", created_by=other_user)
    conv(user, "ada team only", team=team)
    assert titles(get(client, user, author=str(other_user.pk))) == ["eve wrote here"]


def test_it_filters_by_reply_status(client, user):
    failed = conv(user, "failed")
    Message.objects.create(conversation=failed, role="assistant", status="error")
    fine = conv(user, "fine")
    Message.objects.create(conversation=fine, role="assistant", status="complete")
    assert titles(get(client, user, status="error")) == ["failed"]
    assert get(client, user, status="exploded").status_code == 400


def test_it_filters_by_date_range_inclusive(client, user):
    conv(user, "january", when=datetime(2026, 1, 15, 12, tzinfo=UTC))
    conv(user, "february", when=datetime(2026, 2, 28, 23, 59, tzinfo=UTC))
    conv(user, "march", when=datetime(2026, 3, 1, tzinfo=UTC))
    assert titles(get(client, user, since="2026-02-01", until="2026-02-28")) == ["february"]
    response = get(client, user, since="2026-03-01", until="2026-02-01")
    assert response.status_code == 400
    assert b"Ends before it starts" in response.content
    assert get(client, user, since="not a date").status_code == 400


def test_the_last_day_there_is_can_end_the_range(client, user):
    # The day after 9999-12-31 is out of range for a date: that was a 500, here and on
    # the new-queue page, which takes the same filters.
    conv(user, "march", when=datetime(2026, 3, 1, tzinfo=UTC))
    assert titles(get(client, user, until="9999-12-31")) == ["march"]
    assert titles(get(client, user, since="0001-01-01", until="9999-12-31")) == ["march"]
    assert client.get("/review/queues/new/", {"until": "9999-12-31"}).status_code == 200


@pytest.mark.parametrize("name", ["contains", "isnull", "in", "gt", "exact"])
def test_a_prompt_variable_named_like_a_lookup_is_a_variable(client, user, name):
    # The name went into the ORM path as it was: "isnull" and "contains" answered 500 and
    # "in" or "gt" compared the whole values object instead of that key.
    from playground.prompts.models import PromptRun
    from tests.test_prompts import make_prompt

    version = make_prompt(user).versions.get()
    hit, miss = conv(user, "from the prompt"), conv(user, "other value")
    for c, value in ((hit, "refund"), (miss, "other")):
        reply = Message.objects.create(conversation=c, role="assistant", text="ok")
        PromptRun.objects.create(message=reply, version=version, variables={name: value})
    assert titles(get(client, user, prompt_var=f"{name}=refund")) == ["from the prompt"]


def test_it_filters_conversations_with_images_and_with_tool_calls(client, user, tmp_path):
    with_image = conv(user, "has image")
    message = Message.objects.create(conversation=with_image, role="user", text="look")
    image = Attachment.objects.create(
        owner=user,
        file="attachments/x.png",
        sha256="0" * 64,
        content_type="image/png",
        size=1,
        width=1,
        height=1,
    )
    message.attachments.add(image)
    with_tools = conv(user, "has tools")
    Message.objects.create(
        conversation=with_tools,
        role="assistant",
        tool_calls=[{"id": "call_1", "type": "function", "function": {"name": "f"}}],
    )
    plain = conv(user, "plain")
    Message.objects.create(conversation=plain, role="assistant", text="just text")
    assert titles(get(client, user, images="on")) == ["has image"]
    assert titles(get(client, user, tools="on")) == ["has tools"]


def test_pages_follow_a_cursor_without_offset_and_keep_the_filters(client, user, monkeypatch):
    monkeypatch.setattr(history, "PAGE_SIZE", 3)
    for day in range(1, 8):
        conv(user, f"day {day}", when=datetime(2026, 1, day, tzinfo=UTC), system_prompt="x")
    conv(user, "other model", model="aimlapi:google/gemma-3n-e4b-it")
    client.force_login(user)
    seen: list[str] = []
    url = f"{URL}?model=empiriolabs%3Agemma-4-e4b"
    with CaptureQueriesContext(connection) as queries:
        while url:
            response = client.get(url, headers={"HX-Request": "true"})
            assert response.status_code == 200
            seen += titles(response)
            more = find_all(response.content, "button", class_="history-more")
            url = attr(more[0], "hx-get") or "" if more else ""
            if url:
                assert "model=empiriolabs%3Agemma-4-e4b" in url and "after=" in url
    assert seen == [f"day {d}" for d in range(7, 0, -1)]
    assert not any("OFFSET" in q["sql"].upper() for q in queries.captured_queries)


def test_a_next_page_request_answers_only_the_rows(client, user, monkeypatch):
    monkeypatch.setattr(history, "PAGE_SIZE", 1)
    conv(user, "older", when=datetime(2026, 1, 1, tzinfo=UTC))
    newer = conv(user, "newer", when=datetime(2026, 1, 2, tzinfo=UTC))
    client.force_login(user)
    cursor = str(history.Cursor.after(newer))
    response = client.get(URL, {"after": cursor}, headers={"HX-Request": "true"})
    assert titles(response) == ["older"]
    assert b"<main" not in response.content and b"<form" not in response.content


def test_a_foreign_cursor_is_refused(client, user):
    response = get(client, user, after="1;DROP TABLE")
    assert response.status_code == 400
    assert b"does not name a page" in response.content


def test_a_filter_change_from_htmx_answers_the_results_fragment(client, user):
    conv(user, "one")
    client.force_login(user)
    response = client.get(
        URL,
        {"space": "personal"},
        headers={"HX-Request": "true", "HX-Target": "history-results"},
    )
    assert response.status_code == 200
    assert titles(response) == ["one"]
    assert b"<form" not in response.content and b'id="history-list"' in response.content


def test_the_page_is_bookmarkable_with_its_filters_filled_in(client, user, team):
    response = get(client, user, space=str(team.pk), q="hello", tools="on")
    find(response.content, "form", class_="history-filters")
    find(response.content, "input", name="q", value="hello")
    find(response.content, "option", value=str(team.pk), selected=True)
    find(response.content, "input", name="tools", checked=True)


def test_it_needs_a_login(client, user):
    response = client.get(URL)
    assert response.status_code == 302
    assert "/login/" in response["Location"]


def test_base_navigation_links_history(client, user, conversation):
    client.force_login(user)
    response = client.get(f"/c/{conversation.pk}/")
    assert has(response.content, "a", href=URL)


@pytest.mark.parametrize("zone", ["Asia/Tokyo", "America/Los_Angeles"])
def test_the_first_and_last_days_there_are_in_any_time_zone(client, user, zone):
    # Midnight of 0001-01-01 east of UTC is before the first datetime in UTC, where the
    # database compares: read in the reader's zone (the `tz` cookie), that was a 500.
    conv(user, "march", when=datetime(2026, 3, 1, tzinfo=UTC))
    client.cookies["tz"] = zone
    assert titles(get(client, user, since="0001-01-01")) == ["march"]
    assert titles(get(client, user, since="0001-01-01", until="9999-12-30")) == ["march"]
    assert titles(get(client, user, since="9999-12-31")) == []
    assert titles(get(client, user, until="0001-01-01")) == []

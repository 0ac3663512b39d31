"""The sidebar a page at a time: 50 newest first, then the next page on scroll or "Show more",
keyset cursors on (updated, id), only conversations the user may see."""

from __future__ import annotations

import calendar
from datetime import timedelta
from html import unescape

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from playground.accounts.models import Membership, Team
from playground.chat import sidebar
from playground.chat.models import Conversation
from tests.html import attr, find, find_all, has, text

pytestmark = pytest.mark.django_db

MODEL = "empiriolabs:gemma-4-e4b"


def make_conversations(owner, n: int, *, tie_every: int = 1, team=None) -> list[Conversation]:
    """n conversations, newest first; `tie_every` of them in a row share one `updated`."""
    made = Conversation.objects.bulk_create(
        Conversation(owner=owner, team=team, model=MODEL, title=f"Chat {i}") for i in range(n)
    )
    start = timezone.now() - timedelta(days=1)
    for i, c in enumerate(made):
        c.updated = start + timedelta(seconds=i // tie_every)
        Conversation.objects.filter(pk=c.pk).update(updated=c.updated)
    return sorted(made, key=lambda c: (c.updated, c.pk), reverse=True)


def items(markup) -> list[int]:
    rows = find_all(markup, "li", class_="conv")
    return [int(attr(li, "id").removeprefix("conv-")) for li in rows]


def more_url(markup) -> str | None:
    buttons = find_all(markup, "button", id="conversation-more")
    return unescape(attr(buttons[0], "hx-get")) if buttons else None


def walk(client, first_markup) -> list[int]:
    """Every item the sidebar shows after loading page after page, in order."""
    seen = items(first_markup)
    url = more_url(first_markup)
    while url:
        response = client.get(url, headers={"HX-Request": "true"})
        assert response.status_code == 200
        seen += items(response.content)
        url = more_url(response.content)
    return seen


def test_the_first_page_is_the_50_newest_and_asks_for_more_on_scroll(client, user):
    made = make_conversations(user, 120)
    client.force_login(user)
    page = client.get(f"/c/{made[0].pk}/").content
    assert items(page) == [c.pk for c in made[:50]]
    more = find(page, "button", id="conversation-more")
    assert "intersect" in attr(more, "hx-trigger") and "click" in attr(more, "hx-trigger")
    assert attr(more, "type") == "button"  # reachable and pressable from the keyboard


def test_pages_follow_each_other_without_gaps_or_repeats_across_ties(client, user):
    # Seven conversations share each `updated`, so ties straddle every page boundary.
    made = make_conversations(user, 173, tie_every=7)
    client.force_login(user)
    seen = walk(client, client.get(f"/c/{made[0].pk}/").content)
    assert seen == [c.pk for c in made]


def test_the_next_page_is_a_fragment_that_starts_after_the_cursor(client, user):
    made = make_conversations(user, 70, tie_every=3)
    client.force_login(user)
    cursor = sidebar.Cursor.after(made[49])
    response = client.get(f"/c/?after={cursor}", headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert items(response.content) == [c.pk for c in made[50:]]
    assert not has(response.content, "ul") and not has(response.content, "main")
    assert more_url(response.content) is None


def test_pages_use_a_keyset_not_an_offset(client, user):
    make_conversations(user, 120)
    client.force_login(user)
    first = client.get(f"/c/{Conversation.objects.first().pk}/").content
    with CaptureQueriesContext(connection) as queries:
        client.get(more_url(first), headers={"HX-Request": "true"})
    pages = [q["sql"] for q in queries if "chat_conversation" in q["sql"]]
    assert len(pages) == 1
    assert "OFFSET" not in pages[0].upper()


def test_foreign_conversations_never_appear(client, user, other_user):
    mine = make_conversations(user, 60, tie_every=2)
    theirs = make_conversations(other_user, 60, tie_every=2)
    their_team = Team.objects.create(name="Not ada's")
    Membership.objects.create(team=their_team, user=other_user, role=Membership.Role.OWNER)
    team_only = make_conversations(other_user, 30, team=their_team)
    our_team = Team.objects.create(name="Lab")
    Membership.objects.create(team=our_team, user=user, role=Membership.Role.MEMBER)
    Membership.objects.create(team=our_team, user=other_user, role=Membership.Role.OWNER)
    shared = make_conversations(other_user, 10, team=our_team)
    client.force_login(user)

    # The sidebar lists the open conversation's space: Personal, then the team.
    seen = walk(client, client.get(f"/c/{mine[0].pk}/").content)
    assert sorted(seen) == sorted(c.pk for c in mine)
    assert len(seen) == len(set(seen))
    seen = walk(client, client.get(f"/c/{shared[0].pk}/").content)
    assert sorted(seen) == sorted(c.pk for c in shared)
    # Naming someone else's team as the space shows nothing of it.
    above_all = sidebar.Cursor(timezone.now() + timedelta(days=1), 10**9)
    response = client.get(
        f"/c/?after={above_all}&space={their_team.pk}", headers={"HX-Request": "true"}
    )
    assert items(response.content) == []

    # A cursor aimed just above someone else's conversations shows ada's only.
    foreign = theirs + team_only
    for target in (foreign[0], foreign[-1]):
        above = sidebar.Cursor(target.updated + timedelta(microseconds=1), target.pk + 1)
        response = client.get(f"/c/?after={above}", headers={"HX-Request": "true"})
        assert not set(items(response.content)) & {c.pk for c in foreign}
    # Naming a foreign conversation as the pinned one reveals nothing either.
    url = f"/c/?after={sidebar.Cursor.after(mine[10])}&pinned={theirs[0].pk}"
    assert theirs[0].pk not in items(client.get(url).content)


@pytest.mark.parametrize(
    "query",
    [
        "",
        "after=",
        "after=abc",
        "after=12_",
        "after=_12",
        "after=1.5_2",
        "after=-5_2",
        "after=12345678901234567_1",  # seventeen digits: past the year 2286
        "after=1700000000000000_1&pinned=x",
        "after=1700000000000000_1&space=x",
        "after=1700000000000000_1&space=99999999999999999999",  # past any database id
    ],
)
def test_a_cursor_that_is_not_ours_is_refused(client, user, query):
    make_conversations(user, 60)
    client.force_login(user)
    response = client.get(f"/c/?{query}", headers={"HX-Request": "true"})
    assert response.status_code == 400
    assert not items(response.content)


def test_the_more_item_is_there_only_when_there_is_more(client, user):
    made = make_conversations(user, 50)
    client.force_login(user)
    page = client.get(f"/c/{made[0].pk}/").content
    assert len(items(page)) == 50 and more_url(page) is None

    extra = Conversation.objects.create(owner=user, model=MODEL, title="Extra")
    page = client.get(f"/c/{extra.pk}/").content
    assert len(items(page)) == 50 and more_url(page)
    last = client.get(more_url(page)).content
    assert items(last) == [made[-1].pk] and more_url(last) is None


def test_an_open_conversation_older_than_the_first_page_stays_in_view_and_highlighted(client, user):
    made = make_conversations(user, 120)
    oldest = made[-1]
    client.force_login(user)
    page = client.get(f"/c/{oldest.pk}/").content

    # It comes first, as it would after its next message; the 50 newest follow.
    assert items(page) == [oldest.pk] + [c.pk for c in made[:50]]
    current = find(page, "li", class_="conv current")
    assert attr(current, "id") == f"conv-{oldest.pk}"
    assert has(current, "a", aria_current="page")
    # Later pages leave it out, so no conversation is listed twice.
    assert walk(client, page) == [oldest.pk] + [c.pk for c in made[:-1]]


def test_an_open_conversation_among_the_newest_keeps_its_place(client, user):
    made = make_conversations(user, 120)
    client.force_login(user)
    page = client.get(f"/c/{made[7].pk}/").content
    assert items(page) == [c.pk for c in made[:50]]
    assert attr(find(page, "li", class_="conv current"), "id") == f"conv-{made[7].pk}"
    assert "pinned" not in more_url(page)


def test_the_next_page_needs_a_login(client, user):
    made = make_conversations(user, 60)
    response = client.get(f"/c/?after={sidebar.Cursor.after(made[10])}")
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_a_cursor_names_its_row_to_the_microsecond(user):
    (c,) = make_conversations(user, 1)
    c.refresh_from_db()
    cursor = sidebar.Cursor.after(c)
    assert sidebar.Cursor.parse(str(cursor)) == cursor
    assert Conversation.objects.filter(updated=cursor.updated, pk=cursor.pk).exists()


def test_a_long_title_is_shortened_in_the_sidebar_only(client, user, conversation):
    conversation.title = "A very long title " * 10
    conversation.save()
    client.force_login(user)
    page = client.get(f"/c/{conversation.pk}/").content
    row = find(page, "li", id=f"conv-{conversation.pk}")
    link = text(find(row, "span", class_="t"))
    assert len(link) == 60 and link.endswith("…")
    assert conversation.title.strip() in page.decode()  # the page's own title is whole


def headings(markup) -> list[str]:
    return [text(li) for li in find_all(markup, "li", class_="day")]


def test_a_conversation_without_a_message_leaves_no_row(client, user):
    (used,) = make_conversations(user, 1)
    for _ in range(3):
        client.force_login(user)
        client.post("/c/new/")  # opened, never used
    current = Conversation.objects.first()
    assert current.title == ""
    page = client.get(f"/c/{current.pk}/").content
    assert items(page) == [used.pk]
    # The open one has a hidden placeholder its first send fills, under a Today heading.
    placeholder = find(page, "li", id=f"conv-{current.pk}")
    assert has(placeholder, hidden=True) or attr(placeholder, "hidden") is not None
    assert "New conversation" not in text(find(page, "ul", id="conversation-list"))


def test_rows_are_grouped_by_day_with_relative_headings(client, user, monkeypatch):
    made = make_conversations(user, 6)
    # Midday, so that "5 minutes" and "an hour" ago are today whatever the clock says.
    noon = timezone.localtime().replace(hour=12, minute=0, second=0, microsecond=0)
    monkeypatch.setattr(timezone, "now", lambda: noon)
    now = timezone.now()
    ages = [timedelta(minutes=5), timedelta(hours=1), timedelta(days=1), timedelta(days=3)]
    ages += [timedelta(days=40), timedelta(days=400)]
    for c, age in zip(made, ages, strict=True):
        Conversation.objects.filter(pk=c.pk).update(updated=now - age)
    client.force_login(user)
    page = client.get(f"/c/{made[0].pk}/").content
    today = timezone.localdate()
    labels = headings(page)
    assert labels[:2] == ["Today", "Yesterday"]
    assert "Yesterday" in labels
    assert sidebar.day_label(today - timedelta(days=3), today) == labels[-3]
    assert labels[-3] in set(calendar.day_name)
    assert labels[-1].endswith(str((today - timedelta(days=400)).year))
    first = find(page, "li", id=f"conv-{made[0].pk}")
    assert text(find(first, "time")) == "5 min ago"
    assert attr(find(first, "time"), "datetime")


def test_a_later_page_does_not_repeat_the_day_it_continues(client, user):
    made = make_conversations(user, 120)  # all within one day
    day = timezone.now() - timedelta(days=2)
    Conversation.objects.filter(pk__in=[c.pk for c in made]).update(updated=day)
    client.force_login(user)
    page = client.get(f"/c/{made[0].pk}/").content
    assert len(headings(page)) == 1
    following = client.get(more_url(page)).content
    assert items(following) and headings(following) == []


def test_the_day_labels():
    today = timezone.localdate()
    assert sidebar.day_label(today, today) == "Today"
    assert sidebar.day_label(today - timedelta(days=1), today) == "Yesterday"
    assert sidebar.day_label(today - timedelta(days=7), today) != "Yesterday"
    older = today - timedelta(days=800)
    assert sidebar.day_label(older, today).endswith(str(older.year))


@pytest.mark.parametrize(
    ("cookie", "offset"),
    [("Asia/Tokyo", "+0900"), ("../../etc/passwd", "+0000"), ("Not/AZone", "+0000"), ("", "+0000")],
)
def test_dates_are_in_the_readers_time_zone_from_the_cookie(client, user, cookie, offset):
    (c,) = make_conversations(user, 1)
    client.force_login(user)
    client.cookies["tz"] = cookie
    page = client.get(f"/c/{c.pk}/").content
    stamp = attr(find(find(page, "li", id=f"conv-{c.pk}"), "time"), "datetime")
    assert stamp.endswith(offset)


def test_a_groups_conversations_stay_out_of_the_sidebar_and_home(client, user):
    from playground.chat.models import RunGroup

    plain = make_conversations(user, 3)
    group = RunGroup.objects.create(kind=RunGroup.Kind.COMPARE, owner=user)
    columns = make_conversations(user, 2)
    Conversation.objects.filter(pk__in=[c.pk for c in columns]).update(group=group)
    client.force_login(user)

    seen = walk(client, client.get(f"/c/{plain[-1].pk}/").content)
    assert set(seen) == {c.pk for c in plain}
    # Home reopens the newest plain chat's space, never a column (they hold messages or not).
    response = client.get("/")
    assert response.status_code == 302
    assert response.url not in {f"/c/{c.pk}/" for c in columns}
    assert list(RunGroup.objects.visible_to(user)) == [group]

"""The sidebar's conversations, a page at a time, newest first.

Keyset pagination on (updated, id), the order `Conversation.Meta` sorts by: a page starts
strictly after the last row of the page before, named by a cursor in the URL. Unlike OFFSET,
a conversation that moves to the top (a new message bumps `updated`) or is deleted while
someone scrolls shifts no later page, so nothing is shown twice or skipped, and a deep page
costs what the first one does.

Only conversations with a title are listed: the title comes with the first message, so an
opened-but-never-used "New conversation" leaves no row behind. The open one, while still
empty, has a hidden placeholder under "Today" that its first send fills (`Page.pending`).

Rows are grouped by day (Today, Yesterday, a weekday, then dates) in the server's time zone.
A later page continues the group its cursor's day is in, so no heading repeats at a page seam.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlencode

from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format

from playground.chat.models import Conversation

PAGE_SIZE = 50
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MICROSECOND = timedelta(microseconds=1)
# "<microseconds since the epoch>_<id>": digits only, so it needs no escaping in a URL.
# Sixteen digits reach the year 2286 and keep every cursor inside datetime's range.
CURSOR_FORMAT = re.compile(r"(\d{1,16})_(\d{1,18})")


class InvalidCursor(ValueError):
    pass


@dataclass(frozen=True)
class Cursor:
    """Where a page ends: the `updated` and id of its last conversation."""

    updated: datetime
    pk: int

    @classmethod
    def after(cls, conversation: Conversation) -> Cursor:
        return cls(conversation.updated, conversation.pk)

    @classmethod
    def parse(cls, raw: str) -> Cursor:
        match = CURSOR_FORMAT.fullmatch(raw)
        if match is None:
            raise InvalidCursor(f"Not a sidebar cursor: {raw[:40]!r}")
        return cls(EPOCH + int(match[1]) * ONE_MICROSECOND, int(match[2]))

    def __str__(self) -> str:
        # Integer microseconds, never a float: the cursor must name the row's time exactly.
        return f"{(self.updated - EPOCH) // ONE_MICROSECOND}_{self.pk}"


def day_label(day: date, today: date) -> str:
    """A day as people say it: Today, Yesterday, a weekday this past week, then a date."""
    age = (today - day).days
    if age == 0:
        return "Today"
    if age == 1:
        return "Yesterday"
    if 1 < age < 7:
        return date_format(day, "l")
    return date_format(day, "j M" if day.year == today.year else "j M Y")


@dataclass
class Row:
    conversation: Conversation
    heading: str = ""  # the day's heading, on the first row of each day


@dataclass
class Page:
    conversations: list[Conversation]
    next_url: str  # empty on the last page
    # The day of the row above the first one (a later page's cursor): no heading repeats it.
    day_before: date | None = None
    # The open conversation while it has no message: a hidden row its first send fills.
    pending: Conversation | None = None
    today: date = field(default_factory=timezone.localdate)

    @property
    def rows(self) -> list[Row]:
        rows, previous = [], self.day_before
        for conversation in self.conversations:
            day = timezone.localdate(conversation.updated)
            heading = day_label(day, self.today) if day != previous else ""
            rows.append(Row(conversation, heading))
            previous = day
        return rows

    @property
    def today_shown(self) -> bool:
        """Whether the rows start with today's group, under which the pending row goes."""
        return bool(self.conversations) and (
            timezone.localdate(self.conversations[0].updated) == self.today
        )


def page(
    user, after: Cursor | None = None, *, pinned: int | None = None, space: int | None = None
) -> Page:
    """The PAGE_SIZE conversations `user` may see in one space (a team id, None: Personal)
    that come after `after` (from the newest without it). `pinned` is left out: the page
    above already shows it out of order."""
    # Plain chats only: compare columns, sweep cells and experiment items (a group's
    # conversations) are reached from their group and from History.
    conversations = (
        Conversation.objects.visible_to(user)
        .in_space(space)
        .exclude(title="")
        .filter(group__isnull=True)
    )
    if after is not None:
        conversations = conversations.older_than(after.updated, after.pk)
    if pinned is not None:
        conversations = conversations.exclude(pk=pinned)
    # One row more than shown says whether there is another page, without a COUNT.
    rows = list(conversations.only("id", "title", "updated")[: PAGE_SIZE + 1])
    shown = rows[:PAGE_SIZE]
    next_url = ""
    if len(rows) > PAGE_SIZE:
        query = {"after": str(Cursor.after(shown[-1]))}
        if space is not None:
            query["space"] = str(space)
        if pinned is not None:
            query["pinned"] = str(pinned)
        next_url = f"{reverse('conversation_page')}?{urlencode(query)}"
    day_before = timezone.localdate(after.updated) if after is not None else None
    return Page(shown, next_url, day_before)


def first_page(user, current: Conversation) -> Page:
    """The newest conversations, with the open one first when it is older than all of them:
    it stays in view and highlighted, where it would move anyway on its next message.
    The sidebar shows the open conversation's space."""
    newest = page(user, space=current.team_id)
    if not current.title:
        newest.pending = current
        return newest
    if any(c.pk == current.pk for c in newest.conversations):
        return newest
    rest = page(user, pinned=current.pk, space=current.team_id)
    return Page([current, *rest.conversations], rest.next_url)

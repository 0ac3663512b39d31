"""The sidebar's conversations, a page at a time, newest first.

Keyset pagination on (updated, id), the order `Conversation.Meta` sorts by: a page starts
strictly after the last row of the page before, named by a cursor in the URL. Unlike OFFSET,
a conversation that moves to the top (a new message bumps `updated`) or is deleted while
someone scrolls shifts no later page, so nothing is shown twice or skipped, and a deep page
costs what the first one does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from django.urls import reverse

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


@dataclass
class Page:
    conversations: list[Conversation]
    next_url: str  # empty on the last page


def page(
    user, after: Cursor | None = None, *, pinned: int | None = None, space: int | None = None
) -> Page:
    """The PAGE_SIZE conversations `user` may see in one space (a team id, None: Personal)
    that come after `after` (from the newest without it). `pinned` is left out: the page
    above already shows it out of order."""
    conversations = Conversation.objects.visible_to(user).in_space(space)
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
    return Page(shown, next_url)


def first_page(user, current: Conversation) -> Page:
    """The newest conversations, with the open one first when it is older than all of them:
    it stays in view and highlighted, where it would move anyway on its next message.
    The sidebar shows the open conversation's space."""
    newest = page(user, space=current.team_id)
    if any(c.pk == current.pk for c in newest.conversations):
        return newest
    rest = page(user, pinned=current.pk, space=current.team_id)
    return Page([current, *rest.conversations], rest.next_url)

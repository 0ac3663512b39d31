"""A team's Activity page: the replies streaming now in its conversations and the last 50
finished, kept live over the WebSocket (no polling).

Runs of team conversations tell the team's activity group when they start, at each
checkpoint and when they end (ids and counters only, see runs.Run._tell_team). Each Activity
socket loads and renders the row itself, through a query that starts from the team and the
user's membership, so a member removed from the team gets nothing more and is closed.
"""

from __future__ import annotations

import time
from typing import Any

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ObjectDoesNotExist
from django.http import Http404, HttpResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.utils.crypto import constant_time_compare
from django.views.decorators.http import require_GET

from playground.accounts.access import get_team_for_user
from playground.accounts.models import Membership
from playground.chat import access, consumers, runs
from playground.chat.models import Message
from playground.http import AuthenticatedHttpRequest

TEMPLATE = "chat/activity.html"
FINISHED_SHOWN = 50
render_async = sync_to_async(render_to_string, thread_sensitive=False)


def team_replies(user, team_id: int):
    """Assistant replies in the team's conversations, if `user` belongs to the team."""
    member = Membership.objects.filter(team_id=team_id, user_id=user.pk, user__is_active=True)
    if not member.exists():
        return Message.objects.none()
    return Message.objects.filter(
        conversation__team_id=team_id, role=Message.Role.ASSISTANT
    ).select_related("created_by", "conversation")


def activity_context(user, team_id: int) -> dict[str, Any]:
    replies = team_replies(user, team_id).defer("request_body", "logprobs", "text", "reasoning")
    streaming = list(replies.filter(status=Message.Status.STREAMING).order_by("created", "id"))
    finished = list(
        replies.exclude(status=Message.Status.STREAMING).order_by("-created", "-id")[
            :FINISHED_SHOWN
        ]
    )
    return {"streaming": streaming, "finished": finished}


@require_GET
@login_required
def activity_page(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    team, membership = get_team_for_user(request.user, pk)
    context = {"team": team, "me": membership, **activity_context(request.user, team.pk)}
    return render(request, TEMPLATE, context)


def still_member(user, session, team_id: int) -> bool:
    """Whether this socket's user may still watch the team: the account is active, the
    session is alive and was not ended by a password change, and the membership exists."""
    try:
        user.refresh_from_db(fields=["is_active", "password"])
        if session is None or not session.session_key or not session.exists(session.session_key):
            return False
        if not constant_time_compare(
            session.get(HASH_SESSION_KEY, ""), user.get_session_auth_hash()
        ):
            return False
        get_team_for_user(user, team_id)
    except (Http404, ObjectDoesNotExist):
        return False
    return True


class ActivityConsumer(consumers.SlottedConsumer):
    """An Activity page's socket. It counts against PLAYGROUND_MAX_SOCKETS like a
    conversation's, so a page left open on many screens cannot take every slot unseen."""

    async def connect(self) -> None:
        if not await self.take_slot():
            return
        self.user: Any = self.scope.get("user") or AnonymousUser()
        self.team_id = int(self.scope["url_route"]["kwargs"]["pk"])
        if not self.user.is_authenticated or not await self._member():
            self._give_back_slot()
            await self.close(code=4403)
            return
        self.group = runs.activity_group(self.team_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        # Told at once, in every process, when this user's rights change (chat/access.py).
        self.user_group = access.user_group(self.user.pk)
        await self.channel_layer.group_add(self.user_group, self.channel_name)
        await self.accept()
        # The lists again: a run that ended between the page and this socket is not missed.
        context = await database_sync_to_async(activity_context)(self.user, self.team_id)
        self.finished = [m.pk for m in context["finished"]]
        await self.send(text_data=await render_async(f"{TEMPLATE}#lists-oob", context))

    async def disconnect(self, code: int) -> None:
        self._give_back_slot()
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)
            await self.channel_layer.group_discard(self.user_group, self.channel_name)

    async def access_revoke(self, event: dict[str, Any]) -> None:
        """A membership, session or account of this user changed: check now, not later."""
        if not await self._member():
            await self.close(code=4403)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None):
        pass  # the page only listens

    async def _member(self) -> bool:
        allowed = await database_sync_to_async(still_member)(
            self.user, self.scope.get("session"), self.team_id
        )
        self.checked_at, self.is_member = time.monotonic(), allowed
        return allowed

    async def _reply(self, message_id: int) -> Message | None:
        """The reply, if the user may still see the team's activity; else close. Once per
        run start and end, so the full check (session included) is affordable here."""
        if not await self._member():
            await self.close(code=4403)
            return None
        replies = await database_sync_to_async(team_replies)(self.user, self.team_id)
        return await replies.filter(pk=message_id).afirst()

    async def activity_started(self, event: dict[str, Any]) -> None:
        message = await self._reply(event["message_id"])
        if message is not None:
            html = await render_async(f"{TEMPLATE}#streaming-oob", {"streaming": [message]})
            await self.send(text_data=html)

    async def activity_progress(self, event: dict[str, Any]) -> None:
        # Counters only, so no query for each: membership is re-checked now and then.
        interval = settings.PLAYGROUND_RUN["REAUTH_INTERVAL"]
        if time.monotonic() - self.checked_at >= interval and not await self._member():
            await self.close(code=4403)
            return
        html = await render_async(f"{TEMPLATE}#progress", event)
        await self.send(text_data=html)

    async def activity_done(self, event: dict[str, Any]) -> None:
        message = await self._reply(event["message_id"])
        if message is None:
            if self.is_member:
                # Deleted while it streamed (its conversation was): its row goes all the same.
                context = {"finished": [], "message_id": event["message_id"], "dropped": []}
                await self.send(text_data=await render_async(f"{TEMPLATE}#finished-oob", context))
            return
        self.finished.insert(0, message.pk)
        dropped = self.finished[FINISHED_SHOWN:]
        del self.finished[FINISHED_SHOWN:]
        context = {"finished": [message], "message_id": message.pk, "dropped": dropped}
        await self.send(text_data=await render_async(f"{TEMPLATE}#finished-oob", context))

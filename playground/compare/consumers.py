"""The compare page's socket: watch every column (or cell) of a group, send to all, stop all.

It relays the runs of the group's conversations exactly as a conversation's socket does
(deltas beyond what it has shown, snapshots to catch up), so it extends ConversationConsumer
and changes only what differs: what it authorizes (the group, on connect and on every
message), which channel-layer groups it joins (one per column) and what it renders.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import Coroutine
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.http import Http404
from django.template.loader import render_to_string

from playground.chat import access as chat_access
from playground.chat import runs, shutdown
from playground.chat.consumers import (
    RELAY_HANDLERS,
    ConversationConsumer,
    _int,
    _ints,
    _text_field,
    open_sockets,
    outlive_socket,
    render,
)
from playground.chat.models import Conversation, Message, RunGroup
from playground.chat.services import TurnError, rerun, submit_tool_results
from playground.compare import access, contexts, drivers, engine
from playground.prompts import variables as syntax
from playground.providers.storable import unstorable

TEMPLATE = "compare/group.html"
# Compare sends in flight in this process (see _send_all), kept from the garbage collector.
_sending: set[asyncio.Task] = set()
NO_ACCESS = "You no longer have access to this compare (signed out, or removed from its team)."


class GroupConsumer(ConversationConsumer):
    async def _open(self) -> bool:
        from django.contrib.auth.models import AnonymousUser

        self.user = self.scope.get("user") or AnonymousUser()
        self.group_id = self.scope["url_route"]["kwargs"]["pk"]
        self.conversation_id = 0  # ConversationConsumer's per-conversation epoch: none here
        query = parse_qs(self.scope.get("query_string", b"").decode())
        self.baseline = _int((query.get("baseline") or ["0"])[0])
        self.shown: dict[int, list[int]] = {}
        self.waiting: dict[int, list[dict]] = {}
        self.tokens, self.refilled = 20.0, time.monotonic()
        self.epoch, self.checked_at = (-1, -1), float("-inf")
        self.allowed, self.can_run = False, False
        self.member_ids: list[int] = []
        self.joined_ids: list[int] = []  # the columns whose channel-layer groups it is in
        if not await self._authorized(fresh=True):
            await self.close(code=4403)
            return False
        self.user_group = chat_access.user_group(self.user.pk or 0)
        self.joined_ids = list(self.member_ids)
        for name in [*map(runs.group_name, self.joined_ids), self.user_group]:
            await self.channel_layer.group_add(name, self.channel_name)
        self.group = self.user_group  # ConversationConsumer.disconnect leaves these two
        await self.accept()
        open_sockets.add(self)  # a shutdown closes it like a conversation's (shutdown.py)
        await self._send_transcript()
        return True

    async def disconnect(self, code: int) -> None:
        for pk in getattr(self, "joined_ids", []):
            await self.channel_layer.group_discard(runs.group_name(pk), self.channel_name)
        await super().disconnect(code)

    async def _announce(self, kind: str, to: str | None = None) -> None:
        """Presence is the playground's; the compare page shows none."""

    async def presence_join(self, event: dict[str, Any]) -> None:
        pass

    async def presence_here(self, event: dict[str, Any]) -> None:
        pass

    async def presence_leave(self, event: dict[str, Any]) -> None:
        pass

    async def _authorized(self, *, fresh: bool = False) -> bool:
        """As the conversation socket: a kept decision, checked again after a revocation
        (access.revoke) or REAUTH_INTERVAL."""
        if not self.user.is_authenticated:
            return False
        epoch = chat_access.epoch(self.user.pk, 0)
        interval = settings.PLAYGROUND_RUN["REAUTH_INTERVAL"]
        if epoch == self.epoch and time.monotonic() - self.checked_at < interval:
            return self.allowed
        self.allowed = False
        checked = await database_sync_to_async(check_group_access)(
            self.user, self.scope.get("session"), self.group_id, fresh=fresh
        )
        self.epoch, self.checked_at = epoch, time.monotonic()
        if checked is None:
            return False
        self.run_group, self.can_run, self.member_ids = checked
        self.allowed = True
        await self._leave_departed()
        return True

    async def _leave_departed(self) -> None:
        """Columns (or cells) that left the group since this socket joined them (Continue in
        playground): their runs are no longer relayed here, and the page shows each one as
        moved out, with a link to where it went on; or as deleted (from its own page), with
        no link to a page that is gone."""
        departed = [pk for pk in self.joined_ids if pk not in self.member_ids]
        if not departed:
            return
        self.joined_ids = [pk for pk in self.joined_ids if pk in self.member_ids]
        kept = await database_sync_to_async(
            lambda: set(Conversation.objects.filter(pk__in=departed).values_list("pk", flat=True))
        )()
        for pk in departed:
            await self.channel_layer.group_discard(runs.group_name(pk), self.channel_name)
            context = {"group": self.run_group, "pk": pk, "gone": pk not in kept}
            html = await render(f"{TEMPLATE}#column-left", context)
            await self.send(text_data=html)

    async def _cut_off(self) -> None:
        if self.cut_off:
            return
        self.cut_off = True
        await self._send_error(NO_ACCESS)
        await self.close(code=4403)

    # Browser → server

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None):
        if not self.has_slot:
            return
        if self._rate_limited():
            await self._send_error("Too many messages at once: slow down a little.")
            return
        too_large = text_data is None or len(text_data) > 400_000
        data, action, unreadable = {}, None, False
        if text_data is not None and not too_large:
            try:
                data = json.loads(text_data)
                action = data.get("action")
            except (ValueError, AttributeError, RecursionError):
                unreadable = True
        # Every message re-reads the decision from the database: sends are rare here and
        # each one spends up to six runs. A send reads it in the same trip to the database
        # thread as its columns' preparation (_send_to_columns), not in a trip of its own.
        if action != "send":
            self.epoch = (-1, -1)
        if self.cut_off or not await self._authorized():
            await self._cut_off()
            return
        if too_large:
            await self._send_error("That message is too large.")
            return
        if unreadable:
            await self._send_error("The playground could not read that message.")
            return
        handlers = {
            "send": self._send_all,
            "stop": self._stop_all,
            "start": self._start_sweep,
            "rerun": self._rerun_in_member,
            "tool_results": self._tool_results_in_member,
        }
        handler = handlers.get(action) if isinstance(action, str) else None
        if handler is None:
            await self._send_error("Unknown action.")
            return
        if shutdown.draining:
            await self._send_error(shutdown.RESTARTING)
            return
        if not self.can_run:
            await self._send_error("You can watch this compare but not run it.")
            return
        # Until the handler has handed its turn to a task a shutdown waits for (see
        # shutdown.turn_under_way): one that began meanwhile waits for this one.
        with shutdown.turn_under_way():
            await handler(data)

    async def _send_all(self, data: dict[str, Any]) -> None:
        if self.run_group.kind != RunGroup.Kind.COMPARE:
            await self._send_error("A sweep sends its own message: use Run sweep.")
            return
        try:
            text = _text_field(data, "text")
            values = _variable_values(data)
        except ValueError as exc:
            await self._send_error(str(exc))
            return
        # A task, not awaited here: a consumer handles one message at a time, so while this
        # handler ran, no column's rows or text could reach this very socket (measured: every
        # column's first text arrived after the sixth column started). Not the socket's
        # either: a tab closed mid-send still sends every column.
        task = asyncio.create_task(
            self._send_to_columns(text, _ints(data.get("attachment")), values),
            name="compare-send",
        )
        shutdown.turn_task(task)
        _sending.add(task)
        task.add_done_callback(_sending.discard)

    async def _send_to_columns(
        self, text: str, attachment_ids: list[int], values: dict[str, str]
    ) -> None:
        try:
            await engine.send_to_columns(
                self.run_group,
                self.user,
                text=text,
                attachment_ids=attachment_ids,
                layer=self.channel_layer,
                values=values,
                authorize=self._authorize_send,
            )
        except engine.NoAccess:
            self.allowed = False
            await self._tell(self._cut_off())
            return
        except TurnError as exc:
            await self._tell(self._send_error(str(exc)))
            return
        await self._tell(self.send(text_data=composer_sent_html()))

    def _authorize_send(self) -> RunGroup:
        """The group as it is now, if this socket's user may still run it (read from the
        database, in the send's first trip to the database thread); else NoAccess or
        TurnError, and nothing is sent."""
        session = self.scope.get("session")
        checked = check_group_access(self.user, session, self.group_id, ids=False)
        if checked is None:
            raise engine.NoAccess(NO_ACCESS)
        group, can_run, _ = checked
        if not can_run:
            raise TurnError("You can watch this compare but not run it.")
        if group.kind != RunGroup.Kind.COMPARE:
            raise TurnError("A sweep sends its own message: use Run sweep.")
        return group

    async def _tell(self, sending: Coroutine[Any, Any, None]) -> None:
        """Say something on this socket if it is still open (the tab may have closed)."""
        if self.cut_off or not self.has_slot:
            sending.close()
            return
        with contextlib.suppress(Exception):
            await sending

    async def _stop_all(self, data: dict[str, Any]) -> None:
        """Stop every column's (or cell's) run, and a sweep's cells not started yet."""
        drivers.cancel_sweep(self.group_id)
        await runs.stop(Conversation.objects.filter(group_id=self.group_id))

    async def _start_sweep(self, data: dict[str, Any]) -> None:
        if self.run_group.kind != RunGroup.Kind.SWEEP:
            await self._send_error("Only a sweep is started; a compare sends a message.")
            return
        try:
            pending = await database_sync_to_async(engine.pending_cells)(self.run_group)
            if not pending:
                raise TurnError("Every cell of this sweep has run.")
            if drivers.is_running(self.group_id):
                raise TurnError("This sweep is running already.")
            await database_sync_to_async(engine.check_budget)(
                self.user, self.run_group.team_id, pending
            )
        except TurnError as exc:
            await self._send_error(str(exc))
            return
        engine.start_sweep(self.run_group, self.user, self.channel_layer, self._sweep_error)
        context = {"running": True, "concurrency": drivers.concurrency()}
        await self._send_partial("sweep-status-oob", context)

    async def _sweep_error(self, text: str) -> None:
        """A cell was refused mid-sweep (a budget ran out): said on the socket that started
        it, if it is still open; the cells not sent stay pending, to be run again later."""
        if not self.cut_off:
            # The tab may have closed: the sweep's page shows the pending cells.
            with contextlib.suppress(Exception):
                await self._send_error(text)

    async def _member_of_message(self, message_id: int) -> Conversation | None:
        return await Conversation.objects.filter(
            group_id=self.group_id, messages__pk=message_id
        ).afirst()

    async def _rerun_in_member(self, data: dict[str, Any]) -> None:
        await self._in_member(data, rerun, message_id=_int(data.get("message_id")))

    async def _tool_results_in_member(self, data: dict[str, Any]) -> None:
        try:
            results = {
                key.removeprefix("result:"): _text_field(data, key)
                for key in data
                if key.startswith("result:")
            }
        except ValueError as exc:
            await self._send_error(str(exc))
            return
        await self._in_member(
            data, submit_tool_results, message_id=_int(data.get("message_id")), results=results
        )

    async def _in_member(self, data: dict[str, Any], service, **kwargs: Any) -> None:
        """A reply's Re-run or tool results, in the column it belongs to."""
        conversation = await self._member_of_message(kwargs["message_id"])
        if conversation is None:
            await self._send_error("That reply is not in this compare.")
            return
        # The turn outlives a socket cancelled while its rows are written (see _run_turn).
        await outlive_socket(
            self._turn_in_member(conversation, service, **kwargs), f"turn-{conversation.pk}"
        )

    async def _turn_in_member(self, conversation: Conversation, service, **kwargs: Any) -> None:
        channel = await self.channel_layer.new_channel()
        try:

            def turn_and_event():
                turn = service(conversation, self.user, channel=channel, **kwargs)
                return turn, contexts.append_event(turn)

            turn, event = await database_sync_to_async(turn_and_event)()
        except TurnError as exc:
            await self._send_error(str(exc))
            return
        if service is rerun:
            # A sibling of the reply it repeats: the column's own page draws its branch
            # again (as after a re-run there), not the new reply under the old one.
            event["branch"] = True
        await self.channel_layer.group_send(runs.group_name(conversation.pk), event)
        runs.start(turn.run)

    # Channel layer → browser

    async def dispatch(self, message: dict[str, Any]) -> None:
        # ConversationConsumer's relay table names its own methods: route to ours.
        kind = message.get("type", "")
        if kind in RELAY_HANDLERS:
            handler = getattr(self, kind.replace(".", "_"))
            await handler(message)
        else:
            await super(ConversationConsumer, self).dispatch(message)

    async def chat_append(self, event: dict[str, Any]) -> None:
        if not await self._still_allowed():
            return
        for message_id in event["streaming_ids"]:
            self.shown.setdefault(message_id, [0, 0])
        html = event.get("compare_html")
        if html is not None:
            await self.send(text_data=html)
            return
        if not event["streaming_ids"]:
            # A sidebar row, a sibling branch's (chat.branch follows) or rows written before
            # a send (its own chat.append follows): nothing this page draws.
            return
        # Sent from the conversation's own page: draw the member again from the database,
        # then catch its reply up from the run (the saved text lags what it streamed).
        html = await database_sync_to_async(contexts.member_redrawn_html)(
            self.run_group, event["streaming_ids"][0], self.baseline
        )
        if html:
            await self.send(text_data=html)
            for message_id in event["streaming_ids"]:
                self.shown.pop(message_id, None)
                await self._request_snapshot(message_id, None)

    async def run_done(self, event: dict[str, Any]) -> None:
        if not await self._still_allowed():
            return
        message_id = event["message_id"]
        self.shown.pop(message_id, None)
        self.waiting.pop(message_id, None)
        html = await self._render_member(message_id, done_html=event.get("html", ""))
        if html:
            await self.send(text_data=html)
        if 'id="group-body"' in html:
            # Every row was drawn again from the saved text, which lags what was shown:
            # catch the ones still streaming up from their runs.
            for streaming in list(self.shown):
                await self._request_snapshot(streaming, None)

    async def _render_member(self, message_id: int, done_html: str = "") -> str:
        """A column's finished reply and its figures, or a sweep's row, drawn again."""
        return await database_sync_to_async(contexts.member_html)(
            self.run_group, message_id, done_html, self.baseline
        )

    async def review_changed(self, event: dict[str, Any]) -> None:
        """The group page shows no review bars: nothing to fetch."""

    # Helpers

    async def _send_transcript(self, unless: str = "") -> None:
        """The page as it is now (a reconnect may have missed frames), then a snapshot from
        each run still streaming. (The group page carries no digest: always drawn.)"""
        html, streaming = await database_sync_to_async(contexts.body_oob)(
            self.run_group, self.baseline
        )
        await self.send(text_data=html)
        for message_id, run_channel in streaming:
            await self._request_snapshot(message_id, run_channel)

    def _own_messages(self):
        """The messages this socket serves: those of every column or cell of its group."""
        return Message.objects.filter(conversation__group_id=self.group_id)

    async def _finished_html(self, message: Message) -> str:
        """Nothing: run_done draws a column's or cell's finished reply itself."""
        return ""

    async def _send_partial(self, name: str, context: dict[str, Any]) -> None:
        template = TEMPLATE if name.startswith("sweep-") else "chat/playground.html"
        html = await render(f"{template}#{name}", context)
        await self.send(text_data=html)


def check_group_access(user, session, group_id: int, *, fresh: bool = False, ids: bool = True):
    """(group, may run it, its conversations' ids) if this socket's user may still see it,
    else None. The session and password checks are the conversation socket's. `ids=False`:
    the ids are not read (a send reads the columns themselves), [] in their place."""
    from django.contrib.auth import HASH_SESSION_KEY
    from django.utils.crypto import constant_time_compare

    try:
        if session is None or not session.session_key:
            return None
        if not fresh:
            user.refresh_from_db(fields=["is_active", "password"])
            if not session.exists(session.session_key):
                return None
        if not constant_time_compare(
            session.get(HASH_SESSION_KEY, ""), user.get_session_auth_hash()
        ):
            return None
        group, can_run = access.get_group_and_role(user, group_id)
        members = list(group.conversations.values_list("pk", flat=True)) if ids else []
        return group, can_run, members
    except (Http404, ObjectDoesNotExist):
        return None


VARIABLE_FIELD = "var:"  # the Variables panel's fields, as in the playground's


def _variable_values(data: dict[str, Any]) -> dict[str, str]:
    """The Variables panel's values (fields `var:NAME`); ValueError if one is not text, is
    too long or holds what cannot be stored (providers/storable.py)."""
    values = {}
    for key, value in data.items():
        if not (isinstance(key, str) and key.startswith(VARIABLE_FIELD)):
            continue
        name = key.removeprefix(VARIABLE_FIELD)
        if not isinstance(value, str):
            raise ValueError(f"The value of {{{{{name}}}}} must be text: nothing was sent.")
        if len(value) > syntax.MAX_VALUE_CHARS:
            raise ValueError(f"The value of {{{{{name}}}}} is too long: nothing was sent.")
        what = unstorable(value)
        if what:
            raise ValueError(
                f"The value of {{{{{name}}}}} holds {what}, which cannot be stored: "
                "nothing was sent."
            )
        values[name] = value
    return values


@functools.cache
def composer_sent_html() -> str:
    """The compare's message box cleared after a send: the same for everyone, rendered once."""
    return render_to_string(f"{TEMPLATE}#composer-sent", {})

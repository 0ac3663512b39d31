"""The WebSocket side of a conversation: watch it, send to it, stop its run.

The socket never owns a run. It authorizes on connect and again on every message, renders
the same template partials the HTTP views use, and forwards run deltas from the channel-layer
group to the browser, applying each delta only beyond what this socket has already shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import re
import time
import weakref
from asyncio import FIRST_COMPLETED
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, cast
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from channels.db import aclose_old_connections, database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ObjectDoesNotExist
from django.http import Http404
from django.template.loader import render_to_string
from django.utils.crypto import constant_time_compare

from playground.chat import access, extensions, runs, shutdown
from playground.chat.contexts import transcript_context, turn_errors_context
from playground.chat.models import Conversation, Message
from playground.chat.services import (
    PreparedTurn,
    Turn,
    TurnError,
    active_branch,
    prepare_turn,
    rerun,
    start_turn,
    submit_tool_results,
    switch_branch,
    with_branch_nav,
    write_turn,
)
from playground.layers import EmbeddedChannelLayer, Mailbox, dispatch_both
from playground.providers import params
from playground.providers.storable import sendable

log = logging.getLogger(__name__)

TEMPLATE = "chat/playground.html"
MAX_FRAME_BYTES = 400_000
RATE, BURST = 5.0, 20  # messages per second per socket, and the burst allowed
# A background access re-check waits this long after the use that asked for it: past the
# database work of the send that used the decision, which it would otherwise hold up.
REFRESH_DELAY = 1.0
render = sync_to_async(render_to_string, thread_sensitive=False)
# Over PLAYGROUND_MAX_SOCKETS: accepted and closed at once with this code, so the browser
# learns why (a refused handshake reaches page script as a bare 1006) and retries later.
# Daphne only sends application codes 1000 and 3000-4999, so not the standard 1013.
AT_CAPACITY = 4503
NO_ACCESS = "You no longer have access to this conversation (signed out, or removed from its team)."


class SocketSlots:
    """Open sockets of this process, against PLAYGROUND_MAX_SOCKETS. One event loop serves
    every consumer, so a plain counter is enough; each consumer takes at most one slot and
    gives it back exactly once."""

    def __init__(self) -> None:
        self.taken = 0

    def take(self) -> bool:
        if self.taken >= settings.PLAYGROUND_MAX_SOCKETS:
            return False
        self.taken += 1
        return True

    def give_back(self) -> None:
        self.taken -= 1


slots = SocketSlots()
# Turns whose socket was cancelled mid-way, kept so they are not garbage-collected before
# their run starts (see _run_turn).
_orphaned: set[asyncio.Task] = set()
# Accepted sockets of this process, so a shutdown can tell each one (see shutdown.py).
open_sockets: weakref.WeakSet[ConversationConsumer] = weakref.WeakSet()


class SlottedConsumer(AsyncWebsocketConsumer):
    """A socket that holds one of this process's PLAYGROUND_MAX_SOCKETS slots while open.
    Every page's socket is one, so no kind of page can take every slot unseen."""

    has_slot = False

    async def take_slot(self) -> bool:
        """Take a slot, or accept and close at once with AT_CAPACITY (a reason the page
        shows). Call it first in connect(): a connect storm past the cap costs no queries."""
        if not slots.take():
            await self.accept()
            await self.close(code=AT_CAPACITY)
            return False
        self.has_slot = True
        return True

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        # Every way out (disconnect, an exception in a handler, the server cancelling an
        # instance that outlived its socket) ends here, so no slot is ever lost.
        try:
            layer = get_channel_layer(self.channel_layer_alias)
            inbox = getattr(receive, "__self__", None)
            if isinstance(inbox, Mailbox) and isinstance(layer, EmbeddedChannelLayer):
                # Under Daphne with the embedded layer: AsyncConsumer.__call__ with one wait
                # for both sources instead of a task for each (layers.dispatch_both).
                self.scope = scope
                self.channel_layer = layer
                self.channel_name = await layer.new_channel()
                self.base_send = send
                with contextlib.suppress(StopConsumer):
                    await dispatch_both(inbox, layer, self.channel_name, self.dispatch)
            else:
                await super().__call__(scope, receive, send)
        finally:
            self._give_back_slot()

    def _give_back_slot(self) -> None:
        if self.has_slot:
            self.has_slot = False
            slots.give_back()


class ConversationConsumer(SlottedConsumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Timers this socket started: kept so they are not garbage-collected, and cancelled
        # on disconnect so none of them touches a closed socket or the database afterwards.
        self.tasks: set[asyncio.Task] = set()
        self.cut_off = False  # told it lost access, and closed
        self.gone = False  # disconnect() has run

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        except asyncio.CancelledError:
            # The server cancels an instance still busy in a handler a while after its socket
            # closed (Daphne's application_close_timeout): disconnect() never ran, so the
            # channel would stay in its groups and the other watchers would go on showing
            # this one. Said goodbye here, in a task of its own (this one is cancelled).
            if hasattr(self, "group"):
                _keep_running(asyncio.create_task(self.disconnect(1006), name="disconnect-late"))
            raise

    async def connect(self) -> None:
        if not await self.take_slot():
            return
        if not await self._open():
            self._give_back_slot()  # refused: the slot is free now, not when the server says

    async def _open(self) -> bool:
        """Authorize, join the conversation's group, accept and send the transcript; False
        (and the socket refused) for a user who may not watch it."""
        # gate.py sets the user; without it the socket is simply anonymous.
        self.user = self.scope.get("user") or AnonymousUser()
        self.conversation_id = self.scope["url_route"]["kwargs"]["pk"]
        # Per streaming message: [text length shown, reasoning length shown], or a buffer of
        # deltas that arrived before the run's snapshot did.
        self.shown: dict[int, list[int]] = {}
        self.waiting: dict[int, list[dict]] = {}
        self.tokens, self.refilled = float(BURST), time.monotonic()
        self.present: dict[str, tuple[int, str]] = {}  # channel → (user id, username)
        self.watchers_shown: list[str] = []  # the names the page shows now
        self.epoch, self.checked_at = (-1, -1), float("-inf")
        self.refreshing = False  # a background re-check is due (_authorized)
        self.allowed, self.can_run = False, False
        # The branch this socket shows when it is not the active one: a viewer's ‹ ›, or the
        # page's ?at= (a link to a message on another branch). A switch or a turn clears it.
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        self.view_at: int | None = _at(query)
        # The page's transcript, fingerprinted (?v=): left alone at connect when unchanged.
        shown_digest = (query.get("v") or [""])[0]
        # The session and the user were read by the auth middleware a moment ago.
        if not await self._authorized(fresh=True):
            await self.close(code=4403)
            return False
        self.group = runs.group_name(self.conversation_id)
        self.user_group = access.user_group(self.user.pk or 0)  # authenticated: has a pk
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.channel_layer.group_add(self.user_group, self.channel_name)
        await self.accept()
        open_sockets.add(self)
        await self._send_transcript(unless=shown_digest)
        await self._announce("presence.join")
        return True

    async def disconnect(self, code: int) -> None:
        if self.gone:
            return  # once, whether the server said the socket closed or cancelled us
        self.gone = True
        open_sockets.discard(self)
        self._give_back_slot()
        pending = list(self.tasks)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)
            await self.channel_layer.group_discard(self.user_group, self.channel_name)
            await self._announce("presence.leave")

    def _later(self, delay: float, work: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Run `work(*args)` after `delay` seconds, unless the socket closes first."""

        async def after() -> None:
            await asyncio.sleep(delay)
            await work(*args)

        task = asyncio.create_task(after(), name=f"{type(self).__name__}.{work.__name__}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _authorized(self, *, fresh: bool = False) -> bool:
        """May this socket's user still watch the conversation? The decision is kept, and
        trusted while nothing revoked it (access.epoch) and it is younger than
        REAUTH_INTERVAL, the backstop for changes that bypass the signals.

        A decision used in the second half of its life is checked again in the background
        (REFRESH_DELAY later), so that a socket in use keeps a fresh one and its sends do not
        wait for the three queries of a check; an idle socket's next use checks first, as
        always."""
        if not self.user.is_authenticated:
            return False
        epoch = access.epoch(self.user.pk, self.conversation_id)
        interval = settings.PLAYGROUND_RUN["REAUTH_INTERVAL"]
        age = time.monotonic() - self.checked_at
        if epoch == self.epoch and age < interval:
            if age >= interval / 2 and not self.refreshing and self.allowed:
                self.refreshing = True
                self._later(REFRESH_DELAY, self._refresh_access)
            return self.allowed
        return await self._check_access(fresh=fresh)

    async def _refresh_access(self) -> None:
        """The background re-check _authorized asked for. The kept decision stands meanwhile;
        a refusal cuts the socket off as a revocation would."""
        try:
            if self.cut_off:
                return
            epoch, checked = await self._check()
            if epoch != access.epoch(self.user.pk or 0, self.conversation_id):
                return  # revoked meanwhile: the next use checks again, after the change
            if not self._keep(epoch, checked):
                await self._cut_off()
        finally:
            self.refreshing = False

    async def _check_access(self, *, fresh: bool = False) -> bool:
        self.allowed = False
        return self._keep(*await self._check(fresh=fresh))

    async def _check(self, *, fresh: bool = False) -> tuple[tuple[int, int], Any]:
        """check_access's answer, with the epoch taken before it."""
        epoch = access.epoch(self.user.pk or 0, self.conversation_id)
        checked = await database_sync_to_async(check_access)(
            self.user, self.scope.get("session"), self.conversation_id, fresh=fresh
        )
        return epoch, checked

    def _keep(self, epoch: tuple[int, int], checked: tuple[Conversation, bool] | None) -> bool:
        # The epoch from before the check: a revocation during it makes the next use re-check.
        self.epoch, self.checked_at = epoch, time.monotonic()
        if checked is None:
            self.allowed = False
            return False
        self.conversation, self.can_run = checked
        self.allowed = True
        return True

    async def _still_allowed(self) -> bool:
        """Pushes check the kept decision too, so a user removed from a team (or logged out)
        stops receiving its conversations without having to send anything."""
        if self.cut_off:
            return False
        if await self._authorized():
            return True
        await self._cut_off()
        return False

    async def _cut_off(self) -> None:
        # Once: handlers already queued (a push, a revocation) must not say it again.
        if self.cut_off:
            return
        self.cut_off = True
        await self._send_error(NO_ACCESS)
        await self.close(code=4403)

    def _rate_limited(self) -> bool:
        """A token bucket per socket: a client looping sends cannot starve everyone's
        database work, which shares one thread."""
        now = time.monotonic()
        self.tokens = min(BURST, self.tokens + (now - self.refilled) * RATE)
        self.refilled = now
        if self.tokens < 1:
            return True
        self.tokens -= 1
        return False

    # Browser → server

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None):
        if not self.has_slot:
            return  # turned away at capacity (or gone): the close frame is on its way
        if self._rate_limited():
            await self._send_error("Too many messages at once: slow down a little.")
            return
        if self.cut_off or not await self._authorized():
            await self._cut_off()
            return
        if text_data is None or len(text_data) > MAX_FRAME_BYTES:
            await self._send_error("That message is too large.")
            return
        try:
            data = json.loads(text_data)
            action = data.get("action")
        except (ValueError, AttributeError, RecursionError):
            await self._send_error("The playground could not read that message.")
            return
        if action == "send":
            await self._start(data)
            return
        await aclose_old_connections()  # see dispatch()
        if action == "stop":
            await self._stop()
        elif action == "tool_results":
            await self._tool_results(data)
        elif action == "rerun":
            await self._rerun(data)
        elif action == "edit":
            await self._edit(data)
        elif action == "regenerate":
            await self._run_turn(start_turn, regenerate_of=_int(data.get("message_id")), text="")
        elif action == "switch":
            await self._switch(_int(data.get("message_id")))
        else:
            await self._send_error("Unknown action.")

    async def _start(self, data: dict[str, Any]) -> None:
        # Only a send that carries an extension's field (a prompt version) goes to a database
        # thread for the extensions: a plain send's first trip there is its own.
        if (
            self._may_run()
            and extensions.concerns_send(data)
            and extensions.preparing_send.has_listeners(Conversation)
        ):
            try:
                rows = await database_sync_to_async(_prepare_by_extensions)(
                    self.conversation, self.user, data
                )
            except TurnError as exc:
                await self._send_error(str(exc))
                return
            if rows:  # written by an extension before the turn: shown before it
                await self.channel_layer.group_send(
                    self.group, {"type": "chat.append", "html": rows, "streaming_ids": []}
                )
        # Refused, not stringified: an object sent as the text would reach the model as
        # "{'a': 1}", and a misspelt parameter would be left out without a word.
        try:
            text, model_key, system_prompt, wire_format = (
                _text_field(data, name)
                for name in ("text", "model", "system_prompt", "wire_format")
            )
        except ValueError as exc:
            await self._send_error(str(exc))
            return
        await self._run_turn(
            start_turn,
            text=text,
            model_key=model_key,
            system_prompt=system_prompt,
            values=params.from_form(data),
            attachment_ids=_ints(data.get("attachment")),
            # Absent (a client from before formats): the conversation's own format.
            wire_format=wire_format if "wire_format" in data else None,
            sent=data,
        )

    async def _tool_results(self, data: dict[str, Any]) -> None:
        try:
            results = {
                key.removeprefix("result:"): _text_field(data, key)
                for key in data
                if key.startswith("result:")
            }
        except ValueError as exc:
            await self._send_error(str(exc))
            return
        await self._run_turn(
            submit_tool_results, message_id=_int(data.get("message_id")), results=results
        )

    async def _rerun(self, data: dict[str, Any]) -> None:
        await self._run_turn(rerun, message_id=_int(data.get("message_id")))

    async def _edit(self, data: dict[str, Any]) -> None:
        try:
            text = _text_field(data, "text")
        except ValueError as exc:
            await self._send_error(str(exc))
            return
        await self._run_turn(start_turn, edit_of=_int(data.get("message_id")), text=text)

    async def _switch(self, message_id: int) -> None:
        """‹ ›: show the branch through `message_id`. Who may run makes it the conversation's
        active branch (every watcher and a reload show it, the next send continues it); a
        viewer, who may change nothing, reads it in this tab only."""
        if not self._may_run():
            self.view_at = message_id
            await self._send_transcript()
            return
        try:
            await database_sync_to_async(switch_branch)(self.conversation, message_id)
        except TurnError as exc:
            await self._send_error(str(exc))
            return
        await self.channel_layer.group_send(self.group, {"type": "chat.branch"})

    def _may_run(self) -> bool:
        """receive() has just confirmed the kept decision, which includes the role."""
        return self.can_run

    async def _run_turn(self, service, *, sent: dict[str, Any] | None = None, **kwargs) -> None:
        """Create the rows through `service`, show them to every watcher, start the run.
        `sent`: the socket message of a send, for extensions.turn_written.

        Once taken, the turn is the server's, like the run it starts: a socket closed in the
        middle of it is cancelled by the server (it was still busy here), and the rows being
        written on the database thread are written all the same. Cancelled with the socket,
        the turn would leave its reply "streaming" with no run until the stale sweep; shielded,
        it ends as it would have had the tab stayed open."""
        if shutdown.draining:
            await self._send_error(shutdown.RESTARTING)
            return
        if not self._may_run():
            await self._send_error("You can watch this conversation but not run it.")
            return
        await outlive_socket(
            self._turn(service, sent=sent, **kwargs), f"turn-{self.conversation_id}"
        )

    async def _turn(self, service, *, sent: dict[str, Any] | None, **kwargs) -> None:
        # The default prefix: channels_redis serves all of a process's channels of one
        # prefix from one receive loop; a prefix of its own starved the sockets.
        channel = await self.channel_layer.new_channel()
        run, html, early = None, None, None
        try:
            if service is start_turn:
                # A prompt version's send may have had rows written before it (example
                # turns, sent through the group): provisional rows sent straight to this
                # socket would overtake them.
                early_ok = sent is None or not extensions.concerns_send(sent)
                run, turn, html, early = await self._send_turn(channel, early_ok, **kwargs)
            else:
                turn = await database_sync_to_async(service)(
                    self.conversation, self.user, channel=channel, **kwargs
                )
        except TurnError as exc:
            await self._send_error(str(exc))
            return
        except params.InvalidParams as exc:
            context = await database_sync_to_async(turn_errors_context)(
                kwargs.get("model_key", ""),
                kwargs.get("values", {}),
                exc.errors,
                kwargs.get("wire_format") or self.conversation.wire_format,
            )
            # A name is the client's own (`param:<name>`), quoted: sendable, as in _send_error.
            unknown = [sendable(name) for name in params.unknown_names(exc.errors)]
            context["error"] = (
                f"Unknown parameter {', '.join(unknown)}: nothing was sent."
                if unknown
                else "Fix the highlighted settings: nothing was sent."
            )
            context["status"] = ""
            await self._send_partial("param-errors", context)
            return
        reply = turn.messages[-1]
        # Where every watcher's deltas start: past the text the rows carry (EarlyText).
        offsets = [len(early.text), len(early.reasoning)] if early and early.shown else [0, 0]
        self.shown[reply.pk] = list(offsets)
        if service is rerun or "edit_of" in kwargs or "regenerate_of" in kwargs:
            # A sibling branch: every watcher redraws the transcript (the new branch, shown
            # now) and asks the run for its text, as on joining.
            if html:
                await self.channel_layer.group_send(
                    self.group, {"type": "chat.append", "html": html, "streaming_ids": []}
                )
            await self.channel_layer.group_send(self.group, {"type": "chat.branch"})
            runs.start(turn.run, run)
            return
        if html is None:
            html = await render(f"{TEMPLATE}#appended", {"transcript": turn.messages})
        append = {"type": "chat.append", "html": html, "streaming_ids": [reply.pk]}
        if offsets != [0, 0]:
            append["offsets"] = offsets
        if service is start_turn:
            # The sender's copy of the rows also clears its composer (and replaces the
            # provisional rows, if it had them): one frame, not two.
            append["sender"] = self.channel_name
        await self.channel_layer.group_send(self.group, append)
        # Every watcher has the reply's row now (a group delivers in order): deltas may follow.
        runs.start(turn.run, run)
        if (
            service is start_turn
            and sent is not None
            and extensions.concerns_send(sent)
            and extensions.turn_written.has_listeners(Conversation)
        ):
            record = database_sync_to_async(_turn_written)
            await record(self.conversation, self.user, turn, sent)

    async def _send_turn(
        self, channel: str, early_ok: bool = True, **kwargs: Any
    ) -> tuple[runs.Run, Turn, str, runs.EarlyText | None]:
        """A send: read and build the request, send it upstream, and write the rows while
        the provider works on its first token: once the request is on its way (see
        Run.underway), so that the provider gets it after the turn's two reads, not after
        its whole transaction too. If the write fails, the request is closed. The new rows
        are rendered in the same trip to the database thread: one hop fewer between the
        send and the first token.

        A provider that answers faster than the rows are written gets its first text shown
        to the sender at once, in provisional rows that the real ones replace (EarlyText):
        the turn waits up to EARLY_TEXT_WAIT for it before writing (the write would hold
        the GIL while the answer is read), and takes any that arrives during the write."""
        prepared = await database_sync_to_async(prepare_turn)(
            self.conversation, self.user, channel=channel, **kwargs
        )
        run = runs.begin(prepared.run)
        early = None
        if settings.PLAYGROUND_RUN["EARLY_TEXT_WAIT"] and early_ok and not prepared.branching:
            early = runs.EarlyText(run)
        try:
            await run.underway()
            if early is not None:
                await run.arrived(settings.PLAYGROUND_RUN["EARLY_TEXT_WAIT"])
                await self._show_early(prepared, early)
                if early.shown:
                    await socket_written()
            writing = asyncio.ensure_future(
                database_sync_to_async(_write_and_render)(prepared, self.user, early)
            )
            if early is not None and not early.shown:
                arrived = run.arrived()
                try:
                    await asyncio.wait([writing, arrived], return_when=FIRST_COMPLETED)
                finally:
                    arrived.cancel()
                await self._show_early(prepared, early)
            turn, html = await writing
        except BaseException:
            if early is not None and early.shown:
                await self.send(text_data=PROVISIONAL_GONE)
            await run.abandon()
            raise
        return run, turn, html, early

    async def _show_early(self, prepared: PreparedTurn, early: runs.EarlyText) -> None:
        """The reply's first text, if it has arrived and the rows are not being rendered
        yet, to this socket in provisional rows."""
        if not early.shown and early.take():
            await self.send(text_data=provisional_html(prepared, early, self.user))

    async def _stop(self) -> None:
        if not self._may_run():
            await self._send_error("You can watch this conversation but not stop it.")
            return
        await runs.stop(Message.objects.filter(conversation_id=self.conversation_id))

    # Channel layer → browser

    async def access_revoke(self, event: dict[str, Any]) -> None:
        """Something changed this user's rights (in any process): check now, and say so at
        once rather than at the next send."""
        could_run = self.can_run
        self.epoch = (-1, -1)
        if not await self._still_allowed():
            return
        if could_run and not self.can_run:
            await self._send_error("You can now watch this conversation but not run it.")

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels closes stale database connections before every handler, a hop to the one
        # database thread. The relay's handlers touch no database (their HTML is rendered
        # once, by the sender): under load that hop queued each frame behind other
        # sockets' queries.
        # websocket.receive too: receive() closes old connections itself, for the actions that
        # query outside database_sync_to_async (which closes them before and after each call);
        # a send's every query goes through it, so the send skips that hop, before its turn.
        kind = message.get("type", "")
        handler = RELAY_HANDLERS.get(kind)
        if handler is not None:
            await handler(self, message)
        elif kind == "websocket.receive":
            await self.websocket_receive(cast(Any, message))
        else:
            await super().dispatch(message)

    async def chat_append(self, event: dict[str, Any]) -> None:
        """New rows, rendered once by the socket that created them; for that socket (the
        event's "sender") with its composer cleared in the same frame."""
        if not await self._still_allowed():
            return
        offsets = event.get("offsets", (0, 0))  # a send's reply, past its early text
        for message_id in event["streaming_ids"]:
            self.shown.setdefault(message_id, list(offsets))
        if event["streaming_ids"] and (self.view_at is not None or event.get("branch")):
            # A viewer reading another branch: the new turn continues the active one, so
            # they are shown that branch again, with it. A new sibling branch (a compare's
            # re-run) is drawn whole too.
            self.view_at = None
            await self._send_transcript()
            return
        html = event["html"]
        if event.get("sender") == self.channel_name:
            html += composer_sent_html()
            if "offsets" in event:
                html = PROVISIONAL_GONE + html
        await self.send(text_data=html)

    async def chat_branch(self, event: dict[str, Any]) -> None:
        """The active branch changed (a switch, an edit, a regeneration): redraw it."""
        if not await self._still_allowed():
            return
        self.view_at = None
        await self._send_transcript()

    async def run_delta(self, event: dict[str, Any]) -> None:
        if not await self._still_allowed():
            return
        message_id = event["message_id"]
        if message_id in self.waiting:
            self.waiting[message_id].append(event)
            return
        shown = self.shown.setdefault(message_id, [0, 0])
        frames = []
        for index, kind in enumerate(("text", "reasoning")):
            piece = _beyond(shown[index], event[f"{kind}_at"], event[kind])
            if piece is None:
                # A gap: some frames never reached this socket. Catch up from the run.
                await self._request_snapshot(message_id, event.get("run_channel"))
                return
            if piece:
                shown[index] += len(piece)
                frames.append(delta_frame(kind, message_id, piece))
        for frame in frames:
            await self.send(text_data=frame)

    async def run_snapshot(self, event: dict[str, Any]) -> None:
        if not await self._still_allowed():
            return
        message_id = event["message_id"]
        buffered = self.waiting.pop(message_id, None)
        if buffered is None:
            return
        self.shown[message_id] = [len(event["text"]), len(event["reasoning"])]
        await self._send_partial(
            "streaming-text",
            {"message_id": message_id, "text": event["text"], "reasoning": event["reasoning"]},
        )
        for delta in buffered:
            await self.run_delta(delta)

    async def run_done(self, event: dict[str, Any]) -> None:
        """The finished reply, rendered once by its run."""
        if not await self._still_allowed():
            return
        message_id = event["message_id"]
        self.shown.pop(message_id, None)
        self.waiting.pop(message_id, None)
        if event["html"]:
            await self.send(text_data=event["html"])

    # Presence: who else watches. Each socket keeps the others' names, learnt from their
    # join (answered directly with "here") and forgotten at their leave; no database.

    async def _announce(self, kind: str, to: str | None = None) -> None:
        """Best effort: presence is a courtesy, so a channel layer that is down (or back
        without this news) never fails a socket's opening, closing or any relay."""
        event = {"type": kind, "channel": self.channel_name, "user_id": self.user.pk}
        event["name"] = self.user.get_username()
        try:
            if to is None:
                await self.channel_layer.group_send(self.group, event)
            else:
                await self.channel_layer.send(to, event)
        except Exception as exc:
            log.warning("presence %s not sent: %r", kind, exc)

    async def presence_join(self, event: dict[str, Any]) -> None:
        if event["channel"] != self.channel_name:
            await self._announce("presence.here", to=event["channel"])
            await self.presence_here(event)

    async def presence_here(self, event: dict[str, Any]) -> None:
        self.present[event["channel"]] = (event["user_id"], event["name"])
        await self._send_presence()

    async def presence_leave(self, event: dict[str, Any]) -> None:
        if self.present.pop(event["channel"], None) is not None:
            await self._send_presence()

    async def _send_presence(self) -> None:
        if not await self._still_allowed():
            return
        # One entry per user, however many tabs; one's own other tab is not "someone else".
        names = {
            user_id: name for user_id, name in self.present.values() if user_id != self.user.pk
        }
        shown = sorted(names.values())
        if shown == self.watchers_shown:
            return  # e.g. one's own other tab came or went: nothing to redraw
        self.watchers_shown = shown
        watchers = [{"name": n, "initials": initials(n)} for n in shown]
        await self._send_partial("presence", {"watchers": watchers})

    async def review_changed(self, event: dict[str, Any]) -> None:
        """A teammate changed a reply's review or the conversation's review status
        (playground.review.live): this page fetches the bar or the status again, through
        the ordinary views and as its own user. Not the author's own sockets (their page
        drew the change already; a refetch would replace the control under their keys),
        and a bar only when the reply is on the branch this page shows."""
        if event.get("by") == self.user.pk or not await self._still_allowed():
            return
        message_id = event.get("message_id")
        if message_id is not None and not await database_sync_to_async(self._shows)(message_id):
            return
        context = {"message_id": message_id, "conversation_id": self.conversation_id}
        await self._send_partial("review-refresh", {**context, "refresh_oob": True})

    def _shows(self, message_id: int) -> bool:
        """Whether the transcript this socket draws holds the message (its branch, as
        contexts.transcript_context picks it)."""
        by_id = {m.pk: m for m in self._own_messages().only("pk", "parent_id")}
        if message_id not in by_id:
            return False
        at = self.view_at if self.view_at in by_id else None
        if at is None:
            active = Conversation.objects.filter(pk=self.conversation_id)
            at = active.values_list("active_leaf_id", flat=True).first()
        return any(m.pk == message_id for m in active_branch(by_id, at))

    async def server_restarting(self, event: dict[str, Any]) -> None:
        """The process is shutting down: this arrives after the run's last "done" frame (same
        channel, in order), so the page shows the saved reply and then why it lost the
        socket."""
        await self.close(code=shutdown.RESTART_CLOSE)

    # Helpers

    async def _send_transcript(self, unless: str = "") -> None:
        """Draw the transcript, or (`unless` the page's digest matches) only catch up the
        replies still streaming."""
        context = await database_sync_to_async(transcript_context)(self.conversation, self.view_at)
        if not unless or unless != context["transcript_digest"]:
            await self._send_partial("transcript-oob", context)
        else:
            # Still one frame, so the page (and a test) knows the socket is live: who else
            # watches, nobody yet (their answers to this socket's join come next).
            await self._send_partial("presence", {"watchers": []})
        for message in context["transcript"]:
            if message.is_streaming:
                await self._request_snapshot(message.pk, message.run_channel)

    def _own_messages(self):
        """The messages this socket serves: its conversation's."""
        return Message.objects.filter(conversation_id=self.conversation_id)

    async def _finished_html(self, message: Message) -> str:
        """A finished reply whose run is gone, rendered for this socket."""
        await database_sync_to_async(with_branch_nav)(message)
        return await render(f"{TEMPLATE}#message-oob", {"message": message})

    async def _request_snapshot(self, message_id: int, run_channel: str | None) -> None:
        if run_channel is None:
            message = await self._own_messages().filter(pk=message_id).afirst()
            run_channel = message.run_channel if message else ""
        if not run_channel or message_id in self.waiting:
            return
        self.waiting[message_id] = []
        try:
            await self.channel_layer.send(
                run_channel,
                {"type": "run.snapshot", "message_id": message_id, "reply_to": self.channel_name},
            )
        except Exception:
            # The channel layer is away (Redis restarting): the timeout below falls back to
            # the saved text, and the next gap asks again.
            log.warning("snapshot request for message %s failed", message_id, exc_info=True)
        self._later(settings.PLAYGROUND_RUN["SNAPSHOT_TIMEOUT"], self._snapshot_timeout, message_id)

    async def _snapshot_timeout(self, message_id: int) -> None:
        """The run did not answer (its process died): fall back to the saved text."""
        if message_id not in self.waiting:
            return
        mine = self._own_messages().filter(pk=message_id)
        await mine.amark_stale_interrupted()
        message = await mine.afirst()
        if message is None:
            self.waiting.pop(message_id, None)
            return
        await self.run_snapshot(
            {"message_id": message_id, "text": message.text, "reasoning": message.reasoning}
        )
        if not message.is_streaming:
            # Its run is gone, so nobody else renders the finished reply for this socket.
            html = await self._finished_html(message)
            await self.run_done({"message_id": message_id, "html": html})

    async def _send_partial(self, name: str, context: dict[str, Any]) -> None:
        # Markdown and templates cost CPU; a long transcript must not stall every socket.
        html = await render(f"{TEMPLATE}#{name}", context)
        await self.send(text_data=html)

    async def _send_error(self, text: str) -> None:
        # An error may quote a field's name as the client spelt it ("result:\ud800"), which
        # a frame (UTF-8) could not carry: the error would not reach the page at all.
        await self._send_partial("composer-error", {"error": sendable(text)})


async def close_all(code: int = shutdown.RESTART_CLOSE, wait: float = shutdown.CLOSE_WAIT) -> None:
    """Close every socket of this process with `code`, each after the frames already queued
    for it; wait up to `wait` seconds for them to go."""
    sockets = list(open_sockets)
    for socket in sockets:
        try:
            await socket.channel_layer.send(socket.channel_name, {"type": "server.restarting"})
        except Exception:
            await socket.close(code=code)  # the channel layer is away: close it directly
    deadline = time.monotonic() + wait
    while open_sockets and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


shutdown.when_draining(close_all)


async def outlive_socket(work: Coroutine[Any, Any, None], name: str) -> None:
    """Await `work` (a turn: its rows, then its run) as a task that a cancelled socket
    leaves running to its end: the rows are written on the database thread all the same,
    and a run that never starts would leave its reply "streaming" until the stale sweep.
    A shutdown waits for it too, then interrupts its run (shutdown.turn_task): called in the
    same step as the check of shutdown.draining."""
    task = shutdown.turn_task(asyncio.create_task(work, name=name))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.done():
            _keep_running(task)
        raise


def _keep_running(task: asyncio.Task) -> None:
    """Hold a task that outlives its socket until it ends (the loop keeps only weak
    references), and log its failure: it has no one to raise to."""
    _orphaned.add(task)
    task.add_done_callback(_orphaned.discard)
    task.add_done_callback(_log_orphan_failure)


def _log_orphan_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s failed after its socket closed", task.get_name(), exc_info=task.exception())


def check_access(user, session, conversation_id: int, *, fresh: bool = False):
    """(conversation, may run it) if this socket's user may still see it, else None.

    One trip to the database thread: the user may since have been deactivated, deleted,
    logged out or given a new password (which ends their other sessions). `fresh`: the auth
    middleware has just read the session and the user, so only the conversation is read."""
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
        return access.get_conversation_and_role(user, conversation_id)
    except (Http404, ObjectDoesNotExist):
        return None


def initials(name: str) -> str:
    """ "ada.lovelace" → "AL", "eve" → "EV": two letters tell teammates apart at a glance."""
    parts = [p for p in re.split(r"[\s._@+-]+", name) if p]
    letters = "".join(p[0] for p in parts[:2]) if len(parts) > 1 else name[:2]
    return letters.upper()


JSON_KINDS = {dict: "an object", list: "a list", bool: "true or false", int: "a number"}


def _text_field(data: dict[str, Any], name: str) -> str:
    """A field that must be text (missing or null: empty); ValueError naming it otherwise."""
    value = data.get(name)
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    kind = JSON_KINDS.get(type(value), "a number" if isinstance(value, float) else "not text")
    raise ValueError(f"“{name}” must be text, not {kind}: nothing was sent.")


@functools.cache
def composer_sent_html() -> str:
    """The composer cleared after a send: the same for everyone, so rendered once per
    process."""
    return render_to_string(f"{TEMPLATE}#composer-sent", {})


def _write_and_render(
    prepared: PreparedTurn, user, early: runs.EarlyText | None = None
) -> tuple[Turn, str]:
    """The rows, and one frame for every watcher: them, and the sidebar row with its title
    (a send gives a new conversation its title, and moves it to the top). The reply's row
    carries the text its sender was shown early, if any."""
    turn = write_turn(prepared, user)
    if early is not None:
        reply = turn.messages[-1]
        reply.text, reply.reasoning = early.close()
    # A sibling branch is drawn by each watcher with the whole transcript (chat.branch).
    rows = (
        ""
        if prepared.branching
        else render_to_string(f"{TEMPLATE}#appended", {"transcript": turn.messages})
    )
    context = {
        "c": turn.conversation,
        "conversation": turn.conversation,
        # The first message gives the conversation its sidebar row, under "Today".
        "first_message": turn.messages[0].parent_id is None,
    }
    return turn, rows + render_to_string(f"{TEMPLATE}#sidebar-item-oob", context)


# The provisional rows of a send (provisional_html) have these ids; the sender's copy of
# the real rows, or a failed write, deletes them.
PROVISIONAL_IDS = ("sending-prompt", "sending-reply")
PROVISIONAL_GONE = "".join(
    f'<article id="msg-{pk}" hx-swap-oob="delete"></article>' for pk in PROVISIONAL_IDS
)


async def socket_written() -> None:
    """Let the event loop go round twice, in which Twisted writes what was just sent on a
    socket (when the socket can take it). Daphne's send only queues the frame: Twisted writes
    it when the event loop next finds the socket writable.
    A turn that then starts its write on the database thread would have that thread take the
    GIL first, and the frame wait for it (about 2 ms a turn, every other turn, in bench.relay's
    one-stream return leg). Two turns of the loop: the one in which the writer is found ready,
    and the one that runs it."""
    for _ in range(2):
        await asyncio.sleep(0)


def provisional_html(prepared: PreparedTurn, early: runs.EarlyText, user) -> str:
    """The rows a send will write, drawn before they exist with the reply's first text: the
    same partial as the real ones, with ids of their own. The prompt is drawn as streaming
    too, which leaves out its Edit form (it has no id to edit yet). Rendered on the event
    loop, not in a thread: nothing in it reads the database, and a hop would cost more."""
    streaming = Message.Status.STREAMING
    prompt = Message(
        pk=PROVISIONAL_IDS[0],
        role=Message.Role.USER,
        status=streaming,
        text=prepared.text,
        content_parts=[{"type": "image", "attachment": a.pk} for a in prepared.attached],
        created_by=user,
    )
    reply = Message(
        pk=PROVISIONAL_IDS[1],
        role=Message.Role.ASSISTANT,
        status=streaming,
        model=prepared.model.key,
        wire_format=prepared.run.wire_format,
        text=early.text,
        reasoning=early.reasoning,
    )
    rows = [prompt, reply] if prepared.new_prompt else [reply]
    # The empty state stays until the real rows remove it: a write that fails leaves the
    # page as it was.
    return render_to_string(f"{TEMPLATE}#provisional", {"transcript": rows})


def _prepare_by_extensions(conversation: Conversation, user, data: dict[str, Any]) -> str:
    """extensions.preparing_send, and the rows its receivers wrote, rendered."""
    responses = extensions.preparing_send.send(
        Conversation, conversation=conversation, user=user, data=data
    )
    written = [row for _, rows in responses for row in (rows or [])]
    if not written:
        return ""
    return render_to_string(f"{TEMPLATE}#appended", {"transcript": written})


def _turn_written(conversation: Conversation, user, turn: Turn, data: dict[str, Any]) -> None:
    try:
        extensions.turn_written.send(
            Conversation, conversation=conversation, user=user, turn=turn, data=data
        )
    except Exception:
        # The reply is streaming already; what an extension records about it is secondary.
        log.exception("an extension failed to record the turn of reply %s", turn.messages[-1].pk)


def _at(query: dict[str, list[str]]) -> int | None:
    values = query.get("at") or [""]
    return int(values[0]) if values[0].isdigit() else None


def _ints(value: Any) -> list[int]:
    values = value if isinstance(value, list) else [] if value in (None, "") else [value]
    return [number for number in map(_int, values) if number > 0]


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: 1e999 reads as inf
        return 0


def delta_frame(kind: str, message_id: int, piece: str) -> str:
    """`+t42:piece` appends text to message 42 (`+r` reasoning). app.js inserts it as a text
    node, so it needs no escaping; an htmx fragment cost 3.3x the text in bytes."""
    return f"+{kind[0]}{message_id}:{piece}"


def _beyond(shown: int, at: int, piece: str) -> str | None:
    """The part of `piece` (which starts at offset `at`) past `shown`; None for a gap."""
    if at > shown:
        return None
    return piece[shown - at :]


# Handlers that only forward what the channel layer brought: no database, no lookups.
RELAY_HANDLERS = {
    "run.delta": ConversationConsumer.run_delta,
    "chat.append": ConversationConsumer.chat_append,
    "run.done": ConversationConsumer.run_done,
    "presence.join": ConversationConsumer.presence_join,
    "presence.here": ConversationConsumer.presence_here,
    "presence.leave": ConversationConsumer.presence_leave,
}

"""A run: one reply streaming from the upstream, owned by the server process, not the socket.

The run publishes deltas to the conversation's channel-layer group (the first at once, then at
most one frame per FRAME_INTERVAL), checkpoints the text to the database at most every
CHECKPOINT_INTERVAL, and writes once more at the end. It listens on a channel of its own for
"stop" and "snapshot" requests, so any socket in any process can stop it or catch up with it.

Every delta carries the offset at which it starts, so a watcher that joins late asks for a
snapshot and then applies only what lies beyond it: nothing shown twice, nothing missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import re
import threading
import time
from asyncio import FIRST_COMPLETED
from dataclasses import dataclass, field
from typing import Any, cast

from asgiref.sync import async_to_sync, sync_to_async
from channels.db import database_sync_to_async
from channels.layers import BaseChannelLayer, InMemoryChannelLayer, get_channel_layer
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db.models import QuerySet
from django.template.loader import render_to_string
from django.utils import timezone

from playground.chat import liveness, plainsql
from playground.chat.models import Conversation, Message
from playground.chat.structured import check_reply
from playground.providers import catalog, client, discovery, formats
from playground.providers.specs import CHAT, Model
from playground.providers.storable import replaced

log = logging.getLogger(__name__)

render = sync_to_async(render_to_string, thread_sensitive=False)

STOP_REPEAT_AFTER = 1.0  # seconds
UNDERWAY_WAIT = 0.02  # seconds a turn waits for its upstream request to go out, see underway()
# A publish that fails (Redis restarting) is tried again after these pauses, then dropped:
# watchers see the gap in the offsets and catch up from a snapshot. The final "done" gets
# longer, because a watcher that misses it keeps showing the reply as streaming.
PUBLISH_RETRIES = (0.1, 0.3, 0.6)
DONE_RETRIES = (0.2, 0.5, 1.0, 2.0, 3.0, 5.0)
SAVE_RETRIES: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)  # then every 8 s, see below
RESTARTED = "The server restarted while this reply was being written."
FINISH_REASON_MAX = cast(int, Message._meta.get_field("finish_reason").max_length)

# The process's runs, so they are not garbage-collected mid-flight and tests can await them.
_active: dict[int, asyncio.Task] = {}
# Stops waiting to be said again (see stop()), kept for the same reason.
_repeats: set[asyncio.Task] = set()
# The Run objects behind _active, so a shutdown can interrupt them (see shutdown.py).
_running: dict[int, Run] = {}


def group_name(conversation_id: int) -> str:
    return f"conversation-{conversation_id}"


def activity_group(team_id: int) -> str:
    """Where a team's runs say that they started, progressed and ended (the Activity page)."""
    return f"team-activity-{team_id}"


def channel_layer() -> BaseChannelLayer:
    """The default channel layer: runs publish, listen and stop through it, so it must exist."""
    layer = get_channel_layer()
    if layer is None:
        raise ImproperlyConfigured("Runs need a channel layer; CHANNEL_LAYERS has no default.")
    return layer


@dataclass
class RunRequest:
    message_id: int
    conversation_id: int
    channel: str
    model: Model
    body: dict[str, Any]
    api_key: str | None = field(default=None, repr=False)
    # The saved body is Chat Completions-shaped; it is sent in this format (formats.py).
    wire_format: str = CHAT
    # The reply's row as the turn wrote it: the final save updates it by pk and renders it
    # without reading it back. None (a request built elsewhere): the row is read.
    reply: Message | None = field(default=None, repr=False, compare=False)
    team_id: int | None = None  # a team conversation's runs show on its Activity page


class EarlyText:
    """A reply's first text, shown to its sender before the turn's rows are written.

    With a fast provider the first token arrives while the rows are being written on the
    database thread, and the rows must reach the watchers before any delta. The sender's
    socket takes what has arrived (take(), on the event loop) and shows it at once in
    provisional rows; the database thread renders the real rows with whatever was taken
    (close()), and every watcher's offsets start past it. The lock makes it one or the
    other: once the rows are being rendered, nothing more is taken."""

    def __init__(self, run: Run) -> None:
        self._lock = threading.Lock()
        self._run = run
        self._closed = False
        self.shown = False  # taken for the sender
        self.text = ""
        self.reasoning = ""

    def take(self) -> bool:
        """Take the text that has arrived, unless the rows are already being rendered;
        whether there was any (then `shown`: the caller shows it)."""
        with self._lock:
            if self._closed:
                return False
            self.text = self._run.text.take()[1]
            self.reasoning = self._run.reasoning.take()[1]
            self.shown = bool(self.text or self.reasoning)
            return self.shown

    def close(self) -> tuple[str, str]:
        """What was taken, for the rows; nothing more will be."""
        with self._lock:
            self._closed = True
            return self.text, self.reasoning


@dataclass
class Stream:
    """Text shown to watchers so far, and what is waiting for the next frame."""

    shown: str = ""
    pending: str = ""

    def take(self) -> tuple[int, str]:
        at, piece = len(self.shown), self.pending
        self.shown += piece
        self.pending = ""
        return at, piece


class Run:
    def __init__(self, request: RunRequest) -> None:
        self.request = request
        self.layer = channel_layer()
        self.group = group_name(request.conversation_id)
        self.text = Stream()
        self.reasoning = Stream()
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.logprobs: list[dict] = []
        self.signatures: list[dict[str, Any]] = []  # thinking blocks' (Messages format)
        self.usage: dict | None = None
        self.chunks = 0  # text and reasoning deltas: the estimate of last resort
        self.finish_reason = ""
        self.error = ""
        self.stopped = False
        self.interrupted = False  # by a server shutdown, see interrupt()
        self.notes: list[str] = []  # shown under the reply (skipped lines, size cap)
        self.skipped = 0  # unreadable stream lines passed over
        self.response_id = ""
        self.frames = 0
        self.started = time.monotonic()
        self.first_token_at: float | None = None
        self.first_reasoning_at: float | None = None
        self.first_text_at: float | None = None
        self.checkpointed_at = self.started
        self.checkpointed_len = 0
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._underway = asyncio.Event()  # see underway()
        self._answered = asyncio.Event()  # text or reasoning arrived, or none will: arrived()
        self._stream_task: asyncio.Task | None = None

    def begin_upstream(self) -> None:
        """Send the upstream request now, while the turn's rows are still being written:
        its first tokens wait in `pending` until main() publishes them."""
        if self._stream_task is None:
            self._stream_task = asyncio.create_task(
                self._consume(), name=f"run-upstream-{self.request.channel}"
            )

    async def underway(self, timeout: float = UNDERWAY_WAIT) -> None:
        """Return once the upstream request is on its way (client.stream's `underway`): its
        body sent on a pooled connection, a new connection being opened, or the attempt
        over. At most `timeout`: a request waiting for a free connection does not hold up
        the caller. The turn writes its rows after this, so on a warm pool the request goes
        out first rather than racing the rows' transaction for the GIL."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._underway.wait()

    def arrived(self, timeout: float | None = None) -> asyncio.Task:
        """A task that ends once the reply's first text or reasoning has arrived, or the
        upstream response ended without any, or after `timeout` seconds (None: no limit),
        for a turn that shows that text early."""

        async def wait() -> None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._answered.wait()

        return asyncio.ensure_future(wait())

    async def abandon(self) -> None:
        """The rows were not written: close the upstream request begun for them. Nothing was
        published or saved, so there is nothing else to undo."""
        task = self._stream_task
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def main(self) -> None:
        _running[self.request.message_id] = self
        liveness.track(self.request.message_id)
        try:
            await self._main()
        finally:
            _running.pop(self.request.message_id, None)
            liveness.untrack(self.request.message_id)

    def interrupt(self) -> None:
        """End the reply now because the server is shutting down: it is saved as shown, with
        status interrupted, and the watchers are told (see shutdown.py)."""
        task = self._stream_task
        if task is not None and not task.done() and not self.finish_reason:
            self.interrupted = task.cancel()

    async def _main(self) -> None:
        await self._tell_team("activity.started")
        listener = asyncio.create_task(self._listen())
        publisher = asyncio.create_task(self._publish_loop())
        self.begin_upstream()  # unless the turn already did
        assert self._stream_task is not None
        try:
            # If the publisher dies (channel layer or database down), watchers and
            # checkpoints would stop while the upstream goes on: end the run instead.
            await asyncio.wait([self._stream_task, publisher], return_when=FIRST_COMPLETED)
            if publisher.done() and not self._stream_task.done():
                log.error("run publisher failed", exc_info=publisher.exception())
                self._stream_task.cancel()
                await asyncio.wait([self._stream_task])
                self.error = "The playground lost this reply's stream."
            elif not self._stream_task.cancelled() and self._stream_task.exception():
                log.error("run failed", exc_info=self._stream_task.exception())
                self.error = "The playground failed while streaming this reply."
        finally:
            await self._stop_publishing(publisher)
            await self._stop_listening(listener)
            await self._finish()

    async def _finish(self) -> None:
        """The last frame, the final write and the done signal: each is tried even if the one
        before failed, so no reply stays "streaming" while its run is gone. The final write
        never waits for the channel layer: publishing only ever logs its failures."""
        await self._publish()
        html = await self._save_final_retrying()
        if html is None and self._heard():
            try:
                html = await self._html()
            except Exception:
                log.exception("run %s: rendering the reply failed", self.request.message_id)
                html = ""  # the watchers still learn the run ended; a reload shows the reply
        done = {"type": "run.done", "message_id": self.request.message_id, "html": html or ""}
        await self._send_retrying(self.layer.group_send, self.group, done, DONE_RETRIES)
        await self._tell_team("activity.done")

    async def _tell_team(self, kind: str, **details: Any) -> None:
        """Ids and counters only: each Activity socket loads and renders what its user may
        see. Tried once and never fatal: the reply matters more than the Activity page."""
        if self.request.team_id is not None:
            event = {"type": kind, "message_id": self.request.message_id, **details}
            group = activity_group(self.request.team_id)
            await self._send_retrying(self.layer.group_send, group, event, ())

    async def _save_final_retrying(self) -> str | None:
        """A database that blips (a failover, a restart, a locked SQLite file) is tried again
        with growing pauses for up to STALE_AFTER: the reply is kept whole if it comes back,
        and meanwhile the run's liveness key says it is still alive. After that the stale
        sweep marks the reply from its last checkpoint.

        The finished reply's HTML when the save rendered it too, else None."""
        deadline = time.monotonic() + settings.PLAYGROUND_RUN["STALE_AFTER"]
        pauses = iter(SAVE_RETRIES)
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._save_final()
            except Exception:
                log.warning(
                    "run %s: the final save failed (attempt %d)",
                    self.request.message_id,
                    attempt,
                    exc_info=attempt == 1,
                )
            pause = next(pauses, SAVE_RETRIES[-1] if SAVE_RETRIES else None)
            if pause is None or time.monotonic() + pause > deadline:
                break
            await asyncio.sleep(pause)
        with contextlib.suppress(Exception):
            await Message.objects.filter(pk=self.request.message_id).aupdate(
                status=Message.Status.ERROR,
                text=self.text.shown,
                reasoning=self.reasoning.shown,
                error="The playground failed while saving this reply.",
            )
        return None

    async def _send_retrying(self, send: Any, to: str, message: dict, pauses: tuple) -> bool:
        """Send through the channel layer, trying again after each pause; never raises (but
        for cancellation): a channel layer that is down must not end or lose the run."""
        for pause in (*pauses, None):
            try:
                await send(to, message)
                return True
            except Exception as exc:
                if pause is None:
                    log.warning(
                        "run %s: channel layer %s failed, gave up: %r",
                        self.request.message_id,
                        message.get("type"),
                        exc,
                    )
                    return False
                await asyncio.sleep(pause)
        return False

    async def _html(self) -> str:
        """The finished reply as every watcher will show it, rendered once here."""
        message = await Message.objects.filter(pk=self.request.message_id).afirst()
        if message is None:  # the conversation was deleted meanwhile
            return ""
        return await render("chat/playground.html#message-oob", _reply_context(message))

    async def _consume(self) -> None:
        params = settings.PLAYGROUND_UPSTREAM
        timeouts = client.Timeouts(
            connect=params["CONNECT_TIMEOUT"],
            read=params["READ_TIMEOUT"],
            retry_after_cap=params["RETRY_AFTER_CAP"],
            # The settings dict mixes floats with this one whole number, so it reads as float.
            max_retries=int(params["MAX_RETRIES"]),
            keepalive_expiry=params["KEEPALIVE_EXPIRY"],
            pace=settings.PLAYGROUND_RUN["READ_PACE"],
        )
        endpoint = catalog.endpoint(self.request.model.provider)
        model, fmt = self.request.model, self.request.wire_format
        body = formats.to_wire(model, fmt, self.request.body)
        events = client.stream(
            endpoint,
            self.request.api_key,
            body,
            timeouts=timeouts,
            wire=formats.wire(fmt),
            underway=self._underway,
        )
        try:
            async for event in events:
                self._apply(event)
                if self._over_cap():
                    break
        finally:
            self._underway.set()  # ended (or failed) before the request went out
            self._answered.set()
            # Closing the generator closes the upstream response, also on cancellation (stop).
            await events.aclose()

    def _apply(self, event: client.Event) -> None:
        # A model that streams NUL or a lone surrogate would fail every checkpoint and the final
        # save, and its frames could not be sent: each is shown as U+FFFD (storable.replaced).
        match event:
            case client.TextDelta(text=text):
                self._first_token()
                self.chunks += 1
                self.first_text_at = self.first_text_at or time.monotonic()
                self.text.pending += replaced(text)
            case client.ReasoningDelta(text=text):
                self._first_token()
                self.chunks += 1
                self.first_reasoning_at = self.first_reasoning_at or time.monotonic()
                self.reasoning.pending += replaced(text)
            case client.ThinkingSignature(signature=signature):
                thought = len(self.reasoning.shown) + len(self.reasoning.pending)
                chars = thought - sum(block["chars"] for block in self.signatures)
                self.signatures.append({"chars": chars, "signature": signature})
            case client.RedactedThinking(data=data):
                # In its place among the signed blocks; it covers none of the shown reasoning.
                self.signatures.append({"chars": 0, "redacted": data})
            case client.ToolCallDelta():
                self._first_token()
                call = self.tool_calls.setdefault(
                    event.index,
                    {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
                )
                call["id"] = replaced(event.id or call["id"])
                call["function"]["name"] += replaced(event.name or "")
                # Valid JSON escapes a NUL inside a string, so a bare one is never data.
                call["function"]["arguments"] += replaced(event.arguments)
            case client.LogprobsDelta(content=content):
                self.logprobs.extend(content)
            case client.Usage(raw=raw):
                self.usage = raw
            case client.Finish(reason=reason):
                self.finish_reason = reason
            case client.StreamError(error=error):
                self.error = str(error)
            case client.Unreadable():
                self.skipped += 1
            case client.ResponseId(id=response_id):
                self.response_id = response_id
        if self.text.pending or self.reasoning.pending:
            self._wake.set()
            self._answered.set()

    def _over_cap(self) -> bool:
        """A reply past PLAYGROUND_MAX_REPLY_CHARS ends here, cut at the cap, as "length":
        the upstream connection closes and memory stays bounded."""
        cap = int(settings.PLAYGROUND_RUN["MAX_REPLY_CHARS"])  # the dict reads as floats
        text, reasoning = self.text, self.reasoning
        used = len(text.shown) + len(text.pending) + len(reasoning.shown) + len(reasoning.pending)
        if used <= cap:
            return False
        excess = used - cap
        cut = min(excess, len(text.pending))
        text.pending = text.pending[: len(text.pending) - cut]
        excess -= cut
        if excess:
            reasoning.pending = reasoning.pending[: max(0, len(reasoning.pending) - excess)]
        self.finish_reason = "length"
        self.notes.append(
            f"The reply reached the playground's limit of {cap:,} characters and was cut off."
        )
        return True

    def _first_token(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()

    async def _stop_listening(self, listener: asyncio.Task) -> None:
        """End the listener with a message, not a cancellation: with channels_redis's list
        layer a cancelled receive could lose a message already popped for another socket of
        this process, and a message ends it cleanly with every layer."""
        end = {"type": "run.end"}
        ended = await self._send_retrying(self.layer.send, self.request.channel, end, ())
        done, _ = await asyncio.wait([listener], timeout=5 if ended else 0)
        if not done:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)

    async def _listen(self) -> None:
        while True:
            message = await self.layer.receive(self.request.channel)
            if message.get("type") == "run.end":
                return
            if message.get("type") == "run.stop":
                # A stop that lands after the reply finished (while the connection drains)
                # changes nothing: the reply is complete, its tool calls still answerable.
                task = self._stream_task
                if task is not None and not task.done() and not self.finish_reason:
                    self.stopped = task.cancel()
            elif message.get("type") == "run.snapshot" and message.get("reply_to"):
                # Unanswered, the watcher falls back to the saved text after a timeout.
                await self._send_retrying(
                    self.layer.send, message["reply_to"], self._snapshot(), PUBLISH_RETRIES
                )

    def _snapshot(self) -> dict[str, Any]:
        return {
            "type": "run.snapshot",
            "message_id": self.request.message_id,
            "text": self.text.shown,
            "reasoning": self.reasoning.shown,
        }

    async def _stop_publishing(self, publisher: asyncio.Task) -> None:
        """Let the publisher finish the frame it is sending: cancelled inside a group_send,
        it would lose text that it had already counted as shown."""
        self._closing.set()
        self._wake.set()
        done, _ = await asyncio.wait([publisher], timeout=5)
        if not done:
            publisher.cancel()
            await asyncio.gather(publisher, return_exceptions=True)

    async def _publish_loop(self) -> None:
        interval = settings.PLAYGROUND_RUN["FRAME_INTERVAL"]
        heartbeat = settings.PLAYGROUND_RUN["HEARTBEAT_INTERVAL"]
        while not self._closing.is_set():
            # Wake for new text, or after a quiet spell to write a heartbeat checkpoint.
            # (asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that lands when the event fires at the same moment.)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(heartbeat):
                    await self._wake.wait()
            self._wake.clear()
            if self._closing.is_set():
                return
            await self._publish()
            try:
                await self._checkpoint()
            except Exception:
                # The database is away: the reply streams on, the final save tries again.
                log.exception("run %s: checkpoint failed", self.request.message_id)
            # At most one frame per interval; closing ends the pause early.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._closing.wait()

    async def _publish(self) -> None:
        if not (self.text.pending or self.reasoning.pending):
            return
        text_at, text = self.text.take()
        reasoning_at, reasoning = self.reasoning.take()
        self.frames += 1
        delta = {
            "type": "run.delta",
            "message_id": self.request.message_id,
            "text_at": text_at,
            "text": text,
            "reasoning_at": reasoning_at,
            "reasoning": reasoning,
        }
        # Dropped after the retries, the text still counts as shown: the next delta's offset
        # tells each watcher about the gap and it catches up from a snapshot.
        await self._send_retrying(self.layer.group_send, self.group, delta, PUBLISH_RETRIES)

    async def _checkpoint(self) -> None:
        run = settings.PLAYGROUND_RUN
        now = time.monotonic()
        shown = len(self.text.shown) + len(self.reasoning.shown)
        changed = shown != self.checkpointed_len
        due = now - self.checkpointed_at >= run["CHECKPOINT_INTERVAL"]
        if (changed and due) or now - self.checkpointed_at >= run["HEARTBEAT_INTERVAL"]:
            self.checkpointed_at, self.checkpointed_len = now, shown
            # Only while it is still streaming: a sweep that wrongly marked it interrupted
            # is not silently undone by a checkpoint.
            await Message.objects.filter(
                pk=self.request.message_id, status=Message.Status.STREAMING
            ).aupdate(
                text=self.text.shown, reasoning=self.reasoning.shown, checkpoint_at=timezone.now()
            )
            elapsed_ms = round((now - self.started) * 1000)
            await self._tell_team("activity.progress", tokens=self.chunks, elapsed_ms=elapsed_ms)

    def _status(self) -> str:
        if self.interrupted:
            return Message.Status.INTERRUPTED
        if self.stopped:
            return Message.Status.STOPPED
        if self.error:
            return Message.Status.ERROR
        return Message.Status.COMPLETE

    async def _estimated_usage(self) -> dict[str, Any] | None:
        """Token counts for a custom endpoint that sent no usage (llama.cpp does not), marked
        as an estimate: by the server's own /tokenize where Probe found one, else one token
        per streamed chunk (llama.cpp and vLLM stream one token per chunk)."""
        model = self.request.model
        if not model.provider.custom or not self.chunks:
            return None
        if model.tokenize:
            endpoint = catalog.endpoint(model.provider)
            key = self.request.api_key
            reply = self.reasoning.shown + self.text.shown
            completion = await discovery.count_tokens(endpoint, key, model.id, reply)
            if completion is not None:
                prompt = await discovery.count_tokens(
                    endpoint, key, model.id, _prompt_text(self.request.body)
                )
                return {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": (prompt or 0) + completion,
                    "estimated": "tokenize",
                }
        return {
            "prompt_tokens": None,
            "completion_tokens": self.chunks,
            "total_tokens": self.chunks,
            "estimated": "chunks",
        }

    async def _save_final(self) -> str | None:
        """Write the reply's final state; with the row the turn wrote, render it in the same
        trip to the database thread (one hop, no read back). The HTML, "" for a reply deleted
        meanwhile, or None if it was not rendered here."""
        values = await self._final_values()
        reply = self.request.reply
        if reply is None or not self._heard():
            await Message.objects.filter(pk=self.request.message_id).aupdate(**values)
            return None
        return await database_sync_to_async(_save_and_render)(reply, values)

    def _heard(self) -> bool:
        """Whether the finished reply's HTML can reach anyone: with an in-process layer whose
        group has no member (a background worker's experiment item), rendering it would only
        cost CPU on the database thread; _finish then sends the done signal with the HTML
        rendered only if a watcher joined meanwhile."""
        if not isinstance(self.layer, InMemoryChannelLayer):
            return True  # Redis: watchers may be in any process
        return bool(self.layer.groups.get(self.group))

    async def _final_values(self) -> dict[str, Any]:
        if self.usage is None:
            try:
                self.usage = await self._estimated_usage()
            except Exception:
                log.exception("run %s: estimating usage failed", self.request.message_id)
        ended = time.monotonic()
        status = self._status()
        ttft = None if self.first_token_at is None else self.first_token_at - self.started
        # Checked like output_tokens: the raw usage may hold "5" or a list, and a failing
        # division here would fail every final save.
        completion = _count((self.usage or {}).get("completion_tokens"))
        generating = ended - (self.first_token_at or ended)
        reasoning_ms = None
        if self.first_reasoning_at is not None:
            thought = (self.first_text_at or ended) - self.first_reasoning_at
            reasoning_ms = round(thought * 1000, 1)
        notes = list(self.notes)
        if self.skipped:
            lines = "line" if self.skipped == 1 else "lines"
            notes.insert(
                0,
                f"The provider sent {self.skipped} {lines} the playground could not read; skipped.",
            )
        error: dict[str, str] = {
            Message.Status.ERROR: self.error,
            Message.Status.INTERRUPTED: RESTARTED,
        }
        schema_check = None
        if status == Message.Status.COMPLETE and not self.tool_calls:
            schema_check = check_reply(self.text.shown, self.request.body.get("response_format"))
            # The path names a key read from the reply's escapes: "\\u0000" or "\\ud800" too.
            schema_check = _storable_json(schema_check)
        # What the provider sent beyond the reply's text is made storable here, once, rather
        # than per streamed chunk (text and reasoning already are, for the checkpoints).
        return {
            "status": status,
            "text": self.text.shown,
            "reasoning": self.reasoning.shown,
            "thinking_signatures": _storable_json(self.signatures),
            "tool_calls": _storable_json([self.tool_calls[i] for i in sorted(self.tool_calls)]),
            "logprobs": _storable_json(self.logprobs) or None,
            # A provider's own reason, cut to its column: PostgreSQL refuses a longer one.
            "finish_reason": replaced(self.finish_reason)[:FINISH_REASON_MAX],
            "error": replaced(error.get(status, "")),
            "notes": notes,
            "response_id": replaced(self.response_id),
            "usage": _storable_json(self.usage),
            "input_tokens": _count((self.usage or {}).get("prompt_tokens")),
            "output_tokens": completion,
            "ttft_ms": None if ttft is None else round(ttft * 1000, 1),
            "total_ms": round((ended - self.started) * 1000, 1),
            "tokens_per_second": round(completion / generating, 1)
            if completion and generating > 0
            else None,
            "cost": self.request.model.cost(completed=status == Message.Status.COMPLETE),
            "reasoning_ms": reasoning_ms,
            "schema_check": schema_check,
            "checkpoint_at": timezone.now(),
        }


def _save_and_render(reply: Message, values: dict[str, Any]) -> str:
    """The final UPDATE by pk, then the reply rendered from the row the turn wrote with the
    values just saved: what a read back would return, without the read (a full Message row
    cost more CPU than the UPDATE). "" if the reply was deleted meanwhile."""
    if not plainsql.update(Message, {"id": reply.pk}, values):
        return ""
    for name, value in values.items():
        setattr(reply, name, value)
    try:
        return render_to_string("chat/playground.html#message-oob", _reply_context(reply))
    except Exception:
        log.exception("run %s: rendering the reply failed", reply.pk)
        return ""  # the watchers still learn the run ended; a reload shows the reply


def _reply_context(message: Message) -> dict[str, Any]:
    awaiting = message.pk if message.awaits_tool_results else None
    return {"message": message, "awaiting_tools": awaiting}


# storable.UNSTORABLE in JSON dumped with ensure_ascii=False: NUL escaped, a surrogate not.
_UNSTORABLE_JSON = re.compile("\\\\u0000|[\ud800-\udfff]")


def _storable_json(value: Any) -> Any:
    """storable.replaced for a JSON value from the provider: jsonb refuses \\u0000 and a lone
    \\ud800 too, in keys as in strings (a logprobs token, a usage field, a tool call's
    arguments). Looked for in the dumped JSON first: a long reply's logprobs are walked only if
    one is there."""
    if not _UNSTORABLE_JSON.search(json.dumps(value, ensure_ascii=False)):
        return value
    return _without_unstorable(value)


def _without_unstorable(value: Any) -> Any:
    if isinstance(value, str):
        return replaced(value)
    if isinstance(value, list):
        return [_without_unstorable(item) for item in value]
    if isinstance(value, dict):
        return {_without_unstorable(key): _without_unstorable(item) for key, item in value.items()}
    return value


def _count(value: Any) -> int | None:
    """A token count from the upstream's usage, if it is one (the upstream is not trusted)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
        return None
    return value


def _prompt_text(body: dict[str, Any]) -> str:
    """The text of the messages sent (images left out), for a prompt token estimate."""
    texts = []
    for message in body.get("messages") or []:
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(str(p.get("text", "")) for p in content if p.get("type") == "text")
    return "\n".join(texts)


def begin(request: RunRequest) -> Run:
    """A run whose upstream request goes out now, before its rows exist. The caller writes
    them, then calls start() with the saved request, or run.abandon() if the write failed."""
    run = Run(request)
    run.begin_upstream()
    return run


def start(request: RunRequest, run: Run | None = None) -> asyncio.Task:
    """Start the run as a task of this process; it outlives the socket that asked for it.
    `run`: one from begin(), whose request lacked the reply's id until now."""
    if run is None:
        run = Run(request)
    else:
        run.request = request
    task = asyncio.create_task(run.main(), name=f"run-{request.message_id}")
    _active[request.message_id] = task
    task.add_done_callback(lambda _: _active.pop(request.message_id, None))
    task.add_done_callback(_log_failure)
    return task


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("run %s failed", task.get_name(), exc_info=task.exception())


async def wait(message_id: int, timeout: float = 10.0) -> None:
    """Wait for this process's run of a message to finish (tests and shutdown)."""
    task = _active.get(message_id)
    if task is not None:
        await asyncio.wait_for(asyncio.shield(task), timeout)


async def stop(where: QuerySet[Message] | QuerySet[Conversation]) -> list[str]:
    """Ask every run still streaming among these messages (or in these conversations) to
    stop, in whatever process it lives. Returns the run channels that were told.

    Stop, delete, team removal, budgets and experiments all stop runs through here."""
    messages = _messages(where)
    streaming = messages.filter(status=Message.Status.STREAMING).exclude(run_channel="")
    channels = [c async for c in streaming.values_list("run_channel", flat=True)]
    if not channels:
        return []
    await _send_stop(channels)
    # Redis publish/subscribe drops a message nobody listens to yet: a stop sent in the first
    # milliseconds of a run in another process could be lost. Say it once more, to the same
    # runs only (a new reply may have started since), even if their rows are gone (delete).
    # A context of its own: called from a sync view, the caller's context names that request's
    # thread executor, which is gone by the time the repeat queries the database.
    task = asyncio.create_task(
        _repeat_stop(channels), name="run-stop-repeat", context=contextvars.Context()
    )
    _repeats.add(task)
    task.add_done_callback(_repeats.discard)
    return channels


def _messages(where: QuerySet[Message] | QuerySet[Conversation]) -> QuerySet[Message]:
    """The messages themselves, or every message of the conversations."""
    if where.model is Message:
        # mypy cannot narrow the union through .model; this queryset is of messages.
        return cast("QuerySet[Message]", where)
    return Message.objects.filter(conversation__in=where)


def stop_sync(where: QuerySet[Message] | QuerySet[Conversation]) -> list[str]:
    """stop() for sync views. Under Daphne the repeat is scheduled on the server's loop, so it
    outlives the request; with no server loop (a management command) only the first is sent."""
    return async_to_sync(stop)(where)


async def _repeat_stop(channels: list[str]) -> None:
    await asyncio.sleep(STOP_REPEAT_AFTER)
    ended = Message.objects.filter(run_channel__in=channels).exclude(
        status=Message.Status.STREAMING
    )
    finished = {c async for c in ended.values_list("run_channel", flat=True)}
    await _send_stop([c for c in channels if c not in finished])


async def _send_stop(channels: list[str]) -> None:
    layer = channel_layer()
    for channel in channels:
        try:
            await layer.send(channel, {"type": "run.stop"})
        except Exception as exc:
            # The channel layer is away: the repeat a second later may get through; the
            # caller (a socket, a view) must not fail because of it.
            log.warning("stop for %s not sent: %r", channel, exc)

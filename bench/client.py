"""A WebSocket client that speaks the playground's conversation protocol and keeps score.

Everything that knows what a server frame looks like is `parse_frame`: when the frame format
changes (e.g. a compact delta format instead of htmx HTML), update that one function.

The client rebuilds what a browser would show from the frames alone (a snapshot replaces the
text, a delta appends to it), so a test can compare it with the saved reply: nothing lost,
nothing shown twice.
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

MODEL = "empiriolabs:gemma-4-e4b"
FINAL_STATUSES = frozenset({"complete", "stopped", "error", "interrupted"})


# -- frames -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Piece:
    """Text for a message's text or reasoning element: appended, or replacing what was there."""

    message_id: int
    kind: str  # "text" | "reasoning"
    append: bool
    text: str


@dataclass(frozen=True)
class Status:
    """A message element was (re)rendered with this role and status."""

    message_id: int
    role: str
    status: str
    oob: bool  # replaces the element in place (the run's final frame, a transcript)


_DELTA = re.compile(r"\+([tr])(\d+):")
_ARTICLE = re.compile(r'<article id="msg-(\d+)" class="message (\w+) (\w+)"([^>]*)>')
# A send's provisional rows (the reply's first text shown before its rows are written):
# that text was on the screen from this frame on, under an id the reply gets later.
_EARLY_TEXT = re.compile(r'id="text-sending-reply">([^<]+)<')
_STREAM_ELEMENT = re.compile(
    r'<(span|div)\b([^>]*?)\bid="(text|reasoning)-(\d+)"([^>]*)>(.*?)</\1>', re.DOTALL
)


def parse_frame(frame: str) -> list[Piece | Status]:
    """The events in one server frame, in document order.

    Current format:
      early     <article id="msg-sending-reply" ...> with the reply's first text, before its
                rows exist (View.feed counts it for the reply whose rows come next)
      delta     +t42:raw text      (+r42: for reasoning; app.js appends it as a text node)
      snapshot  <div id="text-42" hx-swap-oob="innerHTML">full text so far</div>
      rendered  <article id="msg-42" class="message assistant streaming" ...> with a
                <div class="body stream" id="text-42">saved text</div> inside (transcript,
                appended rows); a finished message has class "... complete|stopped|error",
                and the run's final frame replaces it (hx-swap-oob="true" on the article).
    """
    delta = _DELTA.match(frame)
    if delta:
        kind = "reasoning" if delta.group(1) == "r" else "text"
        return [Piece(int(delta.group(2)), kind, True, frame[delta.end() :])]
    found: list[tuple[int, Piece | Status]] = []
    for m in _ARTICLE.finditer(frame):
        status = Status(int(m.group(1)), m.group(2), m.group(3), "hx-swap-oob" in m.group(4))
        found.append((m.start(), status))
    for m in _STREAM_ELEMENT.finditer(frame):
        attrs = m.group(2) + m.group(5)
        piece = Piece(
            message_id=int(m.group(4)),
            kind=m.group(3),
            append='hx-swap-oob="beforeend"' in attrs,
            text=html.unescape(m.group(6)),
        )
        found.append((m.start(), piece))
    found.sort(key=lambda item: item[0])
    return [event for _, event in found]


def ws_frame_bytes(payload: str) -> int:
    """Bytes on the wire for one unmasked server→client text frame (no compression: Daphne
    does not accept permessage-deflate)."""
    n = len(payload.encode())
    header = 2 if n < 126 else 4 if n < 65536 else 10
    return n + header


# -- what one socket shows ----------------------------------------------------------------------


@dataclass
class View:
    """What a browser on this socket shows, rebuilt from frames, plus counters."""

    texts: dict[int, str] = field(default_factory=dict)
    reasoning: dict[int, str] = field(default_factory=dict)
    statuses: dict[int, str] = field(default_factory=dict)
    final: set[int] = field(default_factory=set)  # ids whose finished message replaced the row
    roles: dict[int, str] = field(default_factory=dict)
    first_text_at: dict[int, float] = field(default_factory=dict)  # time.time()
    early_text_at: float | None = None  # provisional rows' text, for the next reply
    last_text_at: dict[int, float] = field(default_factory=dict)
    frames: int = 0
    wire_bytes: int = 0
    delta_frames: dict[int, int] = field(default_factory=dict)
    delta_wire_bytes: dict[int, int] = field(default_factory=dict)

    def feed(self, frame: str, now: float | None = None) -> list[Piece | Status]:
        now = time.time() if now is None else now
        events = parse_frame(frame)
        size = ws_frame_bytes(frame)
        self.frames += 1
        self.wire_bytes += size
        delta_ids = set()
        if self.early_text_at is None and _EARLY_TEXT.search(frame):
            self.early_text_at = now
        for event in events:
            if isinstance(event, Status):
                self.statuses[event.message_id] = event.status
                self.roles[event.message_id] = event.role
                if event.role == "assistant" and self.early_text_at is not None:
                    # The real rows of the provisional ones: the text was shown earlier.
                    self.first_text_at.setdefault(event.message_id, self.early_text_at)
                    self.early_text_at = None
                if event.oob and event.status in FINAL_STATUSES:
                    self.final.add(event.message_id)
                continue
            store = self.texts if event.kind == "text" else self.reasoning
            before = store.get(event.message_id, "")
            store[event.message_id] = before + event.text if event.append else event.text
            if event.kind == "text" and store[event.message_id] and event.text:
                self.first_text_at.setdefault(event.message_id, now)
                self.last_text_at[event.message_id] = now
            if event.append or (event.text and _is_bare_snapshot(frame)):
                delta_ids.add(event.message_id)
        for message_id in delta_ids:
            self.delta_frames[message_id] = self.delta_frames.get(message_id, 0) + 1
            self.delta_wire_bytes[message_id] = self.delta_wire_bytes.get(message_id, 0) + size
        return events

    def streaming_reply(self) -> int | None:
        """The newest assistant message that is (or was) streaming."""
        ids = [i for i, role in self.roles.items() if role == "assistant"]
        return max(ids) if ids else None

    def finished(self, message_id: int) -> bool:
        """The finished message replaced the streaming one (a row appended already finished,
        when the run beat the consumer's query, does not end the deltas)."""
        return message_id in self.final


def _is_bare_snapshot(frame: str) -> bool:
    return "<article" not in frame


# -- sockets ----------------------------------------------------------------------------------


async def open_socket(
    base_url: str, conversation_id: int, cookie: str, *, timeout: float = 10.0
) -> ClientConnection:
    """Open a conversation socket as the browser would: same-origin, with the session cookie."""
    ws_url = base_url.replace("http://", "ws://", 1) + f"/ws/conversations/{conversation_id}/"
    return await connect(
        ws_url,
        origin=base_url,
        additional_headers={"Cookie": f"sessionid={cookie}"},
        compression=None,
        proxy=None,
        ping_interval=None,
        max_size=None,
        max_queue=None,
        open_timeout=timeout,
        close_timeout=2,
    )


def send_payload(text: str, model: str = MODEL) -> str:
    return json.dumps({"action": "send", "text": text, "model": model, "system_prompt": ""})


STOP = json.dumps({"action": "stop"})


async def read_until(
    ws: ClientConnection, view: View, predicate, timeout: float
) -> list[Piece | Status]:
    """Feed frames into `view` until predicate(view) holds; TimeoutError after `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    events: list[Piece | Status] = []
    while not predicate(view):
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise TimeoutError("no matching frame in time")
        frame = await asyncio.wait_for(ws.recv(), remaining)
        events.extend(view.feed(frame))
    return events


# -- one benchmark stream ---------------------------------------------------------------------


@dataclass
class StreamResult:
    tag: str
    server: str
    conversation_id: int
    reply_id: int | None = None
    status: str = ""
    text: str = ""
    sent_at: float = 0.0  # time.time() when the prompt was sent
    first_text_at: float | None = None
    last_text_at: float | None = None
    done_at: float | None = None
    frames: int = 0  # every frame after the send
    wire_bytes: int = 0
    delta_frames: int = 0
    delta_wire_bytes: int = 0
    error: str = ""

    @property
    def content_bytes(self) -> int:
        return len(self.text.encode())


def prompt_for(tag: str) -> str:
    """The upstream records the request body, so the tag ties its timings to this stream."""
    return f"benchmark stream [{tag}]: say something"


TAG_IN_PROMPT = re.compile(r"\[(bench-[\w-]+)\]")


async def run_stream(
    base_url: str,
    conversation_id: int,
    cookie: str,
    tag: str,
    *,
    gate: asyncio.Event | None = None,
    delay: float = 0.0,
    on_ready=None,
    timeout: float = 60.0,
) -> StreamResult:
    """Connect, wait for `gate` and then `delay` seconds, send one prompt, read to the end."""
    result = StreamResult(tag=tag, server=base_url, conversation_id=conversation_id)
    view = View()
    try:
        ws = await open_socket(base_url, conversation_id, cookie)
    except Exception as exc:  # noqa: BLE001 - reported per stream, counted as a failure
        result.error = f"connect: {exc!r}"
        if on_ready is not None:
            on_ready()
        return result
    try:
        await read_until(ws, view, lambda v: v.frames >= 1, 10)  # the transcript
        if on_ready is not None:
            on_ready()
            on_ready = None
        if gate is not None:
            await gate.wait()
        if delay:
            await asyncio.sleep(delay)
        frames0, bytes0 = view.frames, view.wire_bytes
        result.sent_at = time.time()
        await ws.send(send_payload(prompt_for(tag)))

        def done(v: View) -> bool:
            reply = v.streaming_reply()
            return reply is not None and v.finished(reply)

        await read_until(ws, view, done, timeout)
        result.done_at = time.time()
        reply = view.streaming_reply()
        assert reply is not None
        result.reply_id = reply
        result.status = view.statuses[reply]
        result.text = view.texts.get(reply, "")
        result.first_text_at = view.first_text_at.get(reply)
        result.last_text_at = view.last_text_at.get(reply)
        result.frames = view.frames - frames0
        result.wire_bytes = view.wire_bytes - bytes0
        result.delta_frames = view.delta_frames.get(reply, 0)
        result.delta_wire_bytes = view.delta_wire_bytes.get(reply, 0)
    except Exception as exc:  # noqa: BLE001
        result.error = repr(exc)
        if on_ready is not None:
            on_ready()
    finally:
        await ws.close()
    return result


async def hold_idle(base_url: str, conversation_id: int, cookie: str) -> ClientConnection:
    """An open, authenticated socket that has received its transcript and then sits idle."""
    ws = await open_socket(base_url, conversation_id, cookie, timeout=30)
    await asyncio.wait_for(ws.recv(), 30)
    return ws


def check_tokens(text: str, n_tokens: int) -> tuple[int, int]:
    """(lost, duplicated) tokens of the fake upstream's "tok0 tok1 …" reply in `text`."""
    seen = re.findall(r"tok(\d+)", text)
    counts: dict[int, int] = {}
    for index in map(int, seen):
        counts[index] = counts.get(index, 0) + 1
    lost = sum(1 for i in range(n_tokens) if i not in counts)
    duplicated = sum(c - 1 for c in counts.values() if c > 1)
    return lost, duplicated


def expected_text(n_tokens: int) -> str:
    return "".join(f"tok{i}" if i == 0 else f" tok{i}" for i in range(n_tokens))


def as_row(result: StreamResult) -> dict[str, Any]:
    return {k: getattr(result, k) for k in result.__dataclass_fields__}


# -- a connect storm from a process of its own ---------------------------------------------------


def storm_process(targets: list[tuple[str, int]], cookie: str, timeout: float, conn) -> None:
    """Entry point of the storm's own process: n sockets start their handshake at once when the
    parent says "go", and stay open until it says "close". A thousand handshakes keep a client
    process busy for seconds; in the process that also reads the running streams they delayed
    the readers and showed up as stalls of the server.

    Sends the parent "ready", then ([(outcome, seconds to the transcript)], the monotonic time
    the last one finished)."""
    asyncio.run(_storm(targets, cookie, timeout, conn))


async def _storm(targets: list[tuple[str, int]], cookie: str, timeout: float, conn) -> None:
    gate = asyncio.Event()
    opened: list[ClientConnection] = []

    async def handshake(url: str, cid: int) -> tuple[str, float]:
        await gate.wait()
        started = time.monotonic()
        try:
            ws = await open_socket(url, cid, cookie, timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - counted by kind
            return f"handshake: {type(exc).__name__}", time.monotonic() - started
        try:
            await asyncio.wait_for(ws.recv(), timeout)
        except Exception as exc:  # noqa: BLE001
            code = getattr(getattr(exc, "rcvd", None), "code", None)
            await ws.close()
            return (f"closed {code}" if code else f"transcript: {type(exc).__name__}"), (
                time.monotonic() - started
            )
        opened.append(ws)
        return "ok", time.monotonic() - started

    tasks = [asyncio.create_task(handshake(url, cid)) for url, cid in targets]
    await asyncio.sleep(0)  # every task is parked at the gate
    conn.send("ready")
    assert await asyncio.to_thread(conn.recv) == "go"
    gate.set()
    outcomes = await asyncio.gather(*tasks)
    conn.send((outcomes, time.monotonic()))
    await asyncio.to_thread(conn.recv)  # "close"
    await asyncio.gather(*(ws.close() for ws in opened), return_exceptions=True)

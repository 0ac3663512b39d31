"""A fake OpenAI-compatible Chat Completions server for tests and benchmarks.

It also serves the same scripted behaviours as OpenAI Responses streams (POST /v1/responses)
and Anthropic Messages streams (POST /v1/messages), event for event as those references show
them, so the official openai and anthropic SDKs can read them.

Raw asyncio HTTP/1.1 (no framework) so every byte, the pace and connection cuts are under the
test's control. It runs its own event loop in a daemon thread, so it serves sync tests, async
tests on any loop and separate benchmark processes alike.

    with FakeUpstream() as upstream:
        upstream.script(Behaviour(status=503), Behaviour(tokens=["Hi", "!"]))
        ...  # point a client at upstream.base_url

Run standalone for demos and benchmarks:

    python -m tests.upstream --port 8001 --tokens 50 --interval 0.02
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any

DEFAULT_MODEL = "gemma-3-27b-it"

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}

# The path each wire format is served at, under /v1.
_ROUTES = {"chat": "/chat/completions", "responses": "/responses", "messages": "/messages"}

_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_denied", None),
    404: ("invalid_request_error", "model_not_found"),
    422: ("invalid_request_error", None),
    429: ("rate_limit_exceeded", "rate_limit_exceeded"),
}


@dataclass
class Behaviour:
    """How the server answers one chat-completions request. Options combine freely."""

    tokens: list[str] | None = None  # content pieces; None → n_tokens generated words
    n_tokens: int = 5  # "tok0", " tok1", " tok2", ... (see token_list())
    interval: float = 0.0  # seconds between chunks
    steady: bool = False  # pace chunks on a clock from the request: late wakes don't add up
    reasoning: list[str] = field(default_factory=list)  # sent before the content
    redacted_thinking: str = ""  # Messages: a redacted_thinking block with this data, after it
    reasoning_key: str = "reasoning_content"  # or "reasoning" (OpenRouter / vLLM style)
    tool_calls: list[dict] = field(default_factory=list)  # {"id"?, "name", "arguments": str|dict}
    logprobs: bool = False
    usage: bool = True  # final chunk with choices: [] and a usage object
    usage_fields: dict = field(default_factory=dict)  # merged into that usage object
    finish_reason: str | None = None  # None → "tool_calls" if tool_calls else "stop"
    chunk_id: str = ""  # each chunk's "id"; "" → chatcmpl-fake<index>
    status: int = 200
    error_body: dict | str | None = None  # None → OpenAI-shaped error for `status`
    headers: dict[str, str] = field(default_factory=dict)  # extra response headers
    cut_after: int | None = None  # abort the TCP connection after K content tokens
    silence: float = 0.0  # sleep this long ...
    silence_after: int | None = None  # ... before the response (None) or after K tokens
    mid_stream_error: dict | None = None  # {"message", "type", "code"} sent after K tokens
    error_after: int = 1
    bad_line_after: int | None = None  # an unparsable `data:` line before content token K
    raw_data: list[str] = field(default_factory=list)  # `data:` payloads sent as they are ...
    raw_after: int = 1  # ... before content token K (odd shapes the fake never builds)
    line_ending: str = "\n"  # "\r\n" or "\r" to exercise parsers
    split_bytes: bool = False  # one byte per write: splits UTF-8 characters and CRLFs
    keepalive_comments: bool = False  # ": keep-alive" before each event and during silences
    keepalive_every: float = 0.05  # seconds between keep-alive comments during a silence
    multiline_data: bool = False  # each JSON payload spread over several data: lines
    no_done: bool = False  # EOF without data: [DONE]
    echo_key_in_error: bool = False  # error message contains the caller's API key
    chunked: bool = True  # Transfer-Encoding: chunked; False → Connection: close + EOF
    cut_after_head: bool = False  # abort the TCP connection right after the 200 head
    whole: bool = False  # answer even a stream request with one JSON object, as some servers do

    def token_list(self) -> list[str]:
        if self.tokens is not None:
            return list(self.tokens)
        return [f"tok{i}" if i == 0 else f" tok{i}" for i in range(self.n_tokens)]

    @property
    def text(self) -> str:
        """The content the client should assemble (before any cut)."""
        return "".join(self.token_list())

    def resolved_finish_reason(self) -> str:
        return self.finish_reason or ("tool_calls" if self.tool_calls else "stop")


@dataclass
class Recorded:
    """One request as the server saw it, plus what it sent back."""

    index: int
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON, or the raw text if it was not JSON
    peer: tuple | None = None  # the client's (host, port): tells keep-alive reuse apart
    received_at: float = field(default_factory=time.monotonic)
    first_token_sent_at: float | None = None  # time.monotonic()
    first_token_sent_wall: float | None = None  # time.time()
    tokens_sent: int = 0
    completed: bool = False  # the whole response was written
    completed_at: float | None = None  # time.monotonic() when it was
    generation: int = 0  # FakeUpstream.reset() count when it arrived


@dataclass(frozen=True)
class Disconnect:
    request_index: int
    tokens_sent: int
    at: float  # time.monotonic()


class _ClientGone(Exception):
    """The client closed the connection while we were streaming to it."""


class _Abort(Exception):
    """The behaviour asks for an abrupt connection cut."""


class FakeUpstream:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.default = Behaviour()
        self.models = [DEFAULT_MODEL, "gemma-3-4b-it"]
        self._set_server_defaults()
        self.requests: list[Recorded] = []
        self.disconnects: list[Disconnect] = []
        self._queue: collections.deque[Behaviour] = collections.deque()
        # Like uvicorn's timeout_keep_alive: a keep-alive connection idle longer than this is
        # dead. A real server closes it when its timer fires, and httpcore notices a close that
        # has already arrived (the idle socket turns readable) and connects afresh. What fails
        # is the race where the client's next request crosses the server's close on the wire.
        # The fake makes that race certain: it leaves the idle socket open and drops a request
        # arriving on it after the timeout, closing with a FIN ("close") or an RST ("reset").
        self.keepalive_timeout: float | None = None
        self.keepalive_drop: str = "close"
        self.dropped: list[tuple | None] = []  # peers of requests dropped that way, unanswered
        self._generation = 0
        self._cond = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    def _set_server_defaults(self) -> None:
        # /v1/models entries carry vLLM's max_model_len (None: leave it out, as llama.cpp does).
        self.max_model_len: int | None = 8192
        # POST /tokenize answers (vLLM's or llama.cpp's shape, as asked); False: 404.
        self.tokenize = True
        # Parameters the server refuses, like llama.cpp: a body key ("tools", "top_k"), or
        # "json_schema" (that response_format type) or "image_url" (an image part), mapped to
        # the message. 400 answers llama.cpp's error shape, 422 FastAPI's (llama-cpp-python),
        # 500 llama.cpp's shape under a server error status.
        self.refuse: dict[str, str] = {}
        self.refuse_status = 400
        # Every route answers 401 unless the request carries this Bearer key.
        self.require_key: str | None = None
        # The wire formats served; another format's path answers 404, like a server without it.
        self.formats = set(_ROUTES)

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> FakeUpstream:
        ready = threading.Event()
        errors: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._run, args=(ready, errors), name="fake-upstream", daemon=True
        )
        self._thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        self._loop = self._thread = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self, ready: threading.Event, errors: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self._handle, self.host, self.port, backlog=1024)
            )
        except BaseException as exc:  # e.g. port in use: report it to start()
            errors.append(exc)
            ready.set()
            loop.close()
            return
        self.port = self._server.sockets[0].getsockname()[1]
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- scripting and inspection (thread-safe) -------------------------------------------------

    def script(self, *behaviours: Behaviour) -> None:
        """The next chat-completions requests take these in order; then `default` again.

        GET /v1/models does not consume the queue.
        """
        with self._cond:
            self._queue.extend(behaviours)

    def reset(self) -> None:
        """Back to pristine: no recorded requests or disconnects, no queue, default Behaviour()."""
        with self._cond:
            self.default = Behaviour()
            self._generation += 1  # late news about older requests is dropped, see below
            self._queue.clear()
            self.requests.clear()
            self.disconnects.clear()
            self.keepalive_timeout = None
            self.keepalive_drop = "close"
            self.dropped.clear()
            self._set_server_defaults()

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.requests) >= n, timeout)

    def wait_for_disconnect(self, timeout: float = 5.0, n: int = 1) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.disconnects) >= n, timeout)

    def _next_behaviour(self) -> Behaviour:
        with self._cond:
            return self._queue.popleft() if self._queue else self.default

    def _record(
        self, method: str, path: str, headers: dict[str, str], body: Any, peer: tuple | None
    ) -> Recorded:
        with self._cond:
            rec = Recorded(len(self.requests), method, path, headers, body, peer)
            rec.generation = self._generation
            self.requests.append(rec)
            self._cond.notify_all()
            return rec

    def _record_disconnect(self, rec: Recorded) -> None:
        with self._cond:
            if rec.generation != self._generation:
                # A client of a previous test went away after reset(): not this test's business.
                return
            self.disconnects.append(Disconnect(rec.index, rec.tokens_sent, time.monotonic()))
            self._cond.notify_all()

    # -- HTTP -----------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            idle_since: float | None = None  # when the previous response on it ended
            while await self._serve_one(reader, writer, idle_since):
                idle_since = time.monotonic()
        except (_Abort, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.transport.abort()  # abrupt on purpose: the client must see a cut
        except asyncio.CancelledError:
            # Only stop() cancels us. Swallowed on purpose: asyncio 3.11's connection callback
            # calls task.exception(), which would log a spurious error for a cancelled task.
            writer.transport.abort()
        finally:
            self._tasks.discard(task)
            if not writer.transport.is_closing():
                writer.close()

    async def _serve_one(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        idle_since: float | None = None,
    ) -> bool:
        """Serve one request; True when the connection may be reused."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False  # client closed an idle keep-alive connection
        method, path, headers = _parse_head(head)
        raw = await reader.readexactly(int(headers.get("content-length") or 0))
        timeout = self.keepalive_timeout
        idle = None if idle_since is None else time.monotonic() - idle_since
        if idle is not None and timeout is not None and idle > timeout:
            self._drop(writer)
            return False
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", errors="replace")
        keep_alive = headers.get("connection", "").lower() != "close"
        peer = writer.get_extra_info("peername")
        route = path.split("?", 1)[0].rstrip("/")
        if self.require_key is not None and _key_from(headers) != self.require_key:
            self._record(method, path, headers, body, peer)
            error = {"error": {"message": "Invalid API Key", "type": "authentication_error"}}
            await _send_json(writer, 401, error, keep_alive=keep_alive)
            return keep_alive
        if method == "GET" and route.endswith("/models"):
            self._record(method, path, headers, body, peer)
            await _send_json(writer, 200, self._models_body(), keep_alive=keep_alive)
            return keep_alive
        if method == "POST" and route == "/tokenize" and self.tokenize:
            self._record(method, path, headers, body, peer)
            await _send_json(writer, 200, self._tokenize_body(body), keep_alive=keep_alive)
            return keep_alive
        fmt = next((f for f, end in _ROUTES.items() if route.endswith(end)), None)
        if method == "POST" and fmt in self.formats:
            rec = self._record(method, path, headers, body, peer)
            refused = self._refusal(body)
            if refused is not None:
                await _send_json(writer, self.refuse_status, refused, keep_alive=keep_alive)
                return keep_alive
            behaviour = self._next_behaviour()
            return await self._chat(reader, writer, rec, behaviour, keep_alive, fmt)
        self._record(method, path, headers, body, peer)
        error = {"error": {"message": f"No route for {method} {path}", "type": "not_found"}}
        await _send_json(writer, 404, error, keep_alive=keep_alive)
        return keep_alive

    def _drop(self, writer: asyncio.StreamWriter) -> None:
        """Leave a request on a timed-out keep-alive connection unanswered, as if it was late."""
        with self._cond:
            self.dropped.append(writer.get_extra_info("peername"))
            self._cond.notify_all()
        if self.keepalive_drop == "reset":
            # Linger 0: close() sends an RST instead of a FIN.
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        # "close": _handle closes the connection normally, a FIN with no response.

    def _models_body(self) -> dict:
        data = [
            {"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "fake"}
            for m in self.models
        ]
        if self.max_model_len is not None:
            for entry in data:
                entry["max_model_len"] = self.max_model_len
        return {"object": "list", "data": data}

    def _tokenize_body(self, body: Any) -> dict:
        """One token per whitespace-separated word, like the fake's own usage counts."""
        body = body if isinstance(body, dict) else {}
        if "prompt" in body:  # vLLM
            tokens = list(range(len(str(body["prompt"]).split())))
            return {"count": len(tokens), "max_model_len": self.max_model_len, "tokens": tokens}
        return {"tokens": list(range(len(str(body.get("content", "")).split())))}  # llama.cpp

    def _refusal(self, body: Any) -> dict | None:
        """The error body for a request using a refused parameter, or None."""
        if not self.refuse or not isinstance(body, dict):
            return None
        used = set(body)
        response_format = body.get("response_format")
        if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
            used.add("json_schema")
        for message in body.get("messages") or []:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, list) and any(
                isinstance(p, dict) and p.get("type") == "image_url" for p in content
            ):
                used.add("image_url")
        for name, text in self.refuse.items():
            if name in used:
                if self.refuse_status == 422:
                    loc = ["body", *name.split(".")]
                    return {"detail": [{"type": "literal_error", "loc": loc, "msg": text}]}
                kind = "invalid_request_error" if self.refuse_status < 500 else "server_error"
                return {"error": {"code": self.refuse_status, "message": text, "type": kind}}
        return None

    async def _chat(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        rec: Recorded,
        b: Behaviour,
        keep_alive: bool,
        fmt: str = "chat",
    ) -> bool:
        if b.silence and b.silence_after is None and await _client_left(reader, b.silence):
            self._record_disconnect(rec)  # gave up before the first byte (e.g. Stop pressed)
            writer.transport.abort()
            return False
        if b.status != 200:
            body = _error_body(b, rec.headers, fmt)
            await _send_json(writer, b.status, body, b.headers, keep_alive=keep_alive)
            return keep_alive
        request = rec.body if isinstance(rec.body, dict) else {}
        if fmt == "messages" and (problem := _thinking_problem(request)):
            error = {
                "type": "error",
                "error": {"type": "invalid_request_error", "message": problem},
            }
            await _send_json(writer, 400, error, b.headers, keep_alive=keep_alive)
            return keep_alive
        if not request.get("stream") or b.whole:
            whole = {"chat": _completion, "responses": _response_object, "messages": _message}
            body = whole[fmt](b, request)
            await _send_json(writer, 200, body, b.headers, keep_alive=keep_alive)
            return keep_alive
        writers = {"chat": _SSEWriter, "responses": _ResponsesWriter, "messages": _MessagesWriter}
        stream = writers[fmt](reader, writer, b, rec)
        try:
            await stream.run(request)
        except _ClientGone:
            self._record_disconnect(rec)
            writer.transport.abort()
            return False
        rec.completed = True
        rec.completed_at = time.monotonic()
        return b.chunked and keep_alive


# ---------------------------------------------------------------------------------------------
# Streaming one response
# ---------------------------------------------------------------------------------------------


class _SSEWriter:
    """Writes one chat.completion.chunk stream according to a Behaviour."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        behaviour: Behaviour,
        rec: Recorded,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.b = behaviour
        self.rec = rec
        self.gone = asyncio.Event()
        self.created = int(time.time())
        self.id = behaviour.chunk_id or f"chatcmpl-fake{rec.index}"
        self.model = DEFAULT_MODEL
        self.next_at = rec.received_at  # with steady pacing: when the next chunk is due

    async def run(self, request: dict) -> None:
        self.model = str(request.get("model") or DEFAULT_MODEL)
        # HTTP/1.1 clients send nothing while a response streams, so EOF on the reader means
        # the client went away; watching it makes disconnects visible even during long sleeps.
        watcher = asyncio.create_task(self._watch_reader())
        try:
            await self._write_head()
            if self.b.cut_after_head:
                await _flush(self.writer)
                raise _Abort
            await self._write_body(request)
            if self.b.chunked:
                self.writer.write(b"0\r\n\r\n")  # last-chunk: never split or framed
                await self._drain()
        finally:
            # Wait for the cancellation to land: the next request on this keep-alive connection
            # must not find the watcher still reading.
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

    async def _watch_reader(self) -> None:
        with contextlib.suppress(Exception):
            while await self.reader.read(65536):
                pass
        self.gone.set()

    async def _write_head(self) -> None:
        headers = {
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-Request-Index": str(self.rec.index),
            **self.b.headers,
        }
        if self.b.chunked:
            headers["Transfer-Encoding"] = "chunked"
        else:
            headers["Connection"] = "close"
        lines = ["HTTP/1.1 200 OK", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
        self.writer.write("\r\n".join(lines).encode())
        await self._drain()

    async def _write_body(self, request: dict) -> None:
        b = self.b
        await self._chunk({"role": "assistant", "content": ""})
        for piece in b.reasoning:
            await self._pause()
            await self._chunk({b.reasoning_key: piece})
        tokens = b.token_list()
        for i, token in enumerate(tokens):
            if await self._checkpoint(i):
                return
            if i:
                await self._pause()
            await self._chunk({"content": token}, logprobs=_logprobs(token) if b.logprobs else None)
            self._count_token()
        if await self._checkpoint(len(tokens)):  # cut/error/silence after the last token
            return
        for i, call in enumerate(b.tool_calls):
            await self._tool_call(i, call)
        await self._pause()
        await self._chunk({}, finish_reason=b.resolved_finish_reason())
        if b.usage:
            usage = {**_usage(request, b), **b.usage_fields}
            await self._event(self._base(choices=[], usage=usage))
        if not b.no_done:
            await self._data("[DONE]")

    async def _checkpoint(self, i: int) -> bool:
        """Before content token i: silence, cut or error. True ends the body early."""
        b = self.b
        if b.silence and b.silence_after == i:
            await self._sleep(b.silence)
        if b.cut_after == i:
            await _flush(self.writer)
            raise _Abort
        if b.bad_line_after == i:
            await self._data("{not json")
        if b.raw_data and b.raw_after == i:
            for text in b.raw_data:
                await self._data(text)
        if b.mid_stream_error is not None and b.error_after == i:
            await self._mid_error(self._error_payload(b.mid_stream_error))
            return True  # like real providers: no finish, no [DONE]
        return False

    async def _mid_error(self, error: dict) -> None:
        await self._event({"error": error})

    def _error_payload(self, error: dict) -> dict:
        payload = {"message": "Internal error", "type": "server_error", "code": None, **error}
        if self.b.echo_key_in_error:
            payload["message"] += f" (key {_key_from(self.rec.headers)})"
        return payload

    async def _tool_call(self, i: int, call: dict) -> None:
        arguments = call.get("arguments", "")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments)
        first = {
            "index": i,
            "id": call.get("id") or f"call_fake{self.rec.index}_{i}",
            "type": "function",
            "function": {"name": call["name"], "arguments": ""},
        }
        await self._pause()
        await self._chunk({"tool_calls": [first]})
        for start in range(0, len(arguments), 7):
            piece = {"index": i, "function": {"arguments": arguments[start : start + 7]}}
            await self._pause()
            await self._chunk({"tool_calls": [piece]})

    def _count_token(self) -> None:
        rec = self.rec
        if rec.tokens_sent == 0:
            rec.first_token_sent_at = time.monotonic()
            rec.first_token_sent_wall = time.time()
        rec.tokens_sent += 1

    # -- framing --------------------------------------------------------------------------------

    def _base(self, **extra: Any) -> dict:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_fake",
            **extra,
        }

    async def _chunk(
        self, delta: dict, *, finish_reason: str | None = None, logprobs: dict | None = None
    ) -> None:
        choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
        await self._event(self._base(choices=[choice]))

    async def _event(self, payload: dict) -> None:
        if self.b.multiline_data:
            # JSON allows newlines between tokens, so the joined data lines still parse.
            text = json.dumps(payload, ensure_ascii=False, indent=1)
        else:
            text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        await self._data(text)

    async def _data(self, text: str, event: str | None = None) -> None:
        eol = self.b.line_ending
        lines = [f"data: {line}" for line in text.split("\n")]
        if event is not None:
            lines.insert(0, f"event: {event}")
        if self.b.keepalive_comments:
            lines.insert(0, ": keep-alive")
        # ensure_ascii=False above: multi-byte UTF-8 goes on the wire, so split_bytes can split it.
        await self._write_raw((eol.join(lines) + eol + eol).encode())

    async def _write_raw(self, data: bytes) -> None:
        if self.gone.is_set():
            raise _ClientGone
        pieces = [data[i : i + 1] for i in range(len(data))] if self.b.split_bytes else [data]
        for piece in pieces:
            if self.b.chunked:
                piece = b"%x\r\n%s\r\n" % (len(piece), piece)
            self.writer.write(piece)
            await self._drain()
            if self.b.split_bytes:
                await asyncio.sleep(0)  # let each piece leave as its own read on the client

    async def _drain(self) -> None:
        try:
            await self.writer.drain()
        except (ConnectionError, RuntimeError) as exc:
            raise _ClientGone from exc
        if self.gone.is_set():
            raise _ClientGone

    async def _pause(self) -> None:
        if self.b.interval and self.b.steady:
            # A provider at N tokens a second: each chunk is due `interval` after the one
            # before was due, so the event loop waking late (a busy machine) is caught up.
            self.next_at += self.b.interval
            await self._sleep(max(0.0, self.next_at - time.monotonic()))
        elif self.b.interval:
            await self._sleep(self.b.interval)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but notice a departing client at once; send keep-alives if asked to."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            step = (
                min(remaining, self.b.keepalive_every) if self.b.keepalive_comments else remaining
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.gone.wait(), step)
            if self.gone.is_set():
                break
            if self.b.keepalive_comments and step < remaining:
                await self._write_raw(f": keep-alive{self.b.line_ending}".encode())
        if self.gone.is_set():
            raise _ClientGone


class _NamedEventWriter(_SSEWriter):
    """Responses and Messages streams: each payload has a `type`, repeated as `event:`."""

    async def _typed(self, kind: str, **fields: Any) -> None:
        payload = {"type": kind, **fields}
        if self.b.multiline_data:
            text = json.dumps(payload, ensure_ascii=False, indent=1)
        else:
            text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        await self._data(text, event=kind)

    def _arguments(self, call: dict) -> str:
        arguments = call.get("arguments", "")
        return arguments if isinstance(arguments, str) else json.dumps(arguments)


class _ResponsesWriter(_NamedEventWriter):
    """An OpenAI Responses stream: response.created, output items (reasoning, message,
    function_call) with their deltas, then response.completed (or .incomplete) with usage."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.id = f"resp_fake{self.rec.index}"
        self.sequence = 0
        self.output: list[dict] = []

    async def _typed(self, kind: str, **fields: Any) -> None:
        await super()._typed(kind, sequence_number=self.sequence, **fields)
        self.sequence += 1

    def _response(self, status: str, **extra: Any) -> dict:
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "model": self.model,
            "status": status,
            "output": self.output,
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            **extra,
        }

    async def _mid_error(self, error: dict) -> None:
        await self._typed("error", code=error.get("code"), message=error.get("message"), param=None)

    async def _write_body(self, request: dict) -> None:
        b = self.b
        await self._typed("response.created", response=self._response("in_progress"))
        if b.reasoning:
            item = {"type": "reasoning", "id": f"rs_fake{self.rec.index}", "summary": []}
            index = len(self.output)
            self.output.append(item)
            await self._typed("response.output_item.added", output_index=index, item=item)
            for piece in b.reasoning:
                await self._pause()
                await self._typed(
                    "response.reasoning_text.delta",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    delta=piece,
                )
            item["content"] = [{"type": "reasoning_text", "text": "".join(b.reasoning)}]
            await self._typed("response.output_item.done", output_index=index, item=item)
        message = {
            "type": "message",
            "id": f"msg_fake{self.rec.index}",
            "role": "assistant",
            "status": "in_progress",
            "content": [],
        }
        index = len(self.output)
        self.output.append(message)
        await self._typed("response.output_item.added", output_index=index, item=message)
        part = {"type": "output_text", "text": "", "annotations": []}
        await self._typed(
            "response.content_part.added",
            item_id=message["id"],
            output_index=index,
            content_index=0,
            part=part,
        )
        tokens = b.token_list()
        for i, token in enumerate(tokens):
            if await self._checkpoint(i):
                return
            if i:
                await self._pause()
            logprobs = _logprobs(token)["content"] if b.logprobs else []
            await self._typed(
                "response.output_text.delta",
                item_id=message["id"],
                output_index=index,
                content_index=0,
                delta=token,
                logprobs=logprobs,
            )
            self._count_token()
        if await self._checkpoint(len(tokens)):
            return
        part["text"] = b.text
        message["content"] = [part]
        message["status"] = "completed"
        await self._typed("response.output_item.done", output_index=index, item=message)
        for i, call in enumerate(b.tool_calls):
            arguments = self._arguments(call)
            item = {
                "type": "function_call",
                "id": f"fc_fake{self.rec.index}_{i}",
                "call_id": call.get("id") or f"call_fake{self.rec.index}_{i}",
                "name": call["name"],
                "arguments": "",
                "status": "in_progress",
            }
            index = len(self.output)
            self.output.append(item)
            await self._pause()
            await self._typed("response.output_item.added", output_index=index, item=item)
            for start in range(0, len(arguments), 7):
                await self._pause()
                await self._typed(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=index,
                    delta=arguments[start : start + 7],
                )
            item.update(arguments=arguments, status="completed")
            await self._typed("response.output_item.done", output_index=index, item=item)
        await self._pause()
        extra: dict[str, Any] = {}
        if b.usage:
            usage = _usage(request, b)
            extra["usage"] = {
                "input_tokens": usage["prompt_tokens"],
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": usage["completion_tokens"],
                "output_tokens_details": {"reasoning_tokens": len(b.reasoning)},
                "total_tokens": usage["total_tokens"],
            }
        if b.resolved_finish_reason() == "length":
            details = {"reason": "max_output_tokens"}
            response = self._response("incomplete", incomplete_details=details, **extra)
            await self._typed("response.incomplete", response=response)
        else:
            await self._typed("response.completed", response=self._response("completed", **extra))


class _MessagesWriter(_NamedEventWriter):
    """An Anthropic Messages stream: message_start, ping, content blocks (thinking, text,
    tool_use) with their deltas, message_delta (stop reason, usage) and message_stop."""

    STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.id = f"msg_fake{self.rec.index}"
        self.block = 0

    async def _mid_error(self, error: dict) -> None:
        kind = "overloaded_error" if error.get("type") == "overloaded_error" else "api_error"
        await self._typed("error", error={"type": kind, "message": error.get("message")})

    async def _block(self, start: dict, deltas: list[dict]) -> None:
        index = self.block
        self.block += 1
        await self._typed("content_block_start", index=index, content_block=start)
        for delta in deltas:
            await self._pause()
            await self._typed("content_block_delta", index=index, delta=delta)
        await self._typed("content_block_stop", index=index)

    async def _write_body(self, request: dict) -> None:
        b = self.b
        usage = _usage(request, b)
        message = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": usage["prompt_tokens"], "output_tokens": 1},
        }
        await self._typed("message_start", message=message)
        await self._typed("ping")
        if b.reasoning:
            deltas = [{"type": "thinking_delta", "thinking": piece} for piece in b.reasoning]
            deltas.append({"type": "signature_delta", "signature": "fake-signature"})
            await self._block({"type": "thinking", "thinking": "", "signature": ""}, deltas)
        if b.redacted_thinking:
            await self._block({"type": "redacted_thinking", "data": b.redacted_thinking}, [])
        index = self.block
        self.block += 1
        await self._typed(
            "content_block_start", index=index, content_block={"type": "text", "text": ""}
        )
        tokens = b.token_list()
        for i, token in enumerate(tokens):
            if await self._checkpoint(i):
                return
            if i:
                await self._pause()
            delta = {"type": "text_delta", "text": token}
            await self._typed("content_block_delta", index=index, delta=delta)
            self._count_token()
        if await self._checkpoint(len(tokens)):
            return
        await self._typed("content_block_stop", index=index)
        for i, call in enumerate(b.tool_calls):
            arguments = self._arguments(call)
            start = {
                "type": "tool_use",
                "id": call.get("id") or f"toolu_fake{self.rec.index}_{i}",
                "name": call["name"],
                "input": {},
            }
            pieces = [
                {"type": "input_json_delta", "partial_json": arguments[at : at + 7]}
                for at in range(0, len(arguments), 7)
            ]
            await self._pause()
            await self._block(start, pieces)
        await self._pause()
        reason = b.resolved_finish_reason()
        delta = {"stop_reason": self.STOP.get(reason, reason), "stop_sequence": None}
        counts = {"output_tokens": usage["completion_tokens"]} if b.usage else {"output_tokens": 0}
        await self._typed("message_delta", delta=delta, usage=counts)
        if not b.no_done:
            await self._typed("message_stop")


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _thinking_problem(request: dict) -> str | None:
    """Anthropic's rule for extended thinking with tools: the assistant turn that called them
    must come back starting with its thinking block, signature included (else a 400)."""
    thinking = request.get("thinking")
    if not isinstance(thinking, dict) or thinking.get("type") != "enabled":
        return None
    turns = [m for m in request.get("messages") or [] if isinstance(m, dict)]
    final = turns[-1].get("content") if turns else None
    if (
        not isinstance(final, list)
        or not final
        or not all(isinstance(b, dict) and b.get("type") == "tool_result" for b in final)
    ):
        return None  # not a tool loop's results: the earlier thinking may be left out
    last = next((m for m in reversed(turns) if m.get("role") == "assistant"), None)
    content = last.get("content") if last else None
    if not isinstance(content, list) or not any(
        isinstance(b, dict) and b.get("type") == "tool_use" for b in content
    ):
        return None
    first = content[0] if isinstance(content[0], dict) else {}
    if first.get("type") in ("thinking", "redacted_thinking") and (
        first.get("signature") or first.get("data")
    ):
        return None
    index = turns.index(last)
    return (
        f"messages.{index}.content.0.type: Expected `thinking` or `redacted_thinking`, but "
        f"found `{first.get('type')}`. When `thinking` is enabled, a final `assistant` message "
        "must start with a thinking block (preceeding the lastmost set of `tool_use` and "
        "`tool_result` blocks)."
    )


async def _flush(writer: asyncio.StreamWriter) -> None:
    """Wait until asyncio's own buffer is empty, so an abort() cannot discard sent tokens."""
    await writer.drain()
    for _ in range(200):
        if writer.transport.get_write_buffer_size() == 0:
            return
        await asyncio.sleep(0.005)


async def _client_left(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Wait `seconds`; True as soon as the client closes the connection instead."""
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            if not await asyncio.wait_for(reader.read(65536), remaining):
                return True
        except TimeoutError:
            return False
    return False


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    method, path, _version = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return method, path, headers


async def _send_json(
    writer: asyncio.StreamWriter,
    status: int,
    body: dict | str,
    extra: dict[str, str] | None = None,
    *,
    keep_alive: bool = True,
) -> None:
    if isinstance(body, str):
        data, ctype = body.encode(), "text/plain; charset=utf-8"
    else:
        try:
            data = json.dumps(body, ensure_ascii=False).encode()
        except UnicodeEncodeError:  # a lone surrogate: sent as its JSON escape, "\ud800"
            data = json.dumps(body).encode()
        ctype = "application/json"
    headers = {
        "Content-Type": ctype,
        "Content-Length": str(len(data)),
        "Connection": "keep-alive" if keep_alive else "close",
        **(extra or {}),
    }
    reason = _REASONS.get(status, "Status")
    lines = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    writer.write("\r\n".join(lines).encode() + data)
    await writer.drain()


def _key_from(headers: dict[str, str]) -> str:
    if "x-api-key" in headers:  # Messages
        return headers["x-api-key"]
    value = headers.get("authorization", "")
    return value.split(" ", 1)[1] if " " in value else value


def _error_body(b: Behaviour, headers: dict[str, str], fmt: str = "chat") -> dict | str:
    if b.error_body is not None and not b.echo_key_in_error:
        return b.error_body
    kind, code = _ERROR_TYPES.get(b.status, ("server_error", None))
    message = f"Fake upstream error {b.status}"
    if isinstance(b.error_body, dict):
        message = str((b.error_body.get("error") or {}).get("message") or message)
    if b.echo_key_in_error:
        message = f"Incorrect API key provided: {_key_from(headers)}. {message}"
    if fmt == "messages":  # {"type": "error", "error": {"type", "message"}}
        return {"type": "error", "error": {"type": kind, "message": message}}
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _logprobs(token: str) -> dict:
    entry = {"token": token, "logprob": -0.25, "bytes": list(token.encode())}
    alt = {"token": token.upper(), "logprob": -1.5, "bytes": list(token.upper().encode())}
    return {"content": [{**entry, "top_logprobs": [entry, alt]}], "refusal": None}


def _prompt_words(request: dict) -> int:
    """One token per word of the prompt, whatever the format calls its parts."""
    turns = request.get("messages") or request.get("input") or []
    if isinstance(turns, str):
        turns = [{"content": turns}]
    words = sum(len(str(m.get("content", "")).split()) for m in turns if isinstance(m, dict))
    for name in ("instructions", "system"):
        words += len(str(request.get(name) or "").split())
    return words


def _usage(request: dict, b: Behaviour) -> dict:
    prompt = _prompt_words(request)
    completion = len(b.token_list()) + len(b.reasoning)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _completion(b: Behaviour, request: dict) -> dict:
    """A non-streamed chat.completion for requests without stream: true."""
    message: dict[str, Any] = {"role": "assistant", "content": b.text}
    if b.reasoning:
        message[b.reasoning_key] = "".join(b.reasoning)
    if b.tool_calls:
        message["tool_calls"] = [
            {
                "id": call.get("id") or f"call_fake_{i}",
                "type": "function",
                "function": {
                    "name": call["name"],
                    "arguments": call.get("arguments")
                    if isinstance(call.get("arguments"), str)
                    else json.dumps(call.get("arguments", {})),
                },
            }
            for i, call in enumerate(b.tool_calls)
        ]
    choice: dict[str, Any] = {
        "index": 0,
        "message": message,
        "finish_reason": b.resolved_finish_reason(),
    }
    if request.get("logprobs") or b.logprobs:
        choice["logprobs"] = {"content": [_logprobs(t)["content"][0] for t in b.token_list()]}
    body: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": str(request.get("model") or DEFAULT_MODEL),
        "choices": [choice],
    }
    if b.usage:
        body["usage"] = _usage(request, b)
    return body


def _response_object(b: Behaviour, request: dict) -> dict:
    """A non-streamed Responses answer: a Response object with its output items."""
    output: list[dict] = []
    if b.reasoning:
        text = "".join(b.reasoning)
        output.append(
            {
                "type": "reasoning",
                "id": "rs_fake",
                "summary": [],
                "content": [{"type": "reasoning_text", "text": text}],
            }
        )
    part = {"type": "output_text", "text": b.text, "annotations": []}
    output.append(
        {
            "type": "message",
            "id": "msg_fake",
            "role": "assistant",
            "status": "completed",
            "content": [part],
        }
    )
    for i, call in enumerate(b.tool_calls):
        arguments = call.get("arguments", "")
        output.append(
            {
                "type": "function_call",
                "id": f"fc_fake_{i}",
                "call_id": call.get("id") or f"call_fake_{i}",
                "name": call["name"],
                "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
                "status": "completed",
            }
        )
    usage = _usage(request, b)
    return {
        "id": "resp_fake",
        "object": "response",
        "created_at": int(time.time()),
        "model": str(request.get("model") or DEFAULT_MODEL),
        "status": "completed",
        "output": output,
        "usage": {
            "input_tokens": usage["prompt_tokens"],
            "output_tokens": usage["completion_tokens"],
            "total_tokens": usage["total_tokens"],
        },
    }


def _message(b: Behaviour, request: dict) -> dict:
    """A non-streamed Messages answer: a Message with its content blocks."""
    content: list[dict] = []
    if b.reasoning:
        content.append({"type": "thinking", "thinking": "".join(b.reasoning), "signature": "x"})
    if b.redacted_thinking:
        content.append({"type": "redacted_thinking", "data": b.redacted_thinking})
    content.append({"type": "text", "text": b.text})
    for i, call in enumerate(b.tool_calls):
        arguments = call.get("arguments") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or f"toolu_fake_{i}",
                "name": call["name"],
                "input": json.loads(arguments) if isinstance(arguments, str) else arguments,
            }
        )
    usage = _usage(request, b)
    stop = _MessagesWriter.STOP.get(b.resolved_finish_reason(), b.resolved_finish_reason())
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": str(request.get("model") or DEFAULT_MODEL),
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {
            "input_tokens": usage["prompt_tokens"],
            "output_tokens": usage["completion_tokens"],
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake OpenAI-compatible upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--tokens", type=int, default=50, help="content tokens per reply")
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between tokens")
    parser.add_argument("--reasoning", type=int, default=0, help="reasoning pieces per reply")
    args = parser.parse_args(argv)
    upstream = FakeUpstream(args.host, args.port)
    upstream.default = Behaviour(
        n_tokens=args.tokens,
        interval=args.interval,
        reasoning=[f"thought{i} " for i in range(args.reasoning)],
    )
    upstream.start()
    print(f"fake upstream serving on {upstream.base_url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        upstream.stop()


if __name__ == "__main__":
    main()

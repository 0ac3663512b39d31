"""Server-sent events: the WHATWG event-stream format, decoded incrementally from raw bytes.

Our own rather than httpx-sse: providers and proxies send lone-CR line endings (also split
across reads) and end streams without the final blank line, and both must still decode. Pure
Python and knows nothing of Chat Completions, so its rules are tested on bytes alone.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["SSEDecoder", "SSEEvent"]


@dataclass(frozen=True, slots=True)
class SSEEvent:
    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None


_EOL = re.compile(r"\r\n|\r|\n")


class SSEDecoder:
    """Incremental WHATWG event-stream decoder fed with raw bytes.

    Handles LF, CRLF and lone CR line endings (also a CRLF split across two feeds), UTF-8
    characters split across feeds, comments, multi-line data and the event/id/retry fields.

    Deliberate deviation: the spec (and the OpenAI SDK) drop a final event that lacks its blank
    line at EOF; `flush()` dispatches it instead. Losing the last chunk (often finish_reason or
    usage) to a sloppy proxy is worse than acting on it — a truncated JSON payload fails to parse
    and becomes a StreamError anyway.
    """

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""  # text after the last line ending
        self._skip_lf = False  # previous feed ended with CR: a leading LF belongs to it
        self._started = False
        self._data: list[str] = []
        self._event = ""
        self._last_id: str | None = None  # persists across events, per spec
        self._retry: int | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        return self._process(self._utf8.decode(chunk))

    def flush(self) -> list[SSEEvent]:
        """End of stream: treat leftover text as a last line and dispatch a pending event."""
        events = self._process(self._utf8.decode(b"", final=True))
        if self._buffer:
            events.extend(self._line(self._buffer))
            self._buffer = ""
        events.extend(self._line(""))
        return events

    def _process(self, text: str) -> list[SSEEvent]:
        if not text:
            return []  # keep _skip_lf: the decoder may be holding half a character
        if not self._started:
            self._started = True
            text = text.removeprefix("\ufeff")
        if self._skip_lf:
            self._skip_lf = False
            text = text.removeprefix("\n")
        buffer = self._buffer + text
        events: list[SSEEvent] = []
        start = 0
        for match in _EOL.finditer(buffer):
            events.extend(self._line(buffer[start : match.start()]))
            start = match.end()
        # A CR at the very end may be the first half of a CRLF split across feeds.
        self._skip_lf = start == len(buffer) and buffer.endswith("\r")
        self._buffer = buffer[start:]
        return events

    def _line(self, line: str) -> Iterator[SSEEvent]:
        if not line:
            yield from self._dispatch()
            return
        if line.startswith(":"):
            return  # comment / keep-alive
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._last_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self._retry = int(value)

    def _dispatch(self) -> Iterator[SSEEvent]:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if data:  # per spec an empty data buffer dispatches nothing
            yield SSEEvent("\n".join(data), event or "message", self._last_id, self._retry)

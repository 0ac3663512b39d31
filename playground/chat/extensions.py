"""Where apps built on chat plug into a send and the conversation page without chat importing
them (DESIGN.md: the arrows point one way). They connect receivers in AppConfig.ready().

- `preparing_send(conversation, user, data)`: before a send from the message box is checked,
  in a database thread, only for someone who may run. A receiver may replace "text" and
  "system_prompt" in `data` (the socket message, a dict) or raise TurnError, whose message is
  shown and nothing is sent. It returns the messages it wrote into the conversation before
  the turn (a prompt's example turns), or None: every watcher is shown them.
- `turn_written(conversation, user, turn, data)`: after that send's rows are saved and its
  run has started, in a database thread: record what the reply came from. A failing receiver
  is logged; the reply goes on.
- `reply_repeated(original, reply)`: a Re-run made `reply` from `original`'s request, inside
  the re-run's transaction: record on the new reply what the original came from (so a
  History filter by it finds re-runs too). A failing receiver refuses the re-run.
- `page_panels(request, conversation, can_run)`: each receiver returns HTML (safe, rendered
  from a template) drawn above the message box, or "".

All are sent with sender=Conversation. preparing_send and turn_written are sent only for a send
that carries (not empty) one of the socket-message fields in `send_fields`, which the app adds
to with its receivers (connect_send): a plain send takes no trip to a database thread for them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.dispatch import Signal
from django.utils.safestring import SafeString, mark_safe

preparing_send = Signal()
turn_written = Signal()
reply_repeated = Signal()
page_panels = Signal()
# The socket-message fields that preparing_send's and turn_written's receivers act on.
send_fields: set[str] = set()


def connect_send(prepare: Any, record: Any, *, fields: Iterable[str], sender: Any) -> None:
    """Connect a receiver of preparing_send and one of turn_written (either may be None) for
    the sends that carry one of `fields`."""
    send_fields.update(fields)
    if prepare is not None:
        preparing_send.connect(prepare, sender=sender)
    if record is not None:
        turn_written.connect(record, sender=sender)


def concerns_send(data: dict[str, Any]) -> bool:
    """Whether a send's socket message is one for preparing_send and turn_written."""
    return any(data.get(name) not in (None, "") for name in send_fields)


def panels_html(request, conversation, can_run: bool) -> SafeString:
    from playground.chat.models import Conversation

    parts = [
        str(html)
        for _, html in page_panels.send(
            Conversation, request=request, conversation=conversation, can_run=can_run
        )
        if html
    ]
    return mark_safe("".join(parts))  # each part is a rendered template, escaped there

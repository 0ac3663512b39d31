"""What the databases cannot store, named once for every place that meets it.

PostgreSQL keeps no NUL in text or jsonb (SQLite does). A lone UTF-16 surrogate, which a JSON
escape such as "\\ud800" spells, no UTF-8 holds: text columns on SQLite and PostgreSQL, jsonb,
an HTML page and a WebSocket frame all refuse it. A str read from JSON holds a valid pair as one
character, so any surrogate in it is a lone one.

A model's reply has them replaced (chat/runs.py: the reply is kept, and it is not the user's to
fix); what a user sends is refused with unstorable()'s words, like any other bad value.
"""

from __future__ import annotations

import re
from typing import Any

UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def unstorable(value: Any) -> str | None:
    """What in `value` (text, or JSON: keys too) cannot be stored, as an error names it:
    "a NUL character (\\u0000)" or "a lone surrogate (\\ud800)"; None when nothing."""
    pending = [value]
    while pending:  # not recursive: JSON may be nested as deep as its parser allows
        item = pending.pop()
        if isinstance(item, str):
            found = UNSTORABLE.search(item)
            if found is not None:
                if found[0] == "\x00":
                    return "a NUL character (\\u0000)"
                return f"a lone surrogate (\\u{ord(found[0]):04x})"
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return None


def refusal(subject: str, value: Any) -> str | None:
    """The words refusing `value`, a field read straight from a request (no form field, which
    would refuse a NUL itself): "The title holds a NUL character (\\u0000), which cannot be
    stored." for subject "The title"; None when it can be stored."""
    what = unstorable(value)
    return None if what is None else f"{subject} holds {what}, which cannot be stored."


def sendable(text: str) -> str:
    """`text` with each lone surrogate written as its escape ("\\ud800"), for words that quote
    what a client sent (a hand-made field name in an error): a WebSocket frame or a page is
    UTF-8, which holds none, so the words could not be sent at all."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def replaced(text: str) -> str:
    """`text` with each NUL and lone surrogate shown as U+FFFD: for words a server sent that
    are kept or shown as they are (an endpoint's refusal text), not the user's to fix."""
    return UNSTORABLE.sub("\ufffd", text)

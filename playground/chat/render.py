"""Turn untrusted model output into HTML that is safe to put in a page.

Two layers: markdown-it never emits raw HTML from the source (``html=False``), and nh3 then
enforces an allow-list on whatever markdown-it produced, so a parser bug or a future option
change cannot smuggle scripts, event handlers or off-origin resources into the page.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache

import nh3
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore

ALLOWED_TAGS: frozenset[str] = frozenset(
    {
        "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6",
        "strong", "em", "del", "s", "code", "pre", "blockquote",
        "ul", "ol", "li", "a",
        "table", "thead", "tbody", "tr", "th", "td",
    }
)  # fmt: skip
# No img/svg/iframe/style/form: an image in model text would make the reader's browser
# contact an origin the model (or a prompt injection) chose.
URL_SCHEMES: frozenset[str] = frozenset({"http", "https", "mailto"})
LINK_REL = "noopener noreferrer nofollow"
_ALIGNMENTS = {"left", "center", "right"}
_CODE_CLASS = re.compile(r"language-[\w+-]+")
_ALIGN_STYLE = re.compile(r"text-align:(left|center|right)")


def _style_to_align(state: StateCore) -> None:
    # markdown-it writes table alignment as inline style; an ``align`` attribute carries the
    # same meaning and lets the sanitizer forbid ``style`` outright.
    for token in state.tokens:
        if token.type not in ("th_open", "td_open"):
            continue
        style = token.attrs.pop("style", None)
        match = _ALIGN_STYLE.fullmatch(str(style or ""))
        if match:
            token.attrs["align"] = match.group(1)


@lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "breaks": True})
    md.enable(["table", "strikethrough"])
    # Rendered as a plain link instead: the reader decides whether to fetch the resource.
    md.disable("image")
    md.core.ruler.push("style_to_align", _style_to_align)
    return md


def _filter_attribute(tag: str, attr: str, value: str) -> str | None:
    if tag == "code" and attr == "class":
        return value if _CODE_CLASS.fullmatch(value) else None
    return value


@lru_cache(maxsize=1)
def _cleaner() -> nh3.Cleaner:
    return nh3.Cleaner(
        tags=set(ALLOWED_TAGS),
        clean_content_tags={"script", "style"},
        attributes={"a": {"href", "title"}, "code": {"class"}},
        tag_attribute_values={"th": {"align": _ALIGNMENTS}, "td": {"align": _ALIGNMENTS}},
        attribute_filter=_filter_attribute,
        url_schemes=set(URL_SCHEMES),
        # Relative links would point into this app (e.g. a state-changing GET) on the
        # reader's session; model output has no business linking there.
        url_relative="deny",
        link_rel=LINK_REL,
        strip_comments=True,
    )


def render_markdown(text: str) -> SafeString:
    """Render model output as sanitized HTML, ready for a template without ``|safe``."""
    html = _markdown().render(text)
    return mark_safe(_cleaner().clean(html))  # sanitized by nh3 just above


# Longer replies are drawn as plain Markdown: indenting and colouring them costs more than a
# reader gains, and this runs on every view of the transcript.
MAX_JSON_CHARS = 100_000
_JSON_TOKEN = re.compile(
    r"""(?P<string>"(?:[^"\\]|\\.)*")"""
    r"|(?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)"
    r"|(?P<literal>true|false|null|NaN|-?Infinity)"
    r"|(?P<punct>[{}\[\],:])"
    r"|(?P<space>\s+)",
)
_CLOSING = {"{": "}", "[": "]"}


def highlight_json(text: str) -> SafeString:
    """A reply that is a JSON object or array, indented, its keys, strings, numbers and
    literals in spans of their own; "" when it is not, so the caller draws Markdown.

    Done here rather than with a highlighting library: JSON has a handful of token kinds, and
    each token is escaped before it is wrapped, so nothing in a reply becomes markup. The
    reply's own tokens are re-indented, never re-encoded: 2.5e3 stays 2.5e3. Colours come
    from classes in app.css, as the page's CSP allows no inline style."""
    if len(text) > MAX_JSON_CHARS:
        return SafeString("")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        # Not JSON, an integer too long for Python, or nested deeper than it can follow.
        return SafeString("")
    if not isinstance(value, dict | list):
        return SafeString("")  # a bare string or number reads as well as text
    tokens = [t for t in _JSON_TOKEN.finditer(text.strip()) if t.lastgroup != "space"]
    out: list[str] = []
    depth = 0
    for i, token in enumerate(tokens):
        kind, raw = token.lastgroup, token[0]
        following = tokens[i + 1][0] if i + 1 < len(tokens) else ""
        if kind == "string":
            css = "j-key" if following == ":" else "j-str"
            out.append(f'<span class="{css}">{escape(raw)}</span>')
        elif kind in ("number", "literal"):
            out.append(f'<span class="j-{kind[:3]}">{escape(raw)}</span>')
        elif raw in _CLOSING:
            empty = following == _CLOSING[raw]
            depth += 0 if empty else 1
            out.append(raw if empty else raw + "\n" + "  " * depth)
        elif raw in "}]":
            opened = tokens[i - 1][0] if i else ""
            if _CLOSING.get(opened) == raw:
                out.append(raw)
            else:
                depth -= 1
                out.append("\n" + "  " * depth + raw)
        elif raw == ",":
            out.append(",\n" + "  " * depth)
        else:
            out.append(": ")
    return mark_safe(f'<pre class="json"><code>{"".join(out)}</code></pre>')  # escaped above

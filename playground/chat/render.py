"""Turn untrusted model output into HTML that is safe to put in a page.

Two layers: markdown-it never emits raw HTML from the source (``html=False``), and nh3 then
enforces an allow-list on whatever markdown-it produced, so a parser bug or a future option
change cannot smuggle scripts, event handlers or off-origin resources into the page.
"""

from __future__ import annotations

import re
from functools import lru_cache

import nh3
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

"""Behaviour of the model-output renderer, with XSS invariants checked by parsing the HTML."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

import pytest
from django.utils.safestring import SafeString

from playground.chat.render import ALLOWED_TAGS, render_markdown

SAFE_SCHEMES = {"http", "https", "mailto"}
URL_ATTRIBUTES = {"href", "src", "action", "formaction", "xlink:href", "background", "poster"}
_STRIP = re.compile(r"[\x00-\x20\x7f]+")


@dataclass
class Element:
    tag: str
    attrs: dict[str, str | None]


@dataclass
class Collector(HTMLParser):
    """Records every start tag with its attributes, as a browser's tokenizer would see them."""

    elements: list[Element] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(convert_charrefs=True)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append(Element(tag, dict(attrs)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)


def parse(html: str) -> list[Element]:
    collector = Collector()
    collector.feed(html)
    collector.close()
    return collector.elements


def tags(html: str) -> list[str]:
    return [element.tag for element in parse(html)]


def url_scheme(value: str) -> str | None:
    # Browsers drop whitespace/control characters before reading the scheme, so do the same.
    cleaned = _STRIP.sub("", value).lower()
    match = re.match(r"([a-z][a-z0-9+.-]*):", cleaned)
    return match.group(1) if match else None


def assert_safe(html: str) -> None:
    for element in parse(html):
        assert element.tag in ALLOWED_TAGS, f"disallowed tag <{element.tag}> in {html!r}"
        for name, value in element.attrs.items():
            assert not name.startswith("on"), f"event handler {name} in {html!r}"
            assert name != "style", f"style attribute in {html!r}"
            if name in URL_ATTRIBUTES:
                assert value is not None
                assert url_scheme(value) in SAFE_SCHEMES, f"unsafe {name}={value!r}"


def hrefs(html: str) -> list[str | None]:
    return [e.attrs.get("href") for e in parse(html) if e.tag == "a"]


# --- ordinary markdown -------------------------------------------------------------------


def test_returns_safe_string() -> None:
    assert isinstance(render_markdown("hi"), SafeString)


def test_headings_lists_and_emphasis() -> None:
    html = render_markdown(
        "# Title\n\n## Sub\n\n- one\n- two\n\n1. first\n\n*em* **strong** ~~gone~~"
    )
    assert tags(html) == ["h1", "h2", "ul", "li", "li", "ol", "li", "p", "em", "strong", "s"]
    assert "<em>em</em>" in html
    assert "<strong>strong</strong>" in html


def test_single_newline_is_a_line_break() -> None:
    assert "<br>" in render_markdown("line one\nline two")


def test_blockquote_and_rule() -> None:
    assert tags(render_markdown("> quoted\n\n---")) == ["blockquote", "p", "hr"]


def test_table_with_alignment_uses_align_not_style() -> None:
    html = render_markdown("| a | b | c |\n|:--|--:|:-:|\n| 1 | 2 | 3 |")
    cells = [e for e in parse(html) if e.tag in ("th", "td")]
    assert [c.attrs.get("align") for c in cells] == ["left", "right", "center"] * 2
    assert all("style" not in c.attrs for c in cells)
    assert {"table", "thead", "tbody", "tr"} <= set(tags(html))


def test_fenced_code_has_language_class_and_escaped_content() -> None:
    html = render_markdown("```python\nprint('<b>hi</b>')\n```")
    assert html.startswith('<pre><code class="language-python">')
    assert "&lt;b&gt;hi&lt;/b&gt;" in html
    assert "b" not in tags(html)


def test_code_class_with_odd_info_string_is_dropped() -> None:
    html = render_markdown('```py"onmouseover=alert(1)\nx\n```')
    code = next(e for e in parse(html) if e.tag == "code")
    assert "class" not in code.attrs
    assert_safe(html)


def test_inline_code_is_escaped() -> None:
    html = render_markdown("use `<script>` carefully")
    assert "<code>&lt;script&gt;</code>" in html
    assert "script" not in tags(html)


def test_http_link_gets_rel_and_keeps_title() -> None:
    html = render_markdown('[docs](https://example.com/a?b=1 "Docs")')
    (link,) = [e for e in parse(html) if e.tag == "a"]
    assert link.attrs["href"] == "https://example.com/a?b=1"
    assert link.attrs["title"] == "Docs"
    assert set((link.attrs["rel"] or "").split()) == {"noopener", "noreferrer", "nofollow"}


def test_mailto_and_autolinks_are_kept() -> None:
    html = render_markdown("[mail](mailto:a@example.com) <https://example.org>")
    assert hrefs(html) == ["mailto:a@example.com", "https://example.org"]


def test_relative_links_lose_their_href() -> None:
    # Links into the app itself would act on the reader's session.
    assert hrefs(render_markdown("[out](/accounts/logout/) [p](//evil.example/x)")) == [None, None]


# --- hostile input -----------------------------------------------------------------------


def test_script_tag_is_text() -> None:
    html = render_markdown("<script>alert(1)</script>")
    assert "script" not in tags(html)
    assert "&lt;script&gt;" in html


def test_img_onerror_is_text() -> None:
    html = render_markdown("<img src=x onerror=alert(1)>")
    assert "img" not in tags(html)
    assert all("onerror" not in e.attrs for e in parse(html))
    assert_safe(html)


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        "data:text/html;base64,PHNjcmlwdD4=",
        "vbscript:msgbox(1)",
        "jav&#x09;ascript:alert(1)",
        "java%0ascript:alert(1)",
        "&#106;avascript:alert(1)",
        "javascript&colon;alert(1)",
        "<javascript:alert(1)>",
        "file:///etc/passwd",
    ],
)
def test_dangerous_link_schemes_are_dropped(url: str) -> None:
    html = render_markdown(f"[x]({url})")
    for href in hrefs(html):
        assert href is None or url_scheme(href) in SAFE_SCHEMES, href
    assert_safe(html)


def test_markdown_image_becomes_a_plain_link() -> None:
    html = render_markdown("![a](http://evil.example/x.png)")
    assert "img" not in tags(html)
    assert hrefs(html) == ["http://evil.example/x.png"]


@pytest.mark.parametrize(
    "source",
    ["<svg onload=alert(1)>", "<svg><script>alert(1)</script></svg>"],
)
def test_inline_svg_is_text(source: str) -> None:
    html = render_markdown(source)
    assert not {"svg", "script"} & set(tags(html))
    assert_safe(html)


def test_raw_anchor_with_javascript_is_text() -> None:
    html = render_markdown('<a href="javascript:alert(1)">x</a>')
    assert "a" not in tags(html)
    assert "&lt;a href=" in html


def test_nested_script_is_text() -> None:
    html = render_markdown("<scr<script>ipt>alert(1)</scr</script>ipt>")
    assert "script" not in tags(html)
    assert_safe(html)


XSS_PAYLOADS = [
    "<script>alert(1)</script>",
    "<SCRIPT SRC=http://xss.example/xss.js></SCRIPT>",
    "<IMG SRC=\"javascript:alert('XSS');\">",
    "<IMG SRC=javascript:alert('XSS')>",
    "<IMG SRC=`javascript:alert(\"RSnake says, 'XSS'\")`>",
    '<IMG """><SCRIPT>alert("XSS")</SCRIPT>">',
    "<IMG SRC=&#106;&#97;&#118;&#97;&#115;&#99;&#114;&#105;&#112;&#116;&#58;&#97;&#108;&#101;>",
    "<IMG SRC=\"jav\tascript:alert('XSS');\">",
    "<BODY ONLOAD=alert('XSS')>",
    "<iframe src=javascript:alert(1)></iframe>",
    "<svg/onload=alert(1)>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    '<a href="javascript:alert(1)">click</a>',
    "<div style=\"background-image: url(javascript:alert('XSS'))\">",
    "<form action=javascript:alert(1)><input type=submit></form>",
    '<object data="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg=="></object>',
    "<details open ontoggle=alert(1)>",
    '<META HTTP-EQUIV="refresh" CONTENT="0;url=javascript:alert(1);">',
    '<!--<img src="--><img src=x onerror=alert(1)//">',
    "[a](javascript:prompt(document.cookie))",
    "[a](  javascript:alert(1)  )",
    '[a](https://ok.example "title\\" onmouseover=\\"alert(1)")',
    "![x](javascript:alert(1))",
    '<http://a.example/"onmouseover="alert(1)>',
    "```\n</code></pre><script>alert(1)</script>\n```",
    "| a |\n|---|\n| <img src=x onerror=alert(1)> |",
]


@pytest.mark.parametrize("payload", XSS_PAYLOADS)
def test_classic_xss_payloads_stay_inert(payload: str) -> None:
    html = render_markdown(payload)
    assert_safe(html)
    assert not {"script", "img", "svg", "iframe", "style"} & set(tags(html))

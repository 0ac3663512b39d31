"""Find elements in a page or a socket frame by tag and attributes, parsed with Django's own test
parser: a test that is not about markup then survives attribute order, quoting, whitespace and an
added class. Tests about escaping keep checking the raw bytes instead."""

from __future__ import annotations

from django.test.html import Element, parse_html


def _wanted(name: str) -> str:
    # Python names for HTML attributes: class_ -> class, hx_swap_oob -> hx-swap-oob.
    return name.rstrip("_").replace("_", "-")


def _matches(element: Element, tag: str | None, attrs: dict[str, str | bool]) -> bool:
    if tag is not None and element.name != tag:
        return False
    have = dict(element.attributes)
    for name, value in attrs.items():
        if value is True:
            if name not in have:
                return False
        elif value is False:
            if name in have:
                return False
        elif name == "class":
            # Every asked-for class must be there; others may be added.
            if not set(value.split()) <= set((have.get("class") or "").split()):
                return False
        elif have.get(name) != value:
            return False
    return True


def _walk(element: Element):
    for child in element.children:
        if isinstance(child, Element):
            yield child
            yield from _walk(child)


Markup = str | bytes | Element


def parse(markup: Markup) -> Element:
    if isinstance(markup, Element):
        return markup
    if isinstance(markup, bytes):
        markup = markup.decode()
    return parse_html(markup)


def find_all(markup: Markup, tag: str | None = None, /, **attrs: str | bool) -> list[Element]:
    """Every element with this tag (any, if None) carrying at least these attributes, searched
    in the markup or below an element already found. True means "present", False "absent";
    class matches as a set of classes, so `class_="tok"` finds `class="tok p7"`."""
    root = parse(markup)
    wanted = {_wanted(name): value for name, value in attrs.items()}
    candidates = [root, *_walk(root)] if root.name else list(_walk(root))
    return [e for e in candidates if _matches(e, tag, wanted)]


def find(markup: Markup, tag: str | None = None, /, **attrs: str | bool) -> Element:
    """The one element that matches; fails the test, naming what was looked for, otherwise."""
    found = find_all(markup, tag, **attrs)
    assert len(found) == 1, f"expected one <{tag or '*'} {attrs}>, found {len(found)}"
    return found[0]


def has(markup: Markup, tag: str | None = None, /, **attrs: str | bool) -> bool:
    return bool(find_all(markup, tag, **attrs))


def text(element: Element) -> str:
    """The element's text, whitespace collapsed, entities decoded."""
    parts: list[str] = []

    def collect(node: Element) -> None:
        for child in node.children:
            if isinstance(child, str):
                parts.append(child)
            else:
                collect(child)

    collect(element)
    return " ".join(" ".join(parts).split())


def attr(element: Element, name: str) -> str | None:
    return dict(element.attributes).get(name)

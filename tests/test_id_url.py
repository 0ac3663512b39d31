"""{% id_url %} draws the very URLs {% url %} does, faster."""

from __future__ import annotations

import pytest
from django.template import engines
from django.urls import NoReverseMatch, reverse, set_script_prefix

from playground.chat.templatetags import chat


def draw(source: str, **context) -> str:
    return engines["django"].from_string("{% load chat %}" + source).render(context)


@pytest.mark.parametrize(
    ("name", "ids"),
    [
        ("conversation", [7]),
        ("conversation_rename", [0]),
        ("conversation_delete", [123456789]),
        ("message_code", [42]),
        ("review:share_new", [3]),
        ("review:reply", [99]),
        ("review:diff", []),
        ("attachment_file", [5]),
        ("preset_load", [4, 11]),
    ],
)
def test_the_same_url_as_reverse(name, ids):
    chat._pieces.cache_clear()
    args = " ".join(f"i{n}" for n in range(len(ids)))
    context = {f"i{n}": i for n, i in enumerate(ids)}
    expected = reverse(name, args=ids)
    assert draw(f"{{% id_url '{name}' {args} %}}", **context) == expected
    assert draw(f"{{% id_url '{name}' {args} %}}", **context) == expected  # from the pieces
    assert draw(f"{{% url '{name}' {args} %}}", **context) == expected
    assert chat._pieces(name, len(ids), "/", None) is not None


def test_under_a_script_prefix():
    set_script_prefix("/play/")
    try:
        assert chat.url_with_ids("message_code", [8]) == reverse("message_code", args=[8])
        assert chat.url_with_ids("message_code", [8]).startswith("/play/")
    finally:
        set_script_prefix("/")
    assert chat.url_with_ids("message_code", [8]) == "/m/8/code/"


def test_anything_but_an_id_goes_through_reverse():
    assert chat.url_with_ids("message_code", ["8"]) == reverse("message_code", args=["8"])
    with pytest.raises(NoReverseMatch):
        chat.url_with_ids("message_code", [-1])
    with pytest.raises(NoReverseMatch):
        chat.url_with_ids("message_code", [None])
    with pytest.raises(NoReverseMatch):
        draw("{% id_url 'message_code' %}")


def test_a_url_with_other_arguments_is_never_built_from_pieces():
    assert chat._pieces("message_code", 2, "/", None) is None  # it takes one
    assert chat._pieces("review:shared", 1, "/", None) is None  # <str:token>
    # An id given to a <str:…> route still reaches it, through reverse().
    assert chat.url_with_ids("review:shared", [5]) == reverse("review:shared", args=[5])
    assert chat._pieces("no-such-url", 1, "/", None) is None

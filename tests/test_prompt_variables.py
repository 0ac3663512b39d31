"""The {{variables}} syntax: names, escapes, no template engine, undefined values refused."""

from __future__ import annotations

import pytest

from playground.prompts.variables import UndefinedVariables, names_in, render, render_all


def test_it_fills_in_each_variable():
    assert render("Hi {{name}}, about {{ topic }}.", {"name": "Ada", "topic": "tea"}) == (
        "Hi Ada, about tea."
    )


def test_it_lists_names_once_in_order_of_first_use():
    assert names_in("{{b}} {{a}} {{ b }} {{_x1}}") == ["b", "a", "_x1"]


def test_an_escaped_brace_pair_is_literal_and_not_a_variable():
    assert names_in(r"\{{name}} and {{real}}") == ["real"]
    assert render(r"Write \{{name}} for {{real}}", {"real": "x"}) == "Write {{name}} for x"


def test_a_backslash_elsewhere_is_kept():
    assert render(r"C:\path \n {{a}}", {"a": "1"}) == r"C:\path \n 1"


@pytest.mark.parametrize(
    "text",
    [
        "{{ 1+1 }}",
        "{{a.b}}",
        "{{ name|upper }}",
        "{% if x %}y{% endif %}",
        "{{}}",
        "{{ 9lives }}",
        "a lone {{ brace",
        "{{name}",
        "{{" + "x" * 65 + "}}",
    ],
)
def test_anything_that_is_not_a_plain_name_is_left_as_text(text):
    assert names_in(text) == []
    assert render(text, {}) == text


def test_a_value_is_inserted_as_is_and_never_expanded_again():
    assert render("{{a}}", {"a": "{{b}} {% now %}", "b": "no"}) == "{{b}} {% now %}"


def test_an_undefined_variable_is_refused_naming_every_missing_one():
    with pytest.raises(UndefinedVariables) as caught:
        render_all(["{{a}} {{b}}", "{{c}} {{a}}"], {"b": "ok", "c": ""})
    assert caught.value.names == ["a", "c"]
    assert "{{a}}, {{c}}" in str(caught.value) and "nothing was sent" in str(caught.value)


def test_a_template_without_variables_needs_no_values():
    assert render("Plain {text}", {}) == "Plain {text}"

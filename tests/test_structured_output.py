"""Structured output: the schemas a user may give, and the check of each reply against them, which
must never raise and never evaluate what it was told not to."""

from __future__ import annotations

import json

import pytest
from pytest_django.asserts import assertInHTML

from playground.chat.structured import check_reply
from playground.providers import params
from playground.providers.specs import GEMMA_4_E4B
from tests.upstream import Behaviour

DEEP = "[" * 100_000


SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


def schema_format(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}


def clean_schema(schema: dict) -> dict:
    return params.clean(GEMMA_4_E4B, {"response_format": schema_format(schema)})


def test_the_schema_check_passes_and_names_the_failing_path():
    rf = {"type": "json_schema", "json_schema": {"name": "r", "schema": SCHEMA}}
    assert check_reply('{"n": 3}', rf) == {"valid": True}
    failed = check_reply('{"n": "three"}', rf)
    assert failed["valid"] is False and failed["path"] == "$.n" and "integer" in failed["message"]
    assert check_reply("not json", rf)["message"].startswith("Not JSON")
    assert check_reply("[1]", {"type": "json_object"})["valid"] is False
    assert check_reply("anything", None) is None


@pytest.mark.django_db(transaction=True)
async def test_a_structured_reply_is_checked_and_the_page_says_so(
    upstream, user, api_key, conversation, connect
):
    upstream.script(Behaviour(tokens=['{"n": ', "3}"]), Behaviour(tokens=['{"n": ', '"x"}']))
    fields = {
        "param:response_format:type": "json_schema",
        "param:response_format:schema": json.dumps(SCHEMA),
    }
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("Count", **fields)
    assert "Valid JSON" in await socket.until(lambda f: "status-complete" in f)
    assert upstream.requests[-1].body["response_format"]["json_schema"]["schema"] == SCHEMA
    await socket.send_prompt("Again", **fields)
    frame = await socket.until(lambda f: "status-complete" in f and "Does not match" in f)
    assertInHTML("<code>$.n</code>", frame)


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [
        ({"type": "string", "pattern": "^(a+)+$"}, "regular-expression keywords (pattern)"),
        (
            {"type": "object", "properties": {"n": {"type": "string", "pattern": "x"}}},
            "regular-expression keywords (pattern)",
        ),
        (
            {"type": "object", "patternProperties": {"^a": {"type": "string"}}},
            "regular-expression keywords (patternProperties)",
        ),
        ({"$ref": "https://example.com/schema.json"}, "only local references"),
        ({"allOf": [{"$ref": "other.json#/x"}]}, "only local references"),
    ],
)
def test_a_response_format_schema_with_a_regex_or_remote_ref_is_refused(schema, fragment):
    with pytest.raises(params.InvalidParams) as caught:
        clean_schema(schema)
    assert fragment in caught.value.errors["response_format"]


def test_a_property_named_pattern_and_a_local_ref_are_still_accepted():
    schema = {
        "type": "object",
        "properties": {"pattern": {"$ref": "#/$defs/word"}},
        "$defs": {"word": {"type": "string", "default": {"pattern": "not a keyword here"}}},
    }
    assert clean_schema(schema)["response_format"]["json_schema"]["schema"] == schema


def test_a_stored_schema_with_a_pattern_is_not_evaluated():
    assert check_reply('"aaaa"', schema_format({"type": "string", "pattern": "^(a+)+$"})) is None


def test_a_stored_schema_with_a_remote_ref_is_not_evaluated():
    rf = schema_format({"$ref": "https://unreachable.invalid/schema.json"})
    assert check_reply('{"n": 1}', rf) is None


def test_an_unresolvable_local_ref_is_reported_not_raised():
    rf = schema_format({"$ref": "#/$defs/missing"})
    assert check_reply('{"n": 1}', rf) == {
        "valid": False,
        "path": "$",
        "message": "The reply could not be checked.",
    }


@pytest.mark.parametrize(
    "response_format",
    [{"type": "json_object"}, schema_format({"type": "object"})],
)
def test_a_reply_nested_past_the_parsers_limit_is_reported_not_raised(response_format):
    result = check_reply(DEEP, response_format)
    assert result is not None and result["valid"] is False


def test_a_reply_with_a_number_too_long_for_python_is_reported_not_raised():
    result = check_reply("9" * 5_000, {"type": "json_object"})
    assert result == {
        "valid": False,
        "path": "$",
        "message": "Not JSON Python can read: a number is too long.",
    }


def test_a_reply_nested_past_the_validators_limit_is_reported_not_raised():
    # Parses, but validating each level against a recursive schema takes several frames.
    nested = "[" * 500 + "]" * 500
    result = check_reply(nested, schema_format({"type": "array", "items": {"$ref": "#"}}))
    assert result == {"valid": False, "path": "$", "message": "The reply could not be checked."}


@pytest.mark.django_db
def test_a_json_reply_is_drawn_as_a_highlighted_block_with_its_verdict(client, user, conversation):
    from playground.chat.models import Message
    from tests.html import find, find_all, text

    reply = '{"city":"Oslo","temp":2.5e1,"tags":["<b>cold</b>"],"ok":true,"none":null}'
    Message.objects.create(
        conversation=conversation,
        role="assistant",
        text=reply,
        schema_check={"valid": True},
        model="empiriolabs:gemma-4-e4b",
    )
    client.force_login(user)
    page = client.get(f"/c/{conversation.pk}/").content
    block = find(page, "pre", class_="json")
    assert "".join(text(block).split()) == reply  # indented, every token kept
    assert [text(s) for s in find_all(block, "span", class_="j-key")][:2] == ['"city"', '"temp"']
    assert text(find(block, "span", class_="j-num")) == "2.5e1"  # as the model wrote it
    assert {text(s) for s in find_all(block, "span", class_="j-lit")} == {"true", "null"}
    # The reply's markup is text: escaped, never an element.
    assert b"&lt;b&gt;cold&lt;/b&gt;" in page and not find_all(block, "b")
    assert "Valid JSON" in text(find(page, "p", class_="schema valid"))


@pytest.mark.django_db
def test_a_structured_reply_that_is_not_json_is_drawn_as_text(client, user, conversation):
    from playground.chat.models import Message
    from tests.html import find_all

    Message.objects.create(
        conversation=conversation,
        role="assistant",
        text="Sure! Here it is: {oops",
        schema_check={"valid": False, "path": "$", "message": "Not JSON"},
        model="empiriolabs:gemma-4-e4b",
    )
    client.force_login(user)
    page = client.get(f"/c/{conversation.pk}/").content
    assert not find_all(page, "pre", class_="json")
    assert b"Sure! Here it is" in page and b"schema invalid" in page


@pytest.mark.parametrize("text", ["[" * 5000 + "]" * 5000, "1" * 5000, '"just text"', "x" * 10])
def test_the_highlighter_declines_what_is_not_a_small_json_document(text):
    from playground.chat.render import highlight_json

    assert highlight_json(text) == ""

"""Untrusted input that must be refused or survived: schemas, replies, logprobs, keys, URLs."""

from __future__ import annotations

import pytest
from django.test import Client

from playground.accounts import crypto
from playground.accounts.models import ApiKey
from playground.chat.models import Message
from playground.chat.structured import check_reply
from playground.providers import params
from playground.providers.specs import GEMMA_4_E4B

DEEP = "[" * 100_000


def broken_encrypt(plaintext, keys=None):
    # Far from the test's own lines: the debug page shows source around every frame.
    raise RuntimeError("disk on fire")


def schema_format(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}


def clean_schema(schema: dict) -> dict:
    return params.clean(GEMMA_4_E4B, {"response_format": schema_format(schema)})


# Structured output: schemas


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


def test_deeply_nested_json_in_the_tools_box_is_a_field_error():
    with pytest.raises(params.InvalidParams) as caught:
        params.clean(GEMMA_4_E4B, {"tools": DEEP})
    assert caught.value.errors["tools"] == "tools is nested too deeply"


# Structured output: checking replies, which must never raise


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


def test_a_reply_nested_past_the_validators_limit_is_reported_not_raised():
    # Parses, but validating each level against a recursive schema takes several frames.
    nested = "[" * 500 + "]" * 500
    result = check_reply(nested, schema_format({"type": "array", "items": {"$ref": "#"}}))
    assert result == {"valid": False, "path": "$", "message": "The reply could not be checked."}


# Logprobs from the upstream


def test_out_of_range_and_non_numeric_logprobs_are_shown_without_error():
    message = Message(
        logprobs=[
            {"token": "a", "logprob": 1000},
            {"token": "b", "logprob": "x"},
            {"token": "c", "logprob": float("nan")},
        ]
    )
    tokens = message.token_view()
    assert [t["token"] for t in tokens] == ["a", "b", "c"]
    assert tokens[0]["percent"] == "100.0" and tokens[0]["bucket"] == 9
    assert tokens[1]["percent"] == tokens[2]["percent"] == "?"


def test_non_numeric_alternatives_are_shown_without_error():
    message = Message(
        logprobs=[
            {
                "token": "a",
                "logprob": -0.1,
                "top_logprobs": [{"token": "b", "logprob": 800}, {"token": "c", "logprob": None}],
            }
        ]
    )
    alternatives = message.token_view()[0]["alternatives"]
    assert [a["percent"] for a in alternatives] == ["100.0", "?"]


# API keys


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["sk-tëst-0123456789", "sk-test\x1b0123456789", "sk-test\t0123"])
def test_a_key_with_a_non_ascii_or_control_character_is_refused(client, user, key):
    client.force_login(user)
    response = client.post("/keys/", {"provider": "empiriolabs", "key": key})
    assert b"does not look like an API key" in response.content
    assert not ApiKey.objects.exists()


# The debug page


@pytest.mark.django_db
def test_credentials_in_url_settings_are_not_on_the_debug_page(settings, user, monkeypatch):
    settings.DEBUG = True
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [{"address": "redis://:hunter2-REDIS@redis.internal:6379/0"}]},
        }
    }
    settings.PLAYGROUND_ARCHIVE_URL = "postgres://ada:hunter2-PG@db.internal/archive"

    monkeypatch.setattr(crypto, "encrypt", broken_encrypt)
    client = Client(raise_request_exception=False)
    client.force_login(user)
    response = client.post("/keys/", {"provider": "empiriolabs", "key": "sk-valid-looking-key"})
    page = response.content.decode()
    assert response.status_code == 500 and "disk on fire" in page
    # The settings really are on the page, only without their passwords.
    assert "redis.internal:6379" in page and "db.internal/archive" in page
    assert "hunter2" not in page

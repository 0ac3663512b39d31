"""Every documented parameter: typed, bounded, unset when untouched, and carried from the panel
to the request body."""

from __future__ import annotations

import html
import json

import pytest
from channels.db import database_sync_to_async

from playground.accounts.models import ApiKey
from playground.chat.models import Message
from playground.providers import params
from playground.providers.specs import GEMMA_3N_E4B, GEMMA_4_E4B, Model, Param

GEMMA_4 = "empiriolabs:gemma-4-e4b"
GEMMA_3N = "aimlapi:google/gemma-3n-e4b-it"

# A value inside the documented range for every parameter of both models, as the panel would
# send it (strings from number boxes, lists from list editors), and what the body must carry.
IN_RANGE = {
    GEMMA_4_E4B: {
        "temperature": ("1.3", 1.3),
        "top_p": ("0.5", 0.5),
        "min_p": ("0.05", 0.05),
        "max_tokens": ("256", 256),
        "stop": (["END", "\\n\\n"], ["END", "\n\n"]),
        "seed": ("2147483647", 2147483647),
        "presence_penalty": ("-2", -2),
        "frequency_penalty": ("1.5", 1.5),
        "repetition_penalty": ("0.1", 0.1),
        "enable_thinking": ("false", False),
        "reasoning_effort": ("high", "high"),
        "logprobs": ("true", True),
        "top_logprobs": ("20", 20),
        "tools": (
            '[{"type": "function", "function": {"name": "get_weather", '
            '"parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]',
            [
                {
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "parameters": {
                            "type": "object",
                            "properties": {"city": {"type": "string"}},
                        },
                    },
                }
            ],
        ),
        "tool_choice": ("get_weather", {"type": "function", "function": {"name": "get_weather"}}),
        "response_format": ({"type": "json_object"}, {"type": "json_object"}),
    },
    GEMMA_3N_E4B: {
        "max_completion_tokens": ("1", 1),
        "max_tokens": ("100000", 100000),
        "temperature": ("2", 2),
        "top_p": ("0.01", 0.01),
        "seed": ("1", 1),
        "min_p": ("1", 1),
        "top_k": ("40", 40),
        "repetition_penalty": ("1.1", 1.1),
        "top_a": ("1", 1),
        "stop": (["a", "b", "c", "d"], ["a", "b", "c", "d"]),
        "logit_bias": ({"50256": "-100", "13": "5.5"}, {"50256": -100, "13": 5.5}),
    },
}

# The value just outside each documented bound.
OUTSIDE = {
    GEMMA_4_E4B: [
        ("temperature", "-0.01"),
        ("temperature", "2.01"),
        ("top_p", "1.01"),
        ("top_p", "-0.01"),
        ("min_p", "1.01"),
        ("min_p", "-0.01"),
        ("max_tokens", "0"),
        ("max_tokens", "4097"),
        ("seed", "-1"),
        ("seed", "2147483648"),
        ("presence_penalty", "-2.01"),
        ("presence_penalty", "2.01"),
        ("frequency_penalty", "-2.01"),
        ("frequency_penalty", "2.01"),
        ("repetition_penalty", "0.09"),
        ("repetition_penalty", "2.01"),
        ("top_logprobs", "-1"),
        ("top_logprobs", "21"),
        ("reasoning_effort", "extreme"),
        ("enable_thinking", "maybe"),
    ],
    GEMMA_3N_E4B: [
        ("max_completion_tokens", "0"),
        ("max_tokens", "0"),
        ("temperature", "2.01"),
        ("temperature", "-0.01"),
        ("top_p", "0.009"),
        ("top_p", "1.01"),
        ("seed", "0"),
        ("min_p", "1.01"),
        ("top_a", "1.01"),
        ("stop", ["a", "b", "c", "d", "e"]),
        ("logit_bias", {"1": "101"}),
    ],
}


def test_every_documented_parameter_has_a_spec():
    assert {p.name for p in GEMMA_4_E4B.params} >= {
        "temperature",
        "top_p",
        "min_p",
        "max_tokens",
        "stop",
        "seed",
        "enable_thinking",
        "reasoning_effort",
        "presence_penalty",
        "frequency_penalty",
        "repetition_penalty",
        "logprobs",
        "top_logprobs",
        "tools",
    }
    assert {p.name for p in GEMMA_3N_E4B.params} == {
        "max_completion_tokens",
        "max_tokens",
        "temperature",
        "top_p",
        "seed",
        "min_p",
        "top_k",
        "repetition_penalty",
        "top_a",
        "stop",
        "logit_bias",
    }


@pytest.mark.parametrize("model", [GEMMA_4_E4B, GEMMA_3N_E4B], ids=lambda m: m.id)
def test_every_parameter_is_cleaned_to_its_body_value(model: Model):
    cases = IN_RANGE[model]
    assert set(cases) == {p.name for p in model.params}, "a parameter has no round-trip case"
    cleaned = params.clean(model, {name: raw for name, (raw, _) in cases.items()})
    assert cleaned == {name: expected for name, (_, expected) in cases.items()}


@pytest.mark.parametrize(
    ("model", "name", "value"),
    [(m, n, v) for m, cases in OUTSIDE.items() for n, v in cases],
    ids=lambda x: getattr(x, "id", str(x)),
)
def test_the_value_just_outside_each_bound_is_refused(model: Model, name: str, value):
    with pytest.raises(params.InvalidParams) as caught:
        params.clean(model, {name: value})
    message = caught.value.errors[name]
    assert message.startswith(name) and len(message) < 120


def test_the_message_names_the_range_and_the_value():
    with pytest.raises(params.InvalidParams) as caught:
        params.clean(GEMMA_4_E4B, {"temperature": "2.5"})
    assert caught.value.errors == {"temperature": "temperature must be between 0 and 2 (got 2.5)"}


def test_a_whole_number_is_kept_exactly():
    # Read as a float, 2**53 + 1 would become 2**53: another seed than the one typed.
    typed = "9007199254740993"
    assert params.clean(GEMMA_3N_E4B, {"seed": typed}) == {"seed": 9007199254740993}
    assert params.clean(GEMMA_3N_E4B, {"seed": 9007199254740993}) == {"seed": 9007199254740993}
    assert params.clean(GEMMA_3N_E4B, {"seed": "12.0"}) == {"seed": 12}


def test_unset_values_are_left_out():
    assert params.clean(GEMMA_4_E4B, {"temperature": "", "stop": [], "seed": None}) == {}
    # An empty row of the list editor is not a stop string.
    assert params.clean(GEMMA_4_E4B, {"stop": ["", ""]}) == {}


def test_type_errors_are_plain():
    with pytest.raises(params.InvalidParams) as caught:
        params.clean(GEMMA_4_E4B, {"max_tokens": "1.5", "temperature": "warm", "tools": "[oops"})
    errors = caught.value.errors
    assert errors["max_tokens"] == "max_tokens must be a whole number"
    assert errors["temperature"] == "temperature must be a number"
    assert errors["tools"].startswith("tools is not valid JSON")


@pytest.mark.parametrize("token", ["²", "١٣", "-1", "1.5"])
def test_a_token_id_is_a_whole_number_in_ascii_digits(token):
    # "²".isdigit() is true: it went to the server as a token id.
    with pytest.raises(params.InvalidParams) as caught:
        params.clean(GEMMA_3N_E4B, {"logit_bias": {token: "5"}})
    assert "token ids are whole numbers" in caught.value.errors["logit_bias"]


@pytest.mark.parametrize(
    ("tools", "fragment"),
    [
        ('{"type": "function"}', "JSON array"),
        ('[{"type": "retrieval"}]', '"type": "function"'),
        ('[{"type": "function", "function": {"name": "has space"}}]', "name must be"),
        (
            '[{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]',
            "type object",
        ),
        (
            '[{"type": "function", "function": {"name": "f", "parameters": '
            '{"type": "object", "properties": 3}}}]',
            "invalid JSON schema",
        ),
        (
            '[{"type": "function", "function": {"name": "f"}}, '
            '{"type": "function", "function": {"name": "f"}}]',
            "unique",
        ),
    ],
)
def test_tool_definitions_are_checked_against_the_openai_shape(tools, fragment):
    with pytest.raises(params.InvalidParams) as caught:
        params.clean(GEMMA_4_E4B, {"tools": tools})
    assert fragment in caught.value.errors["tools"]


def test_tool_choice_needs_tools():
    with pytest.raises(params.InvalidParams) as caught:
        params.clean(GEMMA_4_E4B, {"tool_choice": "auto"})
    assert "needs tool definitions" in caught.value.errors["tool_choice"]


def test_a_json_schema_response_format_is_checked():
    schema = '{"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}'
    cleaned = params.clean(
        GEMMA_4_E4B,
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "count", "schema": schema},
            }
        },
    )
    assert cleaned["response_format"]["json_schema"]["schema"]["required"] == ["n"]
    with pytest.raises(params.InvalidParams):
        params.clean(
            GEMMA_4_E4B,
            {"response_format": {"type": "json_schema", "json_schema": {"schema": '{"type": 12}'}}},
        )


def test_switching_models_keeps_what_still_applies():
    kept = params.applicable(
        GEMMA_3N_E4B,
        {
            "temperature": 1.5,
            "max_tokens": 4096,
            "enable_thinking": False,
            "top_p": 0.005,
            "stop": ["a", "b", "c", "d", "e"],
        },
    )
    assert kept == {"temperature": 1.5, "max_tokens": 4096}


def test_the_panel_form_is_read_into_values():
    values = params.from_form(
        {
            "param:temperature": "0.4",
            "param:stop": "END",
            "param:logit_bias:token": ["13", "", "7"],
            "param:logit_bias:bias": ["-5", "", "2"],
            "param:response_format:type": "json_object",
            "text": "not a parameter",
        }
    )
    assert values == {
        "temperature": "0.4",
        "stop": ["END"],
        "logit_bias": {"13": "-5", "7": "2"},
        "response_format": {"type": "json_object", "json_schema": {"name": "", "schema": ""}},
    }


def test_a_parameter_the_model_does_not_document_is_dropped_or_refused():
    assert params.clean(GEMMA_3N_E4B, {"enable_thinking": "true"}) == {}
    with pytest.raises(params.InvalidParams):
        params.clean(GEMMA_3N_E4B, {"enable_thinking": "true"}, keep_unknown=True)


def test_a_slider_range_is_given_where_the_page_gives_none():
    top_k = next(p for p in GEMMA_3N_E4B.params if p.name == "top_k")
    assert (top_k.min, top_k.max) == (None, None)
    assert (top_k.slider_min, top_k.slider_max) == (0, 200)
    assert "No range is documented" in top_k.help
    assert isinstance(top_k, Param)


# End to end: the panel's fields through the socket to the upstream's request body


def as_form_fields(values: dict) -> dict:
    """Values as the panel's controls submit them."""
    fields = {}
    for name, value in values.items():
        if name == "logit_bias":
            fields["param:logit_bias:token"] = list(value)
            fields["param:logit_bias:bias"] = list(value.values())
        elif name == "response_format":
            fields["param:response_format:type"] = value["type"]
        else:
            fields[f"param:{name}"] = value
    return fields


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("model_key", [GEMMA_4, GEMMA_3N])
async def test_every_control_reaches_the_request_body(
    model_key, upstream, user, api_key, conversation, connect
):
    await database_sync_to_async(ApiKey.store)(
        provider="aimlapi", plaintext="aiml-key-123456", user=user
    )
    model = next(m for m in IN_RANGE if m.key == model_key)
    cases = IN_RANGE[model]
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt(
        "Hi", model=model_key, **as_form_fields({n: raw for n, (raw, _) in cases.items()})
    )
    await socket.until(lambda f: "status-" in f and "streaming" not in f)
    body = upstream.requests[-1].body
    for name, (_, expected) in cases.items():
        assert body[name] == expected, name
    # Nothing else: the untouched parameters are absent, so the provider's defaults apply.
    assert set(body) == {"model", "messages", "stream", "stream_options", *cases}


@pytest.mark.django_db(transaction=True)
async def test_unset_parameters_are_absent_from_the_body(
    upstream, user, api_key, conversation, connect
):
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt(
        "Hi",
        **{
            "param:temperature": "",
            "param:stop": ["", ""],
            "param:enable_thinking": "",
            "param:tools": "",
        },
    )
    await socket.until(lambda f: "status-complete" in f)
    assert set(upstream.requests[-1].body) == {"model", "messages", "stream", "stream_options"}


@pytest.mark.django_db(transaction=True)
async def test_an_out_of_range_value_is_refused_over_the_socket(
    upstream, user, api_key, conversation, connect
):
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("Hi", **{"param:temperature": "2.01", "param:max_tokens": "4097"})
    frame = await socket.until(lambda f: "param-error-temperature" in f)
    assert "temperature must be between 0 and 2 (got 2.01)" in frame
    assert "max_tokens must be between 1 and 4096 (got 4097)" in frame
    assert "nothing was sent" in frame
    assert upstream.requests == []
    assert await Message.objects.acount() == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("char", "named"),
    [("\x00", "a NUL character (\\u0000)"), ("\ud800", "a lone surrogate (\\ud800)")],
)
async def test_a_parameter_holding_a_nul_or_lone_surrogate_is_refused_over_the_socket(
    char, named, upstream, user, api_key, conversation, connect
):
    # Saved in the conversation's params and the request body (jsonb), which refuse \u0000
    # on PostgreSQL and a lone surrogate everywhere: the send failed with the socket. In JSON
    # text (a schema, tools) the escape counts as the character it spells.
    schema = json.dumps({"type": "object", "properties": {f"n{char}": {"type": "string"}}})
    fields = {
        "param:stop": f"END{char}",
        "param:response_format:type": "json_schema",
        "param:response_format:schema": schema,
    }
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("Hi", **fields)
    frame = html.unescape(await socket.until(lambda f: "param-error-stop" in f))
    assert f"stop holds {named}, which cannot be stored" in frame
    assert f"response_format holds {named}, which cannot be stored" in frame
    assert "nothing was sent" in frame
    assert upstream.requests == []
    assert await Message.objects.acount() == 0
    await socket.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("action", "fields", "said"),
    [
        ("send", {"text": "Hi", "model": GEMMA_4_E4B.key, "param:t\ud800p": "1"}, "t\\ud800p"),
        ("tool_results", {"message_id": "1", "result:c\ud800": 5}, "result:c\\ud800"),
    ],
)
async def test_an_error_naming_a_field_holding_a_lone_surrogate_can_still_be_sent(
    action, fields, said, upstream, user, api_key, conversation, connect
):
    # A hand-made field name is echoed in the error ("Unknown parameter …"), and a frame is
    # UTF-8, which holds no lone surrogate: the server could not send the error at all.
    ok, socket = await connect(user, conversation.pk)
    await socket.send(action=action, **fields)
    frame = await socket.until(lambda f: said in html.unescape(f.encode().decode()))
    assert "error" in frame
    assert upstream.requests == []
    assert await Message.objects.acount() == 0
    await socket.close()


@pytest.mark.django_db
def test_the_panel_keeps_the_valid_parameters_and_refuses_one_holding_a_nul(
    client, user, conversation
):
    client.force_login(user)
    response = client.post(
        f"/c/{conversation.pk}/settings/",
        {"model": GEMMA_4, "param:stop": "END\x00", "param:seed": "7"},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 200
    assert "stop holds a NUL character (\\u0000)" in html.unescape(response.content.decode())
    conversation.refresh_from_db()
    assert conversation.params == {"seed": 7}

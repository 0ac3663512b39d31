"""The settings panel: saved as it changes, per-field errors, model switches, presets."""

from __future__ import annotations

import html

import pytest

from playground.accounts.models import Membership, Team
from playground.chat.models import Conversation, LastSettings, Preset
from tests.html import attr, find, find_all, has, text

pytestmark = pytest.mark.django_db
HX = {"HX-Request": "true"}


def post_settings(client, conversation, **fields):
    data = {"model": "empiriolabs:gemma-4-e4b", "system_prompt": "", **fields}
    return client.post(f"/c/{conversation.pk}/settings/", data, headers=HX)


def test_the_panel_has_a_control_for_every_parameter_of_the_model(client, user, conversation):
    client.force_login(user)
    page = client.get(f"/c/{conversation.pk}/").content.decode()
    for name in [
        "temperature",
        "top_p",
        "min_p",
        "max_tokens",
        "presence_penalty",
        "frequency_penalty",
        "repetition_penalty",
        "top_logprobs",
    ]:
        assert has(page, name=f"param:{name}") and has(page, data_number=f"p-{name}"), name
    # A seed is a number to type, not a quantity to drag over two billion values.
    assert has(page, "input", type="number", name="param:seed")
    assert not has(page, data_number="p-seed")
    for name in ["enable_thinking", "logprobs"]:
        assert has(page, "input", name=f"param:{name}", form="composer", value="true"), name
    assert has(page, name="param:reasoning_effort") and has(page, name="param:stop")
    assert has(page, name="param:tools") and has(page, name="param:tool_choice")
    assert has(page, name="param:response_format:type")
    assert "default 0.7" in page
    temperature = find(page, "input", name="param:temperature")
    assert (attr(temperature, "min"), attr(temperature, "max")) == ("0", "2")


def test_a_valid_change_is_saved_and_remembered(client, user, conversation):
    client.force_login(user)
    response = post_settings(
        client, conversation, **{"param:temperature": "0.2", "param:stop": ["END", ""]}
    )
    assert b"Saved." in response.content
    conversation.refresh_from_db()
    assert conversation.params == {"temperature": 0.2, "stop": ["END"]}
    assert LastSettings.objects.get(user=user).params == {"temperature": 0.2, "stop": ["END"]}


def test_an_out_of_range_value_gets_a_field_error_and_is_not_saved(client, user, conversation):
    client.force_login(user)
    response = post_settings(
        client, conversation, **{"param:temperature": "3", "param:top_p": "0.5"}
    )
    page = response.content.decode()
    error = find(page, "p", id="param-error-temperature", hx_swap_oob="true")
    assert text(error).startswith("temperature must be between 0 and 2")
    assert find(page, "p", id="param-error-top_p", hx_swap_oob="true").children == []
    conversation.refresh_from_db()
    assert conversation.params == {"top_p": 0.5}


def test_switching_models_redraws_the_panel_and_keeps_what_applies(client, user, conversation):
    conversation.params = {"temperature": 1.5, "enable_thinking": False, "top_p": 0.005}
    conversation.save()
    client.force_login(user)
    response = client.post(
        f"/c/{conversation.pk}/settings/",
        {
            "model": "aimlapi:google/gemma-3n-e4b-it",
            "param:temperature": "1.5",
            "param:enable_thinking": "false",
            "param:top_p": "0.005",
        },
        headers=HX,
    )
    page = response.content.decode()
    assert has(page, id="settings", hx_swap_oob="true")
    assert has(page, name="param:top_k") and not has(page, name="param:enable_thinking")
    assert "takes no system role" in page
    conversation.refresh_from_db()
    assert conversation.model == "aimlapi:google/gemma-3n-e4b-it"
    assert conversation.params == {"temperature": 1.5}


def test_a_viewer_cannot_change_settings(client, user, other_user, conversation):
    team = Team.objects.create(name="Lab")
    Membership.objects.create(team=team, user=user, role=Membership.Role.OWNER)
    Membership.objects.create(team=team, user=other_user, role=Membership.Role.VIEWER)
    conversation.team = team
    conversation.save()
    client.force_login(other_user)
    # The viewer sees the conversation, so it is refused (403), not hidden (404).
    assert post_settings(client, conversation, **{"param:temperature": "1"}).status_code == 403
    conversation.refresh_from_db()
    assert conversation.params == {}


def test_a_new_conversation_keeps_the_model_system_prompt_and_sampling_only(
    client, user, conversation
):
    client.force_login(user)
    schema = '{"type": "object"}'
    post_settings(
        client,
        conversation,
        system_prompt="Terse.",
        **{
            "param:temperature": "0.3",
            "param:max_tokens": "200",
            "param:seed": "7",
            "param:stop": "END",
            "param:logprobs": "true",
            "param:tools": '[{"type": "function", "function": {"name": "f"}}]',
            "param:response_format:type": "json_schema",
            "param:response_format:name": "r",
            "param:response_format:schema": schema,
        },
    )
    conversation.refresh_from_db()
    assert {"seed", "tools", "logprobs", "response_format"} <= conversation.params.keys()
    client.post("/c/new/")
    newest = Conversation.objects.first()
    assert newest.pk != conversation.pk
    assert newest.model == "empiriolabs:gemma-4-e4b" and newest.system_prompt == "Terse."
    assert newest.params == {"temperature": 0.3, "max_tokens": 200}
    # The last conversation keeps its whole setup.
    conversation.refresh_from_db()
    assert conversation.params["seed"] == 7


def test_reset_to_defaults_clears_the_parameters_and_keeps_model_and_prompt(
    client, user, conversation
):
    client.force_login(user)
    post_settings(client, conversation, system_prompt="Terse.", **{"param:seed": "7"})
    page = client.get(f"/c/{conversation.pk}/").content
    reset = find(page, "button", hx_post=f"/c/{conversation.pk}/reset/")
    assert text(reset) == "Reset to defaults" and attr(reset, "hx-confirm")

    response = client.post(f"/c/{conversation.pk}/reset/", headers=HX)
    assert response.status_code == 200
    assert attr(find(response.content, "div", id="settings"), "hx-swap-oob") == "true"
    assert attr(find(response.content, "input", name="param:seed"), "value") == ""
    conversation.refresh_from_db()
    assert conversation.params == {} and conversation.system_prompt == "Terse."
    assert LastSettings.objects.get(user=user).params == {}


def test_reset_needs_the_right_to_run(client, user, other_user, conversation):
    conversation.params = {"seed": 7}
    conversation.save()
    client.force_login(other_user)
    assert client.post(f"/c/{conversation.pk}/reset/", headers=HX).status_code == 404
    client.force_login(user)
    assert client.get(f"/c/{conversation.pk}/reset/").status_code == 405
    conversation.refresh_from_db()
    assert conversation.params == {"seed": 7}


def test_presets_are_saved_loaded_renamed_and_deleted(client, user, conversation):
    client.force_login(user)
    response = client.post(
        f"/c/{conversation.pk}/presets/",
        {
            "preset_name": "Cold",
            "model": "empiriolabs:gemma-4-e4b",
            "system_prompt": "Be exact.",
            "param:temperature": "0",
        },
        headers=HX,
    )
    assert b"Cold" in response.content
    preset = Preset.objects.get(owner=user)
    assert preset.params == {"temperature": 0} and preset.system_prompt == "Be exact."

    response = client.post(f"/c/{conversation.pk}/presets/{preset.pk}/load/", headers=HX)
    loaded = find(response.content, id="settings")
    assert float(attr(find(loaded, "input", name="param:temperature"), "value")) == 0
    conversation.refresh_from_db()
    assert conversation.params == {"temperature": 0} and conversation.system_prompt == "Be exact."

    client.post(
        f"/c/{conversation.pk}/presets/{preset.pk}/rename/", headers={**HX, "HX-Prompt": "Frozen"}
    )
    preset.refresh_from_db()
    assert preset.name == "Frozen"

    client.post(f"/c/{conversation.pk}/presets/{preset.pk}/delete/", headers=HX)
    assert not Preset.objects.exists()


def test_a_preset_with_invalid_values_is_refused(client, user, conversation):
    client.force_login(user)
    response = client.post(
        f"/c/{conversation.pk}/presets/",
        {"preset_name": "Hot", "model": "empiriolabs:gemma-4-e4b", "param:temperature": "9"},
        headers=HX,
    )
    assert b"temperature must be between 0 and 2" in response.content
    assert not Preset.objects.exists()


def test_a_preset_name_holding_a_nul_is_refused_when_saved_or_renamed(client, user, conversation):
    # PostgreSQL keeps no NUL in text: both saves were a 500 there (SQLite kept it).
    refused = "The preset name holds a NUL character (\\u0000), which cannot be stored."
    client.force_login(user)
    response = client.post(
        f"/c/{conversation.pk}/presets/",
        {"preset_name": "Co\x00ld", "model": "empiriolabs:gemma-4-e4b"},
        headers=HX,
    )
    assert response.status_code == 200 and refused in html.unescape(response.content.decode())
    assert not Preset.objects.exists()
    preset = Preset.objects.create(owner=user, name="Warm", model="empiriolabs:gemma-4-e4b")
    response = client.post(
        f"/c/{conversation.pk}/presets/{preset.pk}/rename/", {"name": "Fro\x00zen"}, headers=HX
    )
    assert response.status_code == 200 and refused in html.unescape(response.content.decode())
    preset.refresh_from_db()
    assert preset.name == "Warm"


def test_another_users_preset_cannot_be_touched(client, user, other_user, conversation):
    preset = Preset.objects.create(owner=other_user, name="Eve's", model="x")
    client.force_login(user)
    for action in ("load", "rename", "delete"):
        response = client.post(
            f"/c/{conversation.pk}/presets/{preset.pk}/{action}/",
            headers={**HX, "HX-Prompt": "Mine"},
        )
        assert response.status_code == 404
    assert Preset.objects.get().name == "Eve's"


@pytest.mark.django_db(transaction=True)
async def test_sending_in_another_conversation_makes_its_settings_the_last_used(
    upstream, user, api_key, connect
):
    older = await Conversation.objects.acreate(
        owner=user, model="empiriolabs:gemma-4-e4b", params={"seed": 3}, system_prompt="Old."
    )
    ok, socket = await connect(user, older.pk)
    await socket.send_prompt("Hi", **{"param:seed": "3"})
    await socket.until(lambda f: "status-complete" in f)
    last = await LastSettings.objects.aget(user=user)
    assert (last.model, last.params) == ("empiriolabs:gemma-4-e4b", {"seed": 3})


def test_an_unset_slider_stands_at_the_provider_default_not_at_zero(client, user, conversation):
    client.force_login(user)
    page = client.get(f"/c/{conversation.pk}/").content
    slider = find(page, "input", type="range", data_number="p-temperature")
    assert attr(slider, "value") == "0.7" and attr(slider, "data-ghost") == "0.7"
    box = find(page, "input", id="p-temperature")
    assert attr(box, "value") == "" and attr(box, "placeholder") == "0.7"
    # The AI/ML API documents no default temperature: no position to show, so no thumb.
    conversation.model = "aimlapi:google/gemma-3n-e4b-it"
    conversation.save()
    page = client.get(f"/c/{conversation.pk}/").content
    row = find(find(page, "div", id="param-temperature"), "div", class_="slider-row")
    assert "no-default" in attr(row, "class").split()
    assert attr(find(page, "input", id="p-temperature"), "placeholder") == "unset"


def test_folded_sections_are_drawn_folded_from_the_cookie(client, user, conversation):
    client.force_login(user)
    page = client.get(f"/c/{conversation.pk}/").content
    sections = {attr(d, "data-section"): d for d in find_all(page, "details", class_="params")}
    assert set(sections) == {"sampling", "thinking", "logprobs", "tools", "structured"}
    assert all("open" in dict(d.attributes) for d in sections.values())
    client.cookies["panel_closed"] = "tools.logprobs.bogus"
    page = client.get(f"/c/{conversation.pk}/").content
    folded = {
        attr(d, "data-section")
        for d in find_all(page, "details", class_="params")
        if "open" not in dict(d.attributes)
    }
    assert folded == {"tools", "logprobs"}
    # A model switch redraws the panel folded the same way.
    Conversation.objects.filter(pk=conversation.pk).update(model="aimlapi:google/gemma-3n-e4b-it")
    response = post_settings(client, conversation)
    redrawn = {
        attr(d, "data-section")
        for d in find_all(response.content, "details", class_="params")
        if "open" not in dict(d.attributes)
    }
    assert redrawn == {"tools", "logprobs"}


def test_the_panel_has_a_filter_box_and_skip_links(client, user, conversation):
    client.force_login(user)
    page = client.get(f"/c/{conversation.pk}/").content
    assert has(page, "input", type="search", id="param-filter", aria_label=True)
    links = find_all(find(page, "nav", class_="skip-links"), "a")
    assert [attr(a, "href") for a in links] == ["#prompt", "#model"]
    # The schema's name and editor sit in one box that app.css shows for "JSON schema" only.
    fields = find(page, "div", class_="schema-fields")
    assert has(fields, name="param:response_format:name")
    assert has(fields, name="param:response_format:schema")


def test_a_model_served_over_several_formats_offers_them_and_the_default_is_chat(
    client, user, conversation
):
    client.force_login(user)
    page = client.get(f"/c/{conversation.pk}/").content.decode()
    choices = find_all(find(page, "select", name="wire_format"), "option")
    assert [attr(o, "value") for o in choices] == ["chat", "responses", "messages"]
    assert has(page, "option", value="chat", selected=True)
    assert not has(page, class_="off-reason")
    conversation.model = "aimlapi:google/gemma-3n-e4b-it"
    conversation.save()
    page = client.get(f"/c/{conversation.pk}/").content.decode()
    assert not has(page, "select", name="wire_format")
    assert has(page, "input", type="hidden", name="wire_format", value="chat")


def test_switching_formats_redraws_the_panel_with_what_the_format_cannot_carry_off(
    client, user, conversation
):
    conversation.params = {"temperature": 1.5, "seed": 7, "top_p": 0.5}
    conversation.save()
    client.force_login(user)
    response = post_settings(
        client,
        conversation,
        wire_format="messages",
        **{"param:temperature": "1.5", "param:seed": "7", "param:top_p": "0.5"},
    )
    page = response.content.decode()
    assert has(page, id="settings", hx_swap_oob="true")
    seed = find(page, "div", id="param-seed")
    assert "param-off" in attr(seed, "class") and has(seed, "fieldset", disabled=True)
    assert "The Messages format has no seed." in text(find(page, "p", id="param-off-seed"))
    assert not has(page, id="param-off-stop") and not has(page, id="param-off-top_p")
    assert attr(find(page, "input", name="param:temperature"), "max") == "1"
    assert has(page, name="param:thinking_budget")
    assert not has(page, "option", value="json_object")  # Messages takes a schema only
    conversation.refresh_from_db()
    # 1.5 is over Messages' range and seed is not carried: only what applies is kept.
    assert conversation.wire_format == "messages"
    assert conversation.params == {"top_p": 0.5}


def test_in_a_format_a_value_it_cannot_carry_is_a_field_error(client, user, conversation):
    conversation.wire_format = "responses"
    conversation.save()
    client.force_login(user)
    response = post_settings(
        client, conversation, wire_format="responses", **{"param:stop": ["END"]}
    )
    error = find(response.content.decode(), "p", id="param-error-stop", hx_swap_oob="true")
    assert text(error) == "stop: The Responses format has no stop sequences."
    conversation.refresh_from_db()
    assert conversation.params == {}


def test_a_new_conversation_carries_the_last_used_wire_format(client, user, conversation):
    client.force_login(user)
    post_settings(client, conversation, wire_format="messages", **{"param:temperature": "0.3"})
    assert LastSettings.objects.get(user=user).wire_format == "messages"
    response = client.post("/c/new/", headers=HX)
    new = Conversation.objects.exclude(pk=conversation.pk).get(owner=user)
    assert response.status_code in (200, 302)
    assert (new.wire_format, new.params) == ("messages", {"temperature": 0.3})
    page = client.get(f"/c/{new.pk}/").content.decode()
    chooser = find(page, "select", id="wire-format")
    assert has(chooser, "option", value="messages", selected=True)


def test_a_last_format_the_model_is_not_served_over_falls_back_to_chat_completions(
    client, user, conversation
):
    LastSettings.objects.create(
        user=user, model="aimlapi:google/gemma-3n-e4b-it", wire_format="messages"
    )
    client.force_login(user)
    client.post("/c/new/", headers=HX)
    new = Conversation.objects.exclude(pk=conversation.pk).get(owner=user)
    assert (new.model, new.wire_format) == ("aimlapi:google/gemma-3n-e4b-it", "chat")


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e309"])
def test_json_with_a_number_json_cannot_hold_gets_a_field_error(client, user, conversation, number):
    # Python's json reads these, but the saved params must be JSON again (SQLite checks it).
    client.force_login(user)
    limit = f'{{"type": "number", "maximum": {number}}}'
    schema = f'{{"type": "object", "properties": {{"n": {limit}}}}}'
    tools = f'[{{"type": "function", "function": {{"name": "f", "parameters": {schema}}}}}]'
    response = post_settings(client, conversation, **{"param:tools": tools})
    assert response.status_code == 200
    assert b"tools is not valid JSON" in response.content
    response = post_settings(
        client,
        conversation,
        **{"param:response_format:type": "json_schema", "param:response_format:schema": schema},
    )
    assert response.status_code == 200
    assert b"response_format is not valid JSON" in response.content
    conversation.refresh_from_db()
    assert conversation.params == {}

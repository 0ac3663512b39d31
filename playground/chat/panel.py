"""The settings panel: one control per documented parameter, built from the catalog spec."""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest

from playground.providers import catalog, formats, specs
from playground.providers.specs import CHAT, Model, Param

SECTIONS = [
    (None, "sampling", "Sampling"),
    (specs.THINKING, "thinking", "Thinking"),
    (specs.LOGPROBS, "logprobs", "Log probabilities"),
    (specs.TOOLS, "tools", "Function tools"),
    (specs.JSON_OUTPUT, "structured", "Structured output"),
]
SECTION_KEYS = frozenset(key for _, key, _ in SECTIONS)
# app.js writes the sections a user folded into this cookie, so the page is drawn folded
# the way it was left, with no flash of open sections before a script could close them.
CLOSED_COOKIE = "panel_closed"
# A seed names one sampling run; a slider over two billion values only invites a random drag.
NO_SLIDER = frozenset({"seed"})
RESPONSE_FORMAT_LABELS = (("json_object", "JSON object"), ("json_schema", "JSON schema"))
RESPONSE_FORMATS = tuple(kind for kind, _ in RESPONSE_FORMAT_LABELS)


def closed_sections(request: HttpRequest) -> frozenset[str]:
    """The panel sections the user folded; unknown names in the cookie are ignored."""
    raw = request.COOKIES.get(CLOSED_COOKIE, "")
    return frozenset(raw.split(".")) & SECTION_KEYS


def _default_label(param: Param) -> str:
    if param.default is None:
        return ""
    if isinstance(param.default, bool):
        return "on" if param.default else "off"
    return str(param.default)


def _display_stop(text: str) -> str:
    return text.replace("\n", "\\n").replace("\t", "\\t")


def _json_text(value: Any) -> str:
    if value in (None, ""):
        return ""
    return value if isinstance(value, str) else json.dumps(value, indent=2)


def _tool_names(tools: Any) -> list[str]:
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except ValueError:
            return []
    if not isinstance(tools, list):
        return []
    return [
        t["function"]["name"]
        for t in tools
        if isinstance(t, dict) and isinstance(t.get("function"), dict) and t["function"].get("name")
    ]


def control(param: Param, value: Any, error: str, values: dict[str, Any]) -> dict[str, Any]:
    """What the template needs to draw one parameter's control with its current value."""
    shown: dict[str, Any] = {
        "param": param,
        "error": error,
        "default_label": _default_label(param),
        "value": "",
    }
    if param.is_numeric:
        shown["value"] = "" if value in (None, "") else str(value)
        shown["slider"] = param.name not in NO_SLIDER
        shown["placeholder"] = shown["default_label"] or "unset"
        # Unset, the thumb stands where the provider's default puts it, drawn faint (app.css);
        # with no documented default there is no position to show, and the thumb is hidden.
        ghost = param.default if param.default is not None else param.slider_min or 0
        shown["ghost"] = ghost
        shown["slider_value"] = shown["value"] or ghost
    elif param.type == "boolean":
        shown["value"] = "" if value in (None, "") else str(value).lower()
    elif param.type == "string_list":
        items = value if isinstance(value, list) else ([value] if value else [])
        shown["items"] = [_display_stop(str(item)) for item in items] + [""]
    elif param.type == "token_bias":
        pairs = list(value.items()) if isinstance(value, dict) else []
        shown["items"] = [*pairs, ("", "")]
    elif param.type == "tools":
        shown["value"] = _json_text(value)
    elif param.type == "tool_choice":
        if isinstance(value, dict):
            value = value.get("function", {}).get("name", "")
        shown["value"] = value or ""
        shown["choices"] = ["auto", "none", "required", *_tool_names(values.get("tools"))]
    elif param.type == "response_format":
        spec = value if isinstance(value, dict) else {}
        schema = spec.get("json_schema") or {}
        shown["value"] = {
            "type": spec.get("type", ""),
            "name": schema.get("name", ""),
            "schema": _json_text(schema.get("schema")),
        }
        # Only what the model's server accepts (a Probe may have found json_schema refused):
        # a choice that can only end in "not accepted" is not offered at all.
        accepted = param.choices or RESPONSE_FORMATS
        shown["choices"] = [
            (kind, label) for kind, label in RESPONSE_FORMAT_LABELS if kind in accepted
        ]
        kind = shown["value"]["type"]
        if kind in RESPONSE_FORMATS and kind not in accepted:
            # Saved before a later Probe found it refused: drawn as what it is, so the panel
            # does not look unset while every send is refused for it.
            label = dict(RESPONSE_FORMAT_LABELS)[kind]
            shown["choices"].append((kind, f"{label} (not accepted by this server)"))
            shown["error"] = error or f"{kind} is not accepted by this model's server"
        shown["with_schema"] = "json_schema" in accepted or kind == "json_schema"
    else:
        shown["value"] = "" if value is None else value
    return shown


def settings_context(
    model: Model,
    values: dict[str, Any],
    errors: dict[str, str] | None = None,
    *,
    system_prompt: str = "",
    fmt: str = CHAT,
) -> dict[str, Any]:
    errors = errors or {}
    controls = []
    for field in formats.fields(model, fmt):
        param = field.param
        shown = control(param, values.get(param.name), errors.get(param.name, ""), values)
        # Drawn, but off, with the reason: a setting the format cannot carry is never
        # silently left out of the request.
        shown["disabled"] = field.disabled
        controls.append(shown)
    sections = []
    for capability, key, title in SECTIONS:
        members = [c for c in controls if c["param"].capability == capability]
        if members:
            sections.append({"key": key, "title": title, "controls": members})
    return {
        "model": model,
        "models": catalog.all_models(),
        "wire_format": fmt,
        "wire_formats": [(f, specs.FORMAT_LABELS[f]) for f in model.formats],
        "system_prompt": system_prompt,
        "system_prompt_error": errors.get("system_prompt", ""),
        "model_has_system_role": model.supports(specs.SYSTEM_ROLE),
        "model_accepts_images": model.supports(specs.IMAGES),
        "sections": sections,
        "controls": controls,
    }

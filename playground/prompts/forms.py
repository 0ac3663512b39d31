"""The version form: what a person edits to save a new version, checked with the same
parameter rules the playground applies (chat.services.clean_settings)."""

from __future__ import annotations

import json
from typing import Any, cast

from django import forms
from django.http import QueryDict

from playground.chat.services import TurnError, clean_settings, get_model, pick_format
from playground.prompts.models import NAME_MAX, PromptError, PromptVersion, clean_prompt_name
from playground.providers import catalog, params
from playground.providers.storable import unstorable

ROLES = [("user", "user"), ("assistant", "assistant")]
MAX_MESSAGES = 20
EXTRA_MESSAGE_ROWS = 1


def _json_field(label: str, help_text: str) -> forms.CharField:
    return forms.CharField(
        label=label,
        required=False,
        help_text=help_text,
        widget=forms.Textarea(attrs={"rows": 4, "class": "code-input", "spellcheck": "false"}),
    )


class VersionForm(forms.Form):
    system_prompt = forms.CharField(
        label="System prompt", required=False, strip=False, widget=forms.Textarea(attrs={"rows": 5})
    )
    model = forms.ChoiceField(label="Model")
    params = _json_field("Parameters (JSON)", 'e.g. {"temperature": 0.7, "max_tokens": 400}')
    tools = _json_field("Tools (JSON array)", "Function tool definitions, or empty.")
    response_format = _json_field(
        "Response format (JSON)", 'e.g. {"type": "json_object"}, or empty for text.'
    )
    note = forms.CharField(label="What changed", required=False, max_length=200)

    def __init__(self, *args: Any, messages: list[dict[str, str]] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        cast(forms.ChoiceField, self.fields["model"]).choices = [
            (m.key, f"{m.label} · {m.provider.name}") for m in catalog.all_models()
        ]
        self.message_rows = self._message_rows(messages)

    def _message_rows(self, initial: list[dict[str, str]] | None) -> list[dict[str, str]]:
        if self.is_bound:
            data = cast(QueryDict, self.data)
            roles, contents = data.getlist("message_role"), data.getlist("message_content")
            rows = [{"role": r, "content": c} for r, c in zip(roles, contents, strict=False)]
        else:
            rows = [dict(m) for m in (initial or [])]
        return [*rows, *([{"role": "user", "content": ""}] * EXTRA_MESSAGE_ROWS)]

    def _json(self, name: str, kind: type) -> Any:
        raw = (self.cleaned_data.get(name) or "").strip()
        if not raw:
            return kind()
        try:
            value = params.loads_finite(raw)
        except (ValueError, RecursionError):
            raise forms.ValidationError({name: "This is not valid JSON."}) from None
        if not isinstance(value, kind):
            raise forms.ValidationError(
                {name: f"This must be a JSON {'object' if kind is dict else 'array'}."}
            )
        return value

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        messages = []
        for row in self.message_rows:
            content = row.get("content", "")
            if not content.strip():
                continue
            if row.get("role") not in dict(ROLES):
                raise forms.ValidationError("A message is from the user or the assistant.")
            # Read from the request as they came, not through a CharField (which refuses NUL).
            what = unstorable(content)
            if what:
                raise forms.ValidationError(f"A message holds {what}, which cannot be stored.")
            messages.append({"role": row["role"], "content": content})
        if len(messages) > MAX_MESSAGES:
            raise forms.ValidationError(f"A prompt has at most {MAX_MESSAGES} messages.")
        cleaned["messages"] = messages
        if self.errors or "model" not in cleaned:
            return cleaned
        values = self._json("params", dict)
        tools = self._json("tools", list)
        response_format = self._json("response_format", dict) or None
        model = get_model(cleaned["model"])
        fmt = pick_format(model, "")
        merged = {**values}
        if tools:
            merged["tools"] = tools
        if response_format:
            merged["response_format"] = response_format
        try:
            checked = clean_settings(model, cleaned.get("system_prompt", ""), merged, fmt)
        except params.InvalidParams as exc:
            raise forms.ValidationError(list(exc.errors.values())) from None
        except TurnError as exc:
            raise forms.ValidationError(str(exc)) from None
        cleaned["tools"] = checked.pop("tools", [])
        cleaned["response_format"] = checked.pop("response_format", None)
        cleaned["params"] = checked
        cleaned["wire_format"] = fmt
        return cleaned

    def version_fields(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            key: data[key]
            for key in (
                "system_prompt",
                "messages",
                "model",
                "wire_format",
                "params",
                "tools",
                "response_format",
                "note",
            )
        }

    @classmethod
    def initial_from(cls, version: PromptVersion) -> dict[str, Any]:
        def dump(value: Any) -> str:
            return json.dumps(value, indent=2, ensure_ascii=False) if value else ""

        return {
            "system_prompt": version.system_prompt,
            "model": version.model,
            "params": dump(version.params),
            "tools": dump(version.tools),
            "response_format": dump(version.response_format),
        }


class NewPromptForm(VersionForm):
    name = forms.CharField(label="Name", max_length=NAME_MAX, help_text="Used in the read API URL.")
    description = forms.CharField(label="Description", required=False, widget=forms.TextInput)

    field_order = ["name", "description"]

    def clean_name(self) -> str:
        try:
            return clean_prompt_name(self.cleaned_data["name"])
        except PromptError as exc:
            raise forms.ValidationError(str(exc)) from None

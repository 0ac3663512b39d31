"""The prompt library's public API: what views here, and Compare, Sweeps and Experiments, call.

    get_prompt_for_user(user, pk, edit=False, admin=False) -> Prompt       (404 / 403)
    get_version_for_user(user, version_pk, edit=False) -> PromptVersion    (404 / 403)
    resolve(prompt, label=None, number=None) -> PromptVersion             (LookupError)
    variables_of(version) -> ["name", ...]
    render(version, variables) -> Rendered   (UndefinedVariables names what is missing)
    record_reply(message, version, variables, edited=False) -> PromptRun
    version_json(version) -> dict             (what the read API returns)

A Rendered holds the system prompt and messages with the values filled in, and the version's
model, wire format and parameters (tools and response format folded in, as a conversation's
`params` holds them), ready for chat.services.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404

from playground.prompts import variables as syntax
from playground.prompts.models import Prompt, PromptRun, PromptVersion, VariableValues
from playground.providers.storable import unstorable

UndefinedVariables = syntax.UndefinedVariables


def get_prompt_for_user(user, pk: int | str, *, edit: bool = False, admin: bool = False) -> Prompt:
    """The prompt if `user` may see it (404 otherwise, so strangers cannot tell it exists);
    with edit=True only if they may save versions and move labels, with admin=True only if
    they may protect labels (403)."""
    try:
        prompt = Prompt.objects.visible_to(user).select_related("team").get(pk=int(pk))
    except (Prompt.DoesNotExist, ValueError, TypeError):
        raise Http404("No such prompt") from None
    if edit and not prompt.can_edit(user):
        raise PermissionDenied("Viewers can read the team's prompts but not change them.")
    if admin and not prompt.can_admin(user):
        raise PermissionDenied("Only the team's owners and admins can do that.")
    return prompt


def get_version_for_user(user, version_pk: int | str, *, edit: bool = False) -> PromptVersion:
    """A version of a prompt `user` may see (and edit, with edit=True), else 404/403."""
    try:
        version = PromptVersion.objects.select_related("prompt").get(pk=int(version_pk))
    except (PromptVersion.DoesNotExist, ValueError, TypeError):
        raise Http404("No such prompt version") from None
    get_prompt_for_user(user, version.prompt_id, edit=edit)
    return version


def resolve(
    prompt: Prompt, *, label: str | None = None, number: int | None = None
) -> PromptVersion:
    """The version a label points at, or version `number`, or (neither) the newest one.
    LookupError with a message for the caller if there is none."""
    if label:
        # Labels are stored lowercase (models.clean_label_name): Production finds production.
        # None holds what cannot be stored, and PostgreSQL refuses a NUL in a lookup.
        labels = prompt.labels.select_related("version")
        found = None if unstorable(label) else labels.filter(name=label.strip().lower()).first()
        if found is None:
            raise LookupError(f"The prompt {prompt.name} has no label {label!r}.")
        return found.version
    versions = prompt.versions.all()
    # `is None`, not falsiness: version 0 is a number naming no version, not "the newest".
    version = versions.first() if number is None else versions.filter(number=number).first()
    if version is None:
        raise LookupError(
            "No versions yet."
            if number is None
            else f"The prompt {prompt.name} has no version {number}."
        )
    return version


def templates_of(version: PromptVersion) -> list[str]:
    return [version.system_prompt, *(str(m.get("content", "")) for m in version.messages)]


def variables_of(version: PromptVersion) -> list[str]:
    """The {{variables}} the version uses, each once, in order of first use."""
    return syntax.names_in_all(templates_of(version))


@dataclass
class Rendered:
    system_prompt: str
    messages: list[dict[str, str]]  # role + content, in order; no system message
    model: str
    wire_format: str
    params: dict[str, Any]
    variables: dict[str, str] = field(default_factory=dict)

    def chat_messages(self) -> list[dict[str, str]]:
        """The messages in Chat Completions shape, the system prompt first when there is one."""
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return [*system, *self.messages]


def render(version: PromptVersion, variables: Mapping[str, str]) -> Rendered:
    """The version with `variables` filled in; UndefinedVariables (a ValueError whose message
    names every variable without a value) if any is missing or empty."""
    rendered = syntax.render_all(templates_of(version), variables)
    used = {name: str(variables[name]) for name in variables_of(version)}
    messages = [
        {"role": str(m.get("role", "user")), "content": text}
        for m, text in zip(version.messages, rendered[1:], strict=True)
    ]
    return Rendered(
        system_prompt=rendered[0],
        messages=messages,
        model=version.model,
        wire_format=version.wire_format,
        params=version.all_params(),
        variables=used,
    )


def record_reply(
    message, version: PromptVersion, variables: Mapping[str, str], *, edited: bool = False
) -> PromptRun:
    """Record that `message` (a chat reply) came from `version` with these values, so History
    can filter by it and the reply shows where it came from."""
    run, _ = PromptRun.objects.update_or_create(
        message=message,
        defaults={"version": version, "variables": dict(variables), "edited": edited},
    )
    return run


def remember_values(user, prompt_id: int, values: Mapping[str, str]) -> None:
    """Keep `values` as the user's last values for the prompt's variables (merged with the
    others), to fill a Variables panel in again."""
    saved = VariableValues.objects.filter(user=user, prompt_id=prompt_id).first()
    merged = {**(saved.values if saved else {}), **values}
    VariableValues.objects.update_or_create(
        user=user, prompt_id=prompt_id, defaults={"values": merged}
    )


def last_values(user, prompt_ids: list[int]) -> dict[str, str]:
    """The user's last values for these prompts' variables, merged in the order given."""
    merged: dict[str, str] = {}
    saved = {
        v.prompt_id: v.values
        for v in VariableValues.objects.filter(user=user, prompt_id__in=prompt_ids)
    }
    for prompt_id in prompt_ids:
        merged.update(saved.get(prompt_id, {}))
    return merged


def version_json(version: PromptVersion) -> dict[str, Any]:
    """The version as the read API returns it."""
    prompt = version.prompt
    return {
        "prompt": prompt.name,
        "version": version.number,
        "labels": sorted(version.labels.values_list("name", flat=True)),
        "model": version.model,
        "wire_format": version.wire_format or None,
        "system_prompt": version.system_prompt,
        "messages": version.messages,
        "parameters": version.params,
        "tools": version.tools,
        "response_format": version.response_format,
        "variables": variables_of(version),
        "created": version.created.isoformat(),
    }

"""A prompt version in the playground: "Open in playground", the Variables panel, and the
send that fills the templates in and records what the reply came from.

Chat does not know prompts: these functions are receivers of chat/extensions.py's signals,
connected in PromptsConfig.ready().

In a conversation opened from a version, the system prompt field and the message box are
templates: `{{name}}` in them is replaced by the panel's values when you send (an empty
message box sends the version's last user message). The conversation keeps the templates;
the reply's saved request holds the text that was sent, and a PromptRun holds the version and
the values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.http import Http404
from django.template.loader import render_to_string

from playground.chat.models import Conversation, Message
from playground.chat.services import MAX_PROMPT_CHARS, TurnError
from playground.prompts import library
from playground.prompts import variables as syntax
from playground.prompts.models import (
    Prompt,
    PromptRun,
    PromptSession,
    PromptVersion,
    VariableValues,
)
from playground.providers import catalog
from playground.providers.specs import CHAT
from playground.providers.storable import unstorable

# Where the send receiver leaves its _Plan for the turn receiver, in the socket message. Only
# a _Plan instance is trusted: JSON from a browser cannot make one, so no client forges it.
PLAN = "prompt_plan"
VARIABLE_FIELD = "var:"
VERSION_FIELD = "prompt_version"


@dataclass(frozen=True)
class _Plan:
    version: PromptVersion
    variables: dict[str, str]
    edited: bool
    system_template: str


def open_in_playground(version: PromptVersion, user) -> Conversation:
    """A new conversation in the prompt's space, set up from the version. The caller checked
    that `user` may edit the prompt (so may run in its space)."""
    prompt = version.prompt
    try:
        model = catalog.get_model(version.model)
    except catalog.UnknownModel:
        model = catalog.get_model(catalog.DEFAULT_MODEL_KEY)
    fmt = version.wire_format if version.wire_format in model.formats else CHAT
    with transaction.atomic():
        conversation = Conversation.objects.create(
            owner=user,
            team=prompt.team,
            title=f"{prompt.name} v{version.number}"[:200],
            model=model.key,
            wire_format=fmt,
            system_prompt=version.system_prompt,
            params=version.all_params(),
        )
        PromptSession.objects.create(conversation=conversation, version=version)
    return conversation


def save_from_playground(conversation: Conversation, user) -> PromptVersion:
    """A new version of the conversation's prompt from what the playground holds now: its
    model, format, parameters and system prompt (the template), with the version's messages.
    The conversation then belongs to the new version. The caller checked that `user` may run
    in the conversation; this checks that they may edit the prompt."""
    session = PromptSession.objects.select_related("version__prompt").get(conversation=conversation)
    prompt = library.get_prompt_for_user(user, session.version.prompt_id, edit=True)
    values = dict(conversation.params)
    tools = values.pop("tools", [])
    response_format = values.pop("response_format", None)
    with transaction.atomic():
        version = prompt.add_version(
            user,
            system_prompt=conversation.system_prompt,
            messages=session.version.messages,
            model=conversation.model,
            wire_format=conversation.wire_format,
            params=values,
            tools=tools,
            response_format=response_format,
            note=f"From the playground, based on version {session.version.number}",
        )
        PromptSession.objects.filter(pk=session.pk).update(version=version)
    return version


def last_user_index(version: PromptVersion) -> int | None:
    for index in range(len(version.messages) - 1, -1, -1):
        if version.messages[index].get("role") == "user":
            return index
    return None


def last_values(user, prompt: Prompt) -> dict[str, str]:
    saved = VariableValues.objects.filter(user=user, prompt=prompt).first()
    return dict(saved.values) if saved else {}


def _remember(user, prompt: Prompt, values: dict[str, str]) -> None:
    merged = {**last_values(user, prompt), **values}
    VariableValues.objects.update_or_create(user=user, prompt=prompt, defaults={"values": merged})


def _text(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TurnError(f"“{name}” must be text: nothing was sent.")
    return value


def prepare_send(
    sender: Any, *, conversation: Conversation, user, data: dict[str, Any], **kwargs: Any
) -> list[Message] | None:
    """A send from a conversation with the Variables panel: fill the templates in, or refuse
    naming the variables that have no value. Returns the example messages it wrote."""
    data.pop(PLAN, None)
    raw = data.get(VERSION_FIELD)
    if raw in (None, ""):
        return None
    try:
        version = library.get_version_for_user(user, str(raw))
    except Http404:
        raise TurnError(
            "That prompt version is gone or not yours to use: reload the page."
        ) from None
    # Its reply is recorded against the version: a prompt of another space would count (and
    # filter History by) a reply its members cannot see. The compare's rule, as in
    # compare/setup.py's resolve_prompt_version.
    if version.prompt.team_id != conversation.team_id:
        raise TurnError(f"{version} belongs to another space: pick a prompt of this one.")
    values: dict[str, str] = {}
    for key in data:
        if isinstance(key, str) and key.startswith(VARIABLE_FIELD):
            value = _text(data, key)
            name = key.removeprefix(VARIABLE_FIELD)
            if len(value) > syntax.MAX_VALUE_CHARS:
                raise TurnError(f"The value of {{{{{name}}}}} is too long: nothing was sent.")
            # Remembered (jsonb) before the turn is written, so checked here, not by the turn.
            what = unstorable(value)
            if what:
                raise TurnError(
                    f"The value of {{{{{name}}}}} holds {what}, which cannot be stored: "
                    "nothing was sent."
                )
            values[name] = value
    index = last_user_index(version)
    own_message = str(version.messages[index]["content"]) if index is not None else ""
    text_template = _text(data, "text").strip() or own_message
    system_template = _text(data, "system_prompt")
    # The version's messages before its last user message are the conversation's start.
    first_send = not conversation.messages.exists()
    before = version.messages[:index] if first_send and index else []
    templates = [system_template, text_template, *(str(m.get("content", "")) for m in before)]
    try:
        rendered = syntax.render_all(templates, values)
    except syntax.UndefinedVariables as exc:
        raise TurnError(str(exc)) from None
    if len(rendered[1]) > MAX_PROMPT_CHARS:
        raise TurnError("The filled-in message is too long: shorten the values.")
    used = {name: values[name] for name in syntax.names_in_all(templates)}
    edited = system_template != version.system_prompt or text_template != own_message
    _remember(user, version.prompt, used)
    # Written before the turn (which builds its context from the saved messages); should the
    # turn then be refused, they stay, as the conversation's start, and are not written twice.
    written = _start_with(conversation, user, before, rendered[2:]) if before else []
    data["text"], data["system_prompt"] = rendered[1], rendered[0]
    data[PLAN] = _Plan(version, used, edited, system_template)
    return written


def _start_with(
    conversation: Conversation, user, messages: list[dict], texts: list[str]
) -> list[Message]:
    """The version's example turns, as the conversation's first messages, so the model sees
    them as context and the transcript shows them."""
    parent, written = None, []
    for message, text in zip(messages, texts, strict=True):
        parent = Message.objects.create(
            conversation=conversation,
            parent=parent,
            role=Message.Role.ASSISTANT
            if message.get("role") == "assistant"
            else Message.Role.USER,
            text=text,
            created_by=user,
            team=conversation.team,
            model=conversation.model if message.get("role") == "assistant" else "",
        )
        written.append(parent)
    return written


def record_turn(
    sender: Any, *, conversation: Conversation, user, turn: Any, data: dict[str, Any], **kw: Any
) -> None:
    """The reply came from this version with these values; the conversation keeps the system
    prompt template rather than the text it was filled in to."""
    plan = data.get(PLAN)
    if not isinstance(plan, _Plan):
        return
    reply = turn.messages[-1]
    # The send validated and stored the model and parameters it used on the conversation.
    sent = turn.conversation
    drifted = sent.model != plan.version.model or sent.params != plan.version.all_params()
    library.record_reply(reply, plan.version, plan.variables, edited=plan.edited or drifted)
    Conversation.objects.filter(pk=conversation.pk).update(system_prompt=plan.system_template)
    conversation.system_prompt = plan.system_template


def record_rerun(sender: Any, *, original: Message, reply: Message, **kw: Any) -> None:
    """A Re-run sends the original's request again, byte for byte: the new reply came from
    the same version with the same values (and is as edited as the original was)."""
    run = PromptRun.objects.filter(message=original).first()
    if run is not None:
        library.record_reply(reply, run.version, run.variables, edited=run.edited)


def panel(sender: Any, *, request, conversation: Conversation, can_run: bool, **kw: Any) -> str:
    """The Variables panel of a conversation opened from a prompt version."""
    session = (
        PromptSession.objects.filter(conversation=conversation)
        .select_related("version__prompt")
        .first()
    )
    if session is None:
        return ""
    version = session.version
    if not Prompt.objects.visible_to(request.user).filter(pk=version.prompt_id).exists():
        return ""
    values = last_values(request.user, version.prompt)
    names = library.variables_of(version)
    index = last_user_index(version)
    return render_to_string(
        "prompts/panel.html",
        {
            "conversation": conversation,
            "version": version,
            "prompt": version.prompt,
            "fields": [{"name": n, "value": values.get(n, "")} for n in names],
            "messages": version.messages,
            "own_message": version.messages[index]["content"] if index is not None else "",
            "can_run": can_run,
            "can_edit": version.prompt.can_edit(request.user),
        },
        request=request,
    )

"""Turning "send this" into database rows and a run request, in one transaction."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from playground.accounts.crypto import KeyDecryptionError
from playground.accounts.models import ApiKey
from playground.chat.models import Conversation, Message
from playground.chat.runs import RunRequest
from playground.providers import catalog
from playground.providers.catalog import Model, Provider

MAX_PROMPT_CHARS = 200_000
MAX_SYSTEM_CHARS = 50_000


class TurnError(Exception):
    """A plain message for the person who pressed Send; nothing was saved."""


@sensitive_variables("plaintext")
def resolve_api_key(user, conversation: Conversation, provider: Provider) -> str | None:
    """The user's own key for the provider, else the conversation's team key."""
    key = ApiKey.objects.filter(provider=provider.slug, user=user).first()
    if key is None and conversation.team_id:
        key = ApiKey.objects.filter(provider=provider.slug, team_id=conversation.team_id).first()
    if key is None:
        if provider.requires_key:
            raise TurnError(f"Add your {provider.name} API key on the Keys page first.")
        return None
    try:
        plaintext = key.reveal()
    except KeyDecryptionError as exc:
        raise TurnError(f"{provider.name}: {exc}") from None
    ApiKey.objects.filter(pk=key.pk).update(last_used=timezone.now())
    return plaintext


def history(conversation: Conversation) -> list[Message]:
    """The linear branch ending at the newest message: what the model sees as context."""
    by_id = {m.pk: m for m in conversation.messages.all()}
    if not by_id:
        return []
    node: Message | None = max(by_id.values(), key=lambda m: (m.created, m.pk))
    branch = []
    while node is not None:
        branch.append(node)
        node = by_id.get(node.parent_id)
    return branch[::-1]


def build_messages(model: Model, system_prompt: str, branch: list[Message]) -> list[dict]:
    messages: list[dict[str, Any]] = []
    for message in branch:
        if message.role == Message.Role.ASSISTANT:
            if not message.text:
                continue  # a failed or stopped-before-any-token reply adds no context
            messages.append({"role": "assistant", "content": message.text})
        elif message.role == Message.Role.USER:
            messages.append({"role": "user", "content": message.text})
    system_prompt = system_prompt.strip()
    if system_prompt:
        if model.supports(catalog.SYSTEM_ROLE):
            messages.insert(0, {"role": "system", "content": system_prompt})
        else:
            # Some Gemma deployments reject a system role: fold it into the first user turn.
            for message in messages:
                if message["role"] == "user":
                    message["content"] = f"{system_prompt}\n\n{message['content']}"
                    break
    return messages


def build_body(model: Model, messages: list[dict], params: dict[str, Any]) -> dict[str, Any]:
    known = {p.name for p in model.params}
    body: dict[str, Any] = {"model": model.id, "messages": messages}
    body.update({k: v for k, v in params.items() if k in known and v is not None})
    body["stream"] = True
    body["stream_options"] = {"include_usage": True}
    return body


@sensitive_variables("api_key", "request")
def start_turn(
    conversation: Conversation,
    user,
    *,
    text: str,
    model_key: str,
    system_prompt: str,
    channel: str,
) -> tuple[Message, Message, RunRequest]:
    text = text.strip()
    if not text:
        raise TurnError("Write a message first.")
    if len(text) > MAX_PROMPT_CHARS:
        raise TurnError(f"The message is too long (over {MAX_PROMPT_CHARS:,} characters).")
    if len(system_prompt) > MAX_SYSTEM_CHARS:
        raise TurnError(f"The system prompt is too long (over {MAX_SYSTEM_CHARS:,} characters).")
    try:
        model = catalog.get_model(model_key)
    except catalog.UnknownModel:
        raise TurnError("Pick a model from the list.") from None
    api_key = resolve_api_key(user, conversation, model.provider)

    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().get(pk=conversation.pk)
        if conversation.messages.filter(status=Message.Status.STREAMING).exists():
            raise TurnError("A reply is still streaming: stop it or wait for it to finish.")
        branch = history(conversation)
        user_message = Message.objects.create(
            conversation=conversation,
            parent=branch[-1] if branch else None,
            role=Message.Role.USER,
            text=text,
            created_by=user,
        )
        messages = build_messages(model, system_prompt, [*branch, user_message])
        body = build_body(model, messages, conversation.params)
        reply = Message.objects.create(
            conversation=conversation,
            parent=user_message,
            role=Message.Role.ASSISTANT,
            status=Message.Status.STREAMING,
            model=model.key,
            request_body=body,
            created_by=user,
            run_channel=channel,
            checkpoint_at=timezone.now(),
        )
        conversation.model = model.key
        conversation.system_prompt = system_prompt
        conversation.title_from(text)
        conversation.save()
    request = RunRequest(
        message_id=reply.pk,
        conversation_id=conversation.pk,
        channel=channel,
        model=model,
        body=body,
        api_key=api_key,
    )
    return user_message, reply, request

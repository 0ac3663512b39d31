"""plainsql's statements read and write what the ORM's would."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.utils import timezone

from playground.accounts.models import ApiKey
from playground.chat import plainsql
from playground.chat.models import Conversation, Message

pytestmark = [pytest.mark.django_db]


def test_first_reads_the_row_as_the_orm_does(user, api_key):
    ApiKey.objects.filter(pk=api_key.pk).update(last_used=timezone.now())
    expected = ApiKey.objects.filter(provider=api_key.provider, user=user).first()
    found = plainsql.first(ApiKey, {"provider": api_key.provider, "user_id": user.pk})
    assert found is not None and not found._state.adding
    names = [f.attname for f in ApiKey._meta.concrete_fields]
    assert [getattr(found, n) for n in names] == [getattr(expected, n) for n in names]
    assert timezone.is_aware(found.last_used) and found.reveal() == expected.reveal()
    assert plainsql.first(ApiKey, {"provider": "nobody", "user_id": user.pk}) is None
    assert plainsql.first(ApiKey, {"provider": api_key.provider, "user": user}) == expected


def test_update_writes_the_values_as_the_orm_does(user, conversation):
    message = Message.objects.create(conversation=conversation, role="assistant")
    twin = Message.objects.create(conversation=conversation, role="assistant")
    at = timezone.now()
    values = {
        "status": Message.Status.COMPLETE,
        "text": "Hi",
        "usage": {"prompt_tokens": 3, "completion_tokens": 1},
        "tool_calls": [],
        "logprobs": None,
        "cost": Decimal("0.000123"),
        "ttft_ms": 12.5,
        "checkpoint_at": at,
    }
    assert plainsql.update(Message, {"id": message.pk}, values) == 1
    Message.objects.filter(pk=twin.pk).update(**values)
    names = [f.attname for f in Message._meta.concrete_fields if f.attname not in ("id", "created")]
    saved, expected = Message.objects.get(pk=message.pk), Message.objects.get(pk=twin.pk)
    assert [getattr(saved, n) for n in names] == [getattr(expected, n) for n in names]
    assert saved.usage == {"prompt_tokens": 3, "completion_tokens": 1}
    assert saved.checkpoint_at == at and saved.cost == Decimal("0.000123")
    assert plainsql.update(Message, {"id": 0}, {"text": "nobody"}) == 0
    assert plainsql.update(Conversation, {"id": conversation.pk}, {"active_leaf": message}) == 1
    assert Conversation.objects.get(pk=conversation.pk).active_leaf_id == message.pk


def test_update_refuses_expressions(conversation):
    from django.db.models import F

    with pytest.raises(TypeError):
        plainsql.update(Conversation, {"id": conversation.pk}, {"title": F("model")})

"""Which API key pays for a turn, and how the page says so.

The rule, written in the page too: a team conversation uses the team's key for the
provider when the team has one, else the sender's own key; a personal conversation uses
the sender's own key. Only a member who may run spends the team's key."""

from __future__ import annotations

from typing import Any

from playground.accounts.models import ApiKey
from playground.chat import plainsql
from playground.chat.models import Conversation

TEAM, USER = "team", "user"
RULE = "Team conversations use the team key when the team has one, else the sender's own key."


def paying_key(user, conversation: Conversation, provider_slug: str) -> ApiKey | None:
    """The key `user`'s next turn in `conversation` spends, or None."""
    # Plain SQL (plainsql.first): every send reads it before its upstream request goes out.
    if conversation.team_id is not None and conversation.can_run(user):
        team_key = plainsql.first(
            ApiKey, {"provider": provider_slug, "team_id": conversation.team_id}
        )
        if team_key is not None:
            return team_key
    return plainsql.first(ApiKey, {"provider": provider_slug, "user_id": user.pk})


def owner_kind(key: ApiKey | None) -> str:
    if key is None:
        return ""
    return TEAM if key.team_id is not None else USER


def paying_key_context(user, conversation: Conversation, provider) -> dict[str, Any]:
    """What the conversation header shows: whose key pays, by its last four only."""
    key = paying_key(user, conversation, provider.slug)
    if key is None and conversation.team_id is not None and not conversation.can_run(user):
        # A viewer sends nothing, but may still want to know what pays for the team's runs.
        key = ApiKey.objects.filter(provider=provider.slug, team_id=conversation.team_id).first()
    return {
        "paying_key": key,
        "paying_kind": owner_kind(key),
        "key_provider": provider,
        "key_rule": RULE if conversation.team_id is not None else "",
    }

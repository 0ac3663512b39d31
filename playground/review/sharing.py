"""Share links: a read-only page of a conversation or one reply, for people without an account.

The token is 256 random bits (`secrets.token_urlsafe(32)`); only its SHA-256 is stored, so the
link is shown once, when it is made. A link that is unknown, revoked, expired, or whose maker
may no longer see the conversation answers the same 404, so a visitor cannot tell them apart.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.db.models import Q
from django.http import Http404
from django.utils import timezone

from playground.accounts.models import Membership
from playground.chat.models import Conversation, Message
from playground.chat.services import active_branch
from playground.review.models import ShareLink

TOKEN_BYTES = 32
# Choices offered when making a link: label -> lifetime (None: until revoked).
EXPIRY_CHOICES: dict[str, timedelta | None] = {
    "never": None,
    "1h": timedelta(hours=1),
    "1d": timedelta(days=1),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
ADMIN_ROLES = (Membership.Role.OWNER, Membership.Role.ADMIN)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def create(
    user,
    conversation: Conversation,
    *,
    message: Message | None = None,
    expires_in: timedelta | None = None,
    show_names: bool = False,
) -> tuple[ShareLink, str]:
    """A new link and its token. The caller has loaded `conversation` through
    get_conversation_for_user, so `user` may see it; `message` must be one of its messages."""
    if message is not None and message.conversation_id != conversation.pk:
        raise ValueError("That message is not part of this conversation.")
    token = secrets.token_urlsafe(TOKEN_BYTES)
    link = ShareLink.objects.create(
        token_hash=hash_token(token),
        conversation=conversation,
        message=message,
        created_by=user,
        show_names=show_names,
        expires=timezone.now() + expires_in if expires_in else None,
    )
    return link, token


def open_link(token: str) -> ShareLink:
    """The live link for `token`, else Http404 (one answer for every reason)."""
    if not token or len(token) > 200:
        raise Http404("No such page")
    link = (
        ShareLink.objects.live()
        .select_related("conversation", "message", "created_by")
        .filter(token_hash=hash_token(token))
        .first()
    )
    if link is None or link.pk not in makers_may_see([link]):
        raise Http404("No such page")
    return link


def makers_may_see(links: list[ShareLink]) -> set[int]:
    """The ids of `links` whose maker may still see the conversation. A maker who left the
    team (or was deactivated) takes their links with them: the public page and the Shared
    links page both ask here, so one cannot call a link live that the other will not open.
    One query per maker, not per link."""
    by_maker: dict[int, list[ShareLink]] = {}
    for link in links:
        by_maker.setdefault(link.created_by_id, []).append(link)
    may: set[int] = set()
    for mine in by_maker.values():
        seen = set(
            Conversation.objects.visible_to(mine[0].created_by)
            .filter(pk__in={link.conversation_id for link in mine})
            .values_list("pk", flat=True)
        )
        may.update(link.pk for link in mine if link.conversation_id in seen)
    return may


def shown_messages(link: ShareLink) -> list[Message]:
    """The transcript (its active branch, as its owners see it), or the one reply with the
    prompt it answers."""
    related = ("created_by",)
    if link.message_id is None:
        messages = link.conversation.messages.select_related(*related)
        return active_branch({m.pk: m for m in messages}, link.conversation.active_leaf_id)
    reply = Message.objects.select_related(*related).get(pk=link.message_id)
    if reply.parent_id is None:
        return [reply]
    parent = Message.objects.select_related(*related).get(pk=reply.parent_id)
    return [parent, reply]


def _admin_team_ids(user) -> list[int]:
    return list(
        Membership.objects.filter(user=user, role__in=ADMIN_ROLES).values_list("team_id", flat=True)
    )


def manageable(user):
    """Links `user` may list and revoke: their own, and, for a team admin, those made on the
    team's conversations."""
    if not user.is_authenticated or not user.is_active:
        return ShareLink.objects.none()
    return ShareLink.objects.filter(
        Q(created_by=user) | Q(conversation__team_id__in=_admin_team_ids(user))
    ).select_related("conversation", "message", "created_by")


def revoke(user, pk: int | str) -> ShareLink:
    """Revoke the link if `user` may (its maker or an admin of its team), else Http404."""
    try:
        link = manageable(user).get(pk=int(pk))
    except (ShareLink.DoesNotExist, ValueError, TypeError):
        raise Http404("No such link") from None
    if link.revoked is None:
        link.revoked = timezone.now()
        link.save(update_fields=["revoked"])
    return link


def listing(user) -> list[tuple[ShareLink, str, bool]]:
    """The links `user` may manage, each with its state and whether `user` may see its
    conversation. Their own link on a team conversation outlives their leaving the team (to
    be revoked), but the page must not go on naming that conversation: its title is read
    now. A team admin sees the title, but a link whose maker lost the conversation opens for
    no one, so its state says so rather than "live"."""
    links = list(manageable(user)[:500])
    ids = {link.conversation_id for link in links}
    seen = set(
        Conversation.objects.visible_to(user).filter(pk__in=ids).values_list("pk", flat=True)
    )
    opening = makers_may_see(links)
    return [
        (link, state(link, maker_may_see=link.pk in opening), link.conversation_id in seen)
        for link in links
    ]


def state(link: ShareLink, *, maker_may_see: bool) -> str:
    if link.revoked is not None:
        return "revoked"
    if link.expires is not None and link.expires <= timezone.now():
        return "expired"
    if not maker_may_see:
        return "maker has no access"
    return "live"

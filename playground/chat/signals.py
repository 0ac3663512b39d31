"""Every change that can take away a socket's right to watch or run a conversation revokes the
decision the socket keeps (playground/chat/access.py). Team pages, the admin, management
commands and the shell all go through these, so none of them has to remember to.

Changes that bypass signals (QuerySet.update, raw SQL) are caught by the sockets' periodic
re-check, PLAYGROUND_REAUTH_INTERVAL.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import SESSION_KEY, get_user_model
from django.contrib.auth.signals import user_logged_out
from django.contrib.sessions.models import Session
from django.db.models.signals import post_delete, post_init, post_save, pre_delete

from playground.accounts.models import Membership, Team
from playground.chat.access import revoke_access, revoke_conversation_access
from playground.chat.models import Conversation

# The fields whose change can end access, remembered as loaded so a save can tell. A
# conversation's group too: a compare page watches its columns through it, and a column
# continued in the playground is no longer the page's to show (compare/consumers.py).
USER_FIELDS = ("is_active", "password")
CONVERSATION_FIELDS = ("owner_id", "team_id", "group_id")


def _remember(instance: Any, fields: tuple[str, ...]) -> None:
    instance._access_fields = tuple(instance.__dict__.get(f) for f in fields)


def _changed(instance: Any, fields: tuple[str, ...], update_fields: Any) -> bool:
    if update_fields is not None and not {f.removesuffix("_id") for f in fields} & {
        f.removesuffix("_id") for f in update_fields
    }:
        return False
    before = getattr(instance, "_access_fields", None)
    now = tuple(instance.__dict__.get(f) for f in fields)
    _remember(instance, fields)
    return before != now


def membership_saved(sender: Any, instance: Membership, created: bool, **kwargs: Any) -> None:
    # A new membership grants more; only a changed one (its role) can take away.
    if not created:
        revoke_access([instance.user_id])


def membership_deleted(sender: Any, instance: Membership, **kwargs: Any) -> None:
    revoke_access([instance.user_id])


def team_deleting(sender: Any, instance: Team, **kwargs: Any) -> None:
    # Before the cascade: afterwards nobody is a member any more to be told.
    revoke_access(instance.memberships.values_list("user_id", flat=True))


def user_loaded(sender: Any, instance: Any, **kwargs: Any) -> None:
    _remember(instance, USER_FIELDS)


def user_saved(sender: Any, instance: Any, created: bool, update_fields: Any, **kwargs: Any):
    # Deactivated, or a new password (which ends the user's other sessions).
    if not created and _changed(instance, USER_FIELDS, update_fields):
        revoke_access([instance.pk])


def logged_out(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    if user is not None and user.pk is not None:
        revoke_access([user.pk])


def session_deleted(sender: Any, instance: Session, **kwargs: Any) -> None:
    """A session row deleted by hand (the admin, "log out everywhere") ends its sockets."""
    try:
        user_id = instance.get_decoded().get(SESSION_KEY)
    except Exception:  # a corrupt or foreign session: nobody's to revoke
        return
    if user_id is not None:
        revoke_access([int(user_id)])


def conversation_loaded(sender: Any, instance: Conversation, **kwargs: Any) -> None:
    _remember(instance, CONVERSATION_FIELDS)


def conversation_saved(
    sender: Any, instance: Conversation, created: bool, update_fields: Any, **kwargs: Any
) -> None:
    if not created and _changed(instance, CONVERSATION_FIELDS, update_fields):
        revoke_conversation_access([instance.pk])


def conversation_deleted(sender: Any, instance: Conversation, **kwargs: Any) -> None:
    revoke_conversation_access([instance.pk])


def connect() -> None:
    user_model = get_user_model()
    uid = "playground.chat.access"
    post_save.connect(membership_saved, sender=Membership, dispatch_uid=f"{uid}.membership_saved")
    post_delete.connect(membership_deleted, sender=Membership, dispatch_uid=f"{uid}.membership")
    pre_delete.connect(team_deleting, sender=Team, dispatch_uid=f"{uid}.team")
    post_init.connect(user_loaded, sender=user_model, dispatch_uid=f"{uid}.user_loaded")
    post_save.connect(user_saved, sender=user_model, dispatch_uid=f"{uid}.user_saved")
    user_logged_out.connect(logged_out, dispatch_uid=f"{uid}.logged_out")
    post_delete.connect(session_deleted, sender=Session, dispatch_uid=f"{uid}.session")
    post_init.connect(conversation_loaded, sender=Conversation, dispatch_uid=f"{uid}.c_loaded")
    post_save.connect(conversation_saved, sender=Conversation, dispatch_uid=f"{uid}.c_saved")
    post_delete.connect(conversation_deleted, sender=Conversation, dispatch_uid=f"{uid}.c_del")

"""Review changes reach the other watchers of a conversation as they happen.

An annotation, a comment or a review status saved by one reviewer is announced (after its
transaction commits) to the conversation's group on the channel layer. Each watching socket
answers with a loader that makes its page fetch the changed bar or status through the
ordinary views, as that page's user: the permission checks and what the bar shows (one's own
thumbs, score and labels) stay in one place, and no review HTML is rendered in the socket.
"""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from playground.chat import runs

log = logging.getLogger(__name__)

EVENT = "review.changed"


def announce(conversation_id: int, by: int, *, message_id: int | None = None) -> None:
    """After commit: tell the conversation's other watchers that a reply's review
    (`message_id`) or the conversation's review status (None) changed. Never fails the
    change: a watcher that misses it sees it on its next load."""

    def send() -> None:
        layer = get_channel_layer()
        if layer is None:
            return
        event = {"type": EVENT, "message_id": message_id, "by": by}
        try:
            async_to_sync(layer.group_send)(runs.group_name(conversation_id), event)
        except Exception as exc:
            log.warning("review change of conversation %s not announced: %r", conversation_id, exc)

    transaction.on_commit(send)

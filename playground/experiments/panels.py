"""The experiments' panel on a conversation page (chat/extensions.py's page_panels): which
experiment cell it is, with a link back to the grid, and "Add to dataset" for its latest
reply. Chat does not know this app; it draws what the receiver returns."""

from __future__ import annotations

from typing import Any

from django.template.loader import render_to_string

from playground.chat.models import Conversation, Message
from playground.experiments.models import Dataset, Item


def panel(sender: Any, *, request, conversation: Conversation, can_run: bool, **kw: Any) -> str:
    user = request.user
    item = (
        Item.objects.filter(conversation=conversation)
        .select_related("run__experiment", "row")
        .first()
    )
    reply = (
        Message.objects.filter(
            conversation=conversation,
            role=Message.Role.ASSISTANT,
            status=Message.Status.COMPLETE,
        )
        .order_by("-created", "-id")
        .only("id")
        .first()
    )
    datasets = []
    if reply is not None:
        datasets = list(
            Dataset.objects.visible_to(user)
            .in_space(conversation.team_id)
            .filter(next_versions__isnull=True)  # the newest version of each
            .order_by("name")[:50]
        )
        # One space, one answer: a viewer of the team may change none of them.
        if datasets and not datasets[0].can_change(user):
            datasets = []
    if item is None and not datasets:
        return ""
    return render_to_string(
        "experiments/panel.html",
        {"item": item, "reply": reply, "datasets": datasets},
        request=request,
    )

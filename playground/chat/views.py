from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from playground.chat.access import get_conversation_for_user
from playground.chat.models import Conversation, Message
from playground.providers import catalog

TEMPLATE = "chat/playground.html"


def transcript_context(conversation: Conversation) -> dict[str, Any]:
    Message.objects.filter(conversation=conversation).mark_stale_interrupted()
    messages = list(conversation.messages.select_related("created_by"))
    return {"conversation": conversation, "messages": messages}


def _sidebar(user) -> list[Conversation]:
    return list(Conversation.objects.visible_to(user).only("id", "title", "updated")[:200])


@require_GET
@login_required
def home(request: HttpRequest) -> HttpResponse:
    """Open the newest conversation if it is still empty, else start a fresh one."""
    newest = Conversation.objects.filter(owner=request.user).first()
    if newest is None or newest.messages.exists():
        newest = Conversation.objects.create(owner=request.user, model=_last_model(request.user))
    return redirect("conversation", pk=newest.pk)


def _last_model(user) -> str:
    last = Conversation.objects.filter(owner=user).exclude(model="").first()
    return last.model if last else catalog.DEFAULT_MODEL_KEY


@require_POST
@login_required
def conversation_new(request: HttpRequest) -> HttpResponse:
    conversation = Conversation.objects.create(owner=request.user, model=_last_model(request.user))
    return redirect("conversation", pk=conversation.pk)


@require_GET
@login_required
def conversation_detail(request: HttpRequest, pk: int) -> HttpResponse:
    conversation = get_conversation_for_user(request.user, pk)
    context = transcript_context(conversation)
    context.update(
        conversations=_sidebar(request.user),
        models=catalog.all_models(),
        can_run=conversation.can_run(request.user),
    )
    return render(request, TEMPLATE, context)


@require_http_methods(["GET", "POST"])
@login_required
def conversation_rename(request: HttpRequest, pk: int) -> HttpResponse:
    conversation = get_conversation_for_user(request.user, pk, run=True)
    error = ""
    if request.method == "POST":
        title = " ".join(request.POST.get("title", "").split())[:200]
        if title:
            conversation.title = title
            conversation.save(update_fields=["title"])
            return render(request, f"{TEMPLATE}#sidebar-item", {"c": conversation})
        error = "A title cannot be empty."
    return render(request, f"{TEMPLATE}#rename-form", {"c": conversation, "error": error})


@require_GET
@login_required
def conversation_sidebar_item(request: HttpRequest, pk: int) -> HttpResponse:
    conversation = get_conversation_for_user(request.user, pk)
    return render(request, f"{TEMPLATE}#sidebar-item", {"c": conversation})


@require_POST
@login_required
def conversation_delete(request: HttpRequest, pk: int) -> HttpResponse:
    conversation = get_conversation_for_user(request.user, pk, run=True)
    if conversation.owner_id != request.user.pk:
        return HttpResponse("Only the owner can delete a conversation.", status=403)
    conversation.delete()
    current = request.headers.get("HX-Current-URL", "")
    if not request.htmx:
        return redirect("home")
    if current.rstrip("/").endswith(f"/c/{pk}"):
        return HttpResponseClientRedirect(reverse("home"))
    return HttpResponse("")

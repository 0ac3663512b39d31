from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db import IntegrityError
from django.http import FileResponse, Http404, HttpResponse, HttpResponseBadRequest, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from playground.chat import export, images, runs, sidebar
from playground.chat.access import get_conversation_for_user
from playground.chat.contexts import (
    conversation_settings_context,
    model_or_default,
    transcript_context,
)
from playground.chat.models import Attachment, Conversation, LastSettings, Message, Preset
from playground.chat.panel import closed_sections, settings_context
from playground.chat.services import (
    SYSTEM_PROMPT,
    TurnError,
    clean_settings,
    sampling_values,
    with_image_data,
)
from playground.http import AuthenticatedHttpRequest, HtmxHttpRequest
from playground.providers import catalog, params
from playground.providers.specs import CHAT

TEMPLATE = "chat/playground.html"


def _new_conversation(user) -> Conversation:
    """A fresh conversation with the model, system prompt and sampling values the user last
    used, and nothing else: tools, a schema, logprobs or a seed made for the last chat would
    make the next one fail or repeat itself. A preset carries a whole setup on purpose."""
    last = LastSettings.objects.filter(user=user).first()
    if last is None:
        return Conversation.objects.create(owner=user, model=catalog.DEFAULT_MODEL_KEY)
    return Conversation.objects.create(
        owner=user,
        model=last.model,
        params=sampling_values(last.model, last.params),
        system_prompt=last.system_prompt,
    )


@require_GET
@login_required
def home(request: AuthenticatedHttpRequest) -> HttpResponse:
    """Open the newest conversation if it is still empty, else start a fresh one."""
    newest = Conversation.objects.filter(owner=request.user).first()
    if newest is None or newest.messages.exists():
        newest = _new_conversation(request.user)
    return redirect("conversation", pk=newest.pk)


@require_POST
@login_required
def conversation_new(request: AuthenticatedHttpRequest) -> HttpResponse:
    return redirect("conversation", pk=_new_conversation(request.user).pk)


@require_GET
@login_required
def conversation_detail(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    conversation = get_conversation_for_user(request.user, pk)
    context = transcript_context(conversation)
    context.update(conversation_settings_context(conversation))
    context.update(
        sidebar=sidebar.first_page(request.user, conversation),
        can_run=conversation.can_run(request.user),
        presets=Preset.objects.filter(owner=request.user),
        closed_sections=closed_sections(request),
    )
    return render(request, TEMPLATE, context)


@require_GET
@login_required
def conversation_page(request: AuthenticatedHttpRequest) -> HttpResponse:
    """The sidebar's next page, asked for by the "Show more" item at the end of the last one.

    A cursor that is not one of ours is refused (400) rather than answered with the first
    page, which the sidebar would append below the pages it already shows."""
    try:
        after = sidebar.Cursor.parse(request.GET.get("after", ""))
        pinned = int(request.GET["pinned"]) if "pinned" in request.GET else None
    except ValueError:
        return HttpResponseBadRequest("Not a page of this sidebar.")
    page = sidebar.page(request.user, after, pinned=pinned)
    return render(request, f"{TEMPLATE}#sidebar-page", {"sidebar": page})


def form_values(post: QueryDict) -> dict[str, Any]:
    return {key: vals if len(vals) > 1 else vals[0] for key, vals in post.lists()}


@require_POST
@login_required
def conversation_settings(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """The panel changed: validate, save what is valid, answer with per-field errors.

    Switching models redraws the panel, keeping the values that still apply. A system prompt
    over the limit saves nothing: the user is still typing it, and sees why beside it."""
    conversation = get_conversation_for_user(request.user, pk, run=True)
    data = form_values(request.POST)
    model = model_or_default(str(data.get("model", "")))
    values = params.from_form(data)
    system_prompt = str(data.get("system_prompt", ""))
    asked = str(data.get("wire_format", "") or conversation.wire_format)
    # A model switch to one not served over the format falls back to Chat Completions.
    fmt = asked if asked in model.formats else CHAT
    # Another format redraws the panel: its controls, bounds and disabled ones differ.
    switched = model.key != conversation.model or fmt != conversation.wire_format
    errors: dict[str, str] = {}
    try:
        conversation.params = clean_settings(model, system_prompt, values, fmt)
    except params.InvalidParams as exc:
        if SYSTEM_PROMPT in exc.errors:
            context = settings_context(
                model, values, exc.errors, system_prompt=system_prompt, fmt=fmt
            )
            context["status"] = "Nothing was saved: the system prompt is too long."
            context["error"] = ""
            return render(request, f"{TEMPLATE}#param-errors", context)
        errors = {} if switched else exc.errors
        conversation.params = params.applicable(model, values, fmt)
    conversation.model = model.key
    conversation.wire_format = fmt
    conversation.system_prompt = system_prompt
    conversation.save(update_fields=["model", "wire_format", "system_prompt", "params", "updated"])
    LastSettings.remember(request.user, conversation)
    if switched:
        context = conversation_settings_context(conversation)
        context["closed_sections"] = closed_sections(request)
        return render(request, f"{TEMPLATE}#settings-oob", context)
    context = settings_context(
        model, values, errors, system_prompt=conversation.system_prompt, fmt=fmt
    )
    context["status"] = "Some settings need fixing." if errors else "Saved."
    context["error"] = ""
    return render(request, f"{TEMPLATE}#param-errors", context)


@require_POST
@login_required
def conversation_reset(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """Every parameter back to the provider's default (left out of the request); the model
    and the system prompt stay, as they are chosen rather than tuned."""
    conversation = get_conversation_for_user(request.user, pk, run=True)
    conversation.params = {}
    conversation.save(update_fields=["params", "updated"])
    LastSettings.remember(request.user, conversation)
    context = conversation_settings_context(conversation)
    context["closed_sections"] = closed_sections(request)
    context["status"] = "Parameters reset to the provider's defaults."
    return render(request, f"{TEMPLATE}#settings-oob", context)


def _presets(
    request: AuthenticatedHttpRequest, conversation: Conversation, error: str = ""
) -> HttpResponse:
    context = {
        "conversation": conversation,
        "presets": Preset.objects.filter(owner=request.user),
        "preset_error": error,
    }
    return render(request, f"{TEMPLATE}#presets", context)


@require_POST
@login_required
def preset_save(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    conversation = get_conversation_for_user(request.user, pk)
    data = form_values(request.POST)
    name = " ".join(str(data.get("preset_name", "")).split())[:100]
    if not name:
        return _presets(request, conversation, "Give the preset a name.")
    model = model_or_default(str(data.get("model", "")))
    system_prompt = str(data.get("system_prompt", ""))
    asked = str(data.get("wire_format", "") or CHAT)
    try:
        cleaned = clean_settings(
            model, system_prompt, params.from_form(data), asked if asked in model.formats else CHAT
        )
    except params.InvalidParams as exc:
        return _presets(request, conversation, "Fix these first: " + "; ".join(exc.errors.values()))
    Preset.objects.update_or_create(
        owner=request.user,
        name=name,
        defaults={"model": model.key, "params": cleaned, "system_prompt": system_prompt},
    )
    return _presets(request, conversation)


@require_POST
@login_required
def preset_load(request: AuthenticatedHttpRequest, pk: int, preset_pk: int) -> HttpResponse:
    conversation = get_conversation_for_user(request.user, pk, run=True)
    preset = get_object_or_404(Preset, pk=preset_pk, owner=request.user)
    model = model_or_default(preset.model)
    conversation.model = model.key
    if conversation.wire_format not in model.formats:
        conversation.wire_format = CHAT
    conversation.params = params.applicable(model, preset.params, conversation.wire_format)
    conversation.system_prompt = preset.system_prompt
    conversation.save(update_fields=["model", "wire_format", "params", "system_prompt", "updated"])
    LastSettings.remember(request.user, conversation)
    context = conversation_settings_context(conversation)
    context["closed_sections"] = closed_sections(request)
    return render(request, f"{TEMPLATE}#settings-oob", context)


@require_POST
@login_required
def preset_rename(request: AuthenticatedHttpRequest, pk: int, preset_pk: int) -> HttpResponse:
    conversation = get_conversation_for_user(request.user, pk)
    preset = get_object_or_404(Preset, pk=preset_pk, owner=request.user)
    name = " ".join((request.headers.get("HX-Prompt") or request.POST.get("name", "")).split())
    if not name:
        return _presets(request, conversation, "A preset needs a name.")
    preset.name = name[:100]
    try:
        preset.save(update_fields=["name", "updated"])
    except IntegrityError:
        return _presets(request, conversation, f"There is already a preset called {name}.")
    return _presets(request, conversation)


@require_POST
@login_required
def preset_delete(request: AuthenticatedHttpRequest, pk: int, preset_pk: int) -> HttpResponse:
    conversation = get_conversation_for_user(request.user, pk)
    get_object_or_404(Preset, pk=preset_pk, owner=request.user).delete()
    return _presets(request, conversation)


@require_GET
@login_required
def message_code(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """The exact request of a reply as curl and Python, the key as a placeholder."""
    message = get_object_or_404(
        Message.objects.filter(conversation__in=Conversation.objects.visible_to(request.user)),
        pk=pk,
        role=Message.Role.ASSISTANT,
    )
    if not message.request_body:
        raise Http404("This reply has no saved request.")
    try:
        model = catalog.get_model(message.model)
    except catalog.UnknownModel:
        raise Http404("The endpoint of this reply no longer exists.") from None
    try:
        # The saved request refers to images; the code carries them, as it was sent.
        body = with_image_data(message.request_body)
    except TurnError as exc:
        raise Http404(str(exc)) from None
    context = {
        "message": message,
        "snippets": export.snippets(body, model, message.wire_format),
        "key_variable": export.key_variable(model.provider),
    }
    return render(request, f"{TEMPLATE}#code", context)


@require_POST
@login_required
def attachment_upload(request: AuthenticatedHttpRequest) -> HttpResponse:
    """Images from the file picker, a paste or a drop: each becomes a thumbnail to send."""
    limit = settings.PLAYGROUND_IMAGES["MAX_PER_MESSAGE"]
    uploads = request.FILES.getlist("images")
    stored, errors = [], []
    if not uploads:
        errors.append("Choose an image to attach.")
    recent = Attachment.objects.filter(
        owner=request.user, created__gte=timezone.now() - timedelta(minutes=1)
    ).count()
    if recent + len(uploads) > settings.PLAYGROUND_IMAGES["MAX_PER_MINUTE"]:
        # Decoding and re-encoding images is real work: one user cannot keep a process busy.
        uploads, errors = [], ["Too many images in the last minute: wait a moment."]
    for upload in uploads[:limit]:
        try:
            stored.append(images.store(request.user, images.clean(images.read_upload(upload))))
        except images.ImageRejected as exc:
            errors.append(f"{(upload.name or 'image')[:80]}: {exc}")
    if len(uploads) > limit:
        errors.append(f"Attach at most {limit} images to one message.")
    return render(request, f"{TEMPLATE}#thumbnails", {"attachments": stored, "errors": errors})


@require_GET
@login_required
def attachment_file(request: AuthenticatedHttpRequest, pk: int) -> FileResponse:
    """An image, only to someone who may see it, never sniffed into something else."""
    attachment = get_object_or_404(Attachment.objects.visible_to(request.user), pk=pk)
    response = FileResponse(attachment.file.open("rb"), content_type=attachment.content_type)
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Disposition"] = "inline"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cache-Control"] = "private, max-age=86400"
    return response


@require_http_methods(["GET", "POST"])
@login_required
def conversation_rename(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
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
def conversation_sidebar_item(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    conversation = get_conversation_for_user(request.user, pk)
    return render(request, f"{TEMPLATE}#sidebar-item", {"c": conversation})


@require_POST
@login_required
def conversation_delete(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    conversation = get_conversation_for_user(request.user, pk, run=True)
    if conversation.owner_id != request.user.pk:
        return HttpResponse("Only the owner can delete a conversation.", status=403)
    runs.stop_sync(conversation.messages.all())
    conversation.delete()
    current = request.headers.get("HX-Current-URL", "")
    if not request.htmx:
        return redirect("home")
    if current.rstrip("/").endswith(f"/c/{pk}"):
        return HttpResponseClientRedirect(reverse("home"))
    return HttpResponse("")

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError
from django.http import FileResponse, Http404, HttpResponse, HttpResponseBadRequest, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from playground.accounts.access import get_team_for_user
from playground.accounts.models import Membership, TeamError
from playground.accounts.spaces import current_space, set_space
from playground.chat import export, extensions, images, runs, sidebar
from playground.chat.access import get_conversation_for_user, get_preset_for_user
from playground.chat.contexts import (
    conversation_settings_context,
    model_or_default,
    transcript_context,
)
from playground.chat.keys import paying_key_context
from playground.chat.models import Attachment, Conversation, LastSettings, Message, Preset
from playground.chat.panel import closed_sections, settings_context
from playground.chat.services import (
    SYSTEM_PROMPT,
    SYSTEM_PROMPT_TOO_LONG,
    TurnError,
    clean_settings,
    sampling_values,
    with_image_data,
)
from playground.http import AuthenticatedHttpRequest, HtmxHttpRequest
from playground.providers import catalog, params
from playground.providers.specs import CHAT
from playground.providers.storable import refusal

TEMPLATE = "chat/playground.html"
# An empty conversation untouched this long was abandoned. Not younger ones: another tab may
# still have it open, about to send its first message.
EMPTY_CONVERSATION_TTL = timedelta(days=1)


def _new_conversation(user, space: Membership | None) -> Conversation:
    """A fresh conversation in the current space (a team membership, None: Personal) with the
    model, system prompt and sampling values the user last used, and nothing else: tools, a
    schema, logprobs or a seed made for the last chat would make the next one fail or repeat
    itself. A preset carries a whole setup on purpose. A viewer starts none in their team."""
    if space is not None and not space.can_run():
        raise PermissionDenied(f"Viewers cannot start conversations in {space.team.name}.")
    team = space.team if space is not None else None
    # Each new conversation sweeps the user's abandoned empty ones (in any space): cheap (their
    # own rows), and their number stays bounded by what one day of clicks makes.
    Conversation.objects.abandoned_by(user, timezone.now() - EMPTY_CONVERSATION_TTL).delete()
    last = LastSettings.objects.filter(user=user).first()
    if last is None:
        return Conversation.objects.create(owner=user, team=team, model=catalog.DEFAULT_MODEL_KEY)
    # The wire format too, when the model is still served over it: a team testing an app
    # built on the Messages SDK keeps testing in Messages.
    try:
        served = catalog.get_model(last.model).formats
    except catalog.UnknownModel:
        served = (CHAT,)
    fmt = last.wire_format if last.wire_format in served else CHAT
    values = sampling_values(last.model, last.params)
    if fmt != CHAT:
        values = params.applicable(catalog.get_model(last.model), values, fmt)
    return Conversation.objects.create(
        owner=user,
        team=team,
        model=last.model,
        wire_format=fmt,
        params=values,
        system_prompt=last.system_prompt,
    )


@require_GET
@login_required
def home(request: AuthenticatedHttpRequest) -> HttpResponse:
    """Open the user's newest conversation of the current space if it is still empty, else
    start a fresh one there. A viewer, who starts none, gets the team's newest."""
    space = current_space(request)
    in_space = (
        Conversation.objects.visible_to(request.user)
        .in_space(space.team_id if space else None)
        .filter(group__isnull=True)
    )
    if space is not None and not space.can_run():
        newest = in_space.first()
        if newest is None:
            context = {"space": space}
            return render(request, "chat/empty_space.html", context)
        return redirect("conversation", pk=newest.pk)
    newest = in_space.filter(owner=request.user).first()
    if newest is None or newest.messages.exists():
        newest = _new_conversation(request.user, space)
    return redirect("conversation", pk=newest.pk)


@require_POST
@login_required
def conversation_new(request: AuthenticatedHttpRequest) -> HttpResponse:
    conversation = _new_conversation(request.user, current_space(request))
    return redirect("conversation", pk=conversation.pk)


@require_POST
@login_required
def space_switch(request: AuthenticatedHttpRequest) -> HttpResponse:
    """The header's switcher: Personal, or a team the user belongs to (else 404)."""
    chosen = request.POST.get("space", "")
    team = None if chosen == "personal" else get_team_for_user(request.user, chosen)[0]
    set_space(request, team)
    return redirect("home")


def _head_context(user, conversation: Conversation) -> dict[str, Any]:
    """The conversation header: its space, which key pays, and where it can move."""
    provider = model_or_default(conversation.model).provider
    context = paying_key_context(user, conversation, provider)
    movable = conversation.team_id is None and conversation.owner_id == user.pk
    context["move_targets"] = (
        [
            m.team
            for m in Membership.objects.select_related("team")
            .filter(user=user)
            .order_by("team__name")
            if m.can_run()
        ]
        if movable
        else []
    )
    context["conversation"] = conversation
    return context


def _settings_oob(
    request: AuthenticatedHttpRequest, conversation: Conversation, status: str = ""
) -> HttpResponse:
    """The settings panel redrawn, and the header with it: another model may bill another
    provider's key."""
    context = conversation_settings_context(conversation)
    context["closed_sections"] = closed_sections(request)
    if status:
        context["status"] = status
    context.update(_head_context(request.user, conversation))
    return render(request, f"{TEMPLATE}#settings-oob", context)


@require_GET
@login_required
def conversation_detail(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    conversation = get_conversation_for_user(request.user, pk)
    # Opening a conversation enters its space, so the sidebar and new conversations follow.
    set_space(request, conversation.team)
    # ?at=<message>: open on that message's branch (a link from History or a diff).
    # ASCII digits only: isdigit() is also true of "²", which int() refuses.
    at = request.GET.get("at", "")
    context = transcript_context(conversation, int(at) if at.isascii() and at.isdigit() else None)
    context.update(conversation_settings_context(conversation))
    context.update(_head_context(request.user, conversation))
    can_run = conversation.can_run(request.user)
    context.update(
        sidebar=sidebar.first_page(request.user, conversation),
        can_run=can_run,
        presets=_space_presets(request.user, conversation),
        closed_sections=closed_sections(request),
        extra_panels=extensions.panels_html(request, conversation, can_run),
    )
    return render(request, TEMPLATE, context)


@require_POST
@login_required
def conversation_move(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """Move a personal conversation into one of the owner's teams."""
    conversation = get_conversation_for_user(request.user, pk, run=True)
    team, _ = get_team_for_user(request.user, request.POST.get("team", ""))
    try:
        conversation.move_to(team, request.user)
    except TeamError as exc:
        # Plain text: the message names the team, whose name its owner chose.
        return HttpResponse(str(exc), status=403, content_type="text/plain; charset=utf-8")
    set_space(request, team)
    messages.success(request, f"Moved to {team.name}: its members can see it now.")
    if request.htmx:
        return HttpResponseClientRedirect(reverse("conversation", args=[pk]))
    return redirect("conversation", pk=pk)


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
    try:
        space = int(request.GET["space"]) if "space" in request.GET else None
    except ValueError:
        return HttpResponseBadRequest("Not a space.")
    if space is not None and not 0 < space < 2**63:
        # Past any database id: SQLite cannot even compare a team_id with it (OverflowError).
        return HttpResponseBadRequest("Not a space.")
    page = sidebar.page(request.user, after, pinned=pinned, space=space)
    return render(request, f"{TEMPLATE}#sidebar-page", {"sidebar": page})


def form_values(post: QueryDict) -> dict[str, Any]:
    return {key: vals if len(vals) > 1 else vals[0] for key, vals in post.lists()}


@require_POST
@login_required
def conversation_settings(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """The panel changed: validate, save what is valid, answer with per-field errors.

    Switching models redraws the panel, keeping the values that still apply. A system prompt
    over the limit (or holding what cannot be stored) saves nothing: the user is still typing
    it, and sees why beside it."""
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
            too_long = exc.errors[SYSTEM_PROMPT] == SYSTEM_PROMPT_TOO_LONG
            refused = "is too long" if too_long else "cannot be stored"
            context["status"] = f"Nothing was saved: the system prompt {refused}."
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
        return _settings_oob(request, conversation)
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
    return _settings_oob(
        request, conversation, status="Parameters reset to the provider's defaults."
    )


def _space_presets(user, conversation: Conversation):
    """The presets of the conversation's space: a team's are shared by its members."""
    return Preset.objects.visible_to(user).in_space(conversation.team_id)


def _presets(
    request: AuthenticatedHttpRequest, conversation: Conversation, error: str = ""
) -> HttpResponse:
    context = {
        "conversation": conversation,
        "presets": _space_presets(request.user, conversation),
        "preset_error": error,
        "can_run": conversation.can_run(request.user),
    }
    return render(request, f"{TEMPLATE}#presets", context)


@require_POST
@login_required
def preset_save(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """Save the panel as a preset of the conversation's space (viewers cannot)."""
    conversation = get_conversation_for_user(request.user, pk, run=True)
    data = form_values(request.POST)
    name = " ".join(str(data.get("preset_name", "")).split())[:100]
    if not name:
        return _presets(request, conversation, "Give the preset a name.")
    if refused := refusal("The preset name", name):
        return _presets(request, conversation, refused)
    model = model_or_default(str(data.get("model", "")))
    system_prompt = str(data.get("system_prompt", ""))
    asked = str(data.get("wire_format", "") or CHAT)
    try:
        cleaned = clean_settings(
            model, system_prompt, params.from_form(data), asked if asked in model.formats else CHAT
        )
    except params.InvalidParams as exc:
        return _presets(request, conversation, "Fix these first: " + "; ".join(exc.errors.values()))
    values = {"model": model.key, "params": cleaned, "system_prompt": system_prompt}
    if conversation.team_id is None:
        Preset.objects.update_or_create(owner=request.user, team=None, name=name, defaults=values)
    else:
        # A team preset of that name is replaced, whoever saved it first.
        Preset.objects.update_or_create(
            team_id=conversation.team_id,
            name=name,
            defaults={**values, "owner": request.user},
        )
    return _presets(request, conversation)


@require_POST
@login_required
def preset_load(request: AuthenticatedHttpRequest, pk: int, preset_pk: int) -> HttpResponse:
    conversation = get_conversation_for_user(request.user, pk, run=True)
    preset = get_preset_for_user(request.user, preset_pk)
    model = model_or_default(preset.model)
    conversation.model = model.key
    if conversation.wire_format not in model.formats:
        conversation.wire_format = CHAT
    conversation.params = params.applicable(model, preset.params, conversation.wire_format)
    conversation.system_prompt = preset.system_prompt
    conversation.save(update_fields=["model", "wire_format", "params", "system_prompt", "updated"])
    LastSettings.remember(request.user, conversation)
    return _settings_oob(request, conversation)


@require_POST
@login_required
def preset_rename(request: AuthenticatedHttpRequest, pk: int, preset_pk: int) -> HttpResponse:
    conversation = get_conversation_for_user(request.user, pk)
    preset = get_preset_for_user(request.user, preset_pk, change=True)
    name = " ".join((request.headers.get("HX-Prompt") or request.POST.get("name", "")).split())
    if not name:
        return _presets(request, conversation, "A preset needs a name.")
    if refused := refusal("The preset name", name):
        return _presets(request, conversation, refused)
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
    get_preset_for_user(request.user, preset_pk, change=True).delete()
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


def _uploads_in_the_last_minute(user_id: int, adding: int) -> int:
    """How many images the user uploaded in this minute's window before these `adding`."""
    key = f"attachments:uploads:{user_id}"
    try:
        cache.add(key, 0, timeout=60)
        return cache.incr(key, adding) - adding
    except ValueError:  # expired between add and incr: a new window
        cache.set(key, adding, timeout=60)
        return 0
    except Exception:
        return 0  # the cache (Redis) is away: the row count still limits new images


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
    # An image stored before makes no new row, but is decoded all the same: count uploads too.
    recent = max(recent, _uploads_in_the_last_minute(request.user.pk, len(uploads)))
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
        error = refusal("The title", title) or ("" if title else "A title cannot be empty.")
        if not error:
            conversation.title = title
            conversation.save(update_fields=["title"])
            return render(request, f"{TEMPLATE}#sidebar-item", {"c": conversation})
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

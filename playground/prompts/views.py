"""The prompt library's pages, the access tokens page and the read API. Thin: every view loads
through library.get_prompt_for_user (404 for strangers, 403 for viewers who try to change)."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_not_required, login_required
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from playground.accounts.models import Membership, Team
from playground.accounts.spaces import current_space
from playground.chat.access import get_conversation_for_user
from playground.chat.diffing import params_diff, word_diff
from playground.http import AuthenticatedHttpRequest, HtmxHttpRequest
from playground.prompts import library, play
from playground.prompts.forms import ROLES, NewPromptForm, VersionForm
from playground.prompts.models import (
    SCOPE_PROMPTS_READ,
    AccessToken,
    LabelMove,
    Prompt,
    PromptError,
    PromptSession,
    PromptVersion,
    hash_token,
)
from playground.providers.storable import refusal, unstorable


def _version(prompt: Prompt, number: int) -> PromptVersion:
    try:
        return library.resolve(prompt, number=number)
    except LookupError:
        raise Http404("No such version") from None


def _may_create(space: Membership | None) -> bool:
    return space is None or space.can_run()


@require_GET
@login_required
def prompt_list(request: AuthenticatedHttpRequest) -> HttpResponse:
    """The current space's prompts."""
    space = current_space(request)
    prompts = (
        Prompt.objects.visible_to(request.user)
        .in_space(space.team_id if space else None)
        .prefetch_related("labels__version")
    )
    return render(
        request,
        "prompts/list.html",
        {"prompts": prompts, "space": space, "may_create": _may_create(space)},
    )


@require_http_methods(["GET", "POST"])
@login_required
def prompt_new(request: AuthenticatedHttpRequest) -> HttpResponse:
    space = current_space(request)
    if not _may_create(space):
        raise PermissionDenied("Viewers cannot make prompts in the team.")
    form = NewPromptForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        team = space.team if space else None
        try:
            with transaction.atomic():
                prompt = Prompt.objects.create(
                    owner=request.user,
                    team=team,
                    name=form.cleaned_data["name"],
                    description=form.cleaned_data["description"],
                )
                prompt.add_version(request.user, **form.version_fields())
        except IntegrityError:
            form.add_error("name", "There is already a prompt with that name in this space.")
        else:
            messages.success(request, f"Saved {prompt.name} version 1.")
            return redirect("prompts:detail", prompt.pk)
    return render(
        request, "prompts/edit.html", {"form": form, "space": space, "roles": ROLES, "prompt": None}
    )


@require_GET
@login_required
def prompt_detail(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    return _detail(request, library.get_prompt_for_user(request.user, pk))


@require_POST
@login_required
def prompt_rename(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """A new name in the same space; a clash or a bad name comes back in the form (422 to
    htmx, which swaps it in; the whole page with the error otherwise)."""
    prompt = library.get_prompt_for_user(request.user, pk, edit=True)
    try:
        prompt.rename(request.POST.get("name", ""), request.user)
    except PromptError as exc:
        refused = not prompt.can_change_name(request.user)
        if request.htmx and not refused:
            context = {"prompt": prompt, "rename_error": str(exc), "typed": request.POST}
            return render(request, "prompts/detail.html#rename-form", context, status=422)
        messages.error(request, str(exc))
        return _detail(request, prompt, 403 if refused else 400)
    messages.success(request, f"Renamed to {prompt.name}: the read API answers to that name now.")
    url = reverse("prompts:detail", args=[prompt.pk])
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


@require_http_methods(["GET", "POST"])
@login_required
def prompt_delete(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """GET: what deleting would do, and the button (a page, so it needs no script and the
    keyboard reaches it like any form). POST: delete, or archive when replies came from it
    (Prompt.delete_by says why)."""
    prompt = library.get_prompt_for_user(request.user, pk, edit=True)
    if not prompt.can_change_name(request.user):
        messages.error(
            request,
            f"{prompt.name} has a protected label: only the team's owners and admins delete it.",
        )
        return _detail(request, prompt, 403)
    if request.method == "GET":
        context = {"prompt": prompt, "replies": prompt.replies_count()}
        return render(request, "prompts/delete.html", context)
    name = prompt.name
    try:
        archived = prompt.delete_by(request.user)
    except PromptError as exc:  # a role changed since the check above
        raise PermissionDenied(str(exc)) from None
    kept = " Replies made from it keep their record; History still filters by it."
    messages.success(request, f"Deleted {name}.{kept if archived else ''}")
    return redirect("prompts:list")


def _detail(request: AuthenticatedHttpRequest, prompt: Prompt, status: int = 200) -> HttpResponse:
    versions = list(prompt.versions.select_related("created_by"))
    labels = list(prompt.labels.select_related("version", "updated_by"))
    moves = (
        LabelMove.objects.filter(label__prompt=prompt)
        .select_related("label", "from_version", "to_version", "moved_by")
        .order_by("-moved", "-id")[:50]
    )
    return render(
        request,
        "prompts/detail.html",
        {
            "prompt": prompt,
            "versions": versions,
            "labels": labels,
            "moves": moves,
            "can_edit": prompt.can_edit(request.user),
            "can_admin": prompt.can_admin(request.user),
            "can_change_name": prompt.can_change_name(request.user),
        },
        status=status,
    )


@require_GET
@login_required
def version_detail(request: AuthenticatedHttpRequest, pk: int, number: int) -> HttpResponse:
    prompt = library.get_prompt_for_user(request.user, pk)
    version = _version(prompt, number)
    return render(
        request,
        "prompts/version.html",
        {
            "prompt": prompt,
            "version": version,
            "variables": library.variables_of(version),
            "labels": version.labels.all(),
            "params_json": json.dumps(version.params, indent=2, ensure_ascii=False),
            "tools_json": json.dumps(version.tools, indent=2, ensure_ascii=False),
            "format_json": json.dumps(version.response_format, indent=2, ensure_ascii=False),
            "can_edit": prompt.can_edit(request.user),
        },
    )


@require_http_methods(["GET", "POST"])
@login_required
def version_new(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """Save a change: always a new version, filled from `?from=N` (default: the newest)."""
    prompt = library.get_prompt_for_user(request.user, pk, edit=True)
    base = None
    if request.method == "GET":
        try:
            base = library.resolve(prompt, number=int(request.GET.get("from") or 0) or None)
        except (LookupError, ValueError):
            base = None
    form = VersionForm(
        request.POST or None,
        initial=VersionForm.initial_from(base) if base else None,
        messages=base.messages if base else None,
    )
    if request.method == "POST" and form.is_valid():
        version = prompt.add_version(request.user, **form.version_fields())
        messages.success(request, f"Saved version {version.number}.")
        return redirect("prompts:detail", prompt.pk)
    return render(
        request,
        "prompts/edit.html",
        {"form": form, "prompt": prompt, "base": base, "roles": ROLES},
    )


@require_POST
@login_required
def version_restore(request: AuthenticatedHttpRequest, pk: int, number: int) -> HttpResponse:
    """Roll back by copying an old version into a new one (the old one stays as it was)."""
    prompt = library.get_prompt_for_user(request.user, pk, edit=True)
    old = _version(prompt, number)
    version = prompt.add_version(
        request.user,
        system_prompt=old.system_prompt,
        messages=old.messages,
        model=old.model,
        wire_format=old.wire_format,
        params=old.params,
        tools=old.tools,
        response_format=old.response_format,
        note=f"Restored from version {old.number}",
    )
    messages.success(request, f"Version {old.number} restored as version {version.number}.")
    return redirect("prompts:detail", prompt.pk)


@require_GET
@login_required
def version_diff(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """Two versions side by side: the texts word by word, the settings name by name."""
    prompt = library.get_prompt_for_user(request.user, pk)
    try:
        a, b = int(request.GET.get("a", "")), int(request.GET.get("b", ""))
    except ValueError:
        return render(
            request,
            "prompts/diff.html",
            {"prompt": prompt, "error": "Pick two versions to compare."},
            status=400,
        )
    left, right = _version(prompt, a), _version(prompt, b)
    texts = [("System prompt", word_diff(left.system_prompt, right.system_prompt))]
    count = max(len(left.messages), len(right.messages))
    for i in range(count):
        lm = left.messages[i] if i < len(left.messages) else {}
        rm = right.messages[i] if i < len(right.messages) else {}
        role = rm.get("role") or lm.get("role") or "user"
        texts.append(
            (f"Message {i + 1} ({role})", word_diff(lm.get("content", ""), rm.get("content", "")))
        )
    settings_left = {"model": left.model, **left.all_params()}
    settings_right = {"model": right.model, **right.all_params()}
    changes = [
        {"name": c.name, "left": _shown(c.left), "right": _shown(c.right)}
        for c in params_diff(settings_left, settings_right)
    ]
    return render(
        request,
        "prompts/diff.html",
        {
            "prompt": prompt,
            "left": left,
            "right": right,
            "texts": texts,
            "changes": changes,
            "versions": prompt.versions.all(),
        },
    )


def _shown(value: Any) -> str:
    if value is None:
        return "—"
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


@require_POST
@login_required
def label_set(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """Point a label (new or existing) at a version: also how a rollback moves production."""
    prompt = library.get_prompt_for_user(request.user, pk, edit=True)
    try:
        version = _version(prompt, int(request.POST.get("version", "")))
    except ValueError:
        messages.error(request, "Pick a version for the label.")
        return redirect("prompts:detail", prompt.pk)
    try:
        label = prompt.set_label(request.POST.get("name", ""), version, request.user)
    except PromptError as exc:
        messages.error(request, str(exc))
        status = 403 if "protected" in str(exc) else 400
        return _detail(request, prompt, status)
    messages.success(request, f"{label.name} now points at version {version.number}.")
    return redirect("prompts:detail", prompt.pk)


@require_POST
@login_required
def label_protect(request: AuthenticatedHttpRequest, pk: int, label_pk: int) -> HttpResponse:
    prompt = library.get_prompt_for_user(request.user, pk, admin=True)
    label = prompt.labels.filter(pk=label_pk).first()
    if label is None:
        raise Http404("No such label")
    protected = request.POST.get("protected") == "1"
    prompt.protect_label(label, protected, request.user)
    state = "protected" if protected else "no longer protected"
    messages.success(request, f"{label.name} is {state}.")
    return redirect("prompts:detail", prompt.pk)


@require_POST
@login_required
def version_open(request: AuthenticatedHttpRequest, pk: int, number: int) -> HttpResponse:
    """Open a version in the playground: a new conversation in the prompt's space."""
    prompt = library.get_prompt_for_user(request.user, pk)
    if not prompt.can_edit(request.user):
        raise PermissionDenied("Viewers cannot run prompts in the team.")
    conversation = play.open_in_playground(_version(prompt, number), request.user)
    return redirect("conversation", conversation.pk)


@require_POST
@login_required
def playground_save(request: AuthenticatedHttpRequest, conversation_pk: int) -> HttpResponse:
    """Save the playground's current model, parameters and system prompt as a new version."""
    conversation = get_conversation_for_user(request.user, conversation_pk, run=True)
    if not PromptSession.objects.filter(conversation=conversation).exists():
        raise Http404("This conversation was not opened from a prompt.")
    version = play.save_from_playground(conversation, request.user)
    messages.success(
        request, f"Saved as {version.prompt.name} version {version.number}; the panel uses it now."
    )
    return redirect("conversation", conversation.pk)


# -- personal access tokens ---------------------------------------------------------------------


def _token_spaces(user) -> list[Team]:
    return list(Team.objects.visible_to(user).order_by("name"))


@never_cache
@require_http_methods(["GET", "POST"])
@login_required
def tokens(request: AuthenticatedHttpRequest) -> HttpResponse:
    """Personal access tokens for the read API: made here, shown once, revocable."""
    teams = _token_spaces(request.user)
    shown, error = "", ""
    if request.method == "POST":
        name = " ".join(request.POST.get("name", "").split())[:100]
        space = request.POST.get("space", "personal")
        team = next((t for t in teams if str(t.pk) == space), None)
        if not name:
            error = "Give the token a name, so you can tell it apart later."
        elif refused := refusal("The name", name):
            error = refused
        elif space != "personal" and team is None:
            error = "Pick a space you belong to."
        else:
            _, shown = AccessToken.issue(request.user, name=name, team=team)
    context = {
        "tokens": AccessToken.objects.filter(user=request.user).select_related("team"),
        "teams": teams,
        "shown": shown,
        "error": error,
    }
    return render(request, "prompts/tokens.html", context, status=400 if error else 200)


@require_POST
@login_required
def token_revoke(request: AuthenticatedHttpRequest, token_pk: int) -> HttpResponse:
    token = AccessToken.objects.filter(user=request.user, pk=token_pk).first()
    if token is None:
        raise Http404("No such token")
    token.revoke()
    messages.success(request, f"Token {token.name} revoked: it no longer works.")
    return redirect("prompts:tokens")


# -- read API -----------------------------------------------------------------------------------


def _api_error(status: int, message: str) -> JsonResponse:
    response = JsonResponse({"error": message}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="prompts"'
    return response


def _token_from(request: HttpRequest) -> AccessToken | None:
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        return None
    token = (
        AccessToken.objects.live()
        .select_related("user")
        .filter(token_hash=hash_token(secret.strip()))
        .first()
    )
    if token is None or token.scope != SCOPE_PROMPTS_READ:
        return None
    return token


@login_not_required
@never_cache
@require_GET
def api_prompt(request: HttpRequest, name: str) -> JsonResponse:
    """`GET /api/prompts/<name>?label=production` (or `?version=3`, or neither: the newest).

    Only a bearer token counts, never the session: a page's cookies cannot read through
    here, so no CSRF question arises. The token reads its own space's prompts, as its user
    sees them now (a user who left the team reads nothing of it)."""
    token = _token_from(request)
    if token is None:
        return _api_error(401, "Send a valid access token: Authorization: Bearer <token>.")
    now = timezone.now()
    if token.last_used is None or (now - token.last_used).total_seconds() > 60:
        AccessToken.objects.filter(pk=token.pk).update(last_used=now)
    # No prompt's name holds what cannot be stored, and PostgreSQL refuses a NUL in a lookup.
    prompts = Prompt.objects.visible_to(token.user).in_space(token.team_id)
    prompt = None if unstorable(name) else prompts.filter(name=name).first()
    if prompt is None:
        return _api_error(404, f"No prompt named {name!r} in this token's space.")
    label = request.GET.get("label") or None
    raw_number = request.GET.get("version") or None
    if label and raw_number:
        return _api_error(400, "Ask for a label or a version, not both.")
    try:
        number = int(raw_number) if raw_number else None
    except ValueError:
        return _api_error(400, "version must be a number.")
    try:
        version = library.resolve(prompt, label=label, number=number)
    except LookupError as exc:
        return _api_error(404, str(exc))
    return JsonResponse(library.version_json(version))

"""Compare and sweep pages: set up, open (the live page), diff two columns, continue a
column in the playground, and the list of them. Thin: the forms go to setup.py, the
permission decisions to access.py, the sending to engine.py (through the socket)."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.template.defaultfilters import pluralize
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from playground.accounts.models import Membership
from playground.accounts.spaces import current_space
from playground.chat import runs
from playground.chat.diffing import params_diff, word_diff
from playground.chat.models import Conversation, Message, RunGroup
from playground.compare import access, contexts, setup
from playground.http import AuthenticatedHttpRequest, HtmxHttpRequest
from playground.prompts.models import Prompt, PromptVersion
from playground.providers import catalog
from playground.providers.specs import FORMAT_LABELS

TEMPLATE = "compare/group.html"


def _space_for_new(request: AuthenticatedHttpRequest) -> Membership | None:
    """The current space, where a new compare or sweep goes; a viewer starts none there."""
    space = current_space(request)
    if space is not None and not space.can_run():
        raise PermissionDenied(f"Viewers cannot start compares or sweeps in {space.team.name}.")
    return space


def _column_from(post, n: int) -> setup.ColumnSetup:
    values = setup.parse_param_lines(post.get(f"c{n}-params", ""))
    version = post.get(f"c{n}-prompt_version", "").strip()
    return setup.ColumnSetup(
        model=post.get(f"c{n}-model", ""),
        wire_format=post.get(f"c{n}-wire_format", "") or "chat",
        system_prompt=post.get(f"c{n}-system_prompt", ""),
        params=values,
        # ASCII digits only: isdigit() is also true of "²", which int() refuses.
        prompt_version=int(version) if version.isascii() and version.isdigit() else None,
    )


def _column_data(post, n: int) -> dict[str, Any]:
    """A column's fields as posted, so a refused form comes back as it was filled."""
    fields = ("model", "wire_format", "system_prompt", "params", "prompt_version")
    return {"n": n, **{name: post.get(f"c{n}-{name}", "") for name in fields}}


def _form_context(request, count: int, errors: list[str], kind: str) -> dict[str, Any]:
    space = current_space(request)
    return {
        "count": count,
        "forms": [_column_data(request.POST, n) for n in range(1, count + 1)],
        "errors": errors,
        "models": catalog.all_models(),
        "wire_formats": list(FORMAT_LABELS.items()),
        "data": request.POST if request.method == "POST" else {},
        "max_columns": setup.limits()["MAX_COLUMNS"],
        "max_cells": setup.limits()["MAX_SWEEP_CELLS"],
        "kind": kind,
        "space": space,
        "prompt_versions": _prompt_versions(request.user, space),
    }


def _prompt_versions(user, space: Membership | None) -> list[PromptVersion]:
    """The prompt versions a column may start from: the current space's, newest first."""
    prompts = Prompt.objects.visible_to(user).in_space(space.team_id if space else None)
    versions = PromptVersion.objects.filter(prompt__in=prompts).select_related("prompt")
    return list(versions.order_by("prompt__name", "-number")[:100])


def _count(raw: str | None, default: int = 2) -> int:
    most = setup.limits()["MAX_COLUMNS"]
    try:
        return min(max(int(raw or default), setup.MIN_COLUMNS), most)
    except ValueError:
        return default


@require_http_methods(["GET", "POST"])
@login_required
def compare_new(request: AuthenticatedHttpRequest) -> HttpResponse:
    space = _space_for_new(request)
    count = _count(request.POST.get("columns") or request.GET.get("columns"))
    errors: list[str] = []
    if request.method == "POST":
        try:
            title = setup.clean_title(request.POST.get("title", ""))
            columns = [_column_from(request.POST, n) for n in range(1, count + 1)]
            repeat = _repeat(request.POST.get("repeat"))
            planned = setup.plan_columns(
                columns,
                repeat=repeat,
                vary_seed=request.POST.get("vary_seed") == "on",
                user=request.user,
                team_id=space.team_id if space is not None else None,
            )
        except ValueError as exc:
            errors = [str(exc)]
        except setup.SetupError as exc:
            errors = exc.errors
        else:
            team = space.team if space is not None else None
            group = setup.create_compare(request.user, team, title, planned)
            return redirect("compare:group", pk=group.pk)
    context = _form_context(request, count, errors, "compare")
    return render(request, "compare/new.html", context, status=400 if errors else 200)


def _repeat(raw: str | None) -> int:
    try:
        return max(1, int(raw or 1))
    except ValueError:
        raise ValueError("Repeat takes a whole number of columns.") from None


@require_http_methods(["GET", "POST"])
@login_required
def sweep_new(request: AuthenticatedHttpRequest) -> HttpResponse:
    space = _space_for_new(request)
    errors: list[str] = []
    if request.method == "POST":
        post = request.POST
        try:
            title = setup.clean_title(post.get("title", ""))
            column = _column_from(post, 1)
            seeds = int(post.get("seeds") or 0)
            axes = [(post.get(f"axis{n}", ""), post.get(f"values{n}", "")) for n in (1, 2)]
            spec, cells = setup.plan_sweep(
                column,
                axes,
                seeds,
                post.get("prompt", ""),
                user=request.user,
                team_id=space.team_id if space is not None else None,
            )
        except ValueError as exc:
            errors = [str(exc) if "Line" in str(exc) else "Seeds takes a whole number."]
        except setup.SetupError as exc:
            errors = exc.errors
        else:
            team = space.team if space is not None else None
            group = setup.create_sweep(request.user, team, title, spec, cells)
            return redirect("compare:group", pk=group.pk)
    context = _form_context(request, 1, errors, "sweep")
    return render(request, "compare/sweep_new.html", context, status=400 if errors else 200)


@require_GET
@login_required
def group_list(request: AuthenticatedHttpRequest) -> HttpResponse:
    """Every compare and sweep the user may see, newest first: where a closed tab's run is
    found again (History links here)."""
    groups = (
        RunGroup.objects.visible_to(request.user)
        .filter(kind__in=access.KINDS)
        .select_related("team", "owner")[:200]
    )
    return render(request, "compare/list.html", {"groups": groups})


def _baseline(request) -> int:
    try:
        return max(0, int(request.GET.get("baseline", 0)))
    except ValueError:
        return 0


@require_GET
@login_required
def group_page(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    group, can_run = access.get_group_and_role(request.user, pk)
    context = contexts.group_context(group, _baseline(request))
    context["can_run"] = can_run
    context["can_delete"] = group.may_delete(request.user)
    if group.kind == RunGroup.Kind.COMPARE:
        context["variables"] = contexts.variable_fields(group, request.user)
    return render(request, TEMPLATE, context)


@require_GET
@login_required
def group_diff(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """The word diff of two columns' latest replies (and of their parameters)."""
    group = access.get_group_for_user(request.user, pk)
    left = _member(group, request.GET.get("a"))
    right = _member(group, request.GET.get("b"))
    texts = [_latest_text(c) for c in (left, right)]
    context = {
        "left": left,
        "right": right,
        "diff": word_diff(*texts),
        "params": params_diff(left.params, right.params),
        "system_changed": left.system_prompt != right.system_prompt,
    }
    return render(request, f"{TEMPLATE}#diff", context)


def _member(group: RunGroup, raw: str | None) -> Conversation:
    try:
        return group.conversations.get(pk=int(raw or ""))
    except (Conversation.DoesNotExist, ValueError):
        raise Http404("No such column") from None


def _latest_text(conversation: Conversation) -> str:
    reply = contexts.latest_reply(conversation)
    return reply.text if reply else ""


@require_POST
@login_required
def column_continue(request: AuthenticatedHttpRequest, pk: int, column: int) -> HttpResponse:
    """The column leaves the compare and becomes a plain conversation of the same space:
    the sidebar lists it, the playground opens it with its model, format and settings."""
    group = access.get_group_for_user(request.user, pk, run=True)
    conversation = _member(group, str(column))
    if conversation.messages.filter(status=Message.Status.STREAMING).exists():
        messages.error(request, "Wait for the column's reply to finish (or stop it) first.")
        return redirect("compare:group", pk=group.pk)
    conversation.group = None
    conversation.save(update_fields=["group", "updated"])
    return redirect("conversation", pk=conversation.pk)


@require_http_methods(["GET", "POST"])
@login_required
def group_delete(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """GET: what deleting the group does, and the button (a page: no script needed, the
    keyboard reaches it like any form). POST: stop its runs still streaming, then delete it
    with its conversations and their messages.

    History deletes from a row with htmx (`from=history`): the answer removes every row of
    the group from the list and says what was deleted."""
    group = access.get_group_for_user(request.user, pk)
    if not group.may_delete(request.user):
        raise PermissionDenied(
            "Only whoever started it (while they may run in the team) and the team's owners"
            " and admins delete a compare or sweep."
        )
    members = Conversation.objects.filter(group=group)
    if request.method == "GET":
        replies = Message.objects.filter(conversation__in=members, role=Message.Role.ASSISTANT)
        context = {
            "group": group,
            "conversations": members.count(),
            "replies": replies.count(),
            "streaming": replies.filter(status=Message.Status.STREAMING).count(),
        }
        return render(request, "compare/delete.html", context)
    ids = list(members.values_list("pk", flat=True))
    name = str(group)
    # The one stop function, before the rows go: a run still streaming is told to close its
    # upstream request in whatever process it lives, and its final save finds no row.
    runs.stop_sync(members)
    group.delete()  # its conversations, and their messages, go with it (CASCADE)
    done = f"Deleted {name} and its {len(ids)} conversation{pluralize(len(ids))}."
    if request.htmx and request.POST.get("from") == "history":
        context = {"removed": ids, "notice": done}
        return render(request, "review/history.html#group-deleted", context)
    messages.success(request, done)
    if request.htmx:
        return HttpResponseClientRedirect(reverse("compare:list"))
    return redirect("compare:list")

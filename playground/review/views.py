from __future__ import annotations

from django.contrib import messages as flash
from django.contrib.auth.decorators import login_not_required, login_required
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.text import slugify
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from playground.accounts.models import Membership, Team
from playground.chat.access import get_conversation_for_user
from playground.chat.models import Message
from playground.http import AuthenticatedHttpRequest, HtmxHttpRequest
from playground.review import diffs, exports, history, imports, search, sharing
from playground.review.models import ReviewStatus

TEMPLATE = "review/history.html"
RUN_ROLES = [role for role in Membership.Role if role != Membership.Role.VIEWER]


@require_GET
@login_required
def history_page(request: HtmxHttpRequest) -> HttpResponse:
    """Everything the user may see, filtered and searched by the query string (bookmarkable).

    htmx asks for the results alone when a filter changes, and for the next rows with
    "Show more" (a request carrying a cursor); a plain visit renders the whole page."""
    form = history.HistoryForm(request.user, request.GET)
    context: dict = {
        "form": form,
        "page": None,
        "max_query_chars": search.MAX_QUERY_CHARS,
        "review_choices": ReviewStatus.Status.choices,
    }
    status = 200
    try:
        after = history.parse_cursor(request.GET.get("after"))
    except history.InvalidCursor:
        form.is_valid()
        context["error"] = "That link does not name a page of History."
        status = 400
    else:
        if form.is_valid():
            context["page"] = history.page(request.user, form, after)
            context["searching"] = form.cleaned_data.get("q") is not None
        else:
            status = 400
    if request.htmx and status == 200 and after is not None:
        return render(request, f"{TEMPLATE}#rows", context)
    if request.htmx and request.htmx.target == "history-results":
        return render(request, f"{TEMPLATE}#results", context, status=status)
    return render(request, TEMPLATE, context, status=status)


# The shared page has no script, no form and nothing from another origin.
SHARED_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'none'"
)


@require_http_methods(["GET", "POST"])
@login_required
def share_new(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """Make a link to the conversation (or, with ?message=, one reply): the form, then the
    link, shown once. Publishing follows sending: a team's viewers are read-only (403)."""
    conversation = get_conversation_for_user(request.user, pk, run=True)
    message = None
    raw = request.POST.get("message") or request.GET.get("message")
    if raw:
        try:
            message = conversation.messages.get(pk=int(raw))
        except (ValueError, Message.DoesNotExist):
            raise Http404("No such message") from None
    context: dict = {
        "conversation": conversation,
        "message": message,
        "expiry_choices": list(sharing.EXPIRY_CHOICES),
    }
    if request.method == "POST":
        expiry = request.POST.get("expires", "never")
        if expiry not in sharing.EXPIRY_CHOICES:
            context["error"] = "Choose one of the offered lifetimes."
            return render(request, "review/share_new.html", context, status=400)
        _, token = sharing.create(
            request.user,
            conversation,
            message=message,
            expires_in=sharing.EXPIRY_CHOICES[expiry],
            show_names=request.POST.get("show_names") == "on",
        )
        context["url"] = request.build_absolute_uri(reverse("review:shared", args=[token]))
        response = render(request, "review/share_new.html", context)
        response["Cache-Control"] = "no-store"  # the token is in this page, once
        return response
    return render(request, "review/share_new.html", context)


@require_GET
@login_required
def share_links(request: AuthenticatedHttpRequest) -> HttpResponse:
    return render(request, "review/share_links.html", {"links": sharing.listing(request.user)})


@require_POST
@login_required
def share_revoke(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    sharing.revoke(request.user, pk)
    return redirect("review:share_links")


@require_GET
@login_not_required
def shared_page(request: HttpRequest, token: str) -> HttpResponse:
    """The read-only page behind a link: no login, no ids, no names unless chosen."""
    link = sharing.open_link(token)
    context = {
        "conversation": link.conversation,
        "messages": sharing.shown_messages(link),
        "single": link.message_id is not None,
        "show_names": link.show_names,
    }
    response = render(request, "review/shared.html", context)
    response["Content-Security-Policy"] = SHARED_CSP
    response["X-Robots-Tag"] = "noindex, nofollow"
    response["Referrer-Policy"] = "no-referrer"  # the token is in the URL
    response["Cache-Control"] = "no-store"  # a revoked link must stop working at once
    return response


@require_GET
@login_required
def export(request: AuthenticatedHttpRequest, pk: int, fmt: str) -> StreamingHttpResponse:
    """The conversation as a download, written as it is read (see review/exports.py)."""
    conversation = get_conversation_for_user(request.user, pk)
    if fmt not in exports.FORMATS:
        raise Http404("No such format")
    write, content_type, extension = exports.FORMATS[fmt]
    response = StreamingHttpResponse(write(conversation), content_type=content_type)
    name = slugify(conversation.display_title)[:60] or "conversation"
    response["Content-Disposition"] = f'attachment; filename="{name}.{extension}"'
    response["X-Content-Type-Options"] = "nosniff"
    return response


@require_GET
@login_required
def diff_page(request: AuthenticatedHttpRequest) -> HttpResponse:
    """Two replies side by side (?a=&b=), each loaded through the user's own visibility; with
    only ?a=, a picker of the replies to set beside it."""
    left = diffs.get_reply_for_user(request.user, request.GET.get("a"))
    if not request.GET.get("b"):
        q = request.GET.get("q", "")
        context = {"left": left, "candidates": diffs.candidates(request.user, left), "q": q}
        if q:
            try:
                context["found"] = diffs.found_elsewhere(request.user, left, q)
            except search.InvalidQuery as exc:
                context["search_error"] = str(exc)
        return render(request, "review/diff.html", context)
    right = diffs.get_reply_for_user(request.user, request.GET.get("b"))
    return render(request, "review/diff.html", {"left": left, "diff": diffs.diff(left, right)})


def _spaces(user) -> list[tuple[str, str]]:
    """Where the user may import: their personal space and teams they may run in."""
    teams = Team.objects.filter(memberships__user=user, memberships__role__in=RUN_ROLES).order_by(
        "name"
    )
    return [("", "Personal")] + [(str(team.pk), team.name) for team in teams]


@require_http_methods(["GET", "POST"])
@login_required
def import_page(request: AuthenticatedHttpRequest) -> HttpResponse:
    """Upload a JSON export or OpenAI chat JSONL; all of it is imported, or none."""
    spaces = _spaces(request.user)
    context: dict = {
        "spaces": spaces,
        "max_mb": imports.MAX_BYTES // (1024 * 1024),
        "max_messages": imports.MAX_MESSAGES,
        "max_depth": imports.MAX_DEPTH,
    }
    if request.method == "GET":
        return render(request, "review/import.html", context)
    space = request.POST.get("space", "")
    upload = request.FILES.get("file")
    try:
        if space not in dict(spaces):
            raise imports.Refused("Choose a space you may add conversations to.")
        if upload is None:
            raise imports.Refused("Choose a file to import.")
        if upload.size is None or upload.size > imports.MAX_BYTES:
            raise imports.Refused(f"The file is larger than {context['max_mb']} MB.")
        text = imports.decode(upload.read())
        team = Team.objects.get(pk=int(space)) if space else None
        if (upload.name or "").lower().endswith(".jsonl"):
            made = [imports.import_jsonl(request.user, team, text)]
        else:
            result = imports.import_export(request.user, team, text)
            made = result.conversations
            if result.notice():
                flash.info(request, result.notice())
    except imports.Refused as exc:
        context["error"] = str(exc)
        return render(request, "review/import.html", context, status=400)
    if len(made) == 1:
        return redirect("conversation", pk=made[0].pk)
    # A History selection: its conversations are where it came from.
    flash.success(request, f"Imported {len(made)} conversations.")
    return redirect("review:history")

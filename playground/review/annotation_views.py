"""Views for annotations, comments, mentions, labels and review status.

Thin: each loads its object through the load-and-authorize helpers (chat.access for
conversations, accounts.access for teams, annotating.get_reply_for_user for a reply, which
goes through chat.access) and hands the change to review/annotating.py."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

from django.contrib import messages as flash
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import F, QuerySet
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from playground.accounts.access import get_team_for_user
from playground.accounts.spaces import current_space
from playground.chat.access import get_conversation_for_user
from playground.chat.models import Conversation, Message
from playground.http import AuthenticatedHttpRequest, HtmxHttpRequest
from playground.review import annotating, exports
from playground.review.annotating import AnnotationError
from playground.review.models import Label

TEMPLATE = "review/annotations.html"
# A refused change answers 422 with the fragment and its error; base.html's htmx config swaps
# 422 (htmx swaps no 4xx by default), so the error shows where the change was made.
MAX_SELECTION = 500


def _bar(request: AuthenticatedHttpRequest, message: Message, status: int = 200, **extra):
    context = annotating.reply_context(request.user, message, **extra)
    return render(request, f"{TEMPLATE}#bar", context, status=status)


@require_GET
@login_required
def conversation_review(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """Every reply's annotation bar and the review status, as out-of-band swaps: the
    transcript asks once on load instead of once per reply."""
    conversation = get_conversation_for_user(request.user, pk)
    replies = list(
        _on_branch(conversation, request.GET.get("leaf", ""))
        .filter(role=Message.Role.ASSISTANT)
        .exclude(status=Message.Status.STREAMING)
        .only("pk", "conversation_id")  # the bars need no text
    )
    for message in replies:
        message.conversation = conversation
    context = {
        "conversation": conversation,
        "reviews": annotating.reviews(request.user, replies),
        "labels": list(Label.objects.for_conversation(conversation)),
        "can_annotate": annotating.can_annotate(request.user, conversation),
        "scores": range(1, 6),
        "review_status": annotating.status_of(conversation),
        "status_choices": annotating.STATUS_CHOICES,
    }
    return render(request, f"{TEMPLATE}#conversation", context)


def _on_branch(conversation: Conversation, leaf: str) -> QuerySet[Message]:
    """The conversation's messages, or (leaf: a message id) those of the branch ending there,
    the one the transcript shows."""
    messages = conversation.messages.all()
    # isascii too: str.isdigit() is true of "²", which int() refuses.
    if not (leaf.isascii() and leaf.isdigit()):
        return messages
    parents = dict(messages.values_list("pk", "parent_id"))
    path, node = [], int(leaf) if int(leaf) in parents else None
    while node is not None:
        path.append(node)
        node = parents.get(node)
    return messages.filter(pk__in=path) if path else messages


@require_GET
@login_required
def reply(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    return _bar(request, annotating.get_reply_for_user(request.user, pk))


@require_POST
@login_required
def annotate(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """One change per request: thumbs (up/down, the same again clears), a score (the same
    again clears) or the whole set of labels (from the label form)."""
    message = annotating.get_reply_for_user(request.user, pk, annotate=True)
    current = message.annotations.filter(author=request.user).first()
    changes: dict = {}
    try:
        if "thumbs" in request.POST:
            thumbs = annotating.parse_thumbs(request.POST["thumbs"])
            changes["thumbs"] = None if current and current.thumbs == thumbs else thumbs
        if "score" in request.POST:
            raw = request.POST["score"]
            score = int(raw) if raw not in ("", "clear") else None
            changes["score"] = None if current and current.score == score else score
        if "labels_form" in request.POST:
            changes["label_ids"] = [int(v) for v in request.POST.getlist("label")]
        if not changes:
            raise AnnotationError("Nothing to change.")
        annotating.annotate(request.user, message, **changes)
    except (AnnotationError, KeyError, ValueError) as exc:
        error = str(exc) if isinstance(exc, AnnotationError) else "That is not a valid rating."
        return _bar(request, message, status=422, error=error)
    return _bar(request, message)


@require_POST
@login_required
def comment(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    message = annotating.get_reply_for_user(request.user, pk, annotate=True)
    try:
        annotating.add_comment(request.user, message, request.POST.get("text", ""))
    except AnnotationError as exc:
        draft = request.POST.get("text", "")
        return _bar(request, message, status=422, error=str(exc), comments_open=True, draft=draft)
    return _bar(request, message, comments_open=True)


@require_http_methods(["GET", "POST"])
@login_required
def set_status(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """POST sets the status; GET draws it as it is (a page told that a teammate set it)."""
    if request.method == "GET":
        conversation = get_conversation_for_user(request.user, pk)
        return render(request, f"{TEMPLATE}#status", _status_context(request, conversation))
    conversation = get_conversation_for_user(request.user, pk, run=True)
    try:
        annotating.set_status(request.user, conversation, request.POST.get("status", ""))
    except AnnotationError as exc:
        context = _status_context(request, conversation, error=str(exc))
        return render(request, f"{TEMPLATE}#status", context, status=422)
    if not request.htmx:
        return redirect("conversation", pk=conversation.pk)
    return render(request, f"{TEMPLATE}#status", _status_context(request, conversation))


def _status_context(request: AuthenticatedHttpRequest, conversation: Conversation, **extra):
    return {
        "conversation": conversation,
        "review_status": annotating.status_of(conversation),
        "status_choices": annotating.STATUS_CHOICES,
        "can_annotate": annotating.can_annotate(request.user, conversation),
        **extra,
    }


# --- History: bulk status and export of a selection -----------------------------------------


def _selection(request: AuthenticatedHttpRequest) -> list[int]:
    try:
        ids = list(dict.fromkeys(int(v) for v in request.POST.getlist("c")))
    except ValueError:
        raise Http404("No such conversation") from None
    if any(abs(pk) > annotating.MAX_ID for pk in ids):
        raise Http404("No such conversation")
    return ids[:MAX_SELECTION]


@require_POST
@login_required
def bulk(request: AuthenticatedHttpRequest) -> HttpResponse:
    """History's selection: set its review status, or download it. Only conversations the
    user may see are exported, and only those they may run in change status."""
    ids = _selection(request)
    # The Referer has the filters as they are now (htmx pushes each change into the URL);
    # the form's own copy is from when the page loaded.
    try:
        referer = urlsplit(request.headers.get("Referer", "")).query
    except ValueError:  # not a URL any parser reads (`http://[::1`): the form's copy, then
        referer = ""
    back = reverse("review:history") + _back_query(referer or request.POST.get("back", ""))
    if not ids:
        flash.error(request, "Select at least one conversation first.")
        return redirect(back)
    fmt = request.POST.get("export")
    if fmt:
        return _export_selection(request, ids, fmt)
    try:
        changed, refused = annotating.bulk_set_status(
            request.user, ids, request.POST.get("status", "")
        )
    except AnnotationError as exc:
        flash.error(request, str(exc))
        return redirect(back)
    label = dict(annotating.STATUS_CHOICES)[request.POST["status"]]
    flash.success(request, f"{changed} conversation{'s' if changed != 1 else ''} set to {label}.")
    if refused:
        flash.warning(
            request, f"{refused} left unchanged: you can only read them (viewer) or they are gone."
        )
    return redirect(back)


def _back_query(raw: str) -> str:
    """The History filters to return to: re-encoded as a query string after History's own
    address, so it can never send the browser anywhere else."""
    pairs = [(k, v) for k, v in parse_qsl(raw.lstrip("?")) if k != "after"]
    return "?" + urlencode(pairs) if pairs else ""


def _export_selection(request: AuthenticatedHttpRequest, ids: list[int], fmt: str):
    if fmt not in exports.FORMATS:
        raise Http404("No such format")
    found = {c.pk: c for c in Conversation.objects.visible_to(request.user).filter(pk__in=ids)}
    chosen = [found[pk] for pk in ids if pk in found]
    if not chosen:
        raise Http404("No such conversation")
    _, content_type, extension = exports.FORMATS[fmt]
    response = StreamingHttpResponse(exports.selection(chosen, fmt), content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="history-selection.{extension}"'
    response["X-Content-Type-Options"] = "nosniff"
    return response


# --- inbox ----------------------------------------------------------------------------------


@require_GET
@login_required
def inbox(request: AuthenticatedHttpRequest) -> HttpResponse:
    rows = list(
        annotating.inbox(request.user)
        .select_related("comment__author", "comment__message__conversation")
        # Unread (NULL) first, on PostgreSQL too, where NULLs sort last by default.
        .order_by(F("read_at").asc(nulls_first=True), "-created", "-id")[:200]
    )
    items = [
        (row, annotating.render_comment(row.comment.text, {request.user.get_username()}))
        for row in rows
    ]
    return render(request, "review/inbox.html", {"items": items})


@require_POST
@login_required
def inbox_read(request: AuthenticatedHttpRequest) -> HttpResponse:
    """Mark one mention read (`mention`), or all of them."""
    raw = request.POST.get("mention")
    try:
        ids = [int(raw)] if raw else None
    except ValueError:
        raise Http404("No such mention") from None
    if ids and abs(ids[0]) > annotating.MAX_ID:
        raise Http404("No such mention")
    annotating.mark_read(request.user, ids)
    return redirect("review:inbox")


@require_POST
@login_required
def inbox_open(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """Open the reply a mention is on, marking it read."""
    mention = annotating.inbox(request.user).filter(pk=pk).select_related("comment").first()
    if mention is None:
        raise Http404("No such mention")
    annotating.mark_read(request.user, [mention.pk])
    message = Message.objects.only("conversation_id").get(pk=mention.comment.message_id)
    url = reverse("conversation", args=[message.conversation_id])
    return redirect(f"{url}#comment-{mention.comment_id}")


# --- label sets -----------------------------------------------------------------------------


@require_GET
@login_required
def labels_current(request: AuthenticatedHttpRequest) -> HttpResponse:
    membership = current_space(request)
    if membership is None:
        return redirect("review:labels_personal")
    return redirect("review:labels_team", team_id=membership.team_id)


@require_http_methods(["GET", "POST"])
@login_required
def labels_personal(request: AuthenticatedHttpRequest) -> HttpResponse:
    return _labels_page(request, None)


@require_http_methods(["GET", "POST"])
@login_required
def labels_team(request: AuthenticatedHttpRequest, team_id: int) -> HttpResponse:
    team, _ = get_team_for_user(request.user, team_id)  # members and viewers see the set
    return _labels_page(request, team)


def _labels_page(request: AuthenticatedHttpRequest, team) -> HttpResponse:
    can_manage = annotating.can_manage_labels(request.user, team)
    context: dict = {"team": team, "can_manage": can_manage}
    status = 200
    if request.method == "POST":
        if not can_manage:
            raise PermissionDenied("Only the team's owners and admins change its labels.")
        try:
            annotating.create_label(
                request.user, team, request.POST.get("name", ""), request.POST.get("colour", "")
            )
        except AnnotationError as exc:
            context["error"] = str(exc)
            status = 400
        else:
            return redirect(request.path)
    context["labels"] = list(Label.objects.in_space(team.pk if team else None, request.user.pk))
    return render(request, "review/labels.html", context, status=status)


def _label_for_manager(request: AuthenticatedHttpRequest, pk: int) -> Label:
    try:
        label = Label.objects.visible_to(request.user).select_related("team").get(pk=pk)
    except Label.DoesNotExist:
        raise Http404("No such label") from None
    if not annotating.can_manage_labels(request.user, label.team):
        raise PermissionDenied("Only the team's owners and admins change its labels.")
    return label


def _labels_url(label: Label) -> str:
    if label.team_id is None:
        return reverse("review:labels_personal")
    return reverse("review:labels_team", args=[label.team_id])


@require_POST
@login_required
def label_edit(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    label = _label_for_manager(request, pk)
    try:
        name, colour = request.POST.get("name", ""), request.POST.get("colour", "")
        annotating.update_label(label, name, colour)
    except AnnotationError as exc:
        flash.error(request, str(exc))
    return redirect(_labels_url(label))


@require_POST
@login_required
def label_delete(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    label = _label_for_manager(request, pk)
    url = _labels_url(label)
    label.delete()
    return redirect(url)

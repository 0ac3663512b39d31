"""Views of review queues: the space's Queues page, making one from a History filter, its
summary, and the reviewer's one-item-at-a-time page.

Thin: each loads its queue through queues.get_queue_for_user (and an item through
queues.get_item_for_reviewer) and hands changes to review/queues.py and
review/annotating.py, so every permission decision is in Python."""

from __future__ import annotations

from django.contrib import messages as flash
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from playground.accounts.spaces import current_space
from playground.http import AuthenticatedHttpRequest, HtmxHttpRequest
from playground.review import history, queues
from playground.review.models import QueueItem, ReviewQueue


@require_GET
@login_required
def queue_list(request: AuthenticatedHttpRequest) -> HttpResponse:
    """The current space's queues, with the visitor's own progress in those they review."""
    membership = current_space(request)
    team = membership.team if membership else None
    space = queues.Space(team, request.user.pk)
    found = list(
        ReviewQueue.objects.visible_to(request.user)
        .in_space(team.pk if team else None, request.user.pk)
        .select_related("owner")
    )
    mine = {
        row["queue"]: queues.Progress(row["finished"], row["items"])
        for row in queues.reviewer_progress(request.user, found)
    }
    rows = [(queue, mine.get(queue.pk)) for queue in found]
    can_create = team is None or bool(membership and membership.can_manage())
    context = {"space": space, "rows": rows, "can_create": can_create}
    return render(request, "review/queues.html", context)


def _space_of(request: AuthenticatedHttpRequest, form: history.HistoryForm) -> queues.Space:
    """The space the new queue belongs to: History's Space filter, else the current space.
    Only a space the user owns or administers (403, with a page that says what to do)."""
    chosen = form.cleaned_data.get("space") if form.is_valid() else None
    if not chosen:
        membership = current_space(request)
        chosen = str(membership.team_id) if membership else history.PERSONAL
    for space in queues.managed_spaces(request.user):
        if space.key == chosen:
            return space
    raise PermissionDenied("Only a space's owners and admins create review queues.")


def _refused(request: AuthenticatedHttpRequest) -> HttpResponse:
    context = {"refused": True, "history_url": reverse("review:history")}
    return render(request, "review/queue_new.html", context, status=403)


@require_http_methods(["GET", "POST"])
@login_required
def queue_new(request: AuthenticatedHttpRequest) -> HttpResponse:
    """Name the queue and pick its reviewers; the History filters ride along in the query
    string (GET) and hidden fields (POST), and the items are picked when it is made."""
    data = request.POST if request.method == "POST" else request.GET
    form = history.HistoryForm(request.user, data)
    try:
        space = _space_of(request, form)
    except PermissionDenied:
        return _refused(request)
    reviewers = list(queues.eligible_reviewers(space))
    context: dict = {
        "form": form,
        "space": space,
        "reviewers": reviewers,
        "filters": queues.describe(form) if form.is_valid() else [],
        "history_url": f"{reverse('review:history')}?{form.query_string()}",
        "max_items": queues.MAX_ITEMS,
    }
    if not form.is_valid():
        context["error"] = "These History filters are not valid; go back and fix them."
        return render(request, "review/queue_new.html", context, status=400)
    if request.method == "GET":
        context["matched"] = len(queues.matched_replies(request.user, form, space))
        context["chosen"] = {r.pk for r in reviewers} if len(reviewers) == 1 else set()
        return render(request, "review/queue_new.html", context)
    try:
        reviewer_ids = [int(v) for v in request.POST.getlist("reviewer")]
        queue = queues.create_queue(
            request.user, space, request.POST.get("name", ""), form, reviewer_ids
        )
    except (queues.QueueError, ValueError) as exc:
        context["error"] = str(exc) if isinstance(exc, queues.QueueError) else "Pick reviewers."
        context["name"] = request.POST.get("name", "")
        context["chosen"] = set(request.POST.getlist("reviewer"))
        context["matched"] = len(queues.matched_replies(request.user, form, space))
        return render(request, "review/queue_new.html", context, status=400)
    flash.success(request, f"Queue “{queue.name}” made with {queue.items.count()} replies.")
    return redirect("review:queue", pk=queue.pk)


@require_GET
@login_required
def queue_summary(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    queue = queues.get_queue_for_user(request.user, pk)
    can_manage = queues.can_manage(request.user, queue)
    context = {
        "queue": queue,
        "summary": queues.summary(queue),
        "can_manage": can_manage,
        "reviewers": list(queues.eligible_reviewers(queues.Space(queue.team, queue.owner_id)))
        if can_manage and queue.team_id
        else [],
        "is_reviewer": queues.may_review(request.user, queue),
        "scores": queues.SCORES,
        "history_url": f"{reverse('review:history')}?{queue.filter_query}",
    }
    return render(request, "review/queue_summary.html", context)


@require_POST
@login_required
def queue_reassign(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """Hand one reviewer's open items to another (someone left, or is away)."""
    queue = queues.get_queue_for_user(request.user, pk, manage=True)
    try:
        moved = queues.reassign(
            queue, int(request.POST.get("from", "")), int(request.POST.get("to", ""))
        )
    except (queues.QueueError, ValueError) as exc:
        flash.error(request, str(exc) if isinstance(exc, queues.QueueError) else "Pick both.")
    else:
        flash.success(request, f"{moved} open item{'s' if moved != 1 else ''} handed on.")
    return redirect("review:queue", pk=queue.pk)


@require_POST
@login_required
def queue_delete(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    queue = queues.get_queue_for_user(request.user, pk, manage=True)
    name = queue.name
    queue.delete()  # its items go with it; the annotations made through it stay
    flash.success(request, f"Queue “{name}” deleted.")
    if request.htmx:  # asked through htmx, for its confirmation dialog
        return HttpResponseClientRedirect(reverse("review:queues"))
    return redirect("review:queues")


@require_GET
@login_required
def queue_start(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """Where the reviewer left off: their first item not done (the first when all are)."""
    queue = queues.get_queue_for_user(request.user, pk)
    if not queues.may_review(request.user, queue):
        raise PermissionDenied("Only the queue's reviewers step through it.")
    items = QueueItem.objects.filter(queue=queue, reviewer=request.user)
    first = items.filter(done_at__isnull=True).first() or items.first()
    if first is None:
        flash.info(request, "You have no items in this queue.")
        return redirect("review:queue", pk=queue.pk)
    return redirect("review:queue_item", pk=queue.pk, position=first.position)


def _item_page(request: HtmxHttpRequest, queue: ReviewQueue, item: QueueItem, status=200, **extra):
    context = queues.item_context(request.user, queue, item, **extra)
    template = "review/queue_step.html"
    if request.htmx and not request.htmx.boosted:
        template += "#item"
    return render(request, template, context, status=status)


@require_http_methods(["GET", "POST"])
@login_required
def queue_item(request: HtmxHttpRequest, pk: int, position: int) -> HttpResponse:
    """One item, and every change to it: one `action` per POST, then the item again (the
    fragment for htmx; a redirect back to the item without script)."""
    queue = queues.get_queue_for_user(request.user, pk)
    item = queues.get_item_for_reviewer(request.user, queue, position)
    if request.method == "GET":
        return _item_page(request, queue, item)
    try:
        queues.act(request.user, item, request.POST)
    except queues.QueueError as exc:
        draft = request.POST.get("text", "")
        return _item_page(request, queue, item, status=400, error=str(exc), draft=draft)
    if not request.htmx:
        return redirect("review:queue_item", pk=queue.pk, position=item.position)
    return _item_page(request, queue, item)

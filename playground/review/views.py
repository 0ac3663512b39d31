from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from playground.http import HtmxHttpRequest
from playground.review import history, search

TEMPLATE = "review/history.html"


@require_GET
@login_required
def history_page(request: HtmxHttpRequest) -> HttpResponse:
    """Everything the user may see, filtered and searched by the query string (bookmarkable).

    htmx asks for the results alone when a filter changes, and for the next rows with
    "Show more" (a request carrying a cursor); a plain visit renders the whole page."""
    form = history.HistoryForm(request.user, request.GET)
    context: dict = {"form": form, "page": None, "max_query_chars": search.MAX_QUERY_CHARS}
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

"""The Usage page: messages, tokens, cost and mean time to first token of a space's saved
replies, by day, by model and by member, as SVG bar charts, tables and CSV downloads.

One grouped query (day × model × member) over an index of the team's replies (see _groups and
ensure_day_index) or the (created_by, created) one; the three breakdowns and the totals are
folded from its rows in Python. Who sees what is decided here, in `UsageScope`: a team's
owners and admins see every member; members and viewers see their own replies, plus the
team's total."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Context, Decimal, InvalidOperation
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import messages as flash
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db import connections, transaction
from django.db.models import Count, Sum
from django.db.models.functions import TruncDate
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from playground.accounts.access import get_team_for_user
from playground.accounts.models import Budget, Membership, Team
from playground.chat import budgets
from playground.http import AuthenticatedHttpRequest
from playground.providers import catalog

MAX_DAYS = 366
DEFAULT_DAYS = 30
METRICS = {
    "cost": "Cost (USD)",
    "messages": "Messages",
    "input_tokens": "Input tokens",
    "output_tokens": "Output tokens",
    "ttft_ms": "Mean TTFT (ms)",
}
TABLES = ("day", "model", "member")


@dataclass
class UsageScope:
    """Whose replies a person may see on a space's Usage page."""

    user: Any
    team: Team | None
    membership: Membership | None

    @property
    def sees_everyone(self) -> bool:
        """A team's owners and admins; in Personal there is only oneself."""
        return self.membership is not None and self.membership.can_manage()

    @property
    def name(self) -> str:
        return self.team.name if self.team else "Personal"

    def replies(self):
        """The replies the breakdowns are made of."""
        replies = budgets.replies_in_space(self.user, self.team.pk if self.team else None)
        if self.team is not None and not self.sees_everyone:
            replies = replies.filter(created_by=self.user)
        return replies

    def may_set_budgets(self) -> bool:
        if self.team is None:
            return self.user.has_perm("accounts.change_budget")  # site admins
        return self.sees_everyone


@dataclass
class Row:
    """One line of a breakdown (a day, a model, a member) or the totals."""

    key: Any
    label: str
    messages: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal = Decimal(0)
    ttft_sum: float = 0.0
    ttft_n: int = 0

    def add(
        self,
        messages: int,
        input_tokens: int | None,
        output_tokens: int | None,
        cost: Decimal | float | None,
        ttft_sum: float | None,
        ttft_n: int,
    ) -> None:
        self.messages += messages
        self.input_tokens += input_tokens or 0
        self.output_tokens += output_tokens or 0
        self.cost += _decimal(cost)
        self.ttft_sum += ttft_sum or 0.0
        self.ttft_n += ttft_n

    @property
    def ttft_ms(self) -> float | None:
        return round(self.ttft_sum / self.ttft_n, 1) if self.ttft_n else None

    def value(self, metric: str) -> float:
        return float(getattr(self, metric) or 0)


@dataclass
class Report:
    totals: Row
    by_day: list[Row]
    by_model: list[Row]
    by_member: list[Row]
    team_total: Row | None = None  # for members: the whole team's figures
    extra: dict[str, Any] = field(default_factory=dict)

    def table(self, name: str) -> list[Row]:
        return {"day": self.by_day, "model": self.by_model, "member": self.by_member}[name]


class RangeForm(forms.Form):
    start = forms.DateField(required=False, input_formats=["%Y-%m-%d"])
    end = forms.DateField(required=False, input_formats=["%Y-%m-%d"])
    metric = forms.ChoiceField(choices=list(METRICS.items()), required=False)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        today = timezone.localdate()
        end = data.get("end") or today
        start = data.get("start") or end - timedelta(days=DEFAULT_DAYS - 1)
        if start > end:
            raise forms.ValidationError("The range starts after it ends.")
        if (end - start).days >= MAX_DAYS:
            raise forms.ValidationError(f"Pick a range of at most {MAX_DAYS} days.")
        data.update(start=start, end=end, metric=data.get("metric") or "cost")
        return data


def report(scope: UsageScope, start: date, end: date) -> Report:
    """The figures of the replies created from `start` to `end` (whole days, site time)."""
    tz = timezone.get_current_timezone()
    since = timezone.make_aware(datetime.combine(start, time.min), tz)
    until = since + timedelta(days=(end - start).days + 1)
    days = {
        start + timedelta(days=n): Row(start + timedelta(days=n), "")
        for n in range((end - start).days + 1)
    }
    # Each group folded into its day, model and member as plain lists (a method call per
    # fold was a tenth of the page over 90 days: 7,180 groups x 4 folds).
    by_day: dict[Any, list] = {}
    by_model: dict[str, list] = {}
    by_member: dict[int | None, list] = {}
    everything: list[Any] = [0, 0, 0, 0, 0.0, 0]
    for day, model, member, *sums in _groups(scope, since, until, tz):
        if (a := by_day.get(day)) is None:
            a = by_day[day] = [0, 0, 0, 0, 0.0, 0]
        if (b := by_model.get(model)) is None:
            b = by_model[model] = [0, 0, 0, 0, 0.0, 0]
        if (c := by_member.get(member)) is None:
            c = by_member[member] = [0, 0, 0, 0, 0.0, 0]
        for i, value in enumerate(sums):
            if value:
                a[i] += value
                b[i] += value
                c[i] += value
                everything[i] += value
    for key, sums in by_day.items():
        day = date.fromisoformat(key) if isinstance(key, str) else key  # SQLite: text
        days[day] = Row(day, "")
        days[day].add(*sums)
    models = {key: Row(key, "") for key in by_model}
    for key, sums in by_model.items():
        models[key].add(*sums)
    members = {key: Row(key, "") for key in by_member}
    for key, sums in by_member.items():
        members[key].add(*sums)
    totals = Row(None, "Total")
    totals.add(*everything)
    for row in days.values():
        row.label = row.key.isoformat()
    for row in models.values():
        row.label = model_label(row.key)
    names = dict(
        get_user_model()
        .objects.filter(pk__in=[k for k in members if k])
        .values_list("pk", "username")
    )
    for row in members.values():
        row.label = names.get(row.key, "(deleted account)")
    team_total = None
    if scope.team is not None and not scope.sees_everyone:
        team_total = Row(None, f"{scope.team.name} (everyone)")
        sums = (
            budgets.replies_in_space(scope.user, scope.team.pk)
            .filter(created__gte=since, created__lt=until)
            .aggregate(**_sums())
        )
        team_total.add(*(sums[name] for name in _sums()))
    by_cost = lambda row: (-row.cost, -row.messages, row.label)  # noqa: E731
    return Report(
        totals=totals,
        by_day=[days[d] for d in sorted(days)],
        by_model=sorted(models.values(), key=by_cost),
        by_member=sorted(members.values(), key=by_cost),
        team_total=team_total,
    )


def _groups(scope: UsageScope, since: datetime, until: datetime, tz: Any) -> list[tuple]:
    """The one grouped query: a row per (day, model, member) with its sums, as plain tuples.

    Read through the cursor, not the queryset: Django's per-value converters (a Decimal and
    a date per row) and the dict per row were a fifth of the page on SQLite (measured, 90
    days: 7,180 groups). Costs come back as the backend gives them (SQLite: floats, as its
    SUM() makes them for the ORM too) and become Decimals of the field's six places once
    summed per row of the page."""
    day = LocalDay("created", tzinfo=tz)
    queryset = scope.replies().filter(created__gte=since, created__lt=until).annotate(day=day)
    connection = connections[queryset.db]
    if connection.vendor == "sqlite" and day.get_tzname() in ("UTC", None):
        # The same range said on the day, so SQLite can seek the day index (ensure_day_index).
        queryset = queryset.filter(day__gte=since.date(), day__lt=until.date())
    queryset = queryset.values("day", "model", "created_by").annotate(**_sums()).order_by()
    sql, params = queryset.query.sql_with_params()
    if connection.vendor == "postgresql":
        # Enough memory to group in a hash table (7,180 groups over 90 days: 7 MB): with
        # the default 4 MB the planner sorts every reply on disk, 1.7x slower. SET LOCAL
        # lasts to the end of this transaction. (Not on SQLite: there a transaction here
        # would be BEGIN IMMEDIATE, a write lock for a read.)
        with transaction.atomic(using=queryset.db), connection.cursor() as cursor:
            cursor.execute("SET LOCAL work_mem = '32MB'")
            cursor.execute(sql, params)
            rows = cursor.fetchall()
    else:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
    return rows


_from_float = Context(prec=15).create_decimal_from_float
SIX_PLACES = Decimal("0.000001")


def _decimal(value: Any) -> Decimal:
    if not value:
        return Decimal(0)
    if isinstance(value, float):  # SQLite sums a decimal column in floating point
        return _from_float(value).quantize(SIX_PLACES)
    return Decimal(value)


class LocalDay(TruncDate):
    """The reply's day in the site's time zone. On SQLite Django computes it with a Python
    function called once per row: 100k calls were most of the page's time (measured: 1.2 s
    of 2.3 s under cProfile). When the zone is UTC (the default) SQLite's own date() gives
    the same day in C; other zones keep Django's function, which knows their DST rules."""

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, Any]:
        if self.get_tzname() not in ("UTC", None):
            return super().as_sql(compiler, connection, **extra)
        sql, params = compiler.compile(self.lhs)
        return f"date({sql})", params


DAY_INDEX = "message_team_day_usage"


def ensure_day_index(using: str = "default", **kwargs: Any) -> None:
    """post_migrate receiver: on SQLite, an index on a team's replies by (day, model, member).

    With it the grouped query reads the index in GROUP BY order and sums as it goes; with only
    the (team, created, ...) index SQLite sorts every reply in range in a temporary B-tree
    first (measured, 100k replies over 90 days: 47 ms of CPU instead of 150 ms). Its day is
    date(created), the UTC day, which is LocalDay's SQL when the site's zone is UTC; in other
    zones the index goes unused and the page is as before. Not a Meta index: Django cannot
    declare one for a single backend, and PostgreSQL groups in a hash table without it. Made
    after every migrate, because Django's SQLite schema editor rebuilds a table it alters and
    would drop an index its models do not declare."""
    connection = connections[using]
    if connection.vendor != "sqlite":
        return
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE INDEX IF NOT EXISTS {DAY_INDEX} ON chat_message "
            "(team_id, role, date(created), model, created_by_id, created,"
            " input_tokens, output_tokens, cost, ttft_ms)"
        )


def _sums() -> dict[str, Any]:
    """The sums of a group, in Row.add's order. Names of their own: an annotation may not
    take a field's name. COUNT(*), not COUNT(id): every column read is then in the covering
    index, so PostgreSQL can answer from the index alone (an index-only scan, 30 days:
    27 ms instead of 53 ms with the heap)."""
    return {
        "n_messages": Count("*"),
        "n_input": Sum("input_tokens"),
        "n_output": Sum("output_tokens"),
        "n_cost": Sum("cost"),
        "ttft_sum": Sum("ttft_ms"),
        "ttft_n": Count("ttft_ms"),
    }


def model_label(key: str) -> str:
    try:
        model = catalog.get_model(key)
    except catalog.UnknownModel:
        return key or "(unknown)"
    return f"{model.label} · {model.provider.name}"


# --- charts -------------------------------------------------------------------------------

CHART_W, CHART_H, BAR_H = 640, 180, 22


def column_chart(rows: list[Row], metric: str) -> dict[str, Any]:
    """Vertical bars, one per day: geometry for the template's <svg>."""
    peak = max((row.value(metric) for row in rows), default=0) or 1
    width = CHART_W / max(len(rows), 1)
    bars = []
    for i, row in enumerate(rows):
        height = row.value(metric) / peak * (CHART_H - 20)
        bars.append(
            {
                "x": round(i * width + width * 0.1, 1),
                "y": round(CHART_H - height, 1),
                "w": round(max(width * 0.8, 1), 1),
                "h": round(height, 1),
                "title": f"{row.label}: {_fmt(row.value(metric), metric)}",
            }
        )
    ticks = [rows[0], rows[-1]] if rows else []
    return {
        "w": CHART_W,
        "h": CHART_H + 16,
        "bars": bars,
        "peak": _fmt(peak, metric),
        "first": ticks[0].label if ticks else "",
        "last": ticks[-1].label if ticks else "",
        "axis_y": CHART_H,
    }


def bar_chart(rows: list[Row], metric: str) -> dict[str, Any]:
    """Horizontal bars, one per model or member, labelled in the chart."""
    peak = max((row.value(metric) for row in rows), default=0) or 1
    bars = []
    for i, row in enumerate(rows):
        bars.append(
            {
                "y": i * (BAR_H + 6),
                "w": round(row.value(metric) / peak * (CHART_W - 260), 1),
                "label": row.label[:40],
                "value": _fmt(row.value(metric), metric),
                "text_y": i * (BAR_H + 6) + BAR_H * 0.7,
                "value_x": round(row.value(metric) / peak * (CHART_W - 260), 1) + 205,
            }
        )
    return {"w": CHART_W, "h": max(len(rows), 1) * (BAR_H + 6), "bars": bars}


def _fmt(value: float, metric: str) -> str:
    if metric == "cost":
        return f"${value:,.2f}"
    if metric == "ttft_ms":
        return f"{value:,.0f} ms"
    return f"{value:,.0f}"


# --- views --------------------------------------------------------------------------------


def _scope(request: AuthenticatedHttpRequest, pk: int | None) -> UsageScope:
    if pk is None:
        return UsageScope(request.user, None, None)
    team, membership = get_team_for_user(request.user, pk)  # 404 to non-members
    return UsageScope(request.user, team, membership)


@require_GET
@login_required
def usage_personal(request: AuthenticatedHttpRequest) -> HttpResponse:
    return _page(request, _scope(request, None))


@require_GET
@login_required
def usage_team(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    return _page(request, _scope(request, pk))


def _page(request: AuthenticatedHttpRequest, scope: UsageScope) -> HttpResponse:
    form = RangeForm(request.GET)
    if not form.is_valid():
        error = " ".join(str(e) for errors in form.errors.values() for e in errors)
        context = {"scope": scope, "form": form, "error": error or "Check the dates."}
        return render(request, "chat/usage.html", context, status=400)
    start, end, metric = (form.cleaned_data[k] for k in ("start", "end", "metric"))
    figures = report(scope, start, end)
    query = f"start={start.isoformat()}&end={end.isoformat()}"
    context = {
        "scope": scope,
        "form": form,
        "start": start,
        "end": end,
        "metric": metric,
        "metrics": METRICS,
        "metric_label": METRICS[metric],
        "report": figures,
        "day_chart": column_chart(figures.by_day, metric),
        "model_chart": bar_chart(figures.by_model, metric),
        "member_chart": bar_chart(figures.by_member, metric),
        "query": query,
        "time_zone": settings.TIME_ZONE,
        "limits": budgets.limits(request.user, scope.team.pk if scope.team else None),
        **_budget_context(scope),
    }
    return render(request, "chat/usage.html", context)


def _budget_context(scope: UsageScope) -> dict[str, Any]:
    if not scope.may_set_budgets():
        return {"may_set_budgets": False}
    rows = Budget.objects.filter(team=scope.team).select_related("user").order_by("user__username")
    members = []
    if scope.team is not None:
        members = list(scope.team.memberships.select_related("user").order_by("user__username"))
    return {"may_set_budgets": True, "budgets": rows, "budget_members": members}


@require_GET
@login_required
def usage_csv_personal(request: AuthenticatedHttpRequest, table: str) -> HttpResponse:
    return _csv(request, _scope(request, None), table)


@require_GET
@login_required
def usage_csv_team(request: AuthenticatedHttpRequest, pk: int, table: str) -> HttpResponse:
    return _csv(request, _scope(request, pk), table)


def _csv(request: AuthenticatedHttpRequest, scope: UsageScope, table: str) -> HttpResponse:
    if table not in TABLES:
        return HttpResponse("Pick a table: day, model or member.", status=404)
    form = RangeForm(request.GET)
    if not form.is_valid():
        error = " ".join(str(e) for errors in form.errors.values() for e in errors)
        return HttpResponse(error or "Check the dates.", status=400, content_type="text/plain")
    start, end = form.cleaned_data["start"], form.cleaned_data["end"]
    figures = report(scope, start, end)
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    slug = "personal" if scope.team is None else f"team-{scope.team.pk}"
    name = f"usage-{slug}-{table}-{start.isoformat()}-{end.isoformat()}.csv"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    writer = csv.writer(response)
    writer.writerow([table, "messages", "input_tokens", "output_tokens", "cost_usd", "ttft_ms"])
    for row in [*figures.table(table), figures.totals]:
        writer.writerow(
            safe_cell(v)
            for v in (
                row.label,
                row.messages,
                row.input_tokens,
                row.output_tokens,
                f"{row.cost:.6f}",
                "" if row.ttft_ms is None else row.ttft_ms,
            )
        )
    return response


def safe_cell(value: Any) -> str:
    """A CSV cell a spreadsheet will not run: text starting with = + - @ (or a tab or
    carriage return) would be read as a formula, so it gets a leading apostrophe."""
    text = str(value)
    if text and text[0] in "=+-@\t\r":
        return "'" + text
    return text


# --- budgets ------------------------------------------------------------------------------


EACH_MEMBER = "each"


class BudgetForm(forms.Form):
    # A membership id; "each": every member without limits of their own; empty: the space.
    member = forms.CharField(required=False, max_length=20)
    monthly_cost = forms.DecimalField(
        required=False, min_value=Decimal(0), max_digits=12, decimal_places=2
    )
    daily_messages = forms.IntegerField(required=False, min_value=0, max_value=10_000_000)


@require_POST
@login_required
def budget_save_personal(request: AuthenticatedHttpRequest) -> HttpResponse:
    """Site admins set the default limits of every personal space."""
    scope = _scope(request, None)
    if not scope.may_set_budgets():
        raise PermissionDenied("Only site admins set the budgets of personal spaces.")
    return _budget_save(request, scope, "usage", ())


@require_POST
@login_required
def budget_save_team(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """A team's owners and admins set its limits and each member's."""
    team, membership = get_team_for_user(request.user, pk, manage=True)
    return _budget_save(request, UsageScope(request.user, team, membership), "team_usage", (pk,))


def _budget_save(
    request: AuthenticatedHttpRequest, scope: UsageScope, page: str, args: tuple
) -> HttpResponse:
    form = BudgetForm(request.POST)
    if not form.is_valid():
        error = " ".join(str(e) for errors in form.errors.values() for e in errors)
        flash.error(request, f"Budget not saved: {error}")
        return redirect(page, *args)
    user = None
    member = form.cleaned_data["member"].strip()
    each_member = member == EACH_MEMBER
    if member and scope.team is None:
        flash.error(request, "Personal budgets apply to every personal space.")
        return redirect(page, *args)
    if member and not each_member:
        found = None
        if member.isdigit() and scope.team is not None:
            found = scope.team.memberships.select_related("user").filter(pk=int(member)).first()
        if found is None:
            flash.error(request, "That person is not a member of the team.")
            return redirect(page, *args)
        user = found.user
    try:
        budget = Budget.set(
            team=scope.team,
            user=user,
            monthly_cost=form.cleaned_data["monthly_cost"],
            daily_messages=form.cleaned_data["daily_messages"],
            by=request.user,
            each_member=each_member,
        )
    except InvalidOperation:
        flash.error(request, "Budget not saved: give the cost as a number of dollars.")
        return redirect(page, *args)
    whom = user.get_username() if user else ("the team" if scope.team else "personal spaces")
    if each_member:
        whom = "each member"
    flash.success(request, f"Budget for {whom} {'saved' if budget else 'removed'}.")
    return redirect(page, *args)

"""Budgets: how much of a space's limits is used, and the one check a run must pass.

`check` runs where every turn starts (services._turn, inside its transaction), before any
request is sent. It costs one small query on the budgets table; only when a budget applies,
one aggregate over the space's replies since the start of the month, read through the
(team, created) or (created_by, created) index. No budget, no aggregate."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.db.models import Count, Q, Sum
from django.utils import timezone

from playground.accounts.models import Budget, Membership
from playground.chat.models import Message

if TYPE_CHECKING:
    from django.contrib.auth.models import User

WARN_AT = Decimal("0.8")


class BudgetExceeded(Exception):
    """The run would go over a limit; the message names it and when it resets."""


@dataclass(frozen=True)
class Limit:
    """One limit in force and how much of it is used."""

    kind: str  # "cost" (per month) or "messages" (per day)
    whose: str  # "the team's", "your" ...
    used: Decimal | int
    limit: Decimal | int
    resets: datetime

    @property
    def name(self) -> str:
        if self.kind == "cost":
            return f"{self.whose} monthly cost budget of ${self.limit:.2f}"
        return f"{self.whose} daily cap of {self.limit} message{'' if self.limit == 1 else 's'}"

    @property
    def fraction(self) -> Decimal:
        if not self.limit:
            return Decimal(1)
        return Decimal(self.used) / Decimal(self.limit)

    @property
    def percent(self) -> int:
        return int(self.fraction * 100)

    @property
    def warn(self) -> bool:
        return self.fraction >= WARN_AT

    def would_exceed(self, price: Decimal) -> bool:
        if self.kind == "cost":
            # A model without a price is refused once the budget is spent.
            return self.used + price > self.limit if price else self.used >= self.limit
        return self.used + 1 > self.limit

    def resets_text(self) -> str:
        return timezone.localtime(self.resets).strftime("%d %b %Y %H:%M %Z").lstrip("0")

    def refusal(self) -> str:
        used = f"${self.used:.2f}" if self.kind == "cost" else f"{self.used}"
        return (
            f"Not sent: this would go over {self.name} ({used} used). "
            f"It resets on {self.resets_text()}."
        )


def periods(now: datetime | None = None) -> tuple[datetime, datetime, datetime, datetime]:
    """Start of today, start of tomorrow, start of this month and of the next, in the site's
    time zone: daily caps and monthly budgets reset at those boundaries."""
    local = timezone.localtime(now or timezone.now())
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    month = day.replace(day=1)
    next_month = (month + timedelta(days=32)).replace(day=1)
    return day, day + timedelta(days=1), month, next_month


def replies_in_space(user: User, team_id: int | None):
    """Every reply of a space: a team's, or the user's own personal ones."""
    replies = Message.objects.filter(role=Message.Role.ASSISTANT)
    if team_id is None:
        return replies.filter(team__isnull=True, created_by=user)
    return replies.filter(team_id=team_id)


def limits(user: User, team_id: int | None, *, now: datetime | None = None) -> list[Limit]:
    """The limits on `user` in the space, with what is used of each; [] when none applies."""
    budgets = list(Budget.objects.applying_to(user, team_id))
    if not budgets:
        return []
    if team_id is None:
        # The user's own row overrides the site's default for personal spaces.
        own = [b for b in budgets if b.user_id is not None]
        budgets = own or budgets
    day, tomorrow, month, next_month = periods(now)
    space = next((b for b in budgets if b.user_id is None or team_id is None), None)
    member = next((b for b in budgets if b.user_id is not None and team_id is not None), None)
    # Daily caps alone need only today's replies: read no further back than a limit needs.
    monthly = any(b is not None and b.monthly_cost is not None for b in (space, member))
    replies = replies_in_space(user, team_id).filter(created__gte=month if monthly else day)
    if space is None:
        replies = replies.filter(created_by=user)  # only the member's share is limited
    mine, today = Q(created_by=user), Q(created__gte=day)
    used: dict[str, Any] = replies.aggregate(
        space_cost=Sum("cost"),
        space_messages=Count("pk", filter=today),
        my_cost=Sum("cost", filter=mine),
        my_messages=Count("pk", filter=mine & today),
    )
    found: list[Limit] = []
    for budget, whose, cost, messages in (
        (space, "the team's" if team_id else "your", used["space_cost"], used["space_messages"]),
        (member, "your", used["my_cost"], used["my_messages"]),
    ):
        if budget is None:
            continue
        if budget.monthly_cost is not None:
            spent = cost or Decimal(0)
            found.append(Limit("cost", whose, spent, budget.monthly_cost, next_month))
        if budget.daily_messages is not None:
            found.append(Limit("messages", whose, messages, budget.daily_messages, tomorrow))
    return found


def check(user: User, team_id: int | None, price: Decimal | None) -> None:
    """Refuse a run (BudgetExceeded) that would take the space or the user over a limit."""
    for limit in limits(user, team_id):
        if limit.would_exceed(price or Decimal(0)):
            raise BudgetExceeded(limit.refusal())


def header_warnings(request) -> dict[str, Any]:
    """Context processor: the current space's limits at 80 % or more, for the header.

    Lazy, so a page that does not show the header pays nothing; one query on the budgets
    table otherwise, and the aggregate only when a budget applies."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    cached: list[list[Limit]] = []

    def warnings() -> list[Limit]:
        if not cached:
            team_id = request.session.get("space")
            if (
                team_id is not None
                and not Membership.objects.filter(team_id=team_id, user=user).exists()
            ):
                team_id = None
            cached.append([limit for limit in limits(user, team_id) if limit.warn])
        return cached[0]

    return {"budget_warnings": warnings}

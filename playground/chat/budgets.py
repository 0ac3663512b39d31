"""Budgets: how much of a space's limits is used, and the one check a run must pass.

`check` runs where every turn starts (services.within_budget), before any request is sent.
Which budgets exist is read from Django's cache (Redis when there are several processes,
in-process memory otherwise), refreshed when a budget is saved or deleted and at most a
minute old: a turn with no budget in force makes no query at all. Only when a budget
applies, one aggregate over the space's replies since the start of the month (or the day),
read through the (team, created, ...) or (created_by, created) index."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.core.cache import cache
from django.db.models import Count, Q, Sum
from django.db.models.signals import post_delete, post_save
from django.utils import timezone

from playground.accounts.models import Budget, Membership
from playground.chat.models import Message

if TYPE_CHECKING:
    from django.contrib.auth.models import User

WARN_AT = Decimal("0.8")
CACHE_KEY = "playground:budgets:2"  # :2 when rules gained each_member
CACHE_SECONDS = 60  # a budget changed where no signal is heard (raw SQL) counts within this


@dataclass(frozen=True)
class Rule:
    """A Budget row as cached: its scope and its limits."""

    team_id: int | None
    user_id: int | None
    monthly_cost: Decimal | None
    daily_messages: int | None
    each_member: bool = False


def _rules() -> list[Rule]:
    """Every budget of the site (a small table: a row per team and per capped member)."""
    try:
        rules = cache.get(CACHE_KEY)
    except Exception:  # the cache (Redis) is down: the database answers instead
        rules = None
    if rules is None:
        rules = [
            Rule(b.team_id, b.user_id, b.monthly_cost, b.daily_messages, b.each_member)
            for b in Budget.objects.all()
        ]
        with contextlib.suppress(Exception):  # uncached, the next turn reads them again
            cache.set(CACHE_KEY, rules, CACHE_SECONDS)
    return rules


def forget_budgets(**kwargs: Any) -> None:
    """Signal receiver: a budget was saved or deleted, so every process reads them again."""
    with contextlib.suppress(Exception):  # the entry expires within CACHE_SECONDS anyway
        cache.delete(CACHE_KEY)


def connect() -> None:
    post_save.connect(forget_budgets, sender=Budget, dispatch_uid="budgets-saved")
    post_delete.connect(forget_budgets, sender=Budget, dispatch_uid="budgets-deleted")


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

    def would_exceed(
        self,
        price: Decimal,
        *,
        reserved_cost: Decimal = Decimal(0),
        reserved_messages: int = 0,
        messages: int = 1,
    ) -> bool:
        """Whether `messages` more replies costing `price` in all go over. `reserved_*`:
        replies started but not in `used` yet (a reply's cost is recorded when it ends), as a
        batch counts its own."""
        if self.kind == "cost":
            used = self.used + reserved_cost
            # A model without a price is refused once the budget is spent.
            return used + price > self.limit if price else used >= self.limit
        return self.used + reserved_messages + messages > self.limit

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
    time zone: daily caps and monthly budgets reset at those boundaries. Always the site's
    (TIME_ZONE), never the reader's from the `tz` cookie: the Usage page and the header count
    the same day as the refusal at turn start, where no reader's zone is active."""
    local = timezone.localtime(now or timezone.now(), timezone.get_default_timezone())
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
    budgets = [r for r in _rules() if r.team_id == team_id and r.user_id in (None, user.pk)]
    if not budgets:
        return []
    if team_id is None:
        # The user's own row overrides the site's default for personal spaces.
        own = [b for b in budgets if b.user_id is not None]
        budgets = own or budgets
    day, tomorrow, month, next_month = periods(now)
    space = next(
        (b for b in budgets if not b.each_member and (b.user_id is None or team_id is None)), None
    )
    # A member's own row, else the team's limit for each member.
    member = next((b for b in budgets if b.user_id is not None and team_id is not None), None)
    member = member or next((b for b in budgets if b.each_member), None)
    # Daily caps alone need only today's replies: read no further back than a limit needs.
    monthly = any(b is not None and b.monthly_cost is not None for b in (space, member))
    replies = replies_in_space(user, team_id).filter(created__gte=month if monthly else day)
    if space is None:
        replies = replies.filter(created_by=user)  # only the member's share is limited
    mine, today = Q(created_by=user), Q(created__gte=day)
    used: dict[str, Any] = replies.aggregate(
        space_cost=Sum("cost"),
        space_messages=Count("created", filter=today),
        my_cost=Sum("cost", filter=mine),
        my_messages=Count("created", filter=mine & today),
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
            if team_id is not None and not any(r.team_id == team_id for r in _rules()):
                team_id = -1  # no budget in that team: nothing to check, not even membership
            elif (
                team_id is not None
                and not Membership.objects.filter(team_id=team_id, user=user).exists()
            ):
                team_id = None
            found = [] if team_id == -1 else limits(user, team_id)
            cached.append([limit for limit in found if limit.warn])
        return cached[0]

    return {"budget_warnings": warnings}

"""Budgets: a run that would go over a limit is refused before anything is sent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from playground.accounts.models import ApiKey, Budget, Membership, Team
from playground.chat import budgets
from playground.chat.models import Conversation, Message
from tests.conftest import SECRET_KEY_VALUE

MODEL = "empiriolabs:gemma-4-e4b"  # $0.03 per completed message
TEAM_KEY = "sk-team-key-0000001234"


def seed_replies(conversation, user, n, *, cost="0.03", when=None):
    replies = Message.objects.bulk_create(
        Message(
            conversation=conversation,
            team_id=conversation.team_id,
            role=Message.Role.ASSISTANT,
            model=MODEL,
            cost=Decimal(cost),
            created_by=user,
        )
        for _ in range(n)
    )
    if when is not None:  # created is auto_now_add: set it afterwards
        Message.objects.filter(pk__in=[r.pk for r in replies]).update(created=when)


def make_lab(owner, member) -> Team:
    lab = Team.create(name="Lab", owner=owner)
    lab.add_member(member, Membership.Role.MEMBER)
    ApiKey.store(provider="empiriolabs", plaintext=TEAM_KEY, team=lab)
    return lab


async def refused(connect, user, conversation, upstream) -> str:
    ok, socket = await connect(user, conversation.pk)
    assert ok
    await socket.send_prompt("One more")
    frame = await socket.until(lambda f: "composer-error" in f)
    await socket.drain()
    assert upstream.requests == []  # nothing reached the provider
    return frame


# --- the check at turn start --------------------------------------------------------------

pytestmark_async = pytest.mark.django_db(transaction=True)


@pytestmark_async
async def test_a_team_budget_stops_a_run_before_any_request_with_the_limit_and_reset(
    upstream, user, other_user, connect
):
    @database_sync_to_async
    def setup():
        lab = make_lab(other_user, user)
        shared = Conversation.objects.create(owner=other_user, team=lab, model=MODEL)
        seed_replies(shared, other_user, 33)  # $0.99 of a $1.00 budget
        Budget.set(team=lab, user=None, monthly_cost=Decimal("1.00"), daily_messages=None,
                   by=other_user)  # fmt: skip
        return shared

    shared = await setup()
    frame = await refused(connect, user, shared, upstream)
    _, _, _, next_month = budgets.periods()
    assert "Not sent: this would go over the team&#x27;s monthly cost budget of $1.00" in frame
    assert "$0.99 used" in frame
    assert f"resets on {next_month.day} {next_month:%b %Y}" in frame
    # Nothing was saved: neither the prompt nor a reply.
    assert await Message.objects.filter(conversation=shared).acount() == 33
    assert not await Message.objects.filter(conversation=shared, role="user").aexists()


@pytestmark_async
async def test_a_members_daily_cap_stops_only_that_member(upstream, user, other_user, connect):
    @database_sync_to_async
    def setup():
        lab = make_lab(other_user, user)
        shared = Conversation.objects.create(owner=other_user, team=lab, model=MODEL)
        seed_replies(shared, user, 3)
        Budget.set(team=lab, user=user, monthly_cost=None, daily_messages=3, by=other_user)
        return shared

    shared = await setup()
    frame = await refused(connect, user, shared, upstream)
    assert "your daily cap of 3 messages (3 used)" in frame
    assert "It resets on" in frame

    ok, socket = await connect(other_user, shared.pk)  # the owner has no cap of their own
    await socket.drain()  # the transcript, with the seeded replies
    await socket.send_prompt("Still fine")
    await socket.until(lambda f: "status-complete" in f)
    assert len(upstream.requests) == 1


@pytestmark_async
async def test_yesterdays_messages_do_not_count_against_todays_cap(
    upstream, user, other_user, connect
):
    @database_sync_to_async
    def setup():
        lab = make_lab(other_user, user)
        shared = Conversation.objects.create(owner=other_user, team=lab, model=MODEL)
        day, *_ = budgets.periods()
        seed_replies(shared, user, 3, when=day - timedelta(minutes=1))
        Budget.set(team=lab, user=user, monthly_cost=None, daily_messages=3, by=other_user)
        return shared

    shared = await setup()
    ok, socket = await connect(user, shared.pk)
    await socket.drain()
    await socket.send_prompt("A new day")
    await socket.until(lambda f: "status-complete" in f)
    assert len(upstream.requests) == 1


@pytestmark_async
async def test_the_site_default_limits_personal_spaces_and_a_re_run_too(
    upstream, user, api_key, conversation, connect
):
    await database_sync_to_async(Budget.set)(
        team=None, user=None, monthly_cost=None, daily_messages=1, by=user
    )
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("The first is allowed")
    await socket.until(lambda f: "status-complete" in f)
    assert len(upstream.requests) == 1
    upstream.reset()
    reply = await Message.objects.filter(conversation=conversation, role="assistant").alast()
    await socket.send(action="rerun", message_id=reply.pk)
    frame = await socket.until(lambda f: "composer-error" in f)
    assert "your daily cap of 1 message (1 used)" in frame
    assert upstream.requests == []


@pytestmark_async
async def test_a_users_own_personal_budget_overrides_the_site_default(
    upstream, user, api_key, conversation, connect
):
    @database_sync_to_async
    def setup():
        Budget.set(team=None, user=None, monthly_cost=None, daily_messages=0, by=user)
        Budget.set(team=None, user=user, monthly_cost=Decimal("5"), daily_messages=None, by=user)

    await setup()
    ok, socket = await connect(user, conversation.pk)
    await socket.send_prompt("Allowed by my own budget")
    await socket.until(lambda f: "status-complete" in f)
    assert upstream.requests[-1].headers["authorization"] == f"Bearer {SECRET_KEY_VALUE}"


# --- the check's cost ---------------------------------------------------------------------


@pytest.mark.django_db
def test_without_a_budget_the_check_makes_no_query(user, django_assert_num_queries):
    with django_assert_num_queries(1):  # which budgets exist, read once into the cache
        budgets.check(user, None, Decimal("0.03"))
    with django_assert_num_queries(0):
        budgets.check(user, None, Decimal("0.03"))


@pytest.mark.django_db
def test_a_budget_saved_or_deleted_reaches_the_cached_check(user, other_user):
    lab = make_lab(other_user, user)
    budgets.check(user, lab.pk, None)  # caches "no budgets"
    Budget.set(team=lab, user=user, monthly_cost=None, daily_messages=0, by=other_user)
    with pytest.raises(budgets.BudgetExceeded):
        budgets.check(user, lab.pk, None)
    Budget.set(team=lab, user=user, monthly_cost=None, daily_messages=None, by=other_user)
    budgets.check(user, lab.pk, None)


@pytest.mark.django_db
def test_with_budgets_the_check_is_one_aggregate(user, other_user, django_assert_num_queries):
    lab = make_lab(other_user, user)
    Budget.set(team=lab, user=None, monthly_cost=Decimal(10), daily_messages=100, by=other_user)
    Budget.set(team=lab, user=user, monthly_cost=Decimal(1), daily_messages=10, by=other_user)
    budgets.limits(user, lab.pk)  # the budgets, into the cache
    with django_assert_num_queries(1):  # the one aggregate
        found = budgets.limits(user, lab.pk)
    assert [(f.kind, f.whose) for f in found] == [
        ("cost", "the team's"),
        ("messages", "the team's"),
        ("cost", "your"),
        ("messages", "your"),
    ]


@pytest.mark.django_db
def test_the_budget_counts_this_month_only(user, other_user):
    lab = make_lab(other_user, user)
    shared = Conversation.objects.create(owner=other_user, team=lab, model=MODEL)
    _, _, month, _ = budgets.periods()
    seed_replies(shared, user, 10, cost="1", when=month - timedelta(seconds=1))
    seed_replies(shared, user, 2, cost="1")
    Budget.set(team=lab, user=None, monthly_cost=Decimal(3), daily_messages=None, by=user)
    (limit,) = budgets.limits(user, lab.pk)
    assert limit.used == Decimal(2)
    budgets.check(user, lab.pk, Decimal("0.5"))  # 2.5 of 3: allowed
    with pytest.raises(budgets.BudgetExceeded, match="monthly cost budget of \\$3.00"):
        budgets.check(user, lab.pk, Decimal("1.5"))


def test_budgets_reset_at_midnight_and_on_the_first():
    now = timezone.make_aware(datetime(2026, 12, 31, 15, 30))
    day, tomorrow, month, next_month = budgets.periods(now)
    assert (day.day, tomorrow.month, tomorrow.day) == (31, 1, 1)
    assert (month.day, next_month.year, next_month.month, next_month.day) == (1, 2027, 1, 1)


@pytest.mark.django_db
def test_budget_periods_are_the_sites_whatever_the_readers_time_zone(client, user, other_user):
    """Near midnight, the Usage page and the header count the day the refusal counts: the
    site's (TIME_ZONE, UTC), not the reader's from the tz cookie (UTC+14 here)."""
    from unittest import mock

    lab = make_lab(other_user, user)
    shared = Conversation.objects.create(owner=other_user, team=lab, model=MODEL)
    now = datetime(2026, 12, 1, 23, 30, tzinfo=UTC)  # 2 Dec, 13:30 in Kiritimati
    # Today in UTC, yesterday in Kiritimati (whose day began at 10:00 UTC).
    seed_replies(shared, user, 9, when=datetime(2026, 12, 1, 5, 0, tzinfo=UTC))
    Budget.set(team=lab, user=user, monthly_cost=None, daily_messages=10, by=other_user)
    client.force_login(user)
    client.cookies["tz"] = "Pacific/Kiritimati"
    client.post("/space/", {"space": lab.pk})
    with mock.patch("django.utils.timezone.now", return_value=now):
        with timezone.override("Pacific/Kiritimati"):
            day, tomorrow, month, _ = budgets.periods()
            (limit,) = budgets.limits(user, lab.pk)
        midnight = datetime(2026, 12, 1, tzinfo=UTC)
        assert (day, tomorrow, month) == (midnight, midnight + timedelta(days=1), midnight)
        assert limit.used == 9
        page = client.get(f"/teams/{lab.pk}/usage/").content.decode()
        assert "Your daily cap of 10 messages: 9 used (90 %)" in page
        # The reset is shown in the reader's zone: UTC midnight is 14:00 there.
        assert "resets on 2 Dec 2026 14:00" in page
        assert "90 % of your daily cap of 10 messages used" in client.get("/keys/").content.decode()
        seed_replies(shared, user, 1, when=now)  # the 10th: the page and the refusal agree
        with timezone.override("Pacific/Kiritimati"):
            assert [lim.used for lim in budgets.limits(user, lab.pk)] == [10]
        with pytest.raises(budgets.BudgetExceeded, match="daily cap of 10"):
            budgets.check(user, lab.pk, None)


# --- the header warning and who sets budgets ----------------------------------------------


@pytest.mark.django_db
def test_the_header_warns_at_80_percent_of_a_limit(client, user, other_user):
    lab = make_lab(other_user, user)
    shared = Conversation.objects.create(owner=other_user, team=lab, model=MODEL)
    seed_replies(shared, user, 8)
    Budget.set(team=lab, user=user, monthly_cost=None, daily_messages=10, by=other_user)
    client.force_login(user)
    assert "budget-warnings" not in client.get("/").content.decode()  # Personal: no limit
    client.post("/space/", {"space": lab.pk})
    page = client.get("/keys/").content.decode()
    assert "80 % of your daily cap of 10 messages used; it resets on" in page


@pytest.mark.django_db
def test_no_warning_below_80_percent(client, user, other_user):
    lab = make_lab(other_user, user)
    shared = Conversation.objects.create(owner=other_user, team=lab, model=MODEL)
    seed_replies(shared, user, 7)
    Budget.set(team=lab, user=user, monthly_cost=None, daily_messages=10, by=other_user)
    client.force_login(user)
    client.post("/space/", {"space": lab.pk})
    assert "budget-warnings" not in client.get("/keys/").content.decode()


@pytest.mark.django_db
def test_team_admins_set_team_and_member_budgets(client, user, other_user):
    lab = make_lab(other_user, user)
    client.force_login(other_user)
    response = client.post(f"/teams/{lab.pk}/budgets/", {"monthly_cost": "25.50"})
    assert response.status_code == 302
    membership = lab.memberships.get(user=user)
    client.post(f"/teams/{lab.pk}/budgets/", {"member": membership.pk, "daily_messages": "40"})
    rows = {(b.user_id, b.monthly_cost, b.daily_messages) for b in Budget.objects.all()}
    assert rows == {(None, Decimal("25.50"), None), (user.pk, None, 40)}
    page = client.get(f"/teams/{lab.pk}/usage/").content.decode()
    assert "$25.50" in page and 'id="budgets"' in page
    # Both limits empty: the member has no budget of their own any more.
    client.post(f"/teams/{lab.pk}/budgets/", {"member": membership.pk})
    assert not Budget.objects.filter(user=user).exists()


@pytest.mark.django_db
def test_members_cannot_set_budgets_and_bad_values_are_refused(client, user, other_user):
    lab = make_lab(other_user, user)
    client.force_login(user)
    assert client.post(f"/teams/{lab.pk}/budgets/", {"monthly_cost": "1"}).status_code == 403
    assert 'id="budgets"' not in client.get(f"/teams/{lab.pk}/usage/").content.decode()
    client.force_login(other_user)
    response = client.post(f"/teams/{lab.pk}/budgets/", {"monthly_cost": "-3"}, follow=True)
    assert "Budget not saved" in response.content.decode()
    stranger = Team.create(name="Elsewhere", owner=user).memberships.get()
    response = client.post(
        f"/teams/{lab.pk}/budgets/", {"member": stranger.pk, "daily_messages": 1}
    )
    assert not Budget.objects.exists()


@pytest.mark.django_db
def test_only_site_admins_set_the_personal_default(client, user, django_user_model):
    client.force_login(user)
    assert client.post("/usage/budgets/", {"daily_messages": "5"}).status_code == 403
    admin = django_user_model.objects.create_superuser("root", password="pw-pw-pw-pw")
    client.force_login(admin)
    assert client.post("/usage/budgets/", {"daily_messages": "5"}).status_code == 302
    budget = Budget.objects.get()
    assert (budget.team_id, budget.user_id, budget.daily_messages) == (None, None, 5)
    assert 'id="budgets"' in client.get("/usage/").content.decode()


@pytest.mark.django_db
def test_a_cap_for_each_member_applies_to_every_member_without_their_own(
    client, user, other_user, django_user_model
):
    lab = make_lab(other_user, user)
    carol = django_user_model.objects.create_user("carol", password="x-x-x-x-x")
    lab.add_member(carol, Membership.Role.MEMBER)
    shared = Conversation.objects.create(owner=other_user, team=lab, model=MODEL)
    seed_replies(shared, user, 2)
    seed_replies(shared, carol, 2)
    client.force_login(other_user)  # the owner sets it on the Usage page
    response = client.post(
        f"/teams/{lab.pk}/budgets/", {"member": "each", "daily_messages": "2"}, follow=True
    )
    assert "Budget for each member saved." in response.content.decode()
    assert "each member (without limits of their own)" in response.content.decode()
    budget = Budget.objects.get()
    assert (budget.team_id, budget.user_id, budget.each_member) == (lab.pk, None, True)
    for member in (user, carol):  # each member's own count, not the team's
        with pytest.raises(budgets.BudgetExceeded, match="your daily cap of 2 messages"):
            budgets.check(member, lab.pk, Decimal("0.03"))
    budgets.check(other_user, lab.pk, Decimal("0.03"))  # no replies of their own yet
    # A member's own row overrides it; the team's total is not limited by it.
    Budget.set(team=lab, user=carol, monthly_cost=None, daily_messages=10, by=other_user)
    budgets.check(carol, lab.pk, Decimal("0.03"))
    with pytest.raises(budgets.BudgetExceeded):
        budgets.check(user, lab.pk, Decimal("0.03"))
    # Only in a team: a personal "each member" is refused.
    admin = django_user_model.objects.create_superuser("root", password="pw-pw-pw-pw")
    client.force_login(admin)
    client.post("/usage/budgets/", {"member": "each", "daily_messages": "1"})
    assert not Budget.objects.filter(team=None).exists()

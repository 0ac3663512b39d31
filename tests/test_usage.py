"""The Usage page: the figures of seeded replies, by day, model and member, per role."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from playground.accounts.models import Membership, Team
from playground.chat.models import Conversation, Message
from playground.chat.usage import safe_cell
from tests.html import find, text

pytestmark = pytest.mark.django_db

E4B = "empiriolabs:gemma-4-e4b"
DAY1, DAY2 = date(2026, 11, 2), date(2026, 11, 3)
RANGE = "?start=2026-11-01&end=2026-11-05"


def reply(conversation, user, day, *, model=E4B, inp=100, out=50, cost="0.03", ttft=200.0):
    message = Message.objects.create(
        conversation=conversation,
        team_id=conversation.team_id,
        role=Message.Role.ASSISTANT,
        model=model,
        input_tokens=inp,
        output_tokens=out,
        cost=Decimal(cost),
        ttft_ms=ttft,
        created_by=user,
    )
    noon = timezone.make_aware(datetime.combine(day, datetime.min.time()) + timedelta(hours=12))
    Message.objects.filter(pk=message.pk).update(created=noon)


@pytest.fixture
def lab(user, other_user, django_user_model):
    """Ada (admin) and Eve (member) in Lab, with replies on two days and two models; Ada's
    personal replies and another team's replies must not show up."""
    lab = Team.create(name="Lab", owner=user)
    lab.add_member(other_user, Membership.Role.MEMBER)
    viewer = django_user_model.objects.create_user("vic", password="x-x-x-x-x")
    lab.add_member(viewer, Membership.Role.VIEWER)
    shared = Conversation.objects.create(owner=user, team=lab, model=E4B)
    reply(shared, user, DAY1, inp=100, out=50, cost="0.03", ttft=100.0)
    reply(shared, user, DAY2, inp=300, out=70, cost="0.03", ttft=300.0)
    reply(shared, other_user, DAY2, model="aimlapi:gemma-3-27b", inp=10, out=5, cost="0.5")
    reply(shared, user, date(2026, 10, 1), cost="9")  # outside the range
    personal = Conversation.objects.create(owner=user, model=E4B)
    reply(personal, user, DAY1, inp=1000, out=1000, cost="2")
    other = Team.create(name="Other", owner=other_user)
    reply(Conversation.objects.create(owner=other_user, team=other, model=E4B), other_user, DAY1)
    return lab


def cells(html: str, row_id: str) -> list[str]:
    return text(find(html, "tr", id=row_id)).split()


def page(client, who, url):
    client.force_login(who)
    response = client.get(url)
    assert response.status_code == 200, response.content[:500]
    return response.content.decode()


def test_an_admin_sees_every_members_figures_by_day_model_and_member(client, user, lab):
    html = page(client, user, f"/teams/{lab.pk}/usage/{RANGE}")
    totals = cells(html, "usage-total")
    assert totals == ["Total", "3", "410", "125", "$0.56", "200.0", "ms"]
    by_day = html.split('id="by-day"')[1].split("</section>")[0]
    assert "2026-11-01" in by_day and "2026-11-05" in by_day  # empty days are rows too
    assert (
        '<th scope="row">2026-11-03</th><td>2</td><td>310</td><td>75</td><td>$0.53</td>' in by_day
    )
    by_model = html.split('id="by-model"')[1].split("</section>")[0]
    assert "Gemma 4 E4B · EmpirioLabs" in by_model
    by_member = html.split('id="by-member"')[1].split("</section>")[0]
    assert (
        '<th scope="row">ada</th><td>2</td><td>400</td><td>120</td><td>$0.06</td><td>200.0 ms'
        in by_member
    )
    assert '<th scope="row">eve</th><td>1</td>' in by_member
    assert by_member.count("<svg") == 1 and "<rect" in by_member
    assert "cdn" not in html.lower()


@pytest.mark.parametrize("role", ["member", "viewer"])
def test_members_and_viewers_see_their_own_and_the_team_total(
    client, user, other_user, lab, role, django_user_model
):
    who = other_user if role == "member" else django_user_model.objects.get(username="vic")
    html = page(client, who, f"/teams/{lab.pk}/usage/{RANGE}")
    by_member = html.split('id="by-member"')[1].split("</section>")[0]
    assert ">ada<" not in by_member
    mine = cells(html, "usage-total")
    team = cells(html, "usage-team-total")
    assert mine[:2] == ["You", "1" if role == "member" else "0"]
    assert team[-6:-1] == ["3", "410", "125", "$0.56", "200.0"]
    assert 'id="budgets"' not in html


def test_strangers_get_404_for_a_teams_usage_and_its_csv(client, django_user_model, lab):
    client.force_login(django_user_model.objects.create_user("mallory", password="x-x-x-x-x"))
    assert client.get(f"/teams/{lab.pk}/usage/").status_code == 404
    assert client.get(f"/teams/{lab.pk}/usage/member.csv").status_code == 404
    client.logout()
    assert client.get(f"/teams/{lab.pk}/usage/").status_code == 302  # to the login page


def test_personal_usage_counts_only_personal_replies(client, user, lab):
    html = page(client, user, f"/usage/{RANGE}")
    totals = cells(html, "usage-total")
    assert totals[:5] == ["Total", "1", "1000", "1000", "$2.00"]


def test_the_csv_has_the_tables_figures_for_each_role(client, user, other_user, lab):
    client.force_login(user)
    response = client.get(f"/teams/{lab.pk}/usage/member.csv{RANGE}")
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0] == ["member", "messages", "input_tokens", "output_tokens", "cost_usd", "ttft_ms"]
    assert ["ada", "2", "400", "120", "0.060000", "200.0"] in rows
    assert rows[-1][:2] == ["Total", "3"]
    client.force_login(other_user)
    rows = list(
        csv.reader(
            io.StringIO(client.get(f"/teams/{lab.pk}/usage/member.csv{RANGE}").content.decode())
        )
    )
    assert [r[0] for r in rows] == ["member", "eve", "Total"]


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised(client, user, django_user_model):
    evil = django_user_model.objects.create_user("=HYPERLINK(1)", password="x-x-x-x-x")
    lab = Team.create(name="Lab", owner=user)
    lab.add_member(evil, Membership.Role.MEMBER)
    shared = Conversation.objects.create(owner=user, team=lab, model=E4B)
    reply(shared, evil, DAY1, model="@SUM(A1)")
    client.force_login(user)
    member = client.get(f"/teams/{lab.pk}/usage/member.csv{RANGE}").content.decode()
    model = client.get(f"/teams/{lab.pk}/usage/model.csv{RANGE}").content.decode()
    assert "'=HYPERLINK(1)" in member and "\n=HYPERLINK" not in member
    assert "'@SUM(A1)" in model
    assert [safe_cell(v) for v in ("+1", "-2", "=x", "@y", "ok", 3)] == [
        "'+1", "'-2", "'=x", "'@y", "ok", "3"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?start=2026-11-05&end=2026-11-01", "The range starts after it ends."),
        ("?start=2020-01-01&end=2026-11-01", "at most 366 days"),
        ("?start=yesterday", "Enter a valid date."),
        ("?metric=evil", "Select a valid choice."),
    ],
)
def test_a_bad_range_gets_a_clear_error(client, user, query, message):
    client.force_login(user)
    response = client.get(f"/usage/{query}")
    assert response.status_code == 400
    assert message in response.content.decode()
    assert client.get(f"/usage/day.csv{query}").status_code == 400


def test_an_unknown_table_is_404(client, user):
    client.force_login(user)
    assert client.get("/usage/secrets.csv").status_code == 404


def test_the_chart_metric_is_chosen_in_the_url(client, user, lab):
    html = page(client, user, f"/teams/{lab.pk}/usage/{RANGE}&metric=output_tokens")
    assert "By day · Output tokens" in html
    assert "2026-11-03: 75" in html  # the bar's tooltip


def test_moving_a_conversation_into_a_team_moves_its_usage(client, user, lab):
    personal = Conversation.objects.get(owner=user, team__isnull=True)
    personal.move_to(lab, user)
    html = page(client, user, f"/teams/{lab.pk}/usage/{RANGE}")
    assert cells(html, "usage-total")[1] == "4"


def test_the_page_answers_in_a_fixed_number_of_queries(
    client, user, lab, django_assert_max_num_queries
):
    client.force_login(user)
    # On PostgreSQL the grouped query runs in its own transaction with SET LOCAL work_mem:
    # inside the test's transaction that is a savepoint, the SET and the release.
    extra = 3 if connection.vendor == "postgresql" else 0
    with django_assert_max_num_queries(13 + extra):
        assert client.get(f"/teams/{lab.pk}/usage/{RANGE}").status_code == 200


def test_the_usage_bench_seeds_and_times_the_page(client, settings):
    """bench/usage.py at a small size: its seed makes the rows the page reads."""
    from bench import usage as bench

    team, admin, member = bench.seed(400)
    assert Message.objects.filter(team=team, role="assistant").count() == 400
    client.force_login(admin)
    figures = bench.timed(client, f"/teams/{team.pk}/usage/?start={bench.start(89)}", 1)
    assert figures["median_ms"] > 0
    html = client.get(f"/teams/{team.pk}/usage/?start={bench.start(90)}").content.decode()
    assert cells(html, "usage-total")[1] == "400"
    assert bench.timed_check(team, member, 1)["median_ms"] > 0


def test_on_sqlite_a_teams_replies_are_summed_in_the_day_index_order(client, user, lab):
    """The grouped query seeks the (team, role, day, model, member) index made after migrate
    and needs no temporary B-tree (a sort of every reply in range) to group."""
    if connection.vendor != "sqlite":
        pytest.skip("an index of SQLite's alone; PostgreSQL groups in a hash table")
    from django.test.utils import CaptureQueriesContext

    from playground.chat.usage import DAY_INDEX, UsageScope, report

    scope = UsageScope(user, lab, lab.memberships.get(user=user))
    with CaptureQueriesContext(connection) as queries:
        figures = report(scope, date(2026, 11, 1), date(2026, 11, 5))
    assert figures.totals.messages == 3
    grouped = next(q["sql"] for q in queries.captured_queries if "GROUP BY" in q["sql"])
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN QUERY PLAN " + grouped)
        plan = " ".join(str(row[-1]) for row in cursor.fetchall())
    assert f"COVERING INDEX {DAY_INDEX}" in plan and "TEMP B-TREE" not in plan, plan


def test_days_are_the_sites_days_in_a_zone_other_than_utc(client, user, settings):
    """Outside UTC the day is Django's own (the SQLite day index is for UTC days): a reply
    at 23:30 UTC on 2 Nov is on 3 Nov in Paris, and the range is Paris's days."""
    settings.TIME_ZONE = "Europe/Paris"
    lab = Team.create(name="Lab", owner=user)
    shared = Conversation.objects.create(owner=user, team=lab, model=E4B)
    for hour, minute in ((23, 30), (12, 0)):
        reply(shared, user, DAY1)
        late = datetime(2026, 11, 2, hour, minute, tzinfo=UTC)
        Message.objects.filter(pk=Message.objects.latest("pk").pk).update(created=late)
    html = page(client, user, f"/teams/{lab.pk}/usage/?start=2026-11-03&end=2026-11-03")
    assert cells(html, "usage-total")[1] == "1"
    html = page(client, user, f"/teams/{lab.pk}/usage/?start=2026-11-02&end=2026-11-03")
    by_day = html.split('id="by-day"')[1].split("</section>")[0]
    assert '<th scope="row">2026-11-02</th><td>1</td>' in by_day
    assert '<th scope="row">2026-11-03</th><td>1</td>' in by_day

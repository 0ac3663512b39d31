"""Experiments: datasets, runs on the tasks framework (immediate backend here; a real
db_worker in test_experiment_workers.py), checks, the results grid and run comparison."""

from __future__ import annotations

import asyncio
import html
import json
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db.models import Sum
from django.test import Client
from django.utils import timezone

from playground.chat.models import Conversation, Message, RunGroup
from playground.experiments import checks, datasets, forms, runner, worker
from playground.experiments.models import Dataset, DatasetRow, Experiment, ExperimentRun, Item
from tests.upstream import Behaviour

pytestmark = [pytest.mark.django_db(transaction=True)]

MODEL = "empiriolabs:gemma-4-e4b"
IMMEDIATE = {"default": {"BACKEND": "django_tasks.backends.immediate.ImmediateBackend"}}


@pytest.fixture
def immediate(settings):
    settings.TASKS = IMMEDIATE
    settings.PLAYGROUND_EXPERIMENTS = {
        **settings.PLAYGROUND_EXPERIMENTS,
        "CONCURRENCY": 1,  # one item at a time: the fake upstream's script is in order
        "TASKS_PER_RUN": 1,
    }


@pytest.fixture
def client_for(user):
    client = Client()
    client.force_login(user)
    return client


def upload(client, name: str, content: bytes, filename: str = "cases.csv"):
    return client.post(
        "/experiments/datasets/",
        {"name": name, "file": SimpleUploadedFile(filename, content)},
    )


# Datasets ----------------------------------------------------------------------------------


def test_it_imports_a_csv_with_variables_expected_and_notes(client_for, user):
    response = upload(
        client_for, "Capitals", b"country,expected,notes\nFrance,Paris,easy\nPeru,Lima,\n"
    )
    dataset = Dataset.objects.get(name="Capitals")
    assert response.status_code == 302
    assert dataset.columns == ["country"]
    rows = list(dataset.rows.values_list("variables", "expected", "notes"))
    assert rows == [({"country": "France"}, "Paris", "easy"), ({"country": "Peru"}, "Lima", "")]


def test_it_imports_jsonl(client_for):
    content = b'{"q": "2+2", "expected": "4"}\n\n{"q": "3+3", "expected": 6}\n'
    upload(client_for, "Sums", content, "sums.jsonl")
    dataset = Dataset.objects.get(name="Sums")
    assert [r.expected for r in dataset.rows.all()] == ["4", "6"]


def test_a_bad_csv_names_the_line_and_imports_nothing(client_for):
    response = upload(client_for, "Broken", b"a,b\n1,2\n3\n4,5\n")
    assert response.status_code == 400
    assert "Line 3: 1 fields, but the header has 2." in response.content.decode()
    assert not Dataset.objects.exists() and not DatasetRow.objects.exists()


def test_bad_jsonl_and_bad_utf8_name_line_and_column(client_for):
    response = upload(client_for, "J", b'{"a": "1"}\n{"a": \n', "x.jsonl")
    assert "Line 2, column 7" in response.content.decode()
    response = upload(client_for, "U", b"a\nok\n\xff\n")
    assert "Line 3, column 1: the file is not UTF-8." in response.content.decode()
    assert not Dataset.objects.exists()


def test_jsonl_that_python_cannot_read_is_refused_not_a_crash(client_for):
    """JSON that is well-formed but beyond what json.loads takes (an integer of more than
    4300 digits, or nesting deeper than the recursion limit) names its line too."""
    huge = b'{"a": ' + b"1" * 5000 + b"}\n"
    deep = b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n"
    response = upload(client_for, "J", b'{"a": "1"}\n' + huge + deep, "x.jsonl")
    page = response.content.decode()
    assert response.status_code == 400
    assert "Line 2" in page and "Line 3" in page
    assert not Dataset.objects.exists()


def test_jsonl_lines_end_at_newline_only(client_for):
    """JSON allows U+2028, U+2029 and U+0085 unescaped inside a string; they do not end a
    JSONL line, so such a file imports, and the line numbers stay true."""
    content = '{"a": "one\u2028two\x85three"}\n{"a": "x\u2029y"}\n{"a": \n'.encode()
    response = upload(client_for, "J", content, "x.jsonl")
    assert "Line 3, column 7" in response.content.decode()
    content = '{"a": "one\u2028two\u2029three\x85four"}\n'.encode()
    upload(client_for, "J", content, "x.jsonl")
    row = Dataset.objects.get(name="J").rows.get()
    assert row.variables == {"a": "one\u2028two\u2029three\x85four"}


def test_a_nul_in_a_dataset_is_refused_not_a_crash(client_for):
    """PostgreSQL keeps no NUL in jsonb or text: a CSV with one, a JSONL `\\u0000` or a row
    edited to hold one would fail the save with a 500 there. Each is refused by line."""
    response = upload(client_for, "C", b"a,b\n1,2\n3,x\x00y\n")
    assert response.status_code == 400
    assert "Line 3, column 2" in response.content.decode()
    response = upload(client_for, "J", b'{"a": "1"}\n{"a": "2\\u0000"}\n', "x.jsonl")
    assert response.status_code == 400 and "Line 2" in response.content.decode()
    assert not Dataset.objects.exists()
    form = forms.RowForm({"variables": '{"a": "x\\u0000"}', "expected": "", "notes": ""})
    assert not form.is_valid() and "variables" in form.errors


def test_a_lone_surrogate_in_a_dataset_is_refused_as_a_nul_is(client_for):
    """A JSONL "\\ud800" reads as a str no database keeps (nor UTF-8): the save was a 500."""
    response = upload(client_for, "J", b'{"a": "1"}\n{"a": "2\\ud800"}\n', "x.jsonl")
    page = html.unescape(response.content.decode())
    assert response.status_code == 400
    assert "Line 2, field 1 ('a'): a lone surrogate (\\ud800) cannot be stored." in page
    response = upload(client_for, "K", b'{"\\ud800": "1"}\n', "x.jsonl")
    page = html.unescape(response.content.decode())
    assert response.status_code == 400  # not a page that cannot be encoded
    assert "Line 1, column 1: a name holding a lone surrogate (\\ud800) is not a variable" in page
    assert not Dataset.objects.exists()
    form = forms.RowForm({"variables": '{"a": "x\\udc00"}', "expected": "", "notes": ""})
    assert not form.is_valid()
    assert form.errors["variables"] == ["A lone surrogate (\\udc00) cannot be stored."]


def test_a_nul_or_lone_surrogate_in_an_experiments_parameters_or_schema_is_a_form_error(
    client_for, user
):
    """The variants' parameters and a check's schema are saved in jsonb, which refuses both
    on PostgreSQL: the form was a 500 there."""
    dataset = make_experiment(user).dataset
    data = {
        "name": "Odd",
        "dataset": dataset.pk,
        "prompt": "{{country}}",
        "variants": f'{MODEL} | {{"stop": ["\\ud800"]}}',
        "checks": 'json_schema: {"const": "\\u0000"}',
        "repeats": 1,
    }
    response = client_for.post("/experiments/new/", data)
    page = html.unescape(response.content.decode())
    assert response.status_code == 400
    assert "Variant line 1: stop: stop holds a lone surrogate (\\ud800)" in page
    assert (
        "Check line 1: the schema holds a NUL character (\\u0000), which cannot be stored" in page
    )
    response = client_for.post("/experiments/new/", {**data, "variants": MODEL, "checks": ""})
    assert response.status_code == 302


def test_an_unknown_parameter_named_with_a_lone_surrogate_is_a_form_error(client_for, user):
    """The error names the parameter as the variant's JSON spelt it, and a page is UTF-8,
    which holds no lone surrogate: the page could not be encoded (a 500)."""
    dataset = make_experiment(user).dataset
    data = {
        "name": "Odd",
        "dataset": dataset.pk,
        "prompt": "{{country}}",
        "variants": f'{MODEL} | {{"t\\ud800p": 1}}',
        "repeats": 1,
    }
    response = client_for.post("/experiments/new/", data)
    assert response.status_code == 400
    page = html.unescape(response.content.decode())
    assert "Variant line 1: t\\ud800p: is not a parameter of this model" in page


def test_a_column_name_ending_in_a_newline_is_refused(client_for):
    """`$` also matches before a trailing newline, so `"a\\n"` passed the name check as `a`
    and became a column no `{{a}}` reaches. A CSV header is stripped; a JSONL key is not."""
    response = upload(client_for, "J", b'{"a\\n": "1"}\n', "x.jsonl")
    assert response.status_code == 400
    assert "Line 1, column 1" in response.content.decode()
    assert "is not a variable name" in response.content.decode()
    assert not Dataset.objects.exists()


def test_the_row_cap_refuses_the_whole_file(client_for, settings):
    settings.PLAYGROUND_EXPERIMENTS = {**settings.PLAYGROUND_EXPERIMENTS, "MAX_ROWS": 2}
    response = upload(client_for, "Big", b"a\n1\n2\n3\n")
    assert "at most 2" in response.content.decode()
    assert not Dataset.objects.exists()


def make_experiment(user, rows=("France", "Peru"), check_lines="contains: tok", variants=None):
    parsed = datasets.Parsed(
        columns=["country"],
        rows=[{"variables": {"country": c}, "expected": "", "notes": ""} for c in rows],
    )
    dataset = datasets.create(user, None, "Capitals", parsed)
    return Experiment.objects.create(
        owner=user,
        name="Capitals",
        dataset=dataset,
        prompt="Capital of {{country}}?",
        variants=variants or [{"label": "A", "model": MODEL, "params": {}, "system_prompt": ""}],
        checks=checks.parse(check_lines),
    )


def test_editing_a_used_dataset_makes_a_new_version(client_for, user, upstream, api_key, immediate):
    experiment = make_experiment(user)
    old = experiment.dataset
    runner.start(experiment, user)
    row = old.rows.get(position=0)
    response = client_for.post(
        f"/experiments/datasets/{old.pk}/rows/{row.pk}/",
        {"variables": '{"country": "Chile"}', "expected": "Santiago"},
    )
    new = Dataset.objects.get(previous=old)
    assert response.status_code == 302 and response.url == f"/experiments/datasets/{new.pk}/"
    assert old.rows.get(position=0).variables == {"country": "France"}  # untouched
    assert new.version == 2 and new.rows.get(position=0).expected == "Santiago"
    experiment.refresh_from_db()
    assert experiment.dataset == new  # the experiment follows; the run keeps its version
    assert ExperimentRun.objects.get().dataset == old


def test_a_saved_reply_becomes_a_row(client_for, user, conversation):
    prompt = Message.objects.create(conversation=conversation, role="user", text="Hi there")
    reply = Message.objects.create(
        conversation=conversation, parent=prompt, role="assistant", text="Hello!"
    )
    dataset = make_experiment(user).dataset
    client_for.post(f"/experiments/datasets/{dataset.pk}/rows/from-reply/", {"message": reply.pk})
    row = dataset.rows.order_by("-position").first()
    assert row.variables == {"input": "Hi there"} and row.expected == "Hello!"


def test_someone_elses_reply_cannot_be_added(client_for, user, other_user):
    foreign = Conversation.objects.create(owner=other_user, model=MODEL)
    reply = Message.objects.create(conversation=foreign, role="assistant", text="secret")
    dataset = make_experiment(user).dataset
    response = client_for.post(
        f"/experiments/datasets/{dataset.pk}/rows/from-reply/", {"message": reply.pk}
    )
    assert response.status_code == 404
    assert not dataset.rows.filter(expected="secret").exists()


def test_a_viewer_is_not_offered_the_upload_and_new_experiment_forms(user, other_user):
    from playground.accounts.models import Membership, Team
    from playground.accounts.spaces import SESSION_KEY

    team = Team.create(name="Acme", owner=user)
    team.add_member(other_user, Membership.Role.VIEWER)
    pages = {}
    for who in (user, other_user):
        client = Client()
        client.force_login(who)
        session = client.session
        session[SESSION_KEY] = team.pk
        session.save()
        pages[who.pk] = client.get("/experiments/").content.decode()
        refused = client.post("/experiments/new/", {"name": "x"}).status_code
        assert refused == (403 if who == other_user else 400)
    owner, viewer = pages[user.pk], pages[other_user.pk]
    assert 'id="experiment-new"' in owner and 'id="dataset-upload"' in owner
    assert 'id="experiment-new"' not in viewer and 'id="dataset-upload"' not in viewer
    assert "You are a viewer in this space" in viewer


# Runs --------------------------------------------------------------------------------------


def test_a_run_makes_one_saved_reply_per_cell_through_the_run_engine(
    user, upstream, api_key, immediate
):
    upstream.script(Behaviour(tokens=["Paris"]), Behaviour(tokens=["Lima"]))
    experiment = make_experiment(user, check_lines="contains: a\nnot_contains: London")
    run = runner.start(experiment, user)
    run.refresh_from_db()
    items = list(run.items.select_related("message", "conversation"))
    assert run.status == "done"
    assert [i.status for i in items] == ["done", "done"]
    assert [i.message.text for i in items] == ["Paris", "Lima"]
    # Ordinary conversations of the run's group, made by the run engine (a saved request).
    assert all(i.conversation.group_id == run.group_id for i in items)
    assert run.group.kind == RunGroup.Kind.EXPERIMENT
    assert items[0].message.request_body["messages"][-1]["content"] == "Capital of France?"
    assert [v["passed"] for v in items[0].verdicts] == [True, True]
    assert all(i.passed for i in items)


def test_each_variant_sends_in_its_own_wire_format(user, upstream, api_key, immediate):
    variants = [
        {"label": "Chat", "model": MODEL, "params": {}, "system_prompt": ""},
        {
            "label": "Responses",
            "model": MODEL,
            "params": {},
            "system_prompt": "Be brief.",
            "wire_format": "responses",
        },
        {
            "label": "Messages",
            "model": MODEL,
            "params": {},
            "system_prompt": "Be brief.",
            "wire_format": "messages",
        },
    ]
    experiment = make_experiment(user, rows=("France",), variants=variants)
    run = runner.start(experiment, user)
    run.refresh_from_db()
    assert run.status == "done"
    paths = sorted(r.path for r in upstream.requests if r.method == "POST")
    assert paths == ["/v1/chat/completions", "/v1/messages", "/v1/responses"]
    by_format = {r.path: r.body for r in upstream.requests if r.method == "POST"}
    assert by_format["/v1/responses"]["instructions"] == "Be brief."
    assert by_format["/v1/messages"]["system"] == "Be brief."
    formats = set(
        Conversation.objects.filter(group=run.group).values_list("wire_format", flat=True)
    )
    assert formats == {"chat", "responses", "messages"}


def test_a_budget_applies_before_each_item(user, upstream, api_key, immediate, monkeypatch):
    from playground.chat import budgets

    def over(*args, **kwargs):
        raise budgets.BudgetExceeded("Your monthly budget of $1 is used up.")

    monkeypatch.setattr(budgets, "check", over)
    run = runner.start(make_experiment(user), user)
    items = list(run.items.all())
    assert {i.status for i in items} == {"failed"}
    assert "budget" in items[0].error
    assert not upstream.requests


@pytest.mark.parametrize("kind", ["cost", "messages"])
def test_items_in_flight_count_against_the_budget(
    user, upstream, api_key, immediate, settings, kind
):
    """A budget with room for two replies, four items at once: only two start (the others
    waited for them, then were refused), though none of the four was counted when the
    first ones were checked: a reply's cost is recorded when it ends."""
    from playground.accounts.models import Budget

    settings.PLAYGROUND_EXPERIMENTS = {**settings.PLAYGROUND_EXPERIMENTS, "CONCURRENCY": 4}
    upstream.default = Behaviour(n_tokens=5, interval=0.05)
    limits = {"monthly_cost": Decimal("0.06"), "daily_messages": None}  # $0.03 a reply
    if kind == "messages":
        limits = {"monthly_cost": None, "daily_messages": 2}
    Budget.set(team=None, user=user, by=user, **limits)
    run = runner.start(make_experiment(user, rows=[str(i) for i in range(6)]), user)
    run.refresh_from_db()
    assert run.status == "done"
    assert len(upstream.requests) == 2
    statuses = list(run.items.values_list("status", flat=True))
    assert sorted(statuses) == ["done"] * 2 + ["failed"] * 4
    assert all("Not sent" in i.error for i in run.items.filter(status="failed"))


def test_the_judges_replies_count_against_the_budget_with_the_items(
    user, upstream, api_key, immediate, settings
):
    """A $0.03 reply and its $0.03 judge on a $0.06 budget: one cell fits, not two. The
    claim reserved each item's own reply only, and a judge was checked (as it started)
    against what was recorded: a judge started while another item's reply still streamed,
    and that reply's cost came after, $0.09 in all."""
    from playground.accounts.models import Budget
    from playground.chat import budgets

    settings.PLAYGROUND_EXPERIMENTS = {**settings.PLAYGROUND_EXPERIMENTS, "CONCURRENCY": 4}
    verdict = '{"pass": true, "reason": "fine"}'
    # Without the judges reserved, the first claim took two items: one reply ends at once,
    # the other streams on (a character at a time) while the first one's judge is asked.
    upstream.script(Behaviour(tokens=[verdict]), Behaviour(tokens=list(verdict), interval=0.02))
    upstream.default = Behaviour(tokens=[verdict])
    Budget.set(team=None, user=user, by=user, monthly_cost=Decimal("0.06"), daily_messages=None)
    experiment = make_experiment(
        user, rows=[str(i) for i in range(4)], check_lines=f"judge: {MODEL}: Good?"
    )
    run = runner.start(experiment, user)
    run.refresh_from_db()
    assert run.status == "done"
    spent = budgets.replies_in_space(user, None).aggregate(total=Sum("cost"))["total"]
    assert spent <= Decimal("0.06")
    assert len(upstream.requests) == 2  # one cell: its reply and its judge
    done = run.items.get(status="done")
    assert done.verdicts[0]["passed"] is True
    assert all("Not sent" in i.error for i in run.items.exclude(pk=done.pk))


def test_a_judge_grades_through_the_run_engine(user, upstream, api_key, immediate):
    upstream.script(
        Behaviour(tokens=["Paris"]),
        Behaviour(tokens=['{"pass": true, "reason": "names the capital"}']),
        Behaviour(tokens=["Cusco"]),
        Behaviour(tokens=['{"pass": false, "reason": "Lima is the capital"}']),
    )
    experiment = make_experiment(user, check_lines=f"judge: {MODEL}: Is it the capital?")
    run = runner.start(experiment, user)
    items = list(run.items.all())
    assert [i.verdicts[0]["passed"] for i in items] == [True, False]
    assert items[1].verdicts[0]["reason"] == "Lima is the capital"
    judge_request = upstream.requests[1].body
    # Structured output where the judge model supports it.
    assert judge_request["response_format"]["type"] in ("json_schema", "json_object")
    assert "Is it the capital?" in judge_request["messages"][-1]["content"]
    assert "Paris" in judge_request["messages"][-1]["content"]
    # The judge's question and answer are replies of the group too (usage counts them).
    assert Message.objects.filter(conversation__group=run.group, role="assistant").count() == 4


def test_a_judges_reason_or_a_schema_path_holding_a_nul_or_lone_surrogate_is_kept(
    client_for, user, upstream, api_key, immediate
):
    """The judge's answer and the reply are text, but the JSON read from them spells what their
    escapes say: a reason or a key holding "\\u0000" or "\\ud800" went into the item's
    verdicts (jsonb), whose save failed on PostgreSQL, and a lone surrogate failed the page
    everywhere. Shown as U+FFFD, as in a reply."""
    upstream.script(
        Behaviour(tokens=['{"a\\ud800": 1}']),
        Behaviour(tokens=['{"pass": true, "reason": "ok\\u0000 \\udc00"}']),
    )
    schema = '{"type": "object", "additionalProperties": {"type": "string"}}'
    lines = f"json_schema: {schema}\njudge: {MODEL}: Is it JSON?"
    run = runner.start(make_experiment(user, rows=["France"], check_lines=lines), user)
    item = run.items.get()
    assert item.status == "done", item.error
    schema_check, judged = item.verdicts
    assert schema_check["reason"].startswith("$['a\ufffd']: ")
    assert judged["passed"] is True and judged["reason"] == "ok\ufffd \ufffd"
    page = client_for.get(f"/experiments/runs/{run.pk}/")
    assert page.status_code == 200 and "ok\ufffd \ufffd" in page.content.decode()


def test_a_score_judge_uses_its_threshold():
    check = {"kind": "judge", "model": MODEL, "threshold": 4, "rubric": "r"}
    assert checks.read_judge(check, '{"score": 5, "reason": "good"}').passed is True
    assert checks.read_judge(check, '{"score": 3, "reason": "meh"}').passed is False
    assert checks.read_judge(check, "no idea").passed is None


def test_the_word_pass_in_a_judge_answers_key_is_no_verdict():
    """A judge that writes its verdict as a string: the key "pass" is not a PASS."""
    check = {"kind": "judge", "model": MODEL, "threshold": None, "rubric": "r"}
    assert checks.read_judge(check, '{"pass": "false", "reason": "wrong"}').passed is not True
    assert checks.read_judge(check, '{"pass": "FAIL", "reason": "wrong"}').passed is False
    assert checks.read_judge(check, '{"pass": no, "reason": "wrong"}').passed is None
    assert checks.read_judge(check, "Verdict: PASS").passed is True


def test_a_judge_answer_nested_too_deep_is_undecided_not_a_crash():
    check = {"kind": "judge", "model": MODEL, "threshold": 4, "rubric": "r"}
    answer = '{"score": ' + "[" * 100_000 + "]" * 100_000 + ', "reason": "x"}'
    assert checks.read_judge(check, answer).passed is None


def test_checks_rerun_on_saved_outputs_without_calling_the_model(
    client_for, user, upstream, api_key, immediate
):
    upstream.script(Behaviour(tokens=["Paris"]), Behaviour(tokens=["Lima"]))
    experiment = make_experiment(user, check_lines="contains: Paris")
    run = runner.start(experiment, user)
    assert [i.passed for i in run.items.all()] == [True, False]
    sent = len(upstream.requests)
    experiment.checks = checks.parse("contains: i")
    experiment.save()
    response = client_for.post(f"/experiments/runs/{run.pk}/recheck/")
    assert response.status_code == 302
    assert [i.passed for i in run.items.all()] == [True, True]
    assert len(upstream.requests) == sent


def test_a_recheck_does_not_pass_off_another_checks_verdict_as_the_judges(
    client_for, user, upstream, api_key, immediate
):
    """The judge's kept verdict is found by the check's index: after the checks changed, the
    verdict at that index may be another kind's, which is no judge's verdict."""
    upstream.script(Behaviour(tokens=["Paris"]))
    experiment = make_experiment(user, rows=("France",), check_lines="contains: Paris")
    run = runner.start(experiment, user)
    assert run.items.get().passed is True
    experiment.checks = checks.parse(f"judge: {MODEL}: Good?")
    experiment.save()
    client_for.post(f"/experiments/runs/{run.pk}/recheck/")
    item = run.items.get()
    assert [v["kind"] for v in item.verdicts] == ["judge"]
    assert item.verdicts[0]["passed"] is None and item.passed is None


def test_a_rate_limited_item_is_retried_after_a_backoff(
    user, upstream, api_key, immediate, settings
):
    settings.PLAYGROUND_UPSTREAM = {**settings.PLAYGROUND_UPSTREAM, "MAX_RETRIES": 0}
    upstream.script(Behaviour(status=429), Behaviour(tokens=["Paris"]))
    started = time.monotonic()
    run = runner.start(make_experiment(user, rows=("France",)), user)
    item = run.items.get()
    assert item.status == "done" and item.rate_limited == 1
    assert item.message.text == "Paris"
    assert time.monotonic() - started >= 2.0  # the first backoff
    # One saved reply: the rate-limited attempt's rows are gone.
    assert Message.objects.filter(conversation=item.conversation, role="assistant").count() == 1


def test_a_workers_replies_are_not_rendered_when_no_one_can_watch_them(
    user, upstream, api_key, immediate, monkeypatch
):
    from playground.chat import runs

    rendered = []
    original = runs.render_to_string

    def counting(*args, **kwargs):
        rendered.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(runs, "render_to_string", counting)
    run = runner.start(make_experiment(user), user)
    assert run.items.filter(status="done").count() == 2
    assert rendered == []  # the in-process layer's conversation groups had no member


def test_concurrency_per_endpoint_is_never_exceeded(user, upstream, api_key, immediate, settings):
    settings.PLAYGROUND_EXPERIMENTS = {**settings.PLAYGROUND_EXPERIMENTS, "CONCURRENCY": 2}
    upstream.default = Behaviour(n_tokens=5, interval=0.05)
    seen = []
    original = worker.claim_many

    def counting(run_id, me, wanted):
        items = original(run_id, me, wanted)
        seen.append(Item.objects.filter(status="running").count())
        return items

    worker.claim_many, saved = counting, worker.claim_many
    try:
        run = runner.start(make_experiment(user, rows=[str(i) for i in range(8)]), user)
    finally:
        worker.claim_many = saved
    assert max(seen) == 2
    assert run.items.filter(status="done").count() == 8


def test_one_claim_takes_several_items_within_the_endpoint_limit_and_the_workers_share(
    user, api_key, settings
):
    settings.PLAYGROUND_EXPERIMENTS = {**settings.PLAYGROUND_EXPERIMENTS, "CONCURRENCY": 3}
    run = runner.start(make_experiment(user, rows=[str(i) for i in range(6)]), user)
    first = worker.claim_many(run.pk, "w1", 8)
    assert [i.position for i in first] == [0, 1, 2]  # in order, 3 of the 8 asked for
    assert all(i.status == "running" and i.worker == "w1" and i.attempts == 1 for i in first)
    assert worker.claim_many(run.pk, "w2", 8) == []  # the endpoint is full, for every worker
    Item.objects.filter(pk=first[0].pk).update(status="done")
    second = worker.claim_many(run.pk, "w2", 8)
    assert [i.position for i in second] == [3]
    assert Item.objects.filter(status="running").count() == 3


def test_an_item_failed_by_the_claim_reserves_no_budget(user, api_key):
    """An abandoned item lost twice is failed by the claim, not run: its reply is not kept
    reserved, so a pending item with room beside the replies truly in flight starts."""
    from playground.accounts.models import Budget

    Budget.set(team=None, user=user, by=user, monthly_cost=Decimal("0.03"), daily_messages=None)
    run = runner.start(make_experiment(user, rows=["a", "b"]), user)
    lost, pending = run.items.order_by("position")
    past = timezone.now() - timedelta(minutes=5)
    Item.objects.filter(pk=lost.pk).update(
        status="running", worker="gone", lease_until=past, attempts=worker.MAX_ATTEMPTS
    )
    taken = worker.claim_many(run.pk, "w1", 2)
    assert [i.pk for i in taken] == [pending.pk]
    assert Item.objects.get(pk=lost.pk).status == "failed"


def test_a_cell_is_reserved_with_its_judges_until_they_end(user, api_key, settings):
    """A claim reserves an item's reply and its judge's; after the reply ends (its cost
    recorded) the item stays in flight with its judge reserved, not asked yet and then
    streaming, until the judge's answer ends. A judge conversation of the item's made before
    the claim (a lost worker's attempt) is not this attempt's judge."""
    from playground.accounts.models import Budget

    settings.TASKS = {"default": {"BACKEND": "django_tasks.backends.dummy.DummyBackend"}}
    Budget.set(team=None, user=user, by=user, monthly_cost=Decimal("0.06"), daily_messages=None)
    experiment = make_experiment(user, rows=["a", "b"], check_lines=f"judge: {MODEL}: Good?")
    run = runner.start(experiment, user)
    judged, pending = run.items.order_by("position")

    def turn(title: str, status: str, cost: str | None) -> Message:
        conversation = Conversation.objects.create(
            owner=user, group=run.group, position=judged.position, model=MODEL, title=title
        )
        return Message.objects.create(
            conversation=conversation,
            role="assistant",
            status=status,
            cost=None if cost is None else Decimal(cost),
            created_by=user,
        )

    turn("Judge · an earlier attempt", "interrupted", None)
    # $0.03 for the reply and $0.03 for its judge: one cell fits the $0.06, not two.
    assert [i.pk for i in worker.claim_many(run.pk, "w1", 2)] == [judged.pk]
    reply = turn("cell", "complete", "0.03")
    Item.objects.filter(pk=judged.pk).update(conversation=reply.conversation, message=reply)
    assert worker.claim_many(run.pk, "w1", 1) == []  # the judge is not asked yet
    answer = turn("Judge", "streaming", None)
    assert worker.claim_many(run.pk, "w1", 1) == []
    Message.objects.filter(pk=answer.pk).update(status="complete", cost=Decimal("0.03"))
    # The cell spent the budget and nothing is in flight: the next item is taken, for its
    # start to refuse it with the budget's message.
    assert [i.pk for i in worker.claim_many(run.pk, "w1", 1)] == [pending.pk]


def test_regex_checks_have_a_time_limit():
    started = time.monotonic()
    verdict = checks.evaluate(
        {"kind": "regex", "pattern": r"(a|aa)+$"},
        checks.Output("a" * 40 + "b", "", None, None, None, None),
    )
    elapsed = time.monotonic() - started
    assert verdict.passed is False and "took over" in verdict.reason
    assert elapsed < 1.0


@pytest.mark.parametrize(
    ("line", "text", "passed"),
    [
        ("contains: Paris", "Paris!", True),
        ("not_contains: Paris", "Paris!", False),
        ("regex: ^\\d{3}$", "123", True),
        ("valid_json", '{"a": 1}', True),
        ("valid_json", "{a}", False),
        ('json_schema: {"type": "object", "required": ["a"]}', '{"b": 1}', False),
        ("max_tokens: 3", "x", False),
        ("max_total_ms: 1000", "x", True),
        ("max_cost: 0.01", "x", True),
    ],
)
def test_each_check_kind(line, text, passed):
    out = checks.Output(text, "Paris", 10.0, 100.0, 5, Decimal("0.001"))
    assert checks.evaluate(checks.parse(line)[0], out).passed is passed


def test_equals_expected_compares_with_the_row():
    check = checks.parse("equals_expected")[0]
    assert checks.evaluate(check, checks.Output(" Paris\n", "Paris", None, None, None, None)).passed


def test_a_bad_check_line_is_named():
    with pytest.raises(checks.CheckError, match="Check line 2"):
        checks.parse("contains: a\nregex: (")


# Grid, stop, compare -----------------------------------------------------------------------


def test_the_grid_shows_cells_filters_failures_and_exports(
    client_for, user, upstream, api_key, immediate
):
    upstream.script(Behaviour(tokens=["Paris"]), Behaviour(tokens=["Cusco"]))
    run = runner.start(make_experiment(user, check_lines="contains: Paris"), user)
    page = client_for.get(f"/experiments/runs/{run.pk}/").content.decode()
    assert "Paris" in page and "Cusco" in page and "2 done" in page
    failures = client_for.get(f"/experiments/runs/{run.pk}/?show=failures").content.decode()
    assert "Cusco" in failures and 'id="grid-row-0"' not in failures
    differences = client_for.get(f"/experiments/runs/{run.pk}/?show=differences")
    assert "No rows under this filter" in differences.content.decode()  # one variant
    csv = b"".join(client_for.get(f"/experiments/runs/{run.pk}/export.csv").streaming_content)
    assert b"Paris" in csv and b"contains: Paris: pass" in csv
    data = client_for.get(f"/experiments/runs/{run.pk}/export.json").json()
    assert [d["passed"] for d in data] == [True, False]


def test_stop_ends_the_run_and_its_pending_items(client_for, user, settings):
    settings.TASKS = {"default": {"BACKEND": "django_tasks.backends.dummy.DummyBackend"}}
    run = runner.start(make_experiment(user), user)
    client_for.post(f"/experiments/runs/{run.pk}/stop/")
    run.refresh_from_db()
    assert run.status == "stopped"
    assert set(run.items.values_list("status", flat=True)) == {"stopped"}


def test_a_stopped_cell_is_shown_stopped_not_failed(client_for, user, upstream, api_key, settings):
    """A cell whose reply the user stopped has no verdict: not under Failures, not drawn
    failed, and no regression against a run where it passed. Every failed cell is a
    failure, one whose worker was lost twice too."""
    from datetime import timedelta

    from django.utils import timezone

    settings.TASKS = {"default": {"BACKEND": "django_tasks.backends.dummy.DummyBackend"}}
    experiment = make_experiment(user, rows=("France", "Peru", "Chile"), check_lines="")
    earlier = runner.start(experiment, user)
    earlier.items.update(status="done", passed=True)
    run = runner.start(experiment, user)
    stopped, failed, lost = worker.claim_many(run.pk, "w1", 3)
    worker._end_now(stopped, "w1", Item.Status.STOPPED, "", [])
    worker._end_now(failed, "w1", Item.Status.FAILED, "The upstream failed.", [])
    past = timezone.now() - timedelta(seconds=1)
    Item.objects.filter(pk=lost.pk).update(attempts=worker.MAX_ATTEMPTS, lease_until=past)
    assert worker.claim_many(run.pk, "w2", 1) == []  # lost twice: failed, not retried
    assert [i.passed for i in run.items.order_by("position")] == [None, False, False]
    failures = client_for.get(f"/experiments/runs/{run.pk}/?show=failures").content.decode()
    assert 'id="grid-row-0"' not in failures
    assert 'id="grid-row-1"' in failures and 'id="grid-row-2"' in failures
    page = client_for.get(f"/experiments/runs/{run.pk}/").content.decode()
    assert "2 failed" in page and "1 stopped" in page
    assert page.count(' cell-fail"') == 2  # the failed cells'
    compared = client_for.get(f"/experiments/runs/{run.pk}/compare/").content.decode()
    assert "Regressions (2)" in compared


def test_compare_shows_regressions_fixes_and_word_diffs(
    client_for, user, upstream, api_key, immediate
):
    experiment = make_experiment(user, check_lines="contains: Paris")
    upstream.script(Behaviour(tokens=["Paris"]), Behaviour(tokens=["Lima"]))
    runner.start(experiment, user)
    upstream.script(Behaviour(tokens=["Berlin"]), Behaviour(tokens=["Lima, Paris"]))
    second = runner.start(experiment, user)
    page = client_for.get(f"/experiments/runs/{second.pk}/compare/").content.decode()
    assert "Regressions (1)" in page and "Fixes (1)" in page
    assert "<del>Paris</del>" in page and "<ins>Berlin</ins>" in page


@pytest.mark.parametrize("reach", ["channel layer", "lease loop only"])
async def test_stop_closes_the_upstream_requests_in_flight(
    client_for, user, upstream, api_key, settings, monkeypatch, reach
):
    """A worker's drain (as db_worker runs it, on an event loop of its own) holds two items
    streaming; Stop from the page closes both upstream responses, nothing else starts, and
    the run ends stopped. "lease loop only": the page's process cannot reach the worker's
    replies (db_worker is another process and the embedded layer is in memory), so the
    worker's lease loop must see the stop and end them itself.

    The drain runs as a task of the test's loop and the page's request through
    sync_to_async, so the worker's queries and the page's share asgiref's one database
    thread. The test database is SQLite in memory with a shared cache, whose table locks
    fail at once ("database table is locked": neither the busy timeout nor WAL applies to
    it), so a worker on a thread of its own collided with the page's BEGIN IMMEDIATE now
    and then, instead of waiting for it as two processes on the SQLite file do."""
    from asgiref.sync import sync_to_async

    settings.TASKS = {"default": {"BACKEND": "django_tasks.backends.dummy.DummyBackend"}}
    settings.PLAYGROUND_EXPERIMENTS = {
        **settings.PLAYGROUND_EXPERIMENTS,
        "CONCURRENCY": 2,
        "LEASE": 1.5,  # the lease loop looks at the run every 0.5 s
    }
    if reach == "lease loop only":
        monkeypatch.setattr(runner.runs, "stop_sync", lambda where: [])
    upstream.default = Behaviour(n_tokens=400, interval=0.05)  # 20 s each, unless stopped
    run = await sync_to_async(
        lambda: runner.start(make_experiment(user, rows=("a", "b", "c")), user)
    )()
    drain = asyncio.create_task(worker.drain(run.pk))
    try:
        assert await asyncio.to_thread(upstream.wait_for_requests, 2, 10)
        await sync_to_async(client_for.post)(f"/experiments/runs/{run.pk}/stop/")
        # Both closed long before their 20 s streams would end (a bound, not a timing).
        assert await asyncio.to_thread(upstream.wait_for_disconnect, 10, 2)
        assert await asyncio.wait_for(drain, 10) == 2
    finally:
        if not drain.done():  # never left running into the next test
            drain.cancel()
            await asyncio.gather(drain, return_exceptions=True)
    await run.arefresh_from_db()
    assert run.status == "stopped"
    statuses = [s async for s in run.items.values_list("status", flat=True)]
    assert statuses == ["stopped"] * 3
    replies = Message.objects.filter(conversation__group=run.group_id, role="assistant")
    assert [s async for s in replies.values_list("status", flat=True)] == ["stopped"] * 2
    assert len(upstream.requests) == 2  # the third item never started


DEAD = "gone-host:4242:dead00"  # a worker SIGKILLed while it held items: it renews nothing


def _stopped_while_a_dead_worker_holds(user, rows=("a", "b", "c")):
    """A run whose worker was killed holding two items, then Stop pressed while their
    leases were still live: the run stays stopping, the two items running."""
    run = runner.start(make_experiment(user, rows=rows), user)
    held = worker.claim_many(run.pk, DEAD, 2)
    assert len(held) == 2
    runner.stop(run)
    run.refresh_from_db()
    assert run.status == "stopping"
    assert run.items.filter(status="running", worker=DEAD).count() == 2
    return run


def _assert_reaped(run, announced) -> None:
    run.refresh_from_db()
    assert run.status == "stopped" and run.finished is not None
    items = list(run.items.values_list("status", "attempts", "worker"))
    assert [status for status, _, _ in items] == ["stopped"] * len(items)
    # Stopped, not retried: nobody claimed them again.
    assert [(a, w) for _, a, w in items if w] == [(1, DEAD), (1, DEAD)]
    assert run.pk in announced  # the page's live progress hears of it


async def test_a_surviving_workers_lease_loop_ends_a_stopping_run_left_by_a_dead_worker(
    user, settings, monkeypatch
):
    """Another worker's drain of the stopping run (as db_worker runs it, on the test's
    loop and database thread, see the Stop test) waits for the dead worker's leases to pass,
    then its lease loop stops those items and ends the run; before, it returned at once and
    the run stayed stopping until someone pressed Stop again."""
    from asgiref.sync import sync_to_async

    from playground.experiments import progress
    from playground.experiments.models import Drainer

    settings.TASKS = {"default": {"BACKEND": "django_tasks.backends.dummy.DummyBackend"}}
    settings.PLAYGROUND_EXPERIMENTS = {
        **settings.PLAYGROUND_EXPERIMENTS,
        "CONCURRENCY": 2,
        "LEASE": 1.0,
    }
    announced: list[int] = []
    monkeypatch.setattr(progress, "announce", announced.append)
    run = await sync_to_async(_stopped_while_a_dead_worker_holds)(user)
    announced.clear()
    assert await asyncio.wait_for(worker.drain(run.pk), 10) == 0
    await sync_to_async(_assert_reaped)(run, announced)
    assert not await Drainer.objects.filter(run=run).aexists()


def test_a_stopping_run_whose_workers_all_died_ends_when_its_page_is_opened(
    client_for, user, settings, monkeypatch
):
    """No worker left to reap it: the run page (here its poll) does, once the leases
    passed, and not before (a live worker may still be ending those items)."""
    from datetime import timedelta

    from django.utils import timezone

    from playground.experiments import progress

    settings.TASKS = {"default": {"BACKEND": "django_tasks.backends.dummy.DummyBackend"}}
    settings.PLAYGROUND_EXPERIMENTS = {**settings.PLAYGROUND_EXPERIMENTS, "CONCURRENCY": 2}
    announced: list[int] = []
    monkeypatch.setattr(progress, "announce", announced.append)
    run = _stopped_while_a_dead_worker_holds(user)
    page = client_for.get(f"/experiments/runs/{run.pk}/progress/")
    assert page.status_code == 200 and "2 remaining" in page.content.decode()
    run.refresh_from_db()
    assert run.status == "stopping"  # the leases are still live
    announced.clear()
    run.items.filter(status="running").update(lease_until=timezone.now() - timedelta(seconds=1))
    polled = client_for.get(f"/experiments/runs/{run.pk}/progress/")
    assert polled.status_code == 286  # htmx stops polling: the run is over
    assert "3 stopped" in polled.content.decode()
    _assert_reaped(run, announced)
    assert client_for.get(f"/experiments/runs/{run.pk}/").status_code == 200


def test_reaping_a_stopping_run_ends_it_once(user, settings, monkeypatch):
    from datetime import timedelta

    from django.utils import timezone

    from playground.experiments import progress

    settings.TASKS = {"default": {"BACKEND": "django_tasks.backends.dummy.DummyBackend"}}
    settings.PLAYGROUND_EXPERIMENTS = {**settings.PLAYGROUND_EXPERIMENTS, "CONCURRENCY": 2}
    announced: list[int] = []
    monkeypatch.setattr(progress, "announce", announced.append)
    run = _stopped_while_a_dead_worker_holds(user)
    announced.clear()
    assert worker.reap(run.pk) is False  # leases live: nothing to do yet
    assert announced == []
    run.items.filter(status="running").update(lease_until=timezone.now() - timedelta(seconds=1))
    assert worker.reap(run.pk) is True
    assert worker.reap(run.pk) is False  # a second reaper finds it ended
    assert announced == [run.pk]
    _assert_reaped(run, announced)
    # A running run's lost items are the claim's to retry, never the reaper's.
    running = runner.start(make_experiment(user, rows=("x",)), user)
    worker.claim_many(running.pk, DEAD, 1)
    running.items.update(lease_until=timezone.now() - timedelta(seconds=1))
    assert worker.reap(running.pk) is False
    assert running.items.get().status == "running"


async def _progress_socket(user, run_id: int):
    from channels.db import database_sync_to_async
    from channels.testing import WebsocketCommunicator

    from playground.asgi import application
    from tests.conftest import ORIGIN, session_cookie

    cookie = await database_sync_to_async(session_cookie)(user)
    headers = [(b"host", b"127.0.0.1:8000"), (b"origin", ORIGIN), (b"cookie", cookie)]
    socket = WebsocketCommunicator(
        application, f"/ws/experiments/runs/{run_id}/?show=all", headers=headers
    )
    connected, code = await socket.connect(timeout=5)
    return socket, connected, code


async def test_the_progress_socket_redraws_when_a_worker_announces(user, other_user, settings):
    """Redis mode's live progress: the socket answers the run's group with #run-live again,
    out of band; a user who may not see the run is refused."""
    from asgiref.sync import sync_to_async
    from channels.layers import get_channel_layer

    from playground.experiments import progress

    settings.TASKS = {"default": {"BACKEND": "django_tasks.backends.dummy.DummyBackend"}}
    run = await sync_to_async(lambda: runner.start(make_experiment(user), user))()
    socket, connected, _ = await _progress_socket(user, run.pk)
    assert connected
    first = await socket.receive_from(timeout=5)
    assert 'id="run-live" hx-swap-oob="true"' in first and "0 done" in first
    await Item.objects.filter(run=run, position=0).aupdate(status="done", passed=True)
    await get_channel_layer().group_send(
        progress.group_name(run.pk), {"type": "experiment.progress"}
    )
    again = await socket.receive_from(timeout=5)
    assert "1 done" in again
    await socket.disconnect()
    foreign, connected, code = await _progress_socket(other_user, run.pk)
    assert not connected and code == 4403


async def test_the_progress_socket_of_a_stopping_run_looks_again_until_it_ends(user, settings):
    """Redis mode has no poll: a socket watching a run left stopping by dead workers
    redraws every POLL_INTERVAL, each look reaping it, so it shows the run stopped once
    the leases pass, though no worker is left to announce anything."""
    from datetime import timedelta

    from asgiref.sync import sync_to_async
    from django.utils import timezone

    settings.TASKS = {"default": {"BACKEND": "django_tasks.backends.dummy.DummyBackend"}}
    settings.PLAYGROUND_EXPERIMENTS = {
        **settings.PLAYGROUND_EXPERIMENTS,
        "CONCURRENCY": 2,
        "POLL_INTERVAL": 0.2,
    }
    run = await sync_to_async(_stopped_while_a_dead_worker_holds)(user)
    socket, connected, _ = await _progress_socket(user, run.pk)
    assert connected
    first = await socket.receive_from(timeout=5)
    assert "2 remaining" in first
    await Item.objects.filter(run=run, status="running").aupdate(
        lease_until=timezone.now() - timedelta(seconds=1)
    )
    again = await socket.receive_from(timeout=5)
    while "2 remaining" in again:  # a look before the leases passed
        again = await socket.receive_from(timeout=5)
    assert "3 stopped" in again and "0 remaining" in again
    await socket.disconnect()
    await run.arefresh_from_db()
    assert run.status == "stopped"


def test_without_redis_the_page_polls_until_the_run_ends(client_for, user, settings):
    settings.TASKS = {"default": {"BACKEND": "django_tasks.backends.dummy.DummyBackend"}}
    run = runner.start(make_experiment(user), user)
    page = client_for.get(f"/experiments/runs/{run.pk}/").content.decode()
    assert f'hx-get="/experiments/runs/{run.pk}/progress/?show=all&amp;page=1"' in page
    assert "ws-connect" not in page
    polled = client_for.get(f"/experiments/runs/{run.pk}/progress/")
    assert polled.status_code == 200 and "2 remaining" in polled.content.decode()
    Item.objects.filter(run=run).update(status="done", passed=True)
    worker.finish_if_done(run.pk)
    polled = client_for.get(f"/experiments/runs/{run.pk}/progress/")
    assert polled.status_code == 286  # htmx stops polling
    assert "2 done" in polled.content.decode()


def test_the_differences_filter_keeps_rows_where_variants_disagree(
    client_for, user, upstream, api_key, immediate
):
    variants = [
        {"label": "A", "model": MODEL, "params": {}, "system_prompt": ""},
        {"label": "B", "model": MODEL, "params": {"temperature": 0.5}, "system_prompt": ""},
    ]
    upstream.script(*(Behaviour(tokens=[t]) for t in ["Paris", "Paris", "Lima", "Cusco"]))
    run = runner.start(make_experiment(user, variants=variants), user)
    page = client_for.get(f"/experiments/runs/{run.pk}/?show=differences").content.decode()
    assert 'id="grid-row-1"' in page and 'id="grid-row-0"' not in page
    totals = client_for.get(f"/experiments/runs/{run.pk}/").content.decode()
    assert totals.count('class="pass-rate"') == 2


def test_asking_the_judge_again_calls_only_the_judge_model(
    client_for, user, upstream, api_key, immediate
):
    upstream.script(
        Behaviour(tokens=["Paris"]),
        Behaviour(tokens=['{"pass": false, "reason": "too short"}']),
    )
    experiment = make_experiment(user, rows=("France",), check_lines=f"judge: {MODEL}: Good?")
    run = runner.start(experiment, user)
    assert run.items.get().passed is False
    upstream.reset()
    upstream.script(Behaviour(tokens=['{"pass": true, "reason": "fine after all"}']))
    client_for.post(f"/experiments/runs/{run.pk}/recheck/", {"judge": "1"})
    item = run.items.get()
    assert item.passed is True and item.verdicts[0]["reason"] == "fine after all"
    assert len(upstream.requests) == 1 and "Good?" in str(upstream.requests[0].body)
    assert item.message.text == "Paris"  # the cell's reply is the same one


def test_asking_the_judge_again_stays_within_the_budget(
    client_for, user, upstream, api_key, immediate, settings
):
    """Asking again sent up to the run's concurrency of judges at once, each checked as it
    started against what was recorded: with room for one more judge, all three went. With a
    budget in force they go one at a time, each checked with the ones before it counted."""
    from playground.accounts.models import Budget
    from playground.chat import budgets

    settings.PLAYGROUND_EXPERIMENTS = {**settings.PLAYGROUND_EXPERIMENTS, "CONCURRENCY": 4}
    upstream.default = Behaviour(tokens=['{"pass": true, "reason": "fine"}'])
    experiment = make_experiment(user, rows=("a", "b", "c"), check_lines=f"judge: {MODEL}: Ok?")
    run = runner.start(experiment, user)  # three replies and three judges: $0.18
    Budget.set(team=None, user=user, by=user, monthly_cost=Decimal("0.21"), daily_messages=None)
    upstream.reset()
    again = '{"pass": false, "reason": "asked again"}'
    upstream.default = Behaviour(tokens=list(again), interval=0.01)
    client_for.post(f"/experiments/runs/{run.pk}/recheck/", {"judge": "1"})
    spent = budgets.replies_in_space(user, None).aggregate(total=Sum("cost"))["total"]
    assert spent <= Decimal("0.21")
    assert len(upstream.requests) == 1
    reasons = sorted(i.verdicts[0]["reason"] for i in run.items.all())
    assert reasons[0] == "asked again"
    assert all("Not sent" in r for r in reasons[1:])


def test_deleting_a_team_or_a_user_takes_their_experiments_along(user, settings):
    """Rows a run used are kept while the run exists (RESTRICT), but a deletion that takes
    the run too goes through."""
    from playground.accounts.models import Team

    settings.TASKS = {"default": {"BACKEND": "django_tasks.backends.dummy.DummyBackend"}}
    team = Team.create(name="Lab", owner=user)
    experiment = make_experiment(user)
    Experiment.objects.filter(pk=experiment.pk).update(team=team)
    Dataset.objects.filter(pk=experiment.dataset_id).update(team=team)
    runner.start(Experiment.objects.get(pk=experiment.pk), user)
    team.delete()
    assert not Experiment.objects.exists() and not Item.objects.exists()
    other = make_experiment(user)
    runner.start(other, user)
    user.delete()
    assert not Experiment.objects.exists() and not Dataset.objects.exists()


def test_the_experiment_form_names_bad_variant_and_check_lines(client_for, user):
    dataset = make_experiment(user).dataset
    data = {
        "name": "Bad",
        "dataset": dataset.pk,
        "prompt": "{{country}}",
        "variants": f'{MODEL}\n{MODEL} | {{"temperature": 99}}',
        "checks": "contains: x\nsmells_good",
        "repeats": 1,
        "rows": "1-2",
    }
    response = client_for.post("/experiments/new/", data)
    page = response.content.decode()
    assert response.status_code == 400
    assert "Variant line 2: temperature" in page
    assert "Check line 2: “smells_good” is not a check" in page
    assert not Experiment.objects.filter(name="Bad").exists()


def test_the_rows_of_a_run_are_capped_at_the_largest_dataset(client_for, user, settings):
    """Each range was capped alone, so enough ranges asked for any number of rows (and the
    form built a set of them all); together they may name at most MAX_ROWS, overlaps once."""
    settings.PLAYGROUND_EXPERIMENTS = {**settings.PLAYGROUND_EXPERIMENTS, "MAX_ROWS": 5}
    dataset = make_experiment(user).dataset
    data = {
        "name": "Rows",
        "dataset": dataset.pk,
        "prompt": "{{country}}",
        "variants": MODEL,
        "checks": "",
        "repeats": 1,
    }
    response = client_for.post("/experiments/new/", {**data, "rows": "1-3, 4-6"})
    assert response.status_code == 400
    assert "At most 5 rows in a run; these ranges name 6." in response.content.decode()
    huge = ", ".join(f"{n * 100_000 + 1}-{(n + 1) * 100_000}" for n in range(1000))
    response = client_for.post("/experiments/new/", {**data, "rows": huge})
    assert response.status_code == 400 and "At most 5 rows" in response.content.decode()
    assert not Experiment.objects.filter(name="Rows").exists()
    response = client_for.post("/experiments/new/", {**data, "rows": "1-5, 2-4, 5"})
    assert response.status_code == 302
    assert Experiment.objects.get(name="Rows").row_positions == [0, 1, 2, 3, 4]


def test_a_run_of_more_items_than_the_cap_is_refused_before_anything_is_written(
    client_for, user, settings
):
    """Rows, variants and repeats were each capped (MAX_ROWS, 10, 10) but not their product:
    one run could write a million items in one transaction. Over MAX_ITEMS the run is
    refused, naming the count and the cap, and nothing of it is written. Checked when the
    run starts, as the dataset may have grown since the experiment was saved."""
    settings.TASKS = {"default": {"BACKEND": "django_tasks.backends.dummy.DummyBackend"}}
    settings.PLAYGROUND_EXPERIMENTS = {**settings.PLAYGROUND_EXPERIMENTS, "MAX_ITEMS": 5}
    variant = {"label": "A", "model": MODEL, "params": {}, "system_prompt": ""}
    experiment = make_experiment(user, rows=("a", "b", "c"), variants=[variant, variant])
    with pytest.raises(runner.RunError) as caught:
        runner.start(experiment, user)
    assert (
        str(caught.value) == "3 rows × 2 variants × 1 repeat make 6 items; a run makes at most 5."
    )
    assert not ExperimentRun.objects.exists() and not RunGroup.objects.exists()
    assert not Item.objects.exists()
    experiment.row_positions, experiment.repeats = [0, 1], 2  # 8 items
    experiment.save()
    response = client_for.post(f"/experiments/{experiment.pk}/run/", follow=True)
    assert "2 rows × 2 variants × 2 repeats make 8 items" in response.content.decode()
    assert not ExperimentRun.objects.exists() and not Item.objects.exists()
    experiment.row_positions = [1]  # 4 items
    experiment.save()
    run = runner.start(experiment, user)
    assert run.items.count() == 4


def test_the_experiment_form_refuses_more_items_than_a_run_makes(client_for, user, settings):
    settings.PLAYGROUND_EXPERIMENTS = {**settings.PLAYGROUND_EXPERIMENTS, "MAX_ITEMS": 10}
    dataset = make_experiment(user, rows=("a", "b", "c")).dataset
    data = {
        "name": "Big",
        "dataset": dataset.pk,
        "prompt": "{{country}}",
        "variants": f"{MODEL}\n{MODEL}",
        "checks": "",
        "repeats": 2,
    }
    response = client_for.post("/experiments/new/", data)
    assert response.status_code == 400
    assert "3 rows × 2 variants × 2 repeats make 12 items" in response.content.decode()
    assert "a run makes at most 10" in response.content.decode()
    assert not Experiment.objects.filter(name="Big").exists()
    # Rows named past the dataset's end make no items.
    response = client_for.post("/experiments/new/", {**data, "rows": "2, 7-900"})
    assert response.status_code == 302
    assert Experiment.objects.get(name="Big").row_positions[:2] == [1, 6]


def test_json_that_python_cannot_read_in_the_experiment_form_is_a_form_error(client_for, user):
    """Parameters or a schema with an integer of more than 4300 digits, or nested deeper than
    the recursion limit: json.loads raises ValueError or RecursionError, not JSONDecodeError."""
    dataset = make_experiment(user).dataset
    data = {
        "name": "Odd",
        "dataset": dataset.pk,
        "prompt": "{{country}}",
        "variants": f'{MODEL} | {{"seed": {"1" * 5000}}}',
        "checks": "json_schema: " + "[" * 100_000 + "]" * 100_000,
        "repeats": 1,
    }
    response = client_for.post("/experiments/new/", data)
    page = response.content.decode()
    assert response.status_code == 400
    assert "Variant line 1: the parameters are not JSON" in page
    assert "Check line 1: the schema is not JSON" in page
    assert not Experiment.objects.filter(name="Odd").exists()


def test_a_row_edit_with_json_python_cannot_read_is_refused(client_for, user):
    dataset = make_experiment(user).dataset
    row = dataset.rows.get(position=0)
    response = client_for.post(
        f"/experiments/datasets/{dataset.pk}/rows/{row.pk}/",
        {"variables": '{"country": ' + "1" * 5000 + "}", "expected": ""},
    )
    assert response.status_code == 302
    assert dataset.rows.get(position=0).variables == {"country": "France"}


@pytest.mark.parametrize("name", ["a\n", "two words", "1st", "expected"])
def test_a_row_edit_names_variables_as_an_upload_does(client_for, user, name):
    """An upload refuses a column that is not a variable name; a row edited or added by hand
    took any key, and it became a column of the dataset that no `{{name}}` reaches (or one
    called `expected`, beside the row's expected output)."""
    dataset = make_experiment(user).dataset
    row = dataset.rows.get(position=0)
    variables = json.dumps({"country": "Chile", name: "x"})
    response = client_for.post(
        f"/experiments/datasets/{dataset.pk}/rows/{row.pk}/",
        {"variables": variables, "expected": ""},
        follow=True,
    )
    assert "is not a variable name" in response.content.decode()
    client_for.post(f"/experiments/datasets/{dataset.pk}/rows/", {"variables": variables})
    dataset.refresh_from_db()
    assert dataset.columns == ["country"] and dataset.rows.count() == 2
    assert dataset.rows.get(position=0).variables == {"country": "France"}
    form = forms.RowForm({"variables": variables, "expected": "", "notes": ""})
    assert not form.is_valid() and "variables" in form.errors


def test_a_subset_of_rows_and_repeats_make_the_items(user, upstream, api_key, immediate):
    experiment = make_experiment(user, rows=("a", "b", "c"))
    experiment.row_positions = [0, 2]
    experiment.repeats = 2
    experiment.save()
    run = runner.start(experiment, user)
    cells = sorted(run.items.values_list("row__position", "repeat"))
    assert cells == [(0, 0), (0, 1), (2, 0), (2, 1)]
    assert set(run.items.values_list("status", flat=True)) == {"done"}


def test_a_variant_can_be_a_prompt_version_from_the_library(
    client_for, user, upstream, api_key, immediate
):
    from playground.prompts.models import Prompt, PromptRun

    prompt = Prompt.objects.create(owner=user, name="capitals")
    v1 = prompt.add_version(
        user,
        model=MODEL,
        system_prompt="You are terse.",
        messages=[{"role": "user", "content": "Capital of {{country}}? One word."}],
    )
    prompt.set_label("production", v1, user)
    prompt.add_version(user, model=MODEL, messages=[{"role": "user", "content": "v2 {{country}}"}])
    dataset = make_experiment(user, rows=("France",)).dataset
    data = {
        "name": "From the library",
        "dataset": dataset.pk,
        "prompt": "unused {{country}}",
        "variants": "prompt: capitals@production\nprompt: capitals",
        "checks": "",
        "repeats": 1,
        "rows": "",
    }
    response = client_for.post("/experiments/new/", data)
    assert response.status_code == 302, response.content.decode()[:2000]
    experiment = Experiment.objects.get(name="From the library")
    assert [v["prompt_version"] for v in experiment.variants] == [v1.pk, v1.pk + 1]
    run = runner.start(experiment, user)
    sent = sorted(r.body["messages"][-1]["content"] for r in upstream.requests)
    assert sent == ["Capital of France? One word.", "v2 France"]
    first = run.items.get(variant=0)
    assert first.message.request_body["messages"][0] == {
        "role": "system",
        "content": "You are terse.",
    }
    # The reply records the version it came from, as a playground send from Prompts does.
    assert PromptRun.objects.get(message=first.message).version == v1


def test_a_conversation_page_offers_add_to_dataset_and_links_its_cell(
    client_for, user, upstream, api_key, immediate
):
    upstream.script(Behaviour(tokens=["Paris"]))
    experiment = make_experiment(user, rows=("France",))
    run = runner.start(experiment, user)
    item = run.items.get()
    page = client_for.get(f"/c/{item.conversation_id}/").content.decode()
    assert f'href="/experiments/runs/{run.pk}/"' in page and 'id="add-to-dataset"' in page
    client_for.post(
        "/experiments/datasets/add-reply/",
        {"dataset": experiment.dataset_id, "message": item.message_id},
    )
    newest = Dataset.objects.get(previous=experiment.dataset)  # a run used it: new version
    row = newest.rows.order_by("-position").first()
    assert row.variables == {"input": "Capital of France?"} and row.expected == "Paris"


def test_resume_queues_another_drain_task_for_a_run_still_going(client_for, user, settings):
    from django_tasks_db.models import DBTaskResult

    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
    run = runner.start(make_experiment(user), user)
    queued = DBTaskResult.objects.count()
    client_for.post(f"/experiments/runs/{run.pk}/resume/")
    assert DBTaskResult.objects.count() == queued + 1
    client_for.post(f"/experiments/runs/{run.pk}/stop/")
    client_for.post(f"/experiments/runs/{run.pk}/resume/")
    assert DBTaskResult.objects.count() == queued + 1  # a stopped run is not resumed


@pytest.mark.parametrize("rows", ["1-", "+2", "1_0", "١-٣", "2 -", "1-" + "9" * 5000])
def test_rows_are_plain_numbers_and_whole_ranges(client_for, user, rows):
    """int() takes more than row numbers: "1-" (an open range, as one may mean "1 to the
    end") ran row 1 alone, and "+2", "1_0" or other scripts' digits ran rows nobody wrote.
    A part the form cannot read is named back in the error, shortened."""
    dataset = make_experiment(user).dataset
    data = {
        "name": "Rows",
        "dataset": dataset.pk,
        "prompt": "{{country}}",
        "variants": MODEL,
        "checks": "",
        "repeats": 1,
        "rows": rows,
    }
    response = client_for.post("/experiments/new/", data)
    page = response.content.decode()
    assert response.status_code == 400
    assert "is not a row number or range" in page
    assert not Experiment.objects.filter(name="Rows").exists()

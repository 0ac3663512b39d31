"""Experiments in a browser, on the real stack: Daphne plus one `manage.py db_worker`, as
`make run` starts them. Upload a CSV, run two variants with a check and a judge (the fake
upstream plays the model and the judge), watch progress, filter failures, open a cell as a
conversation, change the prompt, run again and read the regression view."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import BIN, ROOT, LiveServer, start_live_server
from tests.e2e.test_browser import USERNAME
from tests.e2e.test_parameters import sign_in
from tests.upstream import Behaviour, FakeUpstream

MODEL = "empiriolabs:gemma-4-e4b"
PASS = '{"pass": true, "reason": "names the capital"}'
FAIL = '{"pass": false, "reason": "not the capital"}'


@pytest.fixture(scope="module")
def experiment_server(e2e_upstream: FakeUpstream, migrated_sqlite: Path) -> Iterator[LiveServer]:
    """A server of its own and one worker. One item at a time, so the fake upstream's
    scripted replies meet the items (and their judges) in order."""
    env = {
        "PLAYGROUND_EXPERIMENT_CONCURRENCY": "1",
        "PLAYGROUND_EXPERIMENT_TASKS_PER_RUN": "1",
        "PLAYGROUND_EXPERIMENT_POLL_INTERVAL": "0.5",
    }
    for server in start_live_server(e2e_upstream, migrated_sqlite, **env):
        log = open(server.var_dir / "worker.log", "wb")  # noqa: SIM115
        worker = subprocess.Popen(
            [
                str(BIN / "python"),
                "manage.py",
                "db_worker",
                "--no-reload",
                "--interval",
                "0.2",
                "--no-startup-delay",
            ],
            cwd=ROOT,
            env=server.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield server
        finally:
            worker.terminate()
            worker.wait(10)
            log.close()


@pytest.fixture
def xpage(browser, experiment_server: LiveServer):
    context = browser.new_context(
        viewport={"width": 1280, "height": 800}, base_url=experiment_server.url
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


def script_run(upstream: FakeUpstream, replies: list[tuple[str, str]]) -> None:
    """Each item's reply, then its judge's answer, in the order the worker runs them."""
    upstream.reset()
    behaviours = []
    for reply, verdict in replies:
        behaviours += [Behaviour(tokens=[reply]), Behaviour(tokens=[verdict])]
    upstream.script(*behaviours)


def wait_done(page, count: int) -> None:
    page.locator("#run-progress .progress-done", has_text=f"{count} done").wait_for()
    page.locator("#run-progress .run-state", has_text="done").wait_for()


@pytest.mark.e2e
def test_upload_run_filter_open_change_rerun_and_see_the_regression(xpage, experiment_server):
    page, upstream = xpage, experiment_server.upstream
    sign_in(page, experiment_server.url)
    page.goto("/experiments/")
    page.locator("#dataset-upload #id_name").fill("Capitals")
    page.locator("#dataset-upload #id_file").set_input_files(
        {"name": "capitals.csv", "mimeType": "text/csv", "buffer": b"country\nFrance\nPeru\n"}
    )
    page.locator("#dataset-upload button").click()
    page.wait_for_url(lambda url: "/experiments/datasets/" in url)
    assert page.locator("table.dataset-rows tbody tr").count() == 2

    page.goto("/experiments/")
    form = page.locator("#experiment-new")
    form.locator("#id_name").fill("Capitals")
    form.locator("#id_dataset").select_option(label="Capitals v1")
    form.locator("#id_prompt").fill("Capital of {{country}}?")
    form.locator("#id_variants").fill(f'{MODEL}\n{MODEL} | {{"temperature": 0.2}}')
    form.locator("#id_checks").fill(f"not_contains: Cusco\njudge: {MODEL}: Names the capital?")
    form.locator("button[type=submit]").click()
    page.wait_for_url(lambda url: url.rstrip("/").split("/")[-1].isdigit())
    experiment_url = page.url

    # Items run row by row, variant by variant: France×2, Peru×2.
    script_run(upstream, [("Paris", PASS), ("Paris", PASS), ("Lima", PASS), ("Cusco", FAIL)])
    page.locator("#run-start button").click()
    page.wait_for_url(lambda url: "/experiments/runs/" in url)
    wait_done(page, 4)  # filled in by polling, without a reload
    assert page.locator(".results-grid td.cell-fail").count() == 1
    assert "Cusco" in page.locator(".results-grid td.cell-fail").inner_text()
    judge_requests = [r for r in upstream.requests if "Names the capital?" in str(r.body)]
    assert len(judge_requests) == 4

    page.locator("#filter-failures").click()
    page.wait_for_url(lambda url: "show=failures" in url)
    rows = page.locator(".results-grid tbody tr.grid-row")
    assert rows.count() == 1 and rows.first.get_attribute("id") == "grid-row-1"
    page.locator(".results-grid td.cell-fail a.open-cell").click()
    page.wait_for_url(lambda url: "/c/" in url)
    page.get_by_text("Cusco").first.wait_for()

    page.goto(experiment_url)
    page.locator("#experiment-edit #id_prompt").fill("What is the capital of {{country}}?")
    page.locator("#experiment-edit button[type=submit]").click()
    page.wait_for_url(experiment_url)
    script_run(upstream, [("Paris", PASS), ("Lyon", FAIL), ("Lima", PASS), ("Lima", PASS)])
    page.locator("#run-start button").click()
    page.wait_for_url(lambda url: "/experiments/runs/" in url)
    wait_done(page, 4)
    sent = upstream.requests[0].body["messages"][-1]["content"]
    assert sent == "What is the capital of France?"

    page.locator("#compare-link").click()
    page.locator("#regressions h2", has_text="Regressions (1)").wait_for()
    assert "Fixes (1)" in page.locator("#fixes h2").inner_text()
    regression = page.locator("#regressions article.change")
    assert regression.locator("del").inner_text() == "Paris"
    assert regression.locator("ins").inner_text() == "Lyon"


BIG_SEED = f"""
from django.contrib.auth import get_user_model
from playground.chat.models import Conversation, Message, RunGroup
from playground.experiments import checks, datasets
from playground.experiments.models import Experiment, ExperimentRun, Item
user = get_user_model().objects.get(username={USERNAME!r})
parsed = datasets.Parsed(columns=["n"], rows=[
    {{"variables": {{"n": str(i)}}, "expected": "", "notes": ""}} for i in range(1000)])
dataset = datasets.create(user, None, "Thousand", parsed)
variants = [{{"label": "A", "model": {MODEL!r}}}, {{"label": "B", "model": {MODEL!r}}}]
experiment = Experiment.objects.create(owner=user, name="Thousand", dataset=dataset,
    prompt="{{{{n}}}}", variants=variants, checks=checks.parse("contains: 7"))
group = RunGroup.objects.create(kind="experiment", owner=user)
run = ExperimentRun.objects.create(experiment=experiment, number=1, group=group,
    dataset=dataset, status="done", started_by=user,
    spec={{"name": "Thousand", "prompt": "{{{{n}}}}", "variants": variants,
          "checks": experiment.checks, "repeats": 1}})
rows = list(dataset.rows.all())
conversations = Conversation.objects.bulk_create(
    Conversation(owner=user, group=group, model={MODEL!r}, position=p) for p in range(2000))
text = "word " * 60
messages = Message.objects.bulk_create(
    Message(conversation=c, role="assistant", text=f"{{c.position}} " + text, total_ms=900,
            output_tokens=60) for c in conversations)
Item.objects.bulk_create(
    Item(run=run, row=rows[p // 2], variant=p % 2, position=p, endpoint="empiriolabs",
         status="done", conversation=conversations[p], message=messages[p],
         passed="7" in str(p), verdicts=[{{"check": 0, "kind": "contains",
         "passed": "7" in str(p), "reason": "r", "score": None}}]) for p in range(2000))
print("RUN", run.pk)
"""
LONG_TASKS = """() => new Promise(resolve => {
  const seen = [];
  new PerformanceObserver(list => seen.push(...list.getEntries().map(e => e.duration)))
    .observe({type: "longtask", buffered: true});
  setTimeout(() => resolve(seen), 300);
})"""


@pytest.mark.e2e
def test_a_thousand_row_grid_keeps_the_main_thread_free(xpage, experiment_server):
    page = xpage
    sign_in(page, experiment_server.url)
    out = experiment_server.manage("shell", "-c", BIG_SEED)
    run_id = int(out.split("RUN", 1)[1].split()[0])
    page.goto(f"/experiments/runs/{run_id}/")
    assert page.locator(".results-grid tbody tr.grid-row").count() == 50  # paginated
    longest = max(page.evaluate(LONG_TASKS), default=0)
    page.locator("#filter-failures").click()
    page.wait_for_url(lambda url: "show=failures" in url)
    page.locator(".results-grid tbody tr.grid-row").first.wait_for()
    longest = max([longest, *page.evaluate(LONG_TASKS)])
    print(f"1,000-row grid: longest main-thread task {longest:.0f} ms")
    assert longest < 200

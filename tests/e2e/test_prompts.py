"""The prompt library in a browser: create a prompt with variables, save a second version,
diff them, move the production label, read it through the API with a token, open it in the
playground, fill the variables in, send, and find the reply by its prompt version in History."""

from __future__ import annotations

import json

import pytest

from tests.e2e.test_browser import Sockets
from tests.e2e.test_parameters import sign_in
from tests.upstream import Behaviour

CHECK = """
from playground.prompts.models import PromptRun
run = PromptRun.objects.select_related("version", "message").get(
    version__prompt__name="support-reply"
)
print(json.dumps({"version": run.version.number, "variables": run.variables,
                  "text": run.message.text, "status": run.message.status}))
"""


@pytest.mark.e2e
def test_a_prompt_goes_from_library_to_playground_and_back_in_history(page, live_server):
    upstream = live_server.upstream
    upstream.reset()
    upstream.default = Behaviour(tokens=["Refund ", "sent."])
    sign_in(page, live_server.url)
    page.locator("#space-switcher summary").click()
    page.locator("#space-switcher button", has_text="Personal").click()

    page.goto("/prompts/")
    page.get_by_role("link", name="New prompt").click()
    page.get_by_label("Name").fill("support-reply")
    page.get_by_label("System prompt").fill("You answer for {{company}}.")
    page.get_by_label("Model").select_option("empiriolabs:gemma-4-e4b")
    page.get_by_label("Message 1", exact=True).fill("Ticket: {{ticket}}")
    page.get_by_role("button", name="Save version 1").click()
    page.wait_for_url(lambda url: url.rstrip("/").split("/")[-1].isdigit())
    prompt_url = page.url

    page.get_by_role("link", name="Edit as new").first.click()
    page.get_by_label("System prompt").fill("You answer kindly for {{company}}.")
    page.get_by_label("Parameters (JSON)").fill('{"temperature": 0.3}')
    page.get_by_label("What changed").fill("kinder")
    page.get_by_role("button", name="Save new version").click()
    page.wait_for_url(prompt_url)
    assert page.locator("#version-2").is_visible()

    page.get_by_role("button", name="Diff").click()
    assert page.locator(".diff-right ins", has_text="kindly").is_visible()
    assert page.locator(".param-diff td", has_text="temperature").is_visible()

    page.goto(prompt_url)
    page.locator("#label-name").fill("production")
    page.locator("#label-version").select_option("2")
    page.get_by_role("button", name="Move label").click()
    assert "production → v2" in page.locator("#label-production").inner_text()

    page.goto("/prompts/tokens/")
    page.get_by_label("Name").fill("ci")
    page.get_by_role("button", name="Create token").click()
    token = page.locator("#new-token").input_value()
    api = page.context.request.get(
        f"{live_server.url}/api/prompts/support-reply?label=production",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert api.status == 200 and api.json()["system_prompt"] == "You answer kindly for {{company}}."
    denied = page.context.request.get(f"{live_server.url}/api/prompts/support-reply")
    assert denied.status == 401  # the browser's session cookie alone reads nothing

    page.goto(prompt_url)
    sockets = Sockets(page)
    with sockets.transcript_loaded():
        page.locator("#version-2").get_by_role("button", name="Open in playground").click()
        page.wait_for_url(lambda url: "/c/" in url)
    panel = page.locator("#prompt-variables")
    assert "support-reply v2" in panel.inner_text()
    page.get_by_role("button", name="Send").click()  # nothing filled in: refused, says why
    page.locator("#composer-error", has_text="{{company}}, {{ticket}}").wait_for()
    page.get_by_label("company").fill("Acme")
    page.get_by_label("ticket").fill("My parcel is late\nOrder 42")
    page.get_by_role("button", name="Send").click()
    page.locator(".status-complete").first.wait_for()
    sent = upstream.requests[-1].body["messages"]
    assert sent[0]["content"] == "You answer kindly for Acme."
    assert sent[-1]["content"] == "Ticket: My parcel is late\nOrder 42"
    assert sent and upstream.requests[-1].body["temperature"] == 0.3

    shell = "import json\n" + CHECK
    record = json.loads(live_server.manage("shell", "-c", shell).strip().splitlines()[-1])
    assert record == {
        "version": 2,
        "variables": {"company": "Acme", "ticket": "My parcel is late\nOrder 42"},
        "text": "Refund sent.",
        "status": "complete",
    }

    page.reload()  # the values are remembered
    assert page.get_by_label("company").input_value() == "Acme"
    page.goto("/review/")
    page.get_by_label("Prompt version").select_option(label="support-reply v2")
    page.locator("#history-results a", has_text="support-reply v2").first.wait_for()

    # Renamed, apps ask for the new name; deleted (replies came from it), it is archived:
    # gone from the library and the API, still a History filter, marked deleted.
    page.goto(prompt_url)
    page.locator(".prompt-manage summary").click()
    page.get_by_label("New name").fill("support-answer")
    page.get_by_role("button", name="Rename").click()
    page.locator("h1", has_text="support-answer").wait_for()
    headers = {"Authorization": f"Bearer {token}"}
    read = page.context.request.get
    assert read(f"{live_server.url}/api/prompts/support-reply", headers=headers).status == 404
    assert read(f"{live_server.url}/api/prompts/support-answer", headers=headers).status == 200
    page.locator(".prompt-manage summary").click()
    page.get_by_role("link", name="Delete support-answer…").click()
    page.locator("li", has_text="came from its versions").wait_for()
    page.get_by_role("button", name="Delete support-answer").click()
    page.wait_for_url(lambda url: url.rstrip("/").endswith("/prompts"))
    assert page.locator("a", has_text="support-answer").count() == 0
    assert read(f"{live_server.url}/api/prompts/support-answer", headers=headers).status == 404
    page.goto("/review/")
    with page.expect_response(lambda r: "prompt_version=" in r.url):
        page.get_by_label("Prompt version").select_option(label="support-answer v2 (deleted)")
    # The conversation keeps the title it was given when the version was opened.
    page.locator("#history-results a", has_text="support-reply v2").first.wait_for()

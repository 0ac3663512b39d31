"""Done-when for custom endpoints: set one up in the app, discover and probe its models, and
send the parameters a llama.cpp server takes."""

from __future__ import annotations

import pytest

from tests.e2e.test_browser import PASSWORD, Sockets, chat_requests
from tests.e2e.test_parameters import sign_in
from tests.upstream import Behaviour

MODEL_ID = "gemma-3-4b-it"
ADMIN = "endpoint-admin"
ADMIN_SCRIPT = (
    "from django.contrib.auth.models import User; "
    "User.objects.filter(username='{username}').exists() or "
    "User.objects.create_superuser('{username}', password='{password}')"
)


@pytest.mark.e2e
def test_an_admin_sets_up_a_llama_cpp_endpoint_and_its_parameters_reach_it(page, live_server):
    upstream = live_server.upstream
    upstream.reset()
    # Like llama-cpp-python: no JSON schema, no usage chunk, but a /tokenize.
    upstream.refuse = {"json_schema": "Input should be 'text' or 'json_object'"}
    upstream.default = Behaviour(tokens=["Local", " reply", "."], usage=False)
    # An admin of its own: a new conversation starts from its user's last settings, and the
    # other browser tests expect the first admin's to be the defaults.
    sign_in(page, live_server.url)
    page.locator("#account-menu summary").click()
    page.get_by_role("button", name="Log out").click()
    live_server.manage("shell", "-c", ADMIN_SCRIPT.format(username=ADMIN, password=PASSWORD))
    page.goto("/login/")
    page.fill("#id_username", ADMIN)
    page.fill("#id_password", PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(lambda url: "/login/" not in url)

    page.locator("#account-menu summary").click()
    page.get_by_role("link", name="Endpoints").click()
    page.fill("#id_name", "Lab llama")
    page.fill("#id_slug", "lab-llama")
    page.fill("#id_base_url", upstream.base_url)
    page.get_by_label("llama.cpp sampling extras").check()
    page.get_by_role("button", name="Add endpoint").click()
    page.wait_for_url("**/endpoints/*/")

    page.get_by_role("button", name="Test connection").click()
    verdict = page.locator("#verdict")
    verdict.wait_for()
    assert "✓ Connected" in verdict.inner_text()
    assert "2 models listed" in verdict.inner_text()

    page.get_by_role("button", name="Discover models").click()
    page.locator("#discovered").wait_for()
    assert "context 8192" in page.locator("#discovered").inner_text()
    discovered = page.locator("#discovered input[type=checkbox]")
    assert discovered.count() == 2
    page.locator(f'#discovered input[type=checkbox][value="{MODEL_ID}"]').check()
    page.locator('#discovered input[type=checkbox][value="gemma-3-27b-it"]').uncheck()
    page.get_by_role("button", name="Offer these models").click()
    row = page.locator("article.endpoint-model", has_text=MODEL_ID)
    row.wait_for()
    assert page.locator("article.endpoint-model").count() == 1

    row.get_by_role("button", name="Probe").click()
    row = page.locator("article.endpoint-model", has_text=MODEL_ID)
    results = row.locator(".probe-results")
    results.wait_for()
    assert "✗ json_schema: refused" in results.inner_text()
    assert "Input should be 'text' or 'json_object'" in results.inner_text()
    assert "✓ tools" in results.inner_text() and "✓ tokenize" in results.inner_text()
    assert row.locator('input[name$="-tools"]').is_checked()
    assert not row.locator('input[name$="-json_schema"]').is_checked()

    sockets = Sockets(page)
    with sockets.transcript_loaded():
        page.goto("/")
    page.select_option("#model", label=f"{MODEL_ID} (Lab llama) · Lab llama")
    page.locator("#p-top_k").wait_for()
    # The probe found json_schema refused: the panel does not offer it, nor its editor.
    formats = page.locator("#p-response_format option")
    assert [formats.nth(i).get_attribute("value") for i in range(formats.count())] == [
        "",
        "json_object",
    ]
    assert page.locator(".param-response_format .schema-fields").count() == 0
    page.fill("#p-temperature", "0.3")
    page.fill("#p-seed", "42")
    page.fill("#p-top_k", "20")
    page.fill("#p-repetition_penalty", "1.1")
    page.fill("#prompt", "Hello, lab.")
    page.press("#prompt", "Enter")
    reply = page.locator(".message.assistant.complete")
    reply.wait_for()

    body = chat_requests(upstream)[-1].body
    assert body["model"] == MODEL_ID
    assert (body["temperature"], body["seed"], body["top_k"]) == (0.3, 42, 20)
    assert body["repeat_penalty"] == 1.1 and "repetition_penalty" not in body
    # No usage came: the counts are the server's /tokenize estimate, marked as such; no price.
    meta = reply.locator(".meta").inner_text()
    assert "≈" in meta and "$" not in meta

"""The Endpoints page: site admins add, test, discover, probe and remove custom endpoints."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from playground.accounts.models import ApiKey, Team
from playground.chat.models import Conversation
from playground.chat.panel import settings_context
from playground.providers import catalog, specs
from playground.providers.models import CustomEndpoint, EndpointModel
from tests.html import attr, find, find_all, has, text
from tests.upstream import Behaviour, FakeUpstream

pytestmark = pytest.mark.django_db(transaction=True)

LAB_KEY = "sk-lab-LEAKCANARY-99887766"


@pytest.fixture
def admin(django_user_model):
    return django_user_model.objects.create_superuser("root", password="correct horse battery")


@pytest.fixture
def admin_client(admin) -> Client:
    client = Client()
    client.force_login(admin)
    return client


@pytest.fixture
def lab(upstream: FakeUpstream) -> CustomEndpoint:
    catalog.forget_custom_models()
    return CustomEndpoint.objects.create(slug="lab", name="Lab", base_url=upstream.base_url)


def urls_of(lab: CustomEndpoint, row: EndpointModel) -> list[tuple[str, str]]:
    pk, mpk = lab.pk, row.pk
    return [
        ("get", reverse("endpoints")),
        ("post", reverse("endpoints")),
        ("get", reverse("endpoint", args=[pk])),
        ("post", reverse("endpoint", args=[pk])),
        ("post", reverse("endpoint_delete", args=[pk])),
        ("post", reverse("endpoint_test", args=[pk])),
        ("post", reverse("endpoint_discover", args=[pk])),
        ("post", reverse("endpoint_models_add", args=[pk])),
        ("post", reverse("endpoint_model", args=[pk, mpk])),
        ("post", reverse("endpoint_model_delete", args=[pk, mpk])),
        ("post", reverse("endpoint_model_probe", args=[pk, mpk])),
    ]


def test_members_and_staff_without_the_permission_get_404_everywhere(
    user, django_user_model, lab, upstream
) -> None:
    row = EndpointModel.objects.create(endpoint=lab, model_id="m")
    staff = django_user_model.objects.create_user("staff", password="x", is_staff=True)
    for who in (user, staff):
        client = Client()
        client.force_login(who)
        for method, url in urls_of(lab, row):
            assert getattr(client, method)(url).status_code == 404, (who, url)
    assert CustomEndpoint.objects.filter(pk=lab.pk).exists()
    assert EndpointModel.objects.filter(pk=row.pk).exists()
    assert upstream.requests == []


def test_anonymous_visitors_are_sent_to_log_in(user, lab) -> None:
    response = Client().get(reverse("endpoint", args=[lab.pk]))
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_posts_need_the_csrf_token(admin, lab) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin)
    response = client.post(reverse("endpoint_delete", args=[lab.pk]))
    assert response.status_code == 403
    assert CustomEndpoint.objects.filter(pk=lab.pk).exists()


def test_a_model_of_another_endpoint_is_not_reachable_through_this_one(admin_client, lab) -> None:
    other = CustomEndpoint.objects.create(slug="other", name="Other", base_url=lab.base_url)
    row = EndpointModel.objects.create(endpoint=other, model_id="m")
    url = reverse("endpoint_model_delete", args=[lab.pk, row.pk])
    assert admin_client.post(url).status_code == 404
    assert EndpointModel.objects.filter(pk=row.pk).exists()


def test_an_admin_adds_an_endpoint_with_a_key_that_is_stored_encrypted(
    admin_client, admin, upstream
) -> None:
    response = admin_client.post(
        reverse("endpoints"),
        {
            "name": "GPU box",
            "slug": "gpu-box",
            "base_url": upstream.base_url,
            "requires_key": "on",
            "param_groups": ["openai", "llamacpp"],
            "key": LAB_KEY,
        },
    )
    custom = CustomEndpoint.objects.get(slug="gpu-box")
    assert response.status_code == 302 and response["Location"].endswith(f"/{custom.pk}/")
    assert custom.requires_key and custom.param_groups == ["openai", "llamacpp"]
    stored = ApiKey.objects.get(provider="gpu-box", user=admin)
    assert LAB_KEY not in stored.ciphertext and stored.reveal() == LAB_KEY
    page = admin_client.get(response["Location"]).content.decode()
    assert LAB_KEY not in page and "A key of yours is stored" in page
    upstream.require_key = LAB_KEY
    verdict = admin_client.post(reverse("endpoint_test", args=[custom.pk])).content.decode()
    assert "✓ Connected" in verdict and LAB_KEY not in verdict
    assert upstream.requests[-1].headers["authorization"] == f"Bearer {LAB_KEY}"


@pytest.mark.parametrize(
    "url", ["http://169.254.169.254/v1", "http://2852039166/v1", "http://[fd00:ec2::254]/v1"]
)
def test_a_metadata_url_is_refused_on_save(admin_client, url) -> None:
    response = admin_client.post(
        reverse("endpoints"),
        {"name": "x", "slug": "x", "base_url": url, "param_groups": ["openai"]},
    )
    assert response.status_code == 200
    assert "cloud metadata" in response.content.decode()
    assert not CustomEndpoint.objects.exists()


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("http://127.0.0.1:8000/v1?x=1", "no query string"),
        ("http://127.0.0.1:8000/v1#frag", "no fragment"),
        ("http://127.0.0.1:70000/v1", "port must be between 1 and 65535"),
    ],
)
def test_a_url_every_request_would_get_wrong_is_refused_on_save(admin_client, url, said) -> None:
    response = admin_client.post(
        reverse("endpoints"),
        {"name": "x", "slug": "x", "base_url": url, "param_groups": ["openai"]},
    )
    assert response.status_code == 200
    assert said in response.content.decode()
    assert not CustomEndpoint.objects.exists()


UNSPLITTABLE = ["http://[::1/v1", "http://::1]/v1", "http://[abc]/v1", "http://a\u2100b/v1"]


@pytest.mark.parametrize("url", UNSPLITTABLE)
def test_a_url_python_cannot_split_is_a_validation_error_on_the_model(url) -> None:
    # full_clean() on the model (the Django admin, any model form) runs clean() even after
    # the field's own check failed: a plain error on base_url, not a ValueError (a 500).
    from django.core.exceptions import ValidationError

    endpoint = CustomEndpoint(slug="x", name="X", base_url=url, param_groups=["openai"])
    with pytest.raises(ValidationError) as caught:
        endpoint.full_clean()
    assert set(caught.value.message_dict) == {"base_url"}


@pytest.mark.parametrize("url", UNSPLITTABLE)
def test_a_url_python_cannot_split_is_refused_by_the_pages_not_a_500(
    admin_client, lab, url
) -> None:
    fields = {"name": "x", "slug": "x", "base_url": url, "param_groups": ["openai"]}
    response = admin_client.post(reverse("endpoints"), fields)
    assert response.status_code == 200
    assert "Enter a valid URL." in response.content.decode()
    response = admin_client.post(reverse("endpoint", args=[lab.pk]), {**fields, "slug": "lab"})
    assert response.status_code == 200
    assert "Enter a valid URL." in response.content.decode()
    response = admin_client.post(
        "/admin/providers/customendpoint/add/",
        {
            **fields,
            "param_groups": '["openai"]',
            "models-TOTAL_FORMS": "0",
            "models-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 200
    assert "Enter a valid URL." in response.content.decode()
    assert list(CustomEndpoint.objects.values_list("slug", "base_url")) == [("lab", lab.base_url)]


def test_a_port_out_of_range_saved_earlier_is_named_by_test_connection(admin_client) -> None:
    # A row saved before the check: the test names the port, not a 500.
    bad = CustomEndpoint.objects.create(
        slug="bad", name="Bad", base_url="http://127.0.0.1:70000/v1"
    )
    response = admin_client.post(reverse("endpoint_test", args=[bad.pk]))
    assert response.status_code == 200
    assert "port 70000" in response.content.decode()


@pytest.mark.parametrize(
    ("url", "port"),
    [
        ("http://127.0.0.1:8000/v1", 8000),
        ("http://gpu-box/v1", 80),
        ("https://gpu-box/v1", 443),
        ("http://127.0.0.1:65535/v1", 65535),
        # Rows saved before the check on save: no port a connection can have, not a crash.
        ("http://127.0.0.1:70000/v1", None),
        ("http://127.0.0.1:0/v1", None),
        ("http://127.0.0.1:abc/v1", None),
        ("http://[::1/v1", None),
    ],
)
def test_the_port_of_a_url_is_none_when_no_connection_could_use_it(url, port) -> None:
    endpoint = CustomEndpoint(slug="x", name="X", base_url=url)
    assert endpoint.port == port
    assert isinstance(endpoint.host, str)


def test_both_sampling_extras_cannot_be_ticked(admin_client, upstream) -> None:
    response = admin_client.post(
        reverse("endpoints"),
        {
            "name": "x",
            "slug": "x",
            "base_url": upstream.base_url,
            "param_groups": ["openai", "vllm", "llamacpp"],
        },
    )
    assert "not both" in response.content.decode()
    assert not CustomEndpoint.objects.exists()


def test_a_failed_test_names_the_reason(admin_client, lab, upstream) -> None:
    upstream.require_key = LAB_KEY
    page = admin_client.post(reverse("endpoint_test", args=[lab.pk])).content.decode()
    assert "✗ 401" in page and "refused the key" in page


def test_discover_then_offer_picked_and_typed_models(admin_client, lab, upstream) -> None:
    page = admin_client.post(reverse("endpoint_discover", args=[lab.pk])).content.decode()
    assert "gemma-3-27b-it" in page and "context 8192" in page
    response = admin_client.post(
        reverse("endpoint_models_add", args=[lab.pk]),
        {
            "listed": ["gemma-3-27b-it", "gemma-3-4b-it"],
            "pick": ["gemma-3-4b-it"],
            "ctx:gemma-3-4b-it": "8192",
            "typed": "my-lora\n",
            "context_window": "4096",
            "max_output": "1024",
        },
    )
    assert response.status_code == 302
    rows = {m.model_id: m for m in lab.models.all()}
    assert set(rows) == {"gemma-3-4b-it", "my-lora"}
    assert rows["gemma-3-4b-it"].context_window == 8192  # from the listing
    assert (rows["my-lora"].context_window, rows["my-lora"].max_output) == (4096, 1024)
    keys = [m.key for m in catalog.all_models()]
    assert "lab:gemma-3-4b-it" in keys and "lab:gemma-3-27b-it" not in keys


@pytest.mark.parametrize("raw", ["²", "1" * 5000])
def test_a_listed_context_that_only_looks_like_digits_is_ignored(admin_client, lab, raw) -> None:
    # str.isdigit() is true for "²" and for 5000 digits, but int() refuses both: not a 500.
    response = admin_client.post(
        reverse("endpoint_models_add", args=[lab.pk]),
        {"listed": ["m"], "pick": ["m"], "ctx:m": raw, "out:m": raw, "context_window": "4096"},
    )
    assert response.status_code == 302
    row = lab.models.get(model_id="m")
    assert (row.context_window, row.max_output) == (4096, None)


def test_a_listed_model_id_holding_a_nul_is_refused_not_a_crash(admin_client, lab) -> None:
    # The server's listing comes back in the page's form: PostgreSQL keeps no NUL in text,
    # and nothing refused one in a picked id (a typed one is refused by its form field).
    response = admin_client.post(
        reverse("endpoint_models_add", args=[lab.pk]),
        {"listed": ["ge\x00mma", "m"], "pick": ["ge\x00mma", "m"], "context_window": "4096"},
    )
    assert "The model id holds a NUL character (\\u0000), which cannot be stored." in text(
        find(response.content, id="add-models")
    )
    assert not lab.models.exists()


def test_probe_records_capabilities_and_the_servers_refusal(admin_client, lab, upstream) -> None:
    row = EndpointModel.objects.create(endpoint=lab, model_id="gemma-3-4b-it")
    upstream.refuse = {"json_schema": "Input should be 'text' or 'json_object'"}
    upstream.default = Behaviour(tokens=["OK"])
    response = admin_client.post(reverse("endpoint_model_probe", args=[lab.pk, row.pk]))
    assert response.status_code == 302
    row.refresh_from_db()
    assert (row.tools, row.logprobs, row.json_schema, row.images) == (True, True, False, True)
    assert "Input should be" in row.probe_results["json_schema"]["detail"]
    assert row.probe_results["tokenize"]["ok"] and row.probed_at is not None
    page = admin_client.get(reverse("endpoint", args=[lab.pk])).content.decode()
    assert "Input should be" in page
    model = catalog.get_model("lab:gemma-3-4b-it")
    assert model.tokenize and model.supports(specs.TOOLS)
    response_format = next(p for p in model.params if p.name == "response_format")
    assert response_format.choices == ("json_object",)


def test_a_model_row_is_edited_with_a_price(admin_client, lab) -> None:
    row = EndpointModel.objects.create(endpoint=lab, model_id="m")
    prefix = f"m{row.pk}-"
    admin_client.post(
        reverse("endpoint_model", args=[lab.pk, row.pk]),
        {prefix + "offered": "on", prefix + "price_per_message": "0.002", prefix + "tools": "on"},
    )
    row.refresh_from_db()
    assert str(row.price_per_message) == "0.002000" and row.tools
    bad = admin_client.post(
        reverse("endpoint_model", args=[lab.pk, row.pk]),
        {prefix + "price_per_message": "-1"},
    )
    assert "cannot be negative" in bad.content.decode()


def test_removing_an_endpoint_removes_its_models_from_the_picker(admin_client, lab) -> None:
    EndpointModel.objects.create(endpoint=lab, model_id="m")
    assert "lab:m" in [m.key for m in catalog.all_models()]
    admin_client.post(reverse("endpoint_delete", args=[lab.pk]))
    assert not CustomEndpoint.objects.exists() and not EndpointModel.objects.exists()
    assert "lab:m" not in [m.key for m in catalog.all_models()]


def test_the_panel_shows_a_custom_models_parameters_from_the_spec(lab) -> None:
    lab.param_groups = ["openai", "vllm"]
    lab.save()
    EndpointModel.objects.create(endpoint=lab, model_id="m", max_output=2048, logprobs=True)
    model = catalog.get_model("lab:m")
    names = [p.name for p in model.params]
    for name in (
        "temperature",
        "top_p",
        "max_tokens",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "logprobs",
        "top_logprobs",
        "response_format",
        "top_k",
        "min_p",
        "repetition_penalty",
    ):
        assert name in names
    assert "tools" not in names  # not a capability of this model (yet)
    context = settings_context(model, {})
    shown = [c["param"].name for s in context["sections"] for c in s["controls"]]
    assert "top_k" in shown and "temperature" in shown
    max_tokens = next(p for p in model.params if p.name == "max_tokens")
    assert max_tokens.max == 2048
    top_k = next(p for p in model.params if p.name == "top_k")
    assert top_k.max is None and top_k.ui_max == 200 and "slider covers" in top_k.help


def test_the_django_admin_still_edits_endpoints_with_their_models(admin_client, lab) -> None:
    EndpointModel.objects.create(endpoint=lab, model_id="inline-model")
    page = admin_client.get(f"/admin/providers/customendpoint/{lab.pk}/change/")
    assert page.status_code == 200 and "inline-model" in page.content.decode()


def test_the_views_that_wait_on_the_endpoint_do_not_hold_the_sync_thread() -> None:
    """Under Daphne every sync view shares one thread: a slow probe would stall the process."""
    from asgiref.sync import iscoroutinefunction

    from playground.accounts import endpoints

    for view in (
        endpoints.endpoint_test,
        endpoints.endpoint_discover,
        endpoints.endpoint_model_probe,
    ):
        assert iscoroutinefunction(view), view


def test_the_admin_picks_the_wire_formats_and_probe_finds_them(admin_client, lab, upstream) -> None:
    row = EndpointModel.objects.create(endpoint=lab, model_id="gemma-3-4b-it")
    assert catalog.get_model("lab:gemma-3-4b-it").formats == (specs.CHAT,)
    prefix = f"m{row.pk}-"
    admin_client.post(
        reverse("endpoint_model", args=[lab.pk, row.pk]),
        {prefix + "offered": "on", prefix + "messages": "on"},
    )
    catalog.forget_custom_models()
    assert catalog.get_model("lab:gemma-3-4b-it").formats == (specs.CHAT, specs.MESSAGES)
    page = admin_client.get(reverse("endpoint", args=[lab.pk])).content.decode()
    assert f'name="m{row.pk}-responses"' in page and "Wire formats" in page
    upstream.default = Behaviour(tokens=["OK"])
    upstream.formats = {"chat", "responses"}
    try:
        admin_client.post(reverse("endpoint_model_probe", args=[lab.pk, row.pk]))
    finally:
        upstream.formats = {"chat", "responses", "messages"}
    row.refresh_from_db()
    assert (row.responses, row.messages) == (True, False)
    catalog.forget_custom_models()
    assert catalog.get_model("lab:gemma-3-4b-it").formats == (specs.CHAT, specs.RESPONSES)


def test_the_panel_offers_only_the_response_formats_the_server_accepts(lab, user) -> None:
    # Probe found json_schema refused (llama.cpp): choosing it could only end in an error.
    EndpointModel.objects.create(endpoint=lab, model_id="m", json_schema=False)
    EndpointModel.objects.create(endpoint=lab, model_id="s", json_schema=True)
    client = Client()
    client.force_login(user)
    refused = Conversation.objects.create(owner=user, model="lab:m")
    page = client.get(f"/c/{refused.pk}/").content.decode()
    options = find_all(find(page, "select", name="param:response_format:type"), "option")
    assert [attr(o, "value") for o in options] == ["", "json_object"]
    assert not has(page, class_="schema-fields")
    accepted = Conversation.objects.create(owner=user, model="lab:s")
    page = client.get(f"/c/{accepted.pk}/").content.decode()
    options = find_all(find(page, "select", name="param:response_format:type"), "option")
    assert [attr(o, "value") for o in options] == ["", "json_object", "json_schema"]
    assert has(page, class_="schema-fields")


def test_a_json_schema_saved_before_the_probe_refused_it_is_shown_as_refused(lab, user) -> None:
    EndpointModel.objects.create(endpoint=lab, model_id="m", json_schema=False)
    schema = {"type": "object"}
    saved = {"type": "json_schema", "json_schema": {"name": "reply", "schema": schema}}
    conversation = Conversation.objects.create(
        owner=user, model="lab:m", params={"response_format": saved}
    )
    client = Client()
    client.force_login(user)
    page = client.get(f"/c/{conversation.pk}/").content.decode()
    chosen = find(page, "option", value="json_schema", selected=True)
    assert "not accepted" in text(chosen)  # not an unset-looking panel that every send fails
    assert "not accepted" in text(find(page, id="param-error-response_format"))
    assert has(page, class_="schema-fields")


UNREADABLE = "cannot be decrypted"


@pytest.fixture
def unreadable_key(admin, lab) -> ApiKey:
    """The admin's key for the lab, stored under an encryption secret no longer known."""
    lab.requires_key = True
    lab.save()
    stored = ApiKey.store(provider=lab.slug, plaintext=LAB_KEY, user=admin)
    ApiKey.objects.filter(pk=stored.pk).update(ciphertext="not-a-token")
    return stored


def test_a_key_that_cannot_be_decrypted_is_named_by_test_connection(
    admin_client, lab, upstream, unreadable_key
) -> None:
    upstream.require_key = LAB_KEY
    response = admin_client.post(reverse("endpoint_test", args=[lab.pk]))
    verdict = text(find(response.content, id="verdict"))
    assert UNREADABLE in verdict and "save it again" in verdict
    assert "refused the key" not in verdict and "No key of yours" not in verdict
    assert not upstream.requests


def test_a_key_that_cannot_be_decrypted_is_named_by_discover(
    admin_client, lab, upstream, unreadable_key
) -> None:
    response = admin_client.post(reverse("endpoint_discover", args=[lab.pk]))
    page = response.content.decode()
    assert UNREADABLE in page and "save it again" in page
    assert "gemma-3-4b-it" not in page
    assert not upstream.requests


def test_a_key_that_cannot_be_decrypted_is_named_by_probe(
    admin_client, lab, upstream, unreadable_key
) -> None:
    row = EndpointModel.objects.create(endpoint=lab, model_id="gemma-3-4b-it")
    response = admin_client.post(
        reverse("endpoint_model_probe", args=[lab.pk, row.pk]), follow=True
    )
    page = response.content.decode()
    assert UNREADABLE in page and "save it again" in page
    assert not upstream.requests
    row.refresh_from_db()
    assert row.probed_at is None


@pytest.fixture
def keys_filed_under_lab(admin, user, lab) -> None:
    """Keys for the lab of the admin, a user and a team, and the user's key for another
    provider, which must outlive the lab."""
    team = Team.create(name="Team", owner=user)
    for owner in ({"user": admin}, {"user": user}, {"team": team}):
        ApiKey.store(provider=lab.slug, plaintext=LAB_KEY, **owner)
    ApiKey.store(provider="empiriolabs", plaintext=LAB_KEY, user=user)


def remaining_keys() -> list[str]:
    return sorted(ApiKey.objects.values_list("provider", flat=True))


def test_removing_an_endpoint_removes_the_keys_filed_under_its_id(
    admin_client, lab, keys_filed_under_lab
) -> None:
    # No one could see them any more, and a later endpoint given the same id would be sent them.
    admin_client.post(reverse("endpoint_delete", args=[lab.pk]))
    assert not CustomEndpoint.objects.exists()
    assert remaining_keys() == ["empiriolabs"]


def test_the_django_admins_bulk_delete_removes_the_keys_too(
    admin_client, lab, upstream, keys_filed_under_lab
) -> None:
    other = CustomEndpoint.objects.create(slug="other", name="Other", base_url=upstream.base_url)
    ApiKey.store(provider=other.slug, plaintext=LAB_KEY, user=User.objects.get(username="root"))
    response = admin_client.post(
        "/admin/providers/customendpoint/",
        {"action": "delete_selected", "_selected_action": [lab.pk, other.pk], "post": "yes"},
    )
    assert response.status_code == 302
    assert not CustomEndpoint.objects.exists()
    assert remaining_keys() == ["empiriolabs"]


# What an admin's own server can send that no database column (PostgreSQL: no NUL; any UTF-8:
# no lone surrogate) or page can hold.
UNFIT = "bad\x00 value \ud800 here"


def test_a_probe_refusal_the_database_cannot_hold_is_stored_with_replacements(
    admin_client, lab, upstream
) -> None:
    row = EndpointModel.objects.create(endpoint=lab, model_id="gemma-3-4b-it")
    upstream.refuse = {"json_schema": UNFIT}
    response = admin_client.post(reverse("endpoint_model_probe", args=[lab.pk, row.pk]))
    assert response.status_code == 302
    row.refresh_from_db()
    assert row.probe_results["json_schema"]["detail"].endswith("bad\ufffd value \ufffd here")
    page = admin_client.get(reverse("endpoint", args=[lab.pk]))
    assert page.status_code == 200 and "value \ufffd here" in page.content.decode()


def test_a_probe_refused_outright_with_such_text_shows_it_replaced(
    admin_client, lab, upstream
) -> None:
    row = EndpointModel.objects.create(endpoint=lab, model_id="gemma-3-4b-it")
    upstream.refuse = {"messages": UNFIT}  # in every request: the first one is refused
    response = admin_client.post(
        reverse("endpoint_model_probe", args=[lab.pk, row.pk]), follow=True
    )
    assert response.status_code == 200
    assert "bad\ufffd value \ufffd here" in response.content.decode()


def test_a_listed_model_id_that_cannot_be_stored_is_left_out_with_a_reason(
    admin_client, lab, upstream
) -> None:
    upstream.models = ["gemma-3-4b-it", "ge\x00mma", "lone\ud800"]
    response = admin_client.post(reverse("endpoint_discover", args=[lab.pk]))
    assert response.status_code == 200
    picks = [attr(e, "value") for e in find_all(response.content, "input", name="pick")]
    assert picks == ["gemma-3-4b-it"]
    said = text(find(response.content, id="discover-refused"))
    assert "holds a NUL character (\\u0000), which cannot be stored" in said
    assert "holds a lone surrogate (\\ud800), which cannot be stored" in said

"""Custom endpoints, set up in the playground by site admins: add, edit, remove, test the
connection, discover models, probe what they accept.

Every view loads its objects through the helpers below, which answer 404 to anyone who may
not manage endpoints, so a member cannot even learn which endpoints exist.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_http_methods, require_POST

from playground.accounts.crypto import KeyDecryptionError
from playground.accounts.forms import EndpointForm, EndpointModelForm, ModelIdsForm
from playground.accounts.models import ApiKey
from playground.providers import catalog, discovery, specs
from playground.providers.client import ConnectionProblem, Endpoint
from playground.providers.models import CustomEndpoint, EndpointModel
from playground.providers.storable import replaced, unstorable

if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser, User

PAGE = "accounts/endpoints.html"


def can_manage_endpoints(user: User | AnonymousUser) -> bool:
    return bool(
        user.is_active and user.is_staff and user.has_perm("providers.change_customendpoint")
    )


def endpoint_for_admin(user: User | AnonymousUser, pk: int) -> CustomEndpoint:
    """The endpoint, if this user may manage endpoints; 404 otherwise."""
    if not can_manage_endpoints(user):
        raise Http404("No such page.")
    return get_object_or_404(CustomEndpoint, pk=pk)


def model_for_admin(user: User | AnonymousUser, pk: int, model_pk: int) -> EndpointModel:
    """One of the endpoint's models (never another endpoint's), if this user may manage them."""
    endpoint = endpoint_for_admin(user, pk)
    return get_object_or_404(
        EndpointModel.objects.select_related("endpoint"), pk=model_pk, endpoint=endpoint
    )


def _target(custom: CustomEndpoint) -> Endpoint:
    return Endpoint(base_url=custom.base_url, policy=catalog.address_policy())


UNREADABLE_KEY = (
    "Your stored key for this endpoint cannot be decrypted (was the encryption secret "
    "changed?): save it again in this endpoint's form. Nothing was sent to the server."
)


class UnreadableKey(Exception):
    """The admin's stored key cannot be decrypted: sending without it would get a verdict
    that blames the server, or says no key is stored, so nothing is sent."""


@sensitive_variables("key")
def _admins_key(user: User | AnonymousUser, custom: CustomEndpoint) -> str | None:
    """The admin's own stored key for this endpoint, for set-up requests; never shown.

    Raises UnreadableKey when one is stored but cannot be decrypted."""
    if not custom.requires_key:
        return None
    stored = ApiKey.objects.for_user(user).filter(provider=custom.slug).first()
    if stored is None:
        return None
    try:
        return stored.reveal()
    except KeyDecryptionError:
        raise UnreadableKey(UNREADABLE_KEY) from None


def _page(request: HttpRequest, custom: CustomEndpoint | None, **extra: Any) -> HttpResponse:
    allow_private = settings.PLAYGROUND_ENDPOINT_ALLOW_PRIVATE
    context: dict[str, Any] = {
        "endpoints": CustomEndpoint.objects.order_by("name"),
        "endpoint": custom,
        "allow_private": allow_private,
        "groups": specs.PARAM_GROUPS,
        "capabilities": EndpointModel.CAPABILITIES,
        **extra,
    }
    if custom is not None:
        context.setdefault("form", EndpointForm(instance=custom, allow_private=allow_private))
        bound = extra.get("bound_forms", {})
        context["rows"] = [
            {
                "model": m,
                "form": bound.get(m.pk) or EndpointModelForm(instance=m, prefix=f"m{m.pk}"),
            }
            for m in custom.models.all()
        ]
        context.setdefault("ids_form", ModelIdsForm())
        context["has_key"] = (
            ApiKey.objects.for_user(request.user).filter(provider=custom.slug).exists()
        )
    else:
        context.setdefault(
            "form",
            EndpointForm(allow_private=allow_private, initial={"param_groups": ["openai"]}),
        )
    return render(request, PAGE, context)


@login_required
@sensitive_post_parameters("key")
@require_http_methods(["GET", "POST"])
def endpoints(request: HttpRequest) -> HttpResponse:
    """The list, and the form that adds one."""
    if not can_manage_endpoints(request.user):
        raise Http404("No such page.")
    if request.method == "POST":
        form = EndpointForm(request.POST, allow_private=settings.PLAYGROUND_ENDPOINT_ALLOW_PRIVATE)
        if form.is_valid():
            custom = _save(request, form)
            messages.success(request, f"{custom.name} added. Discover or type its models next.")
            return redirect("endpoint", custom.pk)
        return _page(request, None, form=form)
    return _page(request, None)


@sensitive_variables("key")
def _save(request: HttpRequest, form: EndpointForm) -> CustomEndpoint:
    with transaction.atomic():
        custom = form.save()
        key = form.cleaned_data.get("key")
        if key:
            ApiKey.store(provider=custom.slug, plaintext=key, user=request.user)
    if form.dns_warning:
        messages.warning(request, form.dns_warning)
    return custom


@login_required
@sensitive_post_parameters("key")
@require_http_methods(["GET", "POST"])
def endpoint(request: HttpRequest, pk: int) -> HttpResponse:
    custom = endpoint_for_admin(request.user, pk)
    if request.method == "POST":
        form = EndpointForm(
            request.POST, instance=custom, allow_private=settings.PLAYGROUND_ENDPOINT_ALLOW_PRIVATE
        )
        if form.is_valid():
            _save(request, form)
            messages.success(request, "Endpoint saved.")
            return redirect("endpoint", custom.pk)
        return _page(request, custom, form=form)
    return _page(request, custom)


@login_required
@require_POST
def endpoint_delete(request: HttpRequest, pk: int) -> HttpResponse:
    custom = endpoint_for_admin(request.user, pk)
    name = custom.name
    custom.delete()
    messages.success(
        request, f"{name} removed; its models are no longer offered and its keys are deleted."
    )
    return redirect("endpoints")


# Test, Discover and Probe wait on the endpoint (Probe: several requests). They are async
# views: a sync view would hold Daphne's one thread for sync views the whole time, and every
# other page of the process would wait with it. The database work runs in sync_to_async.


@sensitive_variables("key")
def _load(request: HttpRequest, pk: int) -> tuple[CustomEndpoint, str | None, str]:
    """The endpoint, the admin's key for it, and why that key cannot be used ("" if it can)."""
    custom = endpoint_for_admin(request.user, pk)
    try:
        return custom, _admins_key(request.user, custom), ""
    except UnreadableKey as exc:
        return custom, None, str(exc)


@login_required
@require_POST
@sensitive_variables("key")
async def endpoint_test(request: HttpRequest, pk: int) -> HttpResponse:
    """Test connection: one request, and a verdict naming what worked or the exact failure."""
    custom, key, unreadable = await sync_to_async(_load)(request, pk)
    if unreadable:
        verdict = discovery.Verdict(False, "key", unreadable)
        return await sync_to_async(_page)(request, custom, verdict=verdict)
    verdict = await discovery.test_connection(_target(custom), key)
    if custom.requires_key and key is None and verdict.ok:
        verdict = discovery.Verdict(
            True,
            "",
            verdict.message + " No key of yours is stored for it: users need one.",
            reachable=True,
            auth_ok=None,
            models=verdict.models,
            rtt_ms=verdict.rtt_ms,
        )
    return await sync_to_async(_page)(request, custom, verdict=verdict)


@login_required
@require_POST
@sensitive_variables("key")
async def endpoint_discover(request: HttpRequest, pk: int) -> HttpResponse:
    """Discover models: GET /models fills the list the admin picks from."""
    custom, key, unreadable = await sync_to_async(_load)(request, pk)
    if unreadable:
        return await sync_to_async(_page)(request, custom, discover_error=unreadable)
    try:
        listed = await discovery.discover(_target(custom), key)
    except (ConnectionProblem, ValueError) as exc:
        return await sync_to_async(_page)(request, custom, discover_error=str(exc))
    # An id no database column holds cannot be offered, nor sent in a page (a lone surrogate):
    # left out, with the reason and the id as it can be shown.
    refused = [
        f"The server lists {replaced(m.id)!r}, left out: it holds {what}, which cannot be stored."
        for m in listed
        if (what := unstorable(m.id))
    ]
    listed = [m for m in listed if not unstorable(m.id)]
    known = {m async for m in custom.models.values_list("model_id", flat=True)}
    ids_form = ModelIdsForm(listed=[m.id for m in listed], initial={"pick": []})
    return await sync_to_async(_page)(
        request, custom, listed=listed, known=known, ids_form=ids_form, discover_refused=refused
    )


@login_required
@require_POST
def endpoint_models_add(request: HttpRequest, pk: int) -> HttpResponse:
    """Offer the picked and typed model ids; context and output cap from the listing where
    it gave them, else the values entered."""
    custom = endpoint_for_admin(request.user, pk)
    listed = request.POST.getlist("listed")
    form = ModelIdsForm(request.POST, listed=listed)
    if not form.is_valid():
        return _page(request, custom, ids_form=form)
    ids = [*form.cleaned_data["pick"], *form.cleaned_data["typed"]]
    if not ids:
        messages.error(request, "Tick or type at least one model id.")
        return redirect("endpoint", custom.pk)
    entered = {k: form.cleaned_data[k] for k in ("context_window", "max_output")}
    added = 0
    with transaction.atomic():
        for model_id in dict.fromkeys(ids):
            values = {
                "context_window": _listed_int(request, "ctx", model_id)
                or entered["context_window"],
                "max_output": _listed_int(request, "out", model_id) or entered["max_output"],
                "offered": True,
            }
            _, created = EndpointModel.objects.update_or_create(
                endpoint=custom, model_id=model_id, defaults=values
            )
            added += created
    messages.success(request, f"{len(ids)} model(s) offered ({added} new). Probe them next.")
    return redirect("endpoint", custom.pk)


def _listed_int(request: HttpRequest, kind: str, model_id: str) -> int | None:
    raw = request.POST.get(f"{kind}:{model_id}", "")
    # isdigit() alone passes "²" and digit strings too long for int(): ASCII, ten digits at most.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 10):
        return None
    return int(raw) if 0 < int(raw) < 2**31 else None


@login_required
@require_POST
def endpoint_model(request: HttpRequest, pk: int, model_pk: int) -> HttpResponse:
    row = model_for_admin(request.user, pk, model_pk)
    form = EndpointModelForm(request.POST, instance=row, prefix=f"m{row.pk}")
    if form.is_valid():
        form.save()
        messages.success(request, f"{row.model_id} saved.")
        return redirect("endpoint", pk)
    return _page(request, row.endpoint, bound_forms={row.pk: form})


@login_required
@require_POST
def endpoint_model_delete(request: HttpRequest, pk: int, model_pk: int) -> HttpResponse:
    row = model_for_admin(request.user, pk, model_pk)
    row.delete()
    messages.success(request, f"{row.model_id} removed.")
    return redirect("endpoint", pk)


@sensitive_variables("key")
def _load_model(
    request: HttpRequest, pk: int, model_pk: int
) -> tuple[EndpointModel, str | None, str]:
    """As _load, for one of the endpoint's models."""
    row = model_for_admin(request.user, pk, model_pk)
    try:
        return row, _admins_key(request.user, row.endpoint), ""
    except UnreadableKey as exc:
        return row, None, str(exc)


def _record_probe(request: HttpRequest, row: EndpointModel, results: dict[str, Any]) -> None:
    if not results.get("basic", {}).get("ok"):
        messages.error(request, f"{row.model_id}: {results['basic']['detail']}")
        return
    row.record_probe(results)
    row.save()
    found = (*EndpointModel.CAPABILITIES, *EndpointModel.FORMATS)
    accepted = [label for name, label in found if results.get(name, {}).get("ok")]
    messages.success(
        request, f"{row.model_id} probed: accepts {', '.join(accepted) or 'plain chat only'}."
    )


@login_required
@require_POST
@sensitive_variables("key")
async def endpoint_model_probe(request: HttpRequest, pk: int, model_pk: int) -> HttpResponse:
    """Probe: tiny requests find out what the server accepts for this model; recorded."""
    row, key, unreadable = await sync_to_async(_load_model)(request, pk, model_pk)
    if unreadable:
        await sync_to_async(messages.error)(request, f"{row.model_id}: {unreadable}")
        return redirect("endpoint", pk)
    results = await discovery.probe(_target(row.endpoint), key, row.model_id)
    await sync_to_async(_record_probe)(request, row, results)
    return redirect("endpoint", pk)

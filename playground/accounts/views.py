from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_not_required, login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from playground.accounts.forms import AdminCreationForm, ApiKeyForm
from playground.accounts.middleware import has_users
from playground.accounts.models import ApiKey
from playground.http import HtmxHttpRequest
from playground.providers import catalog

if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser, User


@login_not_required
@sensitive_post_parameters("password1", "password2")
@require_http_methods(["GET", "POST"])
def setup(request: HttpRequest) -> HttpResponse:
    """First run: the first visitor creates the admin account. Closed once anyone exists."""
    if has_users():
        return redirect("home")
    form = AdminCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save(commit=False)
        user.is_staff = user.is_superuser = True
        user.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, "Welcome! Add an API key to start.")
        return redirect("keys")
    return render(request, "accounts/setup.html", {"form": form})


@login_not_required
@sensitive_post_parameters("password1", "password2")
@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if not settings.PLAYGROUND_ALLOW_SIGNUP:
        raise Http404("Sign-up is closed: ask an admin for an account.")
    form = AdminCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("home")
    return render(request, "accounts/signup.html", {"form": form})


def _provider_rows(user: User | AnonymousUser) -> list[dict[str, Any]]:
    saved = {k.provider: k for k in ApiKey.objects.for_user(user)}
    return [
        {"provider": p, "key": saved.get(p.slug), "form": ApiKeyForm(initial={"provider": p.slug})}
        for p in catalog.providers()
    ]


@login_required
@sensitive_variables("form")
@sensitive_post_parameters("key")
@require_http_methods(["GET", "POST"])
def keys(request: HttpRequest) -> HttpResponse:
    """Store or replace a key. The page only ever shows the last four characters."""
    rows = _provider_rows(request.user)
    if request.method == "POST":
        form = ApiKeyForm(request.POST)
        slugs = {row["provider"].slug for row in rows}
        if form.is_valid() and form.cleaned_data["provider"] in slugs:
            provider = form.cleaned_data["provider"]
            ApiKey.store(provider=provider, plaintext=form.cleaned_data["key"], user=request.user)
            messages.success(request, "Key saved. It will not be shown again.")
            return redirect("keys")
        for row in rows:
            if row["provider"].slug == request.POST.get("provider"):
                row["form"] = form
    return render(request, "accounts/keys.html", {"rows": rows})


@login_required
@require_POST
def key_delete(request: HtmxHttpRequest, provider: str) -> HttpResponse:
    deleted, _ = ApiKey.objects.for_user(request.user).filter(provider=provider).delete()
    if deleted:
        messages.success(request, "Key deleted.")
    if request.htmx:
        return HttpResponseClientRedirect(reverse("keys"))
    return redirect("keys")

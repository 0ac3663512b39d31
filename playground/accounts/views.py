from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required, login_required
from django.contrib.auth.forms import AuthenticationForm
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from playground.accounts import backends, throttle
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
    if request.method == "POST" and (refused := _refused(request, form)):
        return render(request, "accounts/setup.html", {"form": form}, status=refused)
    if request.method == "POST" and form.is_valid():
        user = form.save(commit=False)
        user.is_staff = user.is_superuser = True
        user.save()
        login(request, user, backend=backends.PATH)
        messages.success(request, "Welcome! Add an API key to start.")
        return redirect("keys")
    if request.method == "POST":
        throttle.failed(throttle.SIGNUP, request)
    return render(request, "accounts/setup.html", {"form": form})


@login_not_required
@sensitive_post_parameters("password1", "password2")
@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if not settings.PLAYGROUND_ALLOW_SIGNUP:
        raise Http404("Sign-up is closed: ask an admin for an account.")
    form = AdminCreationForm(request.POST or None)
    if request.method == "POST" and (refused := _refused(request, form)):
        return render(request, "accounts/signup.html", {"form": form}, status=refused)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend=backends.PATH)
        return redirect("home")
    if request.method == "POST":
        throttle.failed(throttle.SIGNUP, request)
    return render(request, "accounts/signup.html", {"form": form})


def _refused(request: HttpRequest, form: AdminCreationForm) -> int:
    """429 (with the wait on the form) for an address locked out of the account forms."""
    wait = throttle.locked_for(throttle.SIGNUP, request)
    if not wait:
        return 0
    form.errors.clear()  # no validation ran; the only thing to say is when to come back
    form.add_error(None, throttle.message(wait))
    return 429


@method_decorator(sensitive_post_parameters("password"), name="dispatch")
class LoginView(auth_views.LoginView):
    """Django's login, saying how long a locked-out username or address must wait. The
    backend (backends.py) counts the failures and refuses the locked; this view checks first,
    so a locked-out attempt costs no password hash."""

    template_name = "accounts/login.html"

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        username = request.POST.get("username", "")
        wait = throttle.locked_for(throttle.LOGIN, request, username)
        if not wait:
            return super().post(request, *args, **kwargs)
        form = AuthenticationForm(request, initial={"username": username})
        form.is_bound = False
        context = self.get_context_data(form=form, lockout=throttle.message(wait))
        return self.render_to_response(context, status=429)

    def form_invalid(self, form: AuthenticationForm) -> HttpResponse:
        # This failure may have been the one that locked the name or address: say so now.
        username = self.request.POST.get("username", "")
        wait = throttle.locked_for(throttle.LOGIN, self.request, username)
        if not wait:
            return super().form_invalid(form)
        context = self.get_context_data(form=form, lockout=throttle.message(wait))
        return self.render_to_response(context, status=429)


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

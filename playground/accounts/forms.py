from __future__ import annotations

import re
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from django import forms
from django.contrib.auth.forms import UserCreationForm
from django.contrib.auth.models import User

from playground.providers import netpolicy, specs
from playground.providers.models import CustomEndpoint, EndpointModel
from playground.providers.storable import refusal

KEY_SHAPE = re.compile(r"[\x21-\x7e]{8,500}")


class AdminCreationForm(UserCreationForm[User]):
    """The first account: an admin who can add everyone else."""


class ApiKeyForm(forms.Form):
    provider = forms.CharField(widget=forms.HiddenInput)
    key = forms.CharField(
        label="API key",
        max_length=500,
        strip=True,
        widget=forms.PasswordInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )

    def clean_key(self) -> str:
        key: str = self.cleaned_data["key"]
        # The key goes into an Authorization header: printable ASCII without spaces only, so
        # a pasted control character or lookalike letter cannot break (or split) the header.
        if not KEY_SHAPE.fullmatch(key):
            raise forms.ValidationError("That does not look like an API key.")
        return key


ROLE_CHOICES = [
    ("viewer", "Viewer: reads and watches"),
    ("member", "Member: runs and changes settings"),
    ("admin", "Admin: also manages members and keys"),
    ("owner", "Owner: also manages owners"),
]


class TeamForm(forms.Form):
    name = forms.CharField(max_length=100, strip=True)


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=ROLE_CHOICES)


class AddMemberForm(RoleForm):
    username = forms.CharField(max_length=150, strip=True)


class EndpointForm(forms.ModelForm[CustomEndpoint]):
    """Add or edit a custom endpoint. The id is fixed once saved: stored keys are filed under it."""

    base_url = forms.URLField(
        label="Base URL",
        assume_scheme="http",  # a team's own server usually speaks plain HTTP on its LAN
        max_length=200,
        help_text="Up to and including /v1, e.g. http://gpu-box:8000/v1",
    )
    param_groups = forms.MultipleChoiceField(
        label="Parameters the server takes",
        choices=list(specs.PARAM_GROUPS.items()),
        initial=list(specs.DEFAULT_GROUPS),
        widget=forms.CheckboxSelectMultiple,
        required=False,
    )
    key = forms.CharField(
        label="Your key for it (optional)",
        required=False,
        max_length=500,
        strip=True,
        help_text="Stored encrypted as your key for this endpoint, like on the Keys page; "
        "never shown again. Test connection, Discover and Probe use it.",
        widget=forms.PasswordInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )

    class Meta:
        model = CustomEndpoint
        fields = ["name", "slug", "base_url", "requires_key", "param_groups"]
        labels = {"slug": "Id", "requires_key": "Requires a key"}

    def __init__(self, *args: Any, allow_private: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.allow_private = allow_private
        self.dns_warning = ""
        if self.instance.pk:
            self.fields["slug"].disabled = True

    def clean_key(self) -> str:
        key: str = self.cleaned_data.get("key") or ""
        if key and not KEY_SHAPE.fullmatch(key):
            raise forms.ValidationError("That does not look like an API key.")
        return key

    def clean_base_url(self) -> str:
        url: str = self.cleaned_data["base_url"].strip()
        host = urlsplit(url).hostname or ""
        # Checked here for a clear message at once; checked again at every connection.
        try:
            addresses = netpolicy.resolve_now(host)
        except netpolicy.NameNotResolved as exc:
            self.dns_warning = f"{exc} Saved anyway: it is checked again at every connection."
            return url
        try:
            netpolicy.AddressPolicy(self.allow_private).check(host, addresses)
        except netpolicy.AddressRefused as exc:
            raise forms.ValidationError(str(exc)) from None
        return url


class EndpointModelForm(forms.ModelForm[EndpointModel]):
    class Meta:
        model = EndpointModel
        fields = [
            "offered",
            "context_window",
            "max_output",
            "price_per_message",
            "images",
            "tools",
            "json_schema",
            "thinking",
            "logprobs",
            "responses",
            "messages",
        ]
        labels = {
            "price_per_message": "Price per message ($)",
            "json_schema": "JSON schema",
            "responses": "Responses API",
            "messages": "Messages API",
        }

    def clean_price_per_message(self) -> Decimal | None:
        price: Decimal | None = self.cleaned_data.get("price_per_message")
        if price is not None and price < 0:
            raise forms.ValidationError("A price cannot be negative.")
        return price


MODEL_ID = re.compile(r"[^\s]{1,200}")


class ModelIdsForm(forms.Form):
    """Models to offer: ticked from a discovery, or typed by hand (one id per line)."""

    pick = forms.MultipleChoiceField(required=False, widget=forms.CheckboxSelectMultiple)
    typed = forms.CharField(
        label="Model ids typed by hand, one per line",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}),
    )
    context_window = forms.IntegerField(required=False, min_value=1, max_value=2**31 - 1)
    max_output = forms.IntegerField(required=False, min_value=1, max_value=2**31 - 1)

    def __init__(self, *args: Any, listed: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        pick = self.fields["pick"]
        assert isinstance(pick, forms.MultipleChoiceField)
        pick.choices = [(i, i) for i in listed or []]

    def clean_pick(self) -> list[str]:
        # The server's listing comes back from the page, choices and all: no CharField's
        # validator refuses a NUL in it, as it does in the typed ids.
        picked: list[str] = self.cleaned_data["pick"]
        for model_id in picked:
            if refused := refusal("The model id", model_id):
                raise forms.ValidationError(refused)
        return picked

    def clean_typed(self) -> list[str]:
        lines = [line.strip() for line in self.cleaned_data["typed"].splitlines()]
        ids = [line for line in lines if line]
        bad = [i for i in ids if not MODEL_ID.fullmatch(i)]
        if bad:
            raise forms.ValidationError(f"Not a model id: {bad[0][:60]!r} (no spaces, 200 max).")
        return ids

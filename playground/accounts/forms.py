from __future__ import annotations

import re

from django import forms
from django.contrib.auth.forms import UserCreationForm
from django.contrib.auth.models import User

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

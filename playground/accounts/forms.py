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

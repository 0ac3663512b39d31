from __future__ import annotations

from django import forms
from django.contrib.auth.forms import UserCreationForm


class AdminCreationForm(UserCreationForm):
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
        key = self.cleaned_data["key"]
        if len(key) < 8 or any(ch.isspace() for ch in key):
            raise forms.ValidationError("That does not look like an API key.")
        return key

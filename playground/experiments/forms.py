"""The experiment form: name, dataset, prompt template, variants and checks as text."""

from __future__ import annotations

import json
import re
from typing import Any

from django import forms

from playground.chat import services
from playground.experiments import checks, datasets, runner
from playground.experiments.models import Dataset
from playground.providers import params
from playground.providers.storable import sendable, unstorable

VARIANT_SYNTAX = """model-key
model-key | {"temperature": 0.2}
model-key | {"temperature": 0.2} | system prompt
model-key | {} | system prompt | chat, responses or messages
prompt: prompt-name@label   (or prompt-name v3; a version of the Prompts library)"""
MAX_VARIANTS = 10
MAX_REPEATS = 10


PROMPT_LINE = re.compile(
    r"^prompt:\s*(?P<name>[^@]+?)\s*(?:@\s*(?P<label>[\w.-]+)|\s+v(?P<number>\d+))?\s*$"
)


def parse_variants(text: str, user=None, team_id: int | None = None) -> list[dict[str, Any]]:
    """One variant per line, each checked as a chat send would be; ValidationError naming
    the line otherwise. `prompt: name@label` (or `name v3`, or the newest) takes a version of
    a prompt of the space (the prompts app), frozen now: relabelling later changes no run."""
    variants: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        found = PROMPT_LINE.match(line.strip())
        if found:
            variants.append(_prompt_variant(found, user, team_id, f"Variant line {number}"))
            continue
        parts = [p.strip() for p in line.split("|", 3)]
        parts += [""] * (4 - len(parts))
        key, raw, system_prompt, fmt = parts
        where = f"Variant line {number}"
        try:
            values = json.loads(raw) if raw else {}
        except (ValueError, RecursionError) as exc:  # also a huge integer, deep nesting
            raise forms.ValidationError(
                f"{where}: the parameters are not JSON ({getattr(exc, 'msg', 'unreadable')})."
            ) from None
        if not isinstance(values, dict):
            raise forms.ValidationError(f"{where}: the parameters must be a JSON object.")
        try:
            model = services.get_model(key)
            fmt = services.pick_format(model, fmt)
            cleaned = services.clean_settings(model, system_prompt, values, fmt)
        except services.TurnError as exc:
            raise forms.ValidationError(f"{where}: {exc}") from None
        except params.InvalidParams as exc:
            # A name is quoted as the JSON spelt it: a lone surrogate could not be in a page.
            problems = "; ".join(f"{sendable(k)}: {v}" for k, v in exc.errors.items())
            raise forms.ValidationError(f"{where}: {problems}") from None
        variants.append(
            {
                "label": f"{len(variants) + 1}. {model.label}",
                "model": model.key,
                "params": cleaned,
                "system_prompt": system_prompt,
                "wire_format": fmt,
                # Hook: a prompt version (prompts app) instead of the experiment's prompt.
                "prompt_version": None,
            }
        )
    for i, variant in enumerate(variants, 1):
        variant["label"] = f"{i}. " + variant["label"].split(". ", 1)[-1]
    if not variants:
        raise forms.ValidationError("Add at least one variant.")
    if len(variants) > MAX_VARIANTS:
        raise forms.ValidationError(f"At most {MAX_VARIANTS} variants.")
    return variants


def _prompt_variant(found: re.Match[str], user, team_id: int | None, where: str) -> dict:
    from playground.prompts import library
    from playground.prompts.models import Prompt

    name = found["name"].strip()
    prompt = Prompt.objects.visible_to(user).in_space(team_id).filter(name=name).first()
    if prompt is None:
        raise forms.ValidationError(f"{where}: no prompt named “{name[:60]}” in this space.")
    try:
        version = library.resolve(
            prompt, label=found["label"], number=int(found["number"] or 0) or None
        )
    except LookupError as exc:
        raise forms.ValidationError(f"{where}: {exc}") from None
    users = [m for m in version.messages if m.get("role") == "user"]
    if len(version.messages) > 1 or (version.messages and not users):
        raise forms.ValidationError(
            f"{where}: {version} has several messages; an experiment sends one user message."
        )
    return {
        "label": f"{len(name)}. {version}",
        "model": version.model,
        "params": version.all_params(),
        "system_prompt": version.system_prompt,
        "wire_format": version.wire_format or "chat",
        "prompt_version": version.pk,
        "source": found.group(0),
    }


def variants_text(variants: list[dict[str, Any]]) -> str:
    lines = []
    for v in variants:
        if v.get("source"):
            lines.append(v["source"])
            continue
        parts = [v["model"], json.dumps(v.get("params") or {})]
        if v.get("system_prompt") or v.get("wire_format", "chat") != "chat":
            parts.append(v.get("system_prompt", ""))
        if v.get("wire_format", "chat") != "chat":
            parts.append(v["wire_format"])
        lines.append(" | ".join(parts))
    return "\n".join(lines)


class ExperimentForm(forms.Form):
    name = forms.CharField(max_length=200)
    dataset = forms.ModelChoiceField(queryset=Dataset.objects.none())
    prompt = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4}),
        max_length=services.MAX_PROMPT_CHARS,
        help_text="The user message; {{name}} is replaced by the row's value.",
    )
    variants = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), help_text=VARIANT_SYNTAX)
    checks = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4}), required=False, help_text=checks.SYNTAX
    )
    repeats = forms.IntegerField(min_value=1, max_value=MAX_REPEATS, initial=1)
    rows = forms.CharField(
        required=False, help_text="Rows to run, e.g. 1-20, 25 (empty: all of them)."
    )

    def __init__(self, user, team_id: int | None, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user, self.team_id = user, team_id
        field = self.fields["dataset"]
        assert isinstance(field, forms.ModelChoiceField)
        field.queryset = Dataset.objects.visible_to(user).in_space(team_id)

    def clean_variants(self) -> list[dict[str, Any]]:
        return parse_variants(self.cleaned_data["variants"], self.user, self.team_id)

    def clean(self) -> dict[str, Any]:
        """Rows × variants × repeats within the items a run makes (runner.too_large), counted
        on the rows the dataset has: a range past its end names none."""
        data = super().clean() or {}
        dataset, variants = data.get("dataset"), data.get("variants")
        repeats, rows = data.get("repeats"), data.get("rows")
        if dataset is None or not variants or not repeats or rows is None:
            return data  # a field's own error says what is wrong
        positions = set(dataset.rows.values_list("position", flat=True))
        count = len(positions.intersection(rows)) if rows else len(positions)
        problem = runner.too_large(count, len(variants), repeats)
        if problem:
            raise forms.ValidationError(problem)
        return data

    def clean_checks(self) -> list[dict[str, Any]]:
        try:
            return checks.parse(self.cleaned_data["checks"])
        except checks.CheckError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean_rows(self) -> list[int]:
        """The 0-based positions of the rows named. At most MAX_ROWS of them, the most a
        dataset holds: counted on the merged ranges before any is expanded, so no number of
        ranges makes the form build (and the experiment store) more."""
        text = self.cleaned_data["rows"].strip()
        ranges: list[tuple[int, int]] = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            # Plain digits only: int() also takes "+2", "1_0" and other scripts' digits, and
            # "1-" read as row 1 alone where one may mean "to the end".
            found = re.fullmatch(r"([0-9]+)(?:\s*-\s*([0-9]+))?", part)
            try:
                if found is None:
                    raise ValueError(part)
                a, b = int(found[1]), int(found[2] or found[1])
            except ValueError:  # not numbers, or too long for int()
                shown = part if len(part) <= 40 else part[:40] + "…"
                raise forms.ValidationError(f"“{shown}” is not a row number or range.") from None
            if a < 1 or b < a:
                raise forms.ValidationError(f"“{part}” is not a range of rows.")
            ranges.append((a, b))
        merged: list[list[int]] = []
        for a, b in sorted(ranges):
            if merged and a <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        count = sum(b - a + 1 for a, b in merged)
        max_rows = datasets.caps()[0]
        if count > max_rows:
            raise forms.ValidationError(
                f"At most {max_rows:,} rows in a run; these ranges name {count:,}."
            )
        return [p for a, b in merged for p in range(a - 1, b)]


class DatasetUploadForm(forms.Form):
    name = forms.CharField(max_length=200)
    file = forms.FileField(help_text="CSV with a header row, or JSONL; UTF-8.")


class RowForm(forms.Form):
    variables = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)
    expected = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)
    notes = forms.CharField(required=False, max_length=2000)

    def clean_variables(self) -> dict[str, str]:
        text = self.cleaned_data["variables"].strip() or "{}"
        try:
            value = json.loads(text)
        except (ValueError, RecursionError) as exc:  # also a huge integer, deep nesting
            raise forms.ValidationError(f"Not JSON: {getattr(exc, 'msg', 'unreadable')}.") from None
        if not isinstance(value, dict) or not all(
            isinstance(v, str | int | float) and not isinstance(v, bool) for v in value.values()
        ):
            raise forms.ValidationError("A JSON object of names to text.")
        what = unstorable(value)
        if what:
            raise forms.ValidationError(f"{what[0].upper()}{what[1:]} cannot be stored.")
        for name in value:
            # As an upload's columns: each key becomes a column that {{name}} must reach.
            if name in datasets.RESERVED:
                raise forms.ValidationError(
                    f"“{name}” is not a variable name here: it is the row's own field."
                )
            if not datasets.NAME.fullmatch(name):
                raise forms.ValidationError(
                    f"“{name[:40]}” is not a variable name "
                    "(letters, digits and _, not starting with a digit)."
                )
        return {str(k): str(v) for k, v in value.items()}

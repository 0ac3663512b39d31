"""Reading a dataset upload (CSV or JSONL, UTF-8) into rows: all of it, or nothing.

Columns `expected` and `notes` are the row's expected output and notes; every other column
is a template variable. Errors name the line (and column, where there is one), and the whole
file is read before anything is saved, so a bad file leaves no half-imported dataset."""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction

from playground.experiments.models import Dataset, DatasetRow
from playground.providers.storable import unstorable

RESERVED = ("expected", "notes")
# fullmatch, never match with `$`: `$` also matches before a trailing newline ("a\n").
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
MAX_ERRORS = 20  # listed; the count says how many more
VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class UploadError(Exception):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass
class Parsed:
    columns: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)  # {"variables", "expected", "notes"}


def caps() -> tuple[int, int]:
    conf = settings.PLAYGROUND_EXPERIMENTS
    return int(conf["MAX_ROWS"]), int(conf["MAX_UPLOAD_BYTES"])


def parse(name: str, data: bytes) -> Parsed:
    max_rows, max_bytes = caps()
    if len(data) > max_bytes:
        raise UploadError([f"The file is larger than {max_bytes // (1024 * 1024)} MB."])
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise UploadError([f"Line {line}, column {column}: the file is not UTF-8."]) from None
    jsonl = name.lower().endswith((".jsonl", ".ndjson", ".json"))
    parsed = _jsonl(text) if jsonl else _csv(text)
    if not parsed.rows:
        raise UploadError(["The file has no rows."])
    if len(parsed.rows) > max_rows:
        raise UploadError([f"The file has {len(parsed.rows):,} rows; at most {max_rows:,}."])
    return parsed


def _check_names(names: list[str], errors: list[str], where: str) -> None:
    for i, name in enumerate(names, 1):
        if name not in RESERVED and not NAME.fullmatch(name):
            # Not quoted if it holds a lone surrogate: no page could show it.
            what = unstorable(name)
            shown = f"a name holding {what}" if what else f"“{name[:40]}”"
            errors.append(
                f"{where}, column {i}: {shown} is not a variable name "
                "(letters, digits and _, not starting with a digit)."
            )


def _csv(text: str) -> Parsed:
    reader = csv.reader(io.StringIO(text, newline=""))
    errors: list[str] = []
    try:
        header = next(reader)
    except StopIteration:
        raise UploadError(["The file is empty."]) from None
    except csv.Error as exc:
        raise UploadError([f"Line 1: {exc}."]) from None
    header = [h.strip() for h in header]
    _check_names(header, errors, "Line 1")
    dupes = {h for h in header if header.count(h) > 1}
    if dupes:
        errors.append(f"Line 1: the column {sorted(dupes)[0]!r} appears twice.")
    parsed = Parsed(columns=[h for h in header if h not in RESERVED])
    try:
        for values in reader:
            line = reader.line_num
            if not any(v.strip() for v in values):
                continue  # blank lines are not rows
            if len(values) != len(header):
                errors.append(
                    f"Line {line}: {len(values)} fields, but the header has {len(header)}."
                )
                continue
            for i, value in enumerate(values, 1):
                # A NUL: the file was read as UTF-8, which spells no lone surrogate.
                what = unstorable(value)
                if what:
                    errors.append(f"Line {line}, column {i}: {what} cannot be stored.")
            parsed.rows.append(_row(dict(zip(header, values, strict=True))))
    except csv.Error as exc:
        errors.append(f"Line {reader.line_num}: {exc}.")
    _raise(errors)
    return parsed


def _jsonl(text: str) -> Parsed:
    errors: list[str] = []
    columns: dict[str, None] = {}
    rows = []
    # A line ends at "\n" (a "\r" before it is whitespace to JSON), not where splitlines()
    # would also end it: U+2028, U+2029 or U+0085 may stand unescaped in a JSON string.
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append(f"Line {number}, column {exc.colno}: {exc.msg}.")
            continue
        except (ValueError, RecursionError):  # an integer of over 4300 digits, deep nesting
            errors.append(f"Line {number}: the JSON is too large or too deeply nested to read.")
            continue
        if not isinstance(record, dict):
            errors.append(f"Line {number}, column 1: each line must be a JSON object.")
            continue
        values: dict[str, str] = {}
        for i, (key, value) in enumerate(record.items(), 1):
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                errors.append(f"Line {number}, field {i} ({key[:40]!r}): must be text or a number.")
                continue
            # "\u0000" or a lone "\ud800": a row holding either would fail the save.
            what = unstorable(value)
            if what:
                errors.append(f"Line {number}, field {i} ({key[:40]!r}): {what} cannot be stored.")
            values[key] = str(value)
        _check_names(list(record), errors, f"Line {number}")
        columns.update((k, None) for k in record if k not in RESERVED)
        rows.append(values)
    _raise(errors)
    parsed = Parsed(columns=list(columns))
    parsed.rows = [_row(values) for values in rows]
    return parsed


def _row(values: dict[str, str]) -> dict[str, Any]:
    return {
        "variables": {k: v for k, v in values.items() if k not in RESERVED},
        "expected": values.get("expected", ""),
        "notes": values.get("notes", ""),
    }


def _raise(errors: list[str]) -> None:
    if errors:
        shown = errors[:MAX_ERRORS]
        if len(errors) > MAX_ERRORS:
            shown.append(f"… and {len(errors) - MAX_ERRORS} more.")
        raise UploadError(shown)


def create(owner, team, name: str, parsed: Parsed) -> Dataset:
    """The dataset and all its rows, in one transaction."""
    with transaction.atomic():
        dataset = Dataset.objects.create(owner=owner, team=team, name=name, columns=parsed.columns)
        DatasetRow.objects.bulk_create(
            (DatasetRow(dataset=dataset, position=i, **row) for i, row in enumerate(parsed.rows)),
            batch_size=500,
        )
    return dataset


def render_prompt(template: str, variables: dict[str, str]) -> str:
    """The template with each `{{name}}` replaced by the row's value ("" if it has none)."""
    return VARIABLE.sub(lambda m: str(variables.get(m[1], "")), template)

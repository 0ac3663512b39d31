"""Turning a compare or sweep form into a run group and its conversations.

Each column (or cell) is checked with the same code a conversation's settings go through
(services.get_model, pick_format, clean_settings), so a value the panel would refuse is refused
here too, naming the column or cell, before anything is saved.

A column may name a prompt version (the prompt library) instead of a model, system prompt
and parameters: resolve_prompt_version() fills it in from the version.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction
from django.http import Http404

from playground.chat.models import Conversation, RunGroup
from playground.chat.services import TurnError, clean_settings, get_model, pick_format
from playground.prompts import library, variables
from playground.prompts.models import PromptSession, PromptVersion
from playground.providers import params
from playground.providers.specs import CHAT, FORMAT_LABELS
from playground.providers.storable import refusal

MIN_COLUMNS = 2
SOURCE = " · prompt "  # in a column's title, before the prompt version it came from


def limits() -> dict[str, int]:
    return settings.PLAYGROUND_COMPARE


class SetupError(Exception):
    """Plain messages for the person who filled the form; nothing was saved."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass
class ColumnSetup:
    model: str
    wire_format: str = CHAT
    system_prompt: str = ""
    params: dict[str, Any] = field(default_factory=dict)  # as typed (strings) or cleaned
    prompt_version: int | None = None  # a prompt library version it is filled from
    label: str = ""  # where it came from, shown in the column's title


def parse_param_lines(text: str) -> dict[str, Any]:
    """`name = value`, one per line (`stop` may repeat): the compact way a column or a sweep
    sets parameters. ValueError naming the first line that is not of that shape."""
    values: dict[str, Any] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name:
            raise ValueError(f"Line {number} (“{line[:40]}”) is not “name = value”.")
        if name == "stop":
            values.setdefault("stop", []).append(value)
        else:
            values[name] = value
    return values


def resolve_prompt_version(
    column: ColumnSetup, user=None, team_id: int | None = None, *, variables_ok: bool = False
):
    """A column naming a prompt version (the prompt library) takes its model, wire format,
    system prompt and parameters from it; parameters set on the column win. The version must
    be one `user` may see, of the compare's own space. Unless `variables_ok` (a compare, whose
    Variables panel fills them in at each send), its system prompt must have no
    {{variables}}: a sweep sends it as written."""
    if column.prompt_version is None:
        return column
    try:
        version = library.get_version_for_user(user, column.prompt_version)
    except Http404:
        raise TurnError("No such prompt version.") from None
    if version.prompt.team_id != team_id:
        raise TurnError(f"{version} belongs to another space: pick a prompt of this one.")
    names = variables.names_in(version.system_prompt)
    if names and not variables_ok:
        listed = ", ".join("{{" + name + "}}" for name in names)
        raise TurnError(
            f"{version}'s system prompt has variables ({listed}): a sweep sends it as "
            "written, so fill them in with Open in playground or use it in a compare."
        )
    return ColumnSetup(
        version.model,
        version.wire_format or CHAT,
        version.system_prompt,
        {**version.all_params(), **column.params},
        version.pk,
        label=str(version),
    )


def _checked(
    column: ColumnSetup,
    where: str,
    user=None,
    team_id: int | None = None,
    *,
    variables_ok: bool = False,
) -> dict[str, Any]:
    """The column as its spec stores it, or SetupError naming `where` and each field."""
    try:
        column = resolve_prompt_version(column, user, team_id, variables_ok=variables_ok)
        model = get_model(column.model)
        fmt = pick_format(model, column.wire_format or CHAT)
        cleaned = clean_settings(model, column.system_prompt, column.params, fmt)
    except TurnError as exc:
        raise SetupError([f"{where}: {exc}"]) from None
    except params.InvalidParams as exc:
        raise SetupError([f"{where}: {message}" for message in exc.errors.values()]) from None
    return {
        "model": model.key,
        "wire_format": fmt,
        "system_prompt": column.system_prompt,
        "params": cleaned,
        "seed": cleaned.get("seed"),
        "prompt_version": column.prompt_version,
        "source": column.label,
    }


def plan_columns(
    columns: list[ColumnSetup],
    repeat: int = 1,
    vary_seed: bool = False,
    *,
    user=None,
    team_id: int | None = None,
) -> list:
    """The checked columns. With `repeat` > 1 the first column's setup is repeated that many
    times (a stability check); `vary_seed` gives each repeat its own seed, 1…N."""
    most = limits()["MAX_COLUMNS"]
    if repeat > 1:
        if repeat > most:
            raise SetupError([f"Repeat a setup at most {most} times."])
        base = columns[0]
        columns = []
        for n in range(1, repeat + 1):
            values = dict(base.params)
            if vary_seed:
                values["seed"] = n
            # The prompt version too: it, not the fields beside it, is the column's setup.
            columns.append(
                ColumnSetup(
                    base.model, base.wire_format, base.system_prompt, values, base.prompt_version
                )
            )
    if not MIN_COLUMNS <= len(columns) <= most:
        raise SetupError([f"A compare has {MIN_COLUMNS} to {most} columns."])
    errors: list[str] = []
    checked = []
    for number, column in enumerate(columns, start=1):
        try:
            checked.append(_checked(column, f"Column {number}", user, team_id, variables_ok=True))
        except SetupError as exc:
            errors += exc.errors
    if errors:
        raise SetupError(errors)
    return checked


def clean_title(title: str) -> str:
    """The group's title as typed, or SetupError: its columns' and cells' titles start with it."""
    if refused := refusal("The title", title):
        raise SetupError([refused])
    return title


def _group(user, team, kind: str, title: str, spec: dict, members: list[dict]) -> RunGroup:
    """The group and one conversation per member, in one transaction. Each conversation is
    titled, so the sweep of abandoned empty conversations never takes a cell not yet run."""
    with transaction.atomic():
        group = RunGroup.objects.create(kind=kind, owner=user, team=team, title=title, spec=spec)
        name = title or f"{group.get_kind_display()} {group.pk}"
        Conversation.objects.bulk_create(
            Conversation(
                owner=user,
                team=team,
                group=group,
                position=position,
                title=f"{name} · {label}"[:200],
                model=member["model"],
                wire_format=member["wire_format"],
                system_prompt=member["system_prompt"],
                params=member["params"],
            )
            for position, (label, member) in enumerate(
                (m.pop("label"), m) for m in [dict(m) for m in members]
            )
        )
    return group


def create_compare(user, team, title: str, columns: list[dict]) -> RunGroup:
    """A compare of the checked `columns` (plan_columns) in `team`'s space (None: personal)."""
    members = [
        {**c, "label": f"column {n}" + (f"{SOURCE}{c['source']}" if c.get("source") else "")}
        for n, c in enumerate(columns, start=1)
    ]
    spec = {"columns": columns}
    with transaction.atomic():
        group = _group(user, team, RunGroup.Kind.COMPARE, title.strip()[:200], spec, members)
        # A column from a prompt version is that version's session, as "Open in playground"
        # makes one: its send fills the version's {{variables}} in and records the version.
        versions = {c["prompt_version"] for c in columns if c.get("prompt_version")}
        by_pk = {v.pk: v for v in PromptVersion.objects.filter(pk__in=versions)}
        conversations = group.conversations.order_by("position")
        PromptSession.objects.bulk_create(
            PromptSession(conversation=conversation, version=by_pk[column["prompt_version"]])
            for conversation, column in zip(conversations, columns, strict=True)
            if column.get("prompt_version") in by_pk
        )
    return group


def _values(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def plan_sweep(
    column: ColumnSetup,
    axes: list[tuple[str, str]],
    seeds: int,
    prompt: str,
    *,
    user=None,
    team_id: int | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The sweep's spec: each cell is the base setup with one value of each axis and, with
    `seeds` > 0, seed 1…seeds. Over MAX_SWEEP_CELLS cells it is refused: that is an
    experiment's size (batch runs through the tasks framework), not an interactive grid."""
    if not prompt.strip():
        raise SetupError(["Write the message every cell sends."])
    if refused := refusal("The message", prompt):
        raise SetupError([refused])
    try:
        column = resolve_prompt_version(column, user, team_id)
    except TurnError as exc:
        raise SetupError([f"The base setup: {exc}"]) from None
    column.prompt_version = None  # resolved: each cell is the version's setup
    model = get_model_or_error(column.model)
    named = [(name.strip(), _values(values)) for name, values in axes if name.strip()]
    errors = []
    if not named:
        errors.append("Pick at least one parameter to sweep.")
    names = [name for name, _ in named]
    if len(set(names)) != len(names):
        errors.append("Sweep two different parameters.")
    for name, listed in named:
        if not listed:
            errors.append(f"Give {name} a list of values, separated by commas.")
        if name == "seed" and seeds:
            errors.append("Sweep the seed or set a number of seeds, not both.")
    if seeds < 0:
        errors.append("The number of seeds cannot be negative.")
    if seeds and not any(p.name == "seed" for p in model.params):
        errors.append(f"{model.label} takes no seed: set the number of seeds to 0.")
    if errors:
        raise SetupError(errors)
    count = 1
    for _, listed in named:
        count *= len(listed)
    count *= max(seeds, 1)
    cap = limits()["MAX_SWEEP_CELLS"]
    if count > cap:
        raise SetupError(
            [
                f"This sweep has {count} cells; a sweep runs at most {cap}. Use fewer values "
                "or seeds, or run it as an experiment (Experiments), which runs large grids "
                "in the background."
            ]
        )
    cells = []
    seed_values: list[int | None] = list(range(1, seeds + 1)) if seeds else [None]
    for combo in itertools.product(*(listed for _, listed in named)):
        for seed in seed_values:
            point = dict(zip(names, combo, strict=True))
            values = {**column.params, **point}
            if seed is not None:
                values["seed"] = seed
            label = ", ".join(f"{k}={v}" for k, v in point.items())
            if seed is not None:
                label += f", seed={seed}"
            setup = ColumnSetup(column.model, column.wire_format, column.system_prompt, values)
            checked = _checked(setup, f"Cell {label}")
            cells.append({**checked, "point": point, "label": label})
    return {
        "model": model.key,
        "wire_format": cells[0]["wire_format"],
        "system_prompt": column.system_prompt,
        "base_params": _checked(column, "The base setup")["params"],
        "axes": [{"name": n, "values": v} for n, v in named],
        "seeds": seeds,
        "prompt": prompt.strip(),
        "cells": [{"label": c["label"], "point": c["point"], "seed": c["seed"]} for c in cells],
    }, cells


def get_model_or_error(key: str):
    try:
        return get_model(key)
    except TurnError as exc:
        raise SetupError([str(exc)]) from None


def create_sweep(user, team, title: str, spec: dict, cells: list[dict]) -> RunGroup:
    members = [
        {k: c[k] for k in ("model", "wire_format", "system_prompt", "params", "label")}
        for c in cells
    ]
    return _group(user, team, RunGroup.Kind.SWEEP, title.strip()[:200], spec, members)


def format_label(fmt: str) -> str:
    return FORMAT_LABELS.get(fmt, fmt)

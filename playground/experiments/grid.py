"""The results grid (rows = dataset rows, columns = variants × repeats), per-variant totals,
exports, and the comparison of two runs. Data only; the templates draw it."""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.core.paginator import Paginator

from playground.chat.diffing import TextDiff, word_diff
from playground.experiments import checks
from playground.experiments.models import DatasetRow, ExperimentRun, Item

PAGE_SIZE = 50
FILTERS = ("all", "failures", "differences")


@dataclass
class Column:
    variant: int
    repeat: int
    label: str


@dataclass
class Row:
    row: DatasetRow
    cells: list[Item | None]


@dataclass
class Totals:
    label: str
    cells: int = 0
    finished: int = 0
    passed: int = 0
    latencies: list[float] = field(default_factory=list)
    tokens: int = 0
    cost: Decimal = Decimal(0)

    @property
    def pass_rate(self) -> int | None:
        return round(100 * self.passed / self.finished) if self.finished else None

    @property
    def mean_ms(self) -> int | None:
        return round(sum(self.latencies) / len(self.latencies)) if self.latencies else None

    @property
    def p90_ms(self) -> int | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return round(ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)])


def columns(run: ExperimentRun) -> list[Column]:
    variants = run.spec.get("variants") or []
    repeats = int(run.spec.get("repeats") or 1)
    cols = []
    for v, variant in enumerate(variants):
        for r in range(repeats):
            label = variant.get("label") or variant["model"]
            cols.append(Column(v, r, label + (f" #{r + 1}" if repeats > 1 else "")))
    return cols


def _items(run: ExperimentRun) -> Any:
    return Item.objects.filter(run=run).select_related("row", "message")


def _by_row(run: ExperimentRun, items: Any) -> list[Row]:
    cols = columns(run)
    index = {(c.variant, c.repeat): i for i, c in enumerate(cols)}
    rows: dict[int, Row] = {}
    for item in items:
        row = rows.get(item.row_id)
        if row is None:
            row = rows[item.row_id] = Row(item.row, [None] * len(cols))
        at = index.get((item.variant, item.repeat))
        if at is not None:
            row.cells[at] = item
    return sorted(rows.values(), key=lambda r: r.row.position)


def _failing(row: Row) -> bool:
    """A cell that failed, or whose checks failed; a stopped cell is neither."""
    return any(
        c is not None
        and (c.status == Item.Status.FAILED or (c.status == Item.Status.DONE and c.passed is False))
        for c in row.cells
    )


def _differing(row: Row) -> bool:
    present = [c for c in row.cells if c is not None and c.status == Item.Status.DONE]
    outcomes = {c.passed for c in present}
    texts = {(c.message.text.strip() if c.message else "") for c in present}
    return len(outcomes) > 1 or len(texts) > 1


def page(run: ExperimentRun, show: str, number: Any) -> Any:
    """One page of grid rows under a filter; the filters need every cell, the plain grid
    reads only the page's rows."""
    if show == "all":
        positions = (
            Item.objects.filter(run=run)
            .order_by("row__position")
            .values_list("row_id", flat=True)
            .distinct()
        )
        paginator = Paginator(list(dict.fromkeys(positions)), PAGE_SIZE)
        current = paginator.get_page(number)
        rows = _by_row(run, _items(run).filter(row_id__in=list(current.object_list)))
        current.object_list = rows  # type: ignore[assignment]  # the page's rows, drawn
        return current
    rows = _by_row(run, _items(run))
    keep = _failing if show == "failures" else _differing
    return Paginator([r for r in rows if keep(r)], PAGE_SIZE).get_page(number)


def totals(run: ExperimentRun) -> list[Totals]:
    variants = run.spec.get("variants") or []
    result = [Totals(v.get("label") or v["model"]) for v in variants]
    for item in _items(run).only(
        "variant",
        "status",
        "passed",
        "message__total_ms",
        "message__output_tokens",
        "message__cost",
        "row",
    ):
        t = result[item.variant]
        t.cells += 1
        if item.status in (Item.Status.DONE, Item.Status.FAILED):
            t.finished += 1
            t.passed += item.passed is True
        m = item.message
        if m is not None:
            if m.total_ms is not None:
                t.latencies.append(m.total_ms)
            t.tokens += m.output_tokens or 0
            t.cost += m.cost or 0
    return result


def check_labels(run: ExperimentRun) -> list[str]:
    return [checks.describe(c) for c in run.spec.get("checks") or []]


# Export ------------------------------------------------------------------------------------


def records(run: ExperimentRun) -> Iterator[dict[str, Any]]:
    labels = check_labels(run)
    variants = run.spec.get("variants") or []
    for item in _items(run).order_by("position").iterator(chunk_size=500):
        m = item.message
        yield {
            "row": item.row.position + 1,
            "variables": item.row.variables,
            "expected": item.row.expected,
            "variant": variants[item.variant].get("label", "")
            if item.variant < len(variants)
            else "",
            "repeat": item.repeat + 1,
            "status": item.status,
            "passed": item.passed,
            "output": m.text if m else "",
            "ttft_ms": m.ttft_ms if m else None,
            "total_ms": m.total_ms if m else None,
            "output_tokens": m.output_tokens if m else None,
            "cost": str(m.cost) if m and m.cost is not None else None,
            "error": item.error,
            "checks": [
                {**v, "check": labels[v["check"]] if v.get("check", -1) < len(labels) else ""}
                for v in item.verdicts or []
            ],
            "conversation": item.conversation_id,
        }


def as_csv(run: ExperimentRun) -> Iterator[str]:
    head = [
        "row",
        "variant",
        "repeat",
        "status",
        "passed",
        "output",
        "expected",
        "ttft_ms",
        "total_ms",
        "output_tokens",
        "cost",
        "error",
        "checks",
        "variables",
        "conversation",
    ]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(head)
    for rec in records(run):
        rec = dict(rec)
        rec["checks"] = "; ".join(
            f"{c['check']}: {'pass' if c['passed'] else 'fail' if c['passed'] is False else '?'}"
            f" ({c['reason']})"
            for c in rec["checks"]
        )
        rec["variables"] = json.dumps(rec["variables"], ensure_ascii=False)
        writer.writerow([_cell(rec[k]) for k in head])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()


def _cell(value: Any) -> Any:
    """Spreadsheet formula injection: text starting with = + - @ is prefixed with '."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value


# Compare two runs --------------------------------------------------------------------------


@dataclass
class Change:
    kind: str  # "regression", "fix", "changed"
    row: int  # position, 0-based
    variables: dict[str, str]
    label: str
    before: Item
    after: Item
    diff: TextDiff


def compare(before: ExperimentRun, after: ExperimentRun) -> dict[str, list[Change]]:
    """Cells matched by (row position, variant, repeat): regressions (passed before, fail
    now), fixes, and outputs that changed, each with a word diff."""
    labels = {c.variant * 1000 + c.repeat: c.label for c in columns(after)}
    old = {(i.row.position, i.variant, i.repeat): i for i in _items(before)}
    found: dict[str, list[Change]] = defaultdict(list)
    for item in _items(after).order_by("position"):
        prior = old.get((item.row.position, item.variant, item.repeat))
        if prior is None:
            continue
        a = prior.message.text if prior.message else ""
        b = item.message.text if item.message else ""
        if prior.passed is True and item.passed is False:
            kind = "regression"
        elif prior.passed is False and item.passed is True:
            kind = "fix"
        elif a != b:
            kind = "changed"
        else:
            continue
        found[kind].append(
            Change(
                kind,
                item.row.position,
                item.row.variables,
                labels.get(item.variant * 1000 + item.repeat, ""),
                prior,
                item,
                word_diff(a, b),
            )
        )
    return {k: found.get(k, []) for k in ("regression", "fix", "changed")}

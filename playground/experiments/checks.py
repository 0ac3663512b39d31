"""Checks on an experiment cell: what each kind means, how it is written, and its verdict.

Written one per line in the experiment form (see SYNTAX); stored as dicts. Every kind but
the judge looks only at the saved reply (and the row's expected output), so checks can be
re-run on saved outputs without calling a model. The judge asks a model through the run
engine (worker.py), and only its answer is read here (read_judge)."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import jsonschema
import regex  # type: ignore[import-untyped]  # no stubs; one call site
from django.conf import settings

from playground.providers import catalog
from playground.providers.params import unsafe_schema
from playground.providers.storable import UNSTORABLE, unstorable

SYNTAX = """contains: text
not_contains: text
equals_expected
regex: pattern
valid_json
json_schema: {"type": "object", ...}
max_total_ms: 2000
max_ttft_ms: 500
max_tokens: 300
max_cost: 0.01
judge: model-key: rubric            (pass/fail)
judge: model-key >= 4: rubric       (a score 1-5 and its threshold)"""

KINDS = (
    "contains",
    "not_contains",
    "equals_expected",
    "regex",
    "valid_json",
    "json_schema",
    "max_total_ms",
    "max_ttft_ms",
    "max_tokens",
    "max_cost",
    "judge",
)
JUDGE = re.compile(
    r"^\s*(?P<model>[\w.:/-]+)\s*(?:>=\s*(?P<threshold>[1-5]))?\s*:\s*(?P<rubric>.+)$"
)
MAX_PATTERN = 1000


class CheckError(ValueError):
    pass


@dataclass
class Verdict:
    kind: str
    passed: bool | None  # None: could not be decided (no reply, judge failed)
    reason: str
    score: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """As the item's verdicts store it. The reason may quote JSON read from a reply or the
        judge's answer, whose escapes can spell a NUL or a lone surrogate
        (providers/storable.py): each is shown as U+FFFD, as in a reply, or the item's save
        would fail."""
        return {**asdict(self), "reason": UNSTORABLE.sub("\ufffd", self.reason)}


@dataclass
class Output:
    """What the checks read of a cell: the saved reply's text and figures."""

    text: str
    expected: str
    ttft_ms: float | None
    total_ms: float | None
    output_tokens: int | None
    cost: Decimal | None


def parse(text: str) -> list[dict[str, Any]]:
    """The checks written one per line, or CheckError naming the line."""
    checks = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        kind, _, arg = line.partition(":")
        kind, arg = kind.strip(), arg.strip()
        try:
            checks.append(_parse_one(kind, arg))
        except CheckError as exc:
            raise CheckError(f"Check line {number}: {exc}") from None
    return checks


def _parse_one(kind: str, arg: str) -> dict[str, Any]:
    if kind not in KINDS:
        raise CheckError(f"“{kind[:40]}” is not a check (one of {', '.join(KINDS)}).")
    if kind in ("contains", "not_contains"):
        if not arg:
            raise CheckError("say what text to look for.")
        return {"kind": kind, "value": arg}
    if kind in ("equals_expected", "valid_json"):
        return {"kind": kind}
    if kind == "regex":
        if not arg or len(arg) > MAX_PATTERN:
            raise CheckError(f"give a pattern of at most {MAX_PATTERN} characters.")
        try:
            regex.compile(arg)
        except regex.error as exc:
            raise CheckError(f"the pattern does not compile: {exc}.") from None
        return {"kind": kind, "pattern": arg}
    if kind == "json_schema":
        try:
            schema = json.loads(arg)
        except (ValueError, RecursionError) as exc:  # also a huge integer, deep nesting
            raise CheckError(
                f"the schema is not JSON: {getattr(exc, 'msg', 'unreadable')}."
            ) from None
        if not isinstance(schema, dict):
            raise CheckError("the schema must be a JSON object.")
        what = unstorable(schema)  # its escapes can spell either; it is saved in jsonb
        if what:
            raise CheckError(f"the schema holds {what}, which cannot be stored.")
        problem = unsafe_schema(schema)
        if problem:
            raise CheckError(f"the schema: {problem}.")
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise CheckError(f"not a valid JSON schema: {exc.message}.") from None
        return {"kind": kind, "schema": schema}
    if kind in ("max_total_ms", "max_ttft_ms", "max_tokens"):
        try:
            limit = int(arg)
        except ValueError:
            raise CheckError("give a whole number.") from None
        if limit < 0:
            raise CheckError("give a number of at least 0.")
        return {"kind": kind, "limit": limit}
    if kind == "max_cost":
        try:
            cost = Decimal(arg)
        except InvalidOperation:
            raise CheckError("give a cost in dollars, e.g. 0.01.") from None
        if not cost.is_finite() or cost < 0:
            raise CheckError("give a cost of at least 0.")
        return {"kind": kind, "limit": str(cost)}
    match = JUDGE.match(arg)
    if not match:
        raise CheckError("write judge: model-key: rubric (or model-key >= 4: rubric).")
    try:
        catalog.get_model(match["model"])
    except catalog.UnknownModel:
        raise CheckError(f"the judge model “{match['model']}” is not configured.") from None
    threshold = int(match["threshold"]) if match["threshold"] else None
    return {
        "kind": kind,
        "model": match["model"],
        "threshold": threshold,
        "rubric": match["rubric"],
    }


def describe(check: dict[str, Any]) -> str:
    """The check as written, for the page and the grid's headers."""
    kind = check["kind"]
    if kind in ("contains", "not_contains"):
        return f"{kind}: {check['value']}"
    if kind == "regex":
        return f"regex: {check['pattern']}"
    if kind == "json_schema":
        return "json_schema: " + json.dumps(check["schema"])
    if kind.startswith("max_"):
        return f"{kind}: {check['limit']}"
    if kind == "judge":
        at = f" >= {check['threshold']}" if check.get("threshold") else ""
        return f"judge: {check['model']}{at}: {check['rubric']}"
    return kind


def evaluate(check: dict[str, Any], out: Output) -> Verdict:
    """Every kind but the judge (see read_judge)."""
    kind = check["kind"]
    text = out.text
    if kind == "contains":
        found = check["value"] in text
        return Verdict(kind, found, "found" if found else f"“{check['value']}” not in the reply")
    if kind == "not_contains":
        found = check["value"] in text
        return Verdict(kind, not found, f"“{check['value']}” in the reply" if found else "absent")
    if kind == "equals_expected":
        same = text.strip() == out.expected.strip()
        return Verdict(kind, same, "equal" if same else "differs from the expected output")
    if kind == "regex":
        return _regex(check["pattern"], text)
    if kind in ("valid_json", "json_schema"):
        return _json(kind, check.get("schema"), text)
    if kind in ("max_total_ms", "max_ttft_ms"):
        value = out.total_ms if kind == "max_total_ms" else out.ttft_ms
        return _at_most(kind, value, check["limit"], "ms")
    if kind == "max_tokens":
        return _at_most(kind, out.output_tokens, check["limit"], "tokens")
    if kind == "max_cost":
        return _at_most(kind, out.cost, Decimal(check["limit"]), "$")
    return Verdict(kind, None, "not checked here")


def _at_most(kind: str, value: Any, limit: Any, unit: str) -> Verdict:
    if value is None:
        return Verdict(kind, None, "not measured")
    ok = value <= limit
    return Verdict(kind, ok, f"{value} {unit} {'≤' if ok else '>'} {limit} {unit}")


def _regex(pattern: str, text: str) -> Verdict:
    """A search with the `regex` engine's time limit: a pattern that backtracks
    catastrophically on a long reply fails in REGEX_TIMEOUT, the worker goes on."""
    limit = settings.PLAYGROUND_EXPERIMENTS["REGEX_TIMEOUT"]
    try:
        found = regex.search(pattern, text, timeout=limit)
    except TimeoutError:
        return Verdict("regex", False, f"the pattern took over {limit} s on this reply")
    except regex.error as exc:
        return Verdict("regex", False, f"the pattern does not compile: {exc}")
    if found:
        return Verdict("regex", True, f"matched “{found[0][:60]}”")
    return Verdict("regex", False, "no match")


def _json(kind: str, schema: dict | None, text: str) -> Verdict:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        return Verdict(kind, False, f"not JSON: {getattr(exc, 'msg', 'unreadable')}")
    if schema is None:
        return Verdict(kind, True, "valid JSON")
    try:
        error = jsonschema.exceptions.best_match(
            jsonschema.Draft202012Validator(schema).iter_errors(value)
        )
    except Exception as exc:
        return Verdict(kind, None, f"could not be checked ({type(exc).__name__})")
    if error is None:
        return Verdict(kind, True, "matches the schema")
    return Verdict(kind, False, f"{error.json_path}: {error.message}"[:300])


# The judge --------------------------------------------------------------------------------


def judge_schema(check: dict[str, Any]) -> dict[str, Any]:
    if check.get("threshold"):
        answer: dict[str, Any] = {"type": "integer", "minimum": 1, "maximum": 5}
        key = "score"
    else:
        answer, key = {"type": "boolean"}, "pass"
    return {
        "type": "object",
        "properties": {key: answer, "reason": {"type": "string"}},
        "required": [key, "reason"],
        "additionalProperties": False,
    }


def judge_prompt(check: dict[str, Any], prompt: str, reply: str, expected: str) -> str:
    if check.get("threshold"):
        answer = 'Answer with JSON only: {"score": <1-5>, "reason": "<one sentence>"}.'
    else:
        answer = 'Answer with JSON only: {"pass": <true or false>, "reason": "<one sentence>"}.'
    parts = [
        "You grade one reply of an AI model against a rubric.",
        f"Rubric:\n{check['rubric']}",
        f"The prompt the model was given:\n<<<\n{prompt}\n>>>",
        f"The model's reply:\n<<<\n{reply}\n>>>",
    ]
    if expected:
        parts.append(f"The expected output:\n<<<\n{expected}\n>>>")
    parts.append(answer)
    return "\n\n".join(parts)


def read_judge(check: dict[str, Any], answer: str) -> Verdict:
    """The judge's answer as a verdict: JSON when it kept to it, else a PASS/FAIL word or a
    lone score in the text; anything else cannot be decided."""
    threshold = check.get("threshold")
    data: Any = None
    start, end = answer.find("{"), answer.rfind("}")
    if start != -1 and end > start:
        try:
            data = json.loads(answer[start : end + 1])
        except (ValueError, RecursionError):  # RecursionError: nested too deep to read
            data = None
    reason = str(data.get("reason", ""))[:500] if isinstance(data, dict) else answer.strip()[:500]
    if threshold:
        score = data.get("score") if isinstance(data, dict) else None
        if not isinstance(score, int) or isinstance(score, bool):
            found = re.search(r"\b([1-5])\b", answer)
            score = int(found[1]) if found else None
        if score is None or not 1 <= score <= 5:
            return Verdict("judge", None, f"the judge gave no score: {reason}"[:500])
        return Verdict("judge", score >= threshold, f"{score}/5: {reason}", score=score)
    verdict = data.get("pass") if isinstance(data, dict) else None
    if not isinstance(verdict, bool):
        # A word where the verdict is written: the key "pass" (and a JSON reason) is none.
        if isinstance(data, dict) and "pass" in data:
            text = str(verdict)
        else:
            text = re.sub(r'"pass"\s*:', ":", answer, flags=re.IGNORECASE)
        words = re.findall(r"\b(PASS|FAIL)\b", text.upper())
        verdict = words[0] == "PASS" if words else None
    if verdict is None:
        return Verdict("judge", None, f"the judge gave no verdict: {reason}"[:500])
    return Verdict("judge", verdict, reason or ("pass" if verdict else "fail"))


def overall(verdicts: list[dict[str, Any]]) -> bool | None:
    """A cell passes when every check passed; None when a check could not be decided and
    none failed."""
    if any(v["passed"] is False for v in verdicts):
        return False
    if any(v["passed"] is None for v in verdicts):
        return None
    return True

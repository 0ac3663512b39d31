"""Checking a structured-output reply against what the request asked for.

Runs on every structured reply at the end of a run, on text the model (or whoever controls
the upstream) chose: it must never raise, and never take unbounded time.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import jsonschema

from playground.providers.params import unsafe_schema

logger = logging.getLogger(__name__)

UNCHECKABLE = {"valid": False, "path": "$", "message": "The reply could not be checked."}


def check_reply(text: str, response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """None when no structured output was asked for (or it cannot be checked safely); else
    valid, or where it failed."""
    if not isinstance(response_format, dict) or response_format.get("type") not in (
        "json_object",
        "json_schema",
    ):
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return {"valid": False, "path": "$", "message": f"Not JSON: {exc.msg} at line {exc.lineno}"}
    except ValueError:
        # Python refuses integers longer than sys.get_int_max_str_digits() with a plain error.
        return {
            "valid": False,
            "path": "$",
            "message": "Not JSON Python can read: a number is too long.",
        }
    except RecursionError:
        return {"valid": False, "path": "$", "message": "Not JSON: nested too deeply."}
    if response_format["type"] == "json_object":
        if not isinstance(value, dict):
            return {"valid": False, "path": "$", "message": "Expected a JSON object."}
        return {"valid": True}
    try:
        schema = (response_format.get("json_schema") or {}).get("schema") or {}
        # Presets and conversations saved before such schemas were refused may still hold one.
        if unsafe_schema(schema):
            return None
        validator = jsonschema.Draft202012Validator(schema)
        error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    except Exception as exc:
        # A broken local $ref, a schema jsonschema chokes on, a reply nested deeply enough to
        # exhaust the validator's recursion: the run still has to finish. No traceback: a
        # recursion one is thousands of lines, once per reply someone chose to nest.
        logger.warning("Could not check a structured reply: %s", type(exc).__name__)
        return dict(UNCHECKABLE)
    if error is None:
        return {"valid": True}
    return {"valid": False, "path": error.json_path, "message": error.message}

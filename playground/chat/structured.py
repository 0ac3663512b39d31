"""Checking a structured-output reply against what the request asked for."""

from __future__ import annotations

import json
from typing import Any

import jsonschema


def check_reply(text: str, response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """None when no structured output was asked for; else valid, or where it failed."""
    if not response_format or response_format.get("type") not in ("json_object", "json_schema"):
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        return {"valid": False, "path": "$", "message": f"Not JSON: {exc.msg} at line {exc.lineno}"}
    if response_format["type"] == "json_object":
        if not isinstance(value, dict):
            return {"valid": False, "path": "$", "message": "Expected a JSON object."}
        return {"valid": True}
    schema = response_format.get("json_schema", {}).get("schema") or {}
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is None:
        return {"valid": True}
    return {"valid": False, "path": error.json_path, "message": error.message}

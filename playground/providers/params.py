"""Validate parameter values against a model's specs, and build the request body.

The same code serves the page (per-field errors as the panel changes), the socket (a send is
refused before anything goes upstream) and stored settings (presets, re-runs). A parameter
that is unset is left out of the body, so the provider's default applies.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from playground.providers import formats
from playground.providers.specs import CHAT, Model, Param
from playground.providers.storable import unstorable

FORM_PREFIX = "param:"
MAX_STOP_LENGTH = 200
# fullmatch, never match with `$`: `$` also matches before a trailing newline ("f\n").
TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")

# We evaluate response_format schemas against every reply: a regular expression could take
# exponential time on a crafted reply (ReDoS), and a remote $ref would fetch or fail.
REGEX_KEYWORDS = frozenset({"pattern", "patternProperties"})
REF_KEYWORDS = frozenset({"$ref", "$dynamicRef", "$recursiveRef"})
# Their values are maps from names to subschemas: a property may be called "pattern".
NAME_MAPS = frozenset({"properties", "$defs", "definitions", "dependentSchemas"})
# Their values are instance data, not schemas: {"default": {"pattern": "x"}} is harmless.
DATA_KEYWORDS = frozenset({"const", "default", "enum", "examples"})


class InvalidParams(Exception):
    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def _unset(value: Any) -> bool:
    if isinstance(value, list):
        return all(_unset(item) for item in value)
    return value is None or (isinstance(value, str) and value.strip() == "")


def _number(param: Param, value: Any) -> float | int:
    if isinstance(value, bool):
        raise ValueError("must be a number")
    if isinstance(value, str):
        value = value.strip()
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError("must be a number") from None
    if not math.isfinite(number):
        raise ValueError("must be a finite number")
    if param.type == "integer":
        if number != int(number):
            raise ValueError("must be a whole number")
        # From the value itself when it is a whole number: a float holds whole numbers
        # exactly only up to 2**53, and a seed one off is another seed.
        try:
            number = int(value)
        except (TypeError, ValueError):
            number = int(number)
    low, high = param.min, param.max
    if low is not None and high is not None and not low <= number <= high:
        raise ValueError(f"must be between {_fmt(low)} and {_fmt(high)} (got {_fmt(number)})")
    if low is not None and number < low:
        raise ValueError(f"must be at least {_fmt(low)} (got {_fmt(number)})")
    if high is not None and number > high:
        raise ValueError(f"must be at most {_fmt(high)} (got {_fmt(number)})")
    return number


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _boolean(param: Param, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "on", "1"):
        return True
    if text in ("false", "off", "0"):
        return False
    raise ValueError("must be on or off")


def _enum(param: Param, value: Any) -> str:
    if not isinstance(value, str) or value not in param.choices:
        raise ValueError(f"must be one of {', '.join(param.choices)}")
    return value


def _unescape(text: str) -> str:
    # Stop strings are often control characters: let people type \n and \t.
    return text.replace("\\n", "\n").replace("\\t", "\t")


def _string_list(param: Param, value: Any) -> list[str]:
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(item, str) for item in items):
        raise ValueError("must be text")
    items = [_unescape(item) for item in items if item != ""]
    if not items:
        raise ValueError("add at least one stop string")
    if param.max_items is not None and len(items) > param.max_items:
        raise ValueError(f"takes at most {param.max_items} stop strings (got {len(items)})")
    if any(len(item) > MAX_STOP_LENGTH for item in items):
        raise ValueError(f"each stop string is at most {MAX_STOP_LENGTH} characters")
    return items


def _token_bias(param: Param, value: Any) -> dict[str, float]:
    if isinstance(value, str):
        value = _json(value)
    if not isinstance(value, dict):
        raise ValueError("must map token ids to biases")
    low, high = param.ui_min, param.ui_max
    cleaned = {}
    for token, bias in value.items():
        token = str(token).strip()
        # ASCII only: isdigit() is also true of "²" and other scripts' digits.
        if not (token.isascii() and token.isdigit()):
            raise ValueError(f"token ids are whole numbers (got {token!r})")
        try:
            bias = float(bias)
        except (TypeError, ValueError):
            raise ValueError(f"the bias for token {token} must be a number") from None
        if low is not None and high is not None and not low <= bias <= high:
            raise ValueError(f"biases are between {_fmt(low)} and {_fmt(high)}")
        cleaned[token] = int(bias) if bias.is_integer() else bias
    if not cleaned:
        raise ValueError("add at least one token id")
    return cleaned


class _NotFinite(ValueError):
    pass


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise _NotFinite(text)
    return number


def _refuse_constant(name: str) -> Any:
    raise _NotFinite(name)


def loads_finite(text: str) -> Any:
    """json.loads, refusing NaN, Infinity and 1e309 (which Python reads as inf) with a
    ValueError: JSON has no such numbers, and the JSON columns they are saved in refuse them.
    RecursionError for nesting too deep, as json.loads."""
    return json.loads(text, parse_float=_finite, parse_constant=_refuse_constant)


def _json(text: str) -> Any:
    try:
        return loads_finite(text)
    except _NotFinite as exc:
        raise ValueError(f"is not valid JSON ({exc} is not a finite number)") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except ValueError:
        # Python refuses integers longer than sys.get_int_max_str_digits() with a plain error.
        raise ValueError("has a number too long to read") from None
    except RecursionError:
        # The parser recurses once per level: "[[[[..." past the interpreter's limit.
        raise ValueError("is nested too deeply") from None


def _tools(param: Param, value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        value = _json(value)
    if not isinstance(value, list) or not value:
        raise ValueError("must be a JSON array of tool definitions")
    for index, tool in enumerate(value):
        where = f"tool {index + 1}"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise ValueError(f'{where}: needs "type": "function"')
        function = tool.get("function")
        if not isinstance(function, dict):
            raise ValueError(f'{where}: needs a "function" object')
        if not TOOL_NAME.fullmatch(str(function.get("name", ""))):
            raise ValueError(f"{where}: the name must be 1-64 letters, digits, _ or -")
        if "description" in function and not isinstance(function["description"], str):
            raise ValueError(f"{where}: the description must be text")
        parameters = function.get("parameters")
        if parameters is not None:
            if not isinstance(parameters, dict) or parameters.get("type") != "object":
                raise ValueError(f'{where}: "parameters" must be a JSON schema of type object')
            _check_schema(parameters, where)
    names = [tool["function"]["name"] for tool in value]
    if len(set(names)) != len(names):
        raise ValueError("tool names must be unique")
    return value


def _check_schema(schema: dict[str, Any], where: str) -> None:
    import jsonschema

    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ValueError(f"{where}: invalid JSON schema ({exc.message})") from None
    except RecursionError:
        raise ValueError(f"{where}: the JSON schema is nested too deeply") from None


def unsafe_schema(schema: Any) -> str | None:
    """Why a response_format schema is not safe for us to evaluate, or None if it is.

    Iterative, so a deeply nested schema cannot exhaust the stack while being checked."""
    stack: list[tuple[Any, bool]] = [(schema, False)]
    while stack:
        node, is_name_map = stack.pop()
        if isinstance(node, list):
            stack.extend((item, False) for item in node)
            continue
        if not isinstance(node, dict):
            continue
        for key, value in node.items():
            if is_name_map:
                stack.append((value, False))
                continue
            if key in REGEX_KEYWORDS:
                return f"regular-expression keywords ({key}) are not supported"
            if key in REF_KEYWORDS and not (isinstance(value, str) and value.startswith("#")):
                return f'only local references ({key} starting with "#") are supported'
            if key not in DATA_KEYWORDS:
                stack.append((value, key in NAME_MAPS))
    return None


def _tool_choice(param: Param, value: Any) -> str | dict[str, Any]:
    if isinstance(value, dict):
        # Typed JSON (a prompt version's parameters) may hold anything here.
        function = value.get("function")
        name = function.get("name", "") if isinstance(function, dict) else ""
        name = name if isinstance(name, str) else ""
    elif isinstance(value, str) and value in ("auto", "none", "required"):
        return value
    else:
        name = str(value).removeprefix("function:")
    if not TOOL_NAME.fullmatch(name):
        raise ValueError("must be auto, none, required or a tool's name")
    return {"type": "function", "function": {"name": name}}


def _response_format(param: Param, value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        value = {"type": value}
    kind = value.get("type") if isinstance(value, dict) else None
    if param.choices and kind in ("json_object", "json_schema") and kind not in param.choices:
        raise ValueError(f"{kind} is not accepted by this model's server")
    if kind == "json_object":
        return {"type": "json_object"}
    if kind != "json_schema":
        raise ValueError("must be json_object or json_schema")
    spec = value.get("json_schema") or {}
    if not isinstance(spec, dict):
        raise ValueError("json_schema must be an object with a schema")
    schema = spec.get("schema")
    if isinstance(schema, str):
        schema = _json(schema) if schema.strip() else None
    if not isinstance(schema, dict):
        raise ValueError("json_schema needs a schema (a JSON object)")
    problem = unsafe_schema(schema)
    if problem:
        raise ValueError(f"the schema: {problem}")
    _check_schema(schema, "the schema")
    name = str(spec.get("name") or "reply").strip()
    if not TOOL_NAME.fullmatch(name):
        raise ValueError("the schema name must be 1-64 letters, digits, _ or -")
    return {
        "type": "json_schema",
        "json_schema": {"name": name, "schema": schema, "strict": bool(spec.get("strict", True))},
    }


CLEANERS = {
    "number": _number,
    "integer": _number,
    "boolean": _boolean,
    "enum": _enum,
    "string_list": _string_list,
    "token_bias": _token_bias,
    "tools": _tools,
    "tool_choice": _tool_choice,
    "response_format": _response_format,
}


NOT_A_PARAMETER = "is not a parameter of this model"


def _refuse_unstorable(value: Any) -> Any:
    """The cleaned value, or ValueError if it holds what cannot be stored (storable.py): the
    conversation's params and the request body are jsonb. In JSON text (a schema, tools) an
    escape counts as the character it spells."""
    what = unstorable(value)
    if what:
        raise ValueError(f"holds {what}, which cannot be stored")
    return value


def clean(
    model: Model, values: dict[str, Any], *, keep_unknown: bool = False, fmt: str = CHAT
) -> dict[str, Any]:
    """The values that are set, typed and within the bounds documented for the wire format.

    Raises InvalidParams with one plain message per field. Names the model does not document
    are dropped (keep_unknown=False), so switching models keeps only what still applies. A
    value for a parameter the format cannot carry is refused with the reason the panel shows.
    """
    fields = formats.params_for(model, fmt)
    cleaned: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name, value in values.items():
        field = fields.get(name)
        if field is None:
            if keep_unknown:
                errors[name] = NOT_A_PARAMETER
            continue
        if _unset(value):
            continue
        param = field.param
        if field.disabled:
            errors[name] = f"{name}: {field.disabled}"
            continue
        try:
            cleaned[name] = _refuse_unstorable(CLEANERS[param.type](param, value))
        except ValueError as exc:
            errors[name] = f"{name} {exc}"
    if "tool_choice" in cleaned and "tools" not in cleaned:
        errors["tool_choice"] = "tool_choice needs tool definitions"
    for name, error in formats.check(model, fmt, cleaned).items():
        errors.setdefault(name, error)
    if errors:
        raise InvalidParams(errors)
    return cleaned


def to_body(model: Model, cleaned: dict[str, Any], fmt: str = CHAT) -> dict[str, Any]:
    """Cleaned values under the names the server reads (llama.cpp's repeat_penalty).

    Chat Completions names: formats.to_wire() renames them for the other formats at send time."""
    names = {name: f.param.sent_as for name, f in formats.params_for(model, fmt).items()}
    return {names.get(name, name): value for name, value in cleaned.items()}


def from_body(model: Model, body: dict[str, Any], fmt: str = CHAT) -> dict[str, Any]:
    """The parameter values a request body carried, under the names the page uses."""
    names = {f.param.sent_as: name for name, f in formats.params_for(model, fmt).items()}
    return {names[key]: value for key, value in body.items() if key in names}


def applicable(model: Model, values: dict[str, Any], fmt: str = CHAT) -> dict[str, Any]:
    """What survives a model or format switch: every value that is still a valid parameter."""
    kept = {}
    for name, value in values.items():
        try:
            kept.update(clean(model, {name: value}, fmt=fmt))
        except InvalidParams:
            continue
    return kept


def unknown_names(errors: dict[str, str]) -> list[str]:
    """The names clean(keep_unknown=True) refused as no parameter of the model."""
    return sorted(name for name, error in errors.items() if error == NOT_A_PARAMETER)


def from_form(data: dict[str, Any]) -> dict[str, Any]:
    """Parameter values from the panel's fields (`param:<name>`, composite editors joined)."""
    values: dict[str, Any] = {}
    for key, value in data.items():
        if not key.startswith(FORM_PREFIX) or key.count(":") != 1:
            continue
        values[key.removeprefix(FORM_PREFIX)] = value
    if "stop" in values and not isinstance(values["stop"], list):
        values["stop"] = [values["stop"]]
    tokens = _as_list(data.get("param:logit_bias:token"))
    biases = _as_list(data.get("param:logit_bias:bias"))
    pairs = {t.strip(): b for t, b in zip(tokens, biases, strict=False) if t.strip() or b.strip()}
    if pairs:
        values["logit_bias"] = pairs
    kind = data.get("param:response_format:type", "")
    if kind:
        values["response_format"] = {
            "type": kind,
            "json_schema": {
                "name": data.get("param:response_format:name", ""),
                "schema": data.get("param:response_format:schema", ""),
            },
        }
    return values


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]

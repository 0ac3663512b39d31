"""The provider pages in shared/seeds/, read as data, so tests compare the catalog with them.

The pages are stored as copied from the web: one is a Markdown table, the other a rendered
OpenAPI schema whose names run into their types ("top_pnumber · min: 0.01 · max: 1Optional").
Each reader turns one page into a `ProviderPage`; anything a page does not state stays None.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

# shared/ sits beside the repository clone (in CI too), not inside it.
SEEDS = Path(__file__).resolve().parents[1].parent / "shared" / "seeds"
EMPIRIOLABS_PAGE = "gemma-4-e4b-empiriolabs.txt"
AIMLAPI_PAGE = "gemma-3n-e4b-aimlapi.txt"


@dataclass
class PageParam:
    name: str
    type: str  # as the page writes it: number, integer, boolean, enum, string, any of, ...
    default: Any = None
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    max_items: int | None = None
    description: str = ""


@dataclass
class ProviderPage:
    model_id: str
    base_url: str
    params: dict[str, PageParam]
    # What the page says the model supports, in its words ("image input", "function tools").
    supports: str = ""
    context_window: int | None = None
    max_output: int | None = None
    price_per_message: Decimal | None = None


def _search(pattern: str, text: str) -> str | None:
    match = re.search(pattern, text)
    return match.group(1) if match else None


def _number(text: str) -> int | float:
    value = float(text)
    return int(value) if value.is_integer() and "." not in text else value


def _value(text: str) -> Any:
    """A default as the page writes it: "-" for none, true/false, or a number."""
    text = text.strip()
    if text in ("-", ""):
        return None
    if text in ("true", "false"):
        return text == "true"
    return _number(text)


def _limits(text: str) -> tuple[int | float | None, int | float | None]:
    """The bounds in "0 to 2" (a table cell) or "between 0 and 2" (schema prose)."""
    match = re.search(r"(-?\d+(?:\.\d+)?) (?:to|and) (-?\d+(?:\.\d+)?)", text)
    return (_number(match.group(1)), _number(match.group(2))) if match else (None, None)


def read_empiriolabs(text: str) -> ProviderPage:
    params = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("| ") or len(cells) != 5 or cells[0] == "Parameter":
            continue
        name, kind, default, values, description = cells
        low, high = _limits(values)
        choices = tuple(v.strip() for v in values.split(",")) if kind == "enum" else ()
        params[name] = PageParam(name, kind, _value(default), low, high, choices, None, description)
    context = _search(r"(\d+)K-token context window", text)
    output = _search(r"up to ([\d,]+) output tokens", text)
    price = _search(r"Per Message \$(\d+(?:\.\d+)?)", text)
    return ProviderPage(
        model_id=(_search(r"use the model id (\S+)", text) or "").rstrip("."),
        base_url=_search(r"Point any OpenAI SDK at (\S+)", text) or "",
        params=params,
        supports=_search(r"Supports ([^.]*)\.", text) or "",
        # Context windows count in binary thousands: "8K" is 8,192 tokens.
        context_window=int(context) * 1024 if context else None,
        max_output=int(output.replace(",", "")) if output else None,
        price_per_message=Decimal(price) if price else None,
    )


_JSON_TYPES = {
    dict: "object",
    list: "array",
    str: "string",
    bool: "boolean",
    int: "number",
    float: "number",
}

# "max_completion_tokensinteger · min: 1Optional": the name, its type, the bounds.
_SCHEMA_FIELD = re.compile(
    r"^(?P<name>[a-z_]+?)(?P<type>integer|number|boolean|string|any of|undefined)"
    r"(?P<limits>[^A-Z]*)(?:Optional|Required)"
)


def read_aimlapi(text: str) -> ProviderPage:
    schema = text[text.index("\nBody\n") : text.index("\nResponses\n")]
    params: dict[str, PageParam] = {}
    current: PageParam | None = None
    for line in schema.splitlines():
        match = _SCHEMA_FIELD.match(line)
        if match:
            limits = match["limits"]
            current = PageParam(match["name"], match["type"])
            current.min = _number(m) if (m := _search(r"min: (-?[\d.]+)", limits)) else None
            current.max = _number(m) if (m := _search(r"max: (-?[\d.]+)", limits)) else None
            params[current.name] = current
        elif current and line.startswith("Default: "):
            current.default = _value(line.removeprefix("Default: "))
        elif current and line.strip() and not current.description:
            current.description = line.strip()
            # Some bounds are stated only in the prose: "between 0 and 2", "Up to 4".
            low, high = _limits(line)
            current.min = current.min if current.min is not None else low
            current.max = current.max if current.max is not None else high
            if items := _search(r"Up to (\d+) sequences", line):
                current.max_items = int(items)
    # The sample request shows fields the schema leaves out (logit_bias, stream_options).
    request = text[text.index("POST /v1/chat/completions HTTP/1.1") :]
    sample, _ = json.JSONDecoder().raw_decode(request[request.index("{") :])
    for name, value in sample.items():
        if name not in params:
            params[name] = PageParam(name, _JSON_TYPES[type(value)])
    url = _search(r'"(https://[^"]+)/chat/completions"', text) or ""
    return ProviderPage(
        model_id=_search(r"valid for the following model: (\S+)", text) or "",
        base_url=url,
        params=params,
    )

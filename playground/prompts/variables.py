"""The variables syntax of prompt templates, and nothing more: no template engine runs.

- `{{name}}` is replaced by the value of the variable `name`. A name is a letter or `_`, then
  letters, digits or `_` (at most 64); spaces inside the braces are allowed: `{{ name }}`.
- `\\{{` is a literal `{{` (the backslash is dropped); nothing else is special, so `{{ 1+1 }}`,
  `{{a.b}}` or a lone `{{` are left as they are, text like any other.
- Values are inserted as they are: a value containing `{{x}}` is not expanded again.
- A variable with no value (missing or empty) is an error naming every such variable, so a
  send never goes out with a hole in it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

# The escape first, so `\{{name}}` is consumed as an escape and never as a variable.
_TOKEN = re.compile(r"\\\{\{|\{\{\s*([A-Za-z_][A-Za-z0-9_]{0,63})\s*\}\}")
MAX_VALUE_CHARS = 100_000


class UndefinedVariables(ValueError):
    """Variables the template uses that have no value; `names` in order of first use."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        listed = ", ".join("{{" + n + "}}" for n in names)
        plural = "s have" if len(names) > 1 else " has"
        super().__init__(f"The variable{plural} no value: {listed}. Fill it in: nothing was sent.")


def names_in(template: str) -> list[str]:
    """The variable names `template` uses, each once, in order of first use."""
    found: dict[str, None] = {}
    for match in _TOKEN.finditer(template):
        if match.group(1):
            found[match.group(1)] = None
    return list(found)


def names_in_all(templates: Iterable[str]) -> list[str]:
    found: dict[str, None] = {}
    for template in templates:
        for name in names_in(template):
            found[name] = None
    return list(found)


def render(template: str, values: Mapping[str, str]) -> str:
    """`template` with every `{{name}}` replaced and every `\\{{` unescaped; UndefinedVariables
    if a used variable has no value (missing or empty)."""
    missing = [name for name in names_in(template) if not values.get(name)]
    if missing:
        raise UndefinedVariables(missing)

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        return "{{" if name is None else str(values[name])

    return _TOKEN.sub(replace, template)


def render_all(templates: list[str], values: Mapping[str, str]) -> list[str]:
    """Every template rendered, or UndefinedVariables naming what all of them miss at once."""
    missing = [name for name in names_in_all(templates) if not values.get(name)]
    if missing:
        raise UndefinedVariables(missing)
    return [render(t, values) for t in templates]

"""Word-level diffs of two texts and of two parameter sets.

One implementation for every "diff" in the product: two replies (branches, re-runs, any two
picked in History), two compare columns, two prompt versions. Output is data, not HTML: the
templates render the segments (escaped by Django like any text), so model output never
reaches a page unescaped.

The texts are compared line by line first and word by word only inside the lines that
changed, so a long reply costs about as much as its changed paragraphs, not its length
squared (difflib's matcher is quadratic in the worst case).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Any, Literal

Op = Literal["equal", "delete", "insert"]

# A word, a run of whitespace, or one other character: joined back they give the text.
_TOKEN = re.compile(r"\w+|\s+|[^\w\s]", re.UNICODE)

# Past this many tokens in a changed block, the block is shown as deleted + inserted whole
# rather than matched word by word.
MAX_BLOCK_TOKENS = 4000


@dataclass(frozen=True, slots=True)
class Segment:
    op: Op
    text: str


@dataclass(frozen=True, slots=True)
class TextDiff:
    """Both sides of a diff. `left` holds equal and deleted segments, `right` equal and
    inserted ones, so each side reads as its own text with its changes marked."""

    left: list[Segment]
    right: list[Segment]

    @property
    def changed(self) -> bool:
        return any(s.op != "equal" for s in self.left) or any(s.op != "equal" for s in self.right)

    @property
    def words_deleted(self) -> int:
        return sum(len(_words(s.text)) for s in self.left if s.op == "delete")

    @property
    def words_inserted(self) -> int:
        return sum(len(_words(s.text)) for s in self.right if s.op == "insert")


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text)


def _append(side: list[Segment], op: Op, text: str) -> None:
    if not text:
        return
    if side and side[-1].op == op:
        side[-1] = Segment(op, side[-1].text + text)
    else:
        side.append(Segment(op, text))


def _diff_words(a: str, b: str, left: list[Segment], right: list[Segment]) -> None:
    ta, tb = _TOKEN.findall(a), _TOKEN.findall(b)
    if len(ta) + len(tb) > MAX_BLOCK_TOKENS:
        _append(left, "delete", a)
        _append(right, "insert", b)
        return
    matcher = SequenceMatcher(None, ta, tb, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            _append(left, "equal", "".join(ta[i1:i2]))
            _append(right, "equal", "".join(tb[j1:j2]))
        else:
            _append(left, "delete", "".join(ta[i1:i2]))
            _append(right, "insert", "".join(tb[j1:j2]))


def word_diff(a: str, b: str) -> TextDiff:
    """The word-level difference between `a` (left) and `b` (right)."""
    left: list[Segment] = []
    right: list[Segment] = []
    la, lb = a.splitlines(keepends=True), b.splitlines(keepends=True)
    matcher = SequenceMatcher(None, la, lb, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        block_a, block_b = "".join(la[i1:i2]), "".join(lb[j1:j2])
        if tag == "equal":
            _append(left, "equal", block_a)
            _append(right, "equal", block_b)
        elif tag == "delete":
            _append(left, "delete", block_a)
        elif tag == "insert":
            _append(right, "insert", block_b)
        else:
            _diff_words(block_a, block_b, left, right)
    return TextDiff(left, right)


@dataclass(frozen=True, slots=True)
class ParamChange:
    name: str
    left: Any  # None: not set on that side (the provider's default)
    right: Any


def params_diff(a: dict[str, Any], b: dict[str, Any]) -> list[ParamChange]:
    """The parameters whose values differ, by name; a missing or None value is "unset"."""
    changes = []
    for name in sorted(set(a) | set(b)):
        left, right = a.get(name), b.get(name)
        if left != right:
            changes.append(ParamChange(name, left, right))
    return changes

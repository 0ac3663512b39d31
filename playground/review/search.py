"""Full-text search over message text, reasoning, titles and system prompts.

One interface, two backends: `backend()` answers with the FTS5 one on SQLite (the embedded
default) and the PostgreSQL one when DATABASE_URL points there. Both take a parsed `Query`,
never the user's text: `Query.parse` keeps words and "quoted phrases" and nothing else, and
each backend quotes them for its own syntax, so FTS5 operators (NEAR, AND, *, ^, column
filters, parentheses) and tsquery operators are plain words to both.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Protocol

from django.contrib.postgres.search import SearchHeadline, SearchQuery
from django.db import connection
from django.db.models import Q
from django.db.models.expressions import RawSQL
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from playground.chat.models import Conversation, ConversationQuerySet, Message
from playground.review import schema
from playground.review.models import ConversationSearch, MessageSearch

MAX_QUERY_CHARS = 500
MAX_TERMS = 16
SNIPPETS_PER_CONVERSATION = 3
# Private-use characters mark the highlights inside a snippet the database returns; the text
# around them is escaped before they become <mark> tags (see `render_snippet`).
MARK_OPEN = "\ue000"
MARK_CLOSE = "\ue001"
_PHRASE = re.compile(r'"([^"]*)"')
_WORD = re.compile(r"\w")


class InvalidQuery(ValueError):
    pass


@dataclass(frozen=True)
class Query:
    """What to look for: every word and every phrase must occur (in any searched field)."""

    words: tuple[str, ...]
    phrases: tuple[str, ...]

    @classmethod
    def parse(cls, raw: str) -> Query:
        if len(raw) > MAX_QUERY_CHARS:
            raise InvalidQuery(f"Search for at most {MAX_QUERY_CHARS} characters.")
        # As History's form says: FTS5 ends a string at NUL ("unterminated string") and
        # PostgreSQL refuses it in text; the diff picker parses without that form.
        if "\x00" in raw:
            raise InvalidQuery("Null characters are not allowed.")
        phrases = [" ".join(p.split()) for p in _PHRASE.findall(raw)]
        # What is left after the phrases; a quote without a partner is only punctuation.
        rest = _PHRASE.sub(" ", raw).replace('"', " ")
        words = [w for w in rest.split() if _WORD.search(w)]
        phrases = [p for p in phrases if _WORD.search(p)]
        if len(words) + len(phrases) > MAX_TERMS:
            raise InvalidQuery(f"Search for at most {MAX_TERMS} words and phrases.")
        if not words and not phrases:
            raise InvalidQuery("Type a word to search for.")
        return cls(tuple(dict.fromkeys(words)), tuple(dict.fromkeys(phrases)))

    def fts5(self) -> str:
        """FTS5 syntax: each word and phrase a double-quoted string (inner quotes doubled), so
        it is a phrase of the tokenizer's tokens and never an operator; juxtaposed = AND."""
        return " ".join('"' + t.replace('"', '""') + '"' for t in self.words + self.phrases)

    def tsquery(self) -> SearchQuery:
        """plainto_tsquery / phraseto_tsquery per term, ANDed: PostgreSQL parses the text as
        words, never as tsquery syntax."""
        parts = [SearchQuery(w, config=schema.PG_CONFIG, search_type="plain") for w in self.words]
        parts += [
            SearchQuery(p, config=schema.PG_CONFIG, search_type="phrase") for p in self.phrases
        ]
        combined = parts[0]
        for part in parts[1:]:
            combined = combined & part
        return combined


@dataclass
class Snippet:
    message_id: int | None  # None: the conversation's title or system prompt matched
    field: str  # "text", "reasoning", "title", "system prompt"
    role: str
    html: SafeString


def render_snippet(raw: str) -> SafeString:
    """Escape everything the database returned, then turn the highlight marks into <mark>
    tags. The text itself may contain the mark characters: they only toggle, so the tags
    always balance, and nothing else ever becomes markup."""
    out: list[str] = []
    open_ = False
    for part in re.split(f"([{MARK_OPEN}{MARK_CLOSE}])", raw):
        if part == MARK_OPEN and not open_:
            out.append("<mark>")
            open_ = True
        elif part == MARK_CLOSE and open_:
            out.append("</mark>")
            open_ = False
        elif part not in (MARK_OPEN, MARK_CLOSE):
            out.append(escape(part))
    if open_:
        out.append("</mark>")
    return mark_safe("".join(out))  # noqa: S308 - every piece above is escaped


def _highlighted(raw: str | None) -> bool:
    return bool(raw) and MARK_OPEN in raw  # type: ignore[operator]


class SearchBackend(Protocol):
    def matching(
        self, query: Query, candidates: ConversationQuerySet, wanted: int
    ) -> ConversationQuerySet:
        """The candidates with a match anywhere, in the candidates' order. Only the first
        `wanted` rows are asked for (a page and one more), and only they must be exact."""

    def snippets(self, query: Query, conversation_ids: list[int]) -> dict[int, list[Snippet]]:
        """Highlighted snippets of the matches in these conversations, newest first."""

    def too_common(self, query: Query) -> bool:
        """Whether the backend leaves every word of the query out as too common (a stop
        word), so that it can match nothing whatever is stored."""


def _keep(found: dict[int, list[Snippet]], conversation_id: int, snippet: Snippet) -> None:
    if len(found[conversation_id]) < SNIPPETS_PER_CONVERSATION:
        found[conversation_id].append(snippet)


def _choose(found: dict[int, list[Snippet]], matches: list[tuple[int, int]]) -> list[int]:
    """The newest matching messages of each conversation, as many as it has room for after
    its title and system prompt snippets; `matches` are (message id, conversation id)."""
    taken: dict[int, int] = defaultdict(int)
    chosen = []
    for message_id, conversation_id in matches:
        if taken[conversation_id] + len(found[conversation_id]) < SNIPPETS_PER_CONVERSATION:
            taken[conversation_id] += 1
            chosen.append(message_id)
    return chosen


class Fts5Backend:
    # A word in at least this many messages is "common" (see `snippets`).
    RARE = 1000

    def too_common(self, query: Query) -> bool:
        return False  # FTS5 has no stop words: "the" is a word like any other

    def matching(
        self, query: Query, candidates: ConversationQuerySet, wanted: int
    ) -> ConversationQuerySet:
        text = query.fts5()
        # One UNION subquery, not two ORed: SQLite ran each subquery of an OR twice. The
        # common-word case stays cheap through review_message_conversation (schema.py).
        return candidates.filter(
            pk__in=RawSQL(
                "SELECT d.conversation_id FROM review_message_fts "
                "JOIN review_message_conversation d ON d.message_id = review_message_fts.rowid "
                "WHERE review_message_fts MATCH %s "
                "UNION SELECT rowid FROM review_conversation_fts "
                "WHERE review_conversation_fts MATCH %s",
                (text, text),
            )
        )

    def snippets(self, query: Query, conversation_ids: list[int]) -> dict[int, list[Snippet]]:
        found: dict[int, list[Snippet]] = defaultdict(list)
        if not conversation_ids:
            return found
        text = query.fts5()
        marks = (MARK_OPEN, MARK_CLOSE, "…", 24)
        placeholders = ", ".join(["%s"] * len(conversation_ids))
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT rowid, highlight(review_conversation_fts, 0, %s, %s), "
                "snippet(review_conversation_fts, 1, %s, %s, %s, %s) "
                "FROM review_conversation_fts WHERE review_conversation_fts MATCH %s "
                f"AND rowid IN ({placeholders})",
                (MARK_OPEN, MARK_CLOSE, *marks, text, *conversation_ids),
            )
            for conversation_id, title, system_prompt in cursor.fetchall():
                if _highlighted(title):
                    _keep(found, conversation_id, Snippet(None, "title", "", render_snippet(title)))
                if _highlighted(system_prompt):
                    snippet = Snippet(None, "system prompt", "", render_snippet(system_prompt))
                    _keep(found, conversation_id, snippet)
            # Which messages first, then snippets only for those shown: snippet() re-reads
            # and re-tokenizes each text, and a common word matches many per conversation.
            # A rare word: walk its few documents. A common one: walk the shown
            # conversations' messages and ask the index about each (CROSS JOIN fixes that
            # order in SQLite), instead of all of its tens of thousands of documents.
            cursor.execute(
                "SELECT count(*) FROM (SELECT 1 FROM review_message_fts "
                "WHERE review_message_fts MATCH %s LIMIT %s)",
                (text, self.RARE),
            )
            if cursor.fetchone()[0] < self.RARE:
                plan = (
                    "FROM review_message_fts JOIN review_message_conversation d "
                    "ON d.message_id = review_message_fts.rowid"
                )
            else:
                plan = (
                    "FROM review_message_conversation d CROSS JOIN review_message_fts "
                    "ON review_message_fts.rowid = d.message_id"
                )
            cursor.execute(
                f"SELECT d.message_id, d.conversation_id {plan} "
                f"WHERE review_message_fts MATCH %s AND d.conversation_id IN ({placeholders}) "
                "ORDER BY d.message_id DESC",
                (text, *conversation_ids),
            )
            chosen = _choose(found, cursor.fetchall())
            if not chosen:
                return found
            cursor.execute(
                "SELECT m.id, m.conversation_id, m.role, "
                "snippet(review_message_fts, 0, %s, %s, %s, %s), "
                "snippet(review_message_fts, 1, %s, %s, %s, %s) "
                "FROM review_message_fts JOIN chat_message m ON m.id = review_message_fts.rowid "
                "WHERE review_message_fts MATCH %s "
                f"AND review_message_fts.rowid IN ({', '.join(['%s'] * len(chosen))}) "
                "ORDER BY m.id DESC",
                (*marks, *marks, text, *chosen),
            )
            for message_id, conversation_id, role, text_snippet, reasoning in cursor.fetchall():
                if _highlighted(text_snippet):
                    snippet = Snippet(message_id, "text", role, render_snippet(text_snippet))
                elif _highlighted(reasoning):
                    snippet = Snippet(message_id, "reasoning", role, render_snippet(reasoning))
                else:
                    continue
                _keep(found, conversation_id, snippet)
        return found


def _headline(field: str, query: SearchQuery) -> SearchHeadline:
    return SearchHeadline(
        field,
        query,
        config=schema.PG_CONFIG,
        start_sel=MARK_OPEN,
        stop_sel=MARK_CLOSE,
        max_words=24,
        min_words=8,
        max_fragments=2,
        fragment_delimiter=" … ",
    )


class PostgresBackend:
    # A word matched by fewer documents than this is "rare": the GIN index lists them all.
    RARE = 1000
    # How many of the newest candidates a common word is looked for among first.
    WINDOW = 500

    def too_common(self, query: Query) -> bool:
        """plainto_tsquery drops the configuration's stop words ("the", "of", "and"); ANDed
        with other terms they are only left out, but a query of nothing else is empty and
        matches no document (numnode 0)."""
        terms = [("plainto_tsquery", w) for w in query.words]
        terms += [("phraseto_tsquery", p) for p in query.phrases]
        sql = " && ".join(f"{function}(%s::regconfig, %s)" for function, _ in terms)
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT numnode({sql})", [v for _, t in terms for v in (schema.PG_CONFIG, t)]
            )
            return cursor.fetchone()[0] == 0

    def matching(
        self, query: Query, candidates: ConversationQuerySet, wanted: int
    ) -> ConversationQuerySet:
        """Two plans. A rare word: the GIN index lists its few documents, whose conversations
        filter the candidates. A word in most messages matches tens of thousands of documents,
        and collecting all their conversations (a read of every stored document) cost 100 ms
        at 100k messages; the page only needs the newest few, so look among the newest WINDOW
        candidates (through the conversation index) and ask the index for every match only
        when those hold less than a page."""
        tsquery = query.tsquery()
        documents = list(
            MessageSearch.objects.filter(document=tsquery).values_list(
                "conversation_id", flat=True
            )[: self.RARE]
        )
        titled = list(
            ConversationSearch.objects.filter(document=tsquery).values_list(
                "conversation_id", flat=True
            )[: self.RARE]
        )
        if len(documents) < self.RARE and len(titled) < self.RARE:
            return candidates.filter(pk__in={*documents, *titled})
        window = list(candidates.values_list("pk", flat=True)[: self.WINDOW])
        found = set(
            MessageSearch.objects.filter(conversation_id__in=window, document=tsquery)
            .values_list("conversation_id", flat=True)
            .distinct()
        )
        found |= set(
            ConversationSearch.objects.filter(
                conversation_id__in=window, document=tsquery
            ).values_list("conversation_id", flat=True)
        )
        # Matches outside the window all come after it: when it holds `wanted` of them, they
        # are the first ones; when it held every candidate, they are all there are.
        if len(found) >= wanted or len(window) < self.WINDOW:
            return candidates.filter(pk__in=found)
        messages = MessageSearch.objects.filter(document=tsquery).values("conversation_id")
        conversations = ConversationSearch.objects.filter(document=tsquery).values(
            "conversation_id"
        )
        return candidates.filter(Q(pk__in=messages) | Q(pk__in=conversations))

    def snippets(self, query: Query, conversation_ids: list[int]) -> dict[int, list[Snippet]]:
        found: dict[int, list[Snippet]] = defaultdict(list)
        if not conversation_ids:
            return found
        tsquery = query.tsquery()

        for row in Conversation.objects.filter(
            pk__in=ConversationSearch.objects.filter(
                document=tsquery, conversation_id__in=conversation_ids
            ).values("conversation_id")
        ).values(
            "pk",
            title_hl=_headline("title", tsquery),
            prompt_hl=_headline("system_prompt", tsquery),
        ):
            if _highlighted(row["title_hl"]):
                _keep(found, row["pk"], Snippet(None, "title", "", render_snippet(row["title_hl"])))
            if _highlighted(row["prompt_hl"]):
                snippet = Snippet(None, "system prompt", "", render_snippet(row["prompt_hl"]))
                _keep(found, row["pk"], snippet)
        # Which messages first (cheap: the GIN index and the stored documents), then headlines
        # only for those shown, since ts_headline parses the whole text again.
        chosen = _choose(
            found,
            list(
                MessageSearch.objects.filter(document=tsquery, conversation_id__in=conversation_ids)
                .order_by("-message_id")
                .values_list("message_id", "conversation_id")
            ),
        )
        rows = (
            Message.objects.filter(pk__in=chosen)
            .order_by("-pk")
            .values(
                "pk",
                "conversation_id",
                "role",
                text_hl=_headline("text", tsquery),
                reasoning_hl=_headline("reasoning", tsquery),
            )
        )
        for row in rows:
            if _highlighted(row["text_hl"]):
                snippet = Snippet(row["pk"], "text", row["role"], render_snippet(row["text_hl"]))
            elif _highlighted(row["reasoning_hl"]):
                snippet = Snippet(
                    row["pk"], "reasoning", row["role"], render_snippet(row["reasoning_hl"])
                )
            else:
                continue
            _keep(found, row["conversation_id"], snippet)
        return found


def backend() -> SearchBackend:
    if connection.vendor == "postgresql":
        return PostgresBackend()
    if connection.vendor == "sqlite":
        return Fts5Backend()
    raise schema.UnsupportedDatabase(f"Search needs SQLite or PostgreSQL, not {connection.vendor}.")

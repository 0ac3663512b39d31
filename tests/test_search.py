"""Full-text search in History: message text, reasoning, titles and system prompts.

Backend-neutral: the same tests run on SQLite (FTS5) here and on PostgreSQL through
tests/test_search_postgres.py, which re-runs this file with DATABASE_URL pointing there.
"""

from __future__ import annotations

import time

import pytest
from django.core.management import call_command
from django.db import connection

from playground.accounts.models import Membership, Team
from playground.chat.models import Conversation, Message
from playground.review import schema, search
from tests.html import find_all, text

pytestmark = pytest.mark.django_db

URL = "/review/"


def conv(owner, title="", **kw):
    return Conversation.objects.create(
        owner=owner, title=title, model="empiriolabs:gemma-4-e4b", **kw
    )


def say(conversation, body="", *, role="assistant", **kw):
    return Message.objects.create(conversation=conversation, role=role, text=body, **kw)


def hits(client, user, q, **params):
    client.force_login(user)
    response = client.get(URL, {"q": q, **params})
    return response


def titles(response) -> list[str]:
    return [text(a) for a in find_all(response.content, "a", class_="history-title")]


def test_it_finds_words_in_message_text_with_a_highlighted_snippet_linking_the_reply(client, user):
    c = conv(user, "Weather chat")
    reply = say(c, "Tomorrow brings heavy rainfall over the northern valleys.")
    conv(user, "Unrelated")
    response = hits(client, user, "rainfall")
    assert response.status_code == 200
    assert titles(response) == ["Weather chat"]
    link = find_all(response.content, "a", href=f"/c/{c.pk}/?at={reply.pk}#msg-{reply.pk}")
    assert len(link) == 1
    marks = find_all(link[0], "mark")
    assert [text(m) for m in marks] == ["rainfall"]


def test_it_searches_reasoning_titles_and_system_prompts(client, user):
    in_reasoning = conv(user, "First")
    say(in_reasoning, "The answer is four.", reasoning="Let me add the quokka numbers.")
    conv(user, "Quokka facts")
    conv(user, "Third", system_prompt="You are a quokka expert.")
    conv(user, "Fourth")
    response = hits(client, user, "quokka")
    assert sorted(titles(response)) == ["First", "Quokka facts", "Third"]
    fields = [text(s) for s in find_all(response.content, "span", class_="snippet-field")]
    assert sorted(fields) == ["assistant reasoning", "system prompt", "title"]


def test_every_word_and_quoted_phrase_must_match(client, user):
    conv(user, "both")
    say(Conversation.objects.get(title="both"), "the red fox jumps over the lazy dog")
    say(conv(user, "one word"), "the red car")
    say(conv(user, "reordered"), "the fox is red")
    assert sorted(titles(hits(client, user, "red fox"))) == ["both", "reordered"]
    assert titles(hits(client, user, '"red fox"')) == ["both"]


def test_stemming_finds_other_forms_of_a_word(client, user):
    say(conv(user, "runner"), "She was running every morning.")
    assert titles(hits(client, user, "runs")) == ["runner"]


def _tags(element) -> set[str]:
    found = set()
    for child in element.children:
        if not isinstance(child, str):
            found |= {child.name} | _tags(child)
    return found


def test_snippets_are_escaped_except_the_highlight_marks(client, user):
    c = conv(user, "<b>bold title</b> needle")
    say(c, '<script>alert("x")</script> <img src=x onerror=alert(1)> needle & more')
    say(c, "\ue000 stray marks \ue001\ue001 needle \ue000", role="user")
    response = hits(client, user, "needle")
    body = response.content.decode().partition('id="history-results"')[2]
    # (PostgreSQL's headline drops what its parser takes for tags; FTS5 keeps them: escaped.)
    assert "<script" not in body and "<img" not in body and "<b>" not in body
    assert "&amp; more" in body
    snippets = find_all(response.content, "ul", class_="snippets")
    assert len(snippets) == 1
    assert _tags(snippets[0]) <= {"li", "a", "span", "mark"}
    assert "needle" in [text(m) for m in find_all(snippets[0], "mark")]
    # Mark characters in the text itself toggle at most: the tags always balance.
    assert body.count("<mark>") == body.count("</mark>") > 0


FOUND, MISSED, REFUSED = "found", "missed", "refused"


@pytest.mark.parametrize(
    ("q", "outcome"),
    [
        ('"', REFUSED),
        ('needle"', FOUND),
        ('"needle', FOUND),
        ('"needle" "', FOUND),
        ("needle*", FOUND),
        ("*", REFUSED),
        ("nee*dle", MISSED),  # two words, "nee dle", as a phrase: not in the text
        ("NEAR(needle haystack)", MISSED),  # "near needle" is not in the text
        ("needle NEAR/2 haystack", MISSED),  # "near" is a word the text lacks
        ("(needle", FOUND),
        ("needle)", FOUND),
        ("((needle)) haystack)", FOUND),
        ("needle OR zebra", MISSED),  # every word must match: zebra does not
        ("text:needle", MISSED),  # not a column filter: the phrase "text needle"
        ("-needle", FOUND),
        ("^needle", FOUND),
        ("needle:*", FOUND),
        ("needle & | ! <-> '", FOUND),
        ("{needle} [haystack]", FOUND),
        ("needle\x00", "null"),
    ],
)
def test_query_syntax_in_the_input_is_only_text(client, user, q, outcome):
    say(conv(user, "found"), "a needle in a haystack")
    response = hits(client, user, q)
    if outcome == REFUSED:
        assert response.status_code == 400
        assert b"Type a word to search for." in response.content
    elif outcome == "null":
        assert response.status_code == 400
        assert b"Null characters are not allowed." in response.content
    else:
        assert response.status_code == 200
        assert titles(response) == (["found"] if outcome == FOUND else [])


def test_the_diff_pickers_search_refuses_a_null_character_too(client, user):
    # History's form refuses it before searching; the picker parsed the query itself, and
    # FTS5 raised "unterminated string" (a 500).
    reply = say(conv(user, "here"), "a needle")
    say(conv(user, "elsewhere"), "another needle")
    client.force_login(user)
    response = client.get("/review/diff/", {"a": reply.pk, "q": "needle\x00"})
    assert response.status_code == 200
    assert b"Null characters are not allowed." in response.content


def test_near_and_or_are_plain_words(client, user):
    say(conv(user, "station"), "The shop is near the station.")
    say(conv(user, "other"), "The shop is far from the station.")
    assert titles(hits(client, user, "NEAR shop")) == ["station"]
    assert titles(hits(client, user, "shop OR nowhere")) == []


def test_a_megabyte_query_is_refused_quickly_with_a_clear_message(client, user):
    say(conv(user, "x"), "needle")
    started = time.perf_counter()
    response = hits(client, user, "needle " * 150_000)  # ~1 MB
    assert time.perf_counter() - started < 5
    assert response.status_code == 400
    assert f"at most {search.MAX_QUERY_CHARS} characters".encode() in response.content
    many = hits(client, user, " ".join(f"w{i}" for i in range(search.MAX_TERMS + 1)))
    assert many.status_code == 400
    assert b"at most" in many.content


def test_search_never_reaches_conversations_the_user_may_not_see(client, user, other_user):
    outsider_team = Team.objects.create(name="Elsewhere")
    Membership.objects.create(team=outsider_team, user=other_user)
    say(conv(other_user, "eve private"), "secret zeppelin plans")
    say(conv(other_user, "eve team", team=outsider_team), "team zeppelin plans")
    conv(other_user, "zeppelin title")
    mine = conv(user, "mine")
    say(mine, "my zeppelin")
    response = hits(client, user, "zeppelin")
    assert titles(response) == ["mine"]
    assert b"secret" not in response.content and b"team zeppelin" not in response.content


def test_search_combines_with_filters(client, user, other_user):
    team = Team.objects.create(name="Lab")
    Membership.objects.create(team=team, user=user)
    say(conv(user, "personal"), "walrus")
    say(conv(user, "in lab", team=team), "walrus")
    assert titles(hits(client, user, "walrus", space=str(team.pk))) == ["in lab"]


def test_the_index_follows_updates_bulk_updates_and_deletes(client, user):
    c = conv(user, "live")
    reply = say(c, "first draft")
    # The run checkpoints with QuerySet.update(): no save() signal, the trigger sees it.
    Message.objects.filter(pk=reply.pk).update(text="checkpointed albatross")
    assert titles(hits(client, user, "albatross")) == ["live"]
    assert titles(hits(client, user, "draft")) == []
    c.title = "renamed pelican"
    c.save()
    assert titles(hits(client, user, "pelican")) == ["renamed pelican"]
    reply.delete()
    assert titles(hits(client, user, "albatross")) == []
    c.delete()
    assert titles(hits(client, user, "pelican")) == []


def _empty_the_index() -> None:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("TRUNCATE review_message_search, review_conversation_search")
        else:
            cursor.execute(
                "INSERT INTO review_message_fts (review_message_fts) VALUES ('delete-all')"
            )
            cursor.execute(
                "INSERT INTO review_conversation_fts (review_conversation_fts) "
                "VALUES ('delete-all')"
            )


def test_the_rebuild_command_reindexes_everything(client, user, capsys):
    say(conv(user, "kept"), "narwhal")
    _empty_the_index()
    assert titles(hits(client, user, "narwhal")) == []
    call_command("rebuild_search_index")
    assert "Indexed 1 messages." in capsys.readouterr().out
    assert titles(hits(client, user, "narwhal")) == ["kept"]


def _drop_message_triggers() -> None:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("DROP TRIGGER review_message_search_write ON chat_message")
        else:
            cursor.execute("DROP TRIGGER review_message_fts_insert")


def test_missing_triggers_are_put_back_and_what_they_missed_is_indexed(client, user):
    """What a SQLite table rebuild in a later chat migration does to the triggers."""
    _drop_message_triggers()
    say(conv(user, "written meanwhile"), "axolotl")
    assert schema.missing_triggers(connection)
    assert titles(hits(client, user, "axolotl")) == []
    assert schema.ensure_triggers(connection) is True
    assert schema.missing_triggers(connection) == []
    assert titles(hits(client, user, "axolotl")) == ["written meanwhile"]
    assert schema.ensure_triggers(connection) is False


def test_query_parsing_keeps_words_and_phrases_only():
    query = search.Query.parse('alpha "beta  gamma" (delta NEAR* "unclosed')
    assert query.words == ("alpha", "(delta", "NEAR*", "unclosed")
    assert query.phrases == ("beta gamma",)
    assert query.fts5() == '"alpha" "(delta" "NEAR*" "unclosed" "beta gamma"'
    assert search.Query.parse('say "hi"""').fts5() == '"say" "hi"'
    with pytest.raises(search.InvalidQuery):
        search.Query.parse('* ( ) ""')


def test_render_snippet_escapes_and_balances():
    raw = f"<i>{search.MARK_OPEN}x{search.MARK_CLOSE}</i>{search.MARK_CLOSE}{search.MARK_OPEN}y"
    assert search.render_snippet(raw) == "&lt;i&gt;<mark>x</mark>&lt;/i&gt;<mark>y</mark>"


@pytest.mark.parametrize("rare", [2, 1000])
@pytest.mark.parametrize("pattern", ["all", "old only", "sparse", "new only", "one"])
def test_paging_through_search_results_gives_every_match_once_in_order(
    client, user, monkeypatch, pattern, rare
):
    """Small pages and small PostgreSQL thresholds, so each of its plans is taken: a rare
    word's documents from the index, a common word found among the newest candidates, and
    a common word whose matches only the index finds further down."""
    from datetime import UTC, datetime, timedelta

    from playground.review import history

    monkeypatch.setattr(history, "PAGE_SIZE", 2)
    monkeypatch.setattr(search.PostgresBackend, "WINDOW", 3)
    monkeypatch.setattr(search.PostgresBackend, "RARE", rare)
    monkeypatch.setattr(search.Fts5Backend, "RARE", rare)
    matches = {
        "all": range(12),
        "old only": range(9),
        "sparse": [0, 5, 11],
        "new only": [10, 11],
        "one": [4],
    }[pattern]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(12):
        c = conv(user, f"c{i}")
        say(c, "ibex grazing" if i in matches else "goat grazing")
        Conversation.objects.filter(pk=c.pk).update(updated=start + timedelta(days=i))
    client.force_login(user)
    seen: list[str] = []
    url = f"{URL}?q=ibex"
    while url:
        response = client.get(url, headers={"HX-Request": "true"})
        assert response.status_code == 200
        seen += titles(response)
        # Each row shows its one matching reply, highlighted.
        marks = [text(m) for m in find_all(response.content, "mark")]
        assert marks == ["ibex"] * len(titles(response))
        more = find_all(response.content, "button", class_="history-more")
        url = dict(more[0].attributes)["hx-get"] if more else ""
    assert seen == [f"c{i}" for i in sorted(matches, reverse=True)]


def test_migrate_puts_back_triggers_a_table_rebuild_dropped(client, user):
    from django.core.management.sql import emit_post_migrate_signal

    _drop_message_triggers()
    say(conv(user, "during the migration"), "pangolin")
    emit_post_migrate_signal(verbosity=0, interactive=False, db="default")
    assert schema.missing_triggers(connection) == []
    assert titles(hits(client, user, "pangolin")) == ["during the migration"]


def test_a_reply_as_long_as_a_reply_may_be_is_saved_and_found(client, user):
    # Counting to 300,000 is under the reply cap (2M characters) but makes PostgreSQL's
    # tsvector of it 3 MB, past the 1 MB it can hold: the reply could not even be saved.
    counted = " ".join(str(n) for n in range(1, 300_001))
    c = conv(user, "Counting")
    reply = say(c, f"Counting quokkas: {counted}")
    reply.text += " the end"
    reply.save(update_fields=["text"])
    assert titles(hits(client, user, "quokkas")) == ["Counting"]


def test_a_search_of_only_common_words_says_why_when_it_finds_nothing(client, user):
    conv(user, "Style")
    say(conv(user, "Grammar"), "The rules of grammar and style.")
    response = hits(client, user, 'the of "and"')
    assert response.status_code == 200
    body = response.content.decode()
    if connection.vendor == "postgresql":  # its stop words: the query is empty
        assert titles(response) == []
        assert "These words are too common to search for" in body
    else:  # FTS5 has no stop words: they match like any other
        assert titles(response) == ["Grammar"]
        assert "too common" not in body
    # With one rarer word the common ones are only left out, and no hint is needed.
    response = hits(client, user, "the grammar")
    assert titles(response) == ["Grammar"] and "too common" not in response.content.decode()
    response = hits(client, user, "the nothingmatches")
    assert "Nothing matches this search." in response.content.decode()
    assert "too common" not in response.content.decode()

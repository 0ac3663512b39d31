"""The search index's tables and the triggers that keep it in sync, per database backend.

Kept in sync by database triggers rather than Django signals: a trigger sees every write,
including `QuerySet.update()` (the run checkpoints a streaming reply's text that way, and marks
stale replies interrupted in bulk), `bulk_create` and cascaded deletes, none of which send
`post_save`/`post_delete`; and it writes in the same transaction as the row, so the index is
never ahead of or behind a committed message.

SQLite: FTS5 tables with external content (the text stays in chat's tables; the index holds
only tokens), as the FTS5 documentation's trigger recipe describes. PostgreSQL: a stored
`tsvector` per message and per conversation with a GIN index, so a match never re-parses the
text.

A table rebuild (SQLite's way of altering a column: copy, drop, rename) drops that table's
triggers, so `ensure_triggers` runs after every `migrate` and puts back any that are missing,
rebuilding the index when it had to.
"""

from __future__ import annotations

from django.db.backends.base.base import BaseDatabaseWrapper

# SQLite: porter stemming over unicode61, close to PostgreSQL's 'english' configuration, so
# "running" finds "run" on both backends.
SQLITE_TOKENIZE = "porter unicode61 remove_diacritics 2"
PG_CONFIG = "english"

_SQLITE_TABLES = [
    f"""CREATE VIRTUAL TABLE IF NOT EXISTS review_message_fts USING fts5(
        text, reasoning, content='chat_message', content_rowid='id',
        tokenize='{SQLITE_TOKENIZE}')""",
    f"""CREATE VIRTUAL TABLE IF NOT EXISTS review_conversation_fts USING fts5(
        title, system_prompt, content='chat_conversation', content_rowid='id',
        tokenize='{SQLITE_TOKENIZE}')""",
    # Which conversation each message is in, in rows of two integers: a common word matches
    # most messages, and looking their conversation up in chat_message (whose rows carry
    # the whole text) read five times the pages.
    """CREATE TABLE IF NOT EXISTS review_message_conversation (
        message_id INTEGER PRIMARY KEY, conversation_id INTEGER NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS review_message_conversation_conversation
        ON review_message_conversation (conversation_id)""",
]

# External content: a 'delete' must be given the values the row was indexed with (old.*).
# The WHEN clauses skip the saves that do not change the text (every send saves the
# conversation to bump `updated`).
_SQLITE_TRIGGERS = {
    "review_message_fts_insert": """
        CREATE TRIGGER IF NOT EXISTS review_message_fts_insert AFTER INSERT ON chat_message
        BEGIN
            INSERT INTO review_message_fts (rowid, text, reasoning)
            VALUES (new.id, new.text, new.reasoning);
            INSERT OR REPLACE INTO review_message_conversation (message_id, conversation_id)
            VALUES (new.id, new.conversation_id);
        END""",
    "review_message_fts_delete": """
        CREATE TRIGGER IF NOT EXISTS review_message_fts_delete AFTER DELETE ON chat_message
        BEGIN
            INSERT INTO review_message_fts (review_message_fts, rowid, text, reasoning)
            VALUES ('delete', old.id, old.text, old.reasoning);
            DELETE FROM review_message_conversation WHERE message_id = old.id;
        END""",
    "review_message_fts_update": """
        CREATE TRIGGER IF NOT EXISTS review_message_fts_update AFTER UPDATE ON chat_message
        WHEN old.text IS NOT new.text OR old.reasoning IS NOT new.reasoning
            OR old.id IS NOT new.id OR old.conversation_id IS NOT new.conversation_id
        BEGIN
            INSERT INTO review_message_fts (review_message_fts, rowid, text, reasoning)
            VALUES ('delete', old.id, old.text, old.reasoning);
            INSERT INTO review_message_fts (rowid, text, reasoning)
            VALUES (new.id, new.text, new.reasoning);
            DELETE FROM review_message_conversation WHERE message_id = old.id;
            INSERT OR REPLACE INTO review_message_conversation (message_id, conversation_id)
            VALUES (new.id, new.conversation_id);
        END""",
    "review_conversation_fts_insert": """
        CREATE TRIGGER IF NOT EXISTS review_conversation_fts_insert
        AFTER INSERT ON chat_conversation
        BEGIN
            INSERT INTO review_conversation_fts (rowid, title, system_prompt)
            VALUES (new.id, new.title, new.system_prompt);
        END""",
    "review_conversation_fts_delete": """
        CREATE TRIGGER IF NOT EXISTS review_conversation_fts_delete
        AFTER DELETE ON chat_conversation
        BEGIN
            INSERT INTO review_conversation_fts (review_conversation_fts, rowid, title,
                system_prompt)
            VALUES ('delete', old.id, old.title, old.system_prompt);
        END""",
    "review_conversation_fts_update": """
        CREATE TRIGGER IF NOT EXISTS review_conversation_fts_update
        AFTER UPDATE ON chat_conversation
        WHEN old.title IS NOT new.title OR old.system_prompt IS NOT new.system_prompt
            OR old.id IS NOT new.id
        BEGIN
            INSERT INTO review_conversation_fts (review_conversation_fts, rowid, title,
                system_prompt)
            VALUES ('delete', old.id, old.title, old.system_prompt);
            INSERT INTO review_conversation_fts (rowid, title, system_prompt)
            VALUES (new.id, new.title, new.system_prompt);
        END""",
}

_MESSAGE_DOCUMENT = "review_document({row}.text, {row}.reasoning)"
_CONVERSATION_DOCUMENT = "review_document({row}.title, {row}.system_prompt)"

# A tsvector holds at most 1 MB: a reply may be 2 million characters (PLAYGROUND_MAX_REPLY_CHARS),
# and counting to 300,000 makes a 3 MB one, whose error would refuse the reply's own write.
# Such a document indexes as much of the text as fits, found by halving. Below SAFE_CHARS
# (at most ~7 bytes of tsvector a character) it always fits, and skips the EXCEPTION block's
# subtransaction, which every streamed checkpoint would otherwise pay.
_PG_SAFE_CHARS = 100_000
_PG_FUNCTIONS = [
    f"""CREATE OR REPLACE FUNCTION review_document(first text, second text) RETURNS tsvector AS $$
    DECLARE
        cut integer := greatest(length(first), length(second));
    BEGIN
        IF coalesce(length(first), 0) + coalesce(length(second), 0) < {_PG_SAFE_CHARS} THEN
            RETURN setweight(to_tsvector('{PG_CONFIG}', coalesce(first, '')), 'A')
                || setweight(to_tsvector('{PG_CONFIG}', coalesce(second, '')), 'B');
        END IF;
        LOOP
            BEGIN
                RETURN setweight(to_tsvector('{PG_CONFIG}', left(coalesce(first, ''), cut)), 'A')
                    || setweight(to_tsvector('{PG_CONFIG}', left(coalesce(second, ''), cut)), 'B');
            EXCEPTION WHEN program_limit_exceeded THEN
                cut := cut / 2;
            END;
        END LOOP;
    END $$ LANGUAGE plpgsql""",
]

# No foreign keys to chat's tables: Django's flush truncates the tables it knows, and a
# reference from an unmanaged table would make that fail. Delete triggers remove the rows
# instead, and an insert overwrites any row left under a reused id.
_PG_TABLES = [
    *_PG_FUNCTIONS,
    """CREATE TABLE IF NOT EXISTS review_message_search (
        message_id bigint PRIMARY KEY,
        conversation_id bigint NOT NULL,
        document tsvector NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS review_message_search_document
        ON review_message_search USING gin (document)""",
    """CREATE INDEX IF NOT EXISTS review_message_search_conversation
        ON review_message_search (conversation_id)""",
    """CREATE TABLE IF NOT EXISTS review_conversation_search (
        conversation_id bigint PRIMARY KEY,
        document tsvector NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS review_conversation_search_document
        ON review_conversation_search USING gin (document)""",
    f"""CREATE OR REPLACE FUNCTION review_index_message() RETURNS trigger AS $$
    BEGIN
        IF TG_OP = 'DELETE' THEN
            DELETE FROM review_message_search WHERE message_id = OLD.id;
            RETURN NULL;
        END IF;
        INSERT INTO review_message_search (message_id, conversation_id, document)
        VALUES (NEW.id, NEW.conversation_id, {_MESSAGE_DOCUMENT.format(row="NEW")})
        ON CONFLICT (message_id) DO UPDATE
            SET conversation_id = EXCLUDED.conversation_id, document = EXCLUDED.document;
        RETURN NULL;
    END $$ LANGUAGE plpgsql""",
    f"""CREATE OR REPLACE FUNCTION review_index_conversation() RETURNS trigger AS $$
    BEGIN
        IF TG_OP = 'DELETE' THEN
            DELETE FROM review_conversation_search WHERE conversation_id = OLD.id;
            RETURN NULL;
        END IF;
        INSERT INTO review_conversation_search (conversation_id, document)
        VALUES (NEW.id, {_CONVERSATION_DOCUMENT.format(row="NEW")})
        ON CONFLICT (conversation_id) DO UPDATE SET document = EXCLUDED.document;
        RETURN NULL;
    END $$ LANGUAGE plpgsql""",
]

_PG_TRIGGERS = {
    "review_message_search_write": """
        CREATE OR REPLACE TRIGGER review_message_search_write
        AFTER INSERT OR DELETE ON chat_message
        FOR EACH ROW EXECUTE FUNCTION review_index_message()""",
    "review_message_search_change": """
        CREATE OR REPLACE TRIGGER review_message_search_change
        AFTER UPDATE ON chat_message FOR EACH ROW
        WHEN (OLD.text IS DISTINCT FROM NEW.text OR OLD.reasoning IS DISTINCT FROM NEW.reasoning
              OR OLD.conversation_id IS DISTINCT FROM NEW.conversation_id)
        EXECUTE FUNCTION review_index_message()""",
    "review_conversation_search_write": """
        CREATE OR REPLACE TRIGGER review_conversation_search_write
        AFTER INSERT OR DELETE ON chat_conversation
        FOR EACH ROW EXECUTE FUNCTION review_index_conversation()""",
    "review_conversation_search_change": """
        CREATE OR REPLACE TRIGGER review_conversation_search_change
        AFTER UPDATE ON chat_conversation FOR EACH ROW
        WHEN (OLD.title IS DISTINCT FROM NEW.title
              OR OLD.system_prompt IS DISTINCT FROM NEW.system_prompt)
        EXECUTE FUNCTION review_index_conversation()""",
}


class UnsupportedDatabase(Exception):
    pass


def _is_postgres(connection: BaseDatabaseWrapper) -> bool:
    if connection.vendor == "postgresql":
        return True
    if connection.vendor == "sqlite":
        return False
    raise UnsupportedDatabase(f"Search needs SQLite or PostgreSQL, not {connection.vendor}.")


def install(connection: BaseDatabaseWrapper) -> None:
    """Create the index tables and triggers, and index what is already there."""
    statements = _PG_TABLES if _is_postgres(connection) else _SQLITE_TABLES
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)
    ensure_triggers(connection, rebuild_if_missing=False)
    rebuild(connection)


def update_functions(connection: BaseDatabaseWrapper) -> None:
    """Replace the PostgreSQL functions the triggers call with this version's: a database
    installed earlier keeps its own until then. (Every statement is CREATE OR REPLACE or IF
    NOT EXISTS.) No re-index: what the old ones indexed, the new ones index the same way."""
    if not _is_postgres(connection):
        return
    with connection.cursor() as cursor:
        for statement in _PG_TABLES:
            cursor.execute(statement)


def uninstall(connection: BaseDatabaseWrapper) -> None:
    with connection.cursor() as cursor:
        if _is_postgres(connection):
            for name, table in [
                ("review_message_search_write", "chat_message"),
                ("review_message_search_change", "chat_message"),
                ("review_conversation_search_write", "chat_conversation"),
                ("review_conversation_search_change", "chat_conversation"),
            ]:
                cursor.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
            cursor.execute("DROP FUNCTION IF EXISTS review_index_message()")
            cursor.execute("DROP FUNCTION IF EXISTS review_index_conversation()")
            cursor.execute("DROP FUNCTION IF EXISTS review_document(text, text)")
            cursor.execute("DROP TABLE IF EXISTS review_message_search")
            cursor.execute("DROP TABLE IF EXISTS review_conversation_search")
        else:
            for name in _SQLITE_TRIGGERS:
                cursor.execute(f"DROP TRIGGER IF EXISTS {name}")
            cursor.execute("DROP TABLE IF EXISTS review_message_fts")
            cursor.execute("DROP TABLE IF EXISTS review_message_conversation")
            cursor.execute("DROP TABLE IF EXISTS review_conversation_fts")


def missing_triggers(connection: BaseDatabaseWrapper) -> list[str]:
    postgres = _is_postgres(connection)
    wanted = _PG_TRIGGERS if postgres else _SQLITE_TRIGGERS
    with connection.cursor() as cursor:
        if postgres:
            cursor.execute("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")
        else:
            cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        present = {row[0] for row in cursor.fetchall()}
    return [name for name in wanted if name not in present]


def ensure_triggers(connection: BaseDatabaseWrapper, *, rebuild_if_missing: bool = True) -> bool:
    """Put back missing triggers; True when any were. Writes made while they were missing
    never reached the index, so it is rebuilt then."""
    missing = missing_triggers(connection)
    if not missing:
        return False
    wanted = _PG_TRIGGERS if _is_postgres(connection) else _SQLITE_TRIGGERS
    with connection.cursor() as cursor:
        for name in missing:
            cursor.execute(wanted[name])
    if rebuild_if_missing:
        rebuild(connection)
    return True


def is_installed(connection: BaseDatabaseWrapper) -> bool:
    table = "review_message_search" if _is_postgres(connection) else "review_message_fts"
    return table in connection.introspection.table_names()


def rebuild(connection: BaseDatabaseWrapper) -> int:
    """Re-index every message and conversation from chat's tables; the number of messages."""
    with connection.cursor() as cursor:
        if _is_postgres(connection):
            cursor.execute("TRUNCATE review_message_search, review_conversation_search")
            cursor.execute(
                "INSERT INTO review_message_search (message_id, conversation_id, document) "
                f"SELECT m.id, m.conversation_id, {_MESSAGE_DOCUMENT.format(row='m')} "
                "FROM chat_message m"
            )
            cursor.execute(
                "INSERT INTO review_conversation_search (conversation_id, document) "
                f"SELECT c.id, {_CONVERSATION_DOCUMENT.format(row='c')} FROM chat_conversation c"
            )
        else:
            # FTS5's own command: re-reads the external content table.
            cursor.execute("INSERT INTO review_message_fts (review_message_fts) VALUES ('rebuild')")
            cursor.execute(
                "INSERT INTO review_conversation_fts (review_conversation_fts) VALUES ('rebuild')"
            )
            cursor.execute("DELETE FROM review_message_conversation")
            cursor.execute(
                "INSERT INTO review_message_conversation (message_id, conversation_id) "
                "SELECT id, conversation_id FROM chat_message"
            )
        cursor.execute("SELECT count(*) FROM chat_message")
        return int(cursor.fetchone()[0])

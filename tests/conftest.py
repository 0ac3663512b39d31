"""Shared fixtures: the fake upstream, users with keys, and authenticated sockets."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.test import Client, override_settings

from tests.upstream import Behaviour, FakeUpstream

SECRET_KEY_VALUE = "sk-test-LEAKCANARY-7f3a9c2e5b1d4068"
ORIGIN = b"http://127.0.0.1:8000"


@pytest.fixture(autouse=True, scope="session")
def _static_files_without_collectstatic() -> Iterator[None]:
    """Pages rendered in this process link static files by their plain names.

    The manifest storage of settings.py needs `collectstatic` first, which is not part of
    test set-up; Django's documentation of ManifestStaticFilesStorage advises the plain
    storage in tests. Without a STATIC_ROOT, WhiteNoise does not scan the developer's var/.
    The browser tests run `collectstatic` for their server, as `make run` does, and so
    check the real thing."""
    plain = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
    with override_settings(
        STORAGES={"default": django_settings.STORAGES["default"], "staticfiles": plain},
        STATIC_ROOT=None,
    ):
        yield


@pytest.fixture(autouse=True, scope="session")
def _fast_password_hashing() -> Iterator[None]:
    """Users made in this process get MD5 hashes, as Django's testing documentation advises:
    the default PBKDF2 costs about 0.2 s a password here, and some 900 tests make a user
    with one (over 3 minutes of a run). No test here checks a hash's algorithm or cost; the
    browser tests' servers are separate processes with the real hasher, and sign in with it."""
    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        yield


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup) -> Iterator[None]:
    """pytest-django's, and before it drops the test database: the connections that other
    threads opened are closed. The async tests' database calls run in asgiref's executor
    thread, whose connection stays open on PostgreSQL (CONN_MAX_AGE); DROP DATABASE waited
    5 s for it, then failed and left the test database behind on the server."""
    yield
    import gc
    import threading

    from django.db.backends.base.base import BaseDatabaseWrapper

    def wrappers() -> Iterator[BaseDatabaseWrapper]:
        for o in gc.get_objects():
            try:
                if isinstance(o, BaseDatabaseWrapper):
                    yield o
            except ReferenceError:  # a weak proxy whose object is gone
                continue

    here = threading.get_ident()
    for wrapper in list(wrappers()):
        if wrapper.connection is not None and wrapper._thread_ident != here:
            wrapper.inc_thread_sharing()
            try:
                wrapper.close()
            finally:
                wrapper.dec_thread_sharing()


@pytest.fixture(autouse=True)
def _no_real_hosts(settings) -> None:
    """Point every catalog provider at a closed loopback port: no test reaches a real host.
    Tests that stream set them to the fake upstream with the `upstream` fixture."""
    settings.PLAYGROUND_PROVIDER_BASE_URLS = {
        "empiriolabs": "http://127.0.0.1:9/v1",
        "aimlapi": "http://127.0.0.1:9/v1",
    }
    settings.PLAYGROUND_UPSTREAM = {
        "CONNECT_TIMEOUT": 2.0,
        "READ_TIMEOUT": 5.0,
        "RETRY_AFTER_CAP": 1.0,
        "MAX_RETRIES": 2,
        "KEEPALIVE_EXPIRY": 4.0,
    }


@pytest.fixture(autouse=True)
def _rows_before_text(settings) -> None:
    """The fake upstream answers faster than a turn's rows are written, so whether a reply's
    first text is shown early (EarlyText) would be a race in every streaming test. The
    suite shows the rows first; tests/test_early_text.py turns it on and orders the race
    itself. The browser tests' server keeps the default (on)."""
    settings.PLAYGROUND_RUN = {**settings.PLAYGROUND_RUN, "EARLY_TEXT_WAIT": 0}


@pytest.fixture(autouse=True)
def _fresh_channel_layer() -> Iterator[None]:
    # The in-memory layer's queues belong to one event loop; every test gets its own.
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture(autouse=True)
def _reset_first_run_cache() -> Iterator[None]:
    from playground.accounts import middleware

    middleware._has_users = False
    yield
    middleware._has_users = False


@pytest.fixture(autouse=True)
def _empty_cache() -> Iterator[None]:
    """Failed-login counts and liveness keys live in the cache: none leak between tests."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture(scope="session")
def migrated_sqlite() -> Iterator[Path]:
    """A SQLite database file brought up to date by `manage.py migrate`, once a session.
    Fixtures that start a playground process of their own over SQLite copy it in first
    (copy_database); their `migrate` still runs, with nothing left to apply."""
    from bench.stack import Stack

    stack = Stack("http://127.0.0.1:9/v1")
    try:
        stack.manage("migrate", "--noinput")
        assert stack.sqlite_path is not None
        yield stack.sqlite_path
    finally:
        stack.cleanup()


def copy_database(source: Path, target: Path) -> None:
    """A consistent copy of the SQLite database `source` (WAL or not) at `target`."""
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


@pytest.fixture(scope="session")
def fake_upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@pytest.fixture
def upstream(fake_upstream: FakeUpstream, settings) -> FakeUpstream:
    fake_upstream.reset()
    fake_upstream.default = Behaviour(n_tokens=5)
    settings.PLAYGROUND_PROVIDER_BASE_URLS = {
        "empiriolabs": fake_upstream.base_url,
        "aimlapi": fake_upstream.base_url,
    }
    return fake_upstream


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("ada", password="correct horse battery")


@pytest.fixture
def other_user(django_user_model):
    return django_user_model.objects.create_user("eve", password="correct horse battery")


@pytest.fixture
def api_key(user):
    from playground.accounts.models import ApiKey

    return ApiKey.store(provider="empiriolabs", plaintext=SECRET_KEY_VALUE, user=user)


@pytest.fixture
def conversation(user):
    from playground.chat.models import Conversation

    return Conversation.objects.create(owner=user, model="empiriolabs:gemma-4-e4b")


async def reply_of(conversation):
    """The conversation's newest assistant message."""
    from playground.chat.models import Message

    return await Message.objects.filter(conversation=conversation, role="assistant").alast()


def session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


class Socket:
    """A WebsocketCommunicator that speaks the htmx ws extension's JSON and keeps every
    frame it received, so tests can assert over the whole conversation."""

    def __init__(self, communicator: WebsocketCommunicator) -> None:
        self.communicator = communicator
        self.frames: list[str] = []

    async def send(self, **data: Any) -> None:
        data.setdefault("HEADERS", {"HX-Request": "true"})
        await self.communicator.send_to(text_data=json.dumps(data))

    async def send_prompt(self, text: str, model: str = "empiriolabs:gemma-4-e4b", **extra):
        extra.setdefault("system_prompt", "")
        await self.send(action="send", text=text, model=model, **extra)

    async def receive(self, timeout: float = 5.0) -> str:
        frame = await self.communicator.receive_from(timeout=timeout)
        self.frames.append(frame)
        return frame

    async def until(self, predicate: Callable[[str], bool], timeout: float = 5.0) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            frame = await self.receive(timeout=max(0.01, deadline - loop.time()))
            if predicate(frame):
                return frame

    async def drain(self, quiet: float = 0.2) -> None:
        """Read until the socket has been quiet for `quiet` seconds. (receive_from's own
        timeout would cancel the application, so wait with receive_nothing instead.)"""
        while not await self.communicator.receive_nothing(timeout=quiet):
            await self.receive()

    async def close(self) -> None:
        await self.communicator.disconnect()


@pytest.fixture
def connect():
    """connect(user, conversation) -> (connected, Socket)"""
    from playground.asgi import application

    opened: list[WebsocketCommunicator] = []

    async def _connect(
        user, conversation_id, *, origin: bytes | None = ORIGIN, cookie=None, query: str = ""
    ):
        headers = [(b"host", b"127.0.0.1:8000")]
        if origin is not None:
            headers.append((b"origin", origin))
        if cookie is None and user is not None:
            from channels.db import database_sync_to_async

            cookie = await database_sync_to_async(session_cookie)(user)
        if cookie:
            headers.append((b"cookie", cookie))
        communicator = WebsocketCommunicator(
            application, f"/ws/conversations/{conversation_id}/{query}", headers=headers
        )
        opened.append(communicator)
        connected, _ = await communicator.connect(timeout=5)
        return connected, Socket(communicator)

    return _connect

"""Browser fixtures: the real server `make run` runs, and Debian's Chromium driven by Playwright.

`live_server` migrates a fresh SQLite database in a temp dir and starts Daphne as a subprocess,
with both catalog providers pointed at a FakeUpstream that runs in this (the test) process, so
tests script the model's replies and observe what the server sent and when it hung up.

Everything here is plain sync code: Playwright's sync API refuses to run inside an event loop,
and pytest-asyncio (auto mode) must not get one into this fixture chain.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import copy_database
from tests.upstream import Behaviour, FakeUpstream

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv the tests run in: same python, same daphne
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-gpu",
]
ASGI_APP = "playground.asgi:application"
STARTUP_TIMEOUT = 20.0
STDERR_TAIL_LINES = 60


@dataclass
class LiveServer:
    url: str  # http://127.0.0.1:PORT, no trailing slash
    upstream: FakeUpstream
    process: subprocess.Popen
    log_path: Path
    var_dir: Path
    env: dict[str, str]

    def manage(self, *args: str) -> str:
        """Run a management command against this server's database, as `make run` would."""
        return _manage(self.env, *args)

    def stderr_tail(self, lines: int = STDERR_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no daphne log)"
        return "\n".join(text.splitlines()[-lines:]) or "(daphne wrote nothing)"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _server_env(var_dir: Path, upstream: FakeUpstream) -> dict[str, str]:
    env = dict(os.environ)
    # The embedded default, whatever the caller's shell says: a fresh SQLite file and the
    # in-memory channel layer, so the first visitor really is the first.
    isolate = ("DATABASE_URL", "REDIS_URL", "PLAYGROUND_SECRET_KEY", "PLAYGROUND_ENCRYPTION_KEYS")
    for name in isolate:
        env.pop(name, None)
    env.update(
        DJANGO_SETTINGS_MODULE="playground.settings",
        PLAYGROUND_VAR_DIR=str(var_dir),
        PLAYGROUND_PROVIDER_BASE_URLS=(
            f"empiriolabs={upstream.base_url},aimlapi={upstream.base_url}"
        ),
        PLAYGROUND_CONNECT_TIMEOUT="2",
        PLAYGROUND_READ_TIMEOUT="10",
        PLAYGROUND_MAX_RETRIES="0",
        PYTHONUNBUFFERED="1",
    )
    return env


def _manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [str(BIN / "python"), "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"manage.py {args[0]} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def _wait_until_serving(server: LiveServer) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(
                f"daphne exited with {server.process.returncode} before serving:\n"
                + server.stderr_tail(),
                pytrace=False,
            )
        try:
            # Any HTTP answer counts (the first-run redirect is a 302): the port is serving.
            urllib.request.urlopen(server.url + "/static/css/app.css", timeout=1).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail(
        f"daphne did not answer on {server.url} within {STARTUP_TIMEOUT:.0f}s:\n"
        + server.stderr_tail(),
        pytrace=False,
    )


@pytest.fixture(autouse=True)
def _live_server_helper() -> None:
    """Shadows pytest-django's autouse helper of the same name: it sees a fixture called
    `live_server` and would set up its test database and in-process server for it. This
    server is a separate Daphne process with its own SQLite file; the tests use no test DB."""


@pytest.fixture(scope="session")
def e2e_upstream() -> Iterator[FakeUpstream]:
    """Separate from tests/conftest.py's `fake_upstream`: Daphne keeps this one's URL."""
    with FakeUpstream() as server:
        server.default = Behaviour(n_tokens=5)
        yield server


@pytest.fixture(scope="session")
def live_server(e2e_upstream: FakeUpstream) -> Iterator[LiveServer]:
    """What `make run` runs: `manage.py migrate` and `collectstatic` (into the temp var dir),
    then Daphne, on a free loopback port."""
    yield from start_live_server(e2e_upstream)


def start_live_server(
    upstream: FakeUpstream, database: Path | None = None, **extra_env: str
) -> Iterator[LiveServer]:
    """A live server of its own (a fresh database: a copy of the migrated SQLite file
    `database`, when given), with these settings in its environment; for fixtures of tests
    that need a server configured differently."""
    var_dir = Path(tempfile.mkdtemp(prefix="playground-e2e-"))
    env = {**_server_env(var_dir, upstream), **extra_env}
    try:
        if database is not None:
            copy_database(database, var_dir / "db.sqlite3")
        _manage(env, "migrate", "--noinput")
        _manage(env, "collectstatic", "--noinput", "--verbosity", "0")
    except RuntimeError as exc:
        shutil.rmtree(var_dir, ignore_errors=True)
        pytest.fail(str(exc), pytrace=False)

    port = _free_port()
    log_path = var_dir / "daphne.log"
    with open(log_path, "wb") as log:  # a file, not a pipe: a full pipe would stall Daphne
        process = subprocess.Popen(
            [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(port), ASGI_APP],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = LiveServer(f"http://127.0.0.1:{port}", upstream, process, log_path, var_dir, env)
    try:
        _wait_until_serving(server)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        shutil.rmtree(var_dir, ignore_errors=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing browser test shows the tail of Daphne's log next to its traceback."""
    outcome = yield
    report = outcome.get_result()
    server = getattr(item, "funcargs", {}).get("live_server")
    if report.failed and isinstance(server, LiveServer):
        report.sections.append(("daphne log (tail)", server.stderr_tail()))


class _Chromium:
    """One Chromium for a run of browser tests, one after another (each test opens browser
    contexts of its own, which share no cookies, storage or cache)."""

    def __init__(self) -> None:
        self.playwright = None
        self.browser = None

    def get(self):
        if self.browser is None:
            from playwright.sync_api import sync_playwright

            playwright = sync_playwright().start()
            try:
                self.browser = playwright.chromium.launch(
                    executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
                )
            except BaseException:
                playwright.stop()
                raise
            self.playwright = playwright
        return self.browser

    def close(self) -> None:
        browser, playwright = self.browser, self.playwright
        self.browser = self.playwright = None
        try:
            if browser is not None:
                browser.close()
        finally:
            if playwright is not None:
                playwright.stop()


_chromium = _Chromium()


def _is_e2e(item) -> bool:
    return item.path.parent.name == "e2e"


@pytest.fixture
def browser(request):
    """The session's Chromium, launched for the first browser test after any test that is
    not one. Never kept past such a test: while Playwright's sync driver runs, this thread
    has a running event loop, and an async test or a sync ORM call would fail ("cannot be
    called from a running event loop", SynchronousOnlyOperation). pytest-django orders the
    tests on live_server among the transactional ones and the other browser tests with those
    that use no database, so a full run launches it twice rather than once a module."""
    if not os.access(CHROMIUM, os.X_OK):
        reason = f"{CHROMIUM} is missing: install Debian's 'chromium' package (make browser)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    if _chromium.browser is None:
        request.config.add_cleanup(_chromium.close)
    return _chromium.get()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """After a browser test's own teardown: close the Chromium unless the next test uses it."""
    yield
    if nextitem is None or "browser" not in getattr(nextitem, "fixturenames", ()):
        _chromium.close()


@pytest.fixture
def page(browser, live_server: LiveServer):
    """A fresh browser context (no cookies) at the screenshot size, with short default waits."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=live_server.url)
    context.set_default_timeout(10_000)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


def pytest_collection_modifyitems(config, items) -> None:
    """test_browser.py walks the first run of a new site (no account yet, set-up form first),
    on the session's shared server: its tests go before every other browser test, whatever
    the file names sort as."""
    e2e = [i for i, item in enumerate(items) if _is_e2e(item)]
    if not e2e:
        return
    first_run = [item for item in items if item.path.name == "test_browser.py"]
    rest = [item for item in items if item.path.name != "test_browser.py"]
    start = e2e[0]
    items[:] = rest[:start] + first_run + rest[start:]

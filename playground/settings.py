"""Playground settings: one file, the environment read through helpers that fail loudly.

The embedded default needs no configuration at all: SQLite under var/, the in-memory channel
layer, and secrets generated into var/ on first run. A team that outgrows one process sets
DATABASE_URL (PostgreSQL) and REDIS_URL (Redis) and runs several Daphne processes.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
import django_stubs_ext
from django.core.exceptions import ImproperlyConfigured

from playground.accounts import crypto
from playground.env import (
    envbool,
    envfloat,
    envint,
    envlist,
    envurl,
    new_secret_key,
    secret_file,
)

# Lets Django's generic classes be subscripted at run time as their type stubs are
# (admin.ModelAdmin[Team], UserCreationForm[User]).
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("PLAYGROUND_VAR_DIR", BASE_DIR / "var")).resolve()

DEBUG = envbool("DEBUG", False)
SECRET_KEY = os.environ.get("PLAYGROUND_SECRET_KEY") or secret_file(
    VAR_DIR / "secret_key", new_secret_key
)
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS")


def _fernet_keys(raw: list[str]) -> list[str]:
    try:
        return crypto.validate_keys(raw)
    except crypto.InvalidMasterKey as exc:
        if exc.position is None:
            raise ImproperlyConfigured(f"PLAYGROUND_ENCRYPTION_KEYS: {exc}") from None
        raise ImproperlyConfigured(
            f"PLAYGROUND_ENCRYPTION_KEYS entry {exc.position + 1} {crypto.NOT_A_KEY}"
        ) from None


# The first key encrypts; every key decrypts, so a new key can be prepended and the old ones
# retired after `manage.py rotate_keys`.
if "PLAYGROUND_ENCRYPTION_KEYS" in os.environ:
    PLAYGROUND_ENCRYPTION_KEYS = _fernet_keys(envlist("PLAYGROUND_ENCRYPTION_KEYS"))
else:
    PLAYGROUND_ENCRYPTION_KEYS = _fernet_keys(
        [secret_file(VAR_DIR / "encryption_key", crypto.generate_key)]
    )

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_htmx",
    "template_partials",
    "django_tasks",
    "django_tasks_db",
    "playground.accounts",
    "playground.providers",
    "playground.chat",
    "playground.review",
    "playground.prompts",
    "playground.experiments",
    "playground.compare",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files, before anything that needs a session or a database. In the embedded
    # default nothing stands in front of Daphne, so this serves them: gzipped when the
    # browser accepts it, and cached for ten years (immutable) under their hashed names.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "playground.accounts.middleware.first_run_middleware",
    "playground.accounts.middleware.time_zone_middleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "playground.security.content_security_policy_middleware",
]

ROOT_URLCONF = "playground.urls"
ASGI_APPLICATION = "playground.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "playground.accounts.spaces.spaces",
                "playground.chat.budgets.header_warnings",
            ],
        },
    },
]

_database_url = envurl("DATABASE_URL", ("postgres", "postgresql", "sqlite"))
if _database_url:
    DATABASES = {
        "default": dj_database_url.parse(_database_url, conn_max_age=600, conn_health_checks=True)
    }
else:
    # WAL lets readers work while a run checkpoints; IMMEDIATE transactions plus a busy
    # timeout turn lock contention into a short wait instead of "database is locked".
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "db.sqlite3",
            # Reconnecting (and re-running the PRAGMAs) per ORM call cost a fifth of the CPU.
            "CONN_MAX_AGE": None,
            "OPTIONS": {
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
            },
        }
    }

_redis_url = envurl("REDIS_URL", ("redis", "rediss", "unix"))
if _redis_url:
    # Redis publish/subscribe: a group message is published once and each process hands it
    # to its own sockets. The list-based layer popped one message per round trip for all
    # of a process's sockets; at 200 streams its per-process list overflowed and dropped
    # frames (bench/relay.py, two processes).
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            # Publish/subscribe ignores Redis database numbers: deployments that share a
            # Redis server need prefixes of their own.
            "CONFIG": {
                "hosts": [{"address": _redis_url, "socket_timeout": 15}],
                "prefix": os.environ.get("PLAYGROUND_REDIS_PREFIX", "playground"),
            },
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "playground.layers.EmbeddedChannelLayer",
            "CONFIG": {"capacity": 1000},
        }
    }

# The cache holds what every process must agree on: failed-login counts and which runs are
# alive. With Redis it is shared (keys under the same prefix as the channel layer); the
# embedded default is one process, so its memory is enough.
PLAYGROUND_SHARED_CACHE = bool(_redis_url)
if _redis_url:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": _redis_url,
            "KEY_PREFIX": os.environ.get("PLAYGROUND_REDIS_PREFIX", "playground"),
            "OPTIONS": {"socket_timeout": 2, "socket_connect_timeout": 2},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

DEFAULT_EXCEPTION_REPORTER_FILTER = "playground.debug.AlwaysSafeExceptionReporterFilter"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Django's backend behind the failed-login limits (playground/accounts/backends.py).
AUTHENTICATION_BACKENDS = ["playground.accounts.backends.ThrottledModelBackend"]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# `manage.py collectstatic` (run by `make run`) copies every file here with a content hash in
# its name and a gzipped copy beside it. With DEBUG on, pages link the plain names and
# WhiteNoise serves them straight from the apps and static/, so development needs no collect.
STATIC_ROOT = VAR_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
MEDIA_ROOT = Path(os.environ.get("PLAYGROUND_MEDIA_ROOT", VAR_DIR / "media"))

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
if envbool("PLAYGROUND_HTTPS", False):
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    # Served over HTTPS only, so say so to browsers (HSTS) and send plain HTTP to HTTPS.
    # One year is what the browsers' preload list asks for; a first rollout can start lower
    # (docs/deploy.md). With these on, `manage.py check --deploy` reports nothing.
    SECURE_HSTS_SECONDS = envint("PLAYGROUND_HSTS_SECONDS", 31_536_000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("PLAYGROUND_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = envbool("PLAYGROUND_HSTS_PRELOAD", True)
    # Off where the proxy already redirects port 80 (the nginx example does); the deploy
    # check then reports security.W008, which is expected there.
    SECURE_SSL_REDIRECT = envbool("PLAYGROUND_SSL_REDIRECT", True)

# Failed sign-ins per username and per client address (and first-run / sign-up submissions per
# address) within LOCKOUT seconds, after which that name or address waits LOCKOUT seconds
# (playground/accounts/throttle.py).
PLAYGROUND_THROTTLE = {
    "PER_USERNAME": envint("PLAYGROUND_LOGIN_FAILURES_PER_USERNAME", 5),
    "PER_ADDRESS": envint("PLAYGROUND_LOGIN_FAILURES_PER_ADDRESS", 20),
    "LOCKOUT": envint("PLAYGROUND_LOGIN_LOCKOUT", 900),
}

# Self sign-up is off: the first visitor creates the admin, who adds everyone else.
PLAYGROUND_ALLOW_SIGNUP = envbool("PLAYGROUND_ALLOW_SIGNUP", False)


def _base_url_overrides(raw: list[str]) -> dict[str, str]:
    overrides = {}
    for item in raw:
        provider, sep, url = item.partition("=")
        if not sep or not url.startswith(("http://", "https://")):
            raise ImproperlyConfigured(
                "PLAYGROUND_PROVIDER_BASE_URLS entries look like provider=https://host/v1"
            )
        overrides[provider.strip()] = url.strip()
    return overrides


# Point a catalog provider somewhere else (a proxy, or the fake upstream in tests).
PLAYGROUND_PROVIDER_BASE_URLS = _base_url_overrides(envlist("PLAYGROUND_PROVIDER_BASE_URLS"))

# Custom endpoints on loopback and private addresses (a team's own GPU box). On by default in
# the embedded default (no DATABASE_URL), where the playground runs beside its model server;
# off by default otherwise: a production deployment turns it on deliberately. Link-local and
# cloud metadata addresses are refused either way (providers/netpolicy.py).
PLAYGROUND_ENDPOINT_ALLOW_PRIVATE = envbool("PLAYGROUND_ENDPOINT_ALLOW_PRIVATE", not _database_url)

# Runs: at most one frame per FRAME_INTERVAL to watchers, a database checkpoint of the text
# at most every CHECKPOINT_INTERVAL, a heartbeat write while the upstream is silent, and a
# streaming message without a checkpoint for STALE_AFTER seconds is marked interrupted.
PLAYGROUND_RUN = {
    "FRAME_INTERVAL": envfloat("PLAYGROUND_FRAME_INTERVAL", 0.05),
    # After a reply's first token, its upstream response is read at most once per READ_PACE
    # seconds, each read taking all that arrived meanwhile (providers.client.Timeouts.pace):
    # a token costs a fraction of a read instead of a whole one. 0 reads each chunk at once.
    "READ_PACE": envfloat("PLAYGROUND_READ_PACE", 0.05),
    # A turn waits up to this long for its reply's first text before writing its rows: a
    # provider that answers sooner has that text shown to the sender at once, in provisional
    # rows (chat/runs.py, EarlyText); a slower one gets its rows this much later. 0: off.
    "EARLY_TEXT_WAIT": envfloat("PLAYGROUND_EARLY_TEXT_WAIT", 0.005),
    "CHECKPOINT_INTERVAL": envfloat("PLAYGROUND_CHECKPOINT_INTERVAL", 2.0),
    "HEARTBEAT_INTERVAL": envfloat("PLAYGROUND_HEARTBEAT_INTERVAL", 15.0),
    "STALE_AFTER": envfloat("PLAYGROUND_STALE_AFTER", 60.0),
    "SNAPSHOT_TIMEOUT": envfloat("PLAYGROUND_SNAPSHOT_TIMEOUT", 2.0),
    # How long a socket trusts its access decision. Signals revoke it at once on every change
    # they see (chat/signals.py); this catches those they cannot (QuerySet.update, raw SQL).
    "REAUTH_INTERVAL": envfloat("PLAYGROUND_REAUTH_INTERVAL", 30.0),
    # Replies one user may have streaming at once, across all conversations.
    "MAX_RUNS_PER_USER": envint("PLAYGROUND_MAX_RUNS_PER_USER", 8),
    # Redis mode: each process renews a key per running reply that expires after ALIVE_TTL
    # seconds, so a reply whose process was killed is marked interrupted after that, not
    # after STALE_AFTER (playground/chat/liveness.py).
    "ALIVE_TTL": envfloat("PLAYGROUND_ALIVE_TTL", 10.0),
    # A reply's text plus reasoning is cut here (finish reason "length", with a note): far
    # above any catalog model's max output, it bounds a run's memory against a runaway stream.
    "MAX_REPLY_CHARS": envint("PLAYGROUND_MAX_REPLY_CHARS", 2_000_000),
}
# Compare and sweeps (playground/compare/). Columns side by side; a sweep's cells, over which
# it is refused and pointed to experiments; how many of a sweep's cells stream at once (also
# never more than MAX_RUNS_PER_USER, which every column and cell counts against).
PLAYGROUND_COMPARE = {
    "MAX_COLUMNS": envint("PLAYGROUND_COMPARE_MAX_COLUMNS", 6),
    "MAX_SWEEP_CELLS": envint("PLAYGROUND_SWEEP_MAX_CELLS", 48),
    "SWEEP_CONCURRENCY": envint("PLAYGROUND_SWEEP_CONCURRENCY", 4),
}
# The largest WebSocket message (and frame) Daphne takes, in bytes. Anything larger closes the
# socket with 1009 and a reason the page shows (playground/serving.py). The consumer answers
# messages over 400,000 characters, below this, with "That message is too large".
PLAYGROUND_MAX_SOCKET_MESSAGE_BYTES = envint("PLAYGROUND_MAX_SOCKET_MESSAGE_BYTES", 1024 * 1024)
# Seconds a Daphne process that got SIGTERM/SIGINT gives running replies to finish before it
# saves them as interrupted and exits (playground/chat/shutdown.py). Keep the deployment's stop
# timeout a few seconds longer.
PLAYGROUND_SHUTDOWN_GRACE = envfloat("PLAYGROUND_SHUTDOWN_GRACE", 10.0)
if PLAYGROUND_RUN["ALIVE_TTL"] <= PLAYGROUND_RUN["CHECKPOINT_INTERVAL"]:
    # A run streaming text checkpoints that often; only quieter ones are checked for a key.
    raise ImproperlyConfigured("PLAYGROUND_ALIVE_TTL must exceed PLAYGROUND_CHECKPOINT_INTERVAL")
# Background tasks (Django's tasks framework, backported): the ORM backend, so any number of
# `manage.py db_worker` processes share the queue through the database. Experiments use it.
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}
# Experiments (playground/experiments/): upload caps, the items one run makes (rows × variants
# × repeats, each capped alone: MAX_ROWS, 10, 10), how many items may run at once per
# endpoint across all workers (an endpoint's own setting, on its gate, overrides it), how long
# a worker's claim on an item lasts without renewal (a killed worker's item is retried by
# another after it), and the regex check's time limit.
PLAYGROUND_EXPERIMENTS = {
    "MAX_ROWS": envint("PLAYGROUND_DATASET_MAX_ROWS", 10_000),
    "MAX_UPLOAD_BYTES": envint("PLAYGROUND_DATASET_MAX_BYTES", 10 * 1024 * 1024),
    "MAX_ITEMS": envint("PLAYGROUND_EXPERIMENT_MAX_ITEMS", 10_000),
    "CONCURRENCY": envint("PLAYGROUND_EXPERIMENT_CONCURRENCY", 4),
    "LEASE": envfloat("PLAYGROUND_EXPERIMENT_LEASE", 30.0),
    # Drain tasks queued per run: each worker that picks one shares the run's items.
    "TASKS_PER_RUN": envint("PLAYGROUND_EXPERIMENT_TASKS_PER_RUN", 2),
    "RATE_LIMIT_RETRIES": envint("PLAYGROUND_EXPERIMENT_RATE_LIMIT_RETRIES", 5),
    "REGEX_TIMEOUT": envfloat("PLAYGROUND_EXPERIMENT_REGEX_TIMEOUT", 0.1),
    # Seconds between progress polls of a results page when there is no Redis.
    "POLL_INTERVAL": envfloat("PLAYGROUND_EXPERIMENT_POLL_INTERVAL", 2.0),
}
# Open WebSockets one Daphne process holds. Over it a socket is accepted and at once closed
# with code 4503, which the page shows and retries after a backoff, instead of the handshake
# timing out. An idle socket costs about 25 KB of RSS (bench `idle`), so 5,000 is ~125 MB:
# size it from memory and from how many sockets one process can connect within its timeout.
PLAYGROUND_MAX_SOCKETS = envint("PLAYGROUND_MAX_SOCKETS", 5000)
# Sockets of a process that may be opening (auth, transcript) at once; the rest wait, so a
# connect storm leaves the event loop free for the replies streaming meanwhile (pacing.py).
PLAYGROUND_OPENING_SOCKETS = envint("PLAYGROUND_OPENING_SOCKETS", 4)
if PLAYGROUND_OPENING_SOCKETS < 1:
    raise ImproperlyConfigured("PLAYGROUND_OPENING_SOCKETS must be at least 1")
if PLAYGROUND_MAX_SOCKETS < 1:
    raise ImproperlyConfigured("PLAYGROUND_MAX_SOCKETS must be at least 1")
# Image attachments: a byte cap, a pixel cap checked before decoding (decompression bombs),
# and the longest side images are downscaled to before they are sent.
PLAYGROUND_IMAGES = {
    "MAX_BYTES": envint("PLAYGROUND_MAX_IMAGE_BYTES", 10 * 1024 * 1024),
    "MAX_PIXELS": envint("PLAYGROUND_MAX_IMAGE_PIXELS", 50_000_000),
    "MAX_SIDE": envint("PLAYGROUND_IMAGE_MAX_SIDE", 1536),
    "MAX_PER_MESSAGE": envint("PLAYGROUND_MAX_IMAGES_PER_MESSAGE", 8),
    "MAX_PER_MINUTE": envint("PLAYGROUND_MAX_IMAGES_PER_MINUTE", 60),
}
PLAYGROUND_UPSTREAM = {
    "CONNECT_TIMEOUT": envfloat("PLAYGROUND_CONNECT_TIMEOUT", 10.0),
    "READ_TIMEOUT": envfloat("PLAYGROUND_READ_TIMEOUT", 120.0),
    "RETRY_AFTER_CAP": envfloat("PLAYGROUND_RETRY_AFTER_CAP", 20.0),
    "MAX_RETRIES": envint("PLAYGROUND_MAX_RETRIES", 2),
    # Seconds an idle upstream connection is kept for reuse; keep it under the providers' own
    # keep-alive timeout (5 s for uvicorn-based servers such as vLLM). See client.Timeouts.
    "KEEPALIVE_EXPIRY": envfloat("PLAYGROUND_KEEPALIVE_EXPIRY", 4.0),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        # httpx logs every request line at INFO; the URL carries no key, but keep it quiet.
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
    },
}

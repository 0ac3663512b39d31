"""The environment is read through helpers that fail loudly; secrets are made on first run."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from playground.env import envbool, envint, envlist, envurl, secret_file

ROOT = Path(__file__).resolve().parent.parent


def test_envbool_reads_the_usual_spellings_and_refuses_others(monkeypatch):
    monkeypatch.setenv("FLAG", "yes")
    assert envbool("FLAG") is True
    monkeypatch.setenv("FLAG", "0")
    assert envbool("FLAG") is False
    monkeypatch.setenv("FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="FLAG"):
        envbool("FLAG")


def test_envint_and_envurl_refuse_bad_values(monkeypatch):
    monkeypatch.setenv("N", "ten")
    with pytest.raises(ImproperlyConfigured, match="N must be a whole number"):
        envint("N", 1)
    monkeypatch.setenv("DATABASE_URL", "mysql://x")
    with pytest.raises(ImproperlyConfigured, match="DATABASE_URL"):
        envurl("DATABASE_URL", ("postgres", "postgresql"))


def test_envlist_splits_on_commas(monkeypatch):
    monkeypatch.setenv("HOSTS", "a.example, b.example,,")
    assert envlist("HOSTS") == ["a.example", "b.example"]


def test_secrets_are_generated_once_with_mode_0600(tmp_path):
    path = tmp_path / "var" / "secret"
    first = secret_file(path, lambda: "generated")
    second = secret_file(path, lambda: "other")
    assert first == second == "generated"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def run_settings(tmp_path, **env) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    environ.update(PLAYGROUND_VAR_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="playground.settings")
    environ.update(env)
    code = "import django; django.setup(); from django.conf import settings; print(settings.DEBUG)"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=environ, capture_output=True, text=True
    )


def test_the_embedded_default_generates_its_secrets_into_var(tmp_path):
    result = run_settings(tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"  # DEBUG is off unless asked
    for name in ("secret_key", "encryption_key"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600


def test_a_bad_encryption_key_stops_start_up_without_echoing_it(tmp_path):
    result = run_settings(tmp_path, PLAYGROUND_ENCRYPTION_KEYS="not-a-key-SECRETVALUE")
    assert result.returncode != 0
    assert "PLAYGROUND_ENCRYPTION_KEYS entry 1" in result.stderr
    assert "SECRETVALUE" not in result.stderr


def test_an_empty_encryption_key_list_stops_start_up(tmp_path):
    result = run_settings(tmp_path, PLAYGROUND_ENCRYPTION_KEYS=" , ")
    assert result.returncode != 0
    assert "PLAYGROUND_ENCRYPTION_KEYS: No encryption keys are configured" in result.stderr


def test_a_socket_cap_below_one_stops_start_up(tmp_path):
    result = run_settings(tmp_path, PLAYGROUND_MAX_SOCKETS="0")
    assert result.returncode != 0
    assert "PLAYGROUND_MAX_SOCKETS must be at least 1" in result.stderr


def test_the_second_of_two_keys_is_named_when_it_is_bad(tmp_path):
    from playground.accounts import crypto

    result = run_settings(
        tmp_path, PLAYGROUND_ENCRYPTION_KEYS=f"{crypto.generate_key()},x-SECRETVALUE"
    )
    assert result.returncode != 0
    assert "PLAYGROUND_ENCRYPTION_KEYS entry 2 is not a valid Fernet key" in result.stderr
    assert "SECRETVALUE" not in result.stderr


def test_the_generated_encryption_key_is_one_crypto_accepts(tmp_path):
    from playground.accounts import crypto

    assert run_settings(tmp_path).returncode == 0
    key = (tmp_path / "encryption_key").read_text().strip()
    assert crypto.validate_keys([key]) == [key]
    assert crypto.decrypt(crypto.encrypt("hello", keys=[key]), keys=[key]) == "hello"


def test_crypto_imports_before_django_is_set_up():
    # settings.py imports it while settings are still being read.
    code = "import playground.accounts.crypto as c; print(len(c.validate_keys([c.generate_key()])))"
    environ = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=environ, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"


def settings_values(tmp_path, *expressions: str, **env: str) -> list[str]:
    """Each expression (over `s`, the settings) as a fresh process sees it with `env`."""
    prints = "".join(f"print({e});" for e in expressions)
    code = f"import django; django.setup(); from django.conf import settings as s; {prints}"
    environ = dict(os.environ, PLAYGROUND_VAR_DIR=str(tmp_path), **env)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=environ, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_database_and_redis_urls_select_the_scaled_out_backends(tmp_path):
    out = settings_values(
        tmp_path,
        "s.DATABASES['default']['ENGINE']",
        "s.CHANNEL_LAYERS['default']['BACKEND']",
        DATABASE_URL="postgres://u@127.0.0.1:5432/test",
        REDIS_URL="redis://127.0.0.1:6379/0",
    )
    assert out == [
        "django.db.backends.postgresql",
        "channels_redis.pubsub.RedisPubSubChannelLayer",
    ]


def test_redis_mode_shares_the_cache_and_the_embedded_default_keeps_it_in_memory(tmp_path):
    shared = settings_values(
        tmp_path,
        "s.CACHES['default']['BACKEND']",
        "s.CACHES['default']['KEY_PREFIX']",
        "s.PLAYGROUND_SHARED_CACHE",
        REDIS_URL="redis://127.0.0.1:6379/0",
        PLAYGROUND_REDIS_PREFIX="team-a",
    )
    assert shared == ["django.core.cache.backends.redis.RedisCache", "team-a", "True"]
    environ_without_redis = {"REDIS_URL": ""}
    embedded = settings_values(
        tmp_path,
        "s.CACHES['default']['BACKEND']",
        "s.PLAYGROUND_SHARED_CACHE",
        **environ_without_redis,
    )
    assert embedded == ["django.core.cache.backends.locmem.LocMemCache", "False"]


def production_env(tmp_path, **extra: str) -> dict[str, str]:
    """What docs/deploy.md sets: DEBUG off, HTTPS, PostgreSQL, Redis, secrets from the
    environment, a public host name."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("PLAYGROUND_", "DEBUG"))}
    environ.update(
        DJANGO_SETTINGS_MODULE="playground.settings",
        PLAYGROUND_VAR_DIR=str(tmp_path),
        DATABASE_URL="postgres://playground:pw@127.0.0.1:5432/playground",
        REDIS_URL="redis://127.0.0.1:6379/0",
        PLAYGROUND_HTTPS="1",
        PLAYGROUND_SECRET_KEY="k" * 10
        + "-a-long-random-secret-key-for-the-deploy-check-0123456789",
        PLAYGROUND_ENCRYPTION_KEYS="2Y7pp0bD1h3UzI7zQl7vYH1Yq0mWkWm3k7Xo2wV3s1E=",
        ALLOWED_HOSTS="playground.example.com",
        CSRF_TRUSTED_ORIGINS="https://playground.example.com",
        **extra,
    )
    return environ


def deploy_check(environ: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
    )


def test_the_deploy_check_is_clean_in_production_without_silencing_anything(tmp_path):
    result = deploy_check(production_env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_switching_the_redirect_off_behind_a_redirecting_proxy_reports_only_that(tmp_path):
    result = deploy_check(production_env(tmp_path, PLAYGROUND_SSL_REDIRECT="0"))
    assert "security.W008" in result.stderr
    assert "1 issue (0 silenced)" in result.stderr


def test_hsts_seconds_come_from_the_environment(tmp_path):
    out = settings_values(
        tmp_path,
        "s.SECURE_HSTS_SECONDS",
        "s.SECURE_SSL_REDIRECT",
        PLAYGROUND_HTTPS="1",
        PLAYGROUND_HSTS_SECONDS="300",
    )
    assert out == ["300", "True"]


def test_the_redis_prefix_keeps_deployments_apart(tmp_path):
    out = settings_values(
        tmp_path,
        "s.CHANNEL_LAYERS['default']['CONFIG']['prefix']",
        REDIS_URL="redis://127.0.0.1:6379/0",
        PLAYGROUND_REDIS_PREFIX="team-a",
    )
    assert out == ["team-a"]

"""An experiment run seeded in a Stack's database, and `manage.py db_worker` processes to
drain it: the tasks framework as deployed (test_experiment_workers.py, test_experiment_redis.py).

The seed runs in `manage.py shell` against the stack's own database: a dataset of `rows`
rows with one variable `n` (0, 1, ...), an experiment with one variant on the fake upstream's
model (or the `variants` given) and the check "contains: tok", and a run started (its drain
tasks queued for the workers). bench/experiments.py seeds its runs here too."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from bench.stack import BIN, ROOT, Stack

MODEL = "empiriolabs:gemma-4-e4b"

_SEED = """
import json
from django.contrib.auth import get_user_model
from playground.accounts.models import ApiKey
from playground.experiments import checks, datasets, runner
from playground.experiments.models import Experiment
spec = json.loads(%r)
User = get_user_model()
if spec["user_id"] is None:
    user = User.objects.create_user(spec["username"])
    ApiKey.store(provider="empiriolabs", plaintext=spec["api_key"], user=user)
else:
    user = User.objects.get(pk=spec["user_id"])
parsed = datasets.Parsed(columns=["n"], rows=[
    {"variables": {"n": str(i)}, "expected": "", "notes": ""} for i in range(spec["rows"])])
dataset = datasets.create(user, None, spec["name"], parsed)
experiment = Experiment.objects.create(owner=user, name=spec["name"], dataset=dataset,
    prompt=spec["prompt"], variants=spec["variants"],
    checks=checks.parse("contains: tok"))
print("RUN", runner.start(experiment, user).pk)
"""


def start_run(
    stack: Stack,
    *,
    rows: int,
    name: str,
    prompt: str,
    user_id: int | None = None,
    username: str = "worker-test",
    api_key: str = "sk-worker-test",
    variants: list[dict] | None = None,
) -> int:
    """Seed the experiment and start its run; the run's id. With no `user_id`, a user
    `username` with an empiriolabs key `api_key` is created to start it. `variants`: the
    experiment's ({"model", "params"} each); by default one on MODEL."""
    spec = {
        "rows": rows,
        "name": name,
        "prompt": prompt,
        "variants": variants or [{"model": MODEL, "params": {}}],
        "user_id": user_id,
        "username": username,
        "api_key": api_key,
    }
    out = stack.manage("shell", "-c", _SEED % json.dumps(spec))
    return int(out.split("RUN", 1)[1].split()[0])


def db_worker(stack: Stack, log: Path | None = None) -> subprocess.Popen:
    """A `manage.py db_worker` process on the stack's database, polling every 0.2 s; its
    output goes to `log` (or nowhere)."""
    command = [
        str(BIN / "python"),
        "manage.py",
        "db_worker",
        "--no-reload",
        "--interval",
        "0.2",
        "--no-startup-delay",
    ]
    if log is None:
        return subprocess.Popen(
            command,
            cwd=ROOT,
            env=stack.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    with log.open("wb") as out:  # the child keeps its own copy of the file
        return subprocess.Popen(
            command, cwd=ROOT, env=stack.env, stdout=out, stderr=subprocess.STDOUT
        )

"""The experiments' background tasks (Django's tasks framework; `manage.py db_worker`)."""

from __future__ import annotations

import asyncio

from django_tasks import task

from playground.experiments import worker


@task()
def drain_run(run_id: int) -> int:
    """Run a run's items until none is left to claim; several of these share one run.

    The worker calls tasks synchronously; the items run concurrently on an event loop of
    this call's own, as a chat send's reply runs on Daphne's."""
    return asyncio.run(worker.drain(run_id))


@task()
def rejudge_run(run_id: int, user_id: int) -> int:
    """The judge checks of a finished run again, on its saved replies (see worker.rejudge)."""
    return asyncio.run(worker.rejudge(run_id, user_id))

"""The results page's socket (Redis mode): workers tell the run's group after each item, and
every page watching gets its progress and grid page again, at most once per MIN_INTERVAL.

It authorizes on connect through the same helper as the views, and again whenever this
user's access is revoked (chat/access.py) and before each redraw after REAUTH_INTERVAL."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http import Http404
from django.template.loader import render_to_string

from playground.chat import access, consumers
from playground.experiments import pages, progress
from playground.experiments.access import get_run_for_user
from playground.experiments.models import ExperimentRun

MIN_INTERVAL = 1.0  # seconds between redraws of one page: a 1,000-item run is 1,000 events
render = sync_to_async(render_to_string, thread_sensitive=False)


class RunProgressConsumer(consumers.SlottedConsumer):
    # Defaults for a socket turned away at capacity, which connect() sets nothing up for.
    group = ""
    pending: asyncio.Task | None = None

    async def connect(self) -> None:
        if not await self.take_slot():
            return
        self.user: Any = self.scope.get("user") or AnonymousUser()
        self.user_id: int = self.user.pk or 0
        self.run_id = int(self.scope["url_route"]["kwargs"]["pk"])
        query = parse_qs(self.scope.get("query_string", b"").decode())
        self.show = (query.get("show") or ["all"])[0]
        self.page: str | None = (query.get("page") or [""])[0] or None
        self.pending = None
        self.drawn_at = float("-inf")
        if not await self._allowed():
            self._give_back_slot()
            await self.close(code=4403)
            return
        self.group = progress.group_name(self.run_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        self.user_group = access.user_group(self.user_id)
        await self.channel_layer.group_add(self.user_group, self.channel_name)
        await self.accept()
        await self._draw()  # what finished between the page and this socket

    async def disconnect(self, code: int) -> None:
        self._give_back_slot()
        if self.pending is not None:
            self.pending.cancel()
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)
            await self.channel_layer.group_discard(self.user_group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None):
        pass  # the page only listens

    async def access_revoke(self, event: dict[str, Any]) -> None:
        if not await self._allowed():
            await self.close(code=4403)

    async def experiment_progress(self, event: dict[str, Any]) -> None:
        if self.pending is not None and not self.pending.done():
            return  # a redraw is already due; it reads the latest state
        wait = self.drawn_at + MIN_INTERVAL - time.monotonic()
        self.pending = asyncio.create_task(self._draw_after(max(0.0, wait)))

    async def _draw_after(self, wait: float) -> None:
        await asyncio.sleep(wait)
        due = time.monotonic() - self.checked_at > settings.PLAYGROUND_RUN["REAUTH_INTERVAL"]
        if due and not await self._allowed():
            await self.close(code=4403)
            return
        await self._draw()

    async def _allowed(self) -> bool:
        self.checked_at = time.monotonic()
        try:
            await database_sync_to_async(get_run_for_user)(self.user, self.run_id)
        except Http404:
            return False
        return True

    async def _draw(self) -> None:
        self.drawn_at = time.monotonic()
        context = await database_sync_to_async(_context)(
            self.user, self.run_id, self.show, self.page
        )
        if context is None:
            await self.close(code=4403)
            return
        await self.send(text_data=await render("experiments/run.html#live", context))
        if context["run"].status == ExperimentRun.Status.STOPPING:
            # Its workers may have died: the next look reaps it once their leases pass
            # (pages.run_context), as the page's poll does without Redis.
            self._look_again(settings.PLAYGROUND_EXPERIMENTS["POLL_INTERVAL"])

    def _look_again(self, wait: float) -> None:
        current = asyncio.current_task()
        if self.pending is None or self.pending.done() or self.pending is current:
            self.pending = asyncio.create_task(self._draw_after(wait))


def _context(user, run_id: int, show: str, page: str | None) -> dict[str, Any] | None:
    try:
        run = get_run_for_user(user, run_id)
    except Http404:
        return None
    return {**pages.run_context(user, run, show, page), "oob": True}

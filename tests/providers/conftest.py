"""Tests of the provider client alone (providers/), against the fake upstream.

These fixtures replace the root conftest's `upstream`, which belongs to the Django-bound tests
(it points the playground's catalog at the fake server): here the tests build their own
`Endpoint` from `upstream.base_url`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from playground.providers.client import aclose_clients
from tests.upstream import Behaviour, FakeUpstream


@pytest.fixture(scope="module")
def server() -> Iterator[FakeUpstream]:
    """One fake upstream for the module's tests."""
    with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture
def upstream(server: FakeUpstream) -> FakeUpstream:
    """The module's fake upstream with its log cleared and the default behaviour back."""
    server.reset()
    server.default = Behaviour()
    return server


@pytest.fixture(autouse=True)
async def close_clients() -> AsyncIterator[None]:
    """Pooled connections belong to the test's event loop: close them with it."""
    yield
    await aclose_clients()

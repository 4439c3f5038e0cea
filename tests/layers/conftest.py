"""The ``layer`` fixture: every layer API test runs against each backend registered in ``LAYER_FACTORIES``.

A factory is an async context manager that yields a ready layer with the given options and cleans up after it
(Redis backends use a key prefix of their own per test). Backends add themselves to the registry below.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tether.layers import InMemoryChannelLayer
from tether.layers.base import BaseChannelLayer


@contextlib.asynccontextmanager
async def inmemory_layer(**options: Any) -> AsyncIterator[BaseChannelLayer]:
    layer = InMemoryChannelLayer(**options)
    try:
        yield layer
    finally:
        await layer.flush()
        await layer.close()


async def eventually(condition: Callable[[], object], timeout: float = 5) -> None:
    """Poll ``condition`` until it holds, for what a layer's background reader does; fail after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


#: The shared Redis the tests may use (their own key prefix only); override with TETHER_TEST_REDIS_URL.
REDIS_URL = os.environ.get("TETHER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_layer_factory(class_name: str) -> Callable[..., contextlib.AbstractAsyncContextManager[BaseChannelLayer]]:
    """A factory for a tether Redis layer on ``REDIS_URL`` with a key prefix of its own, flushed afterwards."""

    @contextlib.asynccontextmanager
    async def redis_layer(**options: Any) -> AsyncIterator[BaseChannelLayer]:
        # Skip, not error, where the "redis" extra is not installed.
        redis = pytest.importorskip("tether.layers.redis", reason="the 'redis' extra of django-tether is not installed")

        options.setdefault("hosts", [REDIS_URL])
        options.setdefault("prefix", f"tether-test-{secrets.token_hex(6)}")
        layer = getattr(redis, class_name)(**options)
        try:
            yield layer
        finally:
            await layer.flush()
            await layer.close()

    return redis_layer


LAYER_FACTORIES: dict[str, Callable[..., contextlib.AbstractAsyncContextManager[BaseChannelLayer]]] = {
    "inmemory": inmemory_layer,
    "redis": redis_layer_factory("RedisChannelLayer"),
    "redis_pubsub": redis_layer_factory("RedisPubSubChannelLayer"),
}


@pytest.fixture(params=sorted(LAYER_FACTORIES))
def layer_factory(request):
    """Build a layer of the parametrised backend with options: ``async with layer_factory(capacity=2) as layer``."""
    return LAYER_FACTORIES[request.param]


@pytest.fixture
async def layer(layer_factory) -> AsyncIterator[BaseChannelLayer]:
    """A layer of the parametrised backend with default options."""
    async with layer_factory() as built:
        yield built

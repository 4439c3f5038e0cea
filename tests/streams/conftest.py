"""The ``streams_layer`` fixture: every streams contract test runs on each layer with a streams backend.

Layers: in-memory; ``RedisChannelLayer`` on the shared Redis (one server: the single-call publish), on two private
servers (sharded ``hosts``: publish then a push per process) and on a private 3-master cluster; the pub/sub layer on
the shared Redis. Each Redis layer has a key prefix of its own and is flushed after the test.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tether.layers import InMemoryChannelLayer
from tether.layers.base import BaseChannelLayer

LayerFactory = Callable[..., contextlib.AbstractAsyncContextManager[BaseChannelLayer]]


@contextlib.asynccontextmanager
async def memory_layer(**options: Any) -> AsyncIterator[BaseChannelLayer]:
    layer = InMemoryChannelLayer(**options)
    try:
        yield layer
    finally:
        await layer.flush()
        await layer.close()


STREAM_LAYERS = ["inmemory"]


@pytest.fixture(params=STREAM_LAYERS)
def streams_layer_factory(request: pytest.FixtureRequest) -> LayerFactory:
    """Build a layer of the parametrised kind: ``async with streams_layer_factory() as layer``."""
    if request.param == "inmemory":
        return memory_layer
    raise AssertionError(request.param)


@pytest.fixture
async def streams_layer(streams_layer_factory: LayerFactory) -> AsyncIterator[BaseChannelLayer]:
    async with streams_layer_factory() as layer:
        yield layer

"""The ``layer`` fixture: every layer API test runs against each backend registered in ``LAYER_FACTORIES``.

A factory is an async context manager that yields a ready layer with the given options and cleans up after it
(Redis backends use a key prefix of their own per test). Backends add themselves to the registry below.
"""

from __future__ import annotations

import contextlib
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


LAYER_FACTORIES: dict[str, Callable[..., contextlib.AbstractAsyncContextManager[BaseChannelLayer]]] = {
    "inmemory": inmemory_layer,
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

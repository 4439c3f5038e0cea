"""The ``streams_layer`` fixture: every streams contract test runs on each layer with a streams backend.

Layers: in-memory; ``RedisChannelLayer`` on the shared Redis (one server: the single-call publish), on two private
servers (sharded ``hosts``: publish then a push per process) and on a private 3-master cluster; the pub/sub layer on
the shared Redis and on the cluster (sharded pub/sub, published from the script). Each Redis layer has a key prefix of
its own and is flushed after the test.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Callable

import pytest

from tests.layers.conftest import REDIS_URL, inmemory_layer
from tests.layers.redis.conftest import (  # noqa: F401 - fixtures, and the hook registering the "slow" marker
    layer_on,
    pytest_configure,
    redis_cluster,
    redis_servers,
    shared_redis,
)
from tether.layers.base import BaseChannelLayer
from tether.layers.redis import RedisChannelLayer, RedisPubSubChannelLayer

LayerFactory = Callable[..., contextlib.AbstractAsyncContextManager[BaseChannelLayer]]


@contextlib.asynccontextmanager
async def redis_layer(layer_class: type, hosts: list[str]) -> AsyncIterator[BaseChannelLayer]:
    async with layer_on(layer_class, hosts=hosts) as layer:
        yield layer


STREAM_LAYERS = ["inmemory", "redis", "redis_sharded", "redis_cluster", "redis_pubsub", "redis_pubsub_cluster"]


@pytest.fixture(params=STREAM_LAYERS)
def streams_layer_factory(request: pytest.FixtureRequest) -> LayerFactory:
    """Build a layer of the parametrised kind: ``async with streams_layer_factory() as layer``."""
    kind = request.param
    if kind == "inmemory":
        return inmemory_layer
    if kind == "redis":
        return functools.partial(redis_layer, RedisChannelLayer, [REDIS_URL])
    if kind == "redis_pubsub":
        return functools.partial(redis_layer, RedisPubSubChannelLayer, [REDIS_URL])
    if kind == "redis_sharded":
        servers = request.getfixturevalue("redis_servers")
        hosts = [servers.start().url for _ in range(2)]
        return functools.partial(redis_layer, RedisChannelLayer, hosts)
    nodes = request.getfixturevalue("redis_cluster")
    layer_class = RedisPubSubChannelLayer if kind == "redis_pubsub_cluster" else RedisChannelLayer
    return functools.partial(redis_layer, layer_class, [{"address": nodes[0].url, "cluster": True}])


@pytest.fixture
async def streams_layer(streams_layer_factory: LayerFactory) -> AsyncIterator[BaseChannelLayer]:
    async with streams_layer_factory() as layer:
        yield layer

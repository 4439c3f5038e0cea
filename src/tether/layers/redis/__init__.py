"""Channel layers on Redis, for projects that run several processes or machines.

``RedisChannelLayer`` (lists and sorted sets: capacity, persistence while a process is away) is the default choice;
``RedisPubSubChannelLayer`` (Redis pub/sub: lower latency, nothing kept for a process that is not connected) is the
alternative. Both take channels_redis's options. See docs/channel-layers.md.
"""

from tether.layers.redis.core import RedisChannelLayer
from tether.layers.redis.pubsub import RedisPubSubChannelLayer

__all__ = ["RedisChannelLayer", "RedisPubSubChannelLayer"]

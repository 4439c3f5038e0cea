"""Django settings for the benchmark servers; the environment picks the stack and the channel layer.

``BENCH_STACK`` is ``tether`` or ``channels``; ``BENCH_LAYER`` is ``none``, ``inmemory``, ``redis`` or ``pubsub``;
``BENCH_REDIS_URL`` and ``BENCH_PREFIX`` point the Redis layers at the benchmark's own redis-server.
``BENCH_METRICS`` (``0`` or ``1``, for tether) installs the tether app and sets ``TETHER_METRICS`` to it, for
benchmarks/metrics.py's comparison of the two (make bench BENCH=metrics).
"""

import os

STACK = os.environ.get("BENCH_STACK", "tether")
LAYER = os.environ.get("BENCH_LAYER", "inmemory")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "")
PREFIX = os.environ.get("BENCH_PREFIX", "bench")

SECRET_KEY = "tether-benchmarks-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
INSTALLED_APPS: list[str] = []
if os.environ.get("BENCH_METRICS") in ("0", "1"):
    INSTALLED_APPS = ["tether"]
    TETHER_METRICS = os.environ["BENCH_METRICS"] == "1"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
ROOT_URLCONF = None
LOGGING_CONFIG = None

_BACKENDS = {
    ("tether", "inmemory"): "tether.layers.InMemoryChannelLayer",
    ("tether", "redis"): "tether.layers.redis.RedisChannelLayer",
    ("tether", "pubsub"): "tether.layers.redis.RedisPubSubChannelLayer",
    ("channels", "inmemory"): "channels.layers.InMemoryChannelLayer",
    ("channels", "redis"): "channels_redis.core.RedisChannelLayer",
    ("channels", "pubsub"): "channels_redis.pubsub.RedisPubSubChannelLayer",
}

if LAYER == "none":
    CHANNEL_LAYERS: dict = {}
else:
    _config: dict = {}
    if LAYER in ("redis", "pubsub"):
        _config = {"hosts": [REDIS_URL], "prefix": PREFIX}
    CHANNEL_LAYERS = {"default": {"BACKEND": _BACKENDS[STACK, LAYER], "CONFIG": _config}}

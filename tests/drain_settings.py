"""Settings of the servers that tests/test_drain.py stops: the test project's, with a short drain and its log shown,
and the Redis layer when ``TEST_DRAIN_REDIS_URL`` names a server."""

import os

from tests.settings import *  # noqa: F403

ASGI_APPLICATION = "tests.drain_app.application"
TETHER_DRAIN_WINDOW = float(os.environ.get("TEST_DRAIN_WINDOW", "2"))
TETHER_DRAIN_TIMEOUT = float(os.environ.get("TEST_DRAIN_TIMEOUT", "8"))
if os.environ.get("TEST_DRAIN_REDIS_URL"):  # the layer that has connections to close at shutdown
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "tether.layers.redis.RedisChannelLayer",
            "CONFIG": {"hosts": [os.environ["TEST_DRAIN_REDIS_URL"]], "prefix": f"drain-test-{os.getpid()}"},
        }
    }
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"tether.drain": {"handlers": ["stderr"], "level": "INFO"}},
}

"""Settings of the uvicorn subprocesses in tests/revocation/test_processes.py: the suite's settings and database,
with a Redis channel layer whose key prefix the test names in ``TETHER_REVOCATION_PREFIX``."""

import os

from tests.settings import *  # noqa: F403

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "tether.layers.redis.RedisChannelLayer",
        "CONFIG": {
            "hosts": [os.environ.get("TETHER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")],
            "prefix": os.environ["TETHER_REVOCATION_PREFIX"],
        },
    }
}
ROOT_URLCONF = "tests.revocation.support"
TETHER_FOLLOW_LOGIN = os.environ.get("TETHER_FOLLOW_LOGIN", "1") == "1"

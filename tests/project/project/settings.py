"""Settings of the test project. Environment variables let one test pick DEBUG and a Redis layer.

``PROJECT_DEBUG`` ("1" by default) sets DEBUG; ``PROJECT_REDIS_PREFIX`` switches the default channel layer from the
in-memory layer to tether's Redis layer on 127.0.0.1:6379 (or ``PROJECT_REDIS_URL``) with that key prefix, and
``PROJECT_CAPACITY`` sets its capacity. ``PROJECT_RATE_LIMITS`` (JSON) sets ``TETHER_RATE_LIMITS``.
``PROJECT_PRESENCE_TTL`` sets presence's ttl (``TETHER_PRESENCE``).
``PROJECT_METRICS=1`` turns tether's metrics on (flushed every 0.2 s), and ``PROJECT_STATUS=1`` adds the
``tether.status`` app (snapshots every 0.5 s). ``PROJECT_TRACING_FILE`` turns tracing on, with every span appended to
that file (asgi.py installs the exporter). Readiness tolerates 5 s of loop lag, so that
only the layer decides it in the tests.
"""

import json
import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "tether-test-project-not-secret"
DEBUG = os.environ.get("PROJECT_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]
USE_TZ = True

INSTALLED_APPS = [
    "tether",
    "django.contrib.staticfiles",
    "django.contrib.auth",
    "django.contrib.contenttypes",
]
MIDDLEWARE = []

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": BASE_DIR / "db.sqlite3",
        "TEST": {"NAME": BASE_DIR / "test-db.sqlite3"},
    }
}

if os.environ.get("PROJECT_REDIS_PREFIX"):
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "tether.layers.redis.RedisChannelLayer",
            "CONFIG": {
                "hosts": [os.environ.get("PROJECT_REDIS_URL", "redis://127.0.0.1:6379/0")],
                "prefix": os.environ["PROJECT_REDIS_PREFIX"],
            },
        }
    }
    if os.environ.get("PROJECT_CAPACITY"):
        CHANNEL_LAYERS["default"]["CONFIG"]["capacity"] = int(os.environ["PROJECT_CAPACITY"])
    if os.environ.get("PROJECT_DURABLE"):  # the jobs channel at least once, as tests/layers/redis set it up too
        CHANNEL_LAYERS["default"]["CONFIG"].update(
            durable=os.environ["PROJECT_DURABLE"].split(","), visibility_timeout=1, capacity=10_000
        )
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "tether.layers.InMemoryChannelLayer"}}

if os.environ.get("PROJECT_PRESENCE_TTL"):  # presence's heartbeat ttl, short for the tests (heartbeat: a quarter)
    TETHER_PRESENCE = {
        "ttl": float(os.environ["PROJECT_PRESENCE_TTL"]),
        "heartbeat": float(os.environ["PROJECT_PRESENCE_TTL"]) / 4,
    }

if os.environ.get("PROJECT_RATE_LIMITS"):
    TETHER_RATE_LIMITS = json.loads(os.environ["PROJECT_RATE_LIMITS"])

ASGI_APPLICATION = "project.asgi.application"
ROOT_URLCONF = "project.urls"
STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

TETHER_METRICS = os.environ.get("PROJECT_METRICS") == "1"
TETHER_METRICS_FLUSH_INTERVAL = 0.2
if os.environ.get("PROJECT_STATUS") == "1":
    INSTALLED_APPS.append("tether.status")
    TETHER_STATUS_INTERVAL = 0.5
TETHER_TRACING = bool(os.environ.get("PROJECT_TRACING_FILE"))
# Readiness tests are about the layer: a loop slowed by a loaded test machine must not make the server unready.
TETHER_HEALTH_MAX_LOOP_LAG = 5.0

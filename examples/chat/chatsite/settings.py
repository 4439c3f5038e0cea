"""Settings of the tether example project: chat rooms, mention notifications and a live dashboard.

Everything that differs between `make demo`, `make demo-redis` and the browser tests comes from the environment:

- ``CHAT_LAYER``: ``memory`` (default; one process, the dashboard ticker runs as a task inside the web server) or
  ``redis`` (several processes; the ticker runs in ``manage.py runworker dashboard-ticker``).
- ``CHAT_REDIS_URL``: the Redis server of the ``redis`` layer (default ``redis://127.0.0.1:6379/0``), and
  ``CHAT_REDIS_PREFIX`` the prefix of its keys (default ``tether-chat-example``).
- ``CHAT_DATABASE``: the SQLite file (default ``db.sqlite3`` next to ``manage.py``).
- ``CHAT_DEBUG``: ``1`` (default) or ``0``.
- ``CHAT_SECRET_KEY``: set it anywhere but on your own machine.
- ``CHAT_RECONNECT_MAX_MS``: the longest wait of the browser client between two reconnection attempts.
- ``CHAT_DASHBOARD_TICK``: seconds between two dashboard updates (default 1).
"""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("CHAT_SECRET_KEY", "tether-example-not-secret-change-me")
DEBUG = os.environ.get("CHAT_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = [
    # tether first, so that its `runserver` (ASGI, WebSockets) is the one manage.py runs.
    "tether",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "chat",
    "notifications",
    "dashboard",
    # The live status page in the admin (/admin/tether/status/) and `manage.py tether_status`; it reads the metrics.
    "tether.status",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "chatsite.urls"
# tether's counts (the status page reads them); /metrics/ is not mounted in the example.
TETHER_METRICS = True
ASGI_APPLICATION = "chatsite.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "chatsite.context_processors.client_options",
            ],
        },
    }
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("CHAT_DATABASE", str(BASE_DIR / "db.sqlite3")),
        # Several processes share the file under `make demo-redis`: wait for a lock rather than fail at once.
        "OPTIONS": {"timeout": 20},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
#: Serve static files from Django itself (see chatsite/static_files.py), so that plain uvicorn serves a complete
#: site. A real deployment serves them from a web server or a CDN and sets this to False.
CHAT_SERVE_STATIC = True

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "chat:lobby"
LOGOUT_REDIRECT_URL = "chat:lobby"

CHAT_LAYER = os.environ.get("CHAT_LAYER", "memory")
if CHAT_LAYER == "redis":
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "tether.layers.redis.RedisChannelLayer",
            "CONFIG": {
                "hosts": [os.environ.get("CHAT_REDIS_URL", "redis://127.0.0.1:6379/0")],
                "prefix": os.environ.get("CHAT_REDIS_PREFIX", "tether-chat-example"),
            },
        }
    }
    # The posting limit (ChatConsumer.post_rate) keeps its buckets in the same Redis, so it holds per user over
    # every process; with the in-memory layer it is kept in the one process.
    TETHER_RATE_LIMITS = {
        "store": os.environ.get("CHAT_REDIS_URL", "redis://127.0.0.1:6379/0"),
        "prefix": os.environ.get("CHAT_REDIS_PREFIX", "tether-chat-example") + "-ratelimit",
    }
elif CHAT_LAYER == "memory":
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "tether.layers.InMemoryChannelLayer",
        }
    }
else:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(f"CHAT_LAYER must be 'memory' or 'redis', not {CHAT_LAYER!r}.")

#: How much of each room's streams is kept (chat/streams.py): a room keeps its last 1,000 messages for a day, so a
#: reader away for less than that gets every message on return, in order; typing notices are worth seconds.
TETHER_STREAMS = {
    "chat.typing.*": {"max_length": 20, "max_age": 10},
    "chat.room.*": {"max_length": 1000, "max_age": 86400},
}

#: Where the dashboard's ticker runs: "in-process" (a task in the web server, which the in-memory layer needs,
#: since nothing outside the process can reach it) or "worker" (`manage.py runworker dashboard-ticker`).
DASHBOARD_TICKER = "worker" if CHAT_LAYER == "redis" else "in-process"
DASHBOARD_TICK_SECONDS = float(os.environ.get("CHAT_DASHBOARD_TICK", "1"))

#: Options for the browser client (tether.js), handed to every page.
CHAT_CLIENT_OPTIONS = {"maxDelay": int(os.environ.get("CHAT_RECONNECT_MAX_MS", "10000"))}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "tether": {"handlers": ["console"], "level": "INFO"},
        "chat": {"handlers": ["console"], "level": "INFO"},
        "notifications": {"handlers": ["console"], "level": "INFO"},
        "dashboard": {"handlers": ["console"], "level": "INFO"},
    },
}

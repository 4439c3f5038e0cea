"""Settings as a Channels project has them, plus the one line that moves it onto tether: ``install()`` first.

``"channels"`` stays in INSTALLED_APPS and the layer backend stays ``channels_redis.core.RedisChannelLayer``: the alias
makes both name tether's. ``COMPAT_DB`` (a SQLite file) and ``COMPAT_REDIS_PREFIX`` (the layer's key prefix on the
shared Redis) come from the test that starts the server, so each run has its own database and keys.
"""

import os

import tether.compat

tether.compat.install()

SECRET_KEY = "tether-compat-project-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True

INSTALLED_APPS = [
    "channels",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "compatproject",
]
MIDDLEWARE = []

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("COMPAT_DB", "compat-db.sqlite3"),
    }
}

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [("127.0.0.1", 6379)],
            "prefix": os.environ.get("COMPAT_REDIS_PREFIX", "tether-compat-project"),
        },
    }
}

ASGI_APPLICATION = "compatproject.asgi.application"
ROOT_URLCONF = "compatproject.urls"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

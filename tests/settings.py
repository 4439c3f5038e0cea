"""Django settings for tether's own test suite."""

import os
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent

SECRET_KEY = "tether-tests-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1", "[::1]"]
USE_TZ = True

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "tether",
    "django.contrib.staticfiles",
]

# The example project's apps (examples/chat), whose consumers tests/example/ tests with communicators.
sys.path.insert(0, str(BASE_DIR.parent / "examples" / "chat"))
INSTALLED_APPS += ["chat", "notifications", "dashboard"]

# TETHER_TEST_DB names another SQLite file, so that two test runs on one machine do not delete each other's database.
SQLITE_TEST_DB = str(os.environ.get("TETHER_TEST_DB") or BASE_DIR / "test-db.sqlite3")
# Under pytest-xdist each worker's test database is the TEST name with "_<worker>" added (pytest-django does it); the
# servers a test starts in subprocesses inherit PYTEST_XDIST_WORKER and open that same file through NAME.
_XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": f"{SQLITE_TEST_DB}_{_XDIST_WORKER}" if _XDIST_WORKER else SQLITE_TEST_DB,
        "TEST": {"NAME": SQLITE_TEST_DB},
    },
    # Used only by tests marked with databases=[..., "postgres"] (tests/test_auth_postgres.py, skipped when the
    # server is not reachable); nothing connects to it otherwise. The test database name is per process.
    "postgres": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "test",
        "USER": "postgres",
        "HOST": "127.0.0.1",
        "PORT": "5432",
        "TEST": {"NAME": f"test_tether_{os.getpid()}"},
    },
}

CHANNEL_LAYERS = {"default": {"BACKEND": "tether.layers.InMemoryChannelLayer"}}

ASGI_APPLICATION = "tests.asgi.application"
ROOT_URLCONF = "tests.urls"
STATIC_URL = "/static/"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
# Tests create and log in many users; the default PBKDF2 hasher would spend a third of a second on each password.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": []},
    }
]

"""A live status page in Django's admin, and ``manage.py tether_status``: what every process of the project is doing.

Add ``"tether.status"`` to ``INSTALLED_APPS`` (it needs ``TETHER_METRICS = True``, whose counts it reads), include
``tether.status.urls`` in the URLs before the admin's, and ``tether.status.routing.websocket_urlpatterns`` in the
WebSocket router behind ``AuthMiddlewareStack``; docs/observability.md shows all three.

Each serving process publishes a snapshot of itself (``tether.status.snapshot``) to the channel layer group
``tether.status`` every ``TETHER_STATUS_INTERVAL`` seconds (1 by default), from one task per process
(``tether.status.publisher``) that starts with the first connection the process serves. The admin page's consumer
and the command join that group and add up the latest snapshot of each process, so with the Redis layer they see
every process, and with the in-memory layer the one process that serves them.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from tether.limits import seconds_setting

__all__ = ["GROUP", "configure", "interval", "publish_from_running_loop", "publishing"]

#: The channel layer group every process publishes its snapshot to.
GROUP = "tether.status"

_DEFAULT_INTERVAL = 1.0

#: Whether this process publishes snapshots: set when the ``tether.status`` app is ready (read once per connection).
publishing = False


def interval() -> float:
    """Seconds between two snapshots of a process (``TETHER_STATUS_INTERVAL``, 1 by default)."""
    return seconds_setting("TETHER_STATUS_INTERVAL", _DEFAULT_INTERVAL)


def configure() -> None:
    """Check the settings and turn publishing on (called by the app's ``ready``).

    Raises ``ImproperlyConfigured`` when ``TETHER_METRICS`` is off (the snapshot is made of its counts) or when
    ``TETHER_STATUS_INTERVAL`` is not a positive number.
    """
    global publishing
    interval()
    if getattr(settings, "TETHER_METRICS", False) is not True:
        raise ImproperlyConfigured(
            "The tether.status app reads tether's metrics: set TETHER_METRICS = True (and install "
            "django-tether[metrics]), or remove 'tether.status' from INSTALLED_APPS."
        )
    publishing = True


def publish_from_running_loop() -> None:
    """Make sure this process's publisher runs (in the running loop if it must start): called per connection served
    while ``publishing``; a lock and an attribute check once it runs."""
    from tether.status.publisher import publisher_for_running_loop

    publisher_for_running_loop()

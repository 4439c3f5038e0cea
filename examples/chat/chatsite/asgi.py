"""The example's ASGI application: Django views over HTTP, consumers over WebSocket, the dashboard worker.

Serve it with ``python manage.py runserver`` in development, or ``uvicorn chatsite.asgi:application`` anywhere.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
# Build Django's application first: it sets Django up, so the consumers below can import models.
django_asgi_app = get_asgi_application()

import chat.routing  # noqa: E402
import dashboard.routing  # noqa: E402
import tether.status.routing  # noqa: E402
from tether.access_log import redact_tokens_in_access_log  # noqa: E402
from tether.auth import AuthMiddlewareStack  # noqa: E402
from tether.routing import ChannelNameRouter, ProtocolTypeRouter, URLRouter  # noqa: E402
from tether.security.websocket import AllowedHostsOriginValidator  # noqa: E402

# Under plain uvicorn too, a `?token=...` in a URL is written to the log as `token=[redacted]`.
redact_tokens_in_access_log()

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(
                URLRouter(
                    chat.routing.websocket_urlpatterns
                    + dashboard.routing.websocket_urlpatterns
                    # The admin status page's socket: the consumer refuses anyone but active staff.
                    + tether.status.routing.websocket_urlpatterns
                )
            )
        ),
        # Background work on named channels, served by `python manage.py runworker dashboard-ticker`.
        "channel": ChannelNameRouter(dashboard.routing.channel_routes),
    }
)

"""The test project's ASGI application, laid out as tether's docs recommend."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

if os.environ.get("PROJECT_TRACING_FILE"):  # TETHER_TRACING is on (settings.py): spans go to that file
    from project import spans_to_file

    spans_to_file.install(os.environ["PROJECT_TRACING_FILE"])

from django.core.asgi import get_asgi_application

django_application = get_asgi_application()

from django.urls import path  # noqa: E402
from project.consumers import EchoConsumer, JobWorker, ListenConsumer, PresenceRoomConsumer, StallConsumer  # noqa: E402

from tether.routing import ChannelNameRouter, ProtocolTypeRouter, URLRouter  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_application,
        "websocket": URLRouter(
            [
                path("ws/echo/", EchoConsumer.as_asgi()),
                path("ws/stall/<str:group>/", StallConsumer.as_asgi()),
                path("ws/listen/<str:group>/", ListenConsumer.as_asgi()),
                path("ws/presence/<str:room>/", PresenceRoomConsumer.as_asgi()),
            ]
        ),
        "channel": ChannelNameRouter({"jobs": JobWorker.as_asgi()}),
    }
)

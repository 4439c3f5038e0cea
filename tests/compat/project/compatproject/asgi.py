"""The ASGI application, as a Channels project writes it (``channels.routing``), served by tether's runserver."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "compatproject.settings")
django_application = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402 - after Django is set up
from django.urls import path  # noqa: E402

from compatproject import consumers  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_application,
        "websocket": URLRouter(
            [
                path("ws/api/", consumers.ApiConsumer.as_asgi()),
                path("ws/notes/", consumers.NoteConsumer.as_asgi()),
                path("ws/streams/", consumers.demultiplexer),
            ]
        ),
    }
)

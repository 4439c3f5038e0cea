"""The test project's ASGI application: Django views over HTTP, test consumers over WebSocket."""

import django

django.setup()

from django.core.asgi import get_asgi_application  # noqa: E402

from tests.consumers import websocket_urlpatterns  # noqa: E402
from tether.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": get_asgi_application(),
        "websocket": URLRouter(websocket_urlpatterns),
    }
)

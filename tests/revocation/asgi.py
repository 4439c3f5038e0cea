"""The ASGI application of the uvicorn subprocesses in tests/revocation/test_processes.py (settings
tests.revocation.settings)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.revocation.settings")

from django.core.asgi import get_asgi_application

django_application = get_asgi_application()

from tests.revocation.support import websocket_app  # noqa: E402
from tether.routing import ProtocolTypeRouter  # noqa: E402

application = ProtocolTypeRouter({"http": django_application, "websocket": websocket_app})

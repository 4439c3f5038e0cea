"""The ASGI application of the uvicorn subprocesses in tests/test_revocation.py (settings tests.revocation_settings)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.revocation_settings")

from django.core.asgi import get_asgi_application

django_application = get_asgi_application()

from tests.revocation_support import websocket_app  # noqa: E402
from tether.routing import ProtocolTypeRouter  # noqa: E402

application = ProtocolTypeRouter({"http": django_application, "websocket": websocket_app})

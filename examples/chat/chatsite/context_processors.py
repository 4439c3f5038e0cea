"""Template context shared by every page of the example."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest

__all__ = ["client_options"]


def client_options(request: HttpRequest) -> dict[str, Any]:
    """The options every page passes to the browser client (``CHAT_CLIENT_OPTIONS`` in settings)."""
    return {"client_options": settings.CHAT_CLIENT_OPTIONS}

"""The admin page: a Django admin view (``admin.site.admin_view``), so non-staff visitors meet the admin's login
page exactly as on any other admin page."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from tether import status
from tether.status.routing import PATH

__all__ = ["status_page"]


def _status_page(request: HttpRequest) -> HttpResponse:
    context: dict[str, Any] = {
        **admin.site.each_context(request),
        "title": "tether status",
        "websocket_path": getattr(settings, "TETHER_STATUS_WEBSOCKET_PATH", "/" + PATH),
        "interval": status.interval(),
    }
    return TemplateResponse(request, "tether/status.html", context)


#: The page, behind the admin's staff check (``admin_view`` also sets ``never_cache`` and CSRF protection).
status_page = admin.site.admin_view(_status_page)

"""``path("admin/tether/status/", include("tether.status.urls"))``, before ``path("admin/", admin.site.urls)``."""

from __future__ import annotations

from django.urls import path

from tether.status.views import status_page

__all__ = ["app_name", "urlpatterns"]

app_name = "tether_status"
urlpatterns = [path("", status_page, name="page")]

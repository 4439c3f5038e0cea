"""URLs of the example: the lobby and rooms, the dashboard, log in and out, the admin and tether's status page."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from chatsite.static_files import serve_static

urlpatterns = [
    path("", include("chat.urls")),
    path("dashboard/", include("dashboard.urls")),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    # tether's live status page, staff only; before the admin's own URLs, which would answer 404 for it.
    path("admin/tether/status/", include("tether.status.urls")),
    path("admin/", admin.site.urls),
]

if settings.CHAT_SERVE_STATIC:
    urlpatterns.append(path(settings.STATIC_URL.lstrip("/") + "<path:path>", serve_static))

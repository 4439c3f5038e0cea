from django.urls import path
from project import views

from tether.health import liveness_view, readiness_view
from tether.metrics.views import metrics_view

urlpatterns = [
    path("", views.index),
    path("users/", views.user_count),
    path("broadcast/<str:group>/", views.broadcast),
    path("healthz/", liveness_view),
    path("readyz/", readiness_view),
    # The IP allow-list of docs/observability.md: this machine may scrape, and nobody may scrape the private one.
    path("metrics/", views.allow_ips(["127.0.0.1", "::1"])(metrics_view)),
    path("private-metrics/", views.allow_ips(["192.0.2.10"])(metrics_view)),
]

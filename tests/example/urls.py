"""URLs for the example's consumer tests: the chat pages, which messages and notifications link to."""

from django.urls import include, path

urlpatterns = [path("", include("chat.urls"))]

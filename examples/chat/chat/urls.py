"""HTTP routes of the chat app."""

from __future__ import annotations

from django.urls import path

from chat import views

app_name = "chat"

urlpatterns = [
    path("", views.lobby, name="lobby"),
    path("rooms/new/", views.create_room, name="create_room"),
    path("chat/<slug:name>/", views.room, name="room"),
]

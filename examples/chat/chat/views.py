"""The lobby (list and open rooms) and the room page; the live parts are in the consumer and room.js."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.db.models import Count, Max
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from chat.forms import RoomForm
from chat.models import MAX_MESSAGE_LENGTH, Room

__all__ = ["create_room", "lobby", "room"]


def lobby(request: HttpRequest, form: RoomForm | None = None) -> HttpResponse:
    """Every room, with its message count and last activity, and the form to open a new one."""
    rooms = Room.objects.annotate(message_count=Count("messages"), last_message=Max("messages__created"))
    return render(request, "chat/lobby.html", {"rooms": rooms, "form": form or RoomForm()})


@login_required
@require_POST
def create_room(request: HttpRequest) -> HttpResponse:
    """Open a room and go there; an invalid name shows the lobby again with the form's errors."""
    form = RoomForm(request.POST)
    if not form.is_valid():
        return lobby(request, form)
    return redirect(form.save())


def room(request: HttpRequest, name: str) -> HttpResponse:
    """The page of one room; its messages arrive over the WebSocket."""
    found = get_object_or_404(Room, name=name)
    return render(request, "chat/room.html", {"room": found, "max_length": MAX_MESSAGE_LENGTH})

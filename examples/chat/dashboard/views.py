"""The dashboard page; its numbers arrive over the WebSocket."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

__all__ = ["dashboard"]


def dashboard(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/dashboard.html")

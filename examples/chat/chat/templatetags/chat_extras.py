"""Template filters of the chat pages."""

from __future__ import annotations

from datetime import datetime, timedelta

from django import template
from django.utils import timezone
from django.utils.timesince import timesince

__all__ = ["ago"]

register = template.Library()


@register.filter
def ago(moment: datetime | None) -> str:
    """ "just now" within the last minute, else "5 minutes ago" (Django's ``timesince``, one unit)."""
    if moment is None:
        return ""
    if timezone.now() - moment < timedelta(minutes=1):
        return "just now"
    return f"{timesince(moment, depth=1)} ago"

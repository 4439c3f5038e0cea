"""Notifications in the Django admin."""

from __future__ import annotations

from django.contrib import admin

from notifications.models import Notification


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ["created", "recipient", "message", "read"]
    list_filter = ["read"]
    list_select_related = ["recipient", "message__author", "message__room"]
    raw_id_fields = ["message"]

"""Ordinary Django code that notifies: a ``post_save`` receiver on chat messages.

It runs wherever a message is saved (a consumer, a view, the admin, a shell), stores one ``Notification`` per
mentioned user and pushes it to that user's group through the channel layer with ``async_to_sync``, once the
transaction has committed. A channel layer that cannot be reached costs the toast, never the message.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

from chat.models import Message
from notifications.groups import notification_group
from notifications.mentions import find_mentions
from notifications.models import Notification
from tether.exceptions import ChannelFull, LayerUnavailable
from tether.layers import get_channel_layer

__all__ = ["notify_mentions", "push_notification"]

logger = logging.getLogger("notifications.signals")


@receiver(post_save, sender=Message, dispatch_uid="notifications.notify_mentions")
def notify_mentions(sender: type[Message], instance: Message, created: bool, **kwargs: Any) -> None:
    """Store and push a notification for every active user that ``instance`` mentions, except its author."""
    if not created or kwargs.get("raw"):
        return
    names = [name for name in find_mentions(instance.text) if name != instance.author.get_username()]
    if not names:
        return
    users = get_user_model().objects.filter(username__in=names, is_active=True)
    for user in users:
        notification, _ = Notification.objects.get_or_create(recipient=user, message=instance)
        event = notification.as_event()
        transaction.on_commit(lambda user_id=user.pk, event=event: push_notification(user_id, event))


def push_notification(user_id: int, event: dict[str, Any]) -> None:
    """Send ``event`` to every open page of the user ``user_id``, from synchronous code."""
    layer = get_channel_layer()
    if layer is None:
        logger.warning("No channel layer configured: notification %s stays in the database only.", event["id"])
        return
    try:
        async_to_sync(layer.group_send)(notification_group(user_id), {"type": "notify.mention", "notification": event})
    except (LayerUnavailable, ChannelFull) as error:
        logger.warning("Could not push notification %s to user %s: %s", event["id"], user_id, error)

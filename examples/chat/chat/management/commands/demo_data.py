"""``manage.py demo_data``: give a new demo something to look at: a conversation spread over the last half hour."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from chat.models import Message, Room

#: (minutes ago, author, room, text); the authors are created without a usable password.
CONVERSATION = [
    (29, "ada", "general", "Morning all! Is anyone else trying the new tether release?"),
    (27, "grace", "general", "Yes, the chat example runs with one command: make demo."),
    (24, "linus", "help", "How do I send to a group from a Django view?"),
    (23, "grace", "help", "async_to_sync(get_channel_layer().group_send)(group, message), like the mentions do."),
    (19, "ada", "random", "The dashboard chart is plain SVG, no library at all."),
    (15, "linus", "general", "Restarted the server and every tab reconnected by itself. Nice."),
    (12, "grace", "general", "@ada the backoff has jitter, so they do not all come back at once."),
    (9, "ada", "general", "Exactly what I wanted to hear, thanks @grace"),
    (6, "linus", "help", "And with two processes?"),
    (5, "grace", "help", "Use the Redis layer: make demo-redis runs two uvicorn workers and the ticker worker."),
    (3, "ada", "random", "Anyone up for a coffee?"),
    (
        1,
        "linus",
        "general",
        "Posting from the admin works too: make yourself staff with `python manage.py demo_users demo --staff` "
        "(in examples/chat), then add a message at /admin/.",
    ),
]


class Command(BaseCommand):
    help = "Add a sample conversation over the last 30 minutes, unless the rooms have messages already."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--force", action="store_true", help="add it even when messages exist")

    def handle(self, *args: Any, force: bool, **options: Any) -> None:
        if Message.objects.exists() and not force:
            self.stdout.write("The rooms have messages already; no sample conversation added (use --force).")
            return
        User = get_user_model()
        now = timezone.now()
        for minutes_ago, username, room_name, text in CONVERSATION:
            author, created = User.objects.get_or_create(username=username)
            if created:
                author.set_unusable_password()
                author.save()
            room, _ = Room.objects.get_or_create(name=room_name)
            message = Message.objects.create(room=room, author=author, text=text)
            Message.objects.filter(pk=message.pk).update(created=now - timedelta(minutes=minutes_ago))
        self.stdout.write(f"Added a sample conversation of {len(CONVERSATION)} messages.")

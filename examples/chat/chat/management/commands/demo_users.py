"""``manage.py demo_users``: create (or reset) the users a demo logs in with, and print their credentials."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

DEFAULT_USERS = ["demo", "friend"]
DEFAULT_PASSWORD = "tether-demo"


class Command(BaseCommand):
    help = "Create or reset demo users with a known password, and print how to log in."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("usernames", nargs="*", default=DEFAULT_USERS, help="default: demo friend")
        parser.add_argument("--password", default=DEFAULT_PASSWORD, help=f"default: {DEFAULT_PASSWORD}")
        parser.add_argument("--staff", action="store_true", help="let them into the admin too")

    def handle(self, *args: Any, usernames: list[str], password: str, staff: bool, **options: Any) -> None:
        if not password:
            raise CommandError("--password must not be empty.")
        User = get_user_model()
        for username in usernames:
            user, created = User.objects.get_or_create(username=username)
            user.set_password(password)
            user.is_active = True
            if staff:
                user.is_staff = user.is_superuser = True
            user.save()
            verb = "Created" if created else "Reset"
            self.stdout.write(f"{verb} demo user: username {username!r}, password {password!r}")

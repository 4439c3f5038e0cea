"""``manage.py demo_users``: create the users a demo logs in with, and print their credentials.

An existing user keeps its password unless ``--reset`` asks otherwise: `make demo` runs this command on every start,
and setting the password again changes the hash every session is signed with, which would log every open page out
on each restart of the server.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

DEFAULT_USERS = ["demo", "friend"]
DEFAULT_PASSWORD = "tether-demo"


class Command(BaseCommand):
    help = "Create demo users with a known password (existing ones keep theirs), and print how to log in."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("usernames", nargs="*", default=DEFAULT_USERS, help="default: demo friend")
        parser.add_argument("--password", default=DEFAULT_PASSWORD, help=f"default: {DEFAULT_PASSWORD}")
        parser.add_argument("--staff", action="store_true", help="let them into the admin too")
        parser.add_argument(
            "--reset", action="store_true", help="set the password of existing users too (logs their sessions out)"
        )

    def handle(self, *args: Any, usernames: list[str], password: str, staff: bool, reset: bool, **options: Any) -> None:
        if not password:
            raise CommandError("--password must not be empty.")
        User = get_user_model()
        for username in usernames:
            user, created = User.objects.get_or_create(username=username)
            if created or reset:
                user.set_password(password)
            user.is_active = True
            if staff:
                user.is_staff = user.is_superuser = True
            user.save()
            if created:
                self.stdout.write(f"Created demo user: username {username!r}, password {password!r}")
            elif reset:
                self.stdout.write(f"Reset demo user: username {username!r}, password {password!r}")
            else:
                self.stdout.write(f"Demo user {username!r} exists; its password is unchanged (--reset sets it).")

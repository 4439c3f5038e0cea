"""The example's set-up commands, which `make demo` runs on every start: running them again must not undo a demo."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client, RequestFactory

from chat.management.commands.demo_data import CONVERSATION

pytestmark = pytest.mark.django_db


def demo_users(*args: str) -> str:
    out = io.StringIO()
    call_command("demo_users", *args, stdout=out)
    return out.getvalue()


def user_of_session(client: Client) -> User:
    """The user Django's auth middleware would find in the client's session (anonymous once the session is stale)."""
    request = RequestFactory().get("/")
    request.session = client.session
    return get_user(request)


def test_a_session_made_after_the_first_run_still_authenticates_after_the_second():
    demo_users("demo")
    client = Client()
    assert client.login(username="demo", password="tether-demo")
    hash_before = client.session[HASH_SESSION_KEY]

    output = demo_users("demo")

    assert "unchanged" in output
    user = user_of_session(client)
    assert user.is_authenticated and user.username == "demo"
    assert client.session[SESSION_KEY] == str(user.pk) and client.session[HASH_SESSION_KEY] == hash_before


def test_an_existing_user_keeps_its_password_unless_reset_is_given():
    demo_users("demo", "--password", "first")
    demo_users("demo", "--password", "second")
    assert User.objects.get(username="demo").check_password("first")

    demo_users("demo", "--password", "second", "--reset")
    assert User.objects.get(username="demo").check_password("second")


def test_staff_is_granted_to_an_existing_user_without_logging_it_out():
    demo_users("demo")
    client = Client()
    assert client.login(username="demo", password="tether-demo")

    demo_users("demo", "--staff")

    user = user_of_session(client)
    assert user.is_authenticated and user.is_staff


def test_the_sample_messages_that_invite_posting_from_the_admin_say_how_to_get_in():
    inviting = [text for _, _, _, text in CONVERSATION if "admin" in text.lower()]
    assert inviting
    for text in inviting:
        assert "demo_users demo --staff" in text

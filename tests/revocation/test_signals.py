"""What the signal receivers count as the end of a login: saved password changes, deactivations, deleted users, and
deleted sessions that held a login and had not expired. The revocations they ask for are recorded, not sent."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session

from tests.auth_support import create_user, session_cookie_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def revocations(monkeypatch: Any) -> list[tuple[str, str]]:
    """The revocations the receivers ask for, as (what, reason), instead of sending them."""
    from tether.revocation import signals

    asked: list[tuple[str, str]] = []
    monkeypatch.setattr(signals, "revoke_user", lambda user, reason: asked.append((f"user {user.pk}", reason)))
    monkeypatch.setattr(signals, "revoke_session", lambda key, reason: asked.append((f"session {key}", reason)))
    return asked


def test_only_a_saved_password_change_counts(revocations):
    alice = create_user("alice")
    alice.set_password("changed in memory")
    alice.last_login = None
    alice.save(update_fields=["last_login"])
    assert revocations == []
    alice.save()
    assert revocations == [(f"user {alice.pk}", "password_changed")]


def test_saving_an_unchanged_user_or_creating_one_counts_for_nothing(revocations):
    from django.contrib.auth.models import User

    alice = create_user("alice", is_active=False)
    alice.first_name = "Alice"
    alice.save()
    User.objects.get(pk=alice.pk).save()
    deferred = User.objects.only("username").get(pk=alice.pk)
    deferred.username = "alice2"
    deferred.save()
    assert revocations == []


def test_deactivation_and_deletion_count_once_each(revocations):
    from django.contrib.auth.models import User

    alice = create_user("alice")
    pk = alice.pk
    loaded = User.objects.get(pk=pk)
    loaded.is_active = False
    loaded.save(update_fields=["is_active"])
    loaded.save()
    loaded.delete()
    assert revocations == [(f"user {pk}", "inactive"), (f"user {pk}", "user_deleted")]


def test_deleted_sessions_count_only_when_someone_was_logged_in_and_they_had_not_expired(revocations):
    from django.core.management import call_command

    alice = create_user("alice")
    logged_in = session_cookie_for(alice)
    anonymous = SessionStore()
    anonymous["cart"] = [1]
    anonymous.save()
    expired = SessionStore(session_cookie_for(alice))
    expired.set_expiry(-10)
    expired.save()

    call_command("clearsessions")
    Session.objects.filter(session_key=anonymous.session_key).delete()
    assert revocations == []
    Session.objects.get(session_key=logged_in).delete()
    assert revocations == [(f"session {logged_in}", "session_ended")]

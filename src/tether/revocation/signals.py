"""What counts as the end of a login: the receivers ``TetherConfig.ready()`` connects (``connect_signals``).

A logout (``user_logged_out``), a deleted database session that held a login and had not expired (``post_delete``
of Django's ``Session``), a saved password change or deactivation, and a deleted user (``post_save``/``post_delete``
of the user model, which ``post_init`` lets compare with what was loaded, without a query).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from django.utils import timezone

from tether.revocation.publish import revoke_session, revoke_user

__all__ = ["connect_signals", "logged_out"]

#: Attribute a user instance carries from load to save: the password hash and is_active it was loaded with.
_LOADED = "_tether_loaded_login"


def _remember_login_fields(sender: Any, instance: Any, **kwargs: Any) -> None:
    """post_init of the user model: note the password and is_active, so a save can tell what changed."""
    fields = instance.__dict__
    instance.__dict__[_LOADED] = (fields.get("password"), fields.get("is_active"))


def _user_saved(sender: Any, instance: Any, created: bool, update_fields: Iterable[str] | None, **kwargs: Any) -> None:
    """post_save of the user model: a new password or ``is_active`` turned False ends the user's logins.

    Only what the save wrote counts: with ``update_fields``, a field left out keeps its stored value, whatever the
    instance holds.
    """
    fields = instance.__dict__
    saved = None if update_fields is None else frozenset(update_fields)
    loaded_password, loaded_active = fields.get(_LOADED, (None, None))
    password = fields.get("password") if saved is None or "password" in saved else loaded_password
    active = fields.get("is_active") if saved is None or "is_active" in saved else loaded_active
    fields[_LOADED] = (password, active)
    if created or instance.pk is None:
        return
    # A password that was deferred when the user was loaded is not known: it changed for sure only when the save
    # names it.
    known = loaded_password is not None or (saved is not None and "password" in saved)
    if password is not None and password != loaded_password and known:
        revoke_user(instance, reason="password_changed")
    elif loaded_active is not False and active is False:
        revoke_user(instance, reason="inactive")


def _user_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    """post_delete of the user model: a deleted user's logins end."""
    if instance.pk is not None:
        revoke_user(instance, reason="user_deleted")


#: Per thread, the session a logout just revoked, so that the deletion of its stored copy that follows (the flush)
#: is not broadcast a second time.
_just_logged_out = threading.local()


def logged_out(session_key: str) -> None:
    """Session ``session_key`` is being logged out (before its flush): revoke its sockets, reason ``"logout"``."""
    _just_logged_out.key = session_key
    revoke_session(session_key, reason="logout")


def _logged_out(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    """user_logged_out from a Django view: the request's session ends (tether's own logout() revokes by itself)."""
    key = getattr(getattr(request, "session", None), "session_key", None)
    if key:
        logged_out(key)


def _session_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    """post_delete of a database session: flushed, cycled or deleted by hand. Skips sessions nobody could be
    logged in by (no user in them, or expired, as ``clearsessions`` deletes them), so those cost no broadcast."""
    from django.contrib.auth import SESSION_KEY

    if getattr(_just_logged_out, "key", None) == instance.session_key:
        _just_logged_out.key = None
        return
    expire_date = getattr(instance, "expire_date", None)
    if expire_date is not None and expire_date <= timezone.now():
        return
    try:
        data = instance.get_decoded()
    except Exception:
        data = {}
    if SESSION_KEY in data:
        revoke_session(instance.session_key, reason="session_ended")


def connect_signals() -> None:
    """Connect the receivers that end the logins; called once from ``TetherConfig.ready()``.

    A project without ``django.contrib.auth`` (or whose ``AUTH_USER_MODEL`` is not installed: Django's own checks say
    so) has no logins to follow, and one without ``django.contrib.sessions`` no database sessions: their receivers are
    left out.
    """
    from django.apps import apps
    from django.contrib.auth import get_user_model, user_logged_out
    from django.core.exceptions import ImproperlyConfigured
    from django.db.models.signals import post_delete, post_init, post_save

    uid = "tether.revocation"
    if apps.is_installed("django.contrib.auth"):
        try:
            user_model = get_user_model()
        except ImproperlyConfigured:
            pass
        else:
            post_init.connect(_remember_login_fields, sender=user_model, dispatch_uid=uid)
            post_save.connect(_user_saved, sender=user_model, dispatch_uid=uid)
            post_delete.connect(_user_deleted, sender=user_model, dispatch_uid=uid)
            user_logged_out.connect(_logged_out, dispatch_uid=uid)
    if apps.is_installed("django.contrib.sessions"):
        from django.contrib.sessions.models import Session

        post_delete.connect(_session_deleted, sender=Session, dispatch_uid=uid)

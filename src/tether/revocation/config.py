"""The two settings of following logins, read once per process (and again when a test changes them)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.signals import setting_changed

from tether import DEFAULT_CHANNEL_LAYER

if TYPE_CHECKING:
    from tether.layers.base import BaseChannelLayer

__all__ = ["enabled", "layer_alias", "shared_layer"]

#: The two settings, read once (a missing setting costs 3 us to look up, on every connection) and forgotten when a
#: test changes them.
_settings_read: dict[str, Any] = {}


def _setting(name: str, default: Any) -> Any:
    """The setting ``name`` as first read (a lookup of a missing setting raises and catches inside Django)."""
    try:
        return _settings_read[name]
    except KeyError:
        value = _settings_read[name] = getattr(settings, name, default)
        return value


def _settings_changed(setting: str, **kwargs: Any) -> None:
    """A test changed a setting (``override_settings``): read it again."""
    if setting in {"TETHER_FOLLOW_LOGIN", "TETHER_FOLLOW_LOGIN_LAYER"}:
        _settings_read.clear()


setting_changed.connect(_settings_changed, dispatch_uid="tether.revocation.config")


def enabled() -> bool:
    """Whether logins are followed (``TETHER_FOLLOW_LOGIN``, default True)."""
    return bool(_setting("TETHER_FOLLOW_LOGIN", True))


def layer_alias() -> str:
    """The ``CHANNEL_LAYERS`` alias that carries revocations (``TETHER_FOLLOW_LOGIN_LAYER``, default ``"default"``)."""
    alias = _setting("TETHER_FOLLOW_LOGIN_LAYER", DEFAULT_CHANNEL_LAYER)
    if not isinstance(alias, str):
        raise TypeError(f"TETHER_FOLLOW_LOGIN_LAYER must name a layer of CHANNEL_LAYERS (a str), not {alias!r}.")
    return alias


def shared_layer() -> BaseChannelLayer | None:
    """The layer that reaches other processes, or None (no layer configured, or the in-memory layer)."""
    from tether.layers import get_channel_layer
    from tether.layers.inmemory import InMemoryChannelLayer

    layer = get_channel_layer(layer_alias())
    if layer is None or isinstance(layer, InMemoryChannelLayer):
        return None
    return layer

"""Reading ``TETHER_RATE_LIMITS`` and a consumer's ``rate_limits`` override: which buckets a connection meets.

Plain data and validation, no I/O. The setting is read once (and again when a test changes it); each consumer class's
limits are resolved once, at its first connection, so a connection of a consumer without limits pays one dict lookup
at its handshake and nothing per message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

from tether.ratelimit.rates import Rate, parse_rate

__all__ = [
    "CONNECT_LIMITS",
    "DEFAULT_PREFIX",
    "LIMITS",
    "MESSAGE_LIMITS",
    "SETTING",
    "ConsumerLimits",
    "RateLimitSettings",
    "check_overrides",
    "limits_for",
    "rate_limit_settings",
]

SETTING = "TETHER_RATE_LIMITS"
#: Handshakes per client address and per logged-in user.
CONNECT_LIMITS = ("connect_per_ip", "connect_per_user")
#: Client messages per connection and per logged-in user (over all the user's connections).
MESSAGE_LIMITS = ("messages_per_connection", "messages_per_user")
LIMITS = CONNECT_LIMITS + MESSAGE_LIMITS
#: The Redis keys' prefix unless the setting's ``"prefix"`` says otherwise.
DEFAULT_PREFIX = "tether-ratelimit"
_OPTIONS = ("store", "prefix", "trusted_proxies")
_EXAMPLE = f'{SETTING} = {{"connect_per_ip": "20/min", "messages_per_connection": "10/s"}}'


@dataclass(frozen=True)
class RateLimitSettings:
    """The project's limits (only those set) and where buckets live.

    ``store`` is ``"memory"`` (this process) or one Redis host entry, written as the Redis layer's ``hosts``
    entries are (a URL, or a dict with an ``address``); ``trusted_proxies`` is how many proxies in front of the
    server append to ``X-Forwarded-For`` (0: the header is ignored).
    """

    rates: Mapping[str, Rate] = field(default_factory=dict)
    store: Any = "memory"
    prefix: str = DEFAULT_PREFIX
    trusted_proxies: int = 0


def _fail(problem: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(f"{SETTING}: {problem}")


def _read_rate(where: str, value: Any) -> Rate | None:
    if value is None:
        return None
    try:
        return parse_rate(value)
    except ValueError as exc:
        raise _fail(f"{where}: {exc}") from None


def _read_store(store: Any) -> Any:
    if store == "memory":
        return store
    try:
        from tether.layers.redis.config import parse_hosts
    except ImportError:
        raise _fail(
            'a Redis "store" needs tether\'s redis extra (pip install -e ".[redis]" in a clone of tether); or use '
            '"store": "memory".'
        ) from None
    try:
        specs = parse_hosts([store])
    except (TypeError, ValueError) as exc:
        raise _fail(
            f'"store" is "memory" or one Redis host, such as "redis://127.0.0.1:6379/0" (as in the Redis layer\'s '
            f"hosts): {exc}"
        ) from None
    return specs[0]


def _read(value: Any) -> RateLimitSettings:
    if value is None:
        return RateLimitSettings()
    if not isinstance(value, Mapping):
        raise _fail(f"it must be a dict of limits, such as {_EXAMPLE}, not {type(value).__name__}.")
    unknown = sorted(str(key) for key in value if key not in LIMITS and key not in _OPTIONS)
    if unknown:
        raise _fail(f"unknown key(s) {unknown}: the limits are {list(LIMITS)}, the options {list(_OPTIONS)}.")
    rates = {name: rate for name in LIMITS if (rate := _read_rate(f'"{name}"', value.get(name))) is not None}
    prefix = value.get("prefix", DEFAULT_PREFIX)
    try:
        from tether.layers.redis.config import require_prefix

        prefix = require_prefix(prefix)
    except ImportError:  # without the redis extra there is no Redis store: any prefix is unused
        pass
    except ValueError as exc:
        raise _fail(f'"prefix": {exc}') from None
    proxies = value.get("trusted_proxies", 0)
    if type(proxies) is not int or proxies < 0:
        raise _fail(
            f'"trusted_proxies" is how many proxies in front of the server append to X-Forwarded-For (0 ignores the '
            f"header), not {proxies!r}."
        )
    return RateLimitSettings(rates, _read_store(value.get("store", "memory")), prefix, proxies)


_settings: RateLimitSettings | None = None


def rate_limit_settings() -> RateLimitSettings:
    """The checked ``TETHER_RATE_LIMITS`` (no limits when it is unset); ``ImproperlyConfigured`` naming what to fix."""
    global _settings
    if _settings is None:
        _settings = _read(getattr(settings, SETTING, None))
    return _settings


def check_overrides(owner: str, overrides: Any) -> dict[str, Rate | None]:
    """A consumer's ``rate_limits`` checked: limit names to rates, ``None`` turning a project limit off.

    ``owner`` names the class in the ``ImproperlyConfigured`` raised for an unknown name or a bad rate.
    """
    if not isinstance(overrides, Mapping):
        raise ImproperlyConfigured(
            f'{owner}.rate_limits must be a dict such as {{"messages_per_connection": "5/s"}}, not {overrides!r:.60}.'
        )
    unknown = sorted(str(key) for key in overrides if key not in LIMITS)
    if unknown:
        raise ImproperlyConfigured(
            f"{owner}.rate_limits has unknown limit(s) {unknown}; the limits are {list(LIMITS)}."
        )
    checked: dict[str, Rate | None] = {}
    for name, value in overrides.items():
        try:
            checked[name] = None if value is None else parse_rate(value)
        except ValueError as exc:
            raise ImproperlyConfigured(f'{owner}.rate_limits["{name}"]: {exc}') from None
    return checked


@dataclass(frozen=True)
class ConsumerLimits:
    """The limits one consumer class applies: a rate per limit name, and the bucket namespace of each.

    A limit taken from the setting shares the project's buckets (``namespace`` ``"project"``), so one address's
    handshakes count across every endpoint; a limit the class sets itself has buckets of its own (its dotted path).
    """

    rates: Mapping[str, Rate]
    namespaces: Mapping[str, str]
    connects: bool
    messages: bool


_by_class: dict[type, ConsumerLimits | None] = {}


def limits_for(consumer_class: type) -> ConsumerLimits | None:
    """The limits of ``consumer_class`` (its ``rate_limits`` over the setting), or ``None`` when it has none."""
    try:
        return _by_class[consumer_class]
    except KeyError:
        pass
    project = rate_limit_settings().rates
    overrides: Mapping[str, Rate | None] = getattr(consumer_class, "_checked_rate_limits", None) or {}
    rates: dict[str, Rate] = {}
    namespaces: dict[str, str] = {}
    own = f"{consumer_class.__module__}.{consumer_class.__qualname__}"
    for name in LIMITS:
        rate = overrides[name] if name in overrides else project.get(name)
        if rate is not None:
            rates[name] = rate
            namespaces[name] = own if name in overrides else "project"
    limits = None
    if rates:
        limits = ConsumerLimits(
            rates,
            namespaces,
            connects=any(name in rates for name in CONNECT_LIMITS),
            messages=any(name in rates for name in MESSAGE_LIMITS),
        )
    _by_class[consumer_class] = limits
    return limits


def _forget(*, setting: str, **kwargs: Any) -> None:
    global _settings
    if setting == SETTING:
        _settings = None
        _by_class.clear()


setting_changed.connect(_forget)

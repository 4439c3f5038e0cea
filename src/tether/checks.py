"""System checks (``manage.py check``) for the settings tether reads, so mistakes show before the first connection.

Every check is tagged ``"tether"`` (``manage.py check --tag tether`` runs only these) and its message says what to
change. They are registered when the ``tether`` app is ready, which means they run only with ``"tether"`` in
INSTALLED_APPS; ``docs/system-checks.md`` lists them all.

=========== ============================================================================================
id          problem
=========== ============================================================================================
E001        ``ASGI_APPLICATION`` is not set.
E002        ``ASGI_APPLICATION`` cannot be imported.
E003        ``ASGI_APPLICATION`` is not an ASGI application (not callable, or a consumer class).
E004        ``CHANNEL_LAYERS`` is not a dict of aliases.
E005        A ``CHANNEL_LAYERS`` entry is not a dict or has no ``BACKEND``.
E006        A layer ``BACKEND`` cannot be imported.
E007        A layer ``CONFIG`` or ``TEST_CONFIG`` is refused by the backend.
E008        ``TETHER_ALLOWED_ORIGINS`` is not a list of origins.
E009        ``TETHER_FOLLOW_LOGIN_LAYER`` names no layer of ``CHANNEL_LAYERS``.
E010        ``TETHER_MAX_MESSAGE_SIZE`` is not a positive number of bytes, a ping or handshake time is not a positive
            number of seconds, ``TETHER_OUTBOUND_QUEUE_SIZE`` is not a positive number of messages, or
            ``TETHER_SLOW_CLIENT_POLICY`` names no policy.
E011        ``TETHER_RATE_LIMITS`` is not a dict of readable rates and options.
E012        ``TETHER_DRAIN_WINDOW`` is not a number of seconds of at least 0, or ``TETHER_DRAIN_TIMEOUT`` is not a
            positive number of seconds at least as long as the window.
E013        ``TETHER_PRESENCE`` is not a dict of usable presence options (``ttl``, ``heartbeat``, ``batch_window``,
            ``max_metadata_size``).
E014        ``TETHER_STREAMS`` is not a dict of stream name patterns to bounds (``max_length``, ``max_age``).
W001        The in-memory layer while the environment asks for several server processes.
W002        Another app's ``runserver`` comes before tether's in INSTALLED_APPS.
W003        ``ALLOWED_HOSTS`` allows every host and ``TETHER_ALLOWED_ORIGINS`` is not set: any site's pages may
            open WebSockets with your users' cookies through ``AllowedHostsOriginValidator``.
W004        ``ALLOWED_HOSTS`` is empty with DEBUG off and ``TETHER_ALLOWED_ORIGINS`` is not set: every WebSocket
            handshake checked by ``AllowedHostsOriginValidator`` is refused.
=========== ============================================================================================
"""

from __future__ import annotations

import inspect
import os
import shlex
from collections.abc import Iterable, Mapping
from typing import Any

from django.conf import settings
from django.core import checks
from django.core.checks import CheckMessage, Error, register
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from tether.layers.inmemory import InMemoryChannelLayer
from tether.layers.manager import channel_layers
from tether.limits import (
    drain_timeout,
    drain_window,
    handshake_timeout,
    max_message_size,
    outbound_queue_size,
    slow_client_policy,
    ws_ping_interval,
    ws_ping_timeout,
)
from tether.ratelimit.config import rate_limit_settings
from tether.security.origins import ExactOrigins

__all__ = [
    "check_asgi_application",
    "check_channel_layers",
    "check_follow_login_layer",
    "check_in_memory_layer_with_several_processes",
    "check_limits",
    "check_rate_limits",
    "check_runserver_is_tethers",
    "check_websocket_origins",
    "worker_processes_from_environment",
]

TAG = "tether"

_REDIS_LAYER = "tether.layers.redis.RedisChannelLayer"


@register(TAG)
def check_asgi_application(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """E001-E003: ``ASGI_APPLICATION`` names an importable ASGI application."""
    from tether.routing import get_default_application

    dotted_path = getattr(settings, "ASGI_APPLICATION", None)
    if not dotted_path:
        return [
            Error(
                "ASGI_APPLICATION is not set, so runserver, runworker and the live server have nothing to serve.",
                hint="Set ASGI_APPLICATION = 'yourproject.asgi.application' in your settings.",
                id="tether.E001",
            )
        ]
    try:
        application = get_default_application()
    except Exception as exc:
        return [
            Error(
                f"ASGI_APPLICATION {dotted_path!r} cannot be imported: {exc}",
                hint="Correct the dotted path, or fix the error raised while importing that module.",
                id="tether.E002",
            )
        ]
    if inspect.isclass(application) and hasattr(application, "as_asgi"):
        return [
            Error(
                f"ASGI_APPLICATION {dotted_path!r} is the consumer class {application.__name__}, not an application.",
                hint=f"Point it at {application.__name__}.as_asgi(), or better at a ProtocolTypeRouter in asgi.py.",
                id="tether.E003",
            )
        ]
    if not callable(application):
        return [
            Error(
                f"ASGI_APPLICATION {dotted_path!r} is {type(application).__name__} {application!r:.80}, which is not "
                "an ASGI application (a callable taking scope, receive and send).",
                hint="Point it at the application object in asgi.py, such as 'yourproject.asgi.application'.",
                id="tether.E003",
            )
        ]
    return []


@register(TAG)
def check_channel_layers(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """E004-E007: every ``CHANNEL_LAYERS`` entry names an importable backend that accepts its configuration.

    The backend is built from ``CONFIG`` (and ``TEST_CONFIG`` when present) and thrown away; tether's layers
    connect to nothing until first used, so this needs no running Redis.
    """
    configs = getattr(settings, "CHANNEL_LAYERS", None)
    if configs is None:
        return []
    if not isinstance(configs, dict):
        return [
            Error(
                f"CHANNEL_LAYERS must be a dict of alias -> layer settings, not {type(configs).__name__}.",
                hint="Write CHANNEL_LAYERS = {'default': {'BACKEND': 'tether.layers.InMemoryChannelLayer'}}.",
                id="tether.E004",
            )
        ]
    errors: list[CheckMessage] = []
    for alias, config in configs.items():
        errors.extend(_check_layer(alias, config))
    return errors


def _check_layer(alias: Any, config: Any) -> list[CheckMessage]:
    where = f"CHANNEL_LAYERS[{alias!r}]"
    if not isinstance(config, dict) or not config.get("BACKEND"):
        return [
            Error(
                f"{where} must be a dict with a BACKEND, not {config!r:.80}.",
                hint=f"Write {where} = {{'BACKEND': 'tether.layers.InMemoryChannelLayer'}} for one process, or "
                f"{{'BACKEND': '{_REDIS_LAYER}', 'CONFIG': {{'hosts': ['redis://127.0.0.1:6379/0']}}}} for several.",
                id="tether.E005",
            )
        ]
    backend = config["BACKEND"]
    try:
        import_string(backend)
    except ImportError as exc:
        return [
            Error(
                f"{where}['BACKEND'] {backend!r} cannot be imported: {exc}",
                hint="Check the dotted path (tether's layers are 'tether.layers.InMemoryChannelLayer' and "
                f"'{_REDIS_LAYER}') and that the backend's package is installed "
                '(for Redis, tether\'s redis extra: pip install -e ".[redis]" in a clone of tether).',
                id="tether.E006",
            )
        ]
    errors: list[CheckMessage] = []
    builders = [("CONFIG", channel_layers.make_backend)]
    if "TEST_CONFIG" in config:
        builders.append(("TEST_CONFIG", channel_layers.make_test_backend))
    for key, build in builders:
        try:
            build(alias)
        except Exception as exc:
            errors.append(
                Error(
                    f"{where}['{key}'] is refused by {backend}: {exc}",
                    hint=f"Correct the options in {where}['{key}'] (see the layer's documentation for the names "
                    "and types it accepts).",
                    id="tether.E007",
                )
            )
    return errors


def worker_processes_from_environment(environ: Mapping[str, str] | None = None) -> tuple[int, str] | None:
    """The largest number of server processes the environment asks for, and where it was found, or None.

    Read from ``WEB_CONCURRENCY`` (uvicorn's and gunicorn's default worker count), ``UVICORN_WORKERS``,
    ``GRANIAN_WORKERS`` (granian's ``--workers``) and the ``-w``/``--workers`` option in ``GUNICORN_CMD_ARGS``. Values
    that are not whole numbers are ignored.
    """
    if environ is None:
        environ = os.environ
    found: list[tuple[int, str]] = []
    for name in ("WEB_CONCURRENCY", "UVICORN_WORKERS", "GRANIAN_WORKERS"):
        value = _whole_number(environ.get(name))
        if value is not None:
            found.append((value, f"{name}={value}"))
    gunicorn_args = environ.get("GUNICORN_CMD_ARGS")
    if gunicorn_args:
        try:
            words = shlex.split(gunicorn_args)
        except ValueError:
            words = []
        for index, word in enumerate(words):
            value = None
            if word in ("-w", "--workers") and index + 1 < len(words):
                value = _whole_number(words[index + 1])
            elif word.startswith("--workers="):
                value = _whole_number(word.partition("=")[2])
            elif word.startswith("-w") and len(word) > 2:
                value = _whole_number(word[2:])
            if value is not None:
                found.append((value, f"GUNICORN_CMD_ARGS workers={value}"))
    return max(found, default=None)


def _whole_number(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


@register(TAG)
def check_in_memory_layer_with_several_processes(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """W001: the in-memory layer cannot connect the processes that the environment asks the server to start."""
    processes = worker_processes_from_environment()
    if processes is None or processes[0] <= 1:
        return []
    configs = getattr(settings, "CHANNEL_LAYERS", None)
    if not isinstance(configs, dict):
        return []
    warnings: list[CheckMessage] = []
    for alias, config in configs.items():
        backend = config.get("BACKEND") if isinstance(config, dict) else None
        try:
            backend_class = import_string(backend) if isinstance(backend, str) else None
        except ImportError:
            continue  # E006 reports it.
        if inspect.isclass(backend_class) and issubclass(backend_class, InMemoryChannelLayer):
            warnings.append(
                checks.Warning(
                    f"CHANNEL_LAYERS[{alias!r}] is the in-memory layer, but the environment asks for "
                    f"{processes[0]} server processes ({processes[1]}). Each process would have its own layer: "
                    "group messages and channel sends would not reach connections served by the other processes.",
                    hint=f"Use a layer that processes share, such as '{_REDIS_LAYER}', or run one process.",
                    id="tether.W001",
                )
            )
    return warnings


@register(TAG)
def check_follow_login_layer(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """E009: the layer named to carry revocations (docs/sessions-and-auth.md) is not configured, so logouts would
    close the sockets of their own process only, silently."""
    if not getattr(settings, "TETHER_FOLLOW_LOGIN", True) or not hasattr(settings, "TETHER_FOLLOW_LOGIN_LAYER"):
        return []
    alias = settings.TETHER_FOLLOW_LOGIN_LAYER
    configs = getattr(settings, "CHANNEL_LAYERS", None)
    if isinstance(alias, str) and isinstance(configs, dict) and alias in configs:
        return []
    return [
        Error(
            f"TETHER_FOLLOW_LOGIN_LAYER is {alias!r}, which names no layer of CHANNEL_LAYERS, so a logout would "
            "close the sockets of its own process only.",
            hint="Set it to an alias of CHANNEL_LAYERS (a layer the processes share), or remove it to use 'default'.",
            id="tether.E009",
        )
    ]


@register(TAG)
def check_runserver_is_tethers(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """W002: another app earlier in INSTALLED_APPS provides ``runserver``, so tether's would never run."""
    from django.core.management import get_commands

    provider = get_commands().get("runserver")
    if provider in (None, "tether", "django.core"):
        return []
    return [
        checks.Warning(
            f"manage.py runserver comes from {provider!r}, which is listed before 'tether' in INSTALLED_APPS, so "
            "tether's runserver (uvicorn, WebSockets from ASGI_APPLICATION) never runs.",
            hint=f"Move 'tether' above {provider!r} in INSTALLED_APPS.",
            id="tether.W002",
        )
    ]


_ORIGINS_SETTING = "TETHER_ALLOWED_ORIGINS"
_EXACT_HINT = (
    f"List the origins of your pages in {_ORIGINS_SETTING} (such as ['https://example.com']) and wrap your "
    "WebSocket routes in tether.security.websocket.ExactOriginValidator (see docs/security.md). If no WebSocket route "
    "trusts the session cookie, silence this check."
)


@register(TAG)
def check_websocket_origins(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """E008, W003, W004: where WebSocket handshakes may come from.

    With ``TETHER_ALLOWED_ORIGINS`` set, its entries are checked (E008) and ``ALLOWED_HOSTS`` is not looked at: the
    project has chosen exact origins. Without it, ``AllowedHostsOriginValidator`` (the validator Channels projects
    use) follows ``ALLOWED_HOSTS``, whose ``"*"`` lets any site's pages in (W003), and whose emptiness with DEBUG off
    lets none in (W004).
    """
    configured = getattr(settings, _ORIGINS_SETTING, None)
    if configured is not None:
        return _check_allowed_origins(configured)
    hosts = getattr(settings, "ALLOWED_HOSTS", None) or []
    if "*" in hosts:
        return [
            checks.Warning(
                "ALLOWED_HOSTS contains '*', so AllowedHostsOriginValidator lets pages on any site open WebSockets "
                "with your users' cookies (cross-site WebSocket hijacking), and no exact-origin setting "
                f"({_ORIGINS_SETTING}) is configured.",
                hint=_EXACT_HINT,
                id="tether.W003",
            )
        ]
    if not hosts and not settings.DEBUG:
        return [
            checks.Warning(
                "ALLOWED_HOSTS is empty and DEBUG is off, so AllowedHostsOriginValidator refuses every WebSocket "
                f"handshake, and no exact-origin setting ({_ORIGINS_SETTING}) is configured.",
                hint=f"Set ALLOWED_HOSTS to your site's host names, or {_EXACT_HINT[0].lower()}{_EXACT_HINT[1:]}",
                id="tether.W004",
            )
        ]
    return []


def _check_allowed_origins(configured: Any) -> list[CheckMessage]:
    if isinstance(configured, (str, bytes, Mapping)) or not isinstance(configured, Iterable):
        problem = f"{_ORIGINS_SETTING} must be a list of origins, not {type(configured).__name__} {configured!r:.80}."
    else:
        try:
            ExactOrigins(list(configured), _ORIGINS_SETTING)
        except (TypeError, ValueError) as exc:
            problem = str(exc)
        else:
            return []
    return [
        Error(
            problem,
            hint=f"Write {_ORIGINS_SETTING} = ['https://example.com', 'https://*.example.com'], one entry per origin "
            "(scheme://host[:port]) of the pages that open WebSockets.",
            id="tether.E008",
        )
    ]


@register(TAG)
def check_limits(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """E010: a limit setting is not a positive number (the server would refuse to start)."""
    errors: list[CheckMessage] = []
    for read in (
        max_message_size,
        ws_ping_interval,
        ws_ping_timeout,
        handshake_timeout,
        outbound_queue_size,
        slow_client_policy,
    ):
        try:
            read()
        except ImproperlyConfigured as exc:
            errors.append(Error(str(exc), hint="Remove the setting to keep the default.", id="tether.E010"))
    return errors


@register(TAG)
def check_drain(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """E012: the drain's window or timeout is not a usable number of seconds (a stopping server would use defaults)."""
    for read in (drain_window, drain_timeout):
        try:
            read()
        except ImproperlyConfigured as exc:
            return [
                Error(
                    str(exc),
                    hint="Remove TETHER_DRAIN_WINDOW and TETHER_DRAIN_TIMEOUT to keep the defaults (10 and 20 s).",
                    id="tether.E012",
                )
            ]
    return []


@register(TAG)
def check_rate_limits(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """E011: ``TETHER_RATE_LIMITS`` cannot be read (the first handshake of a limited consumer would raise)."""
    try:
        rate_limit_settings()
    except ImproperlyConfigured as exc:
        return [
            Error(
                str(exc),
                hint='Write rates as "count/period" ("20/min", "10/s", "3/10s", "10/s burst 50"); see '
                "docs/limits.md#rate-limits for the names and options.",
                id="tether.E011",
            )
        ]
    return []


@register(TAG)
def check_presence(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """E013: ``TETHER_PRESENCE`` cannot be used (the first ``get_presence()`` would raise)."""
    from tether.presence.base import check_settings

    try:
        check_settings()
    except (TypeError, ValueError) as exc:
        return [
            Error(
                str(exc),
                hint="Remove TETHER_PRESENCE to keep the defaults (ttl 20, heartbeat 5, batch_window 0.05 s).",
                id="tether.E013",
            )
        ]
    return []


@register(TAG)
def check_streams(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """E014: ``TETHER_STREAMS`` cannot be used (the first ``get_streams()`` would raise)."""
    from tether.streams.settings import settings_policy

    try:
        settings_policy()
    except (TypeError, ValueError) as exc:
        return [
            Error(
                str(exc),
                hint='Write it as {"chat.*": {"max_length": 1000, "max_age": 3600}}, or remove it to keep the '
                "defaults (max_length 1000, max_age 86400 s).",
                id="tether.E014",
            )
        ]
    return []

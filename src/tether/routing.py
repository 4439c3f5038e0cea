"""Routers: pick the ASGI application that serves a connection, by protocol, URL path or worker channel.

A tether project is one ASGI application built from these routers. ``ProtocolTypeRouter`` splits traffic by
``scope["type"]`` (``http``, ``websocket``, ``channel``), ``URLRouter`` matches Django URL patterns against the path
and tells the consumer what it captured in ``scope["url_route"]``, and ``ChannelNameRouter`` serves background
workers by channel name. ``get_default_application`` loads the project's application from ``ASGI_APPLICATION``.

Three choices differ from Channels, none of which a Channels program can trip over:

* ``ProtocolTypeRouter`` answers the ASGI lifespan protocol itself when ``"lifespan"`` is not mapped, so servers such
  as uvicorn start and stop without complaints; at shutdown it closes the channel layers (``tether.drain``).
* ``URLRouter`` finds a nested router through middleware. A ``path("chat/", AuthMiddlewareStack(URLRouter([...])))``
  route is a prefix route because the router is found by following the wrappers' ``inner`` / ``app`` /
  ``application`` attributes, where Channels only looks for a private attribute on the route's own callback.
* A WebSocket handshake for a path that no route matches gets HTTP 404 (``tether.denial``) where the server offers
  the ASGI denial response extension, instead of the ``ValueError`` that the server turns into a 500 and a
  traceback. Without the extension (and for HTTP) the ``ValueError`` stays.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.urls.exceptions import Resolver404
from django.urls.resolvers import RegexPattern, RoutePattern, URLPattern, URLResolver

from tether.denial import send_denial, supports_denial_response
from tether.drain import close_channel_layers
from tether.types import ASGIApp, Receive, Scope, Send

__all__ = ["ChannelNameRouter", "ProtocolTypeRouter", "URLRouter", "get_default_application"]

logger = logging.getLogger("tether.routing")

#: Attributes that ASGI wrappers conventionally keep the application they wrap in: ``BaseMiddleware(inner)`` stores
#: ``inner``; origin validators and many third-party middlewares store ``application`` or ``app``.
_WRAPPED_APP_ATTRIBUTES = ("inner", "app", "application")

#: How many wrappers deep ``URLRouter`` looks for a nested router; real stacks are a handful deep.
_MAX_WRAPPER_DEPTH = 32


def get_default_application() -> ASGIApp:
    """Import and return the application named by the ``ASGI_APPLICATION`` setting.

    The setting is a dotted path ``"package.module.name"``. Raises ``ImproperlyConfigured`` when the setting is
    missing or empty, is not a dotted path, names a module that cannot be imported (the import error is quoted), or
    names an attribute the module does not have.
    """
    dotted_path = getattr(settings, "ASGI_APPLICATION", None)
    if not dotted_path:
        raise ImproperlyConfigured(
            "ASGI_APPLICATION is not set. Set it in your settings to the dotted path of your ASGI application, "
            "for example ASGI_APPLICATION = 'myproject.asgi.application'."
        )
    if not isinstance(dotted_path, str) or "." not in dotted_path.strip("."):
        raise ImproperlyConfigured(
            f"ASGI_APPLICATION must be a dotted path such as 'myproject.asgi.application', not {dotted_path!r}."
        )
    module_path, _, name = dotted_path.rpartition(".")
    try:
        module = importlib.import_module(module_path)
    except ImportError as exc:
        raise ImproperlyConfigured(
            f"Cannot import the module {module_path!r} of ASGI_APPLICATION {dotted_path!r}: {exc}. "
            f"Check the setting and that the module imports cleanly."
        ) from exc
    try:
        application: ASGIApp = getattr(module, name)
    except AttributeError as exc:
        raise ImproperlyConfigured(
            f"ASGI_APPLICATION is {dotted_path!r}, but the module {module_path!r} has no attribute {name!r}. "
            f"Define it there or correct the setting."
        ) from exc
    return application


def _check_application(app: Any, where: str) -> None:
    """Refuse, at construction, a route target that can never serve a connection, with a message saying why."""
    if inspect.isclass(app) and hasattr(app, "as_asgi"):
        raise ImproperlyConfigured(
            f"{where} routes to the consumer class {app.__module__}.{app.__qualname__}; route to "
            f"{app.__name__}.as_asgi() instead, which builds one consumer instance per connection."
        )
    if not callable(app):
        raise ImproperlyConfigured(
            f"{where} routes to {app!r}, which is not an ASGI application (a callable taking scope, receive, send)."
        )


class ProtocolTypeRouter:
    """Dispatch each connection to the application mapped to its ``scope["type"]``.

    ``application_mapping`` maps protocol types (``"http"``, ``"websocket"``, ``"channel"``, ``"lifespan"``, ...) to
    ASGI applications. A scope whose type is not mapped raises ``ValueError`` naming it and the mapped types, except
    ``"lifespan"``: when it is not mapped, the router answers the lifespan protocol itself (startup and shutdown both
    complete at once), so ASGI servers start cleanly. Map ``"lifespan"`` to take over startup and shutdown.
    """

    def __init__(self, application_mapping: Mapping[str, ASGIApp]) -> None:
        for protocol, app in application_mapping.items():
            _check_application(app, f"ProtocolTypeRouter entry {protocol!r}")
        self.application_mapping = application_mapping

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        """Serve one connection with the application mapped to its protocol type; returns what that app returns."""
        protocol = scope.get("type")
        app = self.application_mapping.get(protocol) if isinstance(protocol, str) else None
        if app is None:
            if protocol == "lifespan":
                await self._serve_lifespan(receive, send)
                return None
            raise ValueError(
                f"No application configured for scope type {protocol!r}; ProtocolTypeRouter maps "
                f"{sorted(self.application_mapping)!r}. Add an entry for {protocol!r} to serve it."
            )
        return await app(scope, receive, send)

    @staticmethod
    async def _serve_lifespan(receive: Receive, send: Send) -> None:
        """Answer the ASGI lifespan protocol: nothing to start; at shutdown, close the channel layers built."""
        while True:
            message = await receive()
            message_type = message.get("type")
            if message_type == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message_type == "lifespan.shutdown":
                # The server has drained its connections (tether.drain): nothing uses the layers any more.
                await close_channel_layers()
                await send({"type": "lifespan.shutdown.complete"})
                return
            else:
                logger.debug("Ignoring unexpected lifespan message %r.", message_type)


class _NoRouteFound(Resolver404):
    """A nested ``URLRouter`` matched nothing below its prefix.

    The router above it catches it and tries its next route. It is Django's ``Resolver404`` (as in Channels), so code
    that wraps a nested router and catches ``Resolver404`` keeps working; the outermost router turns a final miss
    into ``ValueError``.
    """


class _Route:
    """One compiled route: the pattern to match, the application, its default kwargs and whether it is a prefix."""

    __slots__ = ("app", "default_kwargs", "is_prefix", "pattern")

    def __init__(self, pattern: Any, app: ASGIApp, default_kwargs: dict[str, Any], is_prefix: bool) -> None:
        self.pattern = pattern
        self.app = app
        self.default_kwargs = default_kwargs
        self.is_prefix = is_prefix


def _wraps_url_router(app: Any) -> bool:
    """Tell whether ``app`` is a ``URLRouter`` or a chain of wrappers around one.

    Wrappers are followed through ``inner``, ``app`` and ``application``. An object with Channels' class attribute
    ``_path_routing = True`` counts as a router too, so wrappers written for Channels keep working.
    """
    current = app
    seen: set[int] = set()
    for _ in range(_MAX_WRAPPER_DEPTH):
        if current is None or id(current) in seen:
            return False
        if isinstance(current, URLRouter) or getattr(current, "_path_routing", False) is True:
            return True
        seen.add(id(current))
        current = next(
            (
                wrapped
                for attribute in _WRAPPED_APP_ATTRIBUTES
                if (wrapped := getattr(current, attribute, None)) is not None
            ),
            None,
        )
    return False


def _prefix_pattern(pattern: object, route: URLPattern) -> RoutePattern | RegexPattern:
    """Return a copy of ``pattern`` that matches the start of a path, for a route that leads to a nested router.

    ``path()`` anchors its patterns at the end of the path (``\\Z``) because it expects a view; a nested router needs
    the rest of the path, so the pattern is rebuilt as a prefix. The user's pattern object is left untouched.
    """
    if isinstance(pattern, RoutePattern):
        # The private _route (not in django-stubs) is passed as it is, so a lazily translated route stays lazy.
        return RoutePattern(pattern._route, name=pattern.name, is_endpoint=False)  # type: ignore[attr-defined]
    if isinstance(pattern, RegexPattern):
        regex = str(pattern)  # RegexPattern.__str__ is str(self._regex)
        if regex.endswith("$") and not regex.endswith(r"\$"):
            logger.warning(
                "URLRouter route %r leads to a nested router but its pattern ends with '$', so the nested router "
                "only ever sees an empty path. Remove the '$' to let it route the rest of the path.",
                route,
            )
        # The private _regex (not in django-stubs) is passed as it is, so a lazily translated regex stays lazy.
        return RegexPattern(pattern._regex, name=pattern.name, is_endpoint=False)  # type: ignore[attr-defined]
    raise ImproperlyConfigured(
        f"URLRouter route {route!r} leads to a nested router with a {type(pattern).__name__} pattern; only "
        f"path() and re_path() patterns can be used as prefixes."
    )


def _compile_route(route: Any) -> _Route:
    """Check one URL pattern and turn it into a ``_Route``, raising ``ImproperlyConfigured`` for unusable ones."""
    if isinstance(route, URLResolver):
        raise ImproperlyConfigured(
            f"URLRouter route {route!r}: include() is not supported. Use a nested URLRouter instead, for example "
            f"path({str(route.pattern)!r}, URLRouter([...]))."
        )
    if not isinstance(route, URLPattern):
        raise ImproperlyConfigured(
            f"URLRouter routes must be made with django.urls.path() or re_path(); got {route!r}."
        )
    app = route.callback
    _check_application(app, f"URLRouter route {route!r}")
    is_prefix = _wraps_url_router(app)
    pattern = _prefix_pattern(route.pattern, route) if is_prefix else route.pattern
    # Compile the regular expression now, so a bad pattern fails at startup and the first connection pays nothing.
    # Lazily translated routes compile per language on first use instead.
    if isinstance(getattr(pattern, "_route", None) or getattr(pattern, "_regex", None), str):
        pattern.regex  # noqa: B018 - the attribute access compiles and caches the regex.
    return _Route(pattern, app, dict(route.default_args), is_prefix)


class URLRouter:
    """Dispatch a connection to the first route whose Django URL pattern matches its path.

    ``routes`` are ``django.urls.path()`` and ``re_path()`` patterns whose targets are ASGI applications (a
    consumer's ``as_asgi()``, a middleware, another ``URLRouter``). Routes are tried in order; leading slashes of the
    path are ignored, and the outermost router first removes ``scope["root_path"]`` from the path when the path
    starts with it.

    The application gets a copy of the scope with ``url_route = {"args": tuple, "kwargs": dict}`` holding what every
    router on the way captured (converted by path converters, with the route's ``kwargs=`` defaults winning over
    captured values at the same level, and inner levels winning over outer ones), and ``path_remaining``, the part of
    the path the pattern did not consume.

    A route whose target is a ``URLRouter``, or a wrapper that holds one in ``inner``, ``app`` or ``application``,
    matches as a prefix and leaves the rest of the path to the nested router. Any other ``path()`` route must match
    the whole remaining path.

    Raises ``ImproperlyConfigured`` at construction for ``include()`` routes, for routes not made with ``path()`` or
    ``re_path()`` and for consumer classes routed without ``as_asgi()``. At call time, a scope with no ``"path"``
    raises ``ValueError``, and so does a path that no route matches, at the outermost router: nested routers hand the
    failure back so the outer router can try its next route. A WebSocket handshake for a path that no route matches is
    answered with HTTP 404 instead, without an error, where the server offers the ASGI denial response extension
    (uvicorn does).
    """

    def __init__(self, routes: Iterable[Any]) -> None:
        self.routes = list(routes)
        self._routes = tuple(_compile_route(route) for route in self.routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        """Serve one connection with the application of the first matching route; returns what that app returns."""
        nested = "path_remaining" in scope
        if nested:
            path = scope["path_remaining"]
        else:
            path = scope.get("path")
            if path is None:
                raise ValueError(
                    f"URLRouter cannot route a {scope.get('type')!r} scope: it has no 'path'. Put the URLRouter "
                    f"under a ProtocolTypeRouter entry for 'http' or 'websocket'."
                )
            root_path = scope.get("root_path", "")
            if root_path and path.startswith(root_path):
                path = path[len(root_path) :]
        # Errors name the path as the routes see it: without the root path and the leading slash, as in Channels.
        path = path.lstrip("/")

        for route in self._routes:
            match = route.pattern.match(path)
            if match is None:
                continue
            remaining, args, kwargs = match
            if route.default_kwargs:
                kwargs = {**kwargs, **route.default_kwargs}
            outer = scope.get("url_route") or {}
            child_scope = dict(scope)
            child_scope["path_remaining"] = remaining
            child_scope["url_route"] = {
                "args": (*outer.get("args", ()), *args),
                "kwargs": {**outer.get("kwargs", {}), **kwargs},
            }
            try:
                return await route.app(child_scope, receive, send)
            except _NoRouteFound:
                # The nested router matched nothing below this prefix: keep looking at this level.
                continue

        if nested:
            raise _NoRouteFound(_no_route_message(path))
        logger.debug("URLRouter: no route matches the path %r.", path)
        if scope.get("type") == "websocket" and supports_denial_response(scope):
            await _refuse_unknown_path(path, scope, receive, send)
            return None
        raise ValueError(_no_route_message(path))


def _no_route_message(path: str) -> str:
    """tether's wording of the "no route" error: it names the path as Channels does (without the leading slash
    and the root path), so a test that looks for the path still finds it."""
    return f"URLRouter: no route matches the path {path!r}."


async def _refuse_unknown_path(path: str, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer a WebSocket handshake for a path no route matches with HTTP 404, as Django answers an unknown URL.

    Only where the server offers the denial response extension: elsewhere the ``ValueError`` of Channels stands (and
    the server answers 500), since a plain close would say 403, which is wrong, and tests written for Channels
    expect the error.
    """
    message = await receive()
    if message.get("type") != "websocket.connect":
        return  # the client left before its handshake was answered
    await send_denial(scope, send, 404, _no_route_message(path))


class ChannelNameRouter:
    """Dispatch a worker's connection to the application mapped to its ``scope["channel"]``.

    Used under ``ProtocolTypeRouter({"channel": ChannelNameRouter({...})})`` for background tasks that
    ``manage.py runworker`` serves. A scope without a ``"channel"`` key, or with a channel that is not mapped, raises
    ``ValueError`` saying which.
    """

    def __init__(self, application_mapping: Mapping[str, ASGIApp]) -> None:
        for channel, app in application_mapping.items():
            _check_application(app, f"ChannelNameRouter entry {channel!r}")
        self.application_mapping = application_mapping

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        """Serve one channel's messages with the application mapped to that channel name; returns what it returns."""
        try:
            channel = scope["channel"]
        except KeyError:
            raise ValueError(
                f"ChannelNameRouter got a {scope.get('type')!r} scope with no 'channel' key; it only serves "
                f"worker channels. Route it under ProtocolTypeRouter's 'channel' entry."
            ) from None
        try:
            app = self.application_mapping[channel]
        except KeyError:
            raise ValueError(
                f"No application configured for channel {channel!r}; ChannelNameRouter maps "
                f"{sorted(self.application_mapping)!r}."
            ) from None
        return await app(scope, receive, send)

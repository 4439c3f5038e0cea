"""The base class for ASGI middleware that adds per-connection information to the scope.

One middleware instance serves every connection of the application it wraps, so nothing about a connection may be
stored on the instance. ``BaseMiddleware`` gives each connection its own copy of the scope to put things in, and
keeps the wrapped application in ``inner``, the attribute ``URLRouter`` follows to find nested routers.
"""

from __future__ import annotations

from tether.types import ASGIApp, Receive, Scope, Send

__all__ = ["BaseMiddleware"]


class BaseMiddleware:
    """Wrap ``inner`` (an ASGI application); subclasses add keys to a per-connection copy of the scope.

    ``__call__`` copies the scope (``dict(scope)``), so additions never leak to the middleware or server above, and
    calls ``inner`` with the copy. Override ``__call__``, copy the scope the same way (or call ``super().__call__``
    with the changed copy), and keep per-connection state in that copy, never on ``self``: one instance serves
    every connection at once.
    """

    def __init__(self, inner: ASGIApp) -> None:
        if not callable(inner):
            raise TypeError(
                f"{type(self).__name__} wraps an ASGI application (a callable taking scope, receive, send), "
                f"not {inner!r}."
            )
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one connection: call ``inner`` with a copy of ``scope``."""
        scope = dict(scope)
        await self.inner(scope, receive, send)

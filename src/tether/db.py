"""Django database connections for code that runs on the event loop.

Django closes connections that are too old or broken at the start and end of each HTTP request. A long-lived
WebSocket has no such boundaries, so tether closes them around consumer handlers instead. Closing must run in the
thread that owns the connection (Django connections are thread-local), which costs a hop to the thread-sensitive
executor. tether tracks which connections exist (through Django's ``connection_created`` signal) and makes the hop
only when one of them is open: a consumer that never touches the ORM never pays for it, one that does still gets its
stale connections closed.

Inside a Django ``TestCase`` the test's connection holds the test's transaction. Closing it would end that
transaction under the test ("Cannot operate on a closed database"), so, as Django's test client does for its request
signals, tether leaves a connection alone while a ``TestCase`` transaction is open on it.
"""

from __future__ import annotations

import functools
import inspect
import threading
import weakref
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, overload

from asgiref.sync import SyncToAsync, sync_to_async
from django.db import connections
from django.db.backends.signals import connection_created

__all__ = [
    "DatabaseSyncToAsync",
    "aclose_old_connections",
    "close_old_connections",
    "database_sync_to_async",
    "has_open_connections",
]

_P = ParamSpec("_P")
_R = TypeVar("_R")

# Every DatabaseWrapper that has ever connected, in any thread, as weak references so that wrappers of finished
# threads go away. Connecting is rare and happens in worker threads; checking happens on the event loop for every
# message. So writers rebuild an immutable tuple under a lock, and readers only read the current tuple: no lock, no
# copy, and nothing at all to walk in a process that never touched the database.
_wrapper_refs: tuple[weakref.ref[Any], ...] = ()
_wrappers_lock = threading.Lock()


def _track_connection(sender: Any, connection: Any, **kwargs: Any) -> None:
    global _wrapper_refs
    with _wrappers_lock:
        live = tuple(ref for ref in _wrapper_refs if ref() is not None)
        if not any(ref() is connection for ref in live):
            live += (weakref.ref(connection),)
        _wrapper_refs = live


connection_created.connect(_track_connection, weak=False, dispatch_uid="tether.db.track_connection")


def _in_test_case_transaction(wrapper: Any) -> bool:
    """Whether a ``TestCase`` transaction is open on this connection (Django marks the atomic blocks it opens)."""
    return any(getattr(block, "_from_testcase", False) for block in wrapper.atomic_blocks)


def close_old_connections(**kwargs: Any) -> None:
    """Close this thread's database connections that are unusable or older than ``CONN_MAX_AGE``.

    What Django does at each request's start and end, except on a connection holding a ``TestCase`` transaction.
    Takes and ignores keyword arguments so it can also be connected to a signal, as Django's own can. A
    module-level name so tests can patch it; it must run in the thread that owns the connections.
    """
    for wrapper in connections.all(initialized_only=True):
        if not _in_test_case_transaction(wrapper):
            wrapper.close_if_unusable_or_obsolete()


def has_open_connections() -> bool:
    """True when any thread holds an open Django database connection; cheap, safe to call on the event loop."""
    for ref in _wrapper_refs:
        wrapper = ref()
        if wrapper is not None and wrapper.connection is not None:
            return True
    return False


async def aclose_old_connections() -> None:
    """Close stale database connections from async code, hopping to the ORM's thread only when one is open."""
    if has_open_connections():
        await sync_to_async(close_old_connections)()


def _closing_connections(func: Callable[_P, _R]) -> Callable[_P, _R]:
    @functools.wraps(func)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        close_old_connections()
        try:
            return func(*args, **kwargs)
        finally:
            close_old_connections()

    return run


class DatabaseSyncToAsync(SyncToAsync[_P, _R]):
    """asgiref's ``SyncToAsync`` that closes stale database connections before and after the function, in the
    thread the function runs in. ``database_sync_to_async`` builds these; the class exists for code that subclasses
    or type-checks against it, as it can in Channels."""

    def __init__(self, func: Callable[_P, _R], *args: Any, **kwargs: Any) -> None:
        if not callable(func):
            raise TypeError(f"database_sync_to_async() needs a callable, not {func!r}.")
        if inspect.iscoroutinefunction(func):
            raise TypeError(
                f"database_sync_to_async() was given the coroutine function {func.__qualname__}: it runs sync code "
                "in a thread. Await the coroutine function directly instead."
            )
        super().__init__(_closing_connections(func), *args, **kwargs)


@overload
def database_sync_to_async(func: Callable[_P, _R], *, thread_sensitive: bool = True) -> DatabaseSyncToAsync[_P, _R]: ...


@overload
def database_sync_to_async(
    func: None = None, *, thread_sensitive: bool = True
) -> Callable[[Callable[_P, _R]], DatabaseSyncToAsync[_P, _R]]: ...


def database_sync_to_async(
    func: Callable[_P, _R] | None = None, *, thread_sensitive: bool = True
) -> DatabaseSyncToAsync[_P, _R] | Callable[[Callable[_P, _R]], DatabaseSyncToAsync[_P, _R]]:
    """Run a function that uses the ORM from async code, with stale connections closed around it in its thread.

    Usable bare (``@database_sync_to_async``), on methods, or with arguments
    (``@database_sync_to_async(thread_sensitive=False)``). Returns a ``DatabaseSyncToAsync``.
    """
    if func is None:

        def decorate(f: Callable[_P, _R]) -> DatabaseSyncToAsync[_P, _R]:
            return DatabaseSyncToAsync(f, thread_sensitive=thread_sensitive)

        return decorate
    return DatabaseSyncToAsync(func, thread_sensitive=thread_sensitive)

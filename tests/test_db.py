"""tether.db: stale database connections are closed around handlers, without a thread hop when none is open.

These tests use the real SQLite test database. Connections opened by sync code run from async code live in asgiref's
thread-sensitive executor thread, so the tests look at them from that thread.
"""

from __future__ import annotations

import sys
import threading
import time

import pytest
from asgiref.sync import SyncToAsync, async_to_sync, sync_to_async
from django.contrib.auth.models import User
from django.db import connection, connections
from django.test import TestCase

import tether.db
from tether.consumer import AsyncConsumer, SyncConsumer
from tether.db import aclose_old_connections, database_sync_to_async, has_open_connections
from tether.testing import ApplicationCommunicator


def close_connections_everywhere() -> None:
    """Close this thread's connections and those of the executor thread that sync code from async code runs in."""
    connections.close_all()
    SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=5)


@pytest.fixture
def no_open_connections():
    close_connections_everywhere()
    assert not has_open_connections(), "a database connection is still open in some other thread"
    yield
    close_connections_everywhere()


@pytest.fixture
def database():
    """Real database access for tests whose sync code runs in other threads; connections are closed afterwards."""
    yield
    close_connections_everywhere()


@pytest.fixture
def close_calls(monkeypatch):
    """Count calls of tether.db.close_old_connections (the real one still runs), noting each call's thread."""
    calls: list[int] = []
    real = tether.db.close_old_connections

    def counting() -> None:
        calls.append(threading.get_ident())
        real()

    monkeypatch.setattr(tether.db, "close_old_connections", counting)
    return calls


def open_in_executor() -> None:
    connection.ensure_connection()


def executor_connection_is_open() -> bool:
    return connection.connection is not None


def age_out_executor_connection() -> None:
    connection.close_at = time.monotonic() - 1


# aclose_old_connections ---------------------------------------------------------------------------------------------


async def test_aclose_old_connections_does_not_hop_when_no_connection_is_open(no_open_connections, close_calls):
    for _ in range(5):
        await aclose_old_connections()
    assert close_calls == []


async def test_async_consumer_handlers_do_not_hop_when_no_connection_is_open(no_open_connections, close_calls):
    class Quiet(AsyncConsumer):
        async def tick(self, message):
            await self.send({"type": "tock"})

    communicator = ApplicationCommunicator(Quiet.as_asgi(), {"type": "testing"})
    for _ in range(10):
        await communicator.send_input({"type": "tick"})
        await communicator.receive_output()
    communicator.stop()
    assert close_calls == []


@pytest.mark.django_db(transaction=True)
async def test_aclose_old_connections_closes_an_obsolete_connection(database, close_calls, monkeypatch):
    monkeypatch.setitem(connections.settings["default"], "CONN_MAX_AGE", 60)
    await sync_to_async(open_in_executor)()
    assert has_open_connections()
    await sync_to_async(age_out_executor_connection)()
    await aclose_old_connections()
    assert close_calls, "aclose_old_connections did not hop although a connection was open"
    assert not await sync_to_async(executor_connection_is_open)()


@pytest.mark.django_db(transaction=True)
async def test_aclose_old_connections_keeps_a_connection_within_conn_max_age(database, monkeypatch):
    monkeypatch.setitem(connections.settings["default"], "CONN_MAX_AGE", 60)
    await sync_to_async(open_in_executor)()
    await aclose_old_connections()
    assert await sync_to_async(executor_connection_is_open)()


@pytest.mark.django_db(transaction=True)
async def test_async_consumer_closes_the_stale_connection_a_handler_left_open(database, close_calls, monkeypatch):
    monkeypatch.setitem(connections.settings["default"], "CONN_MAX_AGE", 60)

    class Counter(AsyncConsumer):
        async def count_users(self, message):
            # Plain sync_to_async: the handler leaves the executor thread's connection open.
            total = await sync_to_async(User.objects.count)()
            await self.send({"type": "count", "total": total})

        async def noop(self, message):
            await self.send({"type": "done"})

    communicator = ApplicationCommunicator(Counter.as_asgi(), {"type": "testing"})
    await communicator.send_input({"type": "count.users"})
    assert (await communicator.receive_output())["total"] == 0
    assert await sync_to_async(executor_connection_is_open)()
    await sync_to_async(age_out_executor_connection)()
    await communicator.send_input({"type": "noop"})
    await communicator.receive_output()
    communicator.stop()
    assert close_calls
    assert not await sync_to_async(executor_connection_is_open)()


def test_has_open_connections_follows_this_threads_connection(no_open_connections, django_db_blocker):
    with django_db_blocker.unblock():
        connection.ensure_connection()
        assert has_open_connections()
        connection.close()
    assert not has_open_connections()


def test_has_open_connections_is_safe_while_other_threads_open_connections(no_open_connections, django_db_blocker):
    """Threads that connect for the first time add to the tracked set while the event loop reads it."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def connect_in_new_threads() -> None:
        def connect_once() -> None:
            connection.ensure_connection()
            connection.close()

        while not stop.is_set():
            worker = threading.Thread(target=connect_once)
            worker.start()
            worker.join()

    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    openers = [threading.Thread(target=connect_in_new_threads) for _ in range(2)]
    try:
        with django_db_blocker.unblock():
            for opener in openers:
                opener.start()
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline and not errors:
                try:
                    has_open_connections()
                except RuntimeError as error:
                    errors.append(error)
            stop.set()
            for opener in openers:
                opener.join(timeout=10)
    finally:
        stop.set()
        sys.setswitchinterval(switch_interval)
    assert errors == []


# database_sync_to_async ---------------------------------------------------------------------------------------------


async def test_database_sync_to_async_closes_connections_before_and_after_in_the_worker_thread(close_calls):
    ran_in: list[int] = []

    def work() -> str:
        ran_in.append(threading.get_ident())
        assert len(close_calls) == 1, "close_old_connections must run before the function"
        return "done"

    assert await database_sync_to_async(work)() == "done"
    assert close_calls == [ran_in[0], ran_in[0]]
    assert ran_in[0] != threading.get_ident()


async def test_database_sync_to_async_closes_connections_even_when_the_function_raises(close_calls):
    def fail() -> None:
        raise LookupError("no such row")

    with pytest.raises(LookupError, match="no such row"):
        await database_sync_to_async(fail)()
    assert len(close_calls) == 2


async def test_database_sync_to_async_passes_arguments_through():
    def join(*parts: str, sep: str = "-") -> str:
        return sep.join(parts)

    assert await database_sync_to_async(join)("a", "b", sep="+") == "a+b"


async def test_database_sync_to_async_works_as_a_decorator_on_methods(close_calls):
    class Repository:
        factor = 3

        @database_sync_to_async
        def scaled(self, value: int) -> int:
            return value * self.factor

    assert await Repository().scaled(5) == 15
    assert len(close_calls) == 2


async def test_database_sync_to_async_with_thread_sensitive_false_runs_in_another_thread(close_calls):
    @database_sync_to_async
    def sensitive() -> int:
        return threading.get_ident()

    @database_sync_to_async(thread_sensitive=False)
    def insensitive() -> int:
        return threading.get_ident()

    sensitive_thread = await sensitive()
    insensitive_thread = await insensitive()
    assert insensitive_thread != sensitive_thread
    assert close_calls[-2:] == [insensitive_thread, insensitive_thread]


async def test_database_sync_to_async_keeps_the_function_name():
    def load_profile() -> None:
        pass

    assert database_sync_to_async(load_profile).__name__ == "load_profile"


@pytest.mark.django_db(transaction=True)
async def test_database_sync_to_async_uses_the_orm_and_closes_the_obsolete_connection_after(database):
    @database_sync_to_async
    def create_and_count() -> int:
        User.objects.create(username="ada")
        return User.objects.count()

    # CONN_MAX_AGE is 0 in the test settings: the connection is obsolete as soon as the function is done.
    assert await create_and_count() == 1
    assert not await sync_to_async(executor_connection_is_open)()


# SyncConsumer and the ORM -------------------------------------------------------------------------------------------


class UserCounter(SyncConsumer):
    def count_users(self, message):
        self.send({"type": "count", "total": User.objects.count(), "open": connection.connection is not None})


@pytest.mark.django_db(transaction=True)
async def test_sync_consumer_handler_uses_the_orm_and_its_connection_is_closed_after(database):
    await database_sync_to_async(User.objects.create)(username="grace")
    communicator = ApplicationCommunicator(UserCounter.as_asgi(), {"type": "testing"})
    await communicator.send_input({"type": "count.users"})
    reply = await communicator.receive_output()
    communicator.stop()
    assert reply == {"type": "count", "total": 1, "open": True}
    assert not await sync_to_async(executor_connection_is_open)()


class CountUsersConsumer(AsyncConsumer):
    """Answers each ``count`` with the number of users, read through the ORM in the database thread."""

    async def count(self, message):
        await self.send({"type": "counted", "users": await database_sync_to_async(User.objects.count)()})


class ConsumerInsideDjangoTestCase(TestCase):
    """A consumer tested from a Django ``TestCase``: its ORM work shares the test's connection and transaction.

    ``async_to_sync`` runs the ORM work on the test's own thread, inside the atomic block that ``TestCase`` opens.
    Closing that connection there would end the test's transaction, so tether leaves it open, as Django's test client
    does for its request signals.
    """

    def test_a_consumer_sees_rows_the_test_wrote_and_the_connection_stays_usable(self):
        User.objects.create_user("in-test-case")

        async def count_through_a_consumer():
            communicator = ApplicationCommunicator(CountUsersConsumer.as_asgi(), {"type": "channel"})
            await communicator.send_input({"type": "count"})
            answer = await communicator.receive_output()
            communicator.stop()
            return answer

        assert async_to_sync(count_through_a_consumer)() == {"type": "counted", "users": 1}
        assert User.objects.filter(username="in-test-case").exists()  # the test's connection still works

    def test_close_old_connections_inside_the_test_transaction_leaves_its_connection_open(self):
        assert connection.in_atomic_block
        tether.db.close_old_connections()
        assert connection.connection is not None
        assert User.objects.count() == 0

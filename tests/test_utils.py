"""tether.utils: readable names for log lines, and the loop that feeds a consumer from several sources."""

from __future__ import annotations

import asyncio
import contextvars
import functools

import pytest

from tests.consumers import EchoConsumer
from tether.utils import await_many_dispatch, name_that_thing


class Widget:
    def method(self):
        pass

    @classmethod
    def build(cls):
        pass

    class Part:
        pass


def plain_function():
    pass


# name_that_thing ----------------------------------------------------------------------------------------------------


def test_name_of_a_class_is_module_and_qualname():
    assert name_that_thing(Widget) == "tests.test_utils.Widget"


def test_name_of_a_nested_class_keeps_its_outer_class():
    assert name_that_thing(Widget.Part) == "tests.test_utils.Widget.Part"


def test_name_of_a_function_is_module_and_name():
    assert name_that_thing(plain_function) == "tests.test_utils.plain_function"


def test_name_of_a_bound_method_names_its_class_and_method():
    assert name_that_thing(Widget().method) == "tests.test_utils.Widget.method"


def test_name_of_a_classmethod_names_its_class_and_method():
    assert name_that_thing(Widget.build) == "tests.test_utils.Widget.build"


def test_name_of_an_instance_is_its_class_name():
    assert name_that_thing(Widget()) == "tests.test_utils.Widget"


def test_name_of_a_consumer_instance_is_its_dotted_class_name():
    assert name_that_thing(EchoConsumer()) == "tests.consumers.EchoConsumer"


def test_name_of_a_builtin_has_no_builtins_prefix():
    assert name_that_thing(len) == "len"
    assert name_that_thing(int) == "int"
    assert name_that_thing(3) == "int"


def test_name_of_a_partial_is_its_type():
    assert name_that_thing(functools.partial(plain_function)) == "functools.partial"


# await_many_dispatch ------------------------------------------------------------------------------------------------


def queue_source(queue: asyncio.Queue, cancelled: list | None = None, label: str = ""):
    """A receive callable reading ``queue``; notes in ``cancelled`` when a pending read was cancelled."""

    async def receive():
        try:
            return await queue.get()
        except asyncio.CancelledError:
            if cancelled is not None:
                cancelled.append(label)
            raise

    return receive


class Stop(Exception):
    pass


async def test_await_many_dispatch_delivers_each_source_in_order():
    first, second = asyncio.Queue(), asyncio.Queue()
    for item in ("a1", "a2", "a3"):
        first.put_nowait(item)
    for item in ("b1", "b2"):
        second.put_nowait(item)
    seen = []

    async def dispatch(message):
        seen.append(message)
        if len(seen) == 5:
            raise Stop

    with pytest.raises(Stop):
        await asyncio.wait_for(await_many_dispatch([queue_source(first), queue_source(second)], dispatch), 2)
    assert [m for m in seen if m.startswith("a")] == ["a1", "a2", "a3"]
    assert [m for m in seen if m.startswith("b")] == ["b1", "b2"]


async def test_await_many_dispatch_keeps_arrival_order_across_sources_during_a_slow_handler():
    client, layer = asyncio.Queue(), asyncio.Queue()
    release = asyncio.Event()
    seen = []

    async def dispatch(message):
        seen.append(message)
        if message == "c1":
            await release.wait()
        if len(seen) == 4:
            raise Stop

    run = asyncio.ensure_future(await_many_dispatch([queue_source(client), queue_source(layer)], dispatch))
    client.put_nowait("c1")
    await asyncio.sleep(0.01)
    # While c1 is being handled, a client frame arrives first, then a layer message.
    client.put_nowait("c2")
    await asyncio.sleep(0.01)
    layer.put_nowait("l1")
    await asyncio.sleep(0.01)
    client.put_nowait("c3")
    await asyncio.sleep(0.01)
    release.set()
    with pytest.raises(Stop):
        await asyncio.wait_for(run, 2)
    assert seen == ["c1", "c2", "l1", "c3"]


async def test_await_many_dispatch_handles_one_message_at_a_time():
    source = asyncio.Queue()
    for item in range(5):
        source.put_nowait(item)
    running = 0
    overlap = []
    done = []

    async def dispatch(message):
        nonlocal running
        running += 1
        overlap.append(running)
        await asyncio.sleep(0.005)
        running -= 1
        done.append(message)
        if len(done) == 5:
            raise Stop

    with pytest.raises(Stop):
        await asyncio.wait_for(await_many_dispatch([queue_source(source)], dispatch), 2)
    assert overlap == [1, 1, 1, 1, 1]
    assert done == [0, 1, 2, 3, 4]


async def test_await_many_dispatch_reads_at_most_two_messages_ahead_of_a_slow_handler():
    source = asyncio.Queue()
    for item in range(10):
        source.put_nowait(item)
    left_in_source = []

    async def dispatch(message):
        await asyncio.sleep(0.01)  # the reader has had time to read as far ahead as it may
        left_in_source.append(source.qsize())
        if message == 2:
            raise Stop

    with pytest.raises(Stop):
        await asyncio.wait_for(await_many_dispatch([queue_source(source)], dispatch), 2)
    # While message n is handled, messages n+1 and n+2 have been read; the rest wait in the source.
    assert left_in_source == [7, 6, 5]


async def test_await_many_dispatch_cancels_pending_receives_when_dispatch_raises():
    first, second = asyncio.Queue(), asyncio.Queue()
    cancelled = []
    first.put_nowait("boom")

    async def dispatch(message):
        await asyncio.sleep(0.01)  # both sources have a receive pending by now
        raise Stop

    sources = [queue_source(first, cancelled, "first"), queue_source(second, cancelled, "second")]
    with pytest.raises(Stop):
        await asyncio.wait_for(await_many_dispatch(sources, dispatch), 2)
    assert sorted(cancelled) == ["first", "second"]


async def test_await_many_dispatch_cancels_pending_receives_when_itself_cancelled():
    first, second = asyncio.Queue(), asyncio.Queue()
    cancelled = []

    async def dispatch(message):
        pass

    sources = [queue_source(first, cancelled, "first"), queue_source(second, cancelled, "second")]
    run = asyncio.ensure_future(await_many_dispatch(sources, dispatch))
    await asyncio.sleep(0.01)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert sorted(cancelled) == ["first", "second"]


async def test_await_many_dispatch_raises_what_a_source_raises():
    async def broken():
        raise ConnectionError("source went away")

    async def dispatch(message):
        pass

    with pytest.raises(ConnectionError, match="source went away"):
        await asyncio.wait_for(await_many_dispatch([broken], dispatch), 2)


# One handler at a time, the handlers run in a task of their own in a copy of the caller's context (tether.dispatch).
_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")


async def test_await_many_dispatch_handlers_see_the_callers_context_variables():
    source = asyncio.Queue()
    source.put_nowait("only")
    seen = []

    async def dispatch(message):
        seen.append(_request_id.get())
        raise Stop

    _request_id.set("from the caller")
    with pytest.raises(Stop):
        await asyncio.wait_for(await_many_dispatch([queue_source(source)], dispatch), 2)
    assert seen == ["from the caller"]


async def test_await_many_dispatch_a_context_variable_set_by_one_handler_is_seen_by_the_next():
    source = asyncio.Queue()
    for item in ("first", "second"):
        source.put_nowait(item)
    seen = []

    async def dispatch(message):
        seen.append(_request_id.get())
        _request_id.set(message)
        if message == "second":
            raise Stop

    with pytest.raises(Stop):
        await asyncio.wait_for(await_many_dispatch([queue_source(source)], dispatch), 2)
    assert seen == ["unset", "first"]

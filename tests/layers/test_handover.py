"""Handing a message to a receiver's future, on whichever event loop it waits."""

from __future__ import annotations

import asyncio
import threading

from tether.layers.handover import hand_over, running_loop


def given_back_list() -> tuple[list, object]:
    given_back: list = []
    return given_back, given_back.append


async def test_a_waiter_on_the_running_loop_gets_the_message_at_once():
    waiter = asyncio.get_running_loop().create_future()
    given_back, give_back = given_back_list()
    hand_over(waiter, {"type": "x"}, running_loop(), give_back)  # type: ignore[arg-type]
    assert waiter.result() == {"type": "x"}
    assert given_back == []


def waiter_on_another_loop() -> tuple[asyncio.AbstractEventLoop, asyncio.Future, threading.Thread]:
    loop = asyncio.new_event_loop()
    waiter = loop.create_future()
    thread = threading.Thread(target=loop.run_forever)
    thread.start()
    return loop, waiter, thread


def stop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def test_a_waiter_on_another_loop_is_completed_on_that_loop():
    loop, waiter, thread = waiter_on_another_loop()
    given_back, give_back = given_back_list()
    completed_on = []
    completed = threading.Event()
    waiter.add_done_callback(lambda _: (completed_on.append(threading.current_thread()), completed.set()))
    hand_over(waiter, {"type": "x"}, None, give_back)  # type: ignore[arg-type]
    assert completed.wait(5)
    stop(loop, thread)
    assert waiter.result() == {"type": "x"}
    assert completed_on == [thread]
    assert given_back == []


def test_a_waiter_cancelled_before_its_loop_got_to_it_gives_the_message_back():
    loop, waiter, thread = waiter_on_another_loop()
    given_back, give_back = given_back_list()
    gate = threading.Event()
    loop.call_soon_threadsafe(gate.wait, 5)  # hold that loop while the receiver gives up, then the hand-over comes
    loop.call_soon_threadsafe(waiter.cancel)
    hand_over(waiter, {"type": "x"}, None, give_back)  # type: ignore[arg-type]
    gate.set()
    stop(loop, thread)
    assert waiter.cancelled()
    assert given_back == [{"type": "x"}]


def test_a_waiter_whose_loop_is_closed_gives_the_message_back():
    loop = asyncio.new_event_loop()
    waiter = loop.create_future()
    loop.close()
    given_back, give_back = given_back_list()
    hand_over(waiter, {"type": "x"}, None, give_back)  # type: ignore[arg-type]
    assert given_back == [{"type": "x"}]


def test_running_loop_is_none_outside_a_loop():
    assert running_loop() is None

"""The lighter websockets-sansio protocol (``tether.wsprotocol``): its queue, flag and timers behave as the asyncio
objects they replace, and a live connection through it keeps none of the handshake's objects."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref

import pytest
import websockets
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from tether.wsprotocol import TIMER_GRAIN, Inbox, Timers, Writable, lean_ws_protocol, timers_of

#: Every wait on the network is bounded by this many seconds.
WAIT = 10


async def test_the_inbox_hands_out_events_in_the_order_they_came():
    inbox = Inbox(asyncio.get_running_loop())
    inbox.put_nowait(1)
    inbox.put_nowait(2)
    assert (inbox.qsize(), inbox.empty()) == (2, False)
    assert [await inbox.get(), await inbox.get()] == [1, 2]
    assert inbox.empty()


async def test_a_get_waits_for_the_next_event():
    inbox = Inbox(asyncio.get_running_loop())
    getting = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    assert not getting.done()
    inbox.put_nowait("connect")
    assert await asyncio.wait_for(getting, WAIT) == "connect"
    assert inbox.waiters is None and inbox.items is None  # nothing kept once empty


async def test_a_cancelled_get_takes_nothing_and_the_next_get_has_the_event():
    inbox = Inbox(asyncio.get_running_loop())
    getting = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    inbox.put_nowait("message")  # its waiter is woken, then cancelled before it runs
    getting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await getting
    assert await asyncio.wait_for(inbox.get(), WAIT) == "message"


async def test_an_event_that_came_as_a_get_was_cancelled_goes_to_the_other_waiter():
    inbox = Inbox(asyncio.get_running_loop())
    first = asyncio.ensure_future(inbox.get())
    second = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    inbox.put_nowait("message")
    first.cancel()
    assert await asyncio.wait_for(second, WAIT) == "message"


async def test_writable_waits_only_while_cleared():
    writable = Writable(asyncio.get_running_loop())
    assert await writable.wait() is True  # set: at once
    writable.clear()
    waiting = asyncio.ensure_future(writable.wait())
    await asyncio.sleep(0)
    assert not waiting.done() and not writable.is_set()
    writable.set()
    assert await asyncio.wait_for(waiting, WAIT) is True
    assert writable.waiters is None


async def test_a_shared_timer_calls_back_after_its_delay_and_not_when_cancelled():
    loop = asyncio.get_running_loop()
    timers = Timers(loop)
    fired = asyncio.Event()
    calls: list[str] = []
    start = loop.time()
    timers.call_later(0.05, calls.append, "kept")
    timers.call_later(0.05, calls.append, "cancelled").cancel()
    timers.call_later(0.06, fired.set)
    await asyncio.wait_for(fired.wait(), WAIT)
    assert calls == ["kept"]
    assert loop.time() - start >= 0.05 - 0.01  # never early (the loop's clock may round by a millisecond)
    assert timers.slices == {}


async def test_a_failing_callback_is_reported_and_the_others_of_its_slice_still_run():
    loop = asyncio.get_running_loop()
    reported: list[dict] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        timers = Timers(loop)
        done = asyncio.Event()
        timers.call_later(0, lambda: 1 / 0)
        timers.call_later(0, done.set)
        await asyncio.wait_for(done.wait(), WAIT)
    finally:
        loop.set_exception_handler(None)
    assert isinstance(reported[0]["exception"], ZeroDivisionError)


async def test_each_loop_has_one_schedule_that_passes_everything_else_to_the_loop():
    loop = asyncio.get_running_loop()
    assert timers_of(loop) is timers_of(loop)
    assert timers_of(loop).time() == pytest.approx(loop.time(), abs=1)
    assert TIMER_GRAIN <= 0.25


def test_a_closed_loop_is_not_kept_alive_by_its_schedule():
    loop = asyncio.new_event_loop()

    async def schedule_and_fire() -> None:
        fired = asyncio.Event()
        timers_of(asyncio.get_running_loop()).call_later(0, fired.set)
        await asyncio.wait_for(fired.wait(), WAIT)

    loop.run_until_complete(schedule_and_fire())
    loop.close()
    closed = weakref.ref(loop)
    del loop
    gc.collect()
    assert closed() is None


def test_only_the_websockets_sansio_class_is_made_lighter():
    lean = lean_ws_protocol(WebSocketsSansIOProtocol)
    assert issubclass(lean, WebSocketsSansIOProtocol)
    assert lean_ws_protocol(WebSocketsSansIOProtocol) is lean
    assert lean_ws_protocol(lean) is lean
    other = type("OtherWebSocketProtocol", (asyncio.Protocol,), {})  # wsproto's, the older websockets'
    assert lean_ws_protocol(other) is other


def test_uvicorn_still_has_the_attributes_and_the_hook_the_lean_class_replaces():
    import inspect

    source = inspect.getsource(WebSocketsSansIOProtocol)
    for line in (
        "self.queue: asyncio.Queue",
        "self.writable = asyncio.Event()",
        "self.request = event",
        "self.loop.call_later(",
        "self.start_keepalive()",
    ):
        assert line in source, line
    # The accept path sends the response, then starts the keepalive (where the lean class lets the response go).
    send = inspect.getsource(WebSocketsSansIOProtocol.send)
    assert send.index("self.conn.send_response(self.response)") < send.index("self.start_keepalive()")


# -- live --------------------------------------------------------------------------------------------------------


async def test_an_open_websocket_keeps_no_handshake_objects_and_still_echoes_and_sees_the_close(tether_serve):
    protocols: list[object] = []
    ended = threading.Event()

    async def app(scope, receive, send):
        if scope["type"] != "websocket":
            return
        assert (await receive())["type"] == "websocket.connect"
        assert any(name == b"sec-websocket-key" for name, _ in scope["headers"])  # the scope keeps its headers
        await send({"type": "websocket.accept"})
        protocols.append(receive.__self__)
        while (message := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": message["text"]})
        ended.set()

    server = tether_serve(app)
    async with websockets.connect(f"{server.ws_url}/", open_timeout=WAIT) as ws:
        await ws.send("hello")
        assert await asyncio.wait_for(ws.recv(), WAIT) == "hello"
        (protocol,) = protocols
        assert protocol.request is None and protocol.response is None
        assert isinstance(protocol.queue, Inbox) and isinstance(protocol.writable, Writable)
        assert isinstance(protocol.loop, Timers)
        assert protocol.ping_timer is not None  # the keepalive is scheduled, on the shared timers
    assert await asyncio.to_thread(ended.wait, WAIT)


async def frames_until_closed(port: int) -> list[tuple[int, bytes]]:
    """Open a WebSocket by hand and answer nothing, not even a ping: the (opcode, payload) of each frame the server
    sends until it closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    frames: list[tuple[int, bytes]] = []
    try:
        while True:
            try:
                header = await reader.readexactly(2)
            except asyncio.IncompleteReadError:  # the server closed the connection
                return frames
            opcode, length = header[0] & 0x0F, header[1] & 0x7F  # the server's frames are short and unmasked here
            frames.append((opcode, await reader.readexactly(length)))
    finally:
        writer.close()


async def test_the_keepalive_closes_a_client_that_answers_no_ping_with_1011(tether_serve):
    async def app(scope, receive, send):
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            await receive()

    server = tether_serve(app, ws_ping_interval=0.1, ws_ping_timeout=0.1)
    frames = await asyncio.wait_for(frames_until_closed(server.port), WAIT)
    assert [opcode for opcode, _ in frames] == [0x9, 0x8]  # a ping, then the close for want of its pong
    assert int.from_bytes(frames[1][1][:2], "big") == 1011


async def test_a_client_that_answers_the_pings_stays_open_across_several(tether_serve):
    protocols: list[object] = []

    async def app(scope, receive, send):
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        protocols.append(receive.__self__)
        while (message := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": message["text"]})

    server = tether_serve(app, ws_ping_interval=0.1, ws_ping_timeout=0.1)
    async with websockets.connect(f"{server.ws_url}/", open_timeout=WAIT) as ws:
        await ws.send("first")
        assert await asyncio.wait_for(ws.recv(), WAIT) == "first"
        (protocol,) = protocols
        pings: set[float] = set()
        deadline = time.monotonic() + WAIT
        while len(pings) < 3:  # three pings sent, each after the pong of the one before
            assert time.monotonic() < deadline, "fewer than three keepalive pings"
            if protocol.ping_sent_at:
                pings.add(protocol.ping_sent_at)
            await asyncio.sleep(0.01)
        await ws.send("still open")
        assert await asyncio.wait_for(ws.recv(), WAIT) == "still open"

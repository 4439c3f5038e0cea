"""The outbound queue (tether.outbound): a client that reads slower than it is sent to never blocks its consumer.

The first tests drive an ``Outbox`` with a stand-in for the server's ``send`` that pushes back while it is paused, as
uvicorn's does while its transport's buffer is full. The live tests run a server in a subprocess (to read its RSS)
with a client on a raw socket that stops reading while 10,000 messages are sent to it, one test per policy, and the
``disconnect`` one again on granian, whose ``send`` suspends for every frame.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import websockets
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from django.urls import path

from tether import outbound
from tether.generic.websocket import AsyncWebsocketConsumer
from tether.limits import SLOW_CLIENT, outbound_queue_size, slow_client_policy
from tether.outbound import Outbox, State, snapshot
from tether.routing import ProtocolTypeRouter, URLRouter

WAIT = 30
SRC_DIR = Path(__file__).resolve().parent.parent / "src"


class PausableSend:
    """A server ``send`` that takes messages at once, or waits while ``paused`` like uvicorn's with a full buffer."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.writable = asyncio.Event()
        self.writable.set()
        self.transport = self  # abort_connection finds the transport on the send's object, as with uvicorn
        self.aborted = False
        self.trickle = False  # take one message each time writable is set, as a client that reads slowly
        self.in_send = 0  # sends waiting for writable

    def abort(self) -> None:
        self.aborted = True

    async def send(self, message: dict[str, Any]) -> None:
        self.in_send += 1
        try:
            await self.writable.wait()
        finally:
            self.in_send -= 1
        self.sent.append(message)
        if self.trickle:
            self.writable.clear()


class PollingSend(PausableSend):
    """A server ``send`` that polls, one bare ``yield`` (``asyncio.sleep(0)``) per loop turn, until writable."""

    async def send(self, message: dict[str, Any]) -> None:
        while not self.writable.is_set():  # noqa: ASYNC110  # polling is what this stand-in is for
            await asyncio.sleep(0)
        self.sent.append(message)


class HopSend:
    """A server ``send`` as granian's: an awaitable whose ``__await__`` is a plain iterator (no ``send``, ``throw`` or
    ``close``), yielding once a future that the loop completes at its next turn."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, message: dict[str, Any]) -> Any:
        return _Hop(self.sent, message)


class _Hop:
    def __init__(self, sent: list[dict[str, Any]], message: dict[str, Any]) -> None:
        self.sent, self.message = sent, message
        self.future: asyncio.Future[None] | None = None

    def __await__(self) -> _Hop:
        return self

    def __iter__(self) -> _Hop:
        return self

    def __next__(self) -> asyncio.Future[None]:
        if self.future is not None:
            self.future.result()
            raise StopIteration
        loop = asyncio.get_running_loop()
        self.future = loop.create_future()
        loop.call_soon(self.take)
        self.future._asyncio_future_blocking = True
        return self.future

    def take(self) -> None:
        self.sent.append(self.message)
        assert self.future is not None
        self.future.set_result(None)


def frame(n: int, key: int | None = None) -> dict[str, Any]:
    return {"type": "websocket.send", "text": json.dumps({"n": n, "key": key})}


def numbers(messages: list[dict[str, Any]]) -> list[int]:
    return [json.loads(m["text"])["n"] for m in messages if m["type"] == "websocket.send"]


def outbox(server: PausableSend, policy: str, size: int = 4, stall: float = WAIT) -> Outbox:
    def key(message: dict[str, Any]) -> Any:
        return json.loads(message["text"])["key"]

    return Outbox(
        server.send,
        policy=lambda: policy,
        size=lambda: size,
        conflate_key=key,
        name=lambda: "test",
        stall_timeout=lambda: stall,
    )


def paused(policy: str, size: int = 4, stall: float = WAIT) -> tuple[PausableSend, Outbox]:
    """An outbox whose server pushes back from the first message on."""
    server = PausableSend()
    server.writable.clear()
    return server, outbox(server, policy, size, stall)


async def settle(server: PausableSend, box: Outbox) -> None:
    server.writable.set()
    for _ in range(100):
        if box.state is State.DIRECT:
            return
        await asyncio.sleep(0)
    raise AssertionError("the writer did not empty the queue")


async def test_a_client_that_keeps_up_costs_no_task():
    server = PausableSend()
    box = outbox(server, "disconnect")
    tasks = len(asyncio.all_tasks())
    for n in range(100):
        await box.send(frame(n))
    assert numbers(server.sent) == list(range(100))
    assert box.state is State.DIRECT and len(asyncio.all_tasks()) == tasks


async def test_a_send_the_server_pushed_back_is_finished_without_a_task():
    """On granian every send suspends once: a task per message cost more than the rest of tether's echo."""
    server, box = paused("disconnect", size=10)
    tasks = len(asyncio.all_tasks())
    for n in range(3):
        await box.send(frame(n))
    assert box.state is State.QUEUEING and len(asyncio.all_tasks()) == tasks
    await settle(server, box)
    assert numbers(server.sent) == [0, 1, 2] and len(asyncio.all_tasks()) == tasks


async def test_messages_queue_behind_a_send_the_server_pushed_back_and_go_out_in_order():
    server, before = PausableSend(), snapshot()
    box = outbox(server, "disconnect", size=10)
    await box.send(frame(0))
    server.writable.clear()
    for n in range(1, 6):
        await box.send(frame(n))  # returns at once: the consumer never waits for its client
    assert box.state is State.QUEUEING and numbers(server.sent) == [0]
    await settle(server, box)
    assert numbers(server.sent) == [0, 1, 2, 3, 4, 5]
    assert snapshot()["backlogs"] == before["backlogs"] + 1
    await box.send(frame(6))  # direct again
    assert numbers(server.sent)[-1] == 6 and box.state is State.DIRECT


async def test_a_send_that_suspends_every_time_gets_every_message_in_order_with_no_task():
    """granian's send awaitable suspends once per message, for a hop to its runtime."""
    server = HopSend()
    box = outbox(server, "disconnect", size=10)  # type: ignore[arg-type]
    tasks = len(asyncio.all_tasks())
    for n in range(5):
        await box.send(frame(n))  # the first is in the server's hands, the others wait behind it
    assert box.state is State.QUEUEING and len(asyncio.all_tasks()) == tasks
    for _ in range(20):
        await asyncio.sleep(0)
    await box.send(frame(5))
    for _ in range(5):
        await asyncio.sleep(0)
    assert numbers(server.sent) == list(range(6)) and box.state is State.DIRECT


async def test_a_burst_over_the_queue_size_reaches_a_client_that_reads_when_every_send_suspends():
    """On granian a handler that sends more frames than the queue holds, without letting the loop run, fills the
    queue before the server has finished one send; its frames wait for the server's hop instead (HOP_GRACE)."""
    before = snapshot()
    server = HopSend()
    box = outbox(server, "disconnect", size=4)  # type: ignore[arg-type]
    for n in range(50):
        await box.send(frame(n))
    for _ in range(20):
        await asyncio.sleep(0)
    assert numbers(server.sent) == list(range(50)) and box.state is State.DIRECT
    assert snapshot()["slow_client_disconnects"] == before["slow_client_disconnects"]


async def test_a_full_queue_whose_send_waited_past_the_hop_grace_closes_at_once():
    _server, box = paused("disconnect", size=2)
    for n in range(3):
        await box.send(frame(n))  # one in the server's hands, two waiting: full
    await asyncio.sleep(outbound.HOP_GRACE)
    sending = box.send(frame(3))  # the client has taken nothing for longer than a hop: too slow
    with pytest.raises(StopIteration):
        sending.send(None)  # done in one step: it never waited
    assert box.state in (State.CLOSING, State.CLOSED)
    await box.close()


@pytest.fixture
def long_hop_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    """A frame that finds the queue full waits for room for as long as a test needs (``HOP_GRACE``)."""
    monkeypatch.setattr(outbound, "HOP_GRACE", WAIT)


async def full(size: int = 1, stall: float = WAIT) -> tuple[PausableSend, Outbox]:
    """A ``disconnect`` outbox whose server holds one frame and whose queue is full, under ``long_hop_grace``."""
    server, box = paused("disconnect", size=size, stall=stall)
    for n in range(size + 1):
        await box.send(frame(n))
    return server, box


async def waiting(box: Outbox, n: int) -> asyncio.Task[None]:
    """A task sending ``frame(n)``, once it waits for room."""
    task = asyncio.get_running_loop().create_task(box.send(frame(n)))
    for _ in range(3):
        await asyncio.sleep(0)
    assert not task.done(), "the frame did not wait for room"
    return task


async def test_a_sender_cancelled_while_it_waits_for_room_leaves_the_other_waiting_senders_alone(long_hop_grace):
    """With ``max_concurrency`` above 1 several handlers may wait; a disconnect or a handler's own timeout cancelling
    one of them must not cancel what the others wait on."""
    server, box = await full()
    cancelled, other = await waiting(box, 2), await waiting(box, 3)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    await asyncio.sleep(0)
    assert not other.done()
    server.writable.set()
    await asyncio.wait_for(other, WAIT)
    await settle(server, box)
    assert numbers(server.sent) == [0, 1, 3] and box.closer is None


async def test_a_sender_cancelled_while_it_waits_for_room_sends_nothing_and_leaves_no_timer(long_hop_grace):
    server, box = await full()
    loop = asyncio.get_running_loop()
    timers = sum(1 for handle in loop._scheduled if not handle.cancelled())  # type: ignore[attr-defined]
    task = await waiting(box, 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sum(1 for handle in loop._scheduled if not handle.cancelled()) == timers  # type: ignore[attr-defined]
    await settle(server, box)
    assert numbers(server.sent) == [0, 1]


async def test_concurrent_senders_waiting_for_room_take_it_one_at_a_time_without_overfilling(long_hop_grace):
    before = snapshot()
    server, box = await full(size=2)
    senders = [await waiting(box, n) for n in range(3, 7)]
    server.trickle = True  # the client takes one frame each time it reads: room for one waiting frame at a time
    for _ in range(10):
        server.writable.set()
        for _ in range(5):
            await asyncio.sleep(0)
        assert len(box.queue) <= 2 and box.closer is None
    server.trickle = False
    await asyncio.wait_for(asyncio.gather(*senders), WAIT)
    await settle(server, box)
    assert sorted(numbers(server.sent)) == list(range(7)) and numbers(server.sent)[:3] == [0, 1, 2]
    assert snapshot()["slow_client_disconnects"] == before["slow_client_disconnects"]


@pytest.mark.parametrize("end", ["close", "failed send", "stall watchdog"])
async def test_a_sender_waiting_for_room_hears_at_once_that_the_connection_ended(monkeypatch, long_hop_grace, end):
    monkeypatch.setattr(outbound, "CLOSE_GRACE", 0.05)
    server, box = await full(stall=0.05 if end == "stall watchdog" else WAIT)
    task = await waiting(box, 2)
    if end == "close":
        await box.close()
    elif end == "failed send":
        box.fail(OSError("the client went away"))
    with pytest.raises(ConnectionResetError):  # the watchdog closes the client after 0.05 s, long before HOP_GRACE
        await asyncio.wait_for(task, WAIT)
    assert numbers(server.sent) == []
    await box.close()


async def test_drop_oldest_keeps_the_latest_messages_and_counts_the_drops(caplog):
    before = snapshot()
    server, box = paused("drop_oldest", size=4)
    with caplog.at_level(logging.WARNING, "tether.outbound"):
        for n in range(20):
            await box.send(frame(n))
    await settle(server, box)
    # 0 was in the server's hands when it pushed back; of the 19 that waited, the last 4 are left.
    assert numbers(server.sent) == [0, 16, 17, 18, 19]
    assert snapshot()["messages_dropped"] == before["messages_dropped"] + 15
    assert len(caplog.records) == 1 and "drop_oldest" in caplog.records[0].getMessage()


async def test_conflate_keeps_the_latest_message_per_key_in_the_place_of_the_first():
    before = snapshot()
    server, box = paused("conflate", size=4)
    for n in range(30):
        await box.send(frame(n, key=n % 3))
    await box.send(frame(99))  # no key: waits in line, never conflated
    await settle(server, box)
    # 0 was in the server's hands; then keys 1, 2 and 0 queued in that order, each holding its latest message.
    assert numbers(server.sent) == [0, 28, 29, 27, 99]
    assert snapshot()["messages_conflated"] == before["messages_conflated"] + 26
    assert snapshot()["messages_dropped"] == before["messages_dropped"]


async def test_a_close_keeps_its_place_under_drop_oldest():
    server, box = paused("drop_oldest", size=2)
    await box.send(frame(0))
    await box.send({"type": "websocket.close", "code": 1000})
    await box.send(frame(1))
    await box.send(frame(2))
    await settle(server, box)
    assert [m["type"] for m in server.sent] == ["websocket.send", "websocket.close", "websocket.send"]
    assert numbers(server.sent) == [0, 2]


async def test_disconnect_closes_with_4008_when_the_client_takes_the_close(caplog):
    before = snapshot()
    server, box = paused("disconnect", size=3)
    with caplog.at_level(logging.WARNING, "tether.outbound"):
        for n in range(4):
            await box.send(frame(n))
        await box.send(frame(4))  # the queue (1, 2, 3, 4) is over 3: the client is too slow
        with pytest.raises(ConnectionResetError):
            await box.send(frame(5))
    await asyncio.sleep(0)
    server.writable.set()  # the client reads again within the grace: it is told why
    await asyncio.wait_for(asyncio.shield(box.closer), WAIT)  # type: ignore[arg-type]
    assert server.sent == [{"type": "websocket.close", "code": SLOW_CLIENT, "reason": "client too slow"}]
    assert not server.aborted
    after = snapshot()
    assert after["slow_client_disconnects"] == before["slow_client_disconnects"] + 1
    assert after["messages_discarded"] == before["messages_discarded"] + 5  # four waiting and one in the server's hands
    assert len(caplog.records) == 1 and "4008" in caplog.records[0].getMessage()
    await box.close()


async def test_disconnect_aborts_a_client_that_does_not_take_the_close(monkeypatch):
    monkeypatch.setattr(outbound, "CLOSE_GRACE", 0.05)
    server, box = paused("disconnect", size=1)
    for n in range(3):
        await box.send(frame(n))
    await asyncio.wait_for(asyncio.shield(box.closer), WAIT)  # type: ignore[arg-type]
    assert server.aborted and server.sent == []
    await box.close()


@pytest.mark.parametrize("policy", ["drop_oldest", "conflate"])
async def test_a_client_that_takes_nothing_for_the_stall_timeout_is_closed_whatever_the_policy(monkeypatch, policy):
    monkeypatch.setattr(outbound, "CLOSE_GRACE", 0.05)
    before = snapshot()
    server, box = paused(policy, stall=0.1)
    await box.send(frame(0))
    await box.send(frame(1))
    deadline = time.monotonic() + WAIT
    while box.closer is None:  # the watchdog fires once 0.1 s pass without progress
        assert time.monotonic() < deadline, "the stalled client was never closed"
        await asyncio.sleep(0.02)
    await asyncio.wait_for(asyncio.shield(box.closer), WAIT)
    assert server.aborted and snapshot()["slow_client_disconnects"] == before["slow_client_disconnects"] + 1
    await box.close()


async def test_a_send_that_keeps_suspending_is_taken_for_stalled(monkeypatch):
    """Each turn of the loop a polling send asks for is no progress: the client has still taken nothing."""
    monkeypatch.setattr(outbound, "CLOSE_GRACE", 0.05)
    server = PollingSend()
    server.writable.clear()
    box = outbox(server, "drop_oldest", stall=0.1)
    await box.send(frame(0))
    deadline = time.monotonic() + WAIT
    while box.closer is None:
        assert time.monotonic() < deadline, "the stalled client was never closed"
        await asyncio.sleep(0.02)
    await asyncio.wait_for(asyncio.shield(box.closer), WAIT)
    assert server.aborted and server.sent == []
    await box.close()


async def test_a_client_that_reads_slowly_is_not_taken_for_stalled():
    server, box = paused("drop_oldest", size=100, stall=1.0)
    server.trickle = True
    for n in range(20):
        await box.send(frame(n))
    for taken in range(1, 20):  # one frame taken every 0.05 s: 1 s in all, but never 1 s without one
        server.writable.set()
        for _ in range(100):  # a few loop turns until the writer took it
            if len(server.sent) == taken:
                break
            await asyncio.sleep(0)
        assert len(server.sent) == taken
        await asyncio.sleep(0.05)
    server.trickle = False
    await settle(server, box)
    assert numbers(server.sent) == list(range(20)) and box.closer is None


async def test_a_client_that_caught_up_gets_the_whole_stall_timeout_when_it_falls_behind_again(monkeypatch):
    monkeypatch.setattr(outbound, "CLOSE_GRACE", 0.05)
    loop = asyncio.get_running_loop()
    server, box = paused("drop_oldest", stall=1.0)
    first = loop.time()
    await box.send(frame(0))  # falls behind: the watchdog is armed for first + 1 s
    await settle(server, box)
    await asyncio.sleep(0.5)
    server.writable.clear()
    again = loop.time()
    await box.send(frame(1))  # behind again, and stays so: closed 1 s after this, not at first + 1 s
    deadline = time.monotonic() + WAIT
    while box.closer is None:
        assert time.monotonic() < deadline, "the stalled client was never closed"
        await asyncio.sleep(0.02)
    assert loop.time() >= again + 1.0 > first + 1.0
    await box.close()


async def test_close_abandons_the_send_in_the_servers_hands():
    server, box = paused("drop_oldest")
    await box.send(frame(0))
    await box.send(frame(1))
    await box.close()
    assert box.state is State.CLOSED
    server.writable.set()  # the client reads again: nothing of the closed connection goes out
    for _ in range(10):
        await asyncio.sleep(0)
    assert server.sent == [] and server.in_send == 0  # the server's send unwound


def test_the_settings_are_read_and_checked():
    assert slow_client_policy() == "disconnect" and outbound_queue_size() == 256
    with override_settings(TETHER_SLOW_CLIENT_POLICY="conflate", TETHER_OUTBOUND_QUEUE_SIZE=10):
        assert slow_client_policy() == "conflate" and outbound_queue_size() == 10
    with override_settings(TETHER_SLOW_CLIENT_POLICY="drop"), pytest.raises(ImproperlyConfigured, match="drop_oldest"):
        slow_client_policy()
    with override_settings(TETHER_OUTBOUND_QUEUE_SIZE=0), pytest.raises(ImproperlyConfigured, match="QUEUE_SIZE"):
        outbound_queue_size()


def test_a_bad_policy_or_size_on_a_consumer_is_refused_by_as_asgi():
    with pytest.raises(ValueError, match=r"AsyncWebsocketConsumer.slow_client_policy must be one of"):
        AsyncWebsocketConsumer.as_asgi(slow_client_policy="dropoldest")
    with pytest.raises(ValueError, match="outbound_queue_size must be a positive number"):
        AsyncWebsocketConsumer.as_asgi(outbound_queue_size=-1)
    AsyncWebsocketConsumer.as_asgi(slow_client_policy="conflate", outbound_queue_size=10)


# -- live: a client that stops reading, on a server in a subprocess ---------------------------------------------------

SERVER_SCRIPT = textwrap.dedent(
    """
    import json
    import os

    import django
    from django.conf import settings

    settings.configure(
        INSTALLED_APPS=["tether"],
        SECRET_KEY="not secret",
        TETHER_SLOW_CLIENT_POLICY=os.environ["POLICY"],
        TETHER_WS_PING_INTERVAL=float(os.environ.get("PING", 20)),
        TETHER_WS_PING_TIMEOUT=float(os.environ.get("PING", 20)),
    )
    django.setup()

    from django.urls import path

    from tether.generic.websocket import AsyncWebsocketConsumer, WebsocketConsumer
    from tether.outbound import snapshot
    from tether.routing import ProtocolTypeRouter, URLRouter
    from tether.server import bind_socket, serve

    flood = {"sent": 0, "done": False, "closed": None}
    PADDING = "x" * 8192


    def message(n):
        return json.dumps({"n": n, "key": n % 10, "padding": PADDING})


    class Flood(AsyncWebsocketConsumer):
        def conflate_key(self, message):
            return json.loads(message["text"])["key"]

        async def receive(self, text_data=None, bytes_data=None):
            try:
                for n in range(10_000):
                    await self.send(text_data=message(n))
                    flood["sent"] = n + 1
            finally:
                flood["done"] = True

        async def disconnect(self, code):
            flood["closed"] = code


    class SyncFlood(WebsocketConsumer):
        def conflate_key(self, message):
            return json.loads(message["text"])["key"]

        def receive(self, text_data=None, bytes_data=None):
            try:
                for n in range(10_000):
                    self.send(text_data=message(n))
                    flood["sent"] = n + 1
            finally:
                flood["done"] = True

        def disconnect(self, code):
            flood["closed"] = code


    class Echo(WebsocketConsumer):
        def receive(self, text_data=None, bytes_data=None):
            self.send(text_data=json.dumps({"flood": flood, "counters": snapshot()}))


    routes = [path("flood/", Flood.as_asgi()), path("syncflood/", SyncFlood.as_asgi()), path("echo/", Echo.as_asgi())]
    sock = bind_socket("127.0.0.1", 0)
    print(sock.getsockname()[1], flush=True)
    serve(ProtocolTypeRouter({"websocket": URLRouter(routes)}), sock, verbosity=0)
    """
)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def open_raw_websocket(port: int, path: str) -> socket.socket:
    """A WebSocket opened by hand, so that the test decides when (and whether) anything is read."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    response = b""
    while not response.endswith(b"\r\n\r\n"):
        response += sock.recv(1)
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


def masked_text_frame(text: str) -> bytes:
    data, mask = text.encode(), os.urandom(4)
    return bytes([0x81, 0x80 | len(data)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def read_messages(sock: socket.socket, enough: Any) -> tuple[list[dict[str, Any]], int | None]:
    """Text messages until ``enough(messages)`` or the server closes; and the close code (``None``: cut or enough)."""
    messages: list[dict[str, Any]] = []
    try:
        while not enough(messages):
            opcode, length = read_exactly(sock, 2)
            length &= 0x7F
            if length == 126:
                length = int.from_bytes(read_exactly(sock, 2), "big")
            elif length == 127:
                length = int.from_bytes(read_exactly(sock, 8), "big")
            payload = read_exactly(sock, length)
            if opcode & 0x0F == 0x8:
                return messages, int.from_bytes(payload[:2], "big")
            if opcode & 0x0F == 0x1:
                messages.append(json.loads(payload))
    except (EOFError, ConnectionResetError):
        pass
    return messages, None


async def wait_for_stats(other: Any, until: Any) -> dict[str, Any]:
    """Ask the other client's consumer for the flood's progress until ``until(stats)``; each answer within WAIT."""
    deadline = time.monotonic() + WAIT
    while True:
        await other.send("stats?")
        stats = json.loads(await asyncio.wait_for(other.recv(), WAIT))
        if until(stats):
            return stats
        assert time.monotonic() < deadline, f"the flood did not get there: {stats}"
        await asyncio.sleep(0.05)


async def start_server(tmp_path: Path, **env: str) -> tuple[asyncio.subprocess.Process, int]:
    """``SERVER_SCRIPT`` in a subprocess (to read its RSS), with ``env`` added to the environment; and its port."""
    script = tmp_path / "server.py"
    script.write_text(SERVER_SCRIPT)
    environment = {**os.environ, "PYTHONPATH": str(SRC_DIR), "PYTHONUNBUFFERED": "1", **env}
    environment.pop("DJANGO_SETTINGS_MODULE", None)
    process = await asyncio.create_subprocess_exec(sys.executable, str(script), stdout=subprocess.PIPE, env=environment)
    assert process.stdout is not None
    return process, int(await asyncio.wait_for(process.stdout.readline(), WAIT))


#: When the client that finally reads has all it will get: the last message (drop_oldest), the last one of each key
#: (conflate), or never: it reads until the connection ends (disconnect).
ENOUGH = {
    "disconnect": lambda messages: False,
    "drop_oldest": lambda messages: bool(messages) and messages[-1]["n"] == 9_999,
    "conflate": lambda messages: sum(message["n"] >= 9_990 for message in messages) == 10,
}


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the server's RSS from /proc")
@pytest.mark.parametrize(
    ("policy", "route"),
    [("disconnect", "/flood/"), ("disconnect", "/syncflood/"), ("drop_oldest", "/flood/"), ("conflate", "/flood/")],
)
async def test_a_client_that_never_reads_gets_the_policy_and_others_are_unaffected(tmp_path, policy, route):
    """10,000 messages of 8 KiB to a client that stops reading: the policy is applied and counted, the server's memory
    stays bounded (80 MB if they all waited), and another client keeps getting answers meanwhile.

    Before the outbound queue, the flood stopped for good in ``send`` at about the 500th message (the kernel's
    buffers full); a sync consumer stopped there held the thread of every sync consumer of the process, so the other
    client's handshake timed out.
    """
    process, port = await start_server(tmp_path, POLICY=policy)
    raw = None
    try:
        async with websockets.connect(f"ws://127.0.0.1:{port}/echo/", open_timeout=WAIT, compression=None) as other:
            await wait_for_stats(other, lambda stats: True)
            before = rss_bytes(process.pid)
            raw = await asyncio.to_thread(open_raw_websocket, port, route)
            raw.sendall(masked_text_frame("go"))  # and read nothing
            stats = await wait_for_stats(other, lambda stats: stats["flood"]["done"])
            grown = rss_bytes(process.pid) - before
            counters, sent = stats["counters"], stats["flood"]["sent"]
            # An async flood never lets the writer run, so its backlog starts once; a sync one hands the loop each
            # frame, so the writer may catch up while the kernel's buffers still take data, and start again.
            assert counters["backlogs"] == 1 if route == "/flood/" else counters["backlogs"] >= 1
            assert grown < 16_000_000, f"the server grew by {grown / 1e6:.1f} MB"

            if policy == "disconnect":
                # The handler's sends failed quietly once the client was found too slow: the one in the server's
                # hands when it pushed back, 256 waiting, and the one that overflowed were discarded.
                assert counters["slow_client_disconnects"] == 1 and sent < 10_000
                assert counters["messages_discarded"] == 258
                assert counters["messages_dropped"] == counters["messages_conflated"] == 0
            else:
                assert sent == 10_000 and counters["slow_client_disconnects"] == 0

            if policy == "disconnect":
                # The server could not write a close frame to a client that did not read: it cut the connection
                # before the client reads: the consumer's disconnect() saw what uvicorn reports for any connection
                # lost after its handshake, 1005 (4008 is for a client that takes the close frame in time).
                stats = await wait_for_stats(other, lambda stats: stats["flood"]["closed"] is not None)
                assert stats["flood"]["closed"] == 1005
            received, code = await asyncio.to_thread(read_messages, raw, ENOUGH[policy])
            await wait_for_stats(other, lambda stats: True)  # still answered after it all

        seen = [message["n"] for message in received]
        if policy == "disconnect":
            assert code is None
            assert seen == list(range(len(seen))) and len(seen) <= sent - 258
        elif policy == "drop_oldest":
            assert seen == sorted(seen) and seen[-256:] == list(range(10_000 - 256, 10_000))
            assert len(seen) + counters["messages_dropped"] == 10_000
        else:
            latest = {message["key"]: message["n"] for message in received}
            assert latest == {key: 9_990 + key for key in range(10)}
            assert len(seen) + counters["messages_conflated"] == 10_000 and counters["messages_dropped"] == 0
    finally:
        if raw is not None:
            raw.close()
        process.terminate()
        await asyncio.wait_for(process.wait(), WAIT)


async def test_a_client_that_stops_reading_is_closed_under_drop_oldest_too(tmp_path):
    """With the keepalive at 0.5 s + 0.5 s, a client that took nothing for 1 s while frames waited is cut, though its
    policy never disconnects for a full queue; uvicorn's keepalive alone left such a connection open for good."""
    process, port = await start_server(tmp_path, POLICY="drop_oldest", PING="0.5")
    raw = None
    try:
        async with websockets.connect(f"ws://127.0.0.1:{port}/echo/", open_timeout=WAIT, compression=None) as other:
            raw = await asyncio.to_thread(open_raw_websocket, port, "/flood/")
            raw.sendall(masked_text_frame("go"))  # and read nothing, ever
            stats = await wait_for_stats(other, lambda stats: stats["flood"]["closed"] is not None)
        assert stats["flood"] == {"sent": 10_000, "done": True, "closed": 1005}
        assert stats["counters"]["slow_client_disconnects"] == 1
    finally:
        if raw is not None:
            raw.close()
        process.terminate()
        await asyncio.wait_for(process.wait(), WAIT)


# -- live on granian: its send suspends until granian has written the frame -------------------------------------------

#: What the granian process's flood did, read by the stats consumer (both run in that process).
granian_flood: dict[str, Any] = {"sent": 0, "done": False, "closed": None}


class GranianFlood(AsyncWebsocketConsumer):
    slow_client_policy = "disconnect"

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            for n in range(10_000):
                await self.send(text_data=json.dumps({"n": n, "padding": "x" * 8192}))
                granian_flood["sent"] = n + 1
        finally:
            granian_flood["done"] = True

    async def disconnect(self, code: int) -> None:
        granian_flood["closed"] = code


class GranianBurst(AsyncWebsocketConsumer):
    """Sends more frames than the outbound queue holds, in one go, as a handler sending a room's history does."""

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        for n in range(int(text_data or "0")):
            await self.send(text_data=json.dumps({"n": n}))


class GranianStats(AsyncWebsocketConsumer):
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        stats = {"flood": granian_flood, "counters": snapshot(), "rss": rss_bytes(os.getpid())}
        await self.send(text_data=json.dumps(stats))


#: Served by granian (``live_serve``), which imports it by this module's path.
granian_application = ProtocolTypeRouter(
    {
        "websocket": URLRouter(
            [
                path("flood/", GranianFlood.as_asgi()),
                path("burst/", GranianBurst.as_asgi()),
                path("stats/", GranianStats.as_asgi()),
            ]
        )
    }
)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the server's RSS from /proc")
@pytest.mark.parametrize("live_serve", ["granian"], indirect=True)
async def test_a_client_that_never_reads_is_closed_as_too_slow_on_granian(live_serve):
    """granian's send always suspends, so every frame goes through the queue's callback path: the policy applies once
    the queue is full, the send in granian's hands is abandoned, the server's memory stays bounded, frames arrive in
    order. (The flood's frames wait for granian's hops until the kernel's buffers are full; then the send in
    granian's hands outlives HOP_GRACE, and the queue fills.)"""
    server = live_serve("tests.test_outbound:granian_application")
    raw = None
    try:
        async with websockets.connect(f"ws://127.0.0.1:{server.port}/stats/", open_timeout=WAIT) as other:
            before = (await wait_for_stats(other, lambda stats: True))["rss"]
            raw = await asyncio.to_thread(open_raw_websocket, server.port, "/flood/")
            raw.sendall(masked_text_frame("go"))  # and read nothing
            stats = await wait_for_stats(other, lambda stats: stats["flood"]["closed"] is not None)
            counters = stats["counters"]
            # Counted as discarded: the frame in granian's hands, 256 waiting and the one that overflowed.
            assert counters["slow_client_disconnects"] == 1 and counters["messages_discarded"] == 258
            assert stats["flood"]["done"] and stats["flood"]["sent"] < 10_000
            assert stats["rss"] - before < 16_000_000, f"the server grew by {(stats['rss'] - before) / 1e6:.1f} MB"
            received, _ = await asyncio.to_thread(read_messages, raw, ENOUGH["disconnect"])
        seen = [message["n"] for message in received]
        # granian may still write the frame it held when its send was cancelled (counted as discarded all the same).
        assert seen == list(range(len(seen))) and len(seen) <= stats["flood"]["sent"] - 257
    finally:
        if raw is not None:
            raw.close()


@pytest.mark.parametrize("live_serve", ["granian"], indirect=True)
async def test_a_burst_of_more_frames_than_the_queue_holds_reaches_a_reading_client_on_granian(live_serve):
    """Every granian send suspends: 1,000 frames sent in one go (the queue holds 256) all arrive, in order."""
    server = live_serve("tests.test_outbound:granian_application")
    async with websockets.connect(f"ws://127.0.0.1:{server.port}/burst/", open_timeout=WAIT) as client:
        await client.send("1000")
        seen = [json.loads(await asyncio.wait_for(client.recv(), WAIT))["n"] for _ in range(1000)]
    assert seen == list(range(1000))

"""Delivery under drops, in Chromium (issue #13): while a sender publishes 2,000 messages over about 20 seconds to a
stream, the reader's page is taken offline for 2 seconds every 5 seconds and reloaded once (as it comes back
online after the second time, so it has messages to catch up on from before the reload); at the end the page shows
every message exactly once, in order.

The reader is tests/static/stream_page.py's ``/reader`` page (tether.js with ``resume``); the sender is a separate
WebSocket client calling the server's ``publish`` request from a thread, at a steady pace. The offline schedule is the
test's only timed part; every wait on the page polls with a deadline.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.sync.client import connect as ws_connect

from tests.example.browser import chromium_missing, chromium_session
from tests.static.stream_page import CONTROL, application

pytestmark = pytest.mark.skipif(chromium_missing() is not None, reason=chromium_missing() or "")

STREAM = "room.drops"
MESSAGES = 2000
#: The sender publishes a batch every BATCH_SECONDS: 2,000 messages in about 20 seconds.
BATCH = 10
BATCH_SECONDS = 0.1
#: Every CYCLE_SECONDS the page goes offline for OFFLINE_SECONDS, the first time FIRST_OFFLINE seconds in.
CYCLE_SECONDS = 5.0
OFFLINE_SECONDS = 2.0
FIRST_OFFLINE = 3.0
#: The page is reloaded once, the moment it is back online after this offline spell: it has fallen behind by about
#: two seconds of messages, which it must get from where it was before the reload.
RELOAD_AFTER_SPELL = 2


browser = pytest.fixture(scope="module", name="browser")(chromium_session)


class Sender(threading.Thread):
    """Publishes ``MESSAGES`` messages ``{"n": 1}`` ... to ``STREAM``, ``BATCH`` at a time, at a steady pace."""

    def __init__(self, ws_url: str) -> None:
        super().__init__(name="sender", daemon=True)
        self.ws_url = ws_url
        self.error: BaseException | None = None
        self.published = 0

    def run(self) -> None:
        try:
            with ws_connect(f"{self.ws_url}/streams/?user=sender", open_timeout=20) as ws:
                start = time.monotonic()
                for batch, first in enumerate(range(1, MESSAGES + 1, BATCH)):
                    delay = start + batch * BATCH_SECONDS - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)  # the pace of the sender, not a synchronisation
                    params = {"stream": STREAM, "count": BATCH, "first": first}
                    ws.send(json.dumps({"type": "request", "id": batch, "method": "publish", "params": params}))
                    reply = json.loads(ws.recv(timeout=30))
                    assert reply.get("id") == batch and "result" in reply, reply
                    self.published = reply["result"]["offset"]
        except BaseException as error:  # reported by the test
            self.error = error


@pytest.fixture
def reader(browser: Any, serve: Any, settings: Any) -> Iterator[tuple[Any, Any, Any]]:
    # The whole test's messages stay in history (1,000 by default): a reader slowed down by a loaded machine may fall
    # far behind and still catch up, which is what is tested, rather than get a reload verdict.
    settings.TETHER_STREAMS = {STREAM: {"max_length": 2 * MESSAGES}}
    CONTROL.update(gate_open=True)
    server = serve(application)
    context = browser.new_context()
    context.set_default_timeout(30_000)
    page = context.new_page()
    page.goto(server.url + "/reader")
    page.wait_for_function("socket.state === 'open'")
    yield server, context, page
    context.close()


@pytest.mark.timeout(240)  # about 25 s when things work; generous for a loaded machine
def test_a_page_taken_offline_every_five_seconds_and_reloaded_once_shows_every_message_once_in_order(reader):
    server, context, page = reader
    sender = Sender(server.ws_url)
    sender.start()
    start = time.monotonic()
    reloaded = False
    offline_spells = 0
    deadline = start + 120  # the sender needs about 20 s; this bounds the loop on a very slow machine
    next_offline = start + FIRST_OFFLINE
    while sender.is_alive() and time.monotonic() < deadline:
        now = time.monotonic()
        if now >= next_offline:
            context.set_offline(True)
            offline_spells += 1
            time.sleep(OFFLINE_SECONDS)  # the offline schedule itself
            context.set_offline(False)
            next_offline += CYCLE_SECONDS
            if offline_spells == RELOAD_AFTER_SPELL:
                page.reload()
                reloaded = True
        else:
            time.sleep(0.05)
    sender.join(timeout=max(1.0, deadline - time.monotonic()))
    assert sender.error is None, sender.error
    assert sender.published == MESSAGES
    assert reloaded and offline_spells >= 3
    # Until the last message is shown (or more than all of them): a list with holes or repeats fails at once below.
    page.wait_for_function(
        """(count) => {
            const items = document.querySelectorAll('#shown li');
            const last = items.length ? Number(items[items.length - 1].dataset.offset) : 0;
            return items.length >= count || last === count;
        }""",
        arg=MESSAGES,
        timeout=90_000,
    )
    shown = page.evaluate(
        "[...document.querySelectorAll('#shown li')].map((item) => [Number(item.dataset.offset), item.textContent])"
    )
    assert len(shown) == MESSAGES
    assert shown == [[n, str(n)] for n in range(1, MESSAGES + 1)]
    assert page.evaluate("window.drops") >= offline_spells  # each offline spell dropped the connection

"""tether.js, the browser client, in headless Chromium against a tiny page served by a real uvicorn server.

The server has an echo endpoint (a text frame ``close:<code>`` makes it close with that code), a gate that refuses
connections while it is shut, and a flaky endpoint that accepts and closes at once while ``flaky`` is set; the tests
flip those switches from Python, since the server runs in this process. Every test logs the socket's events in
``window.log`` and waits on them with bounded timeouts.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings
from django.urls import path

import tether
from tests.example.browser import chromium_missing, chromium_session
from tether.drain import start_drain
from tether.generic.websocket import AsyncWebsocketConsumer
from tether.routing import ProtocolTypeRouter, URLRouter

pytestmark = pytest.mark.skipif(chromium_missing() is not None, reason=chromium_missing() or "")

TETHER_JS = Path(tether.__file__).parent / "static" / "tether" / "tether.js"
WAIT_MS = 5000

#: Switches of the test server, flipped by the tests.
CONTROL = {"gate_open": False, "flaky": True}

PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><script src="/tether.js"></script>
<script>
  window.log = [];
  window.track = (socket) => {
    for (const type of ["open", "close", "message", "reconnecting", "drop"]) {
      socket.on(type, (event) => window.log.push({
        type, state: socket.state, code: event.code, willReconnect: event.willReconnect, attempt: event.attempt,
        delay: event.delay, reconnected: event.reconnected, json: event.json,
        data: typeof event.data === "string" ? event.data : (event.data ? event.data.constructor.name : undefined),
      }));
    }
    return (window.socket = socket);
  };
  window.events = (type) => window.log.filter((entry) => entry.type === type);
</script></head><body></body></html>"""


class Echo(AsyncWebsocketConsumer):
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is not None and text_data.startswith("close:"):
            await self.close(int(text_data.removeprefix("close:")))
            return
        await self.send(text_data=text_data, bytes_data=bytes_data)


class Gate(Echo):
    async def connect(self) -> None:
        if CONTROL["gate_open"]:
            await self.accept()
        else:
            await self.close()


class Flaky(Echo):
    async def connect(self) -> None:
        await self.accept()
        if CONTROL["flaky"]:
            await self.close(4001)


async def serve_page(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["path"] == "/tether.js":
        body, content_type = TETHER_JS.read_bytes(), b"text/javascript"
    else:
        body, content_type = PAGE, b"text/html; charset=utf-8"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", content_type)]})
    await send({"type": "http.response.body", "body": body})


application = ProtocolTypeRouter(
    {
        "http": serve_page,
        "websocket": URLRouter(
            [path("echo/", Echo.as_asgi()), path("gate/", Gate.as_asgi()), path("flaky/", Flaky.as_asgi())]
        ),
    }
)


browser = pytest.fixture(scope="module", name="browser")(chromium_session)


@pytest.fixture
def page(browser: Any, serve: Any) -> Iterator[Any]:
    """A fresh page on the test server, with ``track(socket)`` and ``events(type)`` defined."""
    CONTROL.update(gate_open=False, flaky=True)
    server = serve(application)
    context = browser.new_context()
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    page.goto(server.url + "/")
    yield page
    page.evaluate("window.socket && window.socket.state !== 'closed' && window.socket.close()")
    context.close()


def wait_events(page: Any, type_: str, count: int = 1, timeout: int = WAIT_MS) -> list[dict[str, Any]]:
    page.wait_for_function(f"events({type_!r}).length >= {count}", timeout=timeout)
    return page.evaluate(f"events({type_!r})")


def test_resolve_url_takes_ws_for_http_pages_and_wss_for_https_pages(page):
    urls = page.evaluate(
        """[Tether.resolveUrl("/ws/chat/", "http://example.com:8000/room/"),
            Tether.resolveUrl("ws/chat/", "https://example.com/app/page"),
            Tether.resolveUrl("wss://other.example/socket#fragment")]"""
    )
    assert urls == ["ws://example.com:8000/ws/chat/", "wss://example.com/app/ws/chat/", "wss://other.example/socket"]


def test_resolve_url_refuses_a_scheme_that_is_not_http_or_ws(page):
    error = page.evaluate("""(() => { try { Tether.resolveUrl("ftp://example.com/"); } catch (e) {
        return e.name + ": " + e.message; } })()""")
    assert error == "TypeError: tether: a WebSocket URL needs ws:, wss:, http: or https:, not ftp:"


def test_a_relative_path_connects_to_the_page_server_and_json_round_trips(page):
    assert page.evaluate("track(Tether.connect('echo/')).state") == "connecting"
    [opened] = wait_events(page, "open")
    assert (opened["state"], opened["reconnected"]) == ("open", False)
    assert page.evaluate("socket.url") == page.url.replace("http://", "ws://") + "echo/"
    assert page.evaluate("socket.sendJson({hello: ['world', 1]})") is True
    [message] = wait_events(page, "message")
    assert message["json"] == {"hello": ["world", 1]}
    assert message["data"] == '{"hello":["world",1]}'


def test_text_that_is_not_json_and_binary_frames_have_no_json(page):
    page.evaluate("track(Tether.connect('echo/'))")
    wait_events(page, "open")
    page.evaluate("socket.send('plain words'); socket.send(new Uint8Array([1, 2, 3]))")
    plain, binary = wait_events(page, "message", 2)
    assert (plain["data"], plain.get("json")) == ("plain words", None)
    assert (binary["data"], binary.get("json")) == ("ArrayBuffer", None)


def test_backoff_delay_grows_exponentially_with_full_jitter_up_to_the_cap(page):
    delays = page.evaluate(
        """(() => {
            const options = {initialDelay: 500, maxDelay: 30000};
            const top = () => 0.999999;
            return {
                highest: [1, 2, 3, 4, 7, 20].map((attempt) => Tether.backoffDelay(attempt, options, top)),
                lowest: Tether.backoffDelay(5, options, () => 0),
                half: Tether.backoffDelay(3, options, () => 0.5),
            };
        })()"""
    )
    assert delays["highest"] == [499, 999, 1999, 3999, 29999, 29999]
    assert delays["lowest"] == 0
    assert delays["half"] == 1000


def test_a_dropped_connection_reconnects_by_itself(page):
    page.evaluate("track(Tether.connect('echo/', {initialDelay: 50, maxDelay: 100}))")
    wait_events(page, "open")
    page.evaluate("socket.send('close:4001')")
    [closed] = wait_events(page, "close")
    assert (closed["code"], closed["willReconnect"], closed["state"]) == (4001, True, "reconnecting")
    [reconnecting] = wait_events(page, "reconnecting")
    assert reconnecting["attempt"] == 1
    assert 0 <= reconnecting["delay"] < 50
    reopened = wait_events(page, "open", 2)[1]
    assert (reopened["reconnected"], reopened["state"]) == (True, "open")
    page.evaluate("socket.send('still here')")
    assert wait_events(page, "message")[0]["data"] == "still here"


def test_a_server_drain_closes_with_1012_and_the_page_comes_back_after_its_jittered_delay(page):
    # The delay is drawn from [0, initialDelay): with random() at 0.5 it is half of it, so the drain is over by then.
    page.evaluate("track(Tether.connect('echo/', {initialDelay: 600, maxDelay: 600, random: () => 0.5}))")
    wait_events(page, "open")
    with override_settings(TETHER_DRAIN_WINDOW=0, TETHER_DRAIN_TIMEOUT=1):
        start_drain()  # what the server does when it is told to stop (tether.drain)
        [closed] = wait_events(page, "close")
    assert (closed["code"], closed["willReconnect"], closed["state"]) == (1012, True, "reconnecting")
    [reconnecting] = wait_events(page, "reconnecting")
    assert (reconnecting["attempt"], reconnecting["delay"]) == (1, 300)
    reopened = wait_events(page, "open", 2)[1]
    assert reopened["reconnected"] is True
    page.evaluate("socket.send('after the restart')")
    assert wait_events(page, "message")[-1]["data"] == "after the restart"


def test_a_normal_close_by_the_server_ends_the_socket(page):
    page.evaluate("track(Tether.connect('echo/', {initialDelay: 50, maxDelay: 100}))")
    wait_events(page, "open")
    page.evaluate("socket.send('close:1000')")
    [closed] = wait_events(page, "close")
    assert (closed["code"], closed["willReconnect"], closed["state"]) == (1000, False, "closed")
    page.wait_for_timeout(300)
    assert page.evaluate("events('reconnecting').length") == 0


def test_a_close_because_the_login_ended_ends_the_socket(page):
    page.evaluate("track(Tether.connect('echo/', {initialDelay: 50, maxDelay: 100}))")
    wait_events(page, "open")
    page.evaluate("socket.send('close:4401')")
    [closed] = wait_events(page, "close")
    assert (closed["code"], closed["willReconnect"], closed["state"]) == (4401, False, "closed")


def test_should_reconnect_decides_which_closes_end_the_socket(page):
    page.evaluate("track(Tether.connect('echo/', {shouldReconnect: (event) => event.code !== 4009}))")
    wait_events(page, "open")
    page.evaluate("socket.send('close:4009')")
    assert wait_events(page, "close")[0]["willReconnect"] is False
    assert page.evaluate("socket.state") == "closed"


def test_close_stops_reconnecting_and_a_send_afterwards_throws(page):
    page.evaluate("track(Tether.connect('gate/', {initialDelay: 20, maxDelay: 40}))")
    wait_events(page, "reconnecting", 2)
    page.evaluate("socket.close()")
    closes = page.evaluate("events('close')")
    assert closes[-1]["willReconnect"] is False
    assert page.evaluate("socket.state") == "closed"
    attempts = page.evaluate("events('reconnecting').length")
    page.wait_for_timeout(300)
    assert page.evaluate("events('reconnecting').length") == attempts
    error = page.evaluate("(() => { try { socket.send('late'); } catch (e) { return e.message; } })()")
    assert error == "tether: send() on a closed socket; open a new one with Tether.connect()."


def test_sends_while_disconnected_are_queued_and_flushed_in_order_after_the_open_listeners(page):
    page.evaluate(
        """track(Tether.connect('gate/', {initialDelay: 20, maxDelay: 60}));
           socket.on('open', () => socket.send('open listener first'));
           ['one', 'two', 'three'].forEach((text) => socket.send(text));"""
    )
    wait_events(page, "reconnecting")
    assert page.evaluate("socket.queued") == 3
    CONTROL["gate_open"] = True
    messages = wait_events(page, "message", 4)
    assert [message["data"] for message in messages] == ["open listener first", "one", "two", "three"]
    assert page.evaluate("socket.queued") == 0


def test_a_full_queue_refuses_the_send_and_fires_drop(page):
    page.evaluate("track(Tether.connect('gate/', {maxQueue: 2, initialDelay: 20, maxDelay: 60}))")
    results = page.evaluate("['a', 'b', 'c'].map((text) => socket.send(text))")
    assert results == [True, True, False]
    [dropped] = wait_events(page, "drop")
    assert dropped["data"] == "c"
    assert page.evaluate("socket.queued") == 2


def test_the_backoff_grows_while_connections_fail_and_resets_after_a_stable_one(page):
    page.evaluate("track(Tether.connect('flaky/', {initialDelay: 10, maxDelay: 40, stableAfter: 300}))")
    attempts = [entry["attempt"] for entry in wait_events(page, "reconnecting", 3)[:3]]
    assert attempts == [1, 2, 3]  # each connection opened and dropped at once: not stable, the count goes on
    CONTROL["flaky"] = False
    page.wait_for_function("socket.state === 'open' && socket.attempt > 0")
    page.wait_for_function("socket.attempt === 0", timeout=2000)  # stayed open for stableAfter
    before = page.evaluate("events('reconnecting').length")
    page.evaluate("socket.send('close:4001')")
    assert wait_events(page, "reconnecting", before + 1)[before]["attempt"] == 1


def test_an_attempt_that_does_not_open_in_time_is_abandoned_and_retried(page):
    with socket.socket() as silent:  # accepts TCP connections (backlog) but never answers the handshake
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        page.evaluate(f"track(Tether.connect('ws://127.0.0.1:{port}/', {{connectTimeout: 300, initialDelay: 20}}))")
        [closed] = wait_events(page, "close", timeout=3000)
        assert closed["willReconnect"] is True
        assert wait_events(page, "reconnecting")[0]["attempt"] == 1
        page.evaluate("socket.close()")


@pytest.mark.parametrize(
    ("script", "error"),
    [
        ("new Tether.Socket('echo/', {maxQueue: -1})", 'RangeError: tether: option "maxQueue" must be a finite'),
        ("new Tether.Socket('echo/', {maxQueue: 1.5})", 'RangeError: tether: option "maxQueue" must be an integer'),
        ("new Tether.Socket('echo/', {initialDelay: 50, maxDelay: 10})", "RangeError: tether: options need 0 <"),
        ("new Tether.Socket('echo/', {reconnect: false})", 'TypeError: tether: unknown option "reconnect"'),
        ("new Tether.Socket('echo/', {binaryType: 'text'})", 'TypeError: tether: option "binaryType" must be'),
        ("new Tether.Socket('echo/', {shouldReconnect: true})", 'TypeError: tether: options "shouldReconnect"'),
        ("new Tether.Socket('echo/').close(1001)", "RangeError: tether: close() takes code 1000 or 3000-4999"),
    ],
)
def test_bad_options_and_close_codes_are_refused_with_clear_errors(page, script, error):
    message = page.evaluate(f"(() => {{ try {{ {script}; }} catch (e) {{ return e.name + ': ' + e.message; }} }})()")
    assert message.startswith(error)

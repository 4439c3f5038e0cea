"""tether.js's stream side in headless Chromium: subscribe, de-duplication by offset, resubscribing after drops,
reload verdicts, presence, requests, and resuming across a page reload; against a real ``StreamConsumer`` served by
uvicorn in this process (tests/static/stream_page.py).

Messages are published by a separate client (a ``websockets`` connection calling the server's ``publish``
request), as another user or process would. Every wait is bounded and polls the page.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.sync.client import connect as ws_connect

from tests.example.browser import chromium_missing, chromium_session
from tests.static.stream_page import CONTROL, NOTES, application

pytestmark = pytest.mark.skipif(chromium_missing() is not None, reason=chromium_missing() or "")

#: Milliseconds a page wait may take: generous for a loaded 2-core machine, never reached when things work.
WAIT_MS = 15_000

_ids = itertools.count(1)


class Publisher:
    """A protocol client of the test server, calling its requests (``publish`` above all) and waiting for replies."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws

    def call(self, method: str, **params: Any) -> Any:
        frame_id = next(_ids)
        self.ws.send(json.dumps({"type": "request", "id": frame_id, "method": method, "params": params}))
        for _ in range(10_000):
            frame = json.loads(self.ws.recv(timeout=20))
            if frame.get("type") == "reply" and frame.get("id") == frame_id:
                assert "result" in frame, frame
                return frame["result"]
        raise AssertionError(f"no reply to {method}")

    def publish(self, stream: str, count: int = 1, first: int = 1) -> dict[str, Any]:
        result: dict[str, Any] = self.call("publish", stream=stream, count=count, first=first)
        return result


browser = pytest.fixture(scope="module", name="browser")(chromium_session)


@pytest.fixture
def server(serve: Any) -> Any:
    CONTROL.update(gate_open=True)
    NOTES.clear()
    return serve(application)


@pytest.fixture
def publisher(server: Any) -> Iterator[Publisher]:
    with ws_connect(f"{server.ws_url}/streams/?user=publisher", open_timeout=20) as ws:
        yield Publisher(ws)


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    context.set_default_timeout(WAIT_MS)
    yield context
    context.close()


@pytest.fixture
def page(context: Any, server: Any) -> Any:
    page = context.new_page()
    page.goto(server.url + "/")
    return page


def open_socket(page: Any, user: str = "ada", **options: Any) -> None:
    """``window.socket``: a tether.js socket to the test server as ``user``, open."""
    page.evaluate(
        "([user, options]) => { window.socket = Tether.connect('streams/?user=' + user, options); }",
        [user, {"initialDelay": 50, "maxDelay": 200, **options}],
    )
    page.wait_for_function("socket.state === 'open'")


def subscribed(page: Any, stream: str, options: str = "{}") -> None:
    """Subscribe ``window.sub`` to ``stream`` (handing messages to ``got``) and wait for the server's confirmation."""
    page.evaluate(f"window.sub = collect({stream!r}, {options})")
    page.wait_for_function("sub.state === 'active'")


def drop_and_hold(page: Any) -> None:
    """Drop the page's connection and keep it down (the server refuses it) until the test opens the gate."""
    CONTROL["gate_open"] = False
    page.evaluate("socket._ws.close(4000)")
    page.wait_for_function("socket.state === 'reconnecting'")


def play(page: Any, **frame: Any) -> None:
    """Have the server send ``frame`` to the page as it is (a message out of turn, a reload verdict)."""
    page.evaluate("(frame) => call('play', frame)", frame)


def wait_got(page: Any, count: int) -> list[dict[str, Any]]:
    page.wait_for_function(f"got.length >= {count}", timeout=WAIT_MS)
    got: list[dict[str, Any]] = page.evaluate("got")
    return got


def offsets(got: list[dict[str, Any]]) -> list[int]:
    return [entry["offset"] for entry in got]


def test_a_subscription_hands_each_live_message_to_the_handler_in_order(page, publisher):
    open_socket(page)
    subscribed(page, "room.a")
    publisher.publish("room.a", 3)
    got = wait_got(page, 3)
    assert [entry["data"] for entry in got] == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert offsets(got) == [1, 2, 3]
    assert {entry["stream"] for entry in got} == {"room.a"}
    assert page.evaluate("[sub.epoch, sub.offset]") == [got[0]["epoch"], 3]


def test_after_a_drop_it_resubscribes_from_the_last_offset_and_gets_what_was_missed_once(page, publisher):
    open_socket(page)
    subscribed(page, "room.a")
    publisher.publish("room.a", 2)
    wait_got(page, 2)
    drop_and_hold(page)
    publisher.publish("room.a", 5, first=3)
    CONTROL["gate_open"] = True
    got = wait_got(page, 7)
    publisher.publish("room.a", 1, first=8)
    got = wait_got(page, 8)
    assert [entry["data"]["n"] for entry in got] == list(range(1, 9))
    assert offsets(got) == list(range(1, 9))


def test_an_offset_sent_again_is_not_handed_over_twice(page, publisher):
    open_socket(page)
    subscribed(page, "room.a")
    position = publisher.publish("room.a", 2)
    wait_got(page, 2)
    play(page, type="message", stream="room.a", epoch=position["epoch"], offset=2, data={"n": "again"})
    page.wait_for_function("settled.length === 1")
    publisher.publish("room.a", 1, first=3)
    got = wait_got(page, 3)
    assert [entry["data"]["n"] for entry in got] == [1, 2, 3]


def test_a_message_beyond_the_next_offset_is_not_handed_over_and_makes_it_resubscribe(page, publisher):
    open_socket(page)
    subscribed(page, "room.a", "{onSubscribe: () => { window.confirmed = (window.confirmed || 0) + 1; }}")
    position = publisher.publish("room.a", 1)
    wait_got(page, 1)
    # Play a server that lost offsets 2 and 3: it sends 4 right after 1.
    play(page, type="message", stream="room.a", epoch=position["epoch"], offset=4, data={"n": "ahead"})
    page.wait_for_function("window.confirmed === 2")  # subscribed again from offset 1
    publisher.publish("room.a", 3, first=2)
    got = wait_got(page, 4)
    assert [entry["data"]["n"] for entry in got] == [1, 2, 3, 4]
    assert offsets(got) == [1, 2, 3, 4]


def test_a_position_the_server_cannot_recover_from_calls_on_reload_and_carries_on(page, publisher):
    position = publisher.publish("room.a", 3)
    open_socket(page)
    subscribed(page, "room.a", "{position: {epoch: 'not-this-stream', offset: 2}}")
    reloads = page.evaluate("reloads")
    assert reloads == [{"stream": "room.a", "reason": "epoch", "epoch": position["epoch"], "offset": 3}]
    publisher.publish("room.a", 1, first=4)
    got = wait_got(page, 1)
    assert offsets(got) == [4]


def test_a_reload_frame_calls_on_reload_and_carries_on_from_its_position(page, publisher):
    open_socket(page)
    subscribed(page, "room.a")
    position = publisher.publish("room.a", 1)
    wait_got(page, 1)
    play(page, type="reload", stream="room.a", reason="trimmed", epoch=position["epoch"], offset=3)
    page.wait_for_function("reloads.length === 1")
    assert page.evaluate("reloads[0]") == {
        "stream": "room.a",
        "reason": "trimmed",
        "epoch": position["epoch"],
        "offset": 3,
    }
    publisher.publish("room.a", 3, first=2)  # offsets 2 and 3 are part of the reloaded state: only 4 is handed over
    got = wait_got(page, 2)
    assert offsets(got) == [1, 4]


def test_without_recover_a_subscription_starts_from_now_after_a_reconnection(page, publisher):
    open_socket(page)
    subscribed(page, "room.t", "{recover: false}")
    publisher.publish("room.t", 1)
    wait_got(page, 1)
    drop_and_hold(page)
    publisher.publish("room.t", 2, first=2)  # missed, and not wanted
    CONTROL["gate_open"] = True
    page.wait_for_function("socket.state === 'open' && sub.state === 'active'")
    publisher.publish("room.t", 1, first=4)
    got = wait_got(page, 2)
    assert [entry["data"]["n"] for entry in got] == [1, 4]


def test_a_subscription_from_a_given_position_recovers_what_came_after_it(page, publisher):
    position = publisher.publish("room.a", 5)
    open_socket(page)
    page.evaluate(f"window.sub = collect('room.a', {{position: {{epoch: {position['epoch']!r}, offset: 2}}}})")
    got = wait_got(page, 3)
    assert offsets(got) == [3, 4, 5]
    page.wait_for_function("sub.state === 'active'")
    assert page.evaluate("reloads") == []


def test_presence_counts_a_user_with_two_sockets_once_and_follows_joins_and_leaves(context, page, server):
    open_socket(page, "ada")
    subscribed(page, "room.p", "{presence: true}")
    page.wait_for_function("presence.length >= 1 && sub.members.length === 1")
    [member] = page.evaluate("sub.members")
    assert (member["user"], member["connections"], member["meta"]["name"]) == ("ada", 1, "")
    others = [context.new_page() for _ in range(2)]
    for other, user in zip(others, ["ada", "bob"], strict=True):
        other.goto(server.url + "/")
        open_socket(other, user)
        subscribed(other, "room.p", "{presence: true}")
    page.wait_for_function("sub.members.length === 2 && sub.members[0].connections === 2")
    members = page.evaluate("sub.members")
    assert [(member["user"], member["connections"]) for member in members] == [("ada", 2), ("bob", 1)]
    assert page.evaluate("presence[presence.length - 1]") == members  # onPresence has the same list
    others[1].evaluate("sub.unsubscribe()")
    page.wait_for_function("sub.members.length === 1")
    others[0].evaluate("socket.close()")
    page.wait_for_function("sub.members[0].connections === 1")


def test_a_request_resolves_with_the_result_and_rejects_with_the_error_code(page):
    open_socket(page)
    page.evaluate("call('echo', {x: [1, 2]}); call('refuse', {}); call('nothing_like_it', {})")
    page.wait_for_function("settled.length === 3")
    settled = {entry["method"]: entry for entry in page.evaluate("settled")}
    assert settled["echo"]["result"] == {"x": [1, 2]}
    assert settled["refuse"]["code"] == "not_allowed"
    assert settled["nothing_like_it"]["code"] == "not_found"


def test_a_request_without_a_reply_in_time_rejects_with_timeout(page):
    open_socket(page)
    page.evaluate("void call('slow', {seconds: 5}, {timeout: 100})")
    page.wait_for_function("settled.length === 1")
    assert page.evaluate("settled[0].code") == "timeout"


def test_a_request_in_flight_when_the_connection_drops_rejects_with_disconnected(page):
    open_socket(page)
    page.evaluate("void call('slow', {seconds: 5}); socket._ws.close(4000)")
    page.wait_for_function("settled.length === 1")
    assert page.evaluate("settled[0].code") == "disconnected"


def test_a_refused_subscription_reports_the_code_and_ends(page):
    open_socket(page)
    page.evaluate("window.errors = []; window.sub = collect('private.x', {onError: (e) => errors.push(e.code)})")
    page.wait_for_function("errors.length === 1")
    assert page.evaluate("[errors[0], sub.state]") == ["forbidden", "closed"]
    subscribed(page, "private.x".replace("private", "room"))  # the socket is still usable


def test_going_offline_drops_the_connection_at_once_and_it_comes_back_online(context, page, publisher):
    open_socket(page)
    subscribed(page, "room.a")
    context.set_offline(True)
    page.wait_for_function("socket.state === 'reconnecting'")
    publisher.publish("room.a", 2)
    context.set_offline(False)
    got = wait_got(page, 2)
    assert offsets(got) == [1, 2]


def test_with_resume_a_reload_carries_on_from_the_last_offset_handed_over(page, publisher):
    open_socket(page, resume="test")
    subscribed(page, "room.a")
    publisher.publish("room.a", 3)
    wait_got(page, 3)
    page.reload()
    publisher.publish("room.a", 2, first=4)  # while the page reloads, or before it subscribes again
    open_socket(page, resume="test")
    page.evaluate("window.sub = collect('room.a')")
    got = wait_got(page, 2)
    assert offsets(got) == [4, 5]
    assert [entry["data"]["n"] for entry in got] == [4, 5]


def test_with_resume_what_waited_in_the_queue_is_sent_after_a_reload(page):
    CONTROL["gate_open"] = False
    page.evaluate("window.socket = Tether.connect('streams/', {resume: 'test', initialDelay: 50, maxDelay: 100})")
    page.evaluate("void socket.request('note', {text: 'written before the reload'}).catch(() => {})")
    page.wait_for_function("socket.queued === 1")
    page.reload()
    CONTROL["gate_open"] = True
    page.evaluate("window.socket = Tether.connect('streams/', {resume: 'test', initialDelay: 50, maxDelay: 100})")
    page.wait_for_function("socket.state === 'open' && socket.queued === 0")
    page.evaluate("call('note', {text: 'after'})")
    page.wait_for_function("settled.length === 1")
    assert NOTES == [{"text": "written before the reload"}, {"text": "after"}]


def test_without_resume_nothing_is_kept_in_session_storage(page, publisher):
    open_socket(page)
    subscribed(page, "room.a")
    publisher.publish("room.a", 1)
    wait_got(page, 1)
    assert page.evaluate("sessionStorage.length") == 0


@pytest.mark.parametrize(
    ("script", "error"),
    [
        ("socket.subscribe('', () => {})", "TypeError: tether: subscribe() needs a stream name"),
        ("socket.subscribe('room.a')", "TypeError: tether: subscribe() needs a handler function"),
        (
            "socket.subscribe('room.a', () => {}, {presense: true})",
            'TypeError: tether: unknown subscribe option "presense"',
        ),
        (
            "socket.subscribe('room.a', () => {}, {position: {epoch: 1, offset: 2}})",
            'TypeError: tether: subscribe option "position"',
        ),
        (
            "socket.subscribe('room.a', () => {}); socket.subscribe('room.a', () => {})",
            'Error: tether: already subscribed to "room.a"',
        ),
        ("socket.request('')", "TypeError: tether: request() needs a method name"),
        ("socket.request('echo', {}, {timeout: -1})", "RangeError: tether: a request's timeout must be"),
        ("Tether.connect('streams/', {resume: ''})", 'TypeError: tether: option "resume" must be a non-empty string'),
    ],
)
def test_bad_arguments_are_refused_with_clear_errors(page, script, error):
    open_socket(page)
    message = page.evaluate(f"(() => {{ try {{ {script}; }} catch (e) {{ return e.name + ': ' + e.message; }} }})()")
    assert message is not None and message.startswith(error)

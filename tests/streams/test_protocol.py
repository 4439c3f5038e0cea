"""The stream protocol end to end on the in-memory layer: ``StreamConsumer`` (tests/project/project/streams_app.py)
served by uvicorn in a thread of the test process, spoken to by ``websockets`` clients.

The server shares the test process, so the tests can look at the layer afterwards: every refusal must leave nothing
behind (no group membership, no presence).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import websockets
from django.test import override_settings

from tests.conftest import LiveServer
from tests.layers.conftest import eventually
from tests.streams.protocol_client import WAIT, ProtocolClient, connected
from tether.layers import get_channel_layer
from tether.presence import get_presence
from tether.streams.consumer import MAX_OFFSET


@pytest.fixture
def server(serve: Any) -> LiveServer:
    from tests.project.project.streams_app import application

    return serve(application)


@pytest.fixture
async def ada(server: LiveServer) -> Any:
    async with connected(server.ws_url, "ada") as client:
        yield client


def layer_memberships() -> dict[str, set[str]]:
    """Every channel of the in-memory layer that is in a group, with its groups."""
    layer = get_channel_layer()
    return {channel: set(groups) for channel, groups in layer._memberships.items() if groups}  # type: ignore[union-attr]


async def nothing_left_behind() -> None:
    """Once every client has gone, no channel is in any group and no presence is recorded in this process."""
    await eventually(lambda: not layer_memberships(), timeout=WAIT)
    assert not get_presence(get_channel_layer()).local


# Subscribe and receive ---------------------------------------------------------------------------------------------


async def test_a_subscriber_receives_what_is_published_after_its_subscribe_in_order(ada: ProtocolClient) -> None:
    answer = await ada.subscribe("room.live")
    result = answer["result"]
    assert result["offset"] == 0 and result["recovered"] == 0 and isinstance(result["epoch"], str)

    await ada.publish("room.live", count=3)

    messages = await ada.messages(3)
    assert [(m["stream"], m["epoch"], m["offset"], m["data"]) for m in messages] == [
        ("room.live", result["epoch"], n, {"n": n}) for n in (1, 2, 3)
    ]


async def test_subscribe_receive_and_recover_on_each_live_server(live_serve: Any) -> None:
    url = live_serve("tests.project.project.streams_app:application").ws_url
    async with connected(url, "bob") as writer:
        async with connected(url, "ada") as reader:
            start = (await reader.subscribe("room.served"))["result"]
            await writer.publish("room.served", count=5)
            assert [m["offset"] for m in await reader.all_messages(5)] == [1, 2, 3, 4, 5]
        await writer.publish("room.served", count=20, first=6)
        async with connected(url, "ada") as reader:
            answer = await reader.subscribe("room.served", epoch=start["epoch"], offset=5)
            assert answer["result"] == {"epoch": start["epoch"], "offset": 25, "recovered": 20}
            assert [m["offset"] for m in reader.kept("message")] == list(range(6, 26))


async def test_a_subscribe_without_a_position_starts_from_the_stream_s_last_offset(
    server: LiveServer, ada: ProtocolClient
) -> None:
    top = await ada.publish("room.later", count=5)
    async with connected(server.ws_url, "bob") as bob:
        answer = await bob.subscribe("room.later")
        assert answer["result"] == {"epoch": top["epoch"], "offset": 5, "recovered": 0}
        await ada.publish("room.later", first=6)
        assert [m["offset"] for m in await bob.all_messages(1)] == [6]


async def test_an_unsubscribed_client_receives_nothing_more(ada: ProtocolClient) -> None:
    await ada.subscribe("room.quiet")
    answer = await ada.call({"type": "unsubscribe", "stream": "room.quiet"})
    assert answer["result"] == {"subscribed": True}
    await ada.publish("room.quiet", count=2)
    await ada.subscribe("room.other")  # a reply after the publish: anything sent for room.quiet came before it
    assert ada.kept("message") == []


async def test_unsubscribing_from_a_stream_not_subscribed_to_succeeds(ada: ProtocolClient) -> None:
    answer = await ada.call({"type": "unsubscribe", "stream": "room.never"})
    assert answer["result"] == {"subscribed": False}


# Recovery -----------------------------------------------------------------------------------------------------------


async def test_a_subscriber_disconnected_while_1000_messages_are_published_gets_all_1000_in_order_once(
    server: LiveServer, ada: ProtocolClient
) -> None:
    async with connected(server.ws_url, "bob") as reader:
        start = (await reader.subscribe("room.recover"))["result"]

    await ada.publish("room.recover", count=1000)

    async with connected(server.ws_url, "bob") as reader:
        answer = await reader.subscribe("room.recover", epoch=start["epoch"], offset=start["offset"])
        assert answer["result"] == {"epoch": start["epoch"], "offset": 1000, "recovered": 1000}
        recovered = reader.kept("message")  # every recovered message came before the reply
        assert [m["offset"] for m in recovered] == list(range(1, 1001))
        assert [m["data"]["n"] for m in recovered] == list(range(1, 1001))

        await ada.publish("room.recover", first=1001)
        assert [m["offset"] for m in await reader.all_messages(1)] == [1001]


async def test_messages_published_while_a_subscriber_recovers_arrive_after_the_recovered_ones_once(
    server: LiveServer, ada: ProtocolClient
) -> None:
    async with connected(server.ws_url, "bob") as reader:
        start = (await reader.subscribe("room.busy"))["result"]
    await ada.publish("room.busy", count=300)

    publisher = asyncio.create_task(ada.publish("room.busy", count=700, first=301))
    try:
        async with connected(server.ws_url, "bob") as reader:
            await reader.subscribe("room.busy", epoch=start["epoch"], offset=start["offset"])
            await publisher
            assert [m["offset"] for m in await reader.all_messages(1000)] == list(range(1, 1001))
    finally:
        publisher.cancel()


async def test_a_subscriber_from_the_last_offset_recovers_nothing(ada: ProtocolClient) -> None:
    top = await ada.publish("room.current", count=4)
    answer = await ada.subscribe("room.current", epoch=top["epoch"], offset=4)
    assert answer["result"] == {"epoch": top["epoch"], "offset": 4, "recovered": 0}
    assert ada.kept("message") == []


async def test_a_future_offset_gets_the_reload_verdict_and_the_stream_s_position(ada: ProtocolClient) -> None:
    top = await ada.publish("room.future", count=2)
    answer = await ada.subscribe("room.future", epoch=top["epoch"], offset=50)
    assert answer["result"] == {"epoch": top["epoch"], "offset": 2, "recovered": 0, "reload": "future"}
    await ada.publish("room.future", first=3)
    assert [m["offset"] for m in await ada.messages(1)] == [3]


async def test_an_epoch_from_another_stream_gets_the_reload_verdict(ada: ProtocolClient) -> None:
    other = await ada.publish("room.first", count=3)
    top = await ada.publish("room.second", count=1)
    answer = await ada.subscribe("room.second", epoch=other["epoch"], offset=1)
    assert answer["result"]["reload"] == "epoch"
    assert answer["result"]["epoch"] == top["epoch"] and answer["result"]["offset"] == 1
    assert ada.kept("message") == []


@override_settings(TETHER_STREAMS={"room.short": {"max_length": 10}})
async def test_an_offset_trimmed_out_of_history_gets_the_reload_verdict(ada: ProtocolClient) -> None:
    top = await ada.publish("room.short", count=30)
    answer = await ada.subscribe("room.short", epoch=top["epoch"], offset=5)
    assert answer["result"] == {"epoch": top["epoch"], "offset": 30, "recovered": 0, "reload": "trimmed"}
    assert ada.kept("message") == []


async def test_a_gap_the_layer_left_in_live_messages_is_filled_from_history_in_order(
    server: LiveServer, ada: ProtocolClient
) -> None:
    await ada.subscribe("room.gap")
    # The connection publishes 300 messages itself: while its handler runs, its channel (capacity 100) holds the
    # live copies, and the layer drops the rest. The next message shows the gap, filled from the stream's history.
    await ada.publish("room.gap", count=300)
    assert get_channel_layer().stats()["group_full_drops"] >= 100  # type: ignore[union-attr]  # the gap is real
    async with connected(server.ws_url, "bob") as bob:
        await bob.publish("room.gap", first=301)
    received = await ada.all_messages(301)
    assert [m["offset"] for m in received] == list(range(1, 302))
    assert [m["data"]["n"] for m in received] == list(range(1, 302))


@override_settings(TETHER_STREAMS={"room.brief": {"max_age": 0.3}})
async def test_a_stream_that_loses_its_history_while_subscribed_sends_the_reload_frame(ada: ProtocolClient) -> None:
    start = (await ada.subscribe("room.brief"))["result"]
    await ada.publish("room.brief")
    assert [m["offset"] for m in await ada.messages(1)] == [1]
    await asyncio.sleep(0.6)  # twice max_age: the in-memory stream is forgotten, and starts again in a new epoch

    top = await ada.publish("room.brief")
    assert top["epoch"] != start["epoch"] and top["offset"] == 1
    reload = await ada.next_of("reload")
    assert reload == {"type": "reload", "stream": "room.brief", "reason": "epoch", "epoch": top["epoch"], "offset": 1}
    await ada.publish("room.brief", first=2)
    (message,) = await ada.messages(1)
    assert (message["epoch"], message["offset"]) == (top["epoch"], 2)


async def test_a_stream_message_sent_with_group_send_is_dropped_with_one_warning(
    ada: ProtocolClient, caplog: pytest.LogCaptureFixture
) -> None:
    await ada.subscribe("room.plain")
    layer = get_channel_layer()
    assert layer is not None
    with caplog.at_level(logging.WARNING, logger="tether.streams"):
        for _ in range(3):
            await layer.group_send("room.plain", {"type": "stream.message", "stream": "room.plain", "data": "x"})
        await ada.publish("room.plain")
        assert [(m["offset"], m["data"]) for m in await ada.all_messages(1)] == [(1, {"n": 1})]
    (record,) = [r for r in caplog.records if r.name == "tether.streams"]
    assert "not with group_send()" in record.getMessage()


# Presence -----------------------------------------------------------------------------------------------------------


async def test_presence_gives_a_snapshot_after_the_reply_then_diffs_with_tabs_of_a_user_counted_once(
    server: LiveServer, ada: ProtocolClient
) -> None:
    answer = await ada.subscribe("room.here", presence=True)
    assert "result" in answer
    snapshot = await ada.next_of("presence")
    assert snapshot["stream"] == "room.here"
    assert [(m["user"], m["meta"]["name"], m["connections"]) for m in snapshot["members"]] == [("ada", "Ada", 1)]

    async with connected(server.ws_url, "bob", "Bob") as tab, connected(server.ws_url, "bob", "Bob") as other_tab:
        await tab.subscribe("room.here", presence=True)
        diff = await ada.next_of("presence.diff")
        assert (diff["joins"], diff["leaves"]) == (
            [{"user": "bob", "meta": diff["joins"][0]["meta"], "connections": 1}],
            [],
        )
        assert diff["joins"][0]["meta"]["name"] == "Bob"

        await other_tab.subscribe("room.here", presence=True)
        diff = await ada.next_of("presence.diff")
        assert [(m["user"], m["connections"]) for m in diff["joins"]] == [("bob", 2)]
        snapshot = await other_tab.next_of("presence")
        assert sorted((m["user"], m["connections"]) for m in snapshot["members"]) == [("ada", 1), ("bob", 2)]

        await tab.ws.close()
        diff = await ada.next_of("presence.diff")
        assert [(m["user"], m["connections"]) for m in diff["joins"]] == [("bob", 1)] and diff["leaves"] == []

        await other_tab.call({"type": "unsubscribe", "stream": "room.here"})
        diff = await ada.next_of("presence.diff")
        assert diff["joins"] == [] and [(m["user"], m["connections"]) for m in diff["leaves"]] == [("bob", 0)]


async def test_a_subscriber_without_presence_is_not_present_and_gets_no_presence_frames(
    server: LiveServer, ada: ProtocolClient
) -> None:
    await ada.subscribe("room.silent")
    async with connected(server.ws_url, "bob") as bob:
        await bob.subscribe("room.silent", presence=True)
        assert [m["user"] for m in (await bob.next_of("presence"))["members"]] == ["bob"]
        await bob.ws.close()
        await ada.request("echo")
        assert ada.kept("presence") == ada.kept("presence.diff") == []


async def test_oversized_presence_metadata_is_refused_and_leaves_nothing_behind(server: LiveServer) -> None:
    # The metadata is over presence's max_metadata_size (4096 bytes of JSON).
    async with connected(server.ws_url, "eve", "x" * 5000) as client:
        answer = await client.subscribe("room.meta", presence=True)
        assert answer["error"]["code"] == "bad_request"
        assert "max_metadata_size" in answer["error"]["message"]
        assert await get_presence(get_channel_layer()).members("room.meta") == []
        assert not layer_memberships()  # neither the stream nor the presence events hold the channel
        await client.publish("room.meta")
        await client.request("echo")
        assert client.kept("message") == []


# Request / reply ----------------------------------------------------------------------------------------------------


async def test_a_request_gets_the_handler_s_result_under_its_id(ada: ProtocolClient) -> None:
    await ada.send({"type": "request", "id": "abc", "method": "echo", "params": {"x": [1, 2]}})
    assert await ada.reply_to("abc") == {"type": "reply", "id": "abc", "result": {"x": [1, 2]}}


async def test_a_request_without_params_gets_an_empty_object(ada: ProtocolClient) -> None:
    answer = await ada.call({"type": "request", "method": "echo"})
    assert answer["result"] == {}


async def test_a_request_for_an_unknown_method_is_not_found(ada: ProtocolClient) -> None:
    for method in ("nothing", "_private", "echo!", "ECHO"):
        answer = await ada.call({"type": "request", "method": method})
        assert answer["error"]["code"] == "not_found", method


async def test_a_request_error_is_replied_with_its_own_code_and_not_logged(
    ada: ProtocolClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="tether.streams"):
        answer = await ada.request("refuse")
    assert answer["error"] == {"code": "not_allowed", "message": "Refused, as asked."}
    assert [r for r in caplog.records if r.name == "tether.streams"] == []


async def test_a_handler_that_raises_is_an_internal_error_logged_with_its_traceback(
    ada: ProtocolClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="tether.streams"):
        answer = await ada.request("crash")
    assert answer["error"]["code"] == "internal"
    assert "a request handler failed" not in answer["error"]["message"]
    (record,) = [r for r in caplog.records if r.name == "tether.streams"]
    assert record.exc_info is not None and "a request handler failed" in str(record.exc_info[1])


async def test_a_result_that_is_not_json_is_an_internal_error(ada: ProtocolClient) -> None:
    answer = await ada.request("unencodable")
    assert answer["error"]["code"] == "internal"
    assert (await ada.request("echo", still="here"))["result"] == {"still": "here"}


# Bad frames ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ([1, 2], "bad_request"),
        ("subscribe", "bad_request"),
        ({"id": 1, "stream": "room.a"}, "bad_request"),
        ({"type": "publish", "id": 1}, "unknown_type"),
        ({"type": "subscribe", "stream": "room.a"}, "bad_request"),
        ({"type": "subscribe", "id": True, "stream": "room.a"}, "bad_request"),
        ({"type": "subscribe", "id": 1}, "bad_request"),
        ({"type": "subscribe", "id": 1, "stream": 7}, "bad_request"),
        ({"type": "subscribe", "id": 1, "stream": "room a"}, "bad_request"),
        ({"type": "subscribe", "id": 1, "stream": "room." + "x" * 200}, "bad_request"),
        ({"type": "subscribe", "id": 1, "stream": "room.a", "presence": "yes"}, "bad_request"),
        ({"type": "subscribe", "id": 1, "stream": "room." + "x" * 90, "presence": True}, "bad_request"),
        ({"type": "unsubscribe", "id": 1}, "bad_request"),
        ({"type": "request", "id": 1}, "bad_request"),
        ({"type": "request", "id": 1, "method": "echo", "params": [1]}, "bad_request"),
        ({"type": "subscribe", "id": 1, "stream": "room.a", "epoch": "e", "offset": "41"}, "bad_position"),
        ({"type": "subscribe", "id": 1, "stream": "room.a", "epoch": "e", "offset": -1}, "bad_position"),
        ({"type": "subscribe", "id": 1, "stream": "room.a", "epoch": "e", "offset": 4.5}, "bad_position"),
        ({"type": "subscribe", "id": 1, "stream": "room.a", "epoch": "e", "offset": MAX_OFFSET + 1}, "bad_position"),
        ({"type": "subscribe", "id": 1, "stream": "room.a", "epoch": "e", "offset": True}, "bad_position"),
        ({"type": "subscribe", "id": 1, "stream": "room.a", "epoch": 5, "offset": 1}, "bad_position"),
        ({"type": "subscribe", "id": 1, "stream": "room.a", "epoch": "e" * 101, "offset": 1}, "bad_position"),
        ({"type": "subscribe", "id": 1, "stream": "room.a", "offset": 1}, "bad_position"),
        ({"type": "subscribe", "id": 1, "stream": "room.a", "epoch": "e"}, "bad_position"),
    ],
)
async def test_a_bad_frame_gets_an_error_reply_one_warning_and_leaves_nothing_behind(
    server: LiveServer, frame: Any, code: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with connected(server.ws_url, "mallory") as client:
        with caplog.at_level(logging.INFO, logger="tether.streams"):
            await client.send(frame)
            answer = await client.next_of("reply")
            assert answer["error"]["code"] == code, answer
            assert answer["id"] == (
                frame.get("id") if isinstance(frame, dict) and frame.get("id") is not True else None
            )
            assert (await client.request("echo", alive=True))["result"] == {"alive": True}
    (record,) = [r for r in caplog.records if r.name == "tether.streams"]
    assert record.levelno == logging.WARNING and f"({code})" in record.getMessage()
    await nothing_left_behind()


async def test_a_frame_that_is_not_json_closes_with_1007(ada: ProtocolClient) -> None:
    await ada.ws.send("{not json")
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await ada.receive()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1007


async def test_subscribing_twice_to_a_stream_is_a_bad_request_and_the_first_subscription_stays(
    ada: ProtocolClient,
) -> None:
    await ada.subscribe("room.twice")
    answer = await ada.subscribe("room.twice")
    assert answer["error"]["code"] == "bad_request" and "Already subscribed" in answer["error"]["message"]
    await ada.publish("room.twice")
    assert [m["offset"] for m in await ada.messages(1)] == [1]


async def test_a_flood_of_bad_frames_meets_the_rate_limit_and_is_closed_with_4429(server: LiveServer) -> None:
    async with connected(server.ws_url, "mallory", path="/ws/throttled/streams/") as client:
        for n in range(40):  # the app's limit is 20 frames an hour; ten refusals in a row close the connection
            await client.send({"type": "subscribe", "id": n, "stream": "secret.plans", "offset": "garbage"})
        frames = []
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                frames.append(await client.receive())
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4429
    assert [frame["error"]["code"] for frame in frames if frame["type"] == "reply"] == ["bad_position"] * 20
    assert {frame["code"] for frame in frames if frame["type"] == "error"} == {"rate_limited"}


# Authorization ------------------------------------------------------------------------------------------------------


async def test_authorize_sees_the_scope_s_user(server: LiveServer, ada: ProtocolClient) -> None:
    assert "result" in await ada.subscribe("private.ada")
    async with connected(server.ws_url, "bob") as bob:
        answer = await bob.subscribe("private.ada")
        assert answer["error"]["code"] == "forbidden"


async def test_a_refused_subscription_is_forbidden_logged_once_and_leaves_nothing_behind(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with connected(server.ws_url, "mallory") as client:
        with caplog.at_level(logging.INFO, logger="tether.streams"):
            for _ in range(5):
                answer = await client.subscribe("secret.plans", presence=True)
                assert answer["error"]["code"] == "forbidden"
        assert len([r for r in caplog.records if r.name == "tether.streams"]) == 1
        await client.publish("secret.plans")
        await client.request("echo")
        assert client.kept("message") == []
    await nothing_left_behind()


async def test_an_unknown_stream_is_refused_with_the_code_authorize_raises(ada: ProtocolClient) -> None:
    answer = await ada.subscribe("missing.room")
    assert answer["error"] == {"code": "not_found", "message": "There is no stream 'missing.room'."}


async def test_an_authorize_hook_that_raises_is_an_internal_error(ada: ProtocolClient) -> None:
    answer = await ada.subscribe("broken.room")
    assert answer["error"]["code"] == "internal"
    assert "result" in await ada.subscribe("room.fine")


async def test_the_default_authorize_refuses_every_stream() -> None:
    from tether.streams.consumer import StreamConsumer

    assert await StreamConsumer().authorize("room.any", presence=False) is False


# Limits -------------------------------------------------------------------------------------------------------------


async def test_thousands_of_subscribe_requests_are_refused_past_max_subscriptions_with_one_log_line_and_no_state(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with connected(server.ws_url, "mallory") as client:
        with caplog.at_level(logging.INFO, logger="tether.streams"):
            for n in range(20):  # the app's max_subscriptions
                assert "result" in await client.subscribe(f"room.many-{n}", presence=True)
            for n in range(20, 2020):
                await client.send({"type": "subscribe", "id": n, "stream": f"room.many-{n}", "presence": True})
            codes = [(await client.reply_to(n))["error"]["code"] for n in range(20, 2020)]
        assert set(codes) == {"too_many_subscriptions"}
        assert len([r for r in caplog.records if r.name == "tether.streams"]) == 1
        memberships = layer_memberships()
        assert len(memberships) == 1  # this client's channel: 20 streams, and their 20 presence events groups
        (groups,) = memberships.values()
        assert len(groups) == 40
        assert await get_presence(get_channel_layer()).members("room.many-20") == []

        answer = await client.call({"type": "unsubscribe", "stream": "room.many-0"})
        assert answer["result"] == {"subscribed": True}
        assert "result" in await client.subscribe("room.many-2000")
    await nothing_left_behind()

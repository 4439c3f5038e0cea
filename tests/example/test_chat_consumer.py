"""The example's ChatConsumer, driven by communicators over the stream protocol: history, posting through the room's
stream, recovery of what a reader missed, presence, typing, and the errors."""

from __future__ import annotations

import pytest

from chat.models import HISTORY_LENGTH, MAX_MESSAGE_LENGTH, Message, Room
from chat.presence import ONLINE_GROUP
from tests.ratelimit.conftest import Clock
from tether.db import database_sync_to_async
from tether.layers import get_channel_layer
from tether.presence import get_presence
from tether.ratelimit import limiter

LOUNGE = "chat.room.lounge"


async def test_history_is_the_last_50_messages_oldest_first_with_the_topic(open_page, alice, room):
    def write_history() -> None:
        Message.objects.bulk_create(Message(room=room, author=alice, text=f"line {n}") for n in range(55))

    await database_sync_to_async(write_history)()
    page = await open_page(alice)
    history = await page.result("history", room="lounge")
    assert (history["room"], history["topic"]) == ("lounge", "Testing")
    assert len(history["messages"]) == HISTORY_LENGTH
    assert [m["text"] for m in history["messages"][:2]] == ["line 5", "line 6"]
    assert history["messages"][-1]["text"] == "line 54"
    assert history["messages"][-1]["author"] == "alice"


async def test_a_post_reaches_every_subscriber_of_the_room_with_the_author_from_the_login(open_page, alice, bob, room):
    sender, reader = await open_page(alice), await open_page(bob)
    for page in (sender, reader):
        assert "result" in await page.subscribe(LOUNGE)
    posted = await sender.result("post", room="lounge", text="  hello everyone  ")
    for page in (reader, sender):
        [message] = await page.data(1)
        assert message["type"] == "message"
        assert (message["room"], message["author"], message["text"]) == ("lounge", "alice", "hello everyone")
        assert message["id"] == posted["id"]


async def test_a_post_is_stored_in_the_database(open_page, alice, room):
    page = await open_page(alice)
    posted = await page.result("post", room="lounge", text="keep me")
    stored = await database_sync_to_async(Message.objects.select_related("author", "room").get)(pk=posted["id"])
    assert (stored.text, stored.author.username, stored.room.name) == ("keep me", "alice", "lounge")


async def test_a_reader_who_comes_back_with_its_position_gets_what_was_posted_meanwhile_in_order(
    open_page, alice, bob, room
):
    writer, reader = await open_page(alice), await open_page(bob)
    position = (await reader.subscribe(LOUNGE))["result"]
    await reader.communicator.disconnect()
    for n in range(5):
        await writer.result("post", room="lounge", text=f"while you were away {n}")
    back = await open_page(bob)
    reply = await back.subscribe(LOUNGE, epoch=position["epoch"], offset=position["offset"])
    assert reply["result"]["recovered"] == 5
    assert [message["text"] for message in await back.data(5)] == [f"while you were away {n}" for n in range(5)]


async def test_a_guest_may_read_but_posting_is_refused_with_a_clear_error(open_page, alice, room):
    guest, member = await open_page(), await open_page(alice)
    assert "result" in await guest.subscribe(LOUNGE)
    error = await guest.error("post", room="lounge", text="let me in")
    assert error["code"] == "login_required"
    assert "Log in to post" in error["message"]
    assert await database_sync_to_async(Message.objects.count)() == 0
    await member.result("post", room="lounge", text="guests see this")
    assert (await guest.data(1))[0]["text"] == "guests see this"


async def test_subscribing_to_a_room_that_does_not_exist_is_refused_and_the_connection_stays(open_page, alice, room):
    page = await open_page(alice)
    reply = await page.subscribe("chat.room.missing")
    assert reply["error"]["code"] == "no_such_room"
    assert "result" in await page.subscribe(LOUNGE)


async def test_a_stream_that_is_not_a_rooms_is_not_found(open_page, alice, room):
    page = await open_page(alice)
    assert (await page.subscribe("chat.online"))["error"]["code"] == "not_found"


@pytest.mark.parametrize("name", ["", "has space", "x" * 51, 7, None, "semi;colon", "lounge\n"])
@pytest.mark.parametrize("method", ["history", "post", "typing"])
async def test_a_bad_room_name_is_refused(open_page, alice, room, method, name):
    page = await open_page(alice)
    error = await page.error(method, room=name, text="hi")
    assert error["code"] == "bad_room_name"
    assert error["message"] == "A room name is 1 to 50 letters, digits, '-' or '_'."


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "empty_message"),
        ("   ", "empty_message"),
        (None, "empty_message"),
        (["x"], "empty_message"),
        ("y" * (MAX_MESSAGE_LENGTH + 1), "message_too_long"),
    ],
)
async def test_empty_and_too_long_messages_are_refused(open_page, alice, room, text, code):
    page = await open_page(alice)
    assert (await page.error("post", room="lounge", text=text))["code"] == code
    assert await database_sync_to_async(Message.objects.count)() == 0


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"type": "join", "id": 1, "room": "lounge"}, "unknown_type"),
        ({"type": "request", "id": 1, "method": "dance", "params": {}}, "not_found"),
        ({"no": "type", "id": 1}, "bad_request"),
        (["join"], "bad_request"),
    ],
)
async def test_a_frame_it_does_not_know_gets_an_error_reply(connect, alice, transactional_db, frame, code):
    communicator = await connect("/chat/connect/", alice)
    await communicator.send_json_to(frame)
    reply = await communicator.receive_json_from()
    assert (reply["type"], reply["error"]["code"]) == ("reply", code)


async def test_a_frame_that_is_not_json_closes_with_1007(connect, alice, transactional_db):
    communicator = await connect("/chat/connect/", alice)
    await communicator.send_to(text_data="{not json")
    close = await communicator.receive_output()
    assert (close["type"], close["code"]) == ("websocket.close", 1007)


async def test_after_unsubscribing_the_room_messages_stop(open_page, alice, bob, room):
    leaver, sender = await open_page(bob), await open_page(alice)
    await leaver.subscribe(LOUNGE)
    assert (await leaver.call({"type": "unsubscribe", "stream": LOUNGE}))["result"] == {"subscribed": True}
    await sender.result("post", room="lounge", text="gone?")
    await leaver.result("history", room="lounge")  # any frame on its way would have come before this reply
    assert [frame for frame in leaver.frames if frame["type"] == "message"] == []


async def test_one_connection_follows_at_most_20_rooms(open_page, alice, transactional_db):
    from chat.consumers import ChatConsumer

    rooms = ChatConsumer.max_subscriptions // 2
    names = [f"room-{n}" for n in range(rooms + 1)]
    await database_sync_to_async(Room.objects.bulk_create)([Room(name=name) for name in names])
    page = await open_page(alice)
    for name in names[:-1]:
        assert "result" in await page.subscribe(f"chat.room.{name}")
        assert "result" in await page.subscribe(f"chat.typing.{name}")
    assert (await page.subscribe(f"chat.room.{names[-1]}"))["error"]["code"] == "too_many_subscriptions"


async def test_a_deleted_room_refuses_posts_with_no_such_room(open_page, alice, room):
    page = await open_page(alice)
    await database_sync_to_async(room.delete)()
    assert (await page.error("post", room="lounge", text="anyone?"))["code"] == "no_such_room"


async def test_the_room_presence_counts_a_user_with_two_connections_once_and_each_guest(open_page, alice, bob, room):
    first = await open_page(alice)
    await first.subscribe(LOUNGE, presence=True)
    assert (await first.next_of("presence"))["members"] == [
        {"user": str(alice.pk), "meta": {"username": "alice"}, "connections": 1}
    ]
    for user in (alice, bob, None):
        await (await open_page(user)).subscribe(LOUNGE, presence=True)
    count = await get_presence(get_channel_layer()).count(LOUNGE)
    assert (count.users, count.connections) == (3, 4)


async def test_every_connection_is_online_whether_or_not_it_follows_a_room(open_page, alice, room):
    await open_page(alice)
    await open_page(alice)
    await open_page()
    count = await get_presence(get_channel_layer()).count(ONLINE_GROUP)
    assert (count.users, count.connections) == (2, 3)


async def test_typing_is_published_to_the_rooms_typing_stream_with_the_username(open_page, alice, bob, room):
    typist, reader = await open_page(alice), await open_page(bob)
    await reader.subscribe("chat.typing.lounge")
    assert await typist.result("typing", room="lounge") == {"sent": True}
    assert await reader.data(1) == [{"user": "alice"}]


async def test_typing_notices_that_come_too_fast_are_not_sent(open_page, alice, room, monkeypatch):
    monkeypatch.setattr(limiter, "clock", Clock())  # time stands still: no token comes back
    typist = await open_page(alice)
    results = [await typist.result("typing", room="lounge") for _ in range(3)]
    assert results == [{"sent": True}, {"sent": True}, {"sent": False}]


async def test_a_guest_cannot_send_typing_notices(open_page, room):
    guest = await open_page()
    assert (await guest.error("typing", room="lounge"))["code"] == "login_required"

"""The example's ChatConsumer, driven by communicators: joining, history, posting, errors and presence."""

from __future__ import annotations

import asyncio

import pytest

from chat.consumers import NO_SUCH_ROOM
from chat.models import HISTORY_LENGTH, MAX_MESSAGE_LENGTH, Message, Room
from chat.presence import PRESENCE_GROUP
from tether.db import database_sync_to_async
from tether.layers import get_channel_layer


async def joined(communicator, room: str) -> dict:
    await communicator.send_json_to({"type": "join", "room": room})
    answer = await communicator.receive_json_from()
    assert answer["type"] == "joined", answer
    return answer


async def test_join_sends_the_last_50_messages_oldest_first(connect, alice, room):
    def write_history() -> None:
        Message.objects.bulk_create(Message(room=room, author=alice, text=f"line {n}") for n in range(55))

    await database_sync_to_async(write_history)()
    communicator = await connect("/chat/connect/", alice)
    answer = await joined(communicator, "lounge")
    assert answer["topic"] == "Testing"
    assert len(answer["history"]) == HISTORY_LENGTH
    assert [m["text"] for m in answer["history"][:2]] == ["line 5", "line 6"]
    assert answer["history"][-1]["text"] == "line 54"
    assert answer["history"][-1]["author"] == "alice"


async def test_post_reaches_every_member_of_the_room_with_the_author_from_the_login(connect, alice, bob, room):
    sender = await connect("/chat/connect/", alice)
    reader = await connect("/chat/connect/", bob)
    await joined(sender, "lounge")
    await joined(reader, "lounge")
    await sender.send_json_to({"type": "post", "room": "lounge", "text": "  hello everyone  "})
    for communicator in (reader, sender):
        message = await communicator.receive_json_from()
        assert message["type"] == "message"
        assert (message["room"], message["author"], message["text"]) == ("lounge", "alice", "hello everyone")


async def test_post_is_stored_in_the_database(connect, alice, room):
    communicator = await connect("/chat/connect/", alice)
    await joined(communicator, "lounge")
    await communicator.send_json_to({"type": "post", "room": "lounge", "text": "keep me"})
    message = await communicator.receive_json_from()
    stored = await database_sync_to_async(Message.objects.select_related("author", "room").get)(pk=message["id"])
    assert (stored.text, stored.author.username, stored.room.name) == ("keep me", "alice", "lounge")


async def test_room_url_joins_the_room_on_connect_and_posts_there_by_default(connect, alice, room):
    communicator = await connect("/ws/chat/lounge/", alice)
    assert (await communicator.receive_json_from())["type"] == "joined"
    await communicator.send_json_to({"type": "post", "text": "no room named"})
    assert (await communicator.receive_json_from())["room"] == "lounge"


async def test_unknown_room_in_the_url_is_explained_then_closed_with_4404(connect, alice, transactional_db):
    communicator = await connect("/ws/chat/nowhere/", alice)
    error = await communicator.receive_json_from()
    assert (error["type"], error["code"]) == ("error", "no_such_room")
    close = await communicator.receive_output()
    assert close == {"type": "websocket.close", "code": NO_SUCH_ROOM, "reason": "No such room"}


async def test_guest_may_read_but_posting_is_refused_with_a_clear_error(connect, alice, room):
    guest = await connect("/chat/connect/")
    member = await connect("/chat/connect/", alice)
    await joined(guest, "lounge")
    await joined(member, "lounge")
    await guest.send_json_to({"type": "post", "room": "lounge", "text": "let me in"})
    error = await guest.receive_json_from()
    assert (error["type"], error["code"], error["request"]) == ("error", "login_required", "post")
    assert "Log in to post" in error["message"]
    assert await member.receive_nothing()
    assert await database_sync_to_async(Message.objects.count)() == 0
    await member.send_json_to({"type": "post", "room": "lounge", "text": "guests see this"})
    assert (await guest.receive_json_from())["text"] == "guests see this"


async def test_joining_a_room_that_does_not_exist_is_an_error_and_the_connection_stays_open(connect, alice, room):
    communicator = await connect("/chat/connect/", alice)
    await communicator.send_json_to({"type": "join", "room": "missing"})
    assert (await communicator.receive_json_from())["code"] == "no_such_room"
    await joined(communicator, "lounge")


@pytest.mark.parametrize("name", ["", "has space", "x" * 51, 7, None, "semi;colon"])
async def test_a_bad_room_name_is_refused(connect, alice, transactional_db, name):
    communicator = await connect("/chat/connect/", alice)
    await communicator.send_json_to({"type": "join", "room": name})
    assert (await communicator.receive_json_from())["code"] == "bad_room_name"


async def test_posting_to_a_room_not_joined_is_refused(connect, alice, room):
    communicator = await connect("/chat/connect/", alice)
    await communicator.send_json_to({"type": "post", "room": "lounge", "text": "hi"})
    error = await communicator.receive_json_from()
    assert error["code"] == "not_joined"
    assert "Join the room 'lounge'" in error["message"]


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
async def test_empty_and_too_long_messages_are_refused(connect, alice, room, text, code):
    communicator = await connect("/chat/connect/", alice)
    await joined(communicator, "lounge")
    await communicator.send_json_to({"type": "post", "room": "lounge", "text": text})
    assert (await communicator.receive_json_from())["code"] == code
    assert await database_sync_to_async(Message.objects.count)() == 0


@pytest.mark.parametrize("request_body", [{"type": "dance"}, {"no": "type"}, ["join"], "join", 3])
async def test_a_request_it_does_not_know_gets_bad_request(connect, alice, transactional_db, request_body):
    communicator = await connect("/chat/connect/", alice)
    await communicator.send_json_to(request_body)
    error = await communicator.receive_json_from()
    assert error["code"] == "bad_request"
    assert '"join", "leave" or "post"' in error["message"]


async def test_a_frame_that_is_not_json_closes_with_1007(connect, alice, transactional_db):
    communicator = await connect("/chat/connect/", alice)
    await communicator.send_to(text_data="{not json")
    close = await communicator.receive_output()
    assert (close["type"], close["code"]) == ("websocket.close", 1007)


async def test_after_leave_the_room_messages_stop(connect, alice, bob, room):
    leaver = await connect("/chat/connect/", bob)
    sender = await connect("/chat/connect/", alice)
    await joined(leaver, "lounge")
    await joined(sender, "lounge")
    await leaver.send_json_to({"type": "leave", "room": "lounge"})
    assert await leaver.receive_json_from() == {"type": "left", "room": "lounge"}
    await sender.send_json_to({"type": "post", "room": "lounge", "text": "gone?"})
    await sender.receive_json_from()
    assert await leaver.receive_nothing()


async def test_leaving_a_room_not_joined_is_an_error(connect, alice, transactional_db):
    communicator = await connect("/chat/connect/", alice)
    await communicator.send_json_to({"type": "leave", "room": "lounge"})
    assert (await communicator.receive_json_from())["code"] == "not_joined"


async def test_one_connection_joins_at_most_max_rooms(connect, alice, transactional_db):
    from chat.consumers import ChatConsumer

    names = [f"room-{n}" for n in range(ChatConsumer.max_rooms + 1)]
    await database_sync_to_async(Room.objects.bulk_create)([Room(name=name) for name in names])
    communicator = await connect("/chat/connect/", alice)
    for name in names[:-1]:
        await joined(communicator, name)
    await communicator.send_json_to({"type": "join", "room": names[-1]})
    assert (await communicator.receive_json_from())["code"] == "too_many_rooms"


async def test_a_deleted_room_refuses_posts_with_no_such_room(connect, alice, room):
    communicator = await connect("/chat/connect/", alice)
    await joined(communicator, "lounge")
    await database_sync_to_async(room.delete)()
    await communicator.send_json_to({"type": "post", "room": "lounge", "text": "anyone?"})
    assert (await communicator.receive_json_from())["code"] == "no_such_room"


async def test_presence_ping_is_answered_with_the_user_and_joined_rooms(connect, alice, room):
    communicator = await connect("/chat/connect/", alice)
    await connect("/chat/connect/")  # a guest
    await joined(communicator, "lounge")
    layer = get_channel_layer()
    reply_to = await layer.new_channel()
    await layer.group_send(PRESENCE_GROUP, {"type": "presence.ping", "round": 7, "reply_to": reply_to})
    answers = [await layer.receive(reply_to), await layer.receive(reply_to)]
    by_user = {answer["user"]: answer for answer in answers}
    assert by_user["alice"]["rooms"] == ["lounge"]
    assert by_user["alice"]["round"] == 7
    assert by_user[None]["rooms"] == []


async def test_after_disconnect_the_connection_no_longer_answers_presence_pings(connect, alice, room):
    communicator = await connect("/chat/connect/", alice)
    await joined(communicator, "lounge")
    await communicator.disconnect()
    layer = get_channel_layer()
    reply_to = await layer.new_channel()
    await layer.group_send(PRESENCE_GROUP, {"type": "presence.ping", "round": 1, "reply_to": reply_to})
    with pytest.raises(asyncio.TimeoutError):  # TimeoutError itself from Python 3.11
        await asyncio.wait_for(layer.receive(reply_to), 0.2)

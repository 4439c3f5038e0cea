"""Mention notifications: found in the text, stored, and pushed from a post_save signal to the user's open pages."""

from __future__ import annotations

import pytest

from chat.models import Message
from notifications.mentions import MAX_MENTIONS, find_mentions
from notifications.models import Notification
from tether.db import database_sync_to_async


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("hi @bob", ["bob"]),
        ("@bob and @carol.", ["bob", "carol"]),
        ("thanks @ann. see you @ann!", ["ann"]),
        ("mail me at me@example.com", []),
        ("@@bob is not a mention either", []),
        ("dotted @first.last-name- works", ["first.last-name"]),
        ("just an @ sign", []),
    ],
)
def test_find_mentions_returns_distinct_usernames_in_order(text, names):
    assert find_mentions(text) == names


def test_find_mentions_stops_at_the_limit():
    text = " ".join(f"@user{n}" for n in range(MAX_MENTIONS + 5))
    assert find_mentions(text) == [f"user{n}" for n in range(MAX_MENTIONS)]


async def test_a_mention_reaches_the_mentioned_user_on_another_page(connect, open_page, alice, bob, room):
    bob_page = await connect("/chat/connect/", bob)  # bob is on the lobby: no room followed
    alice_page = await open_page(alice)
    assert "result" in await alice_page.request("post", room="lounge", text="ping @bob, look")
    notification = await bob_page.receive_json_from()
    assert notification["type"] == "notification"
    assert (notification["from"], notification["room"], notification["text"]) == ("alice", "lounge", "ping @bob, look")
    assert notification["url"].startswith("/chat/lounge/#message-")


async def test_every_open_page_of_the_user_gets_the_notification(connect, alice, bob, room):
    pages = [await connect("/chat/connect/", bob), await connect("/ws/dashboard/", bob)]
    await database_sync_to_async(Message.objects.create)(room=room, author=alice, text="@bob twice")
    for page in pages:
        while (event := await page.receive_json_from())["type"] != "notification":
            pass  # the dashboard page also receives snapshots
        assert event["from"] == "alice"


async def test_a_message_saved_by_ordinary_django_code_notifies_too(connect, alice, bob, room):
    bob_page = await connect("/chat/connect/", bob)
    await database_sync_to_async(Message.objects.create)(room=room, author=alice, text="from the shell, @bob")
    assert (await bob_page.receive_json_from())["text"] == "from the shell, @bob"


async def test_the_notification_is_stored_for_the_recipient(connect, alice, bob, room):
    message = await database_sync_to_async(Message.objects.create)(room=room, author=alice, text="@bob hello")
    rows = Notification.objects.values_list("recipient__username", "message")
    stored = await database_sync_to_async(list)(rows)
    assert stored == [("bob", message.pk)]


async def test_self_mentions_unknown_names_and_guests_get_nothing(connect, alice, room):
    alice_page = await connect("/chat/connect/", alice)
    guest_page = await connect("/chat/connect/")
    await database_sync_to_async(Message.objects.create)(room=room, author=alice, text="@alice @nobody @AnonymousUser")
    assert await alice_page.receive_nothing()
    assert await guest_page.receive_nothing()
    assert await database_sync_to_async(Notification.objects.count)() == 0


async def test_an_edited_message_does_not_notify_again(connect, alice, bob, room):
    message = await database_sync_to_async(Message.objects.create)(room=room, author=alice, text="@bob first")
    bob_page = await connect("/chat/connect/", bob)
    message.text = "@bob edited"
    await database_sync_to_async(message.save)()
    assert await bob_page.receive_nothing()
    assert await database_sync_to_async(Notification.objects.count)() == 1

"""The consumer helper in one process (the in-memory layer): declared groups joined at accept with the scope's user,
events handed to the consumer's methods, everything left on disconnect with no code; sync and async consumers."""

from __future__ import annotations

import pytest

from tether.generic.websocket import AsyncJsonWebsocketConsumer, JsonWebsocketConsumer
from tether.layers import get_channel_layer
from tether.presence import PresenceCount, get_presence
from tether.presence.consumer import AsyncPresenceConsumerMixin, PresenceConsumerMixin
from tether.testing import WebsocketCommunicator


class _User:
    is_authenticated = True

    def __init__(self, pk: int, username: str) -> None:
        self.pk = pk
        self.username = username

    def get_username(self) -> str:
        return self.username


class AsyncRoom(AsyncPresenceConsumerMixin, AsyncJsonWebsocketConsumer):
    presence_groups = ["room.lobby"]

    async def presence_join(self, event):
        await self.send_json(event)

    async def presence_leave(self, event):
        await self.send_json(event)


class SyncRoom(PresenceConsumerMixin, JsonWebsocketConsumer):
    presence_groups = ["room.lobby"]

    def presence_join(self, event):
        self.send_json(event)

    def presence_leave(self, event):
        self.send_json(event)


class QuietRoom(AsyncPresenceConsumerMixin, AsyncJsonWebsocketConsumer):
    """Present, without hearing events: the default handlers would ignore them anyway."""

    presence_groups = ["room.lobby"]
    presence_listen = False


def connect(consumer: type, user: _User | None = None) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(consumer.as_asgi(), "/ws/room/")
    if user is not None:
        communicator.scope["user"] = user
    return communicator


@pytest.mark.parametrize("consumer", [AsyncRoom, SyncRoom])
async def test_a_consumer_is_present_from_accept_to_disconnect_as_its_user(consumer):
    ada = connect(consumer, _User(1, "ada"))
    assert (await ada.connect())[0]
    joined = await ada.receive_json_from(timeout=5)
    assert joined["type"] == "presence.join"
    assert joined["members"][0]["user"] == "1"
    assert joined["members"][0]["meta"] == {"username": "ada"}

    second_tab = connect(consumer, _User(1, "ada"))
    assert (await second_tab.connect())[0]
    presence = get_presence(get_channel_layer())
    assert await presence.count("room.lobby") == PresenceCount(users=1, connections=2)
    assert (await ada.receive_json_from(timeout=5))["type"] == "presence.join"

    await second_tab.disconnect()
    left = await ada.receive_json_from(timeout=5)
    assert left["type"] == "presence.leave"
    assert await presence.count("room.lobby") == PresenceCount(users=1, connections=1)
    await ada.disconnect()
    assert await presence.members("room.lobby") == []


async def test_anonymous_connections_are_each_a_person_and_events_need_no_handler():
    first, second = connect(QuietRoom), connect(QuietRoom)
    assert (await first.connect())[0]
    assert (await second.connect())[0]
    presence = get_presence(get_channel_layer())
    assert await presence.count("room.lobby") == PresenceCount(users=2, connections=2)
    assert await first.receive_nothing(timeout=0.2)
    await first.disconnect()
    await second.disconnect()
    assert await presence.count("room.lobby") == PresenceCount(0, 0)


async def test_a_refused_connection_is_never_present():
    class Refusing(AsyncRoom):
        async def connect(self):
            await self.close()

    communicator = connect(Refusing, _User(2, "bob"))
    connected, _ = await communicator.connect()
    assert not connected
    assert await get_presence(get_channel_layer()).count("room.lobby") == PresenceCount(0, 0)

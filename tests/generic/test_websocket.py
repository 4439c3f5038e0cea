"""WebsocketConsumer and AsyncWebsocketConsumer driven through the WebsocketCommunicator.

Behaviours shared by both classes run once per class (``variant`` is "async" or "sync").
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs

import pytest
from django.contrib.auth.models import User
from django.test import override_settings

from tether.exceptions import AcceptConnection, DenyConnection, InvalidChannelLayerError
from tether.generic.websocket import AsyncWebsocketConsumer, WebsocketConsumer
from tether.layers import get_channel_layer
from tether.testing import WebsocketCommunicator


def connect_action(scope) -> str:
    return parse_qs(scope["query_string"].decode()).get("connect", ["accept"])[0]


class AsyncScripted(AsyncWebsocketConsumer):
    """Connects as ``?connect=`` says; every text frame names a method to call: {"call", "args", "kwargs"}.

    Binary frames are echoed. ``events`` collects disconnect codes.
    """

    events = None

    async def connect(self):
        action = connect_action(self.scope)
        if action == "deny":
            raise DenyConnection()
        if action == "accept-by-raising":
            raise AcceptConnection()
        if action == "close":
            await self.close()
        elif action == "subprotocol":
            await self.accept(self.scope["subprotocols"][-1], headers=[("x-tether", "yes"), (b"x-bytes", b"raw")])
        else:
            await super().connect()

    async def receive(self, text_data=None, bytes_data=None):
        if text_data is None:
            await self.send(bytes_data=bytes_data)
            return
        command = json.loads(text_data)
        await getattr(self, command["call"])(*command.get("args", []), **command.get("kwargs", {}))

    async def disconnect(self, code):
        self.events.append(code)


class SyncScripted(WebsocketConsumer):
    """The synchronous twin of AsyncScripted."""

    events = None

    def connect(self):
        action = connect_action(self.scope)
        if action == "deny":
            raise DenyConnection()
        if action == "accept-by-raising":
            raise AcceptConnection()
        if action == "close":
            self.close()
        elif action == "subprotocol":
            self.accept(self.scope["subprotocols"][-1], headers=[("x-tether", "yes"), (b"x-bytes", b"raw")])
        else:
            super().connect()

    def receive(self, text_data=None, bytes_data=None):
        if text_data is None:
            self.send(bytes_data=bytes_data)
            return
        command = json.loads(text_data)
        result = getattr(self, command["call"])(*command.get("args", []), **command.get("kwargs", {}))
        assert result is None  # sync consumers' send and close are plain calls

    def disconnect(self, code):
        self.events.append(code)


SCRIPTED = {"async": AsyncScripted, "sync": SyncScripted}


@pytest.fixture(params=["async", "sync"])
def variant(request) -> str:
    return request.param


@pytest.fixture
def events() -> list:
    return []


@pytest.fixture
def scripted(variant, events):
    """Build a communicator for the scripted consumer of this variant: ``scripted(path="/", **kwargs)``."""

    def build(path: str = "/ws/", **kwargs) -> WebsocketCommunicator:
        return WebsocketCommunicator(SCRIPTED[variant].as_asgi(events=events), path, **kwargs)

    return build


async def call(communicator: WebsocketCommunicator, method: str, *args, **kwargs) -> None:
    await communicator.send_to(text_data=json.dumps({"call": method, "args": args, "kwargs": kwargs}))


# Connecting ---------------------------------------------------------------------------------------------------------


async def test_default_connect_accepts(scripted):
    communicator = scripted()
    assert await communicator.connect() == (True, None)
    await communicator.disconnect()


async def test_accept_with_subprotocol_and_headers(scripted):
    communicator = scripted("/ws/?connect=subprotocol", subprotocols=["v1.tether", "v2.tether"])
    assert await communicator.connect() == (True, "v2.tether")
    assert communicator.response_headers == [(b"x-tether", b"yes"), (b"x-bytes", b"raw")]
    await communicator.disconnect()


async def test_accept_without_headers_sends_none(scripted):
    communicator = scripted()
    await communicator.connect()
    assert communicator.response_headers == []
    await communicator.disconnect()


async def test_accept_connection_raised_in_connect_accepts(scripted):
    communicator = scripted("/ws/?connect=accept-by-raising")
    assert await communicator.connect() == (True, None)
    await communicator.disconnect()


async def test_deny_connection_raised_in_connect_closes_before_accepting(scripted):
    communicator = scripted("/ws/?connect=deny")
    connected, code = await communicator.connect()
    assert not connected
    assert code == 1000
    await communicator.disconnect()


async def test_close_in_connect_refuses_the_connection(scripted):
    communicator = scripted("/ws/?connect=close")
    assert await communicator.connect() == (False, 1000)
    await communicator.disconnect()


# Frames -------------------------------------------------------------------------------------------------------------


async def test_send_text_frame(scripted):
    communicator = scripted()
    await communicator.connect()
    await call(communicator, "send", text_data="hello")
    assert await communicator.receive_from() == "hello"
    await communicator.disconnect()


async def test_send_binary_frame(scripted):
    communicator = scripted()
    await communicator.connect()
    await communicator.send_to(bytes_data=b"\x00\x01")
    assert await communicator.receive_from() == b"\x00\x01"
    await communicator.disconnect()


async def test_receive_with_text_none_falls_back_to_bytes(scripted):
    communicator = scripted()
    await communicator.connect()
    await communicator.send_input({"type": "websocket.receive", "text": None, "bytes": b"raw"})
    assert await communicator.receive_from() == b"raw"
    await communicator.disconnect()


async def test_send_with_neither_text_nor_bytes_is_a_value_error(scripted):
    communicator = scripted()
    await communicator.connect()
    await call(communicator, "send")
    with pytest.raises(ValueError, match="needs text_data or bytes_data"):
        await communicator.receive_from()


async def test_send_with_text_that_is_not_a_str_is_a_type_error(scripted):
    communicator = scripted()
    await communicator.connect()
    await call(communicator, "send", text_data=42)
    with pytest.raises(TypeError, match="text_data must be a str, not int"):
        await communicator.receive_from()


# Closing ------------------------------------------------------------------------------------------------------------


async def test_close_with_code_and_reason(scripted):
    communicator = scripted()
    await communicator.connect()
    await call(communicator, "close", 4000, "bye now")
    assert await communicator.receive_output() == {"type": "websocket.close", "code": 4000, "reason": "bye now"}
    await communicator.disconnect(4000)


async def test_close_without_code_leaves_the_code_to_the_server(scripted):
    communicator = scripted()
    await communicator.connect()
    await call(communicator, "close")
    assert await communicator.receive_output() == {"type": "websocket.close"}
    await communicator.disconnect()


@pytest.mark.parametrize("code", [1005, 999, 5000, 1006, 1015])
async def test_close_with_a_code_that_cannot_be_sent_is_a_value_error(scripted, code):
    communicator = scripted()
    await communicator.connect()
    await call(communicator, "close", code)
    with pytest.raises(ValueError, match=f"Close code {code} cannot be sent"):
        await communicator.receive_output()


async def test_close_reason_is_truncated_to_123_bytes(scripted):
    communicator = scripted()
    await communicator.connect()
    await call(communicator, "close", 4000, "x" * 200)
    message = await communicator.receive_output()
    assert message["reason"] == "x" * 123
    await communicator.disconnect()


async def test_close_reason_truncation_does_not_split_a_character(scripted):
    communicator = scripted()
    await communicator.connect()
    await call(communicator, "close", 4000, "é" * 100)  # 200 bytes in UTF-8
    reason = (await communicator.receive_output())["reason"]
    assert reason == "é" * 61
    assert len(reason.encode()) == 122
    await communicator.disconnect()


async def test_send_with_close_true_sends_then_closes(scripted):
    communicator = scripted()
    await communicator.connect()
    await call(communicator, "send", text_data="last words", close=True)
    assert await communicator.receive_from() == "last words"
    assert await communicator.receive_output() == {"type": "websocket.close"}
    await communicator.disconnect()


async def test_send_with_a_close_code_closes_with_that_code(scripted):
    communicator = scripted()
    await communicator.connect()
    await call(communicator, "send", text_data="go away", close=4001)
    assert await communicator.receive_from() == "go away"
    assert await communicator.receive_output() == {"type": "websocket.close", "code": 4001}
    await communicator.disconnect()


async def test_disconnect_receives_the_clients_close_code(scripted, events):
    communicator = scripted()
    await communicator.connect()
    await communicator.disconnect(code=4321)
    assert events == [4321]


async def test_disconnect_without_a_code_gets_1005(scripted, events):
    communicator = scripted()
    await communicator.connect()
    await communicator.send_input({"type": "websocket.disconnect"})
    await communicator.wait()
    assert events == [1005]


async def test_consumer_ends_after_disconnect(scripted):
    communicator = scripted()
    await communicator.connect()
    await communicator.disconnect()
    assert communicator.future.done() and communicator.future.exception() is None


# Groups -------------------------------------------------------------------------------------------------------------


class AsyncGroupMember(AsyncWebsocketConsumer):
    groups = ["lobby", "news"]

    async def connect(self):
        # The consumer is in its groups already: this message comes back to it.
        await self.channel_layer.group_send("lobby", {"type": "announce", "text": "joined before connect"})
        await self.accept()

    async def announce(self, event):
        await self.send(text_data=event["text"])


class SyncGroupMember(WebsocketConsumer):
    groups = ["lobby", "news"]

    def connect(self):
        from asgiref.sync import async_to_sync

        async_to_sync(self.channel_layer.group_send)("lobby", {"type": "announce", "text": "joined before connect"})
        self.accept()

    def announce(self, event):
        self.send(text_data=event["text"])


GROUP_MEMBERS = {"async": AsyncGroupMember, "sync": SyncGroupMember}


async def test_groups_are_joined_before_connect(variant):
    communicator = WebsocketCommunicator(GROUP_MEMBERS[variant].as_asgi(), "/ws/")
    assert (await communicator.connect())[0]
    assert await communicator.receive_from() == "joined before connect"
    await communicator.disconnect()


async def test_group_messages_reach_the_consumer(variant):
    communicator = WebsocketCommunicator(GROUP_MEMBERS[variant].as_asgi(), "/ws/")
    await communicator.connect()
    await communicator.receive_from()
    await get_channel_layer().group_send("news", {"type": "announce", "text": "extra"})
    assert await communicator.receive_from() == "extra"
    await communicator.disconnect()


async def test_groups_are_left_on_disconnect(variant):
    layer = get_channel_layer()
    communicator = WebsocketCommunicator(GROUP_MEMBERS[variant].as_asgi(), "/ws/")
    await communicator.connect()
    await communicator.receive_from()
    assert layer.stats()["groups"] == 2
    await communicator.disconnect()
    assert layer.stats()["groups"] == 0


async def test_groups_without_a_channel_layer_is_an_invalid_channel_layer_error(variant):
    with override_settings(CHANNEL_LAYERS={}):
        communicator = WebsocketCommunicator(GROUP_MEMBERS[variant].as_asgi(), "/ws/")
        with pytest.raises(InvalidChannelLayerError, match="groups is set but the channel layer 'default'"):
            await communicator.connect()


# The sync consumer specifically -------------------------------------------------------------------------------------


class UserListConsumer(WebsocketConsumer):
    def receive(self, text_data=None, bytes_data=None):
        User.objects.create(username=text_data)
        self.send(text_data=",".join(User.objects.order_by("username").values_list("username", flat=True)))


@pytest.mark.django_db(transaction=True)
async def test_sync_consumer_uses_the_orm_in_handlers():
    communicator = WebsocketCommunicator(UserListConsumer.as_asgi(), "/ws/")
    await communicator.connect()
    await communicator.send_to(text_data="bob")
    assert await communicator.receive_from() == "bob"
    await communicator.send_to(text_data="alice")
    assert await communicator.receive_from() == "alice,bob"
    await communicator.disconnect()

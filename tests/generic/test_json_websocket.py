"""JsonWebsocketConsumer and AsyncJsonWebsocketConsumer: JSON in, JSON out, and clear closes for bad frames."""

from __future__ import annotations

import inspect
import json
import logging

import pytest

from tether.generic.websocket import AsyncJsonWebsocketConsumer, JsonWebsocketConsumer
from tether.testing import WebsocketCommunicator

LOGGER = "tether.generic.websocket"


class AsyncJsonEcho(AsyncJsonWebsocketConsumer):
    """Echoes ``content`` inside ``{"echo": ...}``; ``{"close": code}`` asks for a goodbye that closes."""

    async def receive_json(self, content, **kwargs):
        if isinstance(content, dict) and "close" in content:
            await self.send_json({"bye": True}, close=content["close"])
        else:
            await self.send_json({"echo": content})


class SyncJsonEcho(JsonWebsocketConsumer):
    def receive_json(self, content, **kwargs):
        if isinstance(content, dict) and "close" in content:
            self.send_json({"bye": True}, close=content["close"])
        else:
            self.send_json({"echo": content})


class AsyncSortedKeys(AsyncJsonEcho):
    """Custom hooks: frames are ``;``-prefixed JSON, output has sorted keys and no spaces."""

    @classmethod
    async def decode_json(cls, text_data):
        if not text_data.startswith(";"):
            raise ValueError("frames must start with ';'")
        return json.loads(text_data[1:])

    @classmethod
    async def encode_json(cls, content):
        return json.dumps(content, sort_keys=True, separators=(",", ":"))


class SyncSortedKeys(SyncJsonEcho):
    @classmethod
    def decode_json(cls, text_data):
        if not text_data.startswith(";"):
            raise ValueError("frames must start with ';'")
        return json.loads(text_data[1:])

    @classmethod
    def encode_json(cls, content):
        return json.dumps(content, sort_keys=True, separators=(",", ":"))


ECHO = {"async": AsyncJsonEcho, "sync": SyncJsonEcho}
CUSTOM = {"async": AsyncSortedKeys, "sync": SyncSortedKeys}


@pytest.fixture(params=["async", "sync"])
def variant(request) -> str:
    return request.param


async def connected(app) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(app, "/ws/json/")
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def test_receive_json_gets_decoded_content_and_send_json_encodes(variant):
    communicator = await connected(ECHO[variant].as_asgi())
    await communicator.send_json_to({"n": 1, "tags": ["a", "b"]})
    assert await communicator.receive_json_from() == {"echo": {"n": 1, "tags": ["a", "b"]}}
    await communicator.disconnect()


async def test_any_json_value_is_accepted(variant):
    communicator = await connected(ECHO[variant].as_asgi())
    for value in (None, 3.5, "text", [1, [2]], True):
        await communicator.send_json_to(value)
        assert await communicator.receive_json_from() == {"echo": value}
    await communicator.disconnect()


async def test_send_json_with_close_true_sends_then_closes(variant):
    communicator = await connected(ECHO[variant].as_asgi())
    await communicator.send_json_to({"close": True})
    assert await communicator.receive_json_from() == {"bye": True}
    assert await communicator.receive_output() == {"type": "websocket.close"}
    await communicator.disconnect()


async def test_send_json_with_a_close_code_closes_with_it(variant):
    communicator = await connected(ECHO[variant].as_asgi())
    await communicator.send_json_to({"close": 4002})
    assert await communicator.receive_json_from() == {"bye": True}
    assert await communicator.receive_output() == {"type": "websocket.close", "code": 4002}
    await communicator.disconnect()


async def test_decode_json_and_encode_json_can_be_overridden(variant):
    communicator = await connected(CUSTOM[variant].as_asgi())
    await communicator.send_to(text_data=';{"b": 2, "a": 1}')
    assert await communicator.receive_from() == '{"echo":{"a":1,"b":2}}'
    await communicator.disconnect()


async def test_value_error_from_a_custom_decode_json_closes_with_1007(variant):
    communicator = await connected(CUSTOM[variant].as_asgi())
    await communicator.send_to(text_data='{"a": 1}')
    closed = await communicator.receive_output()
    assert closed == {"type": "websocket.close", "code": 1007, "reason": "Invalid JSON: frames must start with ';'"}
    await communicator.disconnect()


def test_async_class_hooks_are_coroutine_functions():
    assert inspect.iscoroutinefunction(AsyncJsonWebsocketConsumer.decode_json)
    assert inspect.iscoroutinefunction(AsyncJsonWebsocketConsumer.encode_json)
    assert not inspect.iscoroutinefunction(JsonWebsocketConsumer.decode_json)


async def test_invalid_json_closes_with_1007_and_a_reason(variant):
    communicator = await connected(ECHO[variant].as_asgi())
    await communicator.send_to(text_data="{not json")
    closed = await communicator.receive_output()
    assert closed["type"] == "websocket.close"
    assert closed["code"] == 1007
    assert closed["reason"].startswith("Invalid JSON")
    assert len(closed["reason"].encode()) <= 123
    await communicator.disconnect(1007)


async def test_json_nested_deeper_than_max_json_depth_closes_with_1007(variant):
    communicator = await connected(ECHO[variant].as_asgi())
    await communicator.send_to(text_data="[" * 65 + "]" * 65)
    closed = await communicator.receive_output()
    assert (closed["code"], closed["reason"]) == (1007, "JSON nested deeper than 64 levels")
    await communicator.disconnect(1007)


async def test_max_json_depth_none_leaves_it_to_the_decoder(variant):
    consumer = type("Deep", (ECHO[variant],), {"max_json_depth": None})
    communicator = await connected(consumer.as_asgi())
    await communicator.send_to(text_data="[" * 100 + "]" * 100)
    assert json.loads(await communicator.receive_from()) == {"echo": json.loads("[" * 100 + "]" * 100)}
    await communicator.send_to(text_data="[" * 100_000)  # the decoder's RecursionError: still 1007, no traceback
    closed = await communicator.receive_output()
    assert (closed["code"], closed["reason"]) == (1007, "JSON nested too deeply")
    await communicator.disconnect(1007)


async def test_invalid_json_is_logged_with_the_consumer_name(variant, caplog):
    communicator = await connected(ECHO[variant].as_asgi())
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        await communicator.send_to(text_data="[1, 2")
        await communicator.receive_output()
    [record] = [r for r in caplog.records if r.name == LOGGER]
    assert f"tests.generic.test_json_websocket.{ECHO[variant].__name__}" in record.getMessage()
    assert "not valid JSON" in record.getMessage()
    await communicator.disconnect()


async def test_binary_frame_closes_with_1003(variant):
    communicator = await connected(ECHO[variant].as_asgi())
    await communicator.send_to(bytes_data=b'{"a": 1}')
    closed = await communicator.receive_output()
    assert closed["type"] == "websocket.close"
    assert closed["code"] == 1003
    await communicator.disconnect(1003)


async def test_binary_frame_is_logged_with_the_consumer_name(variant, caplog):
    communicator = await connected(ECHO[variant].as_asgi())
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        await communicator.send_to(bytes_data=b"\x00")
        await communicator.receive_output()
    [record] = [r for r in caplog.records if r.name == LOGGER]
    assert ECHO[variant].__name__ in record.getMessage()
    assert "binary frame" in record.getMessage()
    await communicator.disconnect()


async def test_a_bad_frame_does_not_reach_receive_json(variant):
    communicator = await connected(ECHO[variant].as_asgi())
    await communicator.send_to(text_data="nope")
    assert (await communicator.receive_output())["type"] == "websocket.close"
    assert await communicator.receive_nothing()
    await communicator.disconnect()


class AsyncUnencodable(AsyncJsonWebsocketConsumer):
    async def receive_json(self, content, **kwargs):
        await self.send_json({"when": object()})


class SyncUnencodable(JsonWebsocketConsumer):
    def receive_json(self, content, **kwargs):
        self.send_json({"when": object()})


UNENCODABLE = {"async": AsyncUnencodable, "sync": SyncUnencodable}


async def test_content_that_cannot_be_encoded_raises_type_error(variant):
    communicator = await connected(UNENCODABLE[variant].as_asgi())
    await communicator.send_json_to({})
    with pytest.raises(TypeError, match="not JSON serializable"):
        await communicator.receive_output()

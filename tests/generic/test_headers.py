"""Response headers keep the shape the consumer gave them in, so tests written for Channels compare equal."""

from __future__ import annotations

import pytest

from tether.generic.headers import encode_headers
from tether.generic.http import AsyncHttpConsumer
from tether.generic.websocket import AsyncWebsocketConsumer
from tether.testing import HttpCommunicator, WebsocketCommunicator


class ListHeadersResponse(AsyncHttpConsumer):
    async def handle(self, body: bytes) -> None:
        await self.send_response(200, b"ok", headers=[[b"Content-Type", b"text/plain"], [b"X-Count", b"1"]])


class ListHeadersAccept(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        await self.accept(headers=[[b"x-room", b"lobby"]])


def test_two_item_lists_stay_lists_and_tuples_stay_tuples():
    assert encode_headers([[b"a", b"1"], (b"b", b"2")]) == [[b"a", b"1"], (b"b", b"2")]


def test_str_parts_are_encoded_in_latin_1_in_the_shape_they_came_in():
    assert encode_headers([["X-Name", "café"], ("X-Other", b"raw")]) == [[b"X-Name", b"caf\xe9"], (b"X-Other", b"raw")]


def test_a_dicts_items_become_tuples():
    assert encode_headers({"Content-Type": "text/plain"}) == [(b"Content-Type", b"text/plain")]


def test_a_header_that_is_not_a_pair_is_refused_by_name():
    with pytest.raises(ValueError, match=r"must be a \(name, value\) pair, not b'Content-Type'"):
        encode_headers([b"Content-Type"])


async def test_http_response_start_carries_list_pairs_as_given():
    response = await HttpCommunicator(ListHeadersResponse.as_asgi(), "GET", "/").get_response()
    assert response["headers"] == [[b"Content-Type", b"text/plain"], [b"X-Count", b"1"]]


async def test_websocket_accept_carries_list_pairs_as_given():
    communicator = WebsocketCommunicator(ListHeadersAccept.as_asgi(), "/")
    connected, _ = await communicator.connect()
    assert connected
    assert communicator.response_headers == [[b"x-room", b"lobby"]]
    await communicator.disconnect()

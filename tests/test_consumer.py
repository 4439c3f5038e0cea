"""tether.consumer: dispatch by message type, one instance per connection, the channel layer, ordering, errors."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest
from django.test import override_settings

from tether.consumer import AsyncConsumer, SyncConsumer, get_handler_name
from tether.exceptions import StopConsumer
from tether.layers import channel_layers, get_channel_layer
from tether.testing import ApplicationCommunicator

SCOPE = {"type": "testing"}


class ReplyConsumer(AsyncConsumer):
    """Answers ``ping.me`` and ``whoami``; counts the messages this instance has handled."""

    greeting = "pong"
    handled = 0

    async def ping_me(self, message):
        self.handled += 1
        await self.send({"type": "reply", "greeting": self.greeting, "handled": self.handled})

    async def whoami(self, message):
        await self.send(
            {
                "type": "identity",
                "instance": id(self),
                "scope": self.scope,
                "layer": self.channel_layer,
                "channel": getattr(self, "channel_name", None),
            }
        )

    async def stop(self, message):
        raise StopConsumer()


def communicate(app, scope=None) -> ApplicationCommunicator:
    return ApplicationCommunicator(app, dict(scope or SCOPE))


# get_handler_name ---------------------------------------------------------------------------------------------------


def test_handler_name_replaces_dots_with_underscores():
    assert get_handler_name({"type": "chat.message.new"}) == "chat_message_new"


def test_handler_name_of_a_message_without_type_is_a_value_error():
    with pytest.raises(ValueError, match="no 'type' key"):
        get_handler_name({"text": "hello"})


def test_handler_name_of_a_non_string_type_is_a_value_error():
    with pytest.raises(ValueError, match="must be a str"):
        get_handler_name({"type": 5})


@pytest.mark.parametrize("message_type", ["_private", ".hidden", "__init__"])
def test_handler_name_of_a_type_naming_a_private_method_is_a_value_error(message_type):
    with pytest.raises(ValueError, match=r"must not start with '_' or '\.'"):
        get_handler_name({"type": message_type})


# Dispatch -----------------------------------------------------------------------------------------------------------


async def test_message_is_dispatched_to_the_method_named_after_its_type():
    communicator = communicate(ReplyConsumer.as_asgi())
    await communicator.send_input({"type": "ping.me"})
    assert await communicator.receive_output() == {"type": "reply", "greeting": "pong", "handled": 1}
    communicator.stop()


async def test_message_without_type_ends_the_consumer_with_a_value_error():
    communicator = communicate(ReplyConsumer.as_asgi())
    await communicator.send_input({"text": "no type here"})
    with pytest.raises(ValueError, match="no 'type' key"):
        await communicator.receive_output()


async def test_message_type_starting_with_underscore_is_refused():
    communicator = communicate(ReplyConsumer.as_asgi())
    await communicator.send_input({"type": "__init__"})
    with pytest.raises(ValueError, match="Malformed message type '__init__'"):
        await communicator.receive_output()


async def test_message_type_starting_with_a_dot_is_refused():
    communicator = communicate(ReplyConsumer.as_asgi())
    await communicator.send_input({"type": ".ping.me"})
    with pytest.raises(ValueError, match=r"Malformed message type '\.ping\.me'"):
        await communicator.receive_output()


async def test_message_without_a_handler_names_the_type_and_the_missing_method():
    communicator = communicate(ReplyConsumer.as_asgi())
    await communicator.send_input({"type": "chat.unknown"})
    with pytest.raises(ValueError, match=r"has no handler for message type 'chat\.unknown'.*'chat_unknown'"):
        await communicator.receive_output()


async def test_message_type_naming_an_attribute_that_is_not_a_method_is_refused():
    communicator = communicate(ReplyConsumer.as_asgi())
    await communicator.send_input({"type": "greeting"})
    with pytest.raises(ValueError, match="no handler for message type 'greeting'"):
        await communicator.receive_output()


async def test_stop_consumer_ends_the_application_cleanly():
    communicator = communicate(ReplyConsumer.as_asgi())
    await communicator.send_input({"type": "stop"})
    await communicator.wait()
    assert communicator.future.done() and communicator.future.exception() is None


# as_asgi and instances ----------------------------------------------------------------------------------------------


async def test_as_asgi_builds_one_instance_per_connection_with_its_own_state():
    app = ReplyConsumer.as_asgi()
    first, second = communicate(app), communicate(app)
    for _ in range(3):
        await first.send_input({"type": "ping.me"})
        await first.receive_output()
    await second.send_input({"type": "ping.me"})
    assert (await second.receive_output())["handled"] == 1
    await first.send_input({"type": "whoami"})
    await second.send_input({"type": "whoami"})
    assert (await first.receive_output())["instance"] != (await second.receive_output())["instance"]
    first.stop()
    second.stop()


def test_as_asgi_exposes_the_consumer_class_and_initkwargs():
    app = ReplyConsumer.as_asgi(greeting="hi")
    assert app.consumer_class is ReplyConsumer
    assert app.consumer_initkwargs == {"greeting": "hi"}


def test_as_asgi_keeps_the_consumer_name_for_introspection():
    app = ReplyConsumer.as_asgi()
    assert app.__name__ == "ReplyConsumer"
    assert app.__qualname__ == "ReplyConsumer"


async def test_initkwargs_set_attributes_on_each_instance():
    communicator = communicate(ReplyConsumer.as_asgi(greeting="hello"))
    await communicator.send_input({"type": "ping.me"})
    assert (await communicator.receive_output())["greeting"] == "hello"
    communicator.stop()
    assert ReplyConsumer.greeting == "pong"


def test_unknown_initkwargs_raise_type_error_at_as_asgi_time():
    with pytest.raises(TypeError, match=r"got keyword\(s\) \['colour'\] that are not attributes"):
        ReplyConsumer.as_asgi(colour="red")


async def test_consumer_instance_is_itself_an_asgi_application():
    communicator = communicate(ReplyConsumer(greeting="direct"))
    await communicator.send_input({"type": "ping.me"})
    assert (await communicator.receive_output())["greeting"] == "direct"
    communicator.stop()


# Scope and channel layer --------------------------------------------------------------------------------------------


async def test_consumer_sees_its_scope():
    communicator = communicate(ReplyConsumer.as_asgi(), {"type": "testing", "user": "ada"})
    await communicator.send_input({"type": "whoami"})
    assert (await communicator.receive_output())["scope"] == {"type": "testing", "user": "ada"}
    communicator.stop()


async def test_consumer_gets_the_default_layer_and_a_channel_name_from_new_channel():
    communicator = communicate(ReplyConsumer.as_asgi())
    await communicator.send_input({"type": "whoami"})
    identity = await communicator.receive_output()
    assert identity["layer"] is get_channel_layer()
    assert identity["channel"].startswith("specific.")
    communicator.stop()


async def test_messages_sent_to_the_channel_name_reach_the_consumer():
    communicator = communicate(ReplyConsumer.as_asgi())
    await communicator.send_input({"type": "whoami"})
    channel = (await communicator.receive_output())["channel"]
    await get_channel_layer().send(channel, {"type": "ping.me"})
    assert (await communicator.receive_output())["type"] == "reply"
    communicator.stop()


async def test_consumer_has_no_layer_and_no_channel_name_without_channel_layers():
    with override_settings(CHANNEL_LAYERS={}):
        communicator = communicate(ReplyConsumer.as_asgi())
        await communicator.send_input({"type": "whoami"})
        identity = await communicator.receive_output()
        communicator.stop()
    assert identity["layer"] is None
    assert identity["channel"] is None


async def test_channel_layer_alias_picks_the_layer():
    class OtherLayerConsumer(ReplyConsumer):
        channel_layer_alias = "other"

    layers = {
        "default": {"BACKEND": "tether.layers.InMemoryChannelLayer"},
        "other": {"BACKEND": "tether.layers.InMemoryChannelLayer"},
    }
    with override_settings(CHANNEL_LAYERS=layers):
        communicator = communicate(OtherLayerConsumer.as_asgi())
        await communicator.send_input({"type": "whoami"})
        identity = await communicator.receive_output()
        assert identity["layer"] is channel_layers["other"]
        assert identity["layer"] is not channel_layers["default"]
        communicator.stop()


# Ordering -----------------------------------------------------------------------------------------------------------


class OrderConsumer(AsyncConsumer):
    """Notes every ``work`` message; one with ``hold`` waits on ``gate``; one with ``report`` sends the notes."""

    gate = None

    async def hello(self, message):
        self.notes = []
        await self.send({"type": "channel", "name": self.channel_name})

    async def work(self, message):
        self.notes.append(message["n"])
        if message.get("hold"):
            await self.gate.wait()
        if message.get("report"):
            await self.send({"type": "notes", "notes": self.notes})


async def start_order_consumer(gate):
    communicator = communicate(OrderConsumer.as_asgi(gate=gate))
    await communicator.send_input({"type": "hello"})
    return communicator, (await communicator.receive_output())["name"]


async def test_a_slow_handler_delays_the_next_client_message():
    gate = asyncio.Event()
    communicator, _ = await start_order_consumer(gate)
    await communicator.send_input({"type": "work", "n": 1, "hold": True})
    await communicator.send_input({"type": "work", "n": 2, "report": True})
    assert await communicator.receive_nothing(0.1)
    gate.set()
    assert (await communicator.receive_output())["notes"] == [1, 2]
    communicator.stop()


async def test_a_slow_handler_delays_layer_messages_too():
    gate = asyncio.Event()
    communicator, channel = await start_order_consumer(gate)
    await communicator.send_input({"type": "work", "n": 1, "hold": True})
    await get_channel_layer().send(channel, {"type": "work", "n": 2, "report": True})
    assert await communicator.receive_nothing(0.1)
    gate.set()
    assert (await communicator.receive_output())["notes"] == [1, 2]
    communicator.stop()


async def test_client_and_layer_messages_are_handled_in_arrival_order():
    gate = asyncio.Event()
    layer = get_channel_layer()
    communicator, channel = await start_order_consumer(gate)
    await communicator.send_input({"type": "work", "n": 1, "hold": True})
    await asyncio.sleep(0.02)
    await communicator.send_input({"type": "work", "n": 2})
    await asyncio.sleep(0.02)
    await layer.send(channel, {"type": "work", "n": 3})
    await asyncio.sleep(0.02)
    await communicator.send_input({"type": "work", "n": 4})
    await asyncio.sleep(0.02)
    await layer.send(channel, {"type": "work", "n": 5, "report": True})
    gate.set()
    assert (await communicator.receive_output())["notes"] == [1, 2, 3, 4, 5]
    communicator.stop()


# Errors in handlers -------------------------------------------------------------------------------------------------


class FailingConsumer(AsyncConsumer):
    async def boom_event(self, message):
        raise RuntimeError("handler exploded")


class SyncFailingConsumer(SyncConsumer):
    def boom_event(self, message):
        raise RuntimeError("sync handler exploded")


async def test_handler_exception_is_logged_with_consumer_name_and_type_then_raised(caplog):
    communicator = communicate(FailingConsumer.as_asgi())
    with caplog.at_level(logging.ERROR, logger="tether.consumer"):
        await communicator.send_input({"type": "boom.event"})
        with pytest.raises(RuntimeError, match="handler exploded"):
            await communicator.receive_output()
    [record] = [r for r in caplog.records if r.name == "tether.consumer"]
    assert "tests.test_consumer.FailingConsumer" in record.getMessage()
    assert "'boom.event'" in record.getMessage()
    assert record.exc_info[0] is RuntimeError


async def test_sync_handler_exception_is_logged_with_consumer_name_and_type_then_raised(caplog):
    communicator = communicate(SyncFailingConsumer.as_asgi())
    with caplog.at_level(logging.ERROR, logger="tether.consumer"):
        await communicator.send_input({"type": "boom.event"})
        with pytest.raises(RuntimeError, match="sync handler exploded"):
            await communicator.receive_output()
    [record] = [r for r in caplog.records if r.name == "tether.consumer"]
    assert "tests.test_consumer.SyncFailingConsumer" in record.getMessage()
    assert "'boom.event'" in record.getMessage()


async def test_stop_consumer_is_not_logged_as_an_error(caplog):
    communicator = communicate(ReplyConsumer.as_asgi())
    with caplog.at_level(logging.DEBUG, logger="tether.consumer"):
        await communicator.send_input({"type": "stop"})
        await communicator.wait()
    assert not [r for r in caplog.records if r.name == "tether.consumer"]


# SyncConsumer -------------------------------------------------------------------------------------------------------


class ThreadConsumer(SyncConsumer):
    def where(self, message):
        result = self.send({"type": "thread", "ident": threading.get_ident(), "channel": self.channel_name})
        assert result is None  # send is a plain, blocking call here


async def test_sync_consumer_runs_handlers_off_the_event_loop_thread_and_sends_synchronously():
    communicator = communicate(ThreadConsumer.as_asgi())
    await communicator.send_input({"type": "where"})
    reply = await communicator.receive_output()
    assert reply["ident"] != threading.get_ident()
    communicator.stop()


async def test_sync_consumer_handlers_all_run_in_the_same_thread():
    communicator = communicate(ThreadConsumer.as_asgi())
    idents = set()
    for _ in range(3):
        await communicator.send_input({"type": "where"})
        idents.add((await communicator.receive_output())["ident"])
    assert len(idents) == 1
    communicator.stop()


async def test_sync_consumer_receives_layer_messages():
    communicator = communicate(ThreadConsumer.as_asgi())
    await communicator.send_input({"type": "where"})
    channel = (await communicator.receive_output())["channel"]
    await get_channel_layer().send(channel, {"type": "where"})
    assert (await communicator.receive_output())["type"] == "thread"
    communicator.stop()

"""The communicators: driving ASGI applications in tests without a server.

The applications here are plain ASGI callables, so these tests prove the communicators, not the consumers.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.consumers import EchoConsumer
from tether.testing import (
    ApplicationCommunicator,
    ApplicationFinished,
    CommunicatorTimeout,
    HttpCommunicator,
    WebsocketCommunicator,
)


async def scope_reporter(scope, receive, send):
    """Accepts, then answers every frame with the parts of its scope the tests look at."""
    await receive()
    await send({"type": "websocket.accept", "subprotocol": (scope["subprotocols"] or [None])[0]})
    while (await receive())["type"] == "websocket.receive":
        report = {
            key: scope[key].decode("latin-1") if isinstance(scope[key], bytes) else scope[key]
            for key in ("path", "raw_path", "query_string", "subprotocols")
        }
        report["headers"] = [[name.decode(), value.decode()] for name, value in scope["headers"]]
        report["spec_version"] = scope["asgi"].get("spec_version")
        await send({"type": "websocket.send", "text": json.dumps(report)})


async def refuser(scope, receive, send):
    await receive()
    await send({"type": "websocket.close", "code": 4403})


async def silent(scope, receive, send):
    await asyncio.Event().wait()


async def talks_then_fails(scope, receive, send):
    await receive()
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": "before the crash"})
    raise KeyError("crashed after sending")


async def returns_at_once(scope, receive, send):
    return None


async def accepts_then_returns(scope, receive, send):
    await receive()
    await send({"type": "websocket.accept"})


async def report(path: str, **kwargs) -> dict:
    communicator = WebsocketCommunicator(scope_reporter, path, **kwargs)
    await communicator.connect()
    await communicator.send_to(text_data="report")
    result = await communicator.receive_json_from()
    await communicator.disconnect()
    return result


# WebsocketCommunicator: connecting ----------------------------------------------------------------------------------


async def test_connect_returns_true_and_the_chosen_subprotocol():
    communicator = WebsocketCommunicator(scope_reporter, "/ws/", subprotocols=["chat.v1", "chat.v0"])
    assert await communicator.connect() == (True, "chat.v1")
    await communicator.disconnect()


async def test_connect_returns_true_and_none_without_subprotocol():
    communicator = WebsocketCommunicator(EchoConsumer.as_asgi(), "/ws/")
    assert await communicator.connect() == (True, None)
    await communicator.disconnect()


async def test_connect_returns_false_and_the_close_code_when_refused():
    communicator = WebsocketCommunicator(refuser, "/ws/")
    assert await communicator.connect() == (False, 4403)


async def test_connect_to_an_app_that_never_answers_raises_asyncio_timeout_error_and_cancels_the_app():
    communicator = WebsocketCommunicator(silent, "/ws/")
    with pytest.raises(asyncio.TimeoutError):
        await communicator.connect(timeout=0.05)
    assert communicator.future.cancelled()


# WebsocketCommunicator: scope ---------------------------------------------------------------------------------------


async def test_query_string_ends_up_in_the_scope_and_not_in_the_path():
    result = await report("/ws/search/?q=tether&page=2")
    assert result["path"] == "/ws/search/"
    assert result["query_string"] == "q=tether&page=2"


async def test_percent_encoded_path_is_decoded_in_path_and_kept_in_raw_path():
    result = await report("/ws/caf%C3%A9/a%20b/")
    assert result["path"] == "/ws/café/a b/"
    assert result["raw_path"] == "/ws/caf%C3%A9/a%20b/"


async def test_headers_and_subprotocols_end_up_in_the_scope():
    result = await report("/ws/", headers=[(b"origin", b"http://testserver")], subprotocols=["a", "b"])
    assert result["headers"] == [["origin", "http://testserver"]]
    assert result["subprotocols"] == ["a", "b"]


async def test_spec_version_ends_up_in_the_scope():
    assert (await report("/ws/", spec_version="2.3"))["spec_version"] == "2.3"
    assert (await report("/ws/"))["spec_version"] is None


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_path_must_be_a_string():
    with pytest.raises(TypeError, match="path must be a str, not bytes"):
        WebsocketCommunicator(EchoConsumer.as_asgi(), b"/ws/")


# WebsocketCommunicator: frames --------------------------------------------------------------------------------------


@pytest.fixture
async def echo():
    communicator = WebsocketCommunicator(EchoConsumer.as_asgi(), "/ws/echo/")
    connected, _ = await communicator.connect()
    assert connected
    yield communicator
    communicator.stop(exceptions=False)


async def test_receive_from_returns_text_frames_as_str(echo):
    await echo.send_to(text_data="hello")
    assert await echo.receive_from() == "hello"


async def test_receive_from_returns_binary_frames_as_bytes(echo):
    await echo.send_to(bytes_data=b"\x00\xff")
    assert await echo.receive_from() == b"\x00\xff"


async def test_send_json_to_and_receive_json_from(echo):
    await echo.send_json_to({"list": [1, 2], "none": None})
    assert await echo.receive_json_from() == {"list": [1, 2], "none": None}


async def test_receive_json_from_a_binary_frame_is_an_assertion_error(echo):
    await echo.send_to(bytes_data=b"{}")
    with pytest.raises(AssertionError, match="Expected a JSON text frame, but got a binary one"):
        await echo.receive_json_from()


async def test_send_to_with_both_text_and_bytes_is_a_value_error(echo):
    with pytest.raises(ValueError, match="exactly one of text_data or bytes_data"):
        await echo.send_to(text_data="a", bytes_data=b"a")


async def test_send_to_with_neither_text_nor_bytes_is_a_value_error(echo):
    with pytest.raises(ValueError, match="exactly one of text_data or bytes_data"):
        await echo.send_to()


async def test_send_to_with_bytes_as_text_is_a_type_error(echo):
    with pytest.raises(TypeError, match="text_data must be a str, not bytes"):
        await echo.send_to(text_data=b"hello")


async def test_send_to_with_text_as_bytes_is_a_type_error(echo):
    with pytest.raises(TypeError, match="bytes_data must be bytes, not str"):
        await echo.send_to(bytes_data="hello")


async def test_receive_nothing_is_true_when_nothing_was_sent(echo):
    assert await echo.receive_nothing(timeout=0.05) is True


async def test_receive_nothing_is_false_when_a_frame_is_waiting(echo):
    await echo.send_to(text_data="ping")
    assert await echo.receive_nothing(timeout=0.1) is False
    assert await echo.receive_from() == "ping"


async def test_receive_from_times_out_with_asyncio_timeout_error_and_cancels_the_app(echo):
    with pytest.raises(asyncio.TimeoutError):
        await echo.receive_from(timeout=0.05)
    assert echo.future.cancelled()


async def test_disconnect_waits_for_the_application_to_finish(echo):
    await echo.disconnect()
    assert echo.future.done() and not echo.future.cancelled()


async def test_application_exception_surfaces_after_its_earlier_output_is_read():
    communicator = WebsocketCommunicator(talks_then_fails, "/ws/")
    assert await communicator.connect() == (True, None)
    await asyncio.sleep(0.01)  # the application has sent its frame and crashed by now
    assert await communicator.receive_from() == "before the crash"
    with pytest.raises(KeyError, match="crashed after sending"):
        await communicator.receive_from()


async def test_send_input_to_a_crashed_application_raises_its_exception():
    communicator = WebsocketCommunicator(talks_then_fails, "/ws/")
    await communicator.connect()
    await communicator.receive_from()
    with pytest.raises(KeyError, match="crashed after sending"):
        await communicator.send_to(text_data="anyone there?")


# ApplicationCommunicator --------------------------------------------------------------------------------------------


async def test_application_communicator_feeds_input_and_reads_output():
    async def doubler(scope, receive, send):
        message = await receive()
        await send({"type": "result", "value": message["value"] * 2, "scope_type": scope["type"]})

    communicator = ApplicationCommunicator(doubler, {"type": "maths"})
    await communicator.send_input({"type": "input", "value": 21})
    assert await communicator.receive_output() == {"type": "result", "value": 42, "scope_type": "maths"}
    await communicator.wait()


async def test_wait_times_out_with_asyncio_timeout_error_and_cancels_the_app():
    communicator = ApplicationCommunicator(silent, {"type": "testing"})
    with pytest.raises(asyncio.TimeoutError):
        await communicator.wait(timeout=0.05)
    assert communicator.future.cancelled()


async def test_receive_output_after_the_app_returned_raises_an_asyncio_timeout_error_at_once():
    communicator = ApplicationCommunicator(returns_at_once, {"type": "testing"})
    await communicator.wait()
    started = asyncio.get_running_loop().time()
    with pytest.raises(asyncio.TimeoutError):
        await communicator.receive_output(timeout=5)
    assert asyncio.get_running_loop().time() - started < 1


async def test_application_finished_names_how_the_app_ended_and_its_last_event():
    communicator = WebsocketCommunicator(accepts_then_returns, "/ws/")
    await communicator.connect()
    last_event = r"last event read from it was \{'type': 'websocket\.accept'"
    with pytest.raises(ApplicationFinished, match=rf"returned .* {last_event}"):
        await communicator.receive_from()


async def test_receive_json_from_an_app_that_returned_raises_asyncio_timeout_error():
    communicator = WebsocketCommunicator(accepts_then_returns, "/ws/")
    await communicator.connect()
    with pytest.raises(asyncio.TimeoutError):
        await communicator.receive_json_from()


async def test_receive_output_after_a_timeout_cancelled_the_app_says_it_was_cancelled():
    communicator = ApplicationCommunicator(silent, {"type": "testing"})
    with pytest.raises(CommunicatorTimeout):
        await communicator.receive_output(timeout=0.05)
    with pytest.raises(ApplicationFinished, match="was cancelled"):
        await communicator.receive_output()


def test_communicator_timeout_is_both_asyncio_and_builtin_timeout_error():
    assert issubclass(CommunicatorTimeout, asyncio.TimeoutError)
    assert issubclass(CommunicatorTimeout, TimeoutError)
    assert issubclass(ApplicationFinished, CommunicatorTimeout)


async def test_receive_nothing_is_true_at_once_after_the_app_returned():
    communicator = ApplicationCommunicator(returns_at_once, {"type": "testing"})
    await communicator.wait()
    started = asyncio.get_running_loop().time()
    assert await communicator.receive_nothing(timeout=5) is True
    assert asyncio.get_running_loop().time() - started < 1


async def test_receive_nothing_raises_the_exception_of_an_app_that_died():
    communicator = WebsocketCommunicator(talks_then_fails, "/ws/")
    await communicator.connect()
    assert await communicator.receive_from() == "before the crash"
    with pytest.raises(KeyError, match="crashed after sending"):
        await communicator.receive_nothing()


async def test_receive_nothing_is_false_while_an_app_that_died_has_unread_events():
    communicator = WebsocketCommunicator(talks_then_fails, "/ws/")
    await communicator.connect()
    await asyncio.sleep(0.01)  # the application has sent its frame and crashed by now
    assert await communicator.receive_nothing() is False


async def test_disconnect_after_a_timeout_cancelled_the_app_returns_quietly(echo):
    with pytest.raises(asyncio.TimeoutError):
        await echo.receive_from(timeout=0.05)
    await echo.disconnect()


async def test_stop_cancels_a_running_application():
    communicator = ApplicationCommunicator(silent, {"type": "testing"})
    await communicator.send_input({"type": "start"})
    communicator.stop()
    with pytest.raises(asyncio.CancelledError):
        await communicator.future


# HttpCommunicator ---------------------------------------------------------------------------------------------------


async def http_echo(scope, receive, send):
    """Answers with the request's method, path, query string, headers and body as JSON, in two body parts."""
    body = (await receive())["body"]
    answer = {
        "method": scope["method"],
        "path": scope["path"],
        "raw_path": scope["raw_path"].decode(),
        "query_string": scope["query_string"].decode(),
        "headers": [[name.decode(), value.decode()] for name, value in scope["headers"]],
        "body": body.decode(),
    }
    encoded = json.dumps(answer).encode()
    await send({"type": "http.response.start", "status": 203, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": encoded[:10], "more_body": True})
    await send({"type": "http.response.body", "body": encoded[10:]})


async def test_get_response_returns_status_headers_and_the_joined_body():
    communicator = HttpCommunicator(http_echo, "post", "/items/", body=b"name=tether", headers=[(b"x-a", b"1")])
    response = await communicator.get_response()
    assert response["status"] == 203
    assert response["headers"] == [(b"content-type", b"application/json")]
    answer = json.loads(response["body"])
    assert answer["method"] == "POST"
    assert answer["body"] == "name=tether"
    assert answer["headers"] == [["x-a", "1"]]


async def test_http_query_string_and_percent_encoded_path_end_up_in_the_scope():
    response = await HttpCommunicator(http_echo, "GET", "/files/my%20report.pdf?download=1&v=2").get_response()
    answer = json.loads(response["body"])
    assert answer["path"] == "/files/my report.pdf"
    assert answer["raw_path"] == "/files/my%20report.pdf"
    assert answer["query_string"] == "download=1&v=2"


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_http_communicator_body_must_be_bytes():
    with pytest.raises(TypeError, match="body must be bytes, not str"):
        HttpCommunicator(http_echo, "POST", "/", body="text")


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_http_communicator_path_must_be_a_string():
    with pytest.raises(TypeError, match="path must be a str, not bytes"):
        HttpCommunicator(http_echo, "GET", b"/files/")


async def test_get_response_times_out_with_asyncio_timeout_error():
    communicator = HttpCommunicator(silent, "GET", "/")
    with pytest.raises(asyncio.TimeoutError):
        await communicator.get_response(timeout=0.05)
    assert communicator.future.cancelled()


async def test_get_response_names_an_unexpected_event():
    async def websocket_minded(scope, receive, send):
        await receive()
        await send({"type": "websocket.accept"})

    with pytest.raises(AssertionError, match=r"Expected 'http\.response\.start'"):
        await HttpCommunicator(websocket_minded, "GET", "/").get_response()

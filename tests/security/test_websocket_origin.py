"""Origin checks on WebSocket handshakes: the pattern rules, the refusal (close before accept, HTTP 403 from a real
server), and ``AllowedHostsOriginValidator`` following ``ALLOWED_HOSTS``."""

from __future__ import annotations

from urllib.parse import urlparse

import pytest
import websockets
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from django.urls import path
from websockets.exceptions import InvalidStatus

from tests.auth_support import WhoAmIConsumer, create_user, session_cookie_for
from tests.consumers import EchoConsumer
from tether.auth import AuthMiddlewareStack
from tether.layers import channel_layers
from tether.routing import URLRouter
from tether.security.websocket import AllowedHostsOriginValidator, OriginValidator, WebsocketDenier
from tether.testing import HttpCommunicator, WebsocketCommunicator

echo = EchoConsumer.as_asgi()


def origin_headers(*origins: str) -> list[tuple[bytes, bytes]]:
    return [(b"origin", origin.encode("latin-1")) for origin in origins]


async def handshake(app, *origins: str) -> tuple[bool, object]:
    communicator = WebsocketCommunicator(app, "/", headers=origin_headers(*origins))
    connected, detail = await communicator.connect()
    await communicator.disconnect(code=1000 if connected else 1006)
    return connected, detail


@pytest.mark.parametrize(
    ("pattern", "origin"),
    [
        ("*", "https://anything.example"),
        ("example.com", "http://example.com"),
        ("example.com", "https://example.com:8443"),
        ("EXAMPLE.com", "https://Example.COM"),
        (".example.com", "https://example.com"),
        (".example.com", "https://chat.example.com"),
        (".example.com", "https://a.b.example.com:9000"),
        ("example.com:8000", "http://example.com:8000"),
        ("https://example.com", "https://example.com"),
        ("https://example.com", "https://example.com:443"),
        ("https://example.com:8443", "https://example.com:8443"),
        ("http://example.com", "http://example.com:80"),
        ("https://.example.com", "https://www.example.com"),
        ("[::1]", "http://[::1]:8000"),
        ("http://[::1]:8000", "http://[::1]:8000"),
        ("127.0.0.1", "http://127.0.0.1:8000"),
        ("example.com", "https://example.com."),
    ],
)
async def test_origin_matching_the_pattern_is_accepted(pattern, origin):
    assert await handshake(OriginValidator(echo, [pattern]), origin) == (True, None)


@pytest.mark.parametrize(
    ("pattern", "origin"),
    [
        ("example.com", "https://evil.example"),
        ("example.com", "https://sub.example.com"),
        ("example.com", "https://example.com.evil.example"),
        ("example.com", "https://notexample.com"),
        (".example.com", "https://notexample.com"),
        (".example.com", "https://example.community"),
        ("example.com:8000", "http://example.com:8001"),
        ("example.com:8000", "http://example.com"),
        ("https://example.com", "http://example.com"),
        ("https://example.com", "https://example.com:8443"),
        ("https://example.com:8443", "https://example.com"),
        ("http://example.com", "https://example.com:80"),
        ("https://.example.com", "http://www.example.com"),
        ("127.0.0.1", "http://127.0.0.2"),
    ],
)
async def test_origin_not_matching_the_pattern_is_refused_before_accept(pattern, origin):
    assert await handshake(OriginValidator(echo, [pattern]), origin) == (False, 1000)


async def test_any_of_several_patterns_may_match():
    app = OriginValidator(echo, ["https://example.com", ".example.org"])
    assert (await handshake(app, "https://www.example.org"))[0] is True
    assert (await handshake(app, "https://example.com"))[0] is True
    assert (await handshake(app, "https://example.net"))[0] is False


async def test_missing_origin_is_refused_unless_star_is_allowed():
    assert (await handshake(OriginValidator(echo, ["example.com"])))[0] is False
    assert (await handshake(OriginValidator(echo, ["*"])))[0] is True


async def test_null_origin_is_refused_unless_star_is_allowed():
    assert (await handshake(OriginValidator(echo, ["example.com", "null"]), "null"))[0] is False
    assert (await handshake(OriginValidator(echo, ["*"]), "null"))[0] is True


@pytest.mark.parametrize(
    "origin",
    [
        "example.com",
        "https://",
        "https://example.com/path",
        "https://example.com?x=1",
        "https://user@example.com",
        "https://example.com:99999",
        "https://exa mple.com",
        "",
        "https://" + "a" * 3000 + ".com",
    ],
)
async def test_malformed_origin_is_refused(origin):
    assert (await handshake(OriginValidator(echo, [".com", "example.com"]), origin))[0] is False


async def test_several_origin_headers_are_refused():
    app = OriginValidator(echo, ["example.com"])
    assert (await handshake(app, "https://example.com", "https://example.com"))[0] is False


async def test_http_connections_pass_through_unchecked():
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"served"})

    communicator = HttpCommunicator(OriginValidator(app, ["example.com"]), "GET", "/", headers=origin_headers("x://y"))
    response = await communicator.get_response()
    assert (response["status"], response["body"]) == (200, b"served")


def test_a_single_string_instead_of_a_list_is_a_type_error():
    with pytest.raises(TypeError, match=r"write \['example.com'\]"):
        OriginValidator(echo, "example.com")


@pytest.mark.parametrize("pattern", ["https://", "example.com/chat", "example.com:http", "", "https://example.com?x"])
def test_a_pattern_that_cannot_match_is_a_value_error(pattern):
    with pytest.raises(ValueError, match="Allowed origin"):
        OriginValidator(echo, [pattern])


def test_a_non_string_pattern_is_a_type_error():
    with pytest.raises(TypeError, match="must be strings"):
        OriginValidator(echo, [b"example.com"])


async def test_refusal_is_logged_with_the_origin(caplog):
    caplog.set_level("WARNING", logger="tether.security.websocket")
    await handshake(OriginValidator(echo, ["example.com"]), "https://evil.example")
    assert "https://evil.example" in caplog.text


async def test_denier_refuses_without_opening_a_layer_channel():
    layer = channel_layers["default"]
    before = len(getattr(layer, "channels", {}))
    communicator = WebsocketCommunicator(WebsocketDenier.as_asgi(), "/")
    assert await communicator.connect() == (False, 1000)
    await communicator.send_input({"type": "websocket.disconnect", "code": 1006})
    await communicator.wait()
    assert len(getattr(layer, "channels", {})) == before


async def test_url_router_nests_through_the_validator():
    app = URLRouter([path("ws/", OriginValidator(URLRouter([path("echo/", echo)]), ["example.com"]))])
    communicator = WebsocketCommunicator(app, "/ws/echo/", headers=origin_headers("https://example.com"))
    assert (await communicator.connect())[0] is True
    await communicator.send_to(text_data="nested")
    assert await communicator.receive_from() == "nested"
    await communicator.disconnect()


# --- AllowedHostsOriginValidator -------------------------------------------------------------------------------


@override_settings(ALLOWED_HOSTS=["example.com", ".example.org"])
async def test_allowed_hosts_validator_uses_allowed_hosts():
    app = AllowedHostsOriginValidator(echo)
    assert app.allowed_origins == ["example.com", ".example.org"]
    assert (await handshake(app, "https://example.com"))[0] is True
    assert (await handshake(app, "http://chat.example.org:8000"))[0] is True
    assert (await handshake(app, "https://evil.example"))[0] is False
    assert (await handshake(app))[0] is False


@override_settings(ALLOWED_HOSTS=[], DEBUG=True)
@pytest.mark.parametrize("origin", ["http://localhost:8000", "http://127.0.0.1:3000", "http://[::1]:8000"])
async def test_debug_with_empty_allowed_hosts_allows_local_origins(origin):
    assert (await handshake(AllowedHostsOriginValidator(echo), origin))[0] is True


@override_settings(ALLOWED_HOSTS=[], DEBUG=True)
async def test_debug_with_empty_allowed_hosts_still_refuses_other_sites():
    assert (await handshake(AllowedHostsOriginValidator(echo), "https://evil.example"))[0] is False


@override_settings(ALLOWED_HOSTS=[], DEBUG=False)
async def test_empty_allowed_hosts_without_debug_refuses_everything():
    assert (await handshake(AllowedHostsOriginValidator(echo), "http://localhost"))[0] is False


@override_settings(ALLOWED_HOSTS=["*"])
async def test_star_in_allowed_hosts_allows_any_origin():
    assert (await handshake(AllowedHostsOriginValidator(echo), "https://anywhere.example"))[0] is True


async def test_allowed_hosts_validator_follows_setting_changes():
    app = AllowedHostsOriginValidator(echo)
    with override_settings(ALLOWED_HOSTS=["one.example"]):
        assert (await handshake(app, "https://one.example"))[0] is True
    with override_settings(ALLOWED_HOSTS=["two.example"]):
        assert (await handshake(app, "https://one.example"))[0] is False
        assert (await handshake(app, "https://two.example"))[0] is True


@override_settings(ALLOWED_HOSTS=["example.com/path"])
async def test_unusable_allowed_hosts_entry_is_improperly_configured():
    with pytest.raises(ImproperlyConfigured, match="ALLOWED_HOSTS"):
        await handshake(AllowedHostsOriginValidator(echo), "https://example.com")


# --- Over a real server ------------------------------------------------------------------------------------------


def default_stack():
    """The stack the docs recommend for WebSockets."""
    return AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter([path("ws/whoami/", WhoAmIConsumer.as_asgi())])))


@pytest.mark.django_db(transaction=True)
async def test_cross_site_handshake_with_the_session_cookie_gets_403_from_the_server(serve):
    cookie = await database_sync_to_async_call(lambda: session_cookie_for(create_user()))
    server = serve(default_stack())
    with pytest.raises(InvalidStatus) as refused:
        async with websockets.connect(
            f"{server.ws_url}/ws/whoami/",
            origin="https://evil.example",
            additional_headers={"Cookie": f"sessionid={cookie}"},
        ):
            pass
    assert refused.value.response.status_code == 403


@pytest.mark.django_db(transaction=True)
async def test_handshake_without_origin_gets_403_from_the_server(serve):
    server = serve(default_stack())
    with pytest.raises(InvalidStatus) as refused:
        async with websockets.connect(f"{server.ws_url}/ws/whoami/"):
            pass
    assert refused.value.response.status_code == 403


@pytest.mark.django_db(transaction=True)
async def test_same_site_handshake_is_accepted_with_its_user(serve):
    cookie = await database_sync_to_async_call(lambda: session_cookie_for(create_user()))
    server = serve(default_stack())
    async with websockets.connect(
        f"{server.ws_url}/ws/whoami/",
        origin=f"http://127.0.0.1:{server.port}",
        additional_headers={"Cookie": f"sessionid={cookie}"},
    ) as ws:
        assert '"username": "alice"' in await ws.recv()


async def database_sync_to_async_call(function):
    from tether.db import database_sync_to_async

    return await database_sync_to_async(function)()


# Channels' per-origin methods, kept for subclasses written for Channels ----------------------------------------------


def test_channels_origin_methods_agree_with_tethers_rules():
    validator = OriginValidator(EchoConsumer.as_asgi(), [".example.com", "https://app.test:8443"])
    assert validator.valid_origin(urlparse("http://www.example.com"))
    assert validator.validate_origin(urlparse("https://app.test:8443"))
    assert not validator.validate_origin(urlparse("https://app.test"))
    assert not validator.valid_origin(None)


def test_a_handshake_without_origin_is_valid_only_when_any_origin_is():
    assert OriginValidator(EchoConsumer.as_asgi(), ["*"]).valid_origin(None)


def test_match_allowed_origin_checks_one_pattern():
    validator = OriginValidator(EchoConsumer.as_asgi(), ["*"])
    assert validator.match_allowed_origin(urlparse("https://a.example.com"), ".example.com")
    assert not validator.match_allowed_origin(urlparse("https://example.org"), ".example.com")


def test_get_origin_port_falls_back_to_the_schemes_default():
    validator = OriginValidator(EchoConsumer.as_asgi(), ["*"])
    assert validator.get_origin_port(urlparse("wss://example.com")) == 443
    assert validator.get_origin_port(urlparse("http://example.com:8000")) == 8000
    assert validator.get_origin_port(urlparse("ftp://example.com")) is None

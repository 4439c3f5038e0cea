"""Exact origins: ``ExactOriginValidator`` lets a handshake through only when scheme, host and port all match.

The matrix runs through the parsing rules and a communicator; a few cases go through a real uvicorn server with
the ``websockets`` client, which is what a browser's handshake looks like to tether.
"""

from __future__ import annotations

import asyncio

import pytest
import websockets
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from websockets.exceptions import InvalidStatus

from tests.consumers import EchoConsumer
from tether.security.origins import ExactOrigins, parse_allowed_origin, parse_origin_header
from tether.security.websocket import ExactOriginValidator
from tether.testing import HttpCommunicator, WebsocketCommunicator

echo = EchoConsumer.as_asgi()

ALLOWED = [
    "https://example.com",
    "https://*.example.com",
    "http://localhost:8000",
    "http://[::1]:8000",
    "https://bücher.example",
    "chrome-extension://abcdefghijklmnop",
]


def allows(origin: str, allowed: list[str] = ALLOWED) -> bool:
    return ExactOrigins(allowed).allows([origin])


@pytest.mark.parametrize(
    "origin",
    [
        "https://example.com",
        "https://example.com:443",  # the default port, written out
        "HTTPS://EXAMPLE.COM",  # scheme and host are case-insensitive
        "https://example.com.",  # the fully qualified form of the same host
        "https://chat.example.com",
        "https://a.b.example.com",
        "http://localhost:8000",
        "http://[::1]:8000",
        "http://[0:0:0:0:0:0:0:1]:8000",  # the same IPv6 address, not compressed
        "https://xn--bcher-kva.example",  # what a browser sends for bücher.example
        "chrome-extension://abcdefghijklmnop",
    ],
)
def test_an_allowed_origin_matches(origin):
    assert allows(origin)


@pytest.mark.parametrize(
    "origin",
    [
        "http://example.com",  # another scheme
        "https://example.com:8443",  # another port of an allowed host
        "https://example.com:80",
        "http://localhost:8001",
        "http://localhost",  # port 80 is not port 8000
        "https://localhost:8000",
        "https://evilexample.com",  # the suffix without its dot
        "https://example.com.evil.example",
        "https://evil.example/https://example.com",
        "https://example.community",
        "http://chat.example.com",  # the wildcard keeps its scheme
        "https://chat.example.com:8443",  # and its port
        "https://[::2]:8000",
        "http://[::1]:8001",
        "https://bücher.example",  # browsers send punycode; raw Unicode is not a browser's origin
        "null",
        "NULL",
        "",
        "https://.example.com",
        "https://user@example.com",
        "https://example.com/",
        "https://example.com?x=1",
        "https://example.com#x",
        "https://example.com:0",
        "https://example.com:65536",
        "https://example.com:+443",
        " https://example.com",
        "https://example.com\n",
        "https://exa mple.com",
        "https://example.com\\@evil.example",
        "//example.com",
        "example.com",
        "https://" + "a." * 1100 + "example.com",
        "chrome-extension://another",
        "https://ex%61mple.com",  # percent-encoding is not part of an origin
        "https://ex\u0430mple.com",  # a Cyrillic a: a browser would send its punycode, another host
        "http://[::ffff:127.0.0.1]:8000",  # an IPv4-mapped address is not the IPv6 loopback
        "http://[fe80::1%25eth0]:8000",  # zone ids are not in origins
        "https://example.com:443:443",
        "https://example.com..",
        "https://example.com:443@evil.example",
    ],
)
def test_any_other_origin_does_not_match(origin):
    assert not allows(origin)


def test_the_bare_domain_is_not_one_of_its_subdomains():
    assert not allows("https://example.org", ["https://*.example.org"])
    assert allows("https://example.org", ["https://example.org", "https://*.example.org"])


def test_a_missing_or_repeated_origin_header_does_not_match():
    origins = ExactOrigins(["https://example.com"])
    assert not origins.allows([])
    assert not origins.allows(["https://example.com", "https://example.com"])


def test_parsed_entries_are_written_as_a_browser_writes_origins():
    assert str(parse_allowed_origin("HTTPS://Example.COM:443")) == "https://example.com"
    assert str(parse_allowed_origin("https://*.Example.com:8443")) == "https://*.example.com:8443"
    assert str(parse_allowed_origin("http://[0::1]:8000")) == "http://[::1]:8000"
    assert str(parse_allowed_origin("https://bücher.example")) == "https://xn--bcher-kva.example"
    assert parse_origin_header("http://127.0.0.1:8000") == parse_allowed_origin("http://127.0.0.1:8000").origin


@pytest.mark.parametrize(
    ("entry", "fix"),
    [
        ("*", "List the origins of your own pages"),
        ("null", "remove it"),
        ("example.com", "write 'https://example.com'"),
        ("wss://example.com", "write 'https://example.com'"),
        ("ws://localhost:8000", "write 'http://localhost:8000'"),
        ("https://example.com/", "write 'https://example.com'"),
        ("https://example.com/chat", "write 'https://example.com'"),
        ("https://example.com?next=1", "no path, query or fragment"),
        ("https://admin@example.com", "write 'https://example.com'"),
        (".example.com", "has no scheme"),
        ("https://.example.com", "write 'https://*.example.com'"),
        ("https://*.com", "at least two labels"),
        ("https://*.127.0.0.1", "not an IP address"),
        ("https://a*.example.com", "whole first label"),
        ("https://*", "whole first label"),
        ("https://example.com:99999", "from 1 to 65535"),
        ("https://example.com:0", "from 1 to 65535"),
        ("https://example.com:", "from 1 to 65535"),
        ("http://::1:8000", "in brackets"),
        ("https://exa mple.com", "a host name or IP address"),
        ("https://straße.example", "ASCII form"),
    ],
)
def test_an_entry_that_is_not_an_origin_is_refused_with_the_fix(entry, fix):
    with pytest.raises(ValueError, match="is not an origin") as refused:
        parse_allowed_origin(entry)
    assert fix in str(refused.value)


# --- The validator ---------------------------------------------------------------------------------------------


async def handshake(app, *origins: str) -> bool:
    headers = [(b"origin", origin.encode("latin-1")) for origin in origins]
    communicator = WebsocketCommunicator(app, "/", headers=headers)
    connected, _ = await communicator.connect()
    await communicator.disconnect(code=1000 if connected else 1006)
    return connected


async def test_validator_with_a_list_checks_scheme_host_and_port():
    app = ExactOriginValidator(echo, ["https://example.com", "https://*.example.com"])
    assert await handshake(app, "https://example.com")
    assert await handshake(app, "https://chat.example.com")
    assert not await handshake(app, "http://example.com")
    assert not await handshake(app, "https://example.com:8000")
    assert not await handshake(app, "https://evilexample.com")
    assert not await handshake(app, "null")
    assert not await handshake(app)
    assert not await handshake(app, "https://example.com", "https://example.com")


@override_settings(TETHER_ALLOWED_ORIGINS=["https://example.com"])
async def test_validator_without_a_list_reads_the_setting_and_follows_its_changes():
    app = ExactOriginValidator(echo)
    assert app.allowed_origins == ["https://example.com"]
    assert await handshake(app, "https://example.com")
    with override_settings(TETHER_ALLOWED_ORIGINS=["https://example.org:8443"]):
        assert not await handshake(app, "https://example.com")
        assert await handshake(app, "https://example.org:8443")


@override_settings(TETHER_ALLOWED_ORIGINS=["https://example.com"])
async def test_refusal_is_logged_with_the_origin_and_the_setting(caplog):
    caplog.set_level("WARNING", logger="tether.security.websocket")
    assert not await handshake(ExactOriginValidator(echo), "http://example.com:8080")
    assert "'http://example.com:8080'" in caplog.text
    assert "TETHER_ALLOWED_ORIGINS" in caplog.text


def test_validator_without_the_setting_is_improperly_configured_at_construction():
    with pytest.raises(ImproperlyConfigured, match=r"TETHER_ALLOWED_ORIGINS = \['https://example.com'\]"):
        ExactOriginValidator(echo)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("https://example.com", r"not the single string 'https://example.com'; write \['https://example.com'\]"),
        (["https://example.com", "example.org"], r"TETHER_ALLOWED_ORIGINS\[1\] 'example.org' is not an origin"),
        ([b"https://example.com"], r"TETHER_ALLOWED_ORIGINS\[0\] Allowed origins are strings"),
        ({"https://example.com": True}, "must be a list of origins"),
    ],
)
def test_a_malformed_setting_is_improperly_configured_naming_the_entry(setting, message):
    with override_settings(TETHER_ALLOWED_ORIGINS=setting), pytest.raises(ImproperlyConfigured, match=message):
        ExactOriginValidator(echo)


def test_a_malformed_list_argument_is_improperly_configured_naming_the_entry():
    with pytest.raises(ImproperlyConfigured, match=r"allowed_origins\[0\] 'wss://example.com'.*'https://example.com'"):
        ExactOriginValidator(echo, ["wss://example.com"])


async def test_http_connections_pass_through_unchecked():
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"served"})

    validator = ExactOriginValidator(app, ["https://example.com"])
    response = await HttpCommunicator(
        validator, "GET", "/", headers=[(b"origin", b"https://evil.example")]
    ).get_response()
    assert (response["status"], response["body"]) == (200, b"served")


# --- Over a real server ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "accepted"),
    [
        ("https://example.com", True),
        ("https://chat.example.com", True),
        ("http://example.com", False),
        ("https://example.com:8443", False),
        ("https://evilexample.com", False),
        ("null", False),
        (None, False),
    ],
)
async def test_real_server_accepts_exact_origins_and_answers_others_with_403(serve, origin, accepted):
    server = serve(ExactOriginValidator(echo, ["https://example.com", "https://*.example.com"]))
    if accepted:
        async with websockets.connect(f"{server.ws_url}/", origin=origin, open_timeout=10) as ws:
            await ws.send("hello")
            assert await asyncio.wait_for(ws.recv(), 10) == "hello"
        return
    with pytest.raises(InvalidStatus) as refused:
        async with websockets.connect(f"{server.ws_url}/", origin=origin, open_timeout=10):
            pass
    assert refused.value.response.status_code == 403


async def test_real_server_checks_the_port_the_page_was_served_from(serve):
    """A page from this very server is allowed; the same host on another port (a dev tool) is not."""
    server = serve(echo)
    app_server = serve(ExactOriginValidator(echo, [f"http://127.0.0.1:{server.port}"]))
    async with websockets.connect(
        f"{app_server.ws_url}/", origin=f"http://127.0.0.1:{server.port}", open_timeout=10
    ) as ws:
        await ws.send("same origin")
        assert await asyncio.wait_for(ws.recv(), 10) == "same origin"
    with pytest.raises(InvalidStatus):
        async with websockets.connect(
            f"{app_server.ws_url}/", origin=f"http://127.0.0.1:{app_server.port}", open_timeout=10
        ):
            pass

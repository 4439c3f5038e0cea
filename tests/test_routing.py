"""Tests for tether.routing: protocol, URL and channel-name dispatch, and loading ASGI_APPLICATION."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from django.urls import Resolver404, include, path, re_path, register_converter

from tether.routing import ChannelNameRouter, ProtocolTypeRouter, URLRouter, get_default_application


class HexColorConverter:
    """Six hex digits; anything else fails in to_python so the route does not match."""

    regex = "[0-9a-zA-Z]{6}"

    def to_python(self, value: str) -> int:
        return int(value, 16)

    def to_url(self, value: int) -> str:
        return f"{value:06x}"


register_converter(HexColorConverter, "tether_test_hexcolor")


class Recorder:
    """An ASGI app that records every scope it is called with."""

    def __init__(self, name: str = "recorder") -> None:
        self.name = name
        self.scopes: list[dict[str, Any]] = []

    async def __call__(self, scope, receive, send) -> None:
        self.scopes.append(scope)

    @property
    def scope(self) -> dict[str, Any]:
        assert len(self.scopes) == 1, f"{self.name} was called {len(self.scopes)} times"
        return self.scopes[0]


class AddToScope:
    """Middleware-like wrapper: stores what it wraps in ``inner`` and adds a key to a copy of the scope."""

    def __init__(self, inner, key: str = "user", value: Any = "alice") -> None:
        self.inner = inner
        self.key = key
        self.value = value

    async def __call__(self, scope, receive, send) -> None:
        await self.inner(dict(scope, **{self.key: self.value}), receive, send)


class ValidatorLike:
    """Wrapper that stores what it wraps in ``application``, like the origin validators."""

    def __init__(self, application) -> None:
        self.application = application

    async def __call__(self, scope, receive, send) -> None:
        await self.application(scope, receive, send)


class AppAttributeWrapper:
    """Wrapper that stores what it wraps in ``app``."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        await self.app(scope, receive, send)


class FakeConsumer:
    """Stands in for a consumer class: routing it without as_asgi() is a mistake."""

    @classmethod
    def as_asgi(cls):
        return Recorder()


async def no_receive() -> dict[str, Any]:
    raise AssertionError("the routed app should not receive in this test")


async def no_send(message: dict[str, Any]) -> None:
    raise AssertionError("the routed app should not send in this test")


async def call(app, path: str, **extra: Any) -> None:
    scope = {"type": "websocket", "path": path, **extra}
    await app(scope, no_receive, no_send)


some_app = Recorder("some_app")


async def answers_42(scope, receive, send) -> int:
    """An ASGI app with a return value, which routers hand back to their caller as Channels' routers do."""
    return 42


async def test_protocol_type_router_returns_what_the_application_returns():
    router = ProtocolTypeRouter({"websocket": answers_42})
    assert await router({"type": "websocket", "path": "/"}, no_receive, no_send) == 42


async def test_url_router_returns_what_the_application_returns_through_nested_routers():
    router = URLRouter([path("chat/", URLRouter([path("room/", answers_42)]))])
    assert await router({"type": "websocket", "path": "/chat/room/"}, no_receive, no_send) == 42


async def test_channel_name_router_returns_what_the_application_returns():
    router = ChannelNameRouter({"jobs": answers_42})
    assert await router({"type": "channel", "channel": "jobs"}, no_receive, no_send) == 42


# ProtocolTypeRouter


async def test_protocol_router_dispatches_on_scope_type():
    http, websocket = Recorder(), Recorder()
    router = ProtocolTypeRouter({"http": http, "websocket": websocket})
    await router({"type": "websocket", "path": "/"}, no_receive, no_send)
    assert websocket.scope["type"] == "websocket"
    assert http.scopes == []


async def test_protocol_router_passes_scope_unchanged_to_mapped_app():
    http = Recorder()
    router = ProtocolTypeRouter({"http": http})
    scope = {"type": "http", "path": "/x", "method": "GET"}
    await router(scope, no_receive, no_send)
    assert http.scope == {"type": "http", "path": "/x", "method": "GET"}


async def test_protocol_router_unmapped_type_raises_value_error_naming_type_and_mapped_types():
    router = ProtocolTypeRouter({"http": Recorder(), "websocket": Recorder()})
    with pytest.raises(ValueError, match="'channel'") as excinfo:
        await router({"type": "channel", "channel": "x"}, no_receive, no_send)
    assert "'http'" in str(excinfo.value)
    assert "'websocket'" in str(excinfo.value)


async def test_protocol_router_answers_lifespan_when_unmapped():
    router = ProtocolTypeRouter({"http": Recorder()})
    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive():
        return inbox.pop(0)

    async def send(message):
        sent.append(message)

    await asyncio.wait_for(router({"type": "lifespan"}, receive, send), timeout=1)
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]
    assert inbox == []


async def test_protocol_router_passes_lifespan_to_mapped_app():
    lifespan = Recorder()
    router = ProtocolTypeRouter({"http": Recorder(), "lifespan": lifespan})
    await router({"type": "lifespan"}, no_receive, no_send)
    assert lifespan.scope["type"] == "lifespan"


def test_protocol_router_refuses_consumer_class_without_as_asgi():
    with pytest.raises(ImproperlyConfigured, match=r"as_asgi\(\)"):
        ProtocolTypeRouter({"websocket": FakeConsumer})


# URLRouter: matching


async def test_url_router_routes_path_to_its_app():
    chat, news = Recorder(), Recorder()
    router = URLRouter([path("chat/", chat), path("news/", news)])
    await call(router, "/news/")
    assert news.scope["path"] == "/news/"
    assert chat.scopes == []


async def test_url_router_gives_empty_url_route_for_route_without_captures():
    app = Recorder()
    await call(URLRouter([path("chat/", app)]), "/chat/")
    assert app.scope["url_route"] == {"args": (), "kwargs": {}}


async def test_url_router_first_matching_route_wins():
    first, second = Recorder(), Recorder()
    router = URLRouter([path("room/<str:name>/", first), path("room/lobby/", second)])
    await call(router, "/room/lobby/")
    assert first.scope["url_route"]["kwargs"] == {"name": "lobby"}
    assert second.scopes == []


async def test_url_router_path_route_must_match_the_whole_path():
    app = Recorder()
    router = URLRouter([path("chat/", app)])
    with pytest.raises(ValueError, match="no route matches the path"):
        await call(router, "/chat/extra/")
    assert app.scopes == []


async def test_url_router_ignores_leading_slashes():
    app = Recorder()
    await call(URLRouter([path("chat/", app)]), "//chat/")
    assert len(app.scopes) == 1


async def test_url_router_re_path_named_groups_become_kwargs():
    app = Recorder()
    await call(URLRouter([re_path(r"^room/(?P<name>\w+)/$", app)]), "/room/general/")
    assert app.scope["url_route"] == {"args": (), "kwargs": {"name": "general"}}


async def test_url_router_re_path_unnamed_groups_become_args():
    app = Recorder()
    await call(URLRouter([re_path(r"^room/(\w+)/(\d+)/$", app)]), "/room/general/7/")
    assert app.scope["url_route"] == {"args": ("general", "7"), "kwargs": {}}


async def test_int_converter_gives_an_int():
    app = Recorder()
    await call(URLRouter([path("item/<int:pk>/", app)]), "/item/42/")
    assert app.scope["url_route"]["kwargs"] == {"pk": 42}


async def test_int_converter_refuses_non_digits():
    router = URLRouter([path("item/<int:pk>/", Recorder())])
    with pytest.raises(ValueError, match="no route matches the path"):
        await call(router, "/item/abc/")


async def test_slug_converter_matches_a_slug():
    app = Recorder()
    await call(URLRouter([path("post/<slug:slug>/", app)]), "/post/hello-world_2/")
    assert app.scope["url_route"]["kwargs"] == {"slug": "hello-world_2"}


async def test_uuid_converter_gives_a_uuid():
    app = Recorder()
    value = uuid.uuid4()
    await call(URLRouter([path("doc/<uuid:doc_id>/", app)]), f"/doc/{value}/")
    assert app.scope["url_route"]["kwargs"] == {"doc_id": value}


async def test_custom_registered_converter_is_applied():
    app = Recorder()
    await call(URLRouter([path("color/<tether_test_hexcolor:rgb>/", app)]), "/color/00ff10/")
    assert app.scope["url_route"]["kwargs"] == {"rgb": 0x00FF10}


async def test_converter_raising_value_error_means_no_match_and_next_route_is_tried():
    color, fallback = Recorder(), Recorder()
    router = URLRouter([path("color/<tether_test_hexcolor:rgb>/", color), path("color/<str:name>/", fallback)])
    await call(router, "/color/zzzzzz/")
    assert color.scopes == []
    assert fallback.scope["url_route"]["kwargs"] == {"name": "zzzzzz"}


async def test_path_kwargs_defaults_are_merged_into_url_route():
    app = Recorder()
    await call(URLRouter([path("room/<str:name>/", app, kwargs={"mode": "chat"})]), "/room/a/")
    assert app.scope["url_route"]["kwargs"] == {"name": "a", "mode": "chat"}


async def test_url_router_raises_value_error_with_the_path_when_nothing_matches():
    router = URLRouter([path("chat/", Recorder())])
    with pytest.raises(ValueError, match=r"no route matches the path 'nowhere/'\."):
        await call(router, "/nowhere/")


async def test_url_router_error_names_the_path_without_the_root_path():
    router = URLRouter([path("chat/", Recorder())])
    with pytest.raises(ValueError, match=r"no route matches the path 'nowhere/'\."):
        await router({"type": "websocket", "path": "/app/nowhere/", "root_path": "/app"}, None, None)


async def test_url_router_refuses_scope_without_path():
    router = URLRouter([path("", Recorder())])
    with pytest.raises(ValueError, match="no 'path'"):
        await router({"type": "channel", "channel": "x"}, no_receive, no_send)


async def test_url_router_strips_root_path_before_matching():
    app = Recorder()
    await call(URLRouter([path("chat/", app)]), "/prefix/chat/", root_path="/prefix")
    assert app.scope["path"] == "/prefix/chat/"
    assert app.scope["path_remaining"] == ""


async def test_url_router_matches_unstripped_path_when_it_does_not_start_with_root_path():
    app = Recorder()
    await call(URLRouter([path("chat/", app)]), "/chat/", root_path="/prefix")
    assert len(app.scopes) == 1


async def test_url_router_passes_a_copy_and_leaves_the_original_scope_alone():
    app = Recorder()
    scope = {"type": "websocket", "path": "/room/7/"}
    await URLRouter([path("room/<int:pk>/", app)])(scope, no_receive, no_send)
    assert scope == {"type": "websocket", "path": "/room/7/"}
    assert app.scope is not scope


async def test_url_router_can_be_reused_for_many_connections():
    app = Recorder()
    router = URLRouter([path("room/<int:pk>/", app)])
    await call(router, "/room/1/")
    await call(router, "/room/2/")
    assert [s["url_route"]["kwargs"]["pk"] for s in app.scopes] == [1, 2]


# URLRouter: construction errors


def test_url_router_refuses_include_with_improperly_configured():
    with pytest.raises(ImproperlyConfigured, match="nested URLRouter"):
        URLRouter([path("app/", include([path("x/", Recorder())]))])


def test_url_router_refuses_routes_not_built_with_path_or_re_path():
    with pytest.raises(ImproperlyConfigured, match=r"path\(\) or re_path\(\)"):
        URLRouter([("chat/", Recorder())])


def test_url_router_refuses_consumer_class_without_as_asgi():
    with pytest.raises(ImproperlyConfigured, match=r"FakeConsumer\.as_asgi\(\)"):
        URLRouter([path("chat/", FakeConsumer)])


# URLRouter: nesting


async def test_nested_router_receives_the_rest_of_the_path():
    inner_app = Recorder()
    router = URLRouter([path("chat/", URLRouter([path("room/", inner_app)]))])
    await call(router, "/chat/room/")
    assert inner_app.scope["path_remaining"] == ""
    assert inner_app.scope["path"] == "/chat/room/"


async def test_nested_two_levels_merges_kwargs():
    app = Recorder()
    router = URLRouter(
        [path("org/<slug:org>/", URLRouter([path("room/<int:room>/", app)]))],
    )
    await call(router, "/org/acme/room/3/")
    assert app.scope["url_route"] == {"args": (), "kwargs": {"org": "acme", "room": 3}}


async def test_nested_three_levels_merges_kwargs_and_defaults():
    app = Recorder()
    router = URLRouter(
        [
            path(
                "a/<int:x>/",
                URLRouter(
                    [
                        path(
                            "b/<int:y>/",
                            URLRouter([path("c/<int:z>/", app, kwargs={"leaf": True})]),
                            kwargs={"middle": True},
                        )
                    ]
                ),
            )
        ]
    )
    await call(router, "/a/1/b/2/c/3/")
    assert app.scope["url_route"]["kwargs"] == {"x": 1, "y": 2, "z": 3, "middle": True, "leaf": True}


async def test_nested_inner_kwargs_win_over_outer_kwargs():
    app = Recorder()
    router = URLRouter([path("<str:name>/", URLRouter([path("<str:name>/", app)]))])
    await call(router, "/outer/inner/")
    assert app.scope["url_route"]["kwargs"] == {"name": "inner"}


async def test_nested_args_are_concatenated_outer_first():
    app = Recorder()
    router = URLRouter([re_path(r"^(\d+)/", URLRouter([re_path(r"^(\d+)/$", app)]))])
    await call(router, "/1/2/")
    assert app.scope["url_route"]["args"] == ("1", "2")


async def test_nested_router_under_re_path_prefix():
    app = Recorder()
    router = URLRouter([re_path(r"^ws/(?P<room>\w+)/", URLRouter([path("feed/", app)]))])
    await call(router, "/ws/lobby/feed/")
    assert app.scope["url_route"]["kwargs"] == {"room": "lobby"}


async def test_nested_router_without_match_lets_outer_router_try_its_next_route():
    inner_app, fallback = Recorder(), Recorder()
    router = URLRouter(
        [
            path("chat/", URLRouter([path("room/", inner_app)])),
            path("chat/<path:rest>", fallback),
        ]
    )
    await call(router, "/chat/other/")
    assert inner_app.scopes == []
    assert fallback.scope["url_route"]["kwargs"] == {"rest": "other/"}


async def test_nested_router_without_match_raises_plain_value_error_at_outer_router():
    router = URLRouter([path("chat/", URLRouter([path("room/", Recorder())]))])
    with pytest.raises(ValueError) as excinfo:
        await call(router, "/chat/missing/")
    assert type(excinfo.value) is ValueError
    assert str(excinfo.value) == "URLRouter: no route matches the path 'chat/missing/'."


async def test_nested_router_without_match_raises_resolver404_as_channels_does():
    inner = URLRouter([path("room/", Recorder())])
    scope = {"type": "websocket", "path": "/chat/missing/", "path_remaining": "missing/"}
    with pytest.raises(Resolver404, match="no route matches the path 'missing/'"):
        await inner(scope, None, None)


async def test_nesting_through_middleware_with_inner_attribute():
    app = Recorder()
    router = URLRouter([path("chat/", AddToScope(URLRouter([path("room/<int:pk>/", app)])))])
    await call(router, "/chat/room/5/")
    assert app.scope["user"] == "alice"
    assert app.scope["url_route"]["kwargs"] == {"pk": 5}
    assert app.scope["path_remaining"] == ""


async def test_nesting_through_application_and_app_attribute_wrappers():
    app = Recorder()
    inner = URLRouter([path("room/", app)])
    router = URLRouter([path("chat/", ValidatorLike(AppAttributeWrapper(AddToScope(inner))))])
    await call(router, "/chat/room/")
    assert app.scope["user"] == "alice"


async def test_route_to_plain_middleware_around_a_consumer_stays_an_endpoint():
    app = Recorder()
    router = URLRouter([path("chat/", AddToScope(app))])
    await call(router, "/chat/")
    assert app.scope["user"] == "alice"
    with pytest.raises(ValueError, match="no route matches the path"):
        await call(router, "/chat/more/")


async def test_nested_router_path_does_not_change_the_users_pattern():
    route = path("chat/", URLRouter([path("room/", Recorder())]))
    original = route.pattern
    URLRouter([route])
    assert route.pattern is original
    assert original.regex.pattern.endswith(r"\Z")


# ChannelNameRouter


async def test_channel_name_router_dispatches_on_channel():
    thumbnails, emails = Recorder(), Recorder()
    router = ChannelNameRouter({"thumbnails": thumbnails, "emails": emails})
    await router({"type": "channel", "channel": "emails"}, no_receive, no_send)
    assert emails.scope["channel"] == "emails"
    assert thumbnails.scopes == []


async def test_channel_name_router_refuses_scope_without_channel():
    router = ChannelNameRouter({"emails": Recorder()})
    with pytest.raises(ValueError, match="no 'channel' key"):
        await router({"type": "websocket", "path": "/"}, no_receive, no_send)


async def test_channel_name_router_unknown_channel_raises_value_error_naming_it():
    router = ChannelNameRouter({"emails": Recorder()})
    with pytest.raises(ValueError, match="'sms'") as excinfo:
        await router({"type": "channel", "channel": "sms"}, no_receive, no_send)
    assert "'emails'" in str(excinfo.value)


async def test_protocol_router_routes_channel_scopes_through_channel_name_router():
    worker = Recorder()
    router = ProtocolTypeRouter({"channel": ChannelNameRouter({"tasks": worker})})
    await router({"type": "channel", "channel": "tasks"}, no_receive, no_send)
    assert worker.scope["channel"] == "tasks"


# get_default_application


@override_settings(ASGI_APPLICATION="tests.test_routing.some_app")
def test_get_default_application_returns_the_configured_app():
    assert get_default_application() is some_app


def test_get_default_application_without_setting_raises_improperly_configured(settings):
    del settings.ASGI_APPLICATION
    with pytest.raises(ImproperlyConfigured, match="ASGI_APPLICATION is not set"):
        get_default_application()


@override_settings(ASGI_APPLICATION="no_such_module_for_tether.asgi.application")
def test_get_default_application_unimportable_module_names_path_and_error():
    with pytest.raises(ImproperlyConfigured, match="no_such_module_for_tether") as excinfo:
        get_default_application()
    assert "No module named" in str(excinfo.value)
    assert isinstance(excinfo.value.__cause__, ImportError)


@override_settings(ASGI_APPLICATION="tests.test_routing.not_defined_here")
def test_get_default_application_missing_attribute_names_it():
    with pytest.raises(ImproperlyConfigured, match="'not_defined_here'"):
        get_default_application()


@override_settings(ASGI_APPLICATION="application")
def test_get_default_application_refuses_a_path_without_module():
    with pytest.raises(ImproperlyConfigured, match="dotted path"):
        get_default_application()

"""The example project end to end, in headless Chromium: two people chatting, a mention, the dashboard, a server
restart, a guest who may read but not post; and on streams and presence: who is here (two tabs of one user counted
once), who is typing, messages posted while a reader was offline or reloading (shown once and in order, with no
refresh), the dashboard counting from presence.

The server is the real example (uvicorn in a subprocess, fresh SQLite file, in-memory layer); the pages use the
real tether.js. Every wait is bounded; the whole module runs in well under a minute.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from tests.example.browser import (
    ExampleServer,
    chromium_missing,
    chromium_session,
    guest_page,
    log_in,
    open_room,
    post,
    wait_for_message,
    wait_live,
)

pytestmark = pytest.mark.skipif(chromium_missing() is not None, reason=chromium_missing() or "")

#: Milliseconds for the waits that follow a page going offline, a reload or presence: generous for a loaded machine.
WAIT_MS = 15_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExampleServer]:
    example = ExampleServer(tmp_path_factory.mktemp("example-chat"))
    example.prepare("alice", "bob", "carol")
    example.start()
    yield example
    example.stop()


browser = pytest.fixture(scope="module", name="browser")(chromium_session)


def redis_missing() -> str | None:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return None
    except OSError:
        return "no Redis on 127.0.0.1:6379 (.ci/run starts one)"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExampleServer]:
    """The example as `make demo-redis` runs it: two uvicorn processes and the dashboard worker, over Redis."""
    if redis_missing():
        pytest.skip(redis_missing())
    example = ExampleServer(tmp_path_factory.mktemp("example-chat-redis"), layer="redis", workers=2)
    example.prepare("alice", "bob")
    example.start()
    yield example
    example.stop()
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379)
    keys = list(client.scan_iter(match=f"{example.env()['CHAT_REDIS_PREFIX']}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(scope="module")
def sessions() -> dict[str, Any]:
    """Cookies of users logged in once in this module, so later tests skip the login form."""
    return {}


@pytest.fixture
def open_pages(browser: Any) -> Iterator[list[Any]]:
    """Pages a test opens; their browser contexts are closed when it ends."""
    pages: list[Any] = []
    yield pages
    for page in pages:
        page.context.close()


def both_in_room(
    browser: Any, server: ExampleServer, sessions: dict[str, Any], open_pages: list[Any], room: str
) -> Any:
    """Pages of alice and bob, each in ``room``."""
    pages = [log_in(browser, server, user, sessions) for user in ("alice", "bob")]
    open_pages.extend(pages)
    for page in pages:
        open_room(page, server, room)
    return pages


def test_a_message_posted_in_one_browser_appears_in_the_other_within_a_second(browser, server, sessions, open_pages):
    alice, bob = both_in_room(browser, server, sessions, open_pages, "general")
    post(alice, "Hello Bob, can you see this?")
    message = wait_for_message(bob, "Hello Bob, can you see this?", timeout_ms=1000)
    assert message.evaluate("node => node.closest('.message').dataset.author") == "alice"
    wait_for_message(alice, "Hello Bob, can you see this?", timeout_ms=1000)


def test_a_mention_shows_a_notification_on_the_page_the_other_user_has_open(browser, server, sessions, open_pages):
    alice = log_in(browser, server, "alice", sessions)
    bob = log_in(browser, server, "bob", sessions)  # bob stays on the lobby
    open_pages += [alice, bob]
    wait_live(bob)
    open_room(alice, server, "general")
    post(alice, "@bob lunch at noon?")
    toast = bob.wait_for_selector(".toast", timeout=2000)
    assert "@alice mentioned you in #general" in toast.inner_text()
    assert "lunch at noon?" in toast.inner_text()
    assert toast.get_attribute("href").startswith("/chat/general/#message-")


def test_the_dashboard_updates_as_messages_are_posted(browser, server, sessions, open_pages):
    alice = log_in(browser, server, "alice", sessions)
    bob = log_in(browser, server, "bob", sessions)
    open_pages += [alice, bob]
    bob.goto(f"{server.url}/dashboard/")
    bob.wait_for_function("/^[0-9]+$/.test(document.getElementById('stat-messages').textContent)")
    before = int(bob.inner_text("#stat-messages"))
    assert bob.locator("#chart-messages rect.bar").count() == 30
    open_room(alice, server, "random")
    post(alice, "one more for the chart")
    bob.wait_for_function(f"Number(document.getElementById('stat-messages').textContent) === {before + 1}")
    bob.wait_for_function("document.getElementById('stat-busiest').textContent === '#random'")
    assert bob.inner_text("#stat-online") == "2"
    assert "#random" in bob.text_content("#chart-rooms")


def test_a_guest_reads_the_room_but_cannot_post(browser, server, sessions, open_pages):
    alice = log_in(browser, server, "alice", sessions)
    guest = guest_page(browser)
    open_pages += [alice, guest]
    open_room(alice, server, "help")
    open_room(guest, server, "help")
    assert "Log in to post" in guest.inner_text("#guest-notice") + guest.get_attribute("#message-input", "placeholder")
    post(guest, "can guests write?")
    error = guest.wait_for_selector("#room-error:visible")
    assert "Log in to post messages" in error.inner_text()
    post(alice, "members only, but everyone reads")
    wait_for_message(guest, "members only, but everyone reads")
    assert alice.locator(".message-text", has_text="can guests write?").count() == 0


def test_a_room_is_opened_from_the_lobby_and_a_bad_name_is_explained(browser, server, sessions, open_pages):
    alice = log_in(browser, server, "alice", sessions)
    open_pages.append(alice)
    alice.fill("#id_name", "no spaces please")
    alice.click(".new-room button[type=submit]")
    assert "Use letters, digits, '-' and '_' only." in alice.inner_text(".field-error")
    alice.fill("#id_name", "book-club")
    alice.fill("#id_topic", "What we are reading")
    alice.click(".new-room button[type=submit]")
    alice.wait_for_url(f"{server.url}/chat/book-club/")
    assert alice.inner_text("#room-topic") == "What we are reading"
    open_room(alice, server, "book-club")
    assert alice.inner_text("#messages-empty") == "No messages yet. Say hello!"


def test_a_long_message_shows_a_counter_near_the_limit_and_past_it_is_refused_not_cut(
    browser, server, sessions, open_pages
):
    alice = log_in(browser, server, "alice", sessions)
    open_pages.append(alice)
    open_room(alice, server, "random")
    counter = alice.locator("#message-count")
    alice.fill("#message-input", "a" * 1000)
    assert counter.is_hidden()
    alice.fill("#message-input", "a" * 1900)
    assert counter.is_visible() and counter.inner_text() == "1900 / 2000"
    alice.fill("#message-input", "b" * 2001)  # a paste past the limit
    assert len(alice.input_value("#message-input")) == 2001
    assert counter.inner_text() == "2001 / 2000"
    alice.press("#message-input", "Enter")
    error = alice.wait_for_selector("#room-error:visible")
    assert "at most 2000 characters; this one has 2001" in error.inner_text()
    assert len(alice.input_value("#message-input")) == 2001  # kept, to be shortened
    post(alice, "c" * 2000)
    wait_for_message(alice, "c" * 2000)
    assert counter.is_hidden()


@pytest.mark.parametrize("path", ["/", "/chat/general/", "/dashboard/"])
def test_on_a_390_px_wide_phone_the_pages_do_not_scroll_sideways(browser, server, sessions, open_pages, path):
    alice = log_in(browser, server, "alice", sessions, viewport={"width": 390, "height": 844})
    open_pages.append(alice)
    alice.goto(f"{server.url}{path}")
    wait_live(alice)
    assert alice.evaluate("document.documentElement.scrollWidth") <= 390
    assert alice.locator(".topbar-end button[type=submit]").is_visible()  # logging out is still in reach


def test_after_a_server_restart_the_pages_reconnect_by_themselves_and_messages_flow_again(
    browser, server, sessions, open_pages
):
    alice, bob = both_in_room(browser, server, sessions, open_pages, "general")
    server.stop()
    alice.wait_for_selector("#connection[data-state=reconnecting]")
    bob.wait_for_selector("#connection[data-state=reconnecting]")
    post(alice, "written while the server was down")  # queued by tether.js
    assert alice.input_value("#message-input") == ""
    server.start()
    wait_live(alice, timeout_ms=15000)
    wait_live(bob, timeout_ms=15000)
    wait_for_message(bob, "written while the server was down")
    post(bob, "and we are back")
    wait_for_message(alice, "and we are back", timeout_ms=1000)


def people(page: Any) -> list[str]:
    names: list[str] = page.eval_on_selector_all("#people .person", "items => items.map((item) => item.dataset.user)")
    return names


def wait_people(page: Any, names: list[str]) -> None:
    page.wait_for_function(
        "names => JSON.stringify([...document.querySelectorAll('#people .person')].map((i) => i.dataset.user))"
        " === JSON.stringify(names)",
        arg=names,
        timeout=WAIT_MS,
    )


def post_while_offline(writer: Any, reader: Any, texts: list[str]) -> None:
    """Take the reader's page offline, and post ``texts`` from the writer's (each shown there before the next)."""
    reader.context.set_offline(True)
    reader.wait_for_selector("#connection[data-state=reconnecting]")
    for text in texts:
        post(writer, text)
        wait_for_message(writer, text)


def shown_texts(page: Any) -> list[str]:
    texts: list[str] = page.eval_on_selector_all(".message-text", "nodes => nodes.map((node) => node.textContent)")
    return texts


def test_the_room_shows_who_is_here_with_two_tabs_of_one_user_counted_once(browser, server, sessions, open_pages):
    alice = log_in(browser, server, "alice", sessions)
    open_pages.append(alice)
    open_room(alice, server, "general")
    wait_people(alice, ["alice"])
    alice_again = alice.context.new_page()  # a second tab, same login
    open_room(alice_again, server, "general")
    bob = log_in(browser, server, "bob", sessions)
    open_pages.append(bob)
    open_room(bob, server, "general")
    for page in (alice, alice_again, bob):
        wait_people(page, ["alice", "bob"])
    assert alice.inner_text("#people-count") == "2 here"
    alice.wait_for_function("document.querySelector('#people [data-user=alice]').title === '2 tabs'")
    alice_again.close()
    alice.wait_for_function("document.querySelector('#people [data-user=alice]').title === ''")
    assert people(alice) == ["alice", "bob"]
    bob.close()
    wait_people(alice, ["alice"])


def test_who_is_typing_shows_on_the_other_page_and_goes_when_the_message_arrives(browser, server, sessions, open_pages):
    alice, bob = both_in_room(browser, server, sessions, open_pages, "random")
    bob.type("#message-input", "hello")
    alice.wait_for_selector("#typing:visible")
    assert alice.inner_text("#typing") == "bob is typing…"
    assert bob.locator("#typing").is_hidden()  # nobody sees themselves typing
    bob.press("#message-input", "Enter")
    wait_for_message(alice, "hello")
    alice.wait_for_selector("#typing", state="hidden")


def test_messages_posted_while_a_reader_was_offline_appear_once_in_order_without_a_refresh(
    browser, server, sessions, open_pages
):
    alice, bob = both_in_room(browser, server, sessions, open_pages, "help")
    bob.evaluate("window.samePage = true")
    texts = [f"while bob was offline {n}" for n in range(3)]
    post_while_offline(alice, bob, texts)
    bob.context.set_offline(False)
    wait_for_message(bob, texts[-1], timeout_ms=WAIT_MS)
    assert [text for text in shown_texts(bob) if text in texts] == texts
    assert bob.evaluate("window.samePage") is True  # no refresh: the same page got them


def test_a_reload_as_the_reader_comes_back_shows_what_was_posted_meanwhile_once_in_order(
    browser, server, sessions, open_pages
):
    # carol writes: she has posted nothing else, so her five posts fit the posting limit's burst.
    carol = log_in(browser, server, "carol", sessions)
    bob = log_in(browser, server, "bob", sessions)
    open_pages += [carol, bob]
    carol.fill("#id_name", "reloading")
    carol.click(".new-room button[type=submit]")
    carol.wait_for_url(f"{server.url}/chat/reloading/")  # a room of its own: its whole history is this test's
    open_room(carol, server, "reloading")
    open_room(bob, server, "reloading")
    post(carol, "before the reload")
    wait_for_message(bob, "before the reload")
    texts = [f"during the reload {n}" for n in range(3)]
    post_while_offline(carol, bob, texts)
    bob.context.set_offline(False)
    bob.reload()  # before its connection is back: the new page carries on from the old page's position
    wait_live(bob, timeout_ms=WAIT_MS)
    wait_for_message(bob, texts[-1], timeout_ms=WAIT_MS)
    post(carol, "after the reload")
    wait_for_message(bob, "after the reload", timeout_ms=WAIT_MS)
    assert shown_texts(bob) == ["before the reload", *texts, "after the reload"]


def test_the_dashboard_counts_online_users_from_presence_two_tabs_once(browser, server, sessions, open_pages):
    alice = log_in(browser, server, "alice", sessions)
    bob = log_in(browser, server, "bob", sessions)
    open_pages += [alice, bob]
    open_room(alice, server, "general")
    second = alice.context.new_page()
    open_room(second, server, "general")
    bob.goto(f"{server.url}/dashboard/")
    wait_live(bob)
    bob.wait_for_function("document.getElementById('stat-online').textContent === '2'")  # alice (2 tabs), bob
    bob.wait_for_function("document.getElementById('stat-busiest').textContent === '#general'")
    assert "#general" in bob.text_content("#chart-rooms")


def test_with_redis_two_web_processes_and_the_worker_carry_chat_mentions_and_the_dashboard(browser, redis_server):
    pages = [log_in(browser, redis_server, name) for name in ("alice", "bob")]
    alice, bob = pages
    try:
        open_room(alice, redis_server, "general")
        open_room(bob, redis_server, "general")
        wait_people(alice, ["alice", "bob"])  # presence through Redis, whichever process each page reached
        post(alice, "@bob hello through Redis")
        wait_for_message(bob, "@bob hello through Redis", timeout_ms=1000)
        bob.wait_for_selector(".toast", timeout=2000)
        dashboard = bob.context.new_page()
        dashboard.goto(f"{redis_server.url}/dashboard/")  # pushed by the runworker process
        dashboard.wait_for_function("document.getElementById('stat-busiest').textContent === '#general'")
        assert dashboard.inner_text("#stat-messages") == "1"
        dashboard.wait_for_function("document.getElementById('stat-online').textContent === '2'")  # bob's 2 tabs once
    finally:
        for page in pages:
            page.context.close()

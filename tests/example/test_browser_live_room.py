"""The example's room in headless Chromium, on streams and presence: who is here (two tabs of one user counted
once), who is typing, and messages posted while a reader was offline or reloading, shown once and in order with no
refresh; the dashboard counting from presence.

The server is the real example (uvicorn in a subprocess, fresh SQLite file, in-memory layer); the pages use the real
tether.js. Every wait is bounded and polls the page.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.example.browser import (
    ExampleServer,
    chromium_missing,
    chromium_session,
    log_in,
    open_room,
    post,
    wait_for_message,
    wait_live,
)

pytestmark = pytest.mark.skipif(chromium_missing() is not None, reason=chromium_missing() or "")

#: Milliseconds a wait on a page may take: generous for a loaded 2-core machine.
WAIT_MS = 15_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExampleServer]:
    example = ExampleServer(tmp_path_factory.mktemp("example-live-room"))
    example.prepare("alice", "bob")
    example.start()
    yield example
    example.stop()


browser = pytest.fixture(scope="module", name="browser")(chromium_session)


@pytest.fixture(scope="module")
def sessions() -> dict[str, Any]:
    return {}


@pytest.fixture
def pages(browser: Any, server: ExampleServer, sessions: dict[str, Any]) -> Iterator[Any]:
    """``pages(user)``: a new browser context logged in as ``user``, its page on the lobby; closed at the end."""
    opened: list[Any] = []

    def open_page(user: str) -> Any:
        page = log_in(browser, server, user, sessions)
        page.set_default_timeout(WAIT_MS)
        opened.append(page)
        return page

    yield open_page
    for page in opened:
        page.context.close()


def people(page: Any) -> list[str]:
    names: list[str] = page.eval_on_selector_all("#people .person", "items => items.map((item) => item.dataset.user)")
    return names


def wait_people(page: Any, names: list[str]) -> None:
    page.wait_for_function(
        "names => JSON.stringify([...document.querySelectorAll('#people .person')].map((i) => i.dataset.user))"
        " === JSON.stringify(names)",
        arg=names,
    )


def shown_texts(page: Any) -> list[str]:
    texts: list[str] = page.eval_on_selector_all(".message-text", "nodes => nodes.map((node) => node.textContent)")
    return texts


def test_the_room_shows_who_is_here_with_two_tabs_of_one_user_counted_once(pages, server):
    alice = pages("alice")
    open_room(alice, server, "general")
    wait_people(alice, ["alice"])
    alice_again = alice.context.new_page()  # a second tab, same login
    open_room(alice_again, server, "general")
    bob = pages("bob")
    open_room(bob, server, "general")
    for page in (alice, alice_again, bob):
        wait_people(page, ["alice", "bob"])
    assert alice.inner_text("#people-count") == "2 here"
    alice.wait_for_function("document.querySelector('#people [data-user=alice]').title === '2 tabs'")
    alice_again.close()
    alice.wait_for_function("document.querySelector('#people [data-user=alice]').title === ''")
    assert people(alice) == ["alice", "bob"]
    bob.context.close()
    wait_people(alice, ["alice"])


def test_who_is_typing_shows_on_the_other_page_and_goes_when_the_message_arrives(pages, server):
    alice, bob = pages("alice"), pages("bob")
    open_room(alice, server, "random")
    open_room(bob, server, "random")
    bob.type("#message-input", "hello")
    alice.wait_for_selector("#typing:visible")
    assert alice.inner_text("#typing") == "bob is typing…"
    assert bob.locator("#typing").is_hidden()  # nobody sees themselves typing
    bob.press("#message-input", "Enter")
    wait_for_message(alice, "hello")
    alice.wait_for_selector("#typing", state="hidden")


def test_messages_posted_while_a_reader_was_offline_appear_once_in_order_without_a_refresh(pages, server):
    alice, bob = pages("alice"), pages("bob")
    open_room(alice, server, "help")
    open_room(bob, server, "help")
    bob.evaluate("window.samePage = true")
    bob.context.set_offline(True)
    bob.wait_for_selector("#connection[data-state=reconnecting]")
    texts = [f"while bob was offline {n}" for n in range(3)]
    for text in texts:
        post(alice, text)
        wait_for_message(alice, text)
    bob.context.set_offline(False)
    wait_for_message(bob, texts[-1], timeout_ms=WAIT_MS)
    assert [text for text in shown_texts(bob) if text in texts] == texts
    assert bob.evaluate("window.samePage") is True  # no refresh: the same page got them


def test_a_reload_as_the_reader_comes_back_shows_what_was_posted_meanwhile_once_in_order(pages, server):
    alice, bob = pages("alice"), pages("bob")
    alice.fill("#id_name", "reloading")
    alice.click(".new-room button[type=submit]")
    alice.wait_for_url(f"{server.url}/chat/reloading/")  # a room of its own: its whole history is this test's
    open_room(alice, server, "reloading")
    open_room(bob, server, "reloading")
    post(alice, "before the reload")
    wait_for_message(bob, "before the reload")
    bob.context.set_offline(True)
    bob.wait_for_selector("#connection[data-state=reconnecting]")
    texts = [f"during the reload {n}" for n in range(3)]
    for text in texts:
        post(alice, text)
        wait_for_message(alice, text)
    bob.context.set_offline(False)
    bob.reload()  # before its connection is back: the new page carries on from the old page's position
    wait_live(bob, timeout_ms=WAIT_MS)
    wait_for_message(bob, texts[-1], timeout_ms=WAIT_MS)
    post(alice, "after the reload")
    wait_for_message(bob, "after the reload", timeout_ms=WAIT_MS)
    assert shown_texts(bob) == ["before the reload", *texts, "after the reload"]


def test_the_dashboard_counts_online_users_from_presence_two_tabs_once(pages, server):
    alice, bob = pages("alice"), pages("bob")
    open_room(alice, server, "general")
    second = alice.context.new_page()
    open_room(second, server, "general")
    bob.goto(f"{server.url}/dashboard/")
    wait_live(bob)
    bob.wait_for_function("document.getElementById('stat-online').textContent === '2'")  # alice (2 tabs), bob
    bob.wait_for_function("document.getElementById('stat-busiest').textContent === '#general'")
    assert "#general" in bob.text_content("#chart-rooms")

"""tether's live status page in the example's admin, in headless Chromium, and its staff-only WebSocket.

The example runs as in the other browser tests (uvicorn in a subprocess, in-memory layer, so the page shows its one
process). A staff member sees the numbers change once a test client connects; a logged-in non-staff user is sent to
the admin's login page, as Django's admin does with every page; the WebSocket refuses anyone but staff (a raw
``websockets`` client, as a guest, then with the non-staff user's session cookie). Every wait has a deadline.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.example.browser import PASSWORD, ExampleServer, chromium_missing, chromium_session, log_in

pytestmark = pytest.mark.skipif(chromium_missing() is not None, reason=chromium_missing() or "")

#: Milliseconds the page gets to show a number: snapshots come every second, a loaded machine may take a few.
LIVE_MS = 20_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExampleServer]:
    example = ExampleServer(
        tmp_path_factory.mktemp("example-status"), extra_env={"DJANGO_SUPERUSER_PASSWORD": PASSWORD}
    )
    example.prepare("carol")
    example.manage("createsuperuser", "--noinput", "--username", "boss", "--email", "boss@example.com")
    example.start()
    yield example
    example.stop()


browser = pytest.fixture(scope="module", name="browser")(chromium_session)


@pytest.fixture(scope="module")
def sessions() -> dict[str, Any]:
    """Cookies of users logged in once in this module, so later tests skip the login form (and its password hash)."""
    return {}


def cookie_header(page: Any) -> str:
    return "; ".join(f"{cookie['name']}={cookie['value']}" for cookie in page.context.cookies())


def ws_url(server: ExampleServer, path: str) -> str:
    return server.url.replace("http://", "ws://") + path


def wait_for_chat_connections(page: Any, count: int) -> None:
    """Wait until the page's consumers table shows ``count`` open ChatConsumer connections (no row counts as 0)."""
    page.wait_for_function(
        """count => {
            const row = [...document.querySelectorAll("#tether-status-consumers tr")]
                .find((r) => r.cells[0].textContent === "ChatConsumer");
            return (row ? Number(row.cells[1].textContent) : 0) === count;
        }""",
        arg=count,
        timeout=LIVE_MS,
    )


def test_a_staff_member_sees_a_new_connection_counted_live(
    browser: Any, server: ExampleServer, sessions: dict[str, Any]
) -> None:
    page = log_in(browser, server, "boss", sessions)
    page.goto(f"{server.url}/admin/tether/status/")
    page.wait_for_selector("#tether-status[data-state=open]", timeout=LIVE_MS)
    page.wait_for_function("document.getElementById('tether-status-processes').textContent === '1'", timeout=LIVE_MS)
    assert page.locator("#tether-status-process-rows").inner_text().count("default: ok") == 1
    # No chat connection once the lobby page that log_in opened has gone; then a guest's client connects as the
    # lobby page does: the page must count it, and stop counting it once it leaves.
    wait_for_chat_connections(page, 0)
    with connect(ws_url(server, "/chat/connect/"), origin=server.url, open_timeout=20):
        wait_for_chat_connections(page, 1)
    wait_for_chat_connections(page, 0)
    page.context.close()


def test_a_user_who_is_not_staff_is_refused_the_page(
    browser: Any, server: ExampleServer, sessions: dict[str, Any]
) -> None:
    page = log_in(browser, server, "carol", sessions)
    page.goto(f"{server.url}/admin/tether/status/")
    assert page.url.startswith(f"{server.url}/admin/login/")
    assert page.locator("#tether-status").count() == 0
    assert "not authorized" in page.content()
    page.context.close()


def test_the_status_websocket_refuses_guests_and_users_who_are_not_staff(
    browser: Any, server: ExampleServer, sessions: dict[str, Any]
) -> None:
    url = ws_url(server, "/ws/tether/status/")
    with pytest.raises(InvalidStatus) as guest:
        connect(url, origin=server.url, open_timeout=20)
    assert guest.value.response.status_code == 403
    carol = log_in(browser, server, "carol", sessions)
    with pytest.raises(InvalidStatus) as user:
        connect(url, origin=server.url, additional_headers={"Cookie": cookie_header(carol)}, open_timeout=20)
    assert user.value.response.status_code == 403
    carol.context.close()
    boss = log_in(browser, server, "boss", sessions)
    with connect(url, origin=server.url, additional_headers={"Cookie": cookie_header(boss)}, open_timeout=20) as ws:
        assert '"type": "status"' in ws.recv(timeout=20)
    boss.context.close()

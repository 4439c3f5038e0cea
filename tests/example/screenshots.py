"""``make screenshots``: PNGs of the example's lobby, a room and the dashboard, for the README, and of tether's status
page in the admin, for docs/observability.md.

Runs the example like the browser tests do (same page helpers), with the sample conversation of ``demo_data``,
two people in a room and a guest in another, then photographs the three pages::

    python -m tests.example.screenshots docs/images
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from tests.example.browser import (
    PASSWORD,
    ExampleServer,
    chromium_missing,
    guest_page,
    launch_chromium,
    log_in,
    open_room,
    post,
)

__all__ = ["take_screenshots"]


def take_screenshots(target: Path) -> list[Path]:
    """Write lobby.png, room.png, dashboard.png and status.png into ``target``; returns their paths."""
    from playwright.sync_api import sync_playwright

    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tether-screenshots-") as workdir:
        server = ExampleServer(Path(workdir), extra_env={"DJANGO_SUPERUSER_PASSWORD": PASSWORD})
        server.prepare("ada", "grace")
        server.manage("createsuperuser", "--noinput", "--username", "admin", "--email", "admin@example.com")
        server.manage("demo_data")
        server.start()
        try:
            with sync_playwright() as playwright:
                browser = launch_chromium(playwright)
                ada = log_in(browser, server, "ada")
                grace = log_in(browser, server, "grace")
                guest = guest_page(browser)
                open_room(grace, server, "general")
                open_room(ada, server, "general")
                open_room(guest, server, "help")
                post(ada, "@grace the screenshots for the README are ready, have a look")
                grace.wait_for_selector(".toast")
                grace.wait_for_timeout(300)  # let the toast finish sliding in
                shots = [target / "room.png", target / "lobby.png", target / "dashboard.png"]
                grace.screenshot(path=shots[0])
                ada.set_viewport_size({"width": 1280, "height": 600})  # the lobby is short: no empty band
                ada.goto(f"{server.url}/")
                ada.wait_for_selector("#connection[data-state=open]")
                ada.screenshot(path=shots[1])
                open_room(ada, server, "general")  # ada keeps #general open in one tab, the dashboard in another
                open_room(guest_page(browser), server, "random")
                dashboard = ada.context.new_page()
                dashboard.set_viewport_size({"width": 1280, "height": 680})
                dashboard.goto(f"{server.url}/dashboard/")
                dashboard.wait_for_function("document.getElementById('stat-online').textContent === '4'")
                dashboard.screenshot(path=shots[2])
                # The status page, with the connections above still open (ada's two tabs, grace, two guests).
                status = log_in(browser, server, "admin").context.new_page()
                status.set_viewport_size({"width": 1280, "height": 900})
                status.goto(f"{server.url}/admin/tether/status/")
                status.wait_for_function("document.getElementById('tether-status-processes').textContent === '1'")
                status.wait_for_timeout(2500)  # two more snapshots: message rates over a whole interval
                shots.append(target / "status.png")
                status.screenshot(path=shots[3])
                browser.close()
        finally:
            server.stop()
    return shots


def main() -> None:
    problem = chromium_missing()
    if problem:
        sys.exit(f"Cannot take screenshots: {problem}")
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/images")
    for shot in take_screenshots(target):
        print(f"wrote {shot}")


if __name__ == "__main__":
    main()

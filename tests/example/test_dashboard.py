"""The dashboard: presence counts, messages per minute, and snapshots pushed by the ticker to open dashboards."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

from chat.models import Message
from chat.presence import presence_counts
from dashboard.stats import MINUTES_SHOWN, messages_per_minute
from dashboard.worker import DashboardWorker
from tether.db import database_sync_to_async
from tether.layers import get_channel_layer


async def test_presence_counts_a_user_with_several_tabs_once_and_each_guest_connection(open_page, alice, bob, room):
    for user in (alice, alice, bob, None, None):
        page = await open_page(user)
        if user is not bob:
            await page.subscribe("chat.room.lounge", presence=True)
    counts = await presence_counts(get_channel_layer(), ["lounge", "empty"])
    assert counts == {"rooms": {"lounge": 3, "empty": 0}, "online": 4}  # alice, bob and two guests


async def test_messages_per_minute_counts_each_minute_and_fills_the_gaps(alice, room):
    now = datetime(2030, 1, 1, 12, 30, 40, tzinfo=timezone.utc)

    def write() -> None:
        for minutes_ago, count in [(0, 2), (3, 1), (MINUTES_SHOWN, 5)]:
            for _ in range(count):
                message = Message.objects.create(room=room, author=alice, text="x")
                Message.objects.filter(pk=message.pk).update(created=now - timedelta(minutes=minutes_ago))

    await database_sync_to_async(write)()
    series = await database_sync_to_async(messages_per_minute)(now)
    assert len(series) == MINUTES_SHOWN
    assert series[-1] == {"minute": "2030-01-01T12:30:00+00:00", "count": 2}
    assert series[-4]["count"] == 1
    assert sum(point["count"] for point in series) == 3  # the messages of 30 minutes ago are out of the window


async def next_snapshot(page, accept=lambda snapshot: True, limit: int = 100) -> dict:
    for _ in range(limit):
        event = await page.receive_json_from(timeout=2)
        if event["type"] == "dashboard" and accept(event):
            return event
    raise AssertionError(f"No matching snapshot in {limit} events.")


async def test_an_open_dashboard_receives_snapshots_from_the_in_process_worker(connect, alice, room):
    dashboard = await connect("/ws/dashboard/", alice)
    snapshot = await next_snapshot(dashboard)
    assert len(snapshot["messages_per_minute"]) == MINUTES_SHOWN
    assert {"room": "lounge", "users": 0} in snapshot["rooms"]


async def test_the_first_snapshot_a_new_dashboard_gets_counts_the_users_already_connected(
    connect, open_page, alice, bob, room
):
    page = await open_page(bob)
    await page.subscribe("chat.room.lounge", presence=True)
    dashboard = await connect("/ws/dashboard/", alice)
    first = await next_snapshot(dashboard)
    assert {"room": "lounge", "users": 1} in first["rooms"]
    assert first["online"] == 2  # bob in the room, alice on the dashboard


async def test_the_dashboard_counts_connected_users_per_room_and_new_messages(connect, open_page, alice, bob, room):
    dashboard = await connect("/ws/dashboard/", alice)
    for user in (alice, bob):
        page = await open_page(user)
        await page.subscribe("chat.room.lounge", presence=True)
    await page.result("post", room="lounge", text="count me")
    snapshot = await next_snapshot(dashboard, lambda s: s["rooms"][0]["users"] == 2 and s["messages_recent"] == 1)
    assert snapshot["rooms"][0]["room"] == "lounge"
    assert snapshot["online"] == 2


async def test_the_dashboard_request_watch_is_the_only_one_understood(connect, alice, transactional_db):
    dashboard = await connect("/ws/dashboard/", alice)
    await dashboard.send_json_to({"type": "watch"})
    await dashboard.send_json_to({"type": "stop"})
    while (event := await dashboard.receive_json_from())["type"] != "error":
        pass
    assert event["code"] == "bad_request"


async def test_the_ticker_stops_when_no_dashboard_watches(connect, alice, transactional_db, monkeypatch):
    monkeypatch.setattr(DashboardWorker, "idle_after", 0.2)
    dashboard = await connect("/ws/dashboard/", alice)
    await next_snapshot(dashboard)
    await asyncio.sleep(0.4)  # idle_after passes with no watch
    while await dashboard.receive_nothing(timeout=0.2) is False:
        await dashboard.receive_json_from()
    assert await dashboard.receive_nothing(timeout=0.3)
    await dashboard.send_json_to({"type": "watch"})
    await next_snapshot(dashboard)

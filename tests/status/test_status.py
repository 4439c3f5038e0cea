"""tether.status in one process: how snapshots add up (sans-I/O), which processes are kept, the settings it checks,
and the publisher: started by a served connection, reporting it, stopped for good by ``stop()``.
tests/status/test_command_live.py and tests/example/test_status_page.py check the same over real servers."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.test import override_settings

from tether import status
from tether.generic.websocket import AsyncWebsocketConsumer
from tether.layers import channel_layers
from tether.status.collect import Collector
from tether.status.management.commands import tether_status
from tether.status.publisher import Publisher, publisher_for_running_loop
from tether.status.snapshot import aggregate, drop_counts, render_text, top_groups
from tether.testing import WebsocketCommunicator

pytest.importorskip("prometheus_client", reason="the 'metrics' extra is not installed")

WAIT = 10


def process(name: str, open_: int, rate: float, groups: list[list[object]], drops: dict[str, int]) -> dict:
    return {
        "process": name,
        "interval": 1.0,
        "open": open_,
        "consumers": {"Chat": {"open": open_, "in": 10, "out": 20}},
        "rates": {"Chat": {"in": rate, "out": 2 * rate}},
        "drops": drops,
        "groups": groups,
        "layers": {"default": {"ok": True, "seconds": 0.002}},
        "loop_lag": 0.003,
    }


def test_the_summary_adds_up_the_processes() -> None:
    summary = aggregate(
        [
            process("b:2", 3, 1.5, [["room", 2], ["lobby", 1]], {"channel_full": 4}),
            process("a:1", 2, 0.5, [["room", 5]], {"channel_full": 1, "rate_limited": 2}),
        ]
    )
    totals = summary["totals"]
    assert [snapshot["process"] for snapshot in summary["processes"]] == ["a:1", "b:2"]
    assert totals["processes"] == 2 and totals["open"] == 5
    assert totals["consumers"]["Chat"] == {"open": 5, "in": 20, "out": 40, "in_rate": 2.0, "out_rate": 4.0}
    assert totals["drops"] == {"channel_full": 5, "rate_limited": 2}
    assert totals["groups"] == [["room", 7], ["lobby", 1]]
    text = render_text(summary)
    assert "Processes: 2    open connections: 5" in text
    assert "Largest groups: room 7, lobby 1" in text
    assert text.count("layer default: ok, 2.0 ms") == 2


def test_drops_use_the_metrics_reason_names_and_count_rate_limit_refusals() -> None:
    layers = {"default": {"full_drops": 2, "group_full_drops": 3, "expired": 1, "sent": 50}}
    drops = drop_counts(layers, {"connect_per_ip": 4, "store_errors": 9})
    assert drops == {"channel_full": 5, "expired": 1, "rate_limited": 4}


def test_top_groups_are_bounded_and_largest_first() -> None:
    sizes = {f"g{number}": number for number in range(50)}
    assert top_groups(sizes, 3) == [["g49", 49], ["g48", 48], ["g47", 47]]


def test_a_process_silent_for_three_intervals_is_forgotten() -> None:
    now = [100.0]
    collector = Collector(clock=lambda: now[0])
    collector.add({"process": "a:1", "interval": 1.0})
    collector.add({"process": "b:2", "interval": 1.0})
    collector.add({"interval": 1.0})  # no name: ignored
    now[0] += 2.0
    collector.add({"process": "b:2", "interval": 1.0})
    now[0] += 1.5
    assert [snapshot["process"] for snapshot in collector.current()] == ["b:2"]


def test_the_app_needs_the_metrics_and_a_positive_interval() -> None:
    with override_settings(TETHER_METRICS=False), pytest.raises(ImproperlyConfigured, match="TETHER_METRICS = True"):
        status.configure()
    with override_settings(TETHER_STATUS_INTERVAL=0), pytest.raises(ImproperlyConfigured, match="TETHER_STATUS_INT"):
        status.interval()


@pytest.fixture
def publishing(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with override_settings(TETHER_METRICS=True, TETHER_STATUS_INTERVAL=0.1):
        monkeypatch.setattr(status, "publishing", True)
        yield


class StatusEcho(AsyncWebsocketConsumer):
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.send(text_data=text_data, bytes_data=bytes_data)


async def test_a_served_connection_starts_the_publisher_which_reports_it(publishing: None) -> None:
    layer = channel_layers["default"]
    listener = await layer.new_channel()
    await layer.group_add(status.GROUP, listener)
    communicator = WebsocketCommunicator(StatusEcho.as_asgi(), "/")
    assert (await communicator.connect(WAIT))[0]
    publisher = publisher_for_running_loop()
    try:
        assert publisher.running
        deadline = asyncio.get_running_loop().time() + WAIT
        while True:
            message = await asyncio.wait_for(layer.receive(listener), WAIT)
            echo = message["snapshot"]["consumers"].get("StatusEcho", {})
            if echo.get("open") == 1:
                break
            assert asyncio.get_running_loop().time() < deadline, message
        assert message["snapshot"]["layers"]["default"]["ok"] is True
        assert publisher_for_running_loop() is publisher  # one per process, not one per connection
    finally:
        await publisher.stop()
        await communicator.disconnect()
        await layer.group_discard(status.GROUP, listener)
    assert not publisher.running


def test_the_command_says_the_in_memory_layer_cannot_be_heard_from_outside(publishing: None) -> None:
    out, err = io.StringIO(), io.StringIO()
    call_command(tether_status.Command(), "--wait", "0.2", "--json", stdout=out, stderr=err)
    assert json.loads(out.getvalue())["totals"]["processes"] == 0
    assert "in-memory channel layer" in err.getvalue()
    with pytest.raises(CommandError, match="--wait must be a positive number"):
        call_command(tether_status.Command(), "--wait", "0")


async def test_the_first_snapshot_has_no_rates_and_the_next_ones_count_per_second(publishing: None) -> None:
    from tether import metrics

    assert metrics.observer is not None
    counts = metrics.observer.tally.consumer("RatedConsumer")
    publisher = Publisher(asyncio.get_running_loop(), 1000.0)
    await publisher.stop()  # before its task ran: the snapshots below are the test's own
    first = await publisher.snapshot()
    assert first["rates"] == {}
    counts.sent_text += 50
    await asyncio.sleep(0.05)
    second = await publisher.snapshot()
    assert 0 < second["rates"]["RatedConsumer"]["out"] <= 50 / 0.05

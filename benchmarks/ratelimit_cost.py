"""What a rate limit costs per client message (docs/limits.md, "What it costs"): ``websocket_receive`` with and
without limits.

``python benchmarks/ratelimit_cost.py`` hands 200,000 text frames straight to an ``AsyncWebsocketConsumer``'s
``websocket_receive`` (no server, an empty ``receive()``), so the figure is the limiter's own cost beside the rest of
the consumer's per-message work: no limit, a per-connection limit, a per-user limit in memory, and, with
``--redis URL``, a per-user limit in Redis (one round trip per message). Rates are high enough that nothing is
refused. The median of five runs, in microseconds per message.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from types import SimpleNamespace
from typing import Any

import django
from django.conf import settings

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--redis", help="also measure a per-user limit in this Redis, e.g. redis://127.0.0.1:6379/0")
parser.add_argument("--messages", type=int, default=200_000)
options = parser.parse_args()

limits: dict[str, Any] = {"prefix": "tether-bench-ratelimit"}
if options.redis:
    limits["store"] = options.redis
settings.configure(SECRET_KEY="benchmark-not-secret", INSTALLED_APPS=["tether"], TETHER_RATE_LIMITS=limits)
django.setup()

from tether.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from tether.ratelimit import get_store  # noqa: E402


class NoLimit(AsyncWebsocketConsumer):
    pass


class PerConnection(AsyncWebsocketConsumer):
    rate_limits = {"messages_per_connection": "1000000000/s"}


class PerUser(AsyncWebsocketConsumer):
    rate_limits = {"messages_per_user": "1000000000/s"}


async def noop_send(message: dict[str, Any]) -> None:
    return None


async def per_message(consumer_class: type[AsyncWebsocketConsumer], messages: int) -> float:
    """Microseconds per ``websocket_receive`` after an admitted handshake."""
    consumer = consumer_class()
    consumer.scope = {
        "type": "websocket",
        "client": ("127.0.0.1", 1),
        "user": SimpleNamespace(is_authenticated=True, pk=1),
    }
    consumer.base_send = noop_send
    await consumer.websocket_connect({"type": "websocket.connect"})
    frame = {"type": "websocket.receive", "text": "hello"}
    receive = consumer.websocket_receive
    started = time.perf_counter()
    for _ in range(messages):
        await receive(frame)
    return (time.perf_counter() - started) / messages * 1e6


async def main() -> None:
    cases = [("no limit", NoLimit, options.messages), ("messages_per_connection", PerConnection, options.messages)]
    cases.append((f"messages_per_user ({'redis' if options.redis else 'memory'})", PerUser, options.messages))
    for label, consumer_class, messages in cases:
        if options.redis and consumer_class is PerUser:
            messages = min(messages, 20_000)  # a round trip each
        runs = [await per_message(consumer_class, messages) for _ in range(5)]
        print(f"{label:32} {statistics.median(runs):7.3f} µs/message  (runs: {', '.join(f'{r:.3f}' for r in runs)})")
    store = get_store()
    if hasattr(store, "delete_all"):
        await store.delete_all()
    await store.aclose()


asyncio.run(main())

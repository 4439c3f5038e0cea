"""Measure tether's Redis layers against the raw redis-py limit and against channels_redis, in one process.

Usage::

    .venv/bin/python benchmarks/bench_layer.py                 # starts its own redis-server on a free port
    .venv/bin/python benchmarks/bench_layer.py --redis-url redis://127.0.0.1:6379/0 --prefix bench-xyz

What it measures (100-byte messages, one event loop):

* **send then receive**: senders and one receiver run together, at most 64 messages in flight (under every
  layer's default capacity); the rate is what the receiver gets in a fixed window after a warm-up. With 1 sender and
  with 50 concurrent senders; on a named channel and on a ``new_channel()`` channel. The limit is the same loop
  written on redis-py directly (``RPUSH`` by the senders, ``BLPOP`` by the receiver, msgpack on both ends).
* **group_send to 1,000 members** of this process: every member's receive is waiting, then one ``group_send``;
  the time until all 1,000 have the message, p50 over the rounds.

Implementations run in turn within each round (the order rotates), and the table shows medians over the rounds,
with ratios: tether / raw limit and tether / channels_redis. channels_redis rows appear only when ``channels_redis``
is importable (install it in a separate venv with tether to compare). Nothing here asserts: it prints.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import platform
import secrets
import signal
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]  # tether from this checkout, and benchmarks.common

MESSAGE = {"type": "bench.message", "text": "x" * 70}
WINDOW = 64
SENDERS = (1, 50)


# Implementations ----------------------------------------------------------------------------------------------------


def implementations(url: str) -> dict[str, Callable[[str], Any]]:
    """name -> factory(prefix) of a layer; channels_redis entries only when it is installed."""
    from tether.layers.redis import RedisChannelLayer, RedisPubSubChannelLayer

    found: dict[str, Callable[[str], Any]] = {
        "tether redis": lambda prefix: RedisChannelLayer(hosts=[url], prefix=prefix),
        "tether pubsub": lambda prefix: RedisPubSubChannelLayer(hosts=[url], prefix=prefix),
    }
    try:
        from channels_redis.core import RedisChannelLayer as PeerCore
        from channels_redis.pubsub import RedisPubSubChannelLayer as PeerPubSub
    except ImportError:
        return found
    found["channels_redis"] = lambda prefix: PeerCore(hosts=[url], prefix=prefix)
    found["channels pubsub"] = lambda prefix: PeerPubSub(hosts=[url], prefix=prefix)
    return found


@contextlib.asynccontextmanager
async def built(factory: Callable[[str], Any], base_prefix: str) -> AsyncIterator[Any]:
    layer = factory(f"{base_prefix}-{secrets.token_hex(3)}")
    try:
        yield layer
    finally:
        with contextlib.suppress(Exception):
            await layer.flush()
        close = getattr(layer, "close", None) or getattr(layer, "close_pools", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()


# Send then receive --------------------------------------------------------------------------------------------------


async def pump(send: Callable[[], Any], receive: Callable[[], Any], senders: int, seconds: float) -> float:
    """Messages per second the receiver gets while ``senders`` tasks send, with WINDOW messages in flight at most."""
    window = asyncio.Semaphore(WINDOW)
    received = 0
    stopped = False

    async def sender() -> None:
        while not stopped:
            await window.acquire()
            if not stopped:
                await send()

    async def receiver() -> None:
        nonlocal received
        while True:
            await receive()
            received += 1
            window.release()

    tasks = [asyncio.ensure_future(receiver())] + [asyncio.ensure_future(sender()) for _ in range(senders)]
    try:
        await asyncio.sleep(min(0.5, seconds / 3))  # warm-up: connections, scripts, subscriptions
        start_count, started = received, time.perf_counter()
        await asyncio.sleep(seconds)
        return (received - start_count) / (time.perf_counter() - started)
    finally:
        stopped = True
        for _ in range(senders):
            window.release()
        await stop(tasks)


async def stop(tasks: list[asyncio.Future[Any]]) -> None:
    """Cancel ``tasks`` until they are done (redis-py on Python 3.11 can swallow a cancellation in a write)."""
    pending = set(tasks)
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.5)


async def layer_throughput(layer: Any, kind: str, senders: int, seconds: float) -> float:
    channel = await layer.new_channel() if kind == "local" else f"bench.named.{secrets.token_hex(3)}"
    await warm_up(layer, channel)
    return await pump(lambda: layer.send(channel, MESSAGE), lambda: layer.receive(channel), senders, seconds)


async def warm_up(layer: Any, channel: str) -> None:
    """Make sure the receiver listens (a pub/sub layer loses what is published before it subscribes)."""
    waiting = asyncio.ensure_future(layer.receive(channel))
    deadline = time.monotonic() + 10
    while not waiting.done():
        await layer.send(channel, {"type": "bench.warmup"})
        await asyncio.wait([waiting], timeout=0.05)
        if time.monotonic() > deadline:
            waiting.cancel()
            raise RuntimeError(f"{type(layer).__name__} never delivered a warm-up message on {channel}")
    with contextlib.suppress(asyncio.TimeoutError):  # drain extra warm-up copies
        while True:
            await asyncio.wait_for(layer.receive(channel), 0.05)


async def raw_throughput(url: str, senders: int, seconds: float, prefix: str) -> float:
    """The same loop on redis-py alone: RPUSH msgpack by the senders, BLPOP by the receiver."""
    import msgpack
    import redis.asyncio as redis

    sending = redis.Redis.from_url(url)
    receiving = redis.Redis.from_url(url, socket_timeout=None)
    key = f"{prefix}-raw-{secrets.token_hex(3)}"

    async def send() -> None:
        await sending.rpush(key, msgpack.packb(MESSAGE, use_bin_type=True))

    async def receive() -> None:
        _, data = await receiving.blpop([key], timeout=5)
        msgpack.unpackb(data, raw=False)

    try:
        return await pump(send, receive, senders, seconds)
    finally:
        await sending.delete(key)
        await sending.aclose()
        await receiving.aclose()


# Group fan-out ------------------------------------------------------------------------------------------------------


async def group_p50_ms(layer: Any, members: int, rounds: int) -> float:
    group = f"bench-group-{secrets.token_hex(3)}"
    channels = [await layer.new_channel() for _ in range(members)]
    for channel in channels:
        await layer.group_add(group, channel)
    await warm_up(layer, channels[0])
    timings = []
    for _ in range(rounds):
        receiving = [asyncio.ensure_future(layer.receive(channel)) for channel in channels]
        await asyncio.sleep(0.05)  # every receive is waiting (and subscribed) before the send
        started = time.perf_counter()
        await layer.group_send(group, MESSAGE)
        await asyncio.wait_for(asyncio.gather(*receiving), 30)
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


# Running ------------------------------------------------------------------------------------------------------------


CASES = [(kind, senders) for senders in SENDERS for kind in ("named", "local")]


async def run(url: str, args: argparse.Namespace) -> dict[tuple[str, str], list[float]]:
    impls = implementations(url)
    results: dict[tuple[str, str], list[float]] = {}
    names = list(impls)
    for round_number in range(args.rounds):
        order = names[round_number % len(names) :] + names[: round_number % len(names)]
        for kind, senders in CASES:
            case = f"{kind}, {senders} sender{'s' if senders > 1 else ''}"
            rate = await raw_throughput(url, senders, args.seconds, args.prefix)
            results.setdefault(("raw redis-py", case), []).append(rate)
            for name in order:
                async with built(impls[name], args.prefix) as layer:
                    rate = await layer_throughput(layer, kind, senders, args.seconds)
                results.setdefault((name, case), []).append(rate)
                print(f"  round {round_number + 1}: {name:16} {case:20} {rate:10,.0f} msg/s", flush=True)
        for name in order:
            async with built(impls[name], args.prefix) as layer:
                p50 = await group_p50_ms(layer, args.members, args.group_rounds)
            results.setdefault((name, f"group_send {args.members}"), []).append(p50)
            print(f"  round {round_number + 1}: {name:16} group_send to {args.members}: p50 {p50:.2f} ms", flush=True)
    return results


def ratio(ours: float | None, theirs: float | None, lower_is_better: bool) -> str:
    if not ours or not theirs:
        return "-"
    return f"{(theirs / ours if lower_is_better else ours / theirs):.2f}x"


def report(results: dict[tuple[str, str], list[float]], args: argparse.Namespace) -> None:
    import redis

    medians = {key: statistics.median(values) for key, values in results.items()}
    impls = sorted(
        {name for name, _ in medians},
        key=lambda n: ["raw redis-py", "tether redis", "tether pubsub", "channels_redis", "channels pubsub"].index(n),
    )
    cases = [f"{kind}, {senders} sender{'s' if senders > 1 else ''}" for kind, senders in CASES]
    cases.append(f"group_send {args.members}")
    print()
    print(
        f"# bench_layer: {datetime.datetime.now().isoformat(timespec='seconds')}, {platform.node()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, redis-py {redis.__version__}"
    )
    print(
        f"# medians of {args.rounds} rounds; send/receive in msg/s (higher is better), group_send p50 in ms "
        "(lower is better)"
    )
    header = ["case", *impls, "tether/raw", "tether/channels_redis", "pubsub/channels pubsub"]
    rows = []
    for case in cases:
        row = [case]
        for name in impls:
            value = medians.get((name, case))
            row.append("-" if value is None else (f"{value:.2f} ms" if case.startswith("group") else f"{value:,.0f}"))
        tether = medians.get(("tether redis", case))
        raw = medians.get(("raw redis-py", case))
        peer = medians.get(("channels_redis", case))
        pubsub = medians.get(("tether pubsub", case))
        peer_pubsub = medians.get(("channels pubsub", case))
        lower_is_better = case.startswith("group")
        row += [
            "-" if lower_is_better else ratio(tether, raw, False),
            ratio(tether, peer, lower_is_better),
            ratio(pubsub, peer_pubsub, lower_is_better),
        ]
        rows.append(row)
    widths = [max(len(str(line[index])) for line in [header, *rows]) for index in range(len(header))]
    for line in [header, ["-" * width for width in widths], *rows]:
        print("| " + " | ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)) + " |")
    print("\nRatios: for rates ours/theirs, for group_send theirs/ours (so above 1x means tether is faster).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", help="use this Redis (default: start redis-server on a free port)")
    parser.add_argument("--prefix", default=f"bench-{secrets.token_hex(3)}", help="key prefix (flushed after)")
    parser.add_argument("--seconds", type=float, default=2.0, help="measuring window per throughput case")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the table shows medians")
    parser.add_argument("--members", type=int, default=1000, help="group size for the group_send case")
    parser.add_argument("--group-rounds", type=int, default=15, help="group_sends per p50")
    args = parser.parse_args()
    # Stopped from outside (timeout, Ctrl-C in a wrapper): still stop our redis-server and remove its directory.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.redis_url:
        report(asyncio.run(run(args.redis_url, args)), args)
    else:
        from benchmarks.common import RedisServer

        with RedisServer() as redis_server:
            report(asyncio.run(run(redis_server.url, args)), args)


if __name__ == "__main__":
    main()

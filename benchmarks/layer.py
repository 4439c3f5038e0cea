"""1. Channel layer send then receive: one receiver, 1 sender or 50 concurrent senders, 100-byte messages.

In-memory, Redis and Redis pub/sub layers of tether and of Channels (channels_redis), on a named channel and on a
process-local ``new_channel()`` channel. The limit is the same loop written directly on redis-py: ``RPUSH`` by the
senders, ``BLPOP`` by the receiver, msgpack on both ends.

The loop: senders and the receiver run concurrently on one event loop, with at most 64 messages in flight (under the
default capacity of 100, so nobody meets ``ChannelFull``). After a warm-up that proves the receiver is listening
(pub/sub loses what is published before it subscribes), the rate is what the receiver gets in a fixed window; on the
Redis layers, the Redis commands each message cost in that window too (``INFO commandstats``, calls made inside
scripts included).
Every combination runs in a fresh process (``python -m benchmarks.layer worker ...``), tether and Channels in turn.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from typing import Any

__all__ = ["run"]

WINDOW = 64
MESSAGE = {"type": "bench.message", "text": "x" * 70}
BACKENDS = ("inmemory", "redis", "pubsub")
CASES = [("named", 1), ("named", 50), ("local", 1), ("local", 50)]


def make_layer(stack: str, backend: str, redis_url: str, prefix: str) -> Any:
    """A fresh layer of ``stack`` (``tether`` or ``channels``) for ``backend``, on the benchmark's redis-server."""
    if stack == "tether":
        if backend == "inmemory":
            from tether.layers import InMemoryChannelLayer

            return InMemoryChannelLayer()
        from tether.layers.redis import RedisChannelLayer, RedisPubSubChannelLayer

        cls = RedisChannelLayer if backend == "redis" else RedisPubSubChannelLayer
        return cls(hosts=[redis_url], prefix=prefix)
    if backend == "inmemory":
        from channels.layers import InMemoryChannelLayer as ChannelsInMemory

        return ChannelsInMemory()
    if backend == "redis":
        from channels_redis.core import RedisChannelLayer as ChannelsRedis

        return ChannelsRedis(hosts=[redis_url], prefix=prefix)
    from channels_redis.pubsub import RedisPubSubChannelLayer as ChannelsPubSub

    return ChannelsPubSub(hosts=[redis_url], prefix=prefix)


async def close_layer(layer: Any) -> None:
    """Delete what the layer left in Redis, then close it.

    Every run leaves nothing behind: keys left to expire would have the shared redis-server expiring them (its
    active expiry cycle) during a later run of the other stack, slowing that run down.
    """
    flush = getattr(layer, "flush", None)
    if flush is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(flush(), 30)
    for name in ("close", "close_pools"):
        method = getattr(layer, name, None)
        if method is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(method(), 5)
            return


class RawRedis:
    """The limit: the same loop with no layer, RPUSH and BLPOP of msgpack bytes on redis-py's asyncio client."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        import msgpack
        import redis.asyncio as redis

        self._pack, self._unpack = msgpack.packb, msgpack.unpackb
        self.senders = redis.Redis.from_url(redis_url)
        self.receiver = redis.Redis.from_url(redis_url)
        self.prefix = prefix

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        key = self.prefix + channel
        await self.senders.rpush(key, self._pack(message))

    async def receive(self, channel: str) -> dict[str, Any]:
        key = self.prefix + channel
        while True:
            popped = await self.receiver.blpop([key], timeout=1)
            if popped is not None:
                return self._unpack(popped[1])

    async def new_channel(self) -> str:
        raise NotImplementedError

    async def close(self) -> None:
        await self.senders.aclose()
        await self.receiver.aclose()


async def measure(layer: Any, channel: str, senders: int, duration: float, redis_client: Any = None) -> dict[str, Any]:
    """Run the send/receive loop on ``channel`` for ``duration`` seconds; the receiver's rate in that window, and
    with ``redis_client`` (redis-py asyncio, on the layer's server) the Redis commands per message received then."""
    from benchmarks.fanout import commandstats

    state = {"sent": 0, "received": 0, "errors": 0, "stop": False}
    room = asyncio.Event()
    got_one = asyncio.Event()

    async def receiver() -> None:
        while not state["stop"]:
            await layer.receive(channel)
            state["received"] += 1
            got_one.set()
            room.set()

    receiving = asyncio.create_task(receiver())
    try:
        # Warm-up: keep sending until the receiver has 10 messages (pub/sub drops what precedes its subscription).
        deadline = time.monotonic() + 10
        while state["received"] < 10:
            if time.monotonic() > deadline or receiving.done():
                raise RuntimeError(f"receiver on {channel!r} got {state['received']} warm-up messages in 10 s")
            got_one.clear()
            await layer.send(channel, MESSAGE)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(got_one.wait(), 0.05)
        await asyncio.sleep(0.05)
        state["sent"] = state["received"] = 0

        async def sender() -> None:
            while not state["stop"]:
                while state["sent"] - state["received"] >= WINDOW:
                    room.clear()
                    await room.wait()
                    if state["stop"]:
                        return
                state["sent"] += 1
                try:
                    await layer.send(channel, MESSAGE)
                except Exception:
                    state["errors"] += 1
                    state["sent"] -= 1
                    await asyncio.sleep(0.001)

        commands_before = await commandstats(redis_client)
        started = time.monotonic()
        sending = [asyncio.create_task(sender()) for _ in range(senders)]
        await asyncio.sleep(duration)
        received = state["received"]
        elapsed = time.monotonic() - started
        commands = sum((await commandstats(redis_client)).values()) - sum(commands_before.values())
        state["stop"] = True
        room.set()
        for task in sending:
            task.cancel()
        await asyncio.gather(*sending, return_exceptions=True)
    finally:
        receiving.cancel()
        await asyncio.gather(receiving, return_exceptions=True)
    per_message = commands / received if redis_client is not None and received else None
    return {"msgs_per_s": received / elapsed, "received": received, "errors": state["errors"],
            "commands_per_msg": per_message}  # fmt: skip


async def worker(stack: str, backend: str, redis_url: str, prefix: str, duration: float) -> dict[str, Any]:
    import redis.asyncio as redis

    redis_client = None if backend == "inmemory" else redis.Redis.from_url(redis_url)
    results = []
    cases = [("named", 1), ("named", 50)] if stack == "raw" else CASES
    for index, (kind, senders) in enumerate(cases):
        case_prefix = f"{prefix}{index}:"
        layer = (
            RawRedis(redis_url, case_prefix) if stack == "raw" else make_layer(stack, backend, redis_url, case_prefix)
        )
        channel = await layer.new_channel() if kind == "local" else "bench.named"
        try:
            result = await asyncio.wait_for(measure(layer, channel, senders, duration, redis_client), duration + 30)
        except Exception as exc:
            result = {"msgs_per_s": None, "error": f"{type(exc).__name__}: {exc}"}
        finally:
            await close_layer(layer)
        results.append({"channel": kind, "senders": senders, **result})
    if redis_client is not None:
        await redis_client.aclose()
    return {"stack": stack, "backend": backend, "cases": results}


def run(rounds: int = 3, scale: float = 1.0) -> dict[str, Any]:
    from benchmarks.common import Bench, RedisServer, Row, alternate, run_json, stopping, unavailable_tether_layers

    bench = Bench("layer", "1. Layer send then receive, 100-byte messages")
    unavailable = unavailable_tether_layers(bench, BACKENDS)
    duration = 0.4 * scale
    redis_server = RedisServer()
    values: dict[tuple[str, str, str, int], list[float | None]] = {}
    commands: dict[tuple[str, str, str, int], list[float | None]] = {}  # Redis commands per message received
    with stopping(redis_server):
        for backend in BACKENDS:
            variants = ["tether", "channels"] + (["raw"] if backend == "redis" else [])

            def one(round_index: int, stack: str, backend: str = backend) -> None:
                if stack == "tether" and unavailable[backend]:
                    for kind, senders in CASES:
                        values.setdefault((stack, backend, kind, senders), []).append(None)
                    return
                prefix = f"bench.layer.{stack}.{backend}.{round_index}."
                answer = run_json(
                    ["benchmarks.layer", "worker", stack, backend, redis_server.url, prefix, str(duration)],
                    timeout=120,
                )
                for case in answer["cases"]:
                    if case.get("error"):
                        bench.note(f"{stack} {backend} {case['channel']} x{case['senders']}: {case['error']}")
                    values.setdefault((stack, backend, case["channel"], case["senders"]), []).append(case["msgs_per_s"])
                    commands.setdefault((stack, backend, case["channel"], case["senders"]), []).append(
                        case.get("commands_per_msg")
                    )

            alternate(rounds, variants, one)
        names = {"inmemory": "in-memory", "redis": "Redis", "pubsub": "Redis pub/sub"}
        for backend in BACKENDS:
            for kind, senders in CASES:
                series = {
                    "tether": values.get(("tether", backend, kind, senders), []),
                    "channels": values.get(("channels", backend, kind, senders), []),
                }
                limit = None
                if backend == "redis":
                    series["redis-py"] = values.get(("raw", "redis", "named", senders), [])
                    limit = "redis-py"
                sender_text = "1 sender" if senders == 1 else f"{senders} senders"
                case = f"{names[backend]}, {sender_text}, {kind} channel"
                bench.add(Row(case, "msgs/s", "higher", series, tether="tether", peer="channels", limit=limit))
                if backend != "inmemory":
                    per_message = {
                        label: commands.get(
                            ("raw", "redis", "named", senders) if stack == "raw" else (stack, backend, kind, senders),
                            [],
                        )
                        for label, stack in (("tether", "tether"), ("channels", "channels"), ("redis-py", "raw"))
                        if backend == "redis" or stack != "raw"
                    }
                    bench.add(Row(case, "Redis cmds/msg", "lower", per_message, tether="tether", peer="channels",
                                  limit=limit))  # fmt: skip
        bench.note("Redis cmds/msg: INFO commandstats over the timed window (calls inside scripts included) / messages")
    return bench.finish()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    work = sub.add_parser("worker", help="measure one stack and backend; print one JSON line")
    work.add_argument("stack", choices=["tether", "channels", "raw"])
    work.add_argument("backend", choices=BACKENDS)
    work.add_argument("redis_url")
    work.add_argument("prefix")
    work.add_argument("duration", type=float)
    args = parser.parse_args()
    from benchmarks.common import run_async

    result = run_async(worker(args.stack, args.backend, args.redis_url, args.prefix, args.duration))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

"""The WebSocket load generator: a process of its own, driven by JSON commands on stdin, one JSON answer per line.

It uses the ``websockets`` client on uvloop, without compression or pings, so every server sees the same client.
Times are ``time.monotonic()``, which on Linux is the same clock in every process of the machine: a broadcast sent
by one load generator and received by another is timed on one clock.

Commands (``{"op": ..., ...}``):
  echo        url, clients, duration, max_messages, size -> messages, elapsed, rtt percentiles
  open        url, count, concurrency                    -> idle connections held until close_all
  room_join   urls, count, concurrency[, source, within] -> room members held, each recording broadcast arrivals
                                                            (from source address ``source``; connections not
                                                            started within ``within`` seconds count as failed)
  room_send   id, size                                   -> the first member sends broadcast ``id``; returns t0
  room_wait   id, timeout                                -> when every member here has ``id``: the last arrival
  close_all                                              -> closes every held connection
  churn       url, cycles, concurrency, duration         -> connect-then-close cycles; time per cycle
  exit
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sys
import time
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

CONNECT_OPTIONS: dict[str, Any] = {
    "compression": None,
    "ping_interval": None,
    "open_timeout": 60,
    "close_timeout": 10,
    "max_size": 2**20,
}


def _percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


class LoadGenerator:
    def __init__(self) -> None:
        self.held: list[ClientConnection] = []
        self.members: list[ClientConnection] = []
        self.readers: list[asyncio.Task[None]] = []
        self.arrivals: dict[int, list[float]] = {}
        self.arrived: dict[int, asyncio.Event] = {}
        self.dropped = 0

    # Echo ------------------------------------------------------------------------------------------------------------

    async def echo(self, url: str, clients: int, duration: float, max_messages: int, size: int) -> dict[str, Any]:
        payload = "x" * size
        connections = await asyncio.gather(*(connect(url, **CONNECT_OPTIONS) for _ in range(clients)))
        # Warm up: one round trip each, so connection set-up is not measured.
        for ws in connections:
            await ws.send(payload)
            await ws.recv()
        rtts: list[float] = []
        budget = [max_messages]
        errors = 0
        deadline = time.monotonic() + duration

        async def client(ws: ClientConnection) -> None:
            nonlocal errors
            monotonic = time.monotonic
            while budget[0] > 0 and monotonic() < deadline:
                budget[0] -= 1
                start = monotonic()
                try:
                    await ws.send(payload)
                    await ws.recv()
                except Exception:
                    errors += 1
                    return
                rtts.append(monotonic() - start)

        started = time.monotonic()
        await asyncio.gather(*(client(ws) for ws in connections))
        elapsed = time.monotonic() - started
        await asyncio.gather(*(ws.close() for ws in connections), return_exceptions=True)
        return {
            "messages": len(rtts),
            "elapsed": elapsed,
            "msgs_per_s": len(rtts) / elapsed if elapsed else None,
            "rtt_p50_ms": (_percentile(rtts, 0.5) or 0) * 1000,
            "rtt_p99_ms": (_percentile(rtts, 0.99) or 0) * 1000,
            "errors": errors,
        }

    # Idle connections ------------------------------------------------------------------------------------------------

    async def _open_many(
        self,
        urls: list[str],
        count: int,
        concurrency: int,
        source: str | None = None,
        within: float | None = None,
    ) -> tuple[list[ClientConnection], int]:
        semaphore = asyncio.Semaphore(concurrency)
        failures = 0
        # A source address of its own per generator (127.0.0.x): each has its own range of ephemeral ports.
        options = CONNECT_OPTIONS if source is None else {**CONNECT_OPTIONS, "local_addr": (source, 0)}
        deadline = None if within is None else time.monotonic() + within

        async def one(index: int) -> ClientConnection | None:
            nonlocal failures
            async with semaphore:
                if deadline is not None and time.monotonic() > deadline:
                    failures += 1
                    return None
                try:
                    return await connect(urls[index % len(urls)], **options)
                except Exception as exc:
                    failures += 1
                    if failures == 1:
                        print(f"loadgen: connect failed: {exc!r}", file=sys.stderr, flush=True)
                    return None

        opened = await asyncio.gather(*(one(index) for index in range(count)))
        return [ws for ws in opened if ws is not None], failures

    async def open(self, url: str, count: int, concurrency: int = 100) -> dict[str, Any]:
        started = time.monotonic()
        opened, failures = await self._open_many([url], count, concurrency)
        self.held.extend(opened)
        return {
            "opened": len(opened),
            "failed": failures,
            "held": len(self.held),
            "elapsed": time.monotonic() - started,
        }

    async def close_all(self, concurrency: int = 200) -> dict[str, Any]:
        started = time.monotonic()
        for task in self.readers:
            task.cancel()
        semaphore = asyncio.Semaphore(concurrency)

        async def close(ws: ClientConnection) -> None:
            async with semaphore:
                with contextlib.suppress(Exception):
                    await ws.close()

        everything = self.held + self.members
        await asyncio.gather(*(close(ws) for ws in everything))
        await asyncio.gather(*self.readers, return_exceptions=True)
        self.held, self.members, self.readers = [], [], []
        self.arrivals.clear()
        self.arrived.clear()
        self.dropped = 0
        return {"closed": len(everything), "elapsed": time.monotonic() - started}

    # Chat room -------------------------------------------------------------------------------------------------------

    async def room_join(
        self,
        urls: list[str],
        count: int,
        concurrency: int = 100,
        source: str | None = None,
        within: float | None = None,
    ) -> dict[str, Any]:
        started = time.monotonic()
        opened, failures = await self._open_many(urls, count, concurrency, source, within)
        for ws in opened:
            self.members.append(ws)
            self.readers.append(asyncio.create_task(self._read_room(ws)))
        return {
            "joined": len(opened),
            "failed": failures,
            "members": len(self.members),
            "dropped": self.dropped,
            "elapsed": time.monotonic() - started,
        }

    async def _read_room(self, ws: ClientConnection) -> None:
        monotonic = time.monotonic
        with contextlib.suppress(Exception):
            async for frame in ws:
                now = monotonic()
                ident = int(frame[: frame.index(" ")])
                times = self.arrivals.setdefault(ident, [])
                times.append(now)
                if len(times) >= len(self.members):
                    event = self.arrived.get(ident)
                    if event is not None:
                        event.set()
        # The server closed this member (it failed on its side): the room is the members that are still there.
        if ws in self.members and ws.close_code is not None:
            self.members.remove(ws)
            self.dropped += 1
            for ident, event in self.arrived.items():
                if len(self.arrivals.get(ident, ())) >= len(self.members):
                    event.set()

    async def room_send(self, id: int, size: int = 100) -> dict[str, Any]:
        t0 = time.monotonic()
        await self.members[0].send(f"{id} ".ljust(size, "x"))
        return {"t0": t0}

    async def room_wait(self, id: int, timeout: float) -> dict[str, Any]:
        event = self.arrived.setdefault(id, asyncio.Event())
        if len(self.arrivals.get(id, ())) >= len(self.members):
            event.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        times = self.arrivals.pop(id, [])
        self.arrived.pop(id, None)
        return {
            "received": len(times),
            "expected": len(self.members),
            "dropped": self.dropped,
            "last": max(times) if times else None,
            "median": _percentile(times, 0.5),
        }

    # Churn -----------------------------------------------------------------------------------------------------------

    async def churn(self, url: str, cycles: int, concurrency: int, duration: float) -> dict[str, Any]:
        remaining = [cycles]
        durations: list[float] = []
        failures = 0
        deadline = time.monotonic() + duration

        async def worker() -> None:
            nonlocal failures
            monotonic = time.monotonic
            while remaining[0] > 0 and monotonic() < deadline:
                remaining[0] -= 1
                start = monotonic()
                try:
                    ws = await connect(url, **CONNECT_OPTIONS)
                    await ws.close()
                except Exception as exc:
                    failures += 1
                    if failures == 1:
                        print(f"loadgen: churn cycle failed: {exc!r}", file=sys.stderr, flush=True)
                    continue
                durations.append(monotonic() - start)

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.monotonic() - started
        return {
            "cycles": len(durations),
            "failed": failures,
            "elapsed": elapsed,
            "cycle_p50_ms": (_percentile(durations, 0.5) or 0) * 1000,
            "cycle_p99_ms": (_percentile(durations, 0.99) or 0) * 1000,
        }


async def serve() -> None:
    generator = LoadGenerator()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            break
        command = json.loads(line)
        op = command.pop("op")
        if op == "exit":
            break
        try:
            answer = await getattr(generator, op)(**command)
        except Exception as exc:
            answer = {"error": f"{op}: {type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    with contextlib.suppress(Exception):
        await generator.close_all()


def main() -> None:
    from benchmarks.common import raise_fd_limit

    raise_fd_limit()
    try:
        import uvloop

        uvloop.run(serve())
    except ImportError:
        asyncio.run(serve())


if __name__ == "__main__":
    main()

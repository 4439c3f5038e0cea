"""The Redis protocol (RESP) as the layers speak it: commands packed for one write, replies read with a bound."""

from __future__ import annotations

import asyncio
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio.connection import AbstractConnection

__all__ = ["pack_commands", "read_reply"]

#: Arguments longer than this are written as their own chunk rather than copied into the batch's buffer.
_LARGE_ARGUMENT = 16 * 1024


def pack_commands(commands: list[tuple[Any, ...]]) -> list[bytes]:
    """Encode ``commands`` in the Redis protocol (RESP) as a few chunks for one write.

    The layers send bytes, str, int and float arguments only, so this does less than redis-py's general encoder:
    it is on the path of every command the link sends.
    """
    chunks: list[bytes] = []
    parts: list[bytes] = []
    for args in commands:
        parts.append(b"*%d\r\n" % len(args))
        for arg in args:
            kind = type(arg)
            if kind is bytes:
                data = arg
            elif kind is str:
                data = arg.encode()
            elif kind is int:
                data = b"%d" % arg
            elif kind is float:
                data = repr(arg).encode()
            else:
                raise TypeError(f"Cannot send a {kind.__name__} to Redis: {arg!r:.40}")
            if len(data) > _LARGE_ARGUMENT:
                parts.append(b"$%d\r\n" % len(data))
                chunks.append(b"".join(parts))
                chunks.append(data)
                parts = [b"\r\n"]
            else:
                parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    chunks.append(b"".join(parts))
    return chunks


async def read_reply(connection: AbstractConnection, timeout: float, push: bool = False) -> Any:
    """Read one reply within ``timeout`` seconds, else raise redis-py's ``TimeoutError`` (the caller disconnects).

    redis-py answers a read that timed out with None, which is also the reply to a blocking pop that timed out on
    the server; the time taken tells them apart.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    reply = await connection.read_response(timeout=timeout, push_request=push)
    if reply is None and loop.time() - started >= timeout:
        raise redis_errors.TimeoutError(f"No reply within {timeout:g}s")
    return reply

"""How a consumer waits on its client and its channel layer at once: ``await_many_dispatch``.

A consumer has several sources of messages (the ASGI ``receive`` from the server, the layer's ``receive`` for its
channel) and one handler at a time. This is the loop that joins them, and the subtlest code in tether, so here is
what it promises and why it is built this way.

Promises:

* **Order.** Messages are handled in the order their receives completed, across sources: a layer message never
  overtakes a client frame that arrived before it.
* **One at a time.** A message is dispatched only after the previous handler returned; handlers never overlap, as in
  Channels.
* **Bounded read-ahead.** A source is at most two messages ahead of its handler, so a slow handler slows the reads
  from its sources, and the server's flow control (TCP windows, the layer's capacity) keeps working.
* **Clean exit.** It returns or raises when ``dispatch`` does, or raises what a source raised; every pending receive
  is cancelled and awaited on the way out, so no receive is left half-done.

How: each source is read by one long-lived reader task, so a message costs no task creation (the per-message task
was taken out in the dispatch speed work; see the changelog). A reader hands a message over as soon as its receive
completes, which fixes the message's place in the order, then receives again once the message before it was taken.
In the usual case, where a handler finishes before the next message arrives, a message wakes the reader and the
caller once each.
Handlers run in the caller's task and context, so context variables and cancellation behave as in plain code.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["await_many_dispatch"]


async def await_many_dispatch(
    consumer_callables: list[Callable[[], Awaitable[Any]]],
    dispatch: Callable[[Any], Awaitable[Any]],
) -> None:
    """Wait on several message sources at once and dispatch each message as it arrives, one at a time.

    Each callable is a receive function (the ASGI ``receive``, a layer's ``receive`` for one channel). Every source
    keeps one receive pending, also while a handler runs, and messages are dispatched in the order their receives
    completed, so a layer message never overtakes a client frame that arrived before it. A message is dispatched
    only after the previous one was handled: handlers never overlap. Returns or raises when ``dispatch`` does (or a
    source raises); the pending receives are cancelled on the way out.

    Each source is read by one long-lived task, so a message costs no task creation. The reader hands each message
    over as soon as its receive completes (which fixes its place in the order) and receives again once the message
    before it was taken: a source is at most two messages ahead of its handler (the server's flow control keeps
    working), and in the usual case, where a handler is done before the next message arrives, a message wakes the
    reader and the caller once each. Handlers run in the caller's task, in its context.
    """
    loop = asyncio.get_running_loop()
    # Handed-over messages in the order their receives completed: (taken, message, error). At most two per source.
    ready: deque[tuple[asyncio.Future[None] | None, Any, BaseException | None]] = deque()
    wakeup: asyncio.Future[None] | None = None

    def hand_over(item: tuple[asyncio.Future[None] | None, Any, BaseException | None]) -> None:
        ready.append(item)
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    async def read(source: Callable[[], Awaitable[Any]]) -> None:
        previous: asyncio.Future[None] | None = None  # taken when the message handed over before this one is
        while True:
            try:
                message = await source()
            except Exception as error:
                hand_over((None, None, error))
                return
            taken = loop.create_future()
            hand_over((taken, message, None))
            # Drop this frame's reference: it would otherwise keep the message alive while the next receive waits,
            # which for an idle connection is forever (a 1 MiB frame held per idle client).
            message = None
            if previous is not None and not previous.done():
                await previous
            previous = taken

    readers = [loop.create_task(read(source)) for source in consumer_callables]
    try:
        while True:
            while not ready:
                wakeup = loop.create_future()
                await wakeup
            wakeup = None
            taken, message, error = ready.popleft()
            if error is not None:
                raise error
            taken.set_result(None)  # type: ignore[union-attr]
            try:
                await dispatch(message)
            finally:
                # Nothing may keep a handled message alive while the loop waits for the next one (see the reader).
                message = None
    finally:
        for reader in readers:
            reader.cancel()
        # Let the cancellations land so no receive is left half-done.
        await asyncio.gather(*readers, return_exceptions=True)

"""Drive any ASGI application by hand: feed it events, read what it sends back. No server, no network."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from typing import Any

from tether.types import ASGIApp, Message, Scope

__all__ = ["ApplicationCommunicator"]


class ApplicationCommunicator:
    """Runs ``application`` for ``scope`` in a task on the current event loop, with queues in place of a server.

    ``send_input`` is what the server would deliver to the app, ``receive_output`` what the app sent. An exception
    raised by the application comes out of ``receive_output`` and ``wait`` once its earlier output has been read.
    """

    def __init__(self, application: ASGIApp, scope: Scope) -> None:
        self.application = application
        self.scope = scope
        self.input_queue: asyncio.Queue[Message] = asyncio.Queue()
        self.output_queue: asyncio.Queue[Message] = asyncio.Queue()
        self._future: asyncio.Future[Any] | None = None

    @property
    def future(self) -> asyncio.Future[Any]:
        """The task running the application, started on first use."""
        if self._future is None:
            context = contextvars.copy_context()
            coroutine = self.application(self.scope, self.input_queue.get, self.output_queue.put)
            self._future = context.run(asyncio.ensure_future, coroutine)
        return self._future

    async def send_input(self, message: Message) -> None:
        """Deliver ``message`` to the application as its next ``receive()``; raises what the app raised, if it died."""
        future = self.future
        if future.done():
            future.result()
        await self.input_queue.put(message)

    async def receive_output(self, timeout: float = 1) -> Message:
        """The next event the application sent, waiting up to ``timeout`` seconds.

        Raises the application's own exception when it has died with nothing left to read, and ``TimeoutError``
        (after cancelling the application) when nothing came in time.
        """
        future = self.future
        if not self.output_queue.empty():
            return self.output_queue.get_nowait()
        if future.done():
            future.result()
        getter = asyncio.ensure_future(self.output_queue.get())
        try:
            done, _ = await asyncio.wait({getter, future}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not getter.done():
                getter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await getter
        if getter in done:
            return getter.result()
        if future.done():
            future.result()
            if not self.output_queue.empty():
                return self.output_queue.get_nowait()
            raise AssertionError("The application returned without sending anything more.")
        await self._cancel()
        raise TimeoutError(f"The application sent nothing within {timeout}s.")

    async def receive_nothing(self, timeout: float = 0.1, interval: float = 0.01) -> bool:
        """True when the application sends nothing for ``timeout`` seconds (checked every ``interval``)."""
        if not self.output_queue.empty():
            return False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            await asyncio.sleep(interval)
            if not self.output_queue.empty():
                return False
        return self.output_queue.empty()

    async def wait(self, timeout: float = 1) -> None:
        """Wait for the application to return; raises its exception, or cancels it after ``timeout`` seconds."""
        future = self.future
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout=timeout)
        except asyncio.TimeoutError:  # the builtin TimeoutError from Python 3.11, a class of its own on 3.10
            await self._cancel()
            raise TimeoutError(f"The application did not return within {timeout}s.") from None
        future.result()

    def stop(self, exceptions: bool = True) -> None:
        """Cancel the application; with ``exceptions``, raise what it had raised, if anything."""
        future = self._future
        if future is None:
            return
        if not future.done():
            future.cancel()
        elif exceptions and not future.cancelled():
            future.result()

    async def _cancel(self) -> None:
        future = self.future
        if not future.done():
            future.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await future

    def __del__(self) -> None:
        future = getattr(self, "_future", None)  # absent when a subclass's __init__ refused its arguments
        if future is not None and not future.done():
            with contextlib.suppress(RuntimeError):  # the loop may be closed already
                future.cancel()

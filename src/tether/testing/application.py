"""Drive any ASGI application by hand: feed it events, read what it sends back. No server, no network."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import sys
from typing import Any, NoReturn

from tether.types import ASGIApp, Message, Scope

__all__ = ["ApplicationCommunicator", "ApplicationFinished", "CommunicatorTimeout"]

if sys.version_info >= (3, 11):
    _Timeout = TimeoutError  # asyncio.TimeoutError is the builtin TimeoutError
else:

    class _Timeout(asyncio.TimeoutError, TimeoutError):
        """On Python 3.10 asyncio's TimeoutError and the builtin one are two classes: be caught as either."""


class CommunicatorTimeout(_Timeout):
    """Nothing came from the application in time; the communicator has cancelled it.

    An ``asyncio.TimeoutError``, as asgiref's and Channels' communicators raise, so
    ``pytest.raises(asyncio.TimeoutError)`` catches it on every Python tether supports; on 3.10, where the builtin
    ``TimeoutError`` is another class, it is that one too, so tests written either way work.
    """


class ApplicationFinished(CommunicatorTimeout):
    """Raised at once by ``receive_output()`` when the application has ended and everything it sent has been read.

    asgiref's communicator waits out the whole timeout in this case, then raises ``asyncio.TimeoutError``. Nothing can
    come in that time: a server closes the connection when the application's coroutine ends, so an event sent later
    would never reach a client, and the events the coroutine itself sent are already queued. Raising at once keeps
    tests fast, and as a subclass of ``asyncio.TimeoutError`` it is caught where asgiref's timeout would be (helpers
    that assert "no more messages" by expecting one). Its message says how the application ended and what it sent last.
    """


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
        self._last_output: Message | None = None

    @property
    def future(self) -> asyncio.Future[Any]:
        """The task running the application, started on first use."""
        if self._future is None:
            context = contextvars.copy_context()
            coroutine = self.application(self.scope, self.input_queue.get, self.output_queue.put)
            self._future = context.run(asyncio.ensure_future, coroutine)
        return self._future

    async def send_input(self, message: Message) -> None:
        """Deliver ``message`` to the application as its next ``receive()``; raises what the app raised, if it died.

        To an application that was cancelled (by an earlier timeout, which raised already, or ``stop()``) the message
        is queued unread, as to one that returned, so ``disconnect()`` after a timeout is quiet; asgiref raises
        ``CancelledError`` there, which would look like the test itself being cancelled.
        """
        future = self.future
        if future.done() and not future.cancelled():
            future.result()
        await self.input_queue.put(message)

    async def receive_output(self, timeout: float = 1) -> Message:
        """The next event the application sent, waiting up to ``timeout`` seconds.

        Once what the application sent has been read: raises the application's own exception if it died, and
        ``ApplicationFinished`` at once if it returned or was cancelled. When nothing comes in time, cancels the
        application and raises ``CommunicatorTimeout``. Both are ``asyncio.TimeoutError``, as asgiref raises.
        """
        message = self.output_queue.get_nowait() if not self.output_queue.empty() else await self._next_output(timeout)
        self._last_output = message
        return message

    async def _next_output(self, timeout: float) -> Message:
        future = self.future
        if future.done():
            self._raise_finished(future)
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
        if not self.output_queue.empty():  # the application sent its last events and ended in the same step
            return self.output_queue.get_nowait()
        if future.done():
            self._raise_finished(future)
        await self._cancel()
        raise CommunicatorTimeout(f"The application sent nothing within {timeout}s; it has been cancelled.")

    async def receive_nothing(self, timeout: float = 0.1, interval: float = 0.01) -> bool:
        """True when the application sends nothing for ``timeout`` seconds (checked every ``interval``).

        An application that has ended sends nothing more, so this is True at once then, unless it died: its exception
        is raised, as asgiref does. What it sent before is still there to read: False while any is unread.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.output_queue.empty():
            future = self.future
            if future.done():
                if not future.cancelled():
                    future.result()
                return True
            if loop.time() >= deadline:
                return True
            await asyncio.sleep(interval)
        return False

    async def wait(self, timeout: float = 1) -> None:
        """Wait for the application to return; raises its exception, or cancels it after ``timeout`` seconds.

        An application that was cancelled (by an earlier timeout, or ``stop()``) counts as returned, as in asgiref.
        """
        future = self.future
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout=timeout)
        except asyncio.TimeoutError:  # the builtin TimeoutError from Python 3.11, a class of its own on 3.10
            await self._cancel()
            raise CommunicatorTimeout(
                f"The application did not return within {timeout}s; it has been cancelled."
            ) from None
        except asyncio.CancelledError:
            if not future.cancelled():
                raise  # it is this wait that was cancelled, not the application

    def _raise_finished(self, future: asyncio.Future[Any]) -> NoReturn:
        """The application has ended and its output is all read: raise its exception, or ``ApplicationFinished``."""
        if future.cancelled():
            how = "was cancelled (by an earlier timeout, or stop())"
        else:
            future.result()
            how = "returned"
        last = "nothing" if self._last_output is None else f"{self._last_output!r:.200}"
        raise ApplicationFinished(
            f"The application {how} and will send nothing more; the last event read from it was {last}."
        )

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

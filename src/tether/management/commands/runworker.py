"""``manage.py runworker [--layer ALIAS] channel [channel ...]``: serve background channels with a ``Worker``.

The worker process serves the ``"channel"`` entry of ``ASGI_APPLICATION`` (a ``ChannelNameRouter``) for the named
channels, which other processes send to through a shared channel layer. A layer that lives in one process's memory
cannot carry those messages, so the command refuses the in-memory layer and says what to configure instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from tether import DEFAULT_CHANNEL_LAYER
from tether.exceptions import InvalidChannelLayerError
from tether.layers import BaseChannelLayer, InMemoryChannelLayer, channel_layers
from tether.management import require_tether_installed
from tether.routing import get_default_application
from tether.worker import DEFAULT_STOP_TIMEOUT, Worker

__all__ = ["Command"]

_REDIS_EXAMPLE = (
    'CHANNEL_LAYERS = {"default": {"BACKEND": "tether.layers.redis.RedisChannelLayer", '
    '"CONFIG": {"hosts": ["redis://127.0.0.1:6379/0"]}}}'
)


class Command(BaseCommand):
    """Run a worker for the given channels until interrupted.

    SIGTERM (what systemd, Kubernetes and supervisors send) and CONTROL-C stop it without losing a message: the worker
    takes no more, handles what it took for up to ``--stop-timeout`` seconds, and the layer is closed, giving back
    what it read ahead. A second signal stops it at once.
    """

    help = "Runs a tether worker that serves the named channels with the 'channel' part of ASGI_APPLICATION."
    leave_locale_alone = True
    #: The worker class the command runs; a subclass of the command can serve with a subclass of ``Worker``.
    worker_class = Worker

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--layer",
            default=DEFAULT_CHANNEL_LAYER,
            help=f"The CHANNEL_LAYERS alias to listen on (default: {DEFAULT_CHANNEL_LAYER!r}).",
        )
        parser.add_argument(
            "--stop-timeout",
            type=float,
            default=DEFAULT_STOP_TIMEOUT,
            help=(
                "Seconds a stopping worker lets its handlers finish the messages it took before cancelling them "
                f"(default: {DEFAULT_STOP_TIMEOUT:g})."
            ),
        )
        parser.add_argument("channels", nargs="+", help="The channel names to serve, such as 'thumbnails'.")

    def handle(self, *args: Any, **options: Any) -> None:
        require_tether_installed("runworker")
        stop_timeout = options["stop_timeout"]
        if not stop_timeout >= 0:
            raise CommandError(f"--stop-timeout must be a number of seconds, 0 or more, not {stop_timeout!r}.")
        alias = options["layer"]
        layer = self.get_layer(alias)
        try:
            application = get_default_application()
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from exc
        try:
            worker = self.worker_class(application, options["channels"], layer)
        except (TypeError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        if options["verbosity"] >= 1:
            self.stdout.write(
                f"tether worker serving {', '.join(worker.channels)} on layer {alias!r} "
                f"({type(layer).__name__}); quit with CONTROL-C."
            )
            self.stdout.flush()
        asyncio.run(self._run(worker, layer, stop_timeout))

    def get_layer(self, alias: str) -> BaseChannelLayer:
        """Build the layer configured under ``alias``; ``CommandError`` when it is missing, invalid or in-memory."""
        try:
            configured = alias in channel_layers
        except InvalidChannelLayerError as exc:
            raise CommandError(str(exc)) from exc
        if not configured:
            raise CommandError(
                f"No channel layer is configured under the alias {alias!r}, so nothing can reach this worker. "
                f"Configure one that every process shares, for example: {_REDIS_EXAMPLE}"
            )
        try:
            layer = channel_layers[alias]
        except InvalidChannelLayerError as exc:
            raise CommandError(str(exc)) from exc
        if isinstance(layer, InMemoryChannelLayer):
            raise CommandError(
                f"The channel layer {alias!r} is the in-memory layer, which lives inside one process: messages that "
                f"the web server sends cannot reach this worker. Configure a layer that processes share, such as "
                f"Redis: {_REDIS_EXAMPLE}"
            )
        return layer

    async def _run(self, worker: Worker, layer: BaseChannelLayer, stop_timeout: float) -> None:
        """Run ``worker`` until a signal stops it (gracefully the first time, at once the second), then close the
        layer, which gives back what it read ahead."""
        loop = asyncio.get_running_loop()
        running = asyncio.ensure_future(worker.run())
        stopping: list[asyncio.Task[None]] = []

        def on_signal() -> None:
            if stopping:
                running.cancel()
            else:
                stopping.append(loop.create_task(worker.stop(stop_timeout)))

        signals = (signal.SIGTERM, signal.SIGINT)
        for signum in signals:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, on_signal)
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await running
        finally:
            for signum in signals:
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(signum)
            for task in stopping:
                task.cancel()
            await asyncio.gather(*stopping, return_exceptions=True)
            await layer.close()

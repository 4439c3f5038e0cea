"""``manage.py tether_status [--json] [--wait SECONDS]``: what every serving process is doing, as the admin page shows.

It joins the ``tether.status`` group of the default channel layer, listens for ``--wait`` seconds (two and a half
snapshot intervals by default, so every live process is heard at least twice), and prints the totals and each
process. With the in-memory layer the command's own process is alone on its layer, so it hears nobody: use the
admin page there.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from tether import DEFAULT_CHANNEL_LAYER, status
from tether.layers import channel_layers
from tether.layers.inmemory import InMemoryChannelLayer
from tether.status.collect import gather
from tether.status.snapshot import aggregate, render_text

__all__ = ["Command"]


class Command(BaseCommand):
    """Print the status of every process that serves the project (totals, then per process)."""

    help = "Prints open connections, message rates, drops, groups and layer health of every serving process."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print the summary as JSON.")
        parser.add_argument(
            "--wait",
            type=float,
            default=None,
            help="Seconds to listen for the processes' snapshots (default: 2.5 x TETHER_STATUS_INTERVAL).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        wait = options["wait"] if options["wait"] is not None else 2.5 * status.interval()
        if wait <= 0:
            raise CommandError(f"--wait must be a positive number of seconds, not {wait}.")
        layer = channel_layers[DEFAULT_CHANNEL_LAYER]
        if layer is None:
            raise CommandError("No channel layer is configured: set CHANNEL_LAYERS (the processes publish through it).")
        if isinstance(layer, InMemoryChannelLayer):
            self.stderr.write(
                "The in-memory channel layer lives inside each server process: this command cannot hear them. "
                "Use the admin page, or a Redis layer."
            )
        try:
            snapshots = asyncio.run(self._gather(layer, wait))
        except Exception as exc:  # the layer's own errors (Redis unreachable, ...): say so, without a traceback
            raise CommandError(f"Could not listen to the processes on the channel layer: {exc}") from exc
        summary = aggregate(snapshots)
        if options["json"]:
            self.stdout.write(json.dumps(summary, indent=2, sort_keys=True))
        else:
            self.stdout.write(render_text(summary), ending="")

    async def _gather(self, layer: Any, wait: float) -> list[dict[str, Any]]:
        try:
            return await gather(layer, wait)
        finally:
            await layer.close()

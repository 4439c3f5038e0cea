"""``manage.py tether_dead_letters {list,show,requeue,purge} CHANNEL``: the dead letters of a durable channel.

A message of a durable channel (the layer's ``durable`` option) that failed ``max_attempts`` times is kept aside as a
dead letter instead of being delivered again. This command lists them (one line each: position, attempts, when, the
last error), shows one in full (the message as JSON), sends them to the channel again, or deletes them.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from tether import DEFAULT_CHANNEL_LAYER
from tether.exceptions import InvalidChannelLayerError
from tether.layers import channel_layers
from tether.layers.durable import DeadLetter

__all__ = ["Command"]


class Command(BaseCommand):
    """List, show, requeue or purge a durable channel's dead letters."""

    help = "Lists, shows, requeues or purges the dead letters of a durable channel."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["list", "show", "requeue", "purge"])
        parser.add_argument("channel", help="The durable channel, such as 'thumbnails'.")
        parser.add_argument(
            "--layer",
            default=DEFAULT_CHANNEL_LAYER,
            help=f"The CHANNEL_LAYERS alias (default: {DEFAULT_CHANNEL_LAYER!r}).",
        )
        parser.add_argument(
            "--limit", type=int, default=None, help="At most this many (list: 100 by default; requeue: all)."
        )
        parser.add_argument("--index", type=int, default=0, help="show: which dead letter, from 0 (the oldest).")

    def handle(self, *args: Any, **options: Any) -> None:
        alias, channel = options["layer"], options["channel"]
        layer = self._layer(alias)
        try:
            layer.require_valid_channel_name(channel)
        except TypeError as exc:
            raise CommandError(str(exc)) from exc
        if not hasattr(layer, "is_durable") or not layer.is_durable(channel):
            raise CommandError(
                f"Channel {channel!r} is not durable on the channel layer {alias!r} ({type(layer).__name__}), so it "
                "has no dead letters. Durable channels are listed in the layer's 'durable' option (docs/workers.md)."
            )
        try:
            asyncio.run(self._run(layer, options["action"], channel, options))
        except ValueError as exc:
            raise CommandError(str(exc)) from exc

    def _layer(self, alias: str) -> Any:
        try:
            layer = channel_layers[alias]
        except InvalidChannelLayerError as exc:
            raise CommandError(str(exc)) from exc
        if layer is None:
            raise CommandError(f"No channel layer is configured under the alias {alias!r}.")
        return layer

    async def _run(self, layer: Any, action: str, channel: str, options: dict[str, Any]) -> None:
        try:
            if action == "list":
                letters = await layer.dead_letters(channel, options["limit"] or 100)
                if not letters:
                    self.stdout.write(f"No dead letters on {channel!r}.")
                for index, letter in enumerate(letters):
                    self.stdout.write(_summary(index, letter))
            elif action == "show":
                index = options["index"]
                letters = await layer.dead_letters(channel, index + 1) if index >= 0 else []
                if len(letters) <= index:
                    raise CommandError(f"{channel!r} has no dead letter at index {index} ({len(letters)} in all).")
                letter = letters[index]
                self.stdout.write(_summary(index, letter))
                self.stdout.write(json.dumps(letter.message, indent=2, default=repr, ensure_ascii=False))
            elif action == "requeue":
                count = await layer.requeue_dead_letters(channel, options["limit"])
                self.stdout.write(f"Requeued {count} dead letter(s) on {channel!r}.")
            else:
                count = await layer.purge_dead_letters(channel)
                self.stdout.write(f"Purged {count} dead letter(s) from {channel!r}.")
        finally:
            await layer.close()


def _summary(index: int, letter: DeadLetter) -> str:
    when = datetime.datetime.fromtimestamp(letter.died_at, datetime.timezone.utc).isoformat(timespec="seconds")
    error = letter.error or "never acknowledged"
    return f"{index}: {letter.message.get('type')!r}, {letter.attempts} attempt(s), dead since {when}: {error}"

"""At-least-once delivery for chosen named channels: acknowledged when handled, redelivered when the receiver dies.

By default a channel layer delivers at most once, as Channels does: a message is taken off the layer before its
handler runs, so a worker that is killed loses what it held. A layer's ``durable`` option names channels (exact names
or ``fnmatch`` patterns such as ``"jobs.*"``) whose messages stay with the layer until they are **acknowledged**:

* ``receive()`` on a durable channel returns a ``Delivery``, a message dict that also knows how to settle itself;
* ``await delivery.ack()`` says it was handled: the layer forgets it. Consumers do this themselves after the handler
  returns (``runworker`` and ``Worker`` need no code for it);
* ``await delivery.nack(error)`` says handling failed: the message is delivered again (a consumer does this when the
  handler raises), until it has been delivered ``max_attempts`` times; then it goes to the channel's **dead letters**,
  which ``manage.py tether_dead_letters`` lists, shows, re-queues and purges;
* a message neither acknowledged nor refused within ``visibility_timeout`` seconds (its receiver died, hangs, or
  forgot) is delivered again, to any receiver of the channel, and counts as an attempt.

So a message can be handled more than once (a receiver killed after its handler's work but before the
acknowledgement, or a handler slower than the visibility timeout), never lost while the layer keeps it (``expiry``
still applies: a message older than it is dropped, counted, as on every channel). Handlers of durable channels
should be idempotent. Process-local channels (``new_channel()`` names) are never durable: their process is their
only receiver.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from tether.types import Message

if TYPE_CHECKING:
    from tether.layers.stats import LayerStats

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_VISIBILITY_TIMEOUT",
    "DeadLetter",
    "Delivery",
    "DurablePolicy",
    "DurableSettings",
    "describe_error",
    "report_dead_letters",
]

#: Seconds a delivered message may stay unacknowledged before it is delivered again.
DEFAULT_VISIBILITY_TIMEOUT = 30.0
#: Deliveries of one message before it is dead-lettered.
DEFAULT_MAX_ATTEMPTS = 5
#: Characters of an error's description kept with a dead letter.
_MAX_ERROR_LENGTH = 500


@dataclass(frozen=True)
class DurableSettings:
    """How one durable channel behaves: see the module's docs."""

    visibility_timeout: float = DEFAULT_VISIBILITY_TIMEOUT
    max_attempts: int = DEFAULT_MAX_ATTEMPTS


@dataclass(frozen=True)
class DeadLetter:
    """A message that failed ``attempts`` times on ``channel``: the last ``error`` (a short description, or None
    when its receivers never answered) and when it was given up on (``died_at``, epoch seconds)."""

    channel: str
    message: Message
    attempts: int
    error: str | None
    died_at: float


class Settler(Protocol):
    """What a layer does when a ``Delivery`` is settled."""

    async def ack_delivery(self, delivery: Delivery) -> None: ...

    async def nack_delivery(self, delivery: Delivery, error: str | None) -> None: ...


class Delivery(dict[str, Any]):
    """A message received from a durable channel. It is the message dict, and it knows how to settle itself.

    ``channel`` is where it came from, ``attempts`` how many times it has been delivered, this time included. The
    first of ``ack()`` / ``nack()`` counts; later calls do nothing. A copy of the dict (``dict(delivery)``, or
    sending it on to another channel) is an ordinary message.
    """

    __slots__ = ("_settled", "_settler", "attempts", "channel", "tag")

    def __init__(self, message: Message, channel: str, tag: Any, attempts: int, settler: Settler) -> None:
        super().__init__(message)
        self.channel = channel
        self.tag = tag
        self.attempts = attempts
        self._settler = settler
        self._settled = False

    @property
    def settled(self) -> bool:
        """Whether ``ack()`` or ``nack()`` was called."""
        return self._settled

    async def ack(self) -> None:
        """The message was handled: the layer forgets it."""
        if not self._settled:
            self._settled = True
            await self._settler.ack_delivery(self)

    async def nack(self, error: BaseException | str | None = None) -> None:
        """Handling failed (``error`` says why): deliver it again, or dead-letter it after ``max_attempts``."""
        if not self._settled:
            self._settled = True
            await self._settler.nack_delivery(self, describe_error(error))

    def __reduce__(self) -> tuple[Any, ...]:
        return (dict, (dict(self),))  # pickled or deep-copied, it is the plain message


def describe_error(error: BaseException | str | None) -> str | None:
    """A short, single-line description of why handling failed, for a dead letter."""
    if error is None:
        return None
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    text = " ".join(text.split())
    return text if len(text) <= _MAX_ERROR_LENGTH else text[: _MAX_ERROR_LENGTH - 1] + "…"


def report_dead_letters(
    stats: LayerStats, channel: str, count: int, settings: DurableSettings, error: str | None = None
) -> None:
    """Count ``count`` messages of ``channel`` dead-lettered after ``max_attempts`` deliveries, and log it once per
    channel (every layer words it the same way)."""
    if count:
        stats.drop(
            "dead_lettered",
            channel,
            "A message on channel %r failed %d times and was dead-lettered (last error: %s)",
            channel,
            settings.max_attempts,
            error or f"not acknowledged within {settings.visibility_timeout:g}s",
            amount=count,
        )


class DurablePolicy:
    """Which named channels are durable, and how, from a layer's ``durable`` option.

    ``durable`` is None (no durable channel), a list of channel names and ``fnmatch`` patterns, or a dict of them to
    their settings (``{"jobs.*": {"visibility_timeout": 120}}``); ``visibility_timeout`` and ``max_attempts`` are
    the defaults for every pattern. Raises ``TypeError`` / ``ValueError`` naming the bad entry.
    """

    def __init__(
        self,
        durable: Any = None,
        visibility_timeout: float = DEFAULT_VISIBILITY_TIMEOUT,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> None:
        defaults = _settings("durable", {}, DurableSettings(_seconds(visibility_timeout), _attempts(max_attempts)))
        self._patterns: list[tuple[str, DurableSettings]] = []
        if durable is None:
            pass
        elif isinstance(durable, Mapping):
            for pattern, options in durable.items():
                self._patterns.append((_pattern(pattern), _settings(f"durable[{pattern!r}]", options, defaults)))
        elif isinstance(durable, (list, tuple)):
            self._patterns = [(_pattern(pattern), defaults) for pattern in durable]
        else:
            raise TypeError(
                "durable must be a list of channel names or patterns (['jobs', 'mail.*']), or a dict of them to "
                f"their options ({{'jobs': {{'max_attempts': 3}}}}), not {type(durable).__name__}."
            )
        self._cache: dict[str, DurableSettings | None] = {}

    def __bool__(self) -> bool:
        return bool(self._patterns)

    def settings_for(self, channel: str) -> DurableSettings | None:
        """The settings of ``channel`` when it is durable (the first pattern that matches), else None."""
        try:
            return self._cache[channel]
        except KeyError:
            pass
        found = None
        if "!" not in channel:
            for pattern, settings in self._patterns:
                if fnmatch.fnmatchcase(channel, pattern):
                    found = settings
                    break
        if len(self._cache) < 10_000:
            self._cache[channel] = found
        return found


def _pattern(pattern: Any) -> str:
    if not isinstance(pattern, str) or not pattern:
        raise TypeError(f"durable channel patterns must be non-empty str, not {pattern!r}.")
    if "!" in pattern:
        raise ValueError(
            f"durable channel pattern {pattern!r} names process-local channels ('!'); only named channels can be "
            "durable."
        )
    return pattern


def _settings(where: str, options: Any, defaults: DurableSettings) -> DurableSettings:
    if not isinstance(options, Mapping):
        raise TypeError(f"{where} must be a dict of options, not {type(options).__name__}.")
    unknown = set(options) - {"visibility_timeout", "max_attempts"}
    if unknown:
        raise TypeError(f"{where} got unknown option(s) {sorted(unknown)}; it takes visibility_timeout, max_attempts.")
    return DurableSettings(
        _seconds(options.get("visibility_timeout", defaults.visibility_timeout)),
        _attempts(options.get("max_attempts", defaults.max_attempts)),
    )


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"visibility_timeout must be a positive number of seconds, not {value!r}.")
    return float(value)


def _attempts(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"max_attempts must be a positive int, not {value!r}.")
    return value

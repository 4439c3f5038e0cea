"""The channel layer interface, and the name and capacity rules every layer shares."""

from __future__ import annotations

import fnmatch
import re
import warnings
from collections.abc import Callable
from typing import Any, ClassVar

from tether.types import Message

__all__ = ["MAX_NAME_LENGTH", "BaseChannelLayer"]

MAX_NAME_LENGTH = 100

_CHANNEL_NAME = re.compile(r"[a-zA-Z0-9\-_.]+(![a-zA-Z0-9\-_.]*)?")
_GROUP_NAME = re.compile(r"[a-zA-Z0-9\-_.]+")


def _require_valid_name(kind: str, name: Any, pattern: re.Pattern[str], rules: str) -> None:
    if not isinstance(name, str):
        raise TypeError(f"{kind} name must be a str, not {type(name).__name__}: {name!r}.")
    if len(name) >= MAX_NAME_LENGTH:
        raise TypeError(
            f"{kind} name is {len(name)} characters long; it must be shorter than {MAX_NAME_LENGTH}: {name[:40]!r}..."
        )
    if not pattern.fullmatch(name):
        raise TypeError(f"{kind} name {name!r} is invalid: {rules}")


class BaseChannelLayer:
    """What every channel layer offers: the async API, plus name validation and capacity lookup for layer authors.

    Subclasses implement ``send``, ``receive``, ``new_channel`` and, when they list ``"groups"`` in ``extensions``,
    ``group_add``, ``group_discard`` and ``group_send``; ``"flush"`` means ``flush()`` empties the layer.
    """

    MAX_NAME_LENGTH: ClassVar[int] = MAX_NAME_LENGTH
    extensions: ClassVar[list[str]] = []

    #: The name rules as compiled patterns, for layer authors who test names themselves (Channels offers the same).
    channel_name_regex: ClassVar[re.Pattern[str]] = re.compile(rf"^{_CHANNEL_NAME.pattern}$")
    group_name_regex: ClassVar[re.Pattern[str]] = re.compile(rf"^{_GROUP_NAME.pattern}$")
    #: A message template for an invalid name, formatted with the kind of name (``"Channel"`` or ``"Group"``). Layers
    #: written for Channels raise ``TypeError(self.invalid_name_error.format("Group"))``; tether's own checks raise
    #: messages that also say which name was wrong and why.
    invalid_name_error: ClassVar[str] = (
        "{} name must be a str shorter than " + str(MAX_NAME_LENGTH) + " characters made of ASCII letters, digits, "
        "'-', '_' and '.' (a channel name may have one '!' before a process-local part)."
    )

    def __init__(
        self,
        expiry: float = 60,
        capacity: int = 100,
        channel_capacity: dict[Any, int] | None = None,
    ) -> None:
        if not isinstance(expiry, (int, float)) or isinstance(expiry, bool) or expiry <= 0:
            raise ValueError(f"expiry must be a positive number of seconds, not {expiry!r}.")
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
            raise ValueError(f"capacity must be a positive int, not {capacity!r}.")
        self.expiry = expiry
        self.capacity = capacity
        self.channel_capacity = self.compile_capacities(channel_capacity or {})
        self._capacity_cache: dict[str, int] = {}

    # Names -------------------------------------------------------------------------------------------------------

    def require_valid_channel_name(self, name: Any, receive: bool = False) -> bool:
        """Raise ``TypeError`` saying why ``name`` is not a valid channel name; with ``receive``, a name with ``!``
        must end there (a process receives for all its local channels at once)."""
        _require_valid_name(
            "Channel",
            name,
            _CHANNEL_NAME,
            "use ASCII letters, digits, '-', '_' and '.', with at most one '!' before a process-local part.",
        )
        if receive and "!" in name and not name.endswith("!"):
            raise TypeError(f"Channel name {name!r} given to receive() must end at the '!'.")
        return True

    def require_valid_group_name(self, name: Any) -> bool:
        """Raise ``TypeError`` saying why ``name`` is not a valid group name."""
        _require_valid_name("Group", name, _GROUP_NAME, "use ASCII letters, digits, '-', '_' and '.'.")
        return True

    def match_type_and_length(self, name: Any) -> bool:
        """Whether ``name`` is a str shorter than ``MAX_NAME_LENGTH`` (the first test of both name rules)."""
        return isinstance(name, str) and len(name) < self.MAX_NAME_LENGTH

    def valid_channel_name(self, channel_name: Any, receive: bool = False) -> bool:
        """Deprecated since Channels 2: use ``require_valid_channel_name``. Warns, then returns True or raises
        ``TypeError`` as that method does."""
        warnings.warn(
            "BaseChannelLayer.valid_channel_name() is deprecated; call require_valid_channel_name() instead.",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.require_valid_channel_name(channel_name, receive=receive)

    def valid_group_name(self, group_name: Any) -> bool:
        """Deprecated since Channels 2: use ``require_valid_group_name``. Warns, then returns True or raises
        ``TypeError`` as that method does."""
        warnings.warn(
            "BaseChannelLayer.valid_group_name() is deprecated; call require_valid_group_name() instead.",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.require_valid_group_name(group_name)

    def valid_channel_names(self, names: list[str], receive: bool = False) -> bool:
        """Validate a list of channel names (``TypeError`` when it is not a list or a name is invalid)."""
        if not isinstance(names, list):
            raise TypeError(f"Channel names must be given as a list, not {type(names).__name__}.")
        for name in names:
            self.require_valid_channel_name(name, receive=receive)
        return True

    def non_local_name(self, name: str) -> str:
        """The part of a channel name that leaves the process: everything up to and including ``!``."""
        if "!" in name:
            return name[: name.find("!") + 1]
        return name

    # Capacity ----------------------------------------------------------------------------------------------------

    def compile_capacities(self, channel_capacity: dict[Any, int]) -> list[tuple[re.Pattern[str], int]]:
        """Turn ``{pattern: capacity}`` into ``[(regex, capacity)]``; string patterns are globs, compiled regexes
        stay as they are."""
        if not isinstance(channel_capacity, dict):
            raise TypeError(f"channel_capacity must be a dict of pattern -> int, not {channel_capacity!r}.")
        compiled = []
        for pattern, value in channel_capacity.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"channel_capacity[{pattern!r}] must be a positive int, not {value!r}.")
            if isinstance(pattern, re.Pattern):
                compiled.append((pattern, value))
            elif isinstance(pattern, str):
                compiled.append((re.compile(fnmatch.translate(pattern)), value))
            else:
                raise TypeError(f"channel_capacity keys must be glob strings or compiled regexes, not {pattern!r}.")
        return compiled

    def get_capacity(self, channel: str) -> int:
        """The capacity of ``channel``: the first matching ``channel_capacity`` pattern, else ``capacity``."""
        if not self.channel_capacity:
            return self.capacity
        try:
            return self._capacity_cache[channel]
        except KeyError:
            pass
        capacity = self.capacity
        for pattern, value in self.channel_capacity:
            if pattern.match(channel):
                capacity = value
                break
        if len(self._capacity_cache) > 10_000:
            self._capacity_cache.clear()
        self._capacity_cache[channel] = capacity
        return capacity

    # The API -----------------------------------------------------------------------------------------------------

    async def send(self, channel: str, message: Message) -> None:
        """Send ``message`` to ``channel``; raises ``ChannelFull`` when it is at capacity."""
        raise NotImplementedError(f"{type(self).__name__} does not implement send().")

    async def receive(self, channel: str) -> Message:
        """Wait for and return the next message on ``channel``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement receive().")

    async def new_channel(self, prefix: str = "specific.") -> str:
        """Return a new channel name, unique to this process, that this process can receive on."""
        raise NotImplementedError(f"{type(self).__name__} does not implement new_channel().")

    def watch(self, channel: str, callback: Callable[[], None]) -> bool:
        """Ask to have ``callback()`` called once, on the running loop, when a message for ``channel`` (one that
        ``new_channel()`` made here) may be received; ``False`` when this layer cannot tell, and ``receive`` must
        wait from the start. A consumer watches its channel instead of waiting on it until something is sent to it:
        an idle connection then holds no receiver (``tether.dispatch.LazySource``). What arrives before the first
        ``receive`` is kept for it. ``unwatch(channel)`` withdraws the request."""
        return False

    def unwatch(self, channel: str) -> None:
        """Withdraw ``watch(channel, ...)``; nothing happens for a channel not watched."""

    async def group_add(self, group: str, channel: str) -> None:
        """Add ``channel`` to ``group``."""
        raise NotImplementedError(f"{type(self).__name__} does not support groups.")

    async def group_discard(self, group: str, channel: str) -> None:
        """Remove ``channel`` from ``group``; a channel that is not a member is ignored."""
        raise NotImplementedError(f"{type(self).__name__} does not support groups.")

    async def group_send(self, group: str, message: Message) -> None:
        """Send ``message`` to every channel in ``group``; full members are skipped (and counted)."""
        raise NotImplementedError(f"{type(self).__name__} does not support groups.")

    async def flush(self) -> None:
        """Remove every channel, message and group this layer holds."""
        raise NotImplementedError(f"{type(self).__name__} does not support flush().")

    async def close(self) -> None:
        """Release connections and background tasks; the layer may be used again afterwards."""

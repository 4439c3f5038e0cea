"""Message values: what a layer accepts, and the private copy each receiver gets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tether.types import Message

__all__ = ["clone_message", "copy_message", "private_copier", "require_valid_message"]

_ATOMS = frozenset((str, bytes, int, float, bool, type(None)))


def _copy(value: Any, path: str) -> Any:
    kind = type(value)
    if kind in _ATOMS:
        return value
    if kind is dict:
        copied = {}
        for key, item in value.items():
            if type(key) is not str:
                if not isinstance(key, str):
                    raise TypeError(f"Message keys must be str; {path} has key {key!r}.")
                key = str.__str__(key)
            # A plain atom (most values) is kept as it is, without naming its place for an error that cannot come.
            copied[key] = item if type(item) in _ATOMS else _copy(item, f"{path}[{key!r}]")
        return copied
    if kind is list or kind is tuple:
        return [item if type(item) in _ATOMS else _copy(item, f"{path}[{index}]") for index, item in enumerate(value)]
    # Subclasses (SafeString, IntEnum, a str-based Enum) travel as their plain value, as they would through Redis.
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bytes):
        return bytes(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, dict):
        return _copy(dict(value), path)
    if isinstance(value, (list, tuple)):
        return _copy(list(value), path)
    raise TypeError(
        f"Message values must be str, bytes, int, float, bool, None, list or dict; {path} is "
        f"{type(value).__name__}: {value!r:.80}."
    )


def copy_message(message: Message) -> Message:
    """Return a deep copy of ``message``, checking that it holds only values every layer can carry.

    Raises ``TypeError`` naming the offending value's place, so a message that would fail on Redis fails the same way
    in development with the in-memory layer. Tuples become lists, as they would after a trip through Redis.
    """
    if not isinstance(message, dict):
        raise TypeError(f"A message must be a dict, not {type(message).__name__}.")
    if "type" not in message:
        raise ValueError("A message needs a 'type' key naming the handler that receives it.")
    copied: Message = _copy(message, "message")  # a dict in, a dict out
    return copied


def require_valid_message(message: Message) -> None:
    """Raise ``TypeError``/``ValueError`` when ``message`` is not a dict with a ``type`` and carriable values."""
    copy_message(message)


def private_copier(message: Message) -> Callable[[Message], Message]:
    """The cheapest function that gives each receiver of ``message`` a private copy (``message`` already checked).

    A message whose values are all immutable needs only a shallow copy; one holding lists or dicts a deep one.
    """
    for value in message.values():
        if type(value) is dict or type(value) is list:
            return clone_message
    return dict.copy


def clone_message(message: Message) -> Message:
    """Deep-copy a message that ``copy_message`` already checked: one receiver's private copy of a shared message."""
    return {key: _clone(value) for key, value in message.items()}


def _clone(value: Any) -> Any:
    kind = type(value)
    if kind is dict:
        return {key: _clone(item) for key, item in value.items()}
    if kind is list:
        return [_clone(item) for item in value]
    return value

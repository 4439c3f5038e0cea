"""The streams of a room: its messages, kept so that a reader who was away gets what was posted meanwhile, and who
is typing, which nobody needs to recover. The names are what the page subscribes to (``chat/static/chat/room.js``).
"""

from __future__ import annotations

__all__ = ["room_of", "room_stream", "typing_stream"]

_MESSAGES = "chat.room."
_TYPING = "chat.typing."


def room_stream(room: str) -> str:
    """The stream of the messages posted in ``room``."""
    return f"{_MESSAGES}{room}"


def typing_stream(room: str) -> str:
    """The stream of "someone is typing" notices of ``room``."""
    return f"{_TYPING}{room}"


def room_of(stream: str) -> str | None:
    """The room whose messages or typing notices ``stream`` carries; None for any other stream."""
    for prefix in (_MESSAGES, _TYPING):
        if stream.startswith(prefix):
            return stream.removeprefix(prefix)
    return None
